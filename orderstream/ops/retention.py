"""Retention: delete what is fully handled and old, never what is not yet reconciled.

Source rows (`order_events`) older than `source_max_age_days` (by `loaded_at`) go when:

* `skipped`: a valid event no producer routes; nothing downstream refers to it;
* `quarantined` and their quarantine entry is resolved (dismissed): nothing will use them;
* `produced` AND its event is `applied` in the consumer ledger of its type's group AND that
  ledger entry can go too (below). The source row and its ledger entry are deleted together,
  in one transaction: reconciliation compares produced source rows with applied ledger
  entries per topic, so deleting one without the other would show up as missing events
  (ledger entry gone) or as events applied twice (source row gone).

A ledger entry (`processed_events`, outcome `applied`) can go when Kafka can never deliver
its message again, because that is what the ledger guards against:

* its `processed_at` is older than the topic's `retention.ms` (read with the AdminClient's
  describe_configs; Kafka's default of 7 days if it cannot be read) plus a margin of one day,
  or than `ledger_max_age_days` when given; and
* its offset is below the partition's log start offset: the message is really gone (Kafka
  never deletes the active segment, so messages can outlive `retention.ms` by a segment).

Kept, whatever their age: pending rows (outcome NULL), open quarantine, produced rows whose
event is not in the ledger (not consumed yet) or is `dead_lettered` (not replayed), ledger
entries without a source row (reconciliation still counts them), every `dead_lettered` ledger
entry, and everything on a topic whose offsets cannot be read (broker down, topic missing).
Resolved quarantine entries whose `resolved_at` is older than the source age go as well.

Deletes run in chunks of `CHUNK` rows, one transaction per chunk. A second run deletes
nothing more (until time passes). Note that once a source row is deleted, its event id is no
longer in the repository: loading the same file again would load it as a new event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec, ResourceType
from sqlalchemy import Row, Select, and_, delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from orderstream.db.bulk import rowcount
from orderstream.db.models import OrderEvent, ProcessedEvent, Quarantine, table_of
from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.ops.common import run_logger, utcnow
from orderstream.settings import Settings

CHUNK = 5_000
KAFKA_DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
LEDGER_MARGIN = dt.timedelta(days=1)
ADMIN_TIMEOUT_S = 15.0

ORDER_EVENTS = table_of(OrderEvent)
LEDGER = table_of(ProcessedEvent)
QUARANTINE = table_of(Quarantine)


@dataclass
class TopicRetention:
    """What Kafka says about one topic, and the ledger cutoff that follows."""

    topic: str
    retention_ms: int | None = None  # -1: unlimited; None: unknown
    log_start: dict[int, int] = field(default_factory=dict)  # partition -> earliest offset
    ledger_cutoff: str | None = None  # ISO; None: no ledger entry of this topic may go
    note: str | None = None


@dataclass
class RetentionReport:
    source_cutoff: str
    deleted_skipped: int = 0
    deleted_quarantined: int = 0  # source rows whose quarantine entry was resolved
    deleted_produced: int = 0  # source rows, each with its ledger entry
    deleted_ledger: int = 0
    deleted_quarantine_entries: int = 0  # resolved entries older than the source age
    kept_pending: int = 0  # old rows kept: outcome NULL
    kept_quarantined_open: int = 0
    kept_not_consumed: int = 0  # produced, not in the ledger yet
    kept_dead_lettered: int = 0  # produced, dead-lettered and not replayed
    kept_in_kafka: int = 0  # produced and applied, but the message may still be delivered
    topics: list[TopicRetention] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return (
            self.deleted_skipped + self.deleted_quarantined + self.deleted_produced
            + self.deleted_ledger + self.deleted_quarantine_entries
        )


# -- what Kafka says ------------------------------------------------------------------------


def topic_retention(
    admin: AdminClient, topic: str, now: dt.datetime, ledger_max_age_days: float | None
) -> TopicRetention:
    info = TopicRetention(topic=topic)
    try:
        metadata = admin.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            info.note = f"topic {topic} not found: its ledger entries are kept"
            return info
        request = {TopicPartition(topic, p): OffsetSpec.earliest() for p in metadata.partitions}
        for tp, future in admin.list_offsets(request, request_timeout=ADMIN_TIMEOUT_S).items():
            info.log_start[tp.partition] = future.result().offset
    except KafkaException as exc:
        info.log_start = {}
        info.note = f"Kafka did not answer ({exc.args[0].str()}): ledger entries of {topic} are kept"
        return info
    try:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        configs = admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)[resource].result()
        info.retention_ms = int(configs["retention.ms"].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        info.note = f"retention.ms of {topic} unreadable ({exc}); assuming Kafka's default of 7 days"
        info.retention_ms = None
    if ledger_max_age_days is not None:
        age = dt.timedelta(days=ledger_max_age_days)
    else:
        retention_ms = KAFKA_DEFAULT_RETENTION_MS if info.retention_ms is None else max(info.retention_ms, 0)
        age = dt.timedelta(milliseconds=retention_ms) + LEDGER_MARGIN
    info.ledger_cutoff = (now - age).isoformat()
    return info


def kafka_retention(
    settings: Settings, now: dt.datetime, ledger_max_age_days: float | None, admin: AdminClient | None = None
) -> dict[str, TopicRetention]:
    try:
        admin = admin or clients.admin_client(settings)
    except (KafkaException, UserError) as exc:
        note = f"no Kafka client ({exc}): ledger entries kept"
        return {t: TopicRetention(topic=t, note=note) for t in settings.topics.values()}
    return {t: topic_retention(admin, t, now, ledger_max_age_days) for t in settings.topics.values()}


# -- deleting in chunks ---------------------------------------------------------------------


def _delete_ids(session: Session, ids: list[int], *conditions) -> int:
    """Delete source rows by id, re-checking the conditions that made them deletable."""
    if not ids:
        return 0
    return rowcount(session.execute(delete(ORDER_EVENTS).where(ORDER_EVENTS.c.id.in_(ids), *conditions)))


def _chunked(sessions: sessionmaker[Session], candidates: Select, step: Callable[[Session, Sequence[Row]], int]) -> int:
    """Select up to CHUNK candidate rows and delete them, one transaction per chunk, until none is left."""
    total = 0
    after = None
    while True:
        with sessions.begin() as session:
            query = candidates if after is None else candidates.where(ORDER_EVENTS.c.id > after)
            rows = session.execute(query.order_by(ORDER_EVENTS.c.id).limit(CHUNK)).all()
            if not rows:
                return total
            total += step(session, rows)
            after = rows[-1][0]


def _resolved_entry():
    return exists().where(
        QUARANTINE.c.event_id == ORDER_EVENTS.c.event_id, QUARANTINE.c.resolved_at.is_not(None)
    )


def _ledger_entry(group: str, *conditions):
    return exists().where(LEDGER.c.consumer_group == group, LEDGER.c.event_id == ORDER_EVENTS.c.event_id, *conditions)


def delete_simple(sessions: sessionmaker[Session], cutoff: dt.datetime, report: RetentionReport) -> None:
    old = ORDER_EVENTS.c.loaded_at < cutoff
    skipped = (old, ORDER_EVENTS.c.outcome == "skipped")
    report.deleted_skipped = _chunked(
        sessions,
        select(ORDER_EVENTS.c.id).where(*skipped),
        lambda session, rows: _delete_ids(session, [r[0] for r in rows], *skipped),
    )
    dismissed = (old, ORDER_EVENTS.c.outcome == "quarantined", _resolved_entry())
    report.deleted_quarantined = _chunked(
        sessions,
        select(ORDER_EVENTS.c.id).where(*dismissed),
        lambda session, rows: _delete_ids(session, [r[0] for r in rows], *dismissed),
    )


def delete_produced(
    sessions: sessionmaker[Session],
    cutoff: dt.datetime,
    event_type: str,
    group: str,
    info: TopicRetention,
    report: RetentionReport,
) -> None:
    """Produced rows of one type with their applied ledger entries, partition by partition."""
    if info.ledger_cutoff is None:
        return
    ledger_cutoff = dt.datetime.fromisoformat(info.ledger_cutoff)
    for partition, log_start in sorted(info.log_start.items()):
        gone = (
            LEDGER.c.consumer_group == group,
            LEDGER.c.outcome == "applied",
            LEDGER.c.topic == info.topic,
            LEDGER.c.partition == partition,
            LEDGER.c.offset < log_start,
            LEDGER.c.processed_at < ledger_cutoff,
        )
        candidates = (
            select(ORDER_EVENTS.c.id, ORDER_EVENTS.c.event_id)
            .join(LEDGER, and_(LEDGER.c.event_id == ORDER_EVENTS.c.event_id, *gone))
            .where(
                ORDER_EVENTS.c.loaded_at < cutoff,
                ORDER_EVENTS.c.type == event_type,
                ORDER_EVENTS.c.outcome == "produced",
            )
        )
        report.deleted_produced += _chunked(sessions, candidates, _pair_deleter(f"{info.topic}[{partition}]", gone, report))


def _pair_deleter(where: str, gone: tuple, report: RetentionReport) -> Callable[[Session, Sequence[Row]], int]:
    """The chunk step of one partition: delete each selected (source row, ledger entry) pair together."""

    def step(session: Session, rows: Sequence[Row]) -> int:
        ids = [r[0] for r in rows]
        event_ids = [r[1] for r in rows]
        ledger = rowcount(session.execute(delete(LEDGER).where(LEDGER.c.event_id.in_(event_ids), *gone)))
        source = _delete_ids(session, ids, ORDER_EVENTS.c.outcome == "produced")
        if ledger != len(rows) or source != len(rows):
            # Never leave half a pair: roll the chunk back (the context manager does).
            raise RetentionConflict(
                f"{where}: {len(rows)} pairs selected, but {ledger} ledger entries and "
                f"{source} source rows matched when deleting; nothing of this chunk was deleted"
            )
        report.deleted_ledger += ledger
        return source

    return step


class RetentionConflict(UserError):
    """Rows changed between selecting and deleting them; the chunk is rolled back."""


def delete_resolved_quarantine(sessions: sessionmaker[Session], cutoff: dt.datetime, report: RetentionReport) -> None:
    condition = (QUARANTINE.c.resolved_at.is_not(None), QUARANTINE.c.resolved_at < cutoff)
    while True:
        with sessions.begin() as session:
            next_keys = select(QUARANTINE.c.event_id).where(*condition).order_by(QUARANTINE.c.event_id).limit(CHUNK)
            keys = list(session.scalars(next_keys))
            if not keys:
                return
            report.deleted_quarantine_entries += rowcount(
                session.execute(delete(QUARANTINE).where(QUARANTINE.c.event_id.in_(keys), *condition))
            )


def count_kept(session: Session, settings: Settings, cutoff: dt.datetime, report: RetentionReport) -> None:
    """Old source rows that stay, by the reason they stay."""

    def count(*conditions) -> int:
        old = select(func.count()).select_from(ORDER_EVENTS).where(ORDER_EVENTS.c.loaded_at < cutoff, *conditions)
        return int(session.scalar(old) or 0)

    report.kept_pending = count(ORDER_EVENTS.c.outcome.is_(None))
    report.kept_quarantined_open = count(ORDER_EVENTS.c.outcome == "quarantined", ~_resolved_entry())
    produced = ORDER_EVENTS.c.outcome == "produced"
    for event_type, group in settings.groups.items():
        of_type = (produced, ORDER_EVENTS.c.type == event_type)
        report.kept_not_consumed += count(*of_type, ~_ledger_entry(group))
        report.kept_dead_lettered += count(*of_type, _ledger_entry(group, LEDGER.c.outcome == "dead_lettered"))
        report.kept_in_kafka += count(*of_type, _ledger_entry(group, LEDGER.c.outcome == "applied"))


def retention_cleanup(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    source_max_age_days: float = 30,
    ledger_max_age_days: float | None = None,
    admin: AdminClient | None = None,
) -> RetentionReport:
    if source_max_age_days < 0 or (ledger_max_age_days is not None and ledger_max_age_days < 0):
        raise UserError("ages must not be negative")
    log = run_logger(__name__)
    now = utcnow()
    cutoff = now - dt.timedelta(days=source_max_age_days)
    report = RetentionReport(source_cutoff=cutoff.isoformat())
    topics = kafka_retention(settings, now, ledger_max_age_days, admin)
    report.topics = list(topics.values())
    for info in report.topics:
        if info.note:
            log.warning("%s", info.note)
    delete_simple(sessions, cutoff, report)
    for event_type, group in settings.groups.items():
        delete_produced(sessions, cutoff, event_type, group, topics[settings.topics[event_type]], report)
    delete_resolved_quarantine(sessions, cutoff, report)
    with sessions() as session:
        count_kept(session, settings, cutoff, report)
    log.info(
        "retention (source rows loaded before %s): deleted %d skipped, %d dismissed quarantined, %d produced "
        "(with %d ledger entries), %d resolved quarantine entries; kept %d pending, %d open quarantine, "
        "%d not consumed yet, %d dead-lettered, %d applied but still deliverable by Kafka",
        report.source_cutoff, report.deleted_skipped, report.deleted_quarantined, report.deleted_produced,
        report.deleted_ledger, report.deleted_quarantine_entries, report.kept_pending, report.kept_quarantined_open,
        report.kept_not_consumed, report.kept_dead_lettered, report.kept_in_kafka,
    )
    return report
