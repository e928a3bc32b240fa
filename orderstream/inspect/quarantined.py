"""What sits in the quarantine: open entries by reason, then the entries newest first.

An entry is open until a re-validation releases it (`orderstream quarantine revalidate`); a
row that broke two rules counts under both reasons.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import orjson
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from orderstream.db.models import OrderEvent, Quarantine, SourceLoad
from orderstream.inspect.common import DEFAULT_LIMIT, contains, iso, shown

STREAM_ROWS = 10_000


@dataclass
class QuarantinedRow:
    event_id: str
    order_id: str | None
    type: str | None
    reasons: list[str]
    quarantined_at: str | None
    source: str | None  # the file (or seed) it was loaded from
    load_id: int | None
    row: dict  # the row as loaded, extra columns included


@dataclass
class QuarantineList:
    total: int  # open entries (matching the reason, if one was given)
    resolved: int  # entries released by a re-validation, all time
    counts: dict[str, int]  # reason -> open entries with it
    rows: list[QuarantinedRow] = field(default_factory=list)  # newest first, at most the limit

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        if not self.total:
            return [f"no rows are quarantined ({self.resolved} released by re-validation)"]
        out = [f"{self.total} rows quarantined ({self.resolved} released by re-validation)"]
        out += [f"  {n:>7}  {reason}" for reason, n in self.counts.items()]
        if self.rows:
            out.append(f"newest {len(self.rows)} of {self.total}:" if len(self.rows) < self.total else "newest first:")
        for row in self.rows:
            order = f" order {row.order_id}" if row.order_id else ""
            source = f" from {row.source}" if row.source else ""
            out.append(f"  {shown(row.quarantined_at)}  {row.event_id}{order}{source}: {'; '.join(row.reasons)}")
        return out


def list_quarantine(session: Session, *, reason: str | None = None, limit: int = DEFAULT_LIMIT) -> QuarantineList:
    """Open quarantine entries, those with a reason containing `reason` (ignoring case) if given."""
    where: list[ColumnElement[bool]] = [Quarantine.resolved_at.is_(None)]
    if reason:
        where.append(contains(Quarantine.reasons, reason))  # the JSON text: narrowed below per reason

    def matches(reasons: list[str]) -> bool:
        return not reason or any(reason.lower() in r.lower() for r in reasons)

    counts: Counter[str] = Counter()
    total = 0
    for (text,) in session.execute(select(Quarantine.reasons).where(*where).execution_options(yield_per=STREAM_ROWS)):
        reasons = orjson.loads(text or "[]")
        if matches(reasons):
            total += 1
            counts.update(reasons)
    resolved = int(session.scalar(select(func.count()).where(Quarantine.resolved_at.is_not(None))) or 0)
    listing = QuarantineList(total=total, resolved=resolved, counts=dict(counts.most_common()))
    newest = session.execute(
        select(Quarantine, OrderEvent.load_id, SourceLoad.source)
        .outerjoin(OrderEvent, OrderEvent.id == Quarantine.source_id)
        .outerjoin(SourceLoad, SourceLoad.id == OrderEvent.load_id)
        .where(*where)
        .order_by(Quarantine.quarantined_at.desc(), Quarantine.event_id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for entry, load_id, source in newest:
        if len(listing.rows) >= limit:
            break
        reasons = orjson.loads(entry.reasons or "[]")
        if not matches(reasons):
            continue
        row = orjson.loads(entry.row or "{}")
        listing.rows.append(
            QuarantinedRow(
                event_id=entry.event_id, order_id=row.get("order_id"), type=row.get("type"), reasons=reasons,
                quarantined_at=iso(entry.quarantined_at), source=source, load_id=load_id, row=row,
            )
        )
    return listing
