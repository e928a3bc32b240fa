"""The producer as a whole: one batch pass over everything pending, or continuous passes.

Continuous mode is tuned for latency: it wakes when rows become pending (PostgreSQL
LISTEN/NOTIFY, `PendingRows`) and sends with `clients.LATENCY_PRODUCER`. Either mode ends by
waiting until GX has checked every batch it sent (`drain_producer_checks`), so the Data Docs
are complete when it returns.
"""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from orderstream.db.locks import run_lock
from orderstream.errors import UserError
from orderstream.heap import long_lived_heap_frozen
from orderstream.kafka.clients import LATENCY_PRODUCER
from orderstream.kafka.producer import OrderProducer
from orderstream.lifecycle import stop_requested
from orderstream.ops.common import run_logger
from orderstream.producer.extract import PendingRows, count_pending
from orderstream.producer.pipeline import Finishing, PassReport, Steps, produce_pass
from orderstream.runtime import Runtime
from orderstream.settings import Settings
from orderstream.validation.checker import drain_producer_checks, producer_checker


class ProducerBusy(UserError):
    """Another producer is running for this database: two would send the same rows twice."""


class NotAcknowledged(UserError):
    """Some messages were not acknowledged: their rows stay pending for the next pass."""


def run_producer(
    runtime: Runtime,
    *,
    continuous: bool = False,
    chunk_size: int | None = None,
    poll_interval_s: float | None = None,
    duration_s: float | None = None,
    batch_steps: Steps = Steps(),
) -> PassReport:
    """Produce every new source event once (or keep producing new ones with `continuous`, until
    a stop request or `duration_s`). `batch_steps` runs a batch pass; continuous passes call the
    library functions directly (a long-running loop must not create a task per batch)."""
    try:
        total = _run(runtime, continuous, chunk_size, poll_interval_s, duration_s, batch_steps)
    except Exception:
        drain_producer_checks(runtime.settings)  # the batches sent before the failure get their Data Docs
        raise
    drain_producer_checks(runtime.settings)
    c = total.counts
    if c.unacknowledged and not continuous:
        raise NotAcknowledged(
            f"{c.unacknowledged} events were not acknowledged by Kafka; they stay pending and the next "
            "`orderstream produce` re-sends them"
        )
    return total


def _run(
    runtime: Runtime, continuous: bool, chunk_size: int | None, poll_interval_s: float | None, duration_s: float | None,
    batch_steps: Steps,
) -> PassReport:
    settings, engine, sessions = runtime.settings, runtime.engine, runtime.sessions
    log = run_logger("orderstream.produce")
    chunk = chunk_size or (settings.produce_continuous_chunk_size if continuous else settings.produce_chunk_size)
    interval = settings.produce_poll_interval_s if poll_interval_s is None else poll_interval_s
    total = PassReport()
    busy = ProducerBusy("another `orderstream produce` is running for this database; stop it or let it finish")
    overrides = LATENCY_PRODUCER if continuous else {}
    with run_lock(engine, "produce", settings.producer_lock_timeout_s, busy), OrderProducer(settings, **overrides) as producer:
        producer.check_topics([settings.inventory_topic, settings.delivery_topic])
        if not continuous:
            with sessions() as session:
                log.info("produce pass: %d events pending, chunks of %d", count_pending(session), chunk)
            total = produce_pass(settings, producer, sessions, chunk_size=chunk, steps=batch_steps)
        else:
            deadline = time.monotonic() + duration_s if duration_s else None
            producer_checker(settings).rules()  # starts GX's worker: what the first pass would wait for
            finishing = Finishing()
            try:
                with PendingRows(engine, interval, settings.produce_safety_poll_s) as pending, long_lived_heap_frozen():
                    how = "woken by new rows" if pending.listening else f"polling every {interval:.2f}s"
                    log.info("continuous produce: %s", how)
                    _continuous(settings, producer, sessions, pending, finishing, chunk, deadline, total)
            finally:
                finishing.close(total)
    c = total.counts
    log.info(
        "produced %d inventory and %d delivery events, %d other skipped, %d quarantined, %d unacknowledged",
        c.produced_inventory, c.produced_delivery, c.skipped_other, c.quarantined, c.unacknowledged,
    )
    return total


def _continuous(
    settings: Settings, producer: OrderProducer, sessions: sessionmaker[Session], pending: PendingRows,
    finishing: Finishing, chunk: int, deadline: float | None, total: PassReport,
) -> None:
    """Passes back to back while rows keep coming, each overlapping the last chunk of the one before.

    A pass reads only rows above the highest id read so far: on PostgreSQL the pending index keeps
    an entry for every row produced since the last vacuum, and a read from the first id walks them
    all (its cost grew with every produced row). Rows below that id that are pending now (sent but
    not acknowledged, or committed late by a writer that took its id earlier) are found by a full
    pass every `produce_safety_poll_s`, which first waits for the chunk in flight so as not to read
    it again.
    """
    read_up_to = 0  # every pending row up to this id was read by a pass
    next_pass = full_pass_at = 0.0
    while not stop_requested.is_set() and (deadline is None or time.monotonic() < deadline):
        gather = next_pass - time.monotonic()
        if gather > 0 and stop_requested.wait(gather):
            break
        next_pass = time.monotonic() + settings.produce_gather_s
        pending.clear()
        after_id = read_up_to
        if time.monotonic() >= full_pass_at:
            finishing.settle(total)
            after_id, full_pass_at = 0, time.monotonic() + settings.produce_safety_poll_s
        one = produce_pass(settings, producer, sessions, chunk_size=chunk, after_id=after_id, finishing=finishing)
        read_up_to = max(read_up_to, one.last_id)
        total.add(one.counts, one.quarantine_reasons, one.batches)
        if not one.rows_read:
            finishing.settle(total)
            pending.wait(stop_requested)
