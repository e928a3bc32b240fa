"""One notify run at a time per database.

The claim marks rows `sending`; a later run treats `sending` rows as left by a crashed
run and re-sends them. That is only right if no other run is alive, so each run holds
this lock: a PostgreSQL session advisory lock (works across machines, released by the
server if the process dies), or an flock beside the SQLite file (released by the kernel).
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select

from orderstream.notify.errors import NotifyBusy

LOCK_KEY = int.from_bytes(hashlib.sha256(b"orderstream.notify").digest()[:8], "big", signed=True)
_POLL_S = 0.1


@contextmanager
def run_lock(engine: Engine, timeout_s: float) -> Iterator[None]:
    deadline = time.monotonic() + timeout_s
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, deadline):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":  # private to this process anyway
        yield
        return
    with _file_lock(Path(database + ".notify.lock"), deadline):
        yield


def _busy() -> NotifyBusy:
    return NotifyBusy("another `orderstream notify` run is still sending for this database; try again later")


@contextmanager
def _pg_lock(engine: Engine, deadline: float) -> Iterator[None]:
    with engine.connect() as conn:
        while not conn.execute(select(func.pg_try_advisory_lock(LOCK_KEY))).scalar_one():
            conn.rollback()
            if time.monotonic() > deadline:
                raise _busy()
            time.sleep(_POLL_S)
        conn.commit()  # the lock is session-level: hold it without an open transaction
        try:
            yield
        finally:
            try:
                conn.execute(select(func.pg_advisory_unlock(LOCK_KEY)))
                conn.commit()
            except Exception:
                conn.invalidate()  # closing the server session releases the lock


@contextmanager
def _file_lock(path: Path, deadline: float) -> Iterator[None]:
    with path.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _busy() from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
