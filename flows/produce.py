"""The produce flow: extract -> validate (GX) -> filter and produce -> commit progress.

A batch pass runs each chunk's steps as task runs (see `tasks/produce.py`); continuous mode is
one long-running flow run whose loop creates no tasks. The engine is `orderstream.producer`.
"""

from __future__ import annotations

from prefect import flow

from orderstream import metrics
from orderstream.lifecycle import install_signal_handlers
from orderstream.producer.pipeline import PassReport
from orderstream.producer.run import run_producer
from orderstream.runtime import open_runtime
from orderstream.stack.secure import PRODUCER
from tasks.produce import BATCH_STEPS


@flow(name="produce_orders")
def produce_orders(
    continuous: bool = False,
    chunk_size: int | None = None,
    poll_interval_s: float | None = None,
    duration_s: float | None = None,
    metrics_port: int | None = None,
) -> PassReport:
    """Produce every new source event once (or keep polling with `continuous`)."""
    # Prefect installs its own SIGTERM handler for the run; ours finishes the batch in hand.
    install_signal_handlers()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    return run_producer(
        open_runtime(PRODUCER),
        continuous=continuous,
        chunk_size=chunk_size,
        poll_interval_s=poll_interval_s,
        duration_s=duration_s,
        batch_steps=BATCH_STEPS,
    )
