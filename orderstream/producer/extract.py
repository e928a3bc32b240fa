"""Extract: read the next bounded chunk of unhandled source events into pandas, and wait for new ones."""

from __future__ import annotations

import contextlib
import logging
import time
from types import TracebackType
from typing import Any

import pandas as pd
from psycopg import sql as psycopg_sql
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from orderstream.db.models import OrderEvent, table_of
from orderstream.lifecycle import Flag
from orderstream.source.fields import EVENT_FIELDS

COLUMNS = ("id", *EVENT_FIELDS, "extra")
EVENTS = table_of(OrderEvent)


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



# Notified by the triggers of migration 0003 when rows become pending (inserted, or released again).
PENDING_CHANNEL = "order_events_pending"
WAIT_SLICE_S = 0.1  # a stop request is seen within this
log = logging.getLogger("orderstream.produce")


class PendingRows:
    """Wakes the continuous producer when source rows may be pending.

    On PostgreSQL it LISTENs on `PENDING_CHANNEL` on a connection of its own, so a commit of new
    rows wakes the producer at once; it still looks every `safety_poll_s` (rows left pending by
    an unacknowledged batch are retried without any new commit). A notification that arrives
    while a pass runs is kept by the connection, and `clear()` before each pass drops only those
    older than the pass's first read: no commit is missed. On SQLite, or if listening fails, it
    waits `poll_interval_s` between looks.
    """

    def __init__(self, engine: Engine, poll_interval_s: float, safety_poll_s: float) -> None:
        self._engine, self._poll_s, self._safety_s = engine, poll_interval_s, safety_poll_s
        self._raw: Any = None  # the pooled connection that listens, detached from the pool
        self._conn: Any = None  # its psycopg connection

    def __enter__(self) -> PendingRows:
        if self._engine.dialect.name == "postgresql":
            try:
                self._raw = self._engine.raw_connection()
                self._conn = self._raw.driver_connection
                self._raw.detach()  # its LISTEN must not go back to the pool
                self._conn.autocommit = True
                self._conn.execute(psycopg_sql.SQL("LISTEN {}").format(psycopg_sql.Identifier(PENDING_CHANNEL)))
            except Exception as exc:  # noqa: BLE001 - polling still finds every row, only later
                self._lost(exc)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = self._conn = None

    @property
    def listening(self) -> bool:
        return self._raw is not None

    def clear(self) -> None:
        """Drop the notifications already received: the pass about to start reads their rows."""
        if self._raw is not None:
            try:
                for _ in self._conn.notifies(timeout=0):
                    pass
            except Exception as exc:  # noqa: BLE001 - as in __enter__
                self._lost(exc)

    def wait(self, stop: Flag) -> None:
        """Until rows may be pending (a notification, or the poll interval), or `stop` is set."""
        deadline = time.monotonic() + (self._safety_s if self._raw is not None else self._poll_s)
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._raw is None:
                time.sleep(min(left, WAIT_SLICE_S))
                continue
            try:
                if any(True for _ in self._conn.notifies(timeout=min(left, WAIT_SLICE_S), stop_after=1)):
                    return
            except Exception as exc:  # noqa: BLE001 - as in __enter__
                self._lost(exc)
                deadline = min(deadline, time.monotonic() + self._poll_s)

    def _lost(self, exc: Exception) -> None:
        log.warning("not listening for new source rows (%s); polling every %.2f s instead", exc, self._poll_s)
        if self._raw is not None:
            with contextlib.suppress(Exception):  # already broken; nothing else to free
                self._raw.close()
        self._raw = self._conn = None
