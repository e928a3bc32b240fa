"""Extract: read the next bounded chunk of unhandled source events into pandas."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.models import OrderEvent
from orderstream.source.fields import EVENT_FIELDS

COLUMNS = ("id", *EVENT_FIELDS, "extra")
EVENTS = OrderEvent.__table__


def read_pending(session: Session, after_id: int, limit: int) -> pd.DataFrame:
    """Rows not yet handled by the producer with id > after_id, oldest first.

    `after_id` only pages through one pass; the durable progress mark is each row's
    `outcome`, so a row that commits late (a lower id than rows already read) is
    still pending and the next pass reads it.
    """
    statement = (
        select(*(EVENTS.c[c] for c in COLUMNS))
        .where(EVENTS.c.outcome.is_(None), EVENTS.c.id > after_id)
        .order_by(EVENTS.c.id)
        .limit(limit)
    )
    # Core rows turned into plain tuples: the ORM's row loading, and pandas reading Row
    # objects, took two thirds of the extract's time.
    rows = session.connection().execute(statement).all()
    return pd.DataFrame(list(map(tuple, rows)), columns=list(COLUMNS), dtype=object)


def count_pending(session: Session) -> int:
    return int(session.scalar(select(func.count()).where(OrderEvent.outcome.is_(None))) or 0)

