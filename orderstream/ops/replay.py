"""Replay dead letters: re-apply a role's dead-lettered events once their cause is fixed.

The DLQ (`<topic>.dlq`) holds each dead letter's original key, value and headers plus
`x-original-topic/partition/offset` and the error. The replay reads it with its own
consumer group, `<group>.replay` (assigned partitions, no subscription), from that group's
committed offsets up to the end offsets seen when the run starts, in batches. Per batch,
in ONE database transaction:

1. claim: every ledger row (`processed_events`, the role's group) of the batch's events
   that still says `dead_lettered` is switched to `applied` (a conditional UPDATE that
   returns the ids it changed). Events whose row says anything else (applied by an
   earlier replay, a duplicate DLQ copy) or that have no row (the live consumer owns
   them) are skipped: they take no effect here;
2. the claimed events are parsed and applied through the role's consumer handler
   (`Handler.apply`, the same bulk SQL the live consumer runs);
3. events rejected again stay `dead_lettered` with the new error class and message
   (their `processed_at` is kept); they are NOT sent to the DLQ again. Applied ones get
   their error cleared and `processed_at` set to now. The ledger row keeps the original
   message's topic, partition and offset, so reconciliation counts it on its topic.

Only after the commit are the replay group's offsets committed. The offset committed for a
DLQ partition stops at the first dead letter of this run that the handler rejected again on
the database state (unknown SKU, illegal transition): a later replay, after another fix,
reads it again. Dead letters that cannot apply whatever the state (the message itself is
malformed, or its value was truncated in the DLQ) do not hold the offset back; replay them
with `from_beginning=True` after a code fix.

Running it twice changes nothing the second time: the claim only matches `dead_lettered`
rows, and the committed offsets skip what was resolved.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from sqlalchemy import Engine, bindparam, update
from sqlalchemy.orm import Session

from orderstream.consumers import make_handler
from orderstream.consumers.dlq import OUR_HEADERS
from orderstream.consumers.messages import Envelope
from orderstream.consumers.primitives import Record, ledger_key, parse_into, records, retryable
from orderstream.consumers.runner import Handler
from orderstream.db import bulk as sql
from orderstream.db.models import ProcessedEvent, table_of
from orderstream.errors import BrokerUnavailable, UserError
from orderstream.kafka import clients
from orderstream.kafka.groups import retry_transient
from orderstream.ops.common import run_logger
from orderstream.retry import Backoff
from orderstream.settings import Settings, dlq_topic

LEDGER = table_of(ProcessedEvent)
REPLAY_SUFFIX = ".replay"
METADATA_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0  # no record for this long while some are still expected: give up
DB_RETRIES = 5
DB_BACKOFF_INITIAL_S = 0.2
DB_BACKOFF_MAX_S = 5.0
SAMPLE = 20


class ReplayError(UserError):
    """The DLQ could not be read to the end offsets seen at the start."""


def replay_group(settings: Settings, role: str) -> str:
    return settings.groups[role] + REPLAY_SUFFIX


@dataclass
class ReplayReport:
    role: str
    group: str
    dlq_topic: str
    replay_group: str
    read: int = 0  # dead letters read from the DLQ in this run
    applied: int = 0  # took effect now
    failed_again: int = 0  # still dead-lettered (ledger updated with the new reason)
    not_dead_lettered: int = 0  # ledger says applied or has no row, or a duplicate DLQ copy
    unreplayable: int = 0  # value truncated in the DLQ, or not written by our DLQ producer
    other_group: int = 0  # dead-lettered by another consumer group
    batches: int = 0
    commit_failures: int = 0  # replay-group offset commits that failed (a rerun skips the resolved ones)
    failed_reasons: dict[str, int] = field(default_factory=dict)  # error class -> count
    applied_ids: list[str] = field(default_factory=list)  # a sample
    failed_ids: list[str] = field(default_factory=list)  # a sample
    committed: dict[int, int] = field(default_factory=dict)  # replay group offsets after the run


@dataclass(slots=True)
class DeadLetter:
    """One DLQ record: where it is in the DLQ, and the original event as an envelope."""

    partition: int
    offset: int
    env: Envelope | None = None
    skip: str | None = None  # why it is not replayed: truncated | foreign | other_group


@dataclass
class BatchOutcome:
    applied: list[Envelope] = field(default_factory=list)
    failed_on_state: list[Envelope] = field(default_factory=list)  # rejected by the handler
    failed_on_content: list[Envelope] = field(default_factory=list)  # rejected by the parser
    not_dead_lettered: int = 0


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_dead_letter(msg: Record, group: str, handler: Handler) -> DeadLetter:
    """The original event of a DLQ record, keyed exactly as the live consumer keyed it."""
    dead = DeadLetter(msg.partition(), msg.offset())
    headers = msg.headers() or []
    ours = {name: _text(raw) for name, raw in headers if name in OUR_HEADERS}
    original_headers = [(name, raw) for name, raw in headers if name not in OUR_HEADERS]
    try:
        topic = ours["x-original-topic"]
        partition = int(ours["x-original-partition"] or "")
        offset = int(ours["x-original-offset"] or "")
    except (KeyError, ValueError):
        dead.skip = "foreign"
        return dead
    if not topic:
        dead.skip = "foreign"
        return dead
    if ours.get("x-consumer-group") not in (None, group):
        dead.skip = "other_group"
        return dead
    if ours.get("x-value-truncated") == "true":
        dead.skip = "truncated"
        return dead
    try:
        timestamp_ms = int(ours.get("x-original-timestamp") or "")
    except ValueError:
        timestamp_ms = msg.timestamp()[1]
    env = Envelope(
        topic=topic,
        partition=partition,
        offset=offset,
        key=msg.key(),
        value=msg.value(),
        headers=original_headers or None,
        timestamp_ms=timestamp_ms,
        ledger_key="",
    )
    parse_into(env, handler.parse)
    env.ledger_key = ledger_key(env)  # of the original record: the live consumer's ledger row
    dead.env = env
    return dead


# -- the batch transaction ------------------------------------------------------------------


def _claim(session: Session, group: str, keys: Sequence[str]) -> set[str]:
    """Switch the still dead-lettered ledger rows of `keys` to applied; return their ids."""
    claimed: set[str] = set()
    for chunk in sql.chunks(list(keys)):
        stmt = (
            update(LEDGER)
            .where(
                LEDGER.c.consumer_group == group,
                LEDGER.c.event_id.in_(chunk),
                LEDGER.c.outcome == "dead_lettered",
            )
            .values(outcome="applied")
            .returning(LEDGER.c.event_id)
        )
        claimed.update(session.execute(stmt).scalars())
    return claimed


def _mark(session: Session, group: str, applied: list[Envelope], failed: list[Envelope], now: dt.datetime) -> None:
    where = (LEDGER.c.consumer_group == group, LEDGER.c.event_id == bindparam("k_event_id"))
    if applied:
        session.execute(
            update(LEDGER).where(*where).values(error_class=None, error_message=None, processed_at=now),
            [{"k_event_id": env.ledger_key} for env in applied],
        )
    if failed:
        session.execute(
            update(LEDGER)
            .where(*where)
            .values(
                outcome="dead_lettered",
                error_class=bindparam("k_error_class"),
                error_message=bindparam("k_error_message"),
            ),
            [
                {"k_event_id": env.ledger_key, "k_error_class": env.error_class, "k_error_message": env.error_message}
                for env in failed
            ],
        )


def replay_batch(
    session: Session, handler: Handler, group: str, envs: Sequence[Envelope], now: dt.datetime
) -> BatchOutcome:
    """Re-apply the batch's still dead-lettered events in the caller's transaction."""
    firsts: dict[str, Envelope] = {}
    for env in envs:
        firsts.setdefault(env.ledger_key, env)
    claimed = _claim(session, group, list(firsts))
    todo = [env for key, env in firsts.items() if key in claimed]
    outcome = BatchOutcome(not_dead_lettered=len(envs) - len(todo))
    for env in todo:
        parse_into(env, handler.parse)  # fresh state: an earlier attempt of this batch may have rolled back
    outcome.failed_on_content = [env for env in todo if env.rejection is not None]
    valid = [env for env in todo if env.rejection is None]
    outcome.failed_on_state = list(handler.apply(session, valid, now)) if valid else []
    outcome.applied = [env for env in valid if env.rejection is None]
    _mark(session, group, outcome.applied, outcome.failed_on_content + outcome.failed_on_state, now)
    return outcome


def apply_batch(engine: Engine, handler: Handler, group: str, envs: Sequence[Envelope]) -> BatchOutcome:
    """One transaction per batch; retried with backoff on a database outage or a conflict."""
    backoff = Backoff(DB_BACKOFF_INITIAL_S, DB_BACKOFF_MAX_S)
    for attempt in range(DB_RETRIES):
        try:
            with Session(engine) as session, session.begin():
                return replay_batch(session, handler, group, envs, dt.datetime.now(dt.UTC))
        except Exception as exc:
            if not retryable(exc) or attempt == DB_RETRIES - 1:
                raise
            run_logger(__name__).warning(
                "replay batch rolled back (%s); retrying in %.1fs", type(exc).__name__, backoff.delay
            )
            backoff.wait()
    raise AssertionError("unreachable")


# -- reading the DLQ ------------------------------------------------------------------------


def replay_dead_letters(
    settings: Settings,
    engine: Engine,
    role: str = "inventory",
    *,
    limit: int | None = None,
    from_beginning: bool = False,
    batch_size: int | None = None,
) -> ReplayReport:
    """Replay the role's DLQ up to its end offsets at the start (at most `limit` records)."""
    if role not in settings.groups:
        raise UserError(f"unknown role {role!r}: use inventory or delivery")
    if limit is not None and limit < 1:
        raise UserError("limit must be at least 1")
    return Replay(settings, engine, role, limit=limit, from_beginning=from_beginning, batch_size=batch_size).run()


class Replay:
    """One run over a role's DLQ: where it reads from and to, what it has read, and its report."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        role: str,
        *,
        limit: int | None,
        from_beginning: bool,
        batch_size: int | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.handler = make_handler(settings, role)  # type: ignore[arg-type]
        self.group = settings.groups[role]
        self.topic = dlq_topic(settings.topics[role])
        self.report = ReplayReport(role=role, group=self.group, dlq_topic=self.topic,
                                   replay_group=replay_group(settings, role))
        self.limit = limit
        self.from_beginning = from_beginning
        self.size = batch_size or settings.consume_batch_size
        self.log = run_logger(__name__)
        # Per DLQ partition: (where this run starts, the end offset seen at the start) ...
        self.positions: dict[int, tuple[int, int]] = {}
        self.todo: dict[int, tuple[int, int]] = {}  # ... of those with something to read
        self.next_offset: dict[int, int] = {}  # the first offset not read yet
        # The first dead letter of this run the handler rejected again: the commit stops there,
        # so that a replay after another fix reads it again.
        self.pinned: dict[int, int] = {}
        self.attempted: set[str] = set()  # ledger keys tried in this run: a second DLQ copy is skipped
        self.idle_since = time.monotonic()

    def run(self) -> ReplayReport:
        report, topic = self.report, self.topic
        consumer = clients.consumer(self.settings, report.replay_group, f"orderstream-replay-{report.replay_group}")
        try:
            self.positions = _positions(consumer, topic, self.from_beginning)
            self.todo = {p: (start, end) for p, (start, end) in self.positions.items() if start < end}
            self.log.info(
                "replaying %s into group %s: %d dead letters after the replay group's offsets",
                topic, self.group, sum(end - start for start, end in self.todo.values()),
            )
            if not self.todo:
                report.committed = {p: start for p, (start, _) in self.positions.items()}
                return report
            consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in self.todo.items()])
            self.next_offset = {p: start for p, (start, _) in self.todo.items()}
            self.idle_since = time.monotonic()
            while any(self.next_offset[p] < end for p, (_, end) in self.todo.items()):
                remaining = None if self.limit is None else self.limit - report.read
                if remaining is not None and remaining <= 0:
                    break
                batch = self._read(consumer, remaining)
                if not batch:
                    continue
                self._replay(batch)
                self._commit(consumer)
            report.committed = {p: start for p, (start, _) in self.positions.items()} | self._offsets()
        finally:
            consumer.close()
        self.log.info(
            "replay of %s: %d read, %d applied, %d still dead-lettered %s, %d not dead-lettered any more, "
            "%d unreplayable, %d of another group",
            topic, report.read, report.applied, report.failed_again, report.failed_reasons,
            report.not_dead_lettered, report.unreplayable, report.other_group,
        )
        return report

    def _read(self, consumer: Consumer, remaining: int | None) -> list[DeadLetter]:
        """The next batch of dead letters this run has to read; raises once the DLQ stays silent."""
        msgs = consumer.consume(num_messages=min(self.size, remaining or self.size),
                                timeout=self.settings.consume_poll_timeout_s)
        batch: list[DeadLetter] = []
        for msg in records(msgs, ReplayError, self._kafka_error):
            p, offset = msg.partition(), msg.offset()
            if p not in self.todo or offset < self.next_offset[p] or offset >= self.todo[p][1]:
                continue  # written after the run started, or already read
            if remaining is not None and len(batch) >= remaining:
                break
            batch.append(read_dead_letter(msg, self.group, self.handler))
            self.next_offset[p] = offset + 1
        if batch:
            self.idle_since = time.monotonic()
        elif time.monotonic() - self.idle_since > IDLE_TIMEOUT_S:
            missing = {p: (self.next_offset[p], end) for p, (_, end) in self.todo.items() if self.next_offset[p] < end}
            raise ReplayError(f"{self.topic}: no records for {IDLE_TIMEOUT_S:.0f}s; still expected {missing}")
        return batch

    def _kafka_error(self, err: KafkaError) -> None:
        self.log.warning("reading %s: %s", self.topic, err.str())

    def _replay(self, batch: list[DeadLetter]) -> None:
        report = self.report
        report.read += len(batch)
        report.batches += 1
        envs: list[Envelope] = []
        position: dict[int, DeadLetter] = {}
        for dead in batch:
            if dead.env is None:
                if dead.skip == "other_group":
                    report.other_group += 1
                else:
                    report.unreplayable += 1
            elif dead.env.ledger_key in self.attempted:
                report.not_dead_lettered += 1  # a second DLQ copy of an event this run already tried
            else:
                self.attempted.add(dead.env.ledger_key)
                envs.append(dead.env)
                position[id(dead.env)] = dead
        if not envs:
            return
        outcome = apply_batch(self.engine, self.handler, self.group, envs)
        report.applied += len(outcome.applied)
        report.not_dead_lettered += outcome.not_dead_lettered
        failed = outcome.failed_on_state + outcome.failed_on_content
        report.failed_again += len(failed)
        reasons = Counter(env.error_class or "unknown" for env in failed)
        for reason, n in reasons.items():
            report.failed_reasons[reason] = report.failed_reasons.get(reason, 0) + n
        report.applied_ids.extend(env.ledger_key for env in outcome.applied[: max(0, SAMPLE - len(report.applied_ids))])
        report.failed_ids.extend(env.ledger_key for env in failed[: max(0, SAMPLE - len(report.failed_ids))])
        for env in outcome.failed_on_state:
            dead = position[id(env)]
            self.pinned[dead.partition] = min(self.pinned.get(dead.partition, dead.offset), dead.offset)

    def _offsets(self) -> dict[int, int]:
        """Where the replay group resumes: after what was read, or at the first one rejected again."""
        return {p: self.pinned.get(p, self.next_offset[p]) for p in self.todo}

    def _commit(self, consumer: Consumer) -> None:
        """The replay group's offsets, after the batch's database commit."""
        try:
            request = [TopicPartition(self.topic, p, o) for p, o in sorted(self._offsets().items())]
            result = retry_transient(lambda: consumer.commit(offsets=request, asynchronous=False), "replay commit")
        except KafkaException as exc:
            self.report.commit_failures += 1
            self.log.warning("replay group offset commit failed (%s); a rerun skips what is resolved", exc)
            return
        if any(tp.error is not None for tp in result or []):
            self.report.commit_failures += 1
            self.log.warning(
                "replay group offset commit failed for some partitions: %s", [tp for tp in result if tp.error]
            )


def _positions(consumer: Consumer, topic: str, from_beginning: bool) -> dict[int, tuple[int, int]]:
    """Per DLQ partition: (where this run starts, the end offset it reads up to)."""
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
    except KafkaException as exc:
        raise BrokerUnavailable(f"Kafka did not answer: {exc.args[0].str()}") from None
    if metadata is None or metadata.error is not None or not metadata.partitions:
        return {}
    tps = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    committed = {
        tp.partition: tp.offset
        for tp in retry_transient(lambda: consumer.committed(tps, timeout=METADATA_TIMEOUT_S), f"offsets of {topic}")
    }
    positions = {}
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S, cached=False)
        mark = committed.get(tp.partition, -1)
        start = low if from_beginning or mark < 0 else max(mark, low)
        positions[tp.partition] = (start, high)
    return positions
