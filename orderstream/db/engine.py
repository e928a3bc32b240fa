"""Engine and session factory for the configured database, and schema migration."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from orderstream.errors import UserError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept the usual `postgresql://` spelling and use the psycopg 3 driver for it."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers run beside the single writer; the busy timeout queues writers
    # (producer, consumer replicas) instead of failing them.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin(conn) -> None:
    # Take the write lock up front so two writers never deadlock upgrading a read lock.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ArgumentError for a malformed URL, ValueError for a bad port or host
        raise UserError(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise UserError(
            f"unsupported database {parsed.get_backend_name()!r}: use a sqlite:/// or postgresql:// URL"
        )
    # The process id in pg_stat_activity tells an operator which worker holds a lock.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"application_name": f"orderstream[{os.getpid()}]"},
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def dialect_insert(session: Session, table):
    """A Core INSERT of a Table (or a model's table) with the dialect's ON CONFLICT support.

    Core, not the ORM's bulk path: with RETURNING the ORM falls back to a statement per row.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(getattr(table, "__table__", table))


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import OperationalError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        where = engine.url.render_as_string(hide_password=True)
        if "database is locked" in reason:  # SQLite's busy timeout ran out
            raise UserError(
                f"the database at {where} stayed locked by another writer for over a minute; "
                "stop the process holding it or retry"
            ) from None
        raise UserError(
            f"cannot reach the database at {where}: {reason}. Check DATABASE_URL and that the server is running."
        ) from None
