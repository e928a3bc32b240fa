"""The systems under test: one broker and one PostgreSQL server for the whole bench, and a
fresh workspace (its own schema, topics and consumer groups) for every single run.

`BenchEnv.start(home)` starts a local broker in `home` (a new temporary directory when None)
and a ThrowawayPostgres, unless the settings point at an existing cluster or database
(`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`); what it started, it stops.

A workspace lives in its own PostgreSQL schema (`search_path` set through the connection
URL, so every process that gets the URL works there) and is dropped with its topics when
the run is done: runs never see each other's rows or messages, and a 2M-event run does not
leave its gigabyte behind.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from orderstream.bench.cpu import CpuMeter, postmaster_pid
from orderstream.db.engine import make_engine, migrate, normalize_url, session_factory
from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.kafka.address import bootstrap_servers
from orderstream.settings import Settings
from orderstream.stack import local

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 30.0


def copy_settings(settings: Settings, **update) -> Settings:
    """`settings` with fields replaced; drops the cached `home` so it follows orderstream_home."""
    copied = settings.model_copy(update=update)
    copied.__dict__.pop("home", None)
    return copied


def schema_url(url: str, schema: str) -> str:
    """`url` with every connection's search_path set to `schema` (libpq `options`)."""
    parsed = make_url(normalize_url(url))
    options = parsed.query.get("options")
    options = f"{options} -csearch_path={schema}" if options else f"-csearch_path={schema}"
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


def libpq_conninfo(url: str) -> str:
    """A psycopg connection string for a SQLAlchemy URL (query parameters included)."""
    parsed = make_url(normalize_url(url))
    parts = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
        **{k: v for k, v in parsed.query.items() if isinstance(v, str)},
    }
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})


@dataclass
class Workspace:
    """One run's settings (schema, topics, groups), with its engine and extra topics."""

    env: BenchEnv
    settings: Settings
    schema: str
    run_dir: Path  # this run's files: subprocess logs, their Prefect home
    extra_topics: list[str] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        return make_engine(self.settings.db_url)

    @property
    def sessions(self):
        return session_factory(self.engine)


    def topic(self, suffix: str, partitions: int | None = None) -> str:
        """Create one more topic of this workspace (deleted with it)."""
        name = f"{self.schema}-{suffix}"
        self.env.create_topic(name, partitions or self.settings.topic_partitions)
        self.extra_topics.append(name)
        return name

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """Environment for an `orderstream` subprocess working in this workspace (the CLI
        sets the rest of Prefect's environment itself, see `prepare_prefect`)."""
        return self.settings.subprocess_env(
            None, KAFKA_BOOTSTRAP_SERVERS=self.env.bootstrap, PREFECT_HOME=str(self.run_dir / "prefect"), **extra
        )

    def meter(self) -> CpuMeter:
        return self.env.meter()


class BenchEnv:
    """A broker and a PostgreSQL server for the bench; `workspace()` gives each run its own."""

    def __init__(self, base: Settings, *, broker_pids: set[int] | None = None) -> None:
        if not base.database_url or make_url(normalize_url(base.database_url)).get_backend_name() != "postgresql":
            raise UserError(
                "the bench needs PostgreSQL: unset DATABASE_URL (a throwaway server is started) or point it at PostgreSQL"
            )
        self.base = base
        self.bootstrap = bootstrap_servers(base)
        self.broker_pids = set(broker_pids or ())
        self._admin = clients.admin_client(base)
        self._postmaster: int | None = None
        self._postmaster_known = False

    # -- lifecycle ------------------------------------------------------------------

    @classmethod
    @contextmanager
    def start(cls, home: Path | None = None, base: Settings | None = None) -> Iterator[BenchEnv]:
        """Start what is not given: a local broker in `home` and a throwaway PostgreSQL."""
        from orderstream.stack.postgres import ThrowawayPostgres

        with ExitStack() as stack:
            if home is None:
                home = Path(tempfile.mkdtemp(prefix="orderstream-bench-"))
                stack.callback(shutil.rmtree, home, ignore_errors=True)
            settings = base or Settings(orderstream_home=home)
            settings = copy_settings(settings, orderstream_home=Path(home))
            broker_pids: set[int] = set()
            if not settings.kafka_bootstrap_servers:
                log.info("starting a local Kafka broker in %s", home)
                info = local.up(settings)
                if info.started:
                    stack.callback(local.down, settings)
                broker_pids = {node.pid for node in info.nodes if node.pid}
                settings = copy_settings(settings, kafka_bootstrap_servers=bootstrap_servers(settings))
            if not settings.database_url:
                log.info("starting a throwaway PostgreSQL")
                pg = stack.enter_context(ThrowawayPostgres())
                settings = copy_settings(settings, database_url=pg.url)
            yield cls(settings, broker_pids=broker_pids)

    # -- workspaces -----------------------------------------------------------------

    @contextmanager
    def workspace(self, label: str, **overrides) -> Iterator[Workspace]:
        """A migrated schema and four pipeline topics of their own, dropped afterwards."""
        suffix = uuid.uuid4().hex[:10]
        schema = f"bench_{label}_{suffix}"
        self._execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        run_dir = self.base.home / "runs" / schema
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = copy_settings(
            self.base,
            **{
                # One home for every run, as one host has: GX builds its docs context once
                # per directory, and a new directory per run would charge that to each run.
                "orderstream_home": self.base.home / "work",
                "database_url": schema_url(self.base.database_url or "", schema),
                "inventory_topic": f"{schema}-inventory_orders",
                "delivery_topic": f"{schema}-delivery_orders",
                "inventory_group": f"{schema}-inventory",
                "delivery_group": f"{schema}-delivery",
                **overrides,
            },
        )
        ws = Workspace(self, settings, schema, run_dir)
        try:
            migrate(ws.engine)
            local.ensure_topics(settings)
            yield ws
        finally:
            ws.engine.dispose()
            try:
                local.delete_topics(settings)
                self.delete_topics(ws.extra_topics)
            except UserError as exc:
                log.warning("could not delete the topics of %s: %s", schema, exc)
            self._execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            shutil.rmtree(run_dir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------

    def _execute(self, statement: sql.Composed) -> None:
        with psycopg.connect(libpq_conninfo(self.base.database_url or ""), autocommit=True) as conn:
            conn.execute(statement)

    def create_topic(self, name: str, partitions: int) -> None:
        futures = self._admin.create_topics(
            [NewTopic(name, partitions, -1)], operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S
        )
        for future in futures.values():
            try:
                future.result(timeout=ADMIN_TIMEOUT_S + 5)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise UserError(f"cannot create topic {name}: {exc.args[0].str()}") from None
        self._wait_for_leader(name)

    def _wait_for_leader(self, name: str) -> None:
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        while time.monotonic() < deadline:
            found = self._admin.list_topics(name, timeout=ADMIN_TIMEOUT_S).topics.get(name)
            if found is not None and found.error is None and found.partitions and all(
                p.leader >= 0 for p in found.partitions.values()
            ):
                return
            time.sleep(0.1)
        raise UserError(f"topic {name} got no leader within {ADMIN_TIMEOUT_S:.0f} s")

    def delete_topics(self, names: list[str]) -> None:
        if not names:
            return
        futures = self._admin.delete_topics(names, operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S)
        for name, future in futures.items():
            try:
                future.result(timeout=ADMIN_TIMEOUT_S + 5)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.warning("cannot delete topic %s: %s", name, exc.args[0].str())

    @property
    def postmaster(self) -> int | None:
        if not self._postmaster_known:
            with psycopg.connect(libpq_conninfo(self.base.database_url or "")) as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()
                self._postmaster = postmaster_pid(backend[0] if backend else None)
            self._postmaster_known = True
        return self._postmaster

    def meter(self) -> CpuMeter:
        return CpuMeter(self.broker_pids, self.postmaster)

    def kafka_version(self) -> str:
        from orderstream.settings import KAFKA_VERSION

        return KAFKA_VERSION

    def postgres_version(self) -> str:
        with psycopg.connect(libpq_conninfo(self.base.database_url or "")) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"
