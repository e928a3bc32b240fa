"""Compare source, producer ledger, topics, consumer ledger and effects; name what is off."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from orderstream.db.models import DeliveryHistory, OrderEvent, ProcessedEvent, Reservation
from orderstream.settings import Settings

SAMPLE = 20  # offending ids listed per check


@dataclass
class TopicCheck:
    topic: str
    produced: int
    applied: int
    dead_lettered: int
    end_offsets: int | None
    missing_ids: list[str] = field(default_factory=list)
    missing: int = 0


@dataclass
class Reconciliation:
    ok: bool
    missing: int
    duplicates: int
    unproduced: int
    unproduced_ids: list[str]
    duplicate_ids: list[str]
    topics: list[TopicCheck]

    def as_status(self) -> dict:
        return {"ok": self.ok, "missing": self.missing, "duplicates": self.duplicates}

    def as_dict(self) -> dict:
        return asdict(self)


def _count(session: Session, statement) -> int:
    return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)


def _topic_check(session: Session, event_type: str, topic: str, group: str, end_offsets: int | None) -> TopicCheck:
    produced = select(OrderEvent.event_id).where(OrderEvent.type == event_type, OrderEvent.outcome == "produced")
    in_ledger = exists().where(and_(ProcessedEvent.consumer_group == group, ProcessedEvent.event_id == OrderEvent.event_id))
    not_applied = produced.where(~in_ledger)
    outcomes = dict(
        session.execute(
            select(ProcessedEvent.outcome, func.count())
            .where(ProcessedEvent.consumer_group == group, ProcessedEvent.topic == topic)
            .group_by(ProcessedEvent.outcome)
        ).all()
    )
    missing = _count(session, not_applied)
    return TopicCheck(
        topic=topic,
        produced=_count(session, produced),
        applied=int(outcomes.get("applied", 0)),
        dead_lettered=int(outcomes.get("dead_lettered", 0)),
        end_offsets=end_offsets,
        missing=missing,
        missing_ids=list(session.scalars(not_applied.limit(SAMPLE))),
    )


def _duplicate_effects(session: Session) -> list[str]:
    """Events whose effect exists more than once (the schema's keys should make this empty)."""
    reservations = (
        select(Reservation.event_id).group_by(Reservation.event_id).having(func.count() > 1)
    )
    history = (
        select(DeliveryHistory.event_id)
        .where(DeliveryHistory.to_status != "scheduled")  # scheduling shares its request's event
        .group_by(DeliveryHistory.event_id)
        .having(func.count() > 1)
    )
    return list(session.scalars(reservations.union(history)))


def reconcile(session: Session, settings: Settings, end_offsets: dict[str, int] | None = None) -> Reconciliation:
    """The contract's identity per topic, plus every valid routed source event produced, nothing twice.

    `end_offsets` (sum of a topic's end offsets) cross-checks the topic: a topic holding
    fewer messages than the distinct events produced to it has lost some.
    """
    end_offsets = end_offsets or {}
    unproduced = select(OrderEvent.event_id).where(
        OrderEvent.type.in_(("inventory", "delivery")), OrderEvent.outcome.is_(None)
    )
    topics = [
        _topic_check(session, event_type, settings.topics[event_type], settings.groups[event_type],
                     end_offsets.get(settings.topics[event_type]))
        for event_type in ("inventory", "delivery")
    ]
    duplicate_ids = _duplicate_effects(session)
    unproduced_count = _count(session, unproduced)
    lost_in_topic = sum(max(0, t.produced - t.end_offsets) for t in topics if t.end_offsets is not None)
    # Effects beyond what was produced (ignoring pills written straight to the topic,
    # which are dead-lettered) would mean an event took effect twice.
    excess = sum(max(0, t.applied - t.produced) for t in topics)
    missing = unproduced_count + sum(t.missing for t in topics) + lost_in_topic
    duplicates = len(duplicate_ids) + excess
    return Reconciliation(
        ok=missing == 0 and duplicates == 0,
        missing=missing,
        duplicates=duplicates,
        unproduced=unproduced_count,
        unproduced_ids=list(session.scalars(unproduced.limit(SAMPLE))),
        duplicate_ids=duplicate_ids[:SAMPLE],
        topics=topics,
    )
