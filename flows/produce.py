"""The produce flow: extract -> validate (GX) -> filter and produce -> commit progress.

A pass works chunk by chunk with two chunks in hand: while this thread extracts, validates
and sends chunk N+1, a second one awaits chunk N's acknowledgements and commits its progress.
The broker and the database do their part of N while Python works on N+1; progress still
moves only after the broker acknowledged, and at most two chunks are held in memory.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from sqlalchemy.orm import Session, sessionmaker

from orderstream import metrics
from orderstream.db.engine import make_engine, migrate, session_factory
from orderstream.db.locks import run_lock
from orderstream.errors import UserError
from orderstream.kafka.producer import DeliveryReport, OrderProducer
from orderstream.lifecycle import install_signal_handlers, stop_requested
from orderstream.settings import Settings
from tasks.extract import count_pending, extract_chunk, read_pending
from tasks.produce import delivery_orders_producer, inventory_orders_producer
from tasks.progress import BatchCounts, commit_batch
from tasks.validate import ValidationOutcome, publish_validation_artifact, validate_events

ROUTED = ("inventory", "delivery")


class ProducerBusy(UserError):
    """Another producer is running for this database: two would send the same rows twice."""


class NotAcknowledged(UserError):
    """Some messages were not acknowledged: their rows stay pending for the next pass."""


@dataclass
class PassReport:
    batches: int = 0
    counts: BatchCounts = field(default_factory=BatchCounts)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, counts: BatchCounts, reasons: dict[str, int], batches: int = 1) -> None:
        self.batches += batches
        for name, value in asdict(counts).items():
            setattr(self.counts, name, getattr(self.counts, name) + value)
        for reason, n in reasons.items():
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + n


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("orderstream.produce")


@dataclass
class SentBatch:
    """A chunk validated and handed to the producer, its messages awaiting acknowledgement."""

    batch_id: str
    extracted: int
    outcome: ValidationOutcome  # `valid` cut down to the ids
    sent: list[pd.DataFrame]  # the ids of the rows sent, per routed type
    other: pd.DataFrame  # the ids of valid rows of other types: skipped
    delivery: DeliveryReport
    started: float


def send_batch(frame: pd.DataFrame, settings: Settings, producer: OrderProducer) -> SentBatch:
    """Validate one chunk and send its valid routed rows; nothing is committed yet."""
    started = time.perf_counter()
    batch_id = uuid.uuid4().hex
    outcome = validate_events(frame, docs_dir=settings.gx_dir, batch_id=batch_id)
    delivery = DeliveryReport()
    sent = [
        inventory_orders_producer(outcome.valid, producer, delivery, settings.inventory_topic),
        delivery_orders_producer(outcome.valid, producer, delivery, settings.delivery_topic),
    ]
    other = outcome.valid[~outcome.valid["type"].isin(ROUTED)]
    # Finishing needs only the rows' ids (and the rejected rows): the chunk's fields are freed
    # while the next chunk is validated, so one chunk's data is in memory, not two.
    ids = ["id", "event_id"]
    slim = replace(outcome, valid=outcome.valid[ids])
    return SentBatch(batch_id, len(frame), slim, [rows[ids] for rows in sent], other[ids], delivery, started)


def finish_batch(
    batch: SentBatch, settings: Settings, producer: OrderProducer, sessions: sessionmaker[Session], *, artifacts: bool
) -> tuple[BatchCounts, dict[str, int]]:
    """Await the chunk's acknowledgements, then commit the outcome of every row in one transaction."""
    log = _logger()
    report = producer.await_delivery(batch.delivery, settings.message_timeout_ms / 1000 + 30)
    unknown = any(event_id == "" for event_id, _ in report.failed)
    failed = report.failed_ids
    rejected = batch.outcome.rejected
    produced_ids: list[int] = []
    counts = BatchCounts(extracted=batch.extracted, skipped_other=len(batch.other), quarantined=len(rejected))
    unacknowledged: dict[str, int] = {}  # per topic
    for event_type, topic, rows in zip(ROUTED, (settings.inventory_topic, settings.delivery_topic), batch.sent):
        # Rows of a failed message stay pending; if the broker left some unanswered we
        # cannot tell which, so the whole batch stays pending and is re-sent.
        ok = rows.iloc[0:0] if unknown else rows[~rows["event_id"].isin(failed)]
        produced_ids.extend(int(i) for i in ok["id"])
        setattr(counts, f"produced_{event_type}", len(ok))
        unacknowledged[topic] = len(rows) - len(ok)
    counts.unacknowledged = sum(unacknowledged.values())
    with sessions.begin() as session:
        commit_batch(
            session,
            batch.batch_id,
            produced_ids=produced_ids,
            skipped_ids=[int(i) for i in batch.other["id"]],
            rejected=rejected,
            counts=counts,
            validation=batch.outcome.summary(),
        )
    reasons: dict[str, int] = {}
    for row_reasons in rejected.get("reasons", []):
        for reason in row_reasons:
            reasons[reason] = reasons.get(reason, 0) + 1
    record_metrics(settings, counts, reasons, unacknowledged, time.perf_counter() - batch.started)
    log.info(
        "batch %s: %d extracted, %d -> %s, %d -> %s, %d other skipped, %d quarantined, %d unacknowledged",
        batch.batch_id, counts.extracted, counts.produced_inventory, settings.inventory_topic,
        counts.produced_delivery, settings.delivery_topic, counts.skipped_other, counts.quarantined,
        counts.unacknowledged,
    )
    if len(rejected) and len(rejected) == batch.extracted:
        log.warning("batch %s: every one of its %d rows failed validation", batch.batch_id, batch.extracted)
    if artifacts:
        publish_validation_artifact(batch.outcome, batch.batch_id)
    if counts.unacknowledged:
        sample = "; ".join(f"{e or '?'}: {err}" for e, err in report.failed[:3])
        log.error("batch %s: %d messages not acknowledged (%s); they stay pending", batch.batch_id, counts.unacknowledged, sample)
    return counts, reasons


def record_metrics(
    settings: Settings, counts: BatchCounts, reasons: dict[str, int], unacknowledged: dict[str, int], seconds: float
) -> None:
    metrics.produced.labels(settings.inventory_topic).inc(counts.produced_inventory)
    metrics.produced.labels(settings.delivery_topic).inc(counts.produced_delivery)
    for topic, n in unacknowledged.items():
        metrics.delivery_errors.labels(topic).inc(n)
    metrics.skipped_other.inc(counts.skipped_other)
    for reason, n in reasons.items():
        metrics.quarantined.labels(reason).inc(n)
    metrics.producer_batch_size.observe(counts.extracted)
    metrics.producer_batch_seconds.observe(seconds)


send_batch_task = task(send_batch, name="send_batch", cache_policy=NO_CACHE)
finish_batch_task = task(finish_batch, name="finish_batch", cache_policy=NO_CACHE)


def produce_pass(
    settings: Settings,
    producer: OrderProducer,
    sessions: sessionmaker[Session],
    *,
    chunk_size: int,
    as_tasks: bool,
    on_progress: Callable[[int], None] | None = None,
) -> PassReport:
    """One pass over everything pending, chunk by chunk, the previous chunk finishing in a
    second thread (see the module docstring); memory is bounded by two chunks."""
    report = PassReport()
    extract = extract_chunk if as_tasks else read_pending
    send = send_batch_task if as_tasks else send_batch
    finishing: Future | None = None

    def finished() -> None:
        counts, reasons = finishing.result()
        report.add(counts, reasons)
        if on_progress:
            on_progress(counts.extracted)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-batch") as finisher:
        finish = finish_batch_task.submit if as_tasks else functools.partial(finisher.submit, finish_batch)
        after_id = 0
        try:
            while not stop_requested.is_set():
                with sessions() as session:
                    frame = extract(session, after_id, chunk_size)
                if frame.empty:
                    break
                after_id = int(frame["id"].iloc[-1])
                sent = send(frame, settings, producer)
                if finishing is not None:
                    finished()
                finishing = finish(sent, settings, producer, sessions, artifacts=as_tasks)
        finally:
            if finishing is not None:
                finished()
    return report


@flow(name="produce_orders")
def produce_orders(
    settings: Settings | None = None,
    continuous: bool = False,
    chunk_size: int | None = None,
    poll_interval_s: float | None = None,
    duration_s: float | None = None,
    metrics_port: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PassReport:
    """Produce every new source event once (or keep polling with `continuous`)."""
    settings = settings or Settings()
    log = _logger()
    # Prefect installs its own SIGTERM handler for the run; ours finishes the batch in hand.
    install_signal_handlers()
    if metrics_port is not None:
        metrics.serve(metrics_port)
    engine = make_engine(settings.db_url)
    migrate(engine)
    sessions = session_factory(engine)
    chunk = chunk_size or settings.produce_chunk_size
    interval = settings.produce_poll_interval_s if poll_interval_s is None else poll_interval_s
    total = PassReport()
    busy = ProducerBusy("another `orderstream produce` is running for this database; stop it or let it finish")
    with run_lock(engine, "produce", settings.producer_lock_timeout_s, busy), OrderProducer(settings) as producer:
        producer.check_topics([settings.inventory_topic, settings.delivery_topic])
        if not continuous:
            with sessions() as session:
                log.info("produce pass: %d events pending, chunks of %d", count_pending(session), chunk)
            total = produce_pass(settings, producer, sessions, chunk_size=chunk, as_tasks=True, on_progress=on_progress)
        else:
            # One long-running flow run; the loop itself creates no Prefect tasks.
            deadline = time.monotonic() + duration_s if duration_s else None
            log.info("continuous produce: polling every %.2fs", interval)
            while not stop_requested.is_set() and (deadline is None or time.monotonic() < deadline):
                one = produce_pass(settings, producer, sessions, chunk_size=chunk, as_tasks=False, on_progress=on_progress)
                if one.batches:
                    total.add(one.counts, one.quarantine_reasons, one.batches)
                else:
                    stop_requested.wait(interval)
    c = total.counts
    log.info(
        "produced %d inventory and %d delivery events, %d other skipped, %d quarantined, %d unacknowledged",
        c.produced_inventory, c.produced_delivery, c.skipped_other, c.quarantined, c.unacknowledged,
    )
    if c.unacknowledged and not continuous:
        raise NotAcknowledged(
            f"{c.unacknowledged} events were not acknowledged by Kafka; they stay pending and the next "
            "`orderstream produce` re-sends them"
        )
    return total
