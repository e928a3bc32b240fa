"""The end-to-end audit: compare every ledger with every other once the pipeline has drained.

Sources compared (Jepsen style: what was acknowledged against what took effect):
- the source repository (`order_events`) and the producer ledger in it (`outcome`);
- the topics' contents (read back from the broker, by the `event_id` header);
- the processed-events ledger of each consumer group;
- the effects: reservations against stock, delivery history, notifications;
- the dead-letter topics.

Pass means 0 lost and 0 applied twice. The soak ends with it, and so does every fault test
(`tests/faults/audit.py` drains first and asserts).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field

from confluent_kafka import TopicPartition
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orderstream.db.models import (
    ConsumerCounter,
    DeliveryHistory,
    Notification,
    OrderEvent,
    ProcessedEvent,
    Reservation,
    Stock,
)
from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.kafka.lag import end_offsets
from orderstream.reconcile import reconcile
from orderstream.settings import Settings, dlq_topic

ROLES = ("inventory", "delivery")
READ_TIMEOUT_S = 300.0
SAMPLE = 5  # ids quoted per problem


@dataclass(frozen=True)
class AuditCounts:
    produced: int  # distinct valid routed events the producer ledger marks produced
    applied: int  # distinct events that took effect (ledger outcome `applied`)
    dead_lettered: int  # ledger outcome `dead_lettered` (records in the DLQ topics: `dlq_records`)
    dlq_records: int
    lost: int  # valid routed events not produced, or produced but not in the topic / not in the ledger
    applied_twice: int  # events whose effect exists more than once, or stock that disagrees with them
    duplicates_in_topic: int  # extra copies of an event in its topic (at-least-once re-sends)
    deduplicated: int  # redeliveries the consumers skipped (their counters)
    pending: int  # routed source rows whose progress mark never moved (outcome NULL)
    quarantined: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Audit:
    counts: AuditCounts
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.counts.lost == 0 and self.counts.applied_twice == 0


def topic_event_ids(settings: Settings, topic: str, timeout_s: float = READ_TIMEOUT_S) -> Counter[str]:
    """How often each `event_id` header occurs in `topic`, up to its current end offsets.

    Reads by assignment (no group membership, nothing committed) and keeps only the ids, so a
    topic of millions of records costs a counter, not the records.
    """
    import time

    ends = end_offsets(clients.admin_client(settings), topic)
    reader = clients.consumer(settings, f"orderstream-audit-{uuid.uuid4()}", "orderstream-audit")
    ids: Counter[str] = Counter()
    try:
        reader.assign([TopicPartition(topic, p, 0) for p in ends])
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise UserError(f"audit: {topic} partitions {sorted(pending)} not read to their end in {timeout_s:.0f} s")
            for msg in reader.consume(10_000, 0.5):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                event_id = dict(msg.headers() or ()).get("event_id")
                if event_id is not None:
                    ids[event_id.decode() if isinstance(event_id, bytes) else event_id] += 1
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
        return ids
    finally:
        reader.close()


def run_audit(settings: Settings, engine: Engine) -> Audit:
    """Compare everything (the pipeline must have drained: nothing pending, no lag)."""
    problems: list[str] = []
    lost = applied_twice = duplicates = produced_total = applied_total = dead_total = dlq_total = pending = 0
    with Session(engine) as s:
        quarantined = int(s.scalar(select(func.count()).where(OrderEvent.outcome == "quarantined")) or 0)
        dedup = int(s.scalar(select(func.coalesce(func.sum(ConsumerCounter.value), 0))
                             .where(ConsumerCounter.name == "deduplicated",
                                    ConsumerCounter.consumer_group.in_(list(settings.groups.values())))) or 0)
        for role in ROLES:
            topic, group = settings.topics[role], settings.groups[role]
            source = dict(s.execute(select(OrderEvent.event_id, OrderEvent.outcome).where(OrderEvent.type == role)).all())
            unsent = sorted(e for e, o in source.items() if o is None)
            pending += len(unsent)
            if unsent:
                problems.append(f"{role}: {len(unsent)} valid source events never produced, e.g. {unsent[:SAMPLE]}")
            produced = {e for e, o in source.items() if o == "produced"}
            del source
            produced_total += len(produced)
            in_topic = topic_event_ids(settings, topic)
            duplicates += sum(n - 1 for n in in_topic.values())
            not_in_topic = produced - in_topic.keys()
            if not_in_topic:
                problems.append(f"{topic}: {len(not_in_topic)} acknowledged events missing, "
                                f"e.g. {sorted(not_in_topic)[:SAMPLE]}")
            ledger = dict(s.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome)
                                    .where(ProcessedEvent.consumer_group == group)).all())
            not_processed = in_topic.keys() - ledger.keys()
            if not_processed:
                problems.append(f"{group}: {len(not_processed)} events in the topic never processed, "
                                f"e.g. {sorted(not_processed)[:SAMPLE]}")
            lost += len(unsent) + len(not_in_topic) + len(not_processed - not_in_topic)
            applied_total += sum(1 for o in ledger.values() if o == "applied")
            dead = {e for e, o in ledger.items() if o == "dead_lettered"}
            dead_total += len(dead)
            dlq = topic_event_ids(settings, dlq_topic(topic))
            dlq_total += sum(dlq.values())
            if dead - dlq.keys():
                problems.append(f"{group}: dead-lettered in the ledger but not in the DLQ: {sorted(dead - dlq.keys())[:SAMPLE]}")
                lost += len(dead - dlq.keys())
            stray = ledger.keys() - in_topic.keys()
            if stray:
                problems.append(f"{group}: ledger holds events that are not in its topic: {sorted(stray)[:SAMPLE]}")
                applied_twice += len(stray)
        applied_twice += _effects_twice(s, problems)
        rec = reconcile(s, settings)
        if not rec.ok:
            problems.append(f"reconcile() not clean: missing {rec.missing}, duplicates {rec.duplicates}, "
                            f"unproduced {rec.unproduced_ids[:SAMPLE]}, twice {rec.duplicate_ids[:SAMPLE]}")
    counts = AuditCounts(produced=produced_total, applied=applied_total, dead_lettered=dead_total,
                         dlq_records=dlq_total, lost=lost, applied_twice=applied_twice,
                         duplicates_in_topic=duplicates, deduplicated=dedup, pending=pending, quarantined=quarantined)
    return Audit(counts, problems)


def _effects_twice(s: Session, problems: list[str]) -> int:
    """Effects of one event found more than once, and stock that disagrees with the reservations held."""
    twice_res = list(s.scalars(select(Reservation.event_id).group_by(Reservation.event_id).having(func.count() > 1)))
    twice_hist = list(s.scalars(select(DeliveryHistory.event_id).where(DeliveryHistory.to_status != "scheduled")
                                .group_by(DeliveryHistory.event_id).having(func.count() > 1)))
    twice_note = list(s.scalars(select(Notification.order_id).group_by(Notification.order_id, Notification.to_status)
                                .having(func.count() > 1)))
    twice = len(twice_res) + len(twice_hist) + len(twice_note)
    if twice:
        problems.append(f"effects twice: reservations {twice_res[:SAMPLE]}, history {twice_hist[:SAMPLE]}, "
                        f"notes {twice_note[:SAMPLE]}")
    held = {(sku, wh): int(q) for sku, wh, q in s.execute(
        select(Reservation.sku, Reservation.warehouse_id, func.sum(Reservation.quantity))
        .where(Reservation.outcome == "reserved", Reservation.released_at.is_(None))
        .group_by(Reservation.sku, Reservation.warehouse_id)).all()}
    for row in s.scalars(select(Stock)):
        if row.reserved != held.get((row.sku, row.warehouse_id), 0):
            twice += 1
            problems.append(f"stock {row.sku}@{row.warehouse_id}: reserved {row.reserved} but reservations "
                            f"hold {held.get((row.sku, row.warehouse_id), 0)}")
        if row.reserved > row.on_hand:
            problems.append(f"stock {row.sku}@{row.warehouse_id}: reserved {row.reserved} > on hand {row.on_hand}")
    return twice
