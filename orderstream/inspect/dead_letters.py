"""What sits in the dead-letter topics: counts by error class, then the dead letters newest first.

Read from the processed-events ledger, which records each dead letter in the transaction that
sent it (`outcome = dead_lettered`, the error, the original topic, partition and offset) and
switches it back to `applied` when a replay applies it. So the view shows the dead letters
still waiting for a fix, with no broker needed; the DLQ topics keep every copy ever sent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from orderstream.db.models import OrderEvent, ProcessedEvent
from orderstream.errors import UserError
from orderstream.inspect.common import DEFAULT_LIMIT, contains, iso, shown
from orderstream.settings import Settings, dlq_topic


@dataclass
class DeadLetter:
    event_id: str
    order_id: str | None  # from the source repository, when the event is there
    role: str
    dlq_topic: str
    error_class: str | None
    error_message: str | None
    topic: str  # where the original message was
    partition: int
    offset: int
    dead_lettered_at: str | None


@dataclass
class DeadLetterList:
    total: int
    counts: dict[str, dict[str, int]]  # DLQ topic -> error class -> dead letters
    dead_letters: list[DeadLetter] = field(default_factory=list)  # newest first, at most the limit

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        if not self.total:
            return ["no dead letters are waiting"]
        out = [f"{self.total} dead letters waiting"]
        for topic, by_class in self.counts.items():
            out.append(f"{topic}: {sum(by_class.values())}")
            out += [f"  {n:>7}  {error}" for error, n in by_class.items()]
        if self.dead_letters:
            listed = len(self.dead_letters)
            out.append(f"newest {listed} of {self.total}:" if listed < self.total else "newest first:")
        for dead in self.dead_letters:
            order = f" order {dead.order_id}" if dead.order_id else ""
            out.append(
                f"  {shown(dead.dead_lettered_at)}  {dead.event_id}{order}  {dead.error_class}: {dead.error_message}"
                f"  (from {dead.topic}[{dead.partition}]@{dead.offset})"
            )
        return out


def list_dead_letters(
    session: Session, settings: Settings, *, role: str | None = None, reason: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> DeadLetterList:
    """The role's (or both roles') dead letters still waiting, those whose error class or message
    contains `reason` (ignoring case) if given, at most `limit` listed."""
    if role is not None and role not in settings.groups:
        raise UserError(f"unknown role {role!r}: use inventory or delivery")
    roles = [role] if role else list(settings.groups)
    role_of = {settings.groups[r]: r for r in roles}
    where = [ProcessedEvent.outcome == "dead_lettered", ProcessedEvent.consumer_group.in_(list(role_of))]
    if reason:
        where.append(or_(contains(ProcessedEvent.error_class, reason), contains(ProcessedEvent.error_message, reason)))
    counted = session.execute(
        select(ProcessedEvent.consumer_group, ProcessedEvent.error_class, func.count())
        .where(*where)
        .group_by(ProcessedEvent.consumer_group, ProcessedEvent.error_class)
        .order_by(func.count().desc(), ProcessedEvent.error_class)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for group, error_class, n in counted:
        counts.setdefault(dlq_topic(settings.topics[role_of[group]]), {})[error_class or "unknown"] = int(n)
    rows = session.execute(
        select(ProcessedEvent, OrderEvent.order_id)
        .outerjoin(OrderEvent, OrderEvent.event_id == ProcessedEvent.event_id)
        .where(*where)
        .order_by(ProcessedEvent.processed_at.desc(), ProcessedEvent.event_id)
        .limit(limit)
    ).all()
    listing = DeadLetterList(total=sum(sum(c.values()) for c in counts.values()), counts=counts)
    for entry, order_id in rows:
        entry_role = role_of[entry.consumer_group]
        listing.dead_letters.append(
            DeadLetter(
                event_id=entry.event_id, order_id=order_id, role=entry_role,
                dlq_topic=dlq_topic(settings.topics[entry_role]), error_class=entry.error_class,
                error_message=entry.error_message, topic=entry.topic, partition=entry.partition,
                offset=entry.offset, dead_lettered_at=iso(entry.processed_at),
            )
        )
    return listing
