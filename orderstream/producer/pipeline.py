"""One produce pass: extract -> validate (GX) -> filter and produce -> commit progress, chunk by chunk.

A pass works with two chunks in hand: while this thread extracts, validates and sends chunk N+1,
a second one (`Finishing`) awaits chunk N's acknowledgements and commits its progress. The broker
and the database do their part of N while Python works on N+1; progress still moves only after the
broker acknowledged, and at most two chunks are held in memory. A continuous producer keeps its
`Finishing` from pass to pass, so the next pass overlaps the last chunk of the one before too.

The steps are plain functions; `Steps` says how a pass calls them, so the Prefect layer
(`tasks/produce.py`) runs them as tasks and the benchmark times them without patching anything.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from orderstream import metrics
from orderstream.kafka.producer import DeliveryReport, OrderProducer
from orderstream.lifecycle import stop_requested
from orderstream.ops.common import run_logger
from orderstream.producer.extract import read_pending
from orderstream.producer.progress import BatchCounts, commit_batch
from orderstream.producer.publish import delivery_orders_producer, inventory_orders_producer
from orderstream.settings import Settings
from orderstream.validation import ValidationOutcome, validate_events
from orderstream.validation.checker import producer_checker

ROUTED = ("inventory", "delivery")


@dataclass
class PassReport:
    batches: int = 0  # chunks finished (acknowledged and committed) in the pass
    counts: BatchCounts = field(default_factory=BatchCounts)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0  # rows the pass extracted, finished or still finishing
    last_id: int = 0  # the highest source id it read

    def add(self, counts: BatchCounts, reasons: dict[str, int], batches: int = 1) -> None:
        self.batches += batches
        for name, value in asdict(counts).items():
            setattr(self.counts, name, getattr(self.counts, name) + value)
        for reason, n in reasons.items():
            self.quarantine_reasons[reason] = self.quarantine_reasons.get(reason, 0) + n


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


FinishResult = tuple[BatchCounts, dict[str, int]]


def send_batch(frame: pd.DataFrame, settings: Settings, producer: OrderProducer) -> SentBatch:
    """Validate one chunk and send its valid routed rows; nothing is committed yet."""
    started = time.perf_counter()
    batch_id = uuid.uuid4().hex
    outcome = validate_events(frame, docs_dir=settings.gx_dir, batch_id=batch_id, checker=producer_checker(settings))
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
    batch: SentBatch, settings: Settings, producer: OrderProducer, sessions: sessionmaker[Session]
) -> FinishResult:
    """Await the chunk's acknowledgements, then commit the outcome of every row in one transaction."""
    log = run_logger("orderstream.produce")
    report = producer.await_delivery(batch.delivery, settings.message_timeout_ms / 1000 + 30)
    rejected = batch.outcome.rejected
    # Message numbers count the batch's sent rows in order: inventory rows, then delivery rows. A row
    # is produced iff its message was acknowledged; one that failed or was never answered stays pending.
    sent_ids = [int(i) for rows in batch.sent for i in rows["id"]]
    positions = {sent_ids[number]: (partition, offset) for number, partition, offset in report.positions}
    produced: dict[int, tuple[int | None, int | None]] = {}
    counts = BatchCounts(extracted=batch.extracted, skipped_other=len(batch.other), quarantined=len(rejected))
    unacknowledged: dict[str, int] = {}  # per topic
    for event_type, topic, rows in zip(ROUTED, (settings.inventory_topic, settings.delivery_topic), batch.sent):
        acked = [i for i in map(int, rows["id"]) if i in positions]
        produced.update((i, positions[i]) for i in acked)
        setattr(counts, f"produced_{event_type}", len(acked))
        unacknowledged[topic] = len(rows) - len(acked)
    counts.unacknowledged = sum(unacknowledged.values())
    with sessions.begin() as session:
        commit_batch(
            session,
            batch.batch_id,
            produced=produced,
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


class Outcome(Protocol):
    """A finishing batch: a `concurrent.futures.Future`, or a Prefect future."""

    def result(self) -> FinishResult: ...


@dataclass(frozen=True)
class Steps:
    """How a pass calls its steps: by default the functions above, finishing in a thread of the pass."""

    extract: Callable[[Session, int, int], pd.DataFrame] = read_pending
    send: Callable[[pd.DataFrame, Settings, OrderProducer], SentBatch] = send_batch
    # Starts finish_batch(batch, settings, producer, sessions) and returns its outcome; None: a thread.
    finish: Callable[[SentBatch, Settings, OrderProducer, sessionmaker[Session]], Outcome] | None = None


# Who wants to hear of each finished batch's row count: the CLI's progress bar.
_progress_watchers: list[Callable[[int], None]] = []


@contextmanager
def watching_progress(callback: Callable[[int], None]) -> Iterator[None]:
    """Call `callback(rows)` after each batch this process finishes, while in the block."""
    _progress_watchers.append(callback)
    try:
        yield
    finally:
        _progress_watchers.remove(callback)


class Finishing:
    """The chunk whose acknowledgements are awaited and whose progress is committed, in a thread
    of its own (or as `Steps.finish` runs it); one at a time, in the order handed over."""

    def __init__(self, steps: Steps = Steps()) -> None:
        # A thread only when this runs finish_batch itself, not when `Steps.finish` does (a Prefect task).
        self._executor = None if steps.finish else ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish-batch")
        self._start = steps.finish or self._in_thread
        self._outcome: Outcome | None = None

    def _in_thread(self, *args: Any) -> Future[FinishResult]:
        assert self._executor is not None
        return self._executor.submit(finish_batch, *args)

    def hand_over(
        self, sent: SentBatch, settings: Settings, producer: OrderProducer, sessions: sessionmaker[Session], report: PassReport
    ) -> None:
        """Start finishing `sent` once the chunk before it is finished (counted in `report`)."""
        self.settle(report)
        self._outcome = self._start(sent, settings, producer, sessions)

    def settle(self, report: PassReport) -> None:
        """Wait for the chunk in hand, if any, and count it in `report`."""
        if self._outcome is None:
            return
        outcome, self._outcome = self._outcome, None
        counts, reasons = outcome.result()
        report.add(counts, reasons)
        for watcher in list(_progress_watchers):
            watcher(counts.extracted)

    def close(self, report: PassReport) -> None:
        try:
            self.settle(report)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)


def produce_pass(
    settings: Settings,
    producer: OrderProducer,
    sessions: sessionmaker[Session],
    *,
    chunk_size: int,
    steps: Steps = Steps(),
    after_id: int = 0,
    finishing: Finishing | None = None,
) -> PassReport:
    """One pass over every pending row with an id above `after_id`, chunk by chunk, the previous
    chunk finishing meanwhile (see the module docstring); memory is bounded by two chunks.

    With `finishing`, the caller's, the pass leaves its last chunk finishing there (the next pass
    starts above `last_id`, so it does not read those rows again); without, it waits for it."""
    report = PassReport()
    own = finishing is None
    finishing = finishing or Finishing(steps)
    try:
        while not stop_requested.is_set():
            with sessions() as session:
                frame = steps.extract(session, after_id, chunk_size)
            if frame.empty:
                break
            after_id = report.last_id = int(frame["id"].iloc[-1])
            report.rows_read += len(frame)
            sent = steps.send(frame, settings, producer)
            finishing.hand_over(sent, settings, producer, sessions, report)
            if len(frame) < chunk_size:  # the read reached the end: rows committed since are the next pass's
                break
    finally:
        if own:
            finishing.close(report)
    return report
