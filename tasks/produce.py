"""The produce pass's steps as Prefect tasks: each chunk's extract, send and finish is a task run.

Thin wrappers over `orderstream.producer.pipeline`; only I/O is retried (the extract reads the
database). Sessions and producers are not hashable inputs: nothing here caches.

The steps hand their inputs over `quote`d: Prefect would otherwise walk each one looking for
futures to wait on, through a chunk's frame, the settings and the batch's delivery report, whose
acknowledgements keep arriving while it walks (it then fails to rebuild the changed dataclass).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote
from sqlalchemy.orm import Session, sessionmaker

from orderstream.kafka.producer import OrderProducer
from orderstream.ops.common import publish_table
from orderstream.producer import pipeline
from orderstream.producer.extract import read_pending
from orderstream.settings import Settings
from orderstream.validation import ValidationOutcome

extract_chunk = task(name="extract_chunk", retries=3, retry_delay_seconds=[2, 5, 15], cache_policy=NO_CACHE)(read_pending)
send_batch = task(name="send_batch", cache_policy=NO_CACHE)(pipeline.send_batch)


@task(name="finish_batch", cache_policy=NO_CACHE)
def finish_batch(
    batch: pipeline.SentBatch, settings: Settings, producer: OrderProducer, sessions: sessionmaker[Session]
) -> pipeline.FinishResult:
    """Commit the chunk once acknowledged, and show its validation on the run's page."""
    result = pipeline.finish_batch(batch, settings, producer, sessions)
    publish_validation_artifact(batch.outcome, batch.batch_id)
    return result


def publish_validation_artifact(outcome: ValidationOutcome, batch_id: str) -> None:
    """A table artifact of pass/fail counts per expectation (a no-op outside a flow or task run)."""
    table = [
        {
            "reason": stat.reason,
            "column": stat.column,
            "evaluated": stat.evaluated,
            "failed": stat.unexpected,
            "passed": stat.evaluated - stat.unexpected,
        }
        for stat in outcome.stats
    ]
    publish_table(
        "order-events-validation",
        table,
        f"order_events validation of batch {batch_id}: {len(outcome.valid)} valid, {len(outcome.rejected)} rejected",
    )


def batch_steps(extract: Any = extract_chunk, send: Any = send_batch, finish: Any = finish_batch) -> pipeline.Steps:
    """A pass's steps as runs of these tasks (the benchmark passes timed copies), inputs quoted."""
    return pipeline.Steps(
        extract=extract,
        send=lambda frame, settings, producer: send(quote(frame), quote(settings), quote(producer)),
        finish=lambda batch, settings, producer, sessions: finish.submit(
            quote(batch), quote(settings), quote(producer), quote(sessions)
        ),
    )


BATCH_STEPS = batch_steps()
