"""Compare source, producer ledger, topics, consumer ledger and effects; name what is off.

Every valid routed source event is in one of these states:

* pending at the source: the producer has not handled its row yet (in flight);
* produced, and its consumer group's committed offset has not passed it yet (in flight);
* taken effect or dead-lettered: it has a row in the group's processed-events ledger;
* missing: routed yet marked as not produced, or produced below the group's committed offset
  (or where its topic holds nothing any more) with no ledger row.

Telling the two produced states apart needs the broker's committed and end offsets
(`TopicPositions`); without them every produced event without a ledger row counts as
missing, which is the safe answer. An event produced before its position was recorded
counts as in flight while its group still has lag on that topic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session

from orderstream.db.models import DeliveryHistory, OrderEvent, ProcessedEvent, Reservation
from orderstream.settings import Settings

SAMPLE = 20  # offending ids listed per check
ROUTED = ("inventory", "delivery")
NO_OFFSET = 2**62  # beyond any offset


@dataclass(frozen=True)
class TopicPositions:
    """The broker's view of one topic for one group: per partition, its first and end offsets and
    the group's committed offset (partitions the group never committed are left out of it)."""

    starts: dict[int, int]
    ends: dict[int, int]
    committed: dict[int, int]

    def consumed_up_to(self, partition: int) -> int:
        """The first offset the group has not consumed: it reads from the start if it never committed."""
        return self.committed.get(partition, self.starts.get(partition, 0))

    @property
    def lag(self) -> int:
        return sum(max(0, end - self.consumed_up_to(p)) for p, end in self.ends.items())

    @property
    def end_total(self) -> int:
        return sum(self.ends.values())


@dataclass
class TopicCheck:
    topic: str
    produced: int
    applied: int
    dead_lettered: int
    end_offsets: int | None
    missing_ids: list[str] = field(default_factory=list)
    missing: int = 0
    in_flight: int = 0  # produced, not consumed by the group yet
    # Applied while the producer's progress commit, which follows the acknowledgement, had not landed.
    applied_ahead: int = 0


@dataclass
class Reconciliation:
    ok: bool
    missing: int
    duplicates: int
    in_flight: int
    pending: int  # of in_flight: not handled by the producer yet
    unproduced: int  # of missing: routed rows the producer marked as not produced
    unproduced_ids: list[str]
    duplicate_ids: list[str]
    topics: list[TopicCheck]
    offsets_known: bool  # the broker answered: produced events could be told in flight or missing

    def as_status(self) -> dict:
        return {"ok": self.ok, "missing": self.missing, "duplicates": self.duplicates, "in_flight": self.in_flight}

    def as_dict(self) -> dict:
        return asdict(self)


def _count(session: Session, statement) -> int:
    return int(session.scalar(select(func.count()).select_from(statement.subquery())) or 0)


def _behind_the_group(positions: TopicPositions):
    """A produced row the group has passed, or that its topic no longer holds: without a ledger row it is lost."""
    partitions = sorted(positions.ends)
    consumed = case(
        {p: literal(positions.consumed_up_to(p)) for p in partitions}, value=OrderEvent.produced_partition,
        else_=literal(NO_OFFSET),  # a partition the topic does not have
    ) if partitions else literal(NO_OFFSET)
    ends = case(
        {p: literal(positions.ends[p]) for p in partitions}, value=OrderEvent.produced_partition, else_=literal(-1)
    ) if partitions else literal(-1)
    return or_(OrderEvent.produced_offset < consumed, OrderEvent.produced_offset >= ends)


def _topic_check(
    session: Session, event_type: str, topic: str, group: str, positions: TopicPositions | None
) -> TopicCheck:
    produced = select(OrderEvent.event_id).where(OrderEvent.type == event_type, OrderEvent.outcome == "produced")
    in_ledger = exists().where(and_(ProcessedEvent.consumer_group == group, ProcessedEvent.event_id == OrderEvent.event_id))
    not_applied = produced.where(~in_ledger)
    if positions is None:
        lost = not_applied
    elif positions.lag:
        lost = not_applied.where(OrderEvent.produced_offset.is_not(None), _behind_the_group(positions))
    else:  # the group has consumed everything: a recorded position or not, it is lost
        lost = not_applied
    outcomes = dict(
        session.execute(
            select(ProcessedEvent.outcome, func.count())
            .where(ProcessedEvent.consumer_group == group, ProcessedEvent.topic == topic)
            .group_by(ProcessedEvent.outcome)
        ).all()
    )
    missing = _count(session, lost)
    ahead = (
        select(ProcessedEvent.event_id)
        .join(OrderEvent, OrderEvent.event_id == ProcessedEvent.event_id)
        .where(ProcessedEvent.consumer_group == group, ProcessedEvent.outcome == "applied", OrderEvent.outcome.is_(None))
    )
    return TopicCheck(
        topic=topic,
        produced=_count(session, produced),
        applied=int(outcomes.get("applied", 0)),
        dead_lettered=int(outcomes.get("dead_lettered", 0)),
        end_offsets=positions.end_total if positions is not None else None,
        missing=missing,
        missing_ids=list(session.scalars(lost.limit(SAMPLE))),
        in_flight=_count(session, not_applied) - missing,
        applied_ahead=_count(session, ahead),
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


def reconcile(session: Session, settings: Settings, positions: dict[str, TopicPositions] | None = None) -> Reconciliation:
    """The contract's identity per topic, every valid routed source event produced, nothing twice,
    and what is still on its way (see the module docstring).

    `positions`: per topic, the broker's offsets for the topic's consumer group (see
    `orderstream.status.broker_view`); None when the broker could not be asked.
    """
    positions = positions or {}
    pending = select(OrderEvent.event_id).where(OrderEvent.outcome.is_(None))
    unproduced = select(OrderEvent.event_id).where(OrderEvent.type.in_(ROUTED), OrderEvent.outcome == "skipped")
    topics = [
        _topic_check(session, event_type, settings.topics[event_type], settings.groups[event_type],
                     positions.get(settings.topics[event_type]))
        for event_type in ROUTED
    ]
    duplicate_ids = _duplicate_effects(session)
    unproduced_count = _count(session, unproduced)
    # A topic holding fewer messages than the distinct events produced to it has lost some.
    lost_in_topic = sum(max(0, t.produced - t.end_offsets) for t in topics if t.end_offsets is not None)
    # Effects beyond what was produced (ignoring pills written straight to the topic,
    # which are dead-lettered) would mean an event took effect twice.
    excess = sum(max(0, t.applied - t.applied_ahead - t.produced) for t in topics)
    missing = unproduced_count + sum(t.missing for t in topics) + lost_in_topic
    duplicates = len(duplicate_ids) + excess
    pending_count = _count(session, pending)
    return Reconciliation(
        ok=missing == 0 and duplicates == 0,
        missing=missing,
        duplicates=duplicates,
        in_flight=pending_count + sum(t.in_flight for t in topics),
        pending=pending_count,
        unproduced=unproduced_count,
        unproduced_ids=list(session.scalars(unproduced.limit(SAMPLE))),
        duplicate_ids=duplicate_ids[:SAMPLE],
        topics=topics,
        offsets_known=all(settings.topics[t] in positions for t in ROUTED),
    )
