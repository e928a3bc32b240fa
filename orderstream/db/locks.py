"""One run at a time per database for work that must not overlap (notify, produce).

A PostgreSQL session advisory lock (works across machines, released by the server if the
process dies), or an flock beside the SQLite file (released by the kernel).
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select

from orderstream.errors import UserError

_POLL_S = 0.1


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"orderstream.{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def run_lock(engine: Engine, name: str, timeout_s: float, busy: UserError) -> Iterator[None]:
    """Hold the database-wide lock `name`; raise `busy` if it is not free within the timeout."""
    deadline = time.monotonic() + timeout_s
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, _key(name), deadline, busy):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":  # private to this process anyway
        yield
        return
    with _file_lock(Path(f"{database}.{name}.lock"), deadline, busy):
        yield


@contextmanager
def _pg_lock(engine: Engine, key: int, deadline: float, busy: UserError) -> Iterator[None]:
    with engine.connect() as conn:
        while not conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one():
            conn.rollback()
            if time.monotonic() > deadline:
                raise busy
            time.sleep(_POLL_S)
        conn.commit()  # the lock is session-level: hold it without an open transaction
        try:
            yield
        finally:
            try:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()
            except Exception:  # noqa: BLE001 - best-effort unlock: whatever failed, dropping the session releases the lock
                conn.invalidate()


@contextmanager
def _file_lock(path: Path, deadline: float, busy: UserError) -> Iterator[None]:
    with path.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise busy from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
