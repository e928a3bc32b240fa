"""Shared fixtures: one Kafka broker and one PostgreSQL server per session; per test, uuid topics
and consumer groups and a fresh, migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from orderstream.db.engine import make_engine, migrate
from orderstream.errors import UserError
from orderstream.kafka.address import bootstrap_servers
from orderstream.runtime import settings_in_environment
from orderstream.settings import Settings
from orderstream.stack.local import delete_topics, down, ensure_topics, up
from orderstream.stack.postgres import ThrowawayPostgres

MARKERS = ("unit", "integration", "fault")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(m) for m in MARKERS)]
    if unmarked:
        raise pytest.UsageError(
            f"every test needs one of the markers {', '.join(MARKERS)}; unmarked: {', '.join(unmarked)}"
        )


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One throwaway Prefect API for the whole session, stopped before pytest closes its output."""
    from prefect.testing.utilities import prefect_test_harness

    # The server's telemetry heartbeat only adds "database is locked" tracebacks to the output.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def kafka_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ORDERSTREAM_HOME of the session's local broker (unused with an external cluster)."""
    return tmp_path_factory.mktemp("kafka-home")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_home: Path) -> Iterator[str]:
    """The session's Kafka: $KAFKA_BOOTSTRAP_SERVERS if set, else a local broker started here."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    home = Settings(orderstream_home=kafka_home, kafka_bootstrap_servers=None, kafka_port=0)
    up(home)
    try:
        yield bootstrap_servers(home)
    finally:
        down(home)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database per test."""
    server: ThrowawayPostgres | None = None
    name = f"test_{uuid.uuid4().hex}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'orderstream.db'}"
    else:
        server = request.getfixturevalue("postgres_server")  # started only when a test needs it
        url = server.create_database(name)
    migrate(make_engine(url))
    yield url
    make_engine(url).dispose()
    if server is not None:
        server.drop_database(name)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings with the test's own topics (created, 3 partitions) and consumer groups."""
    suffix = uuid.uuid4().hex[:12]
    test_settings = Settings(
        orderstream_home=tmp_path / "home",
        database_url=db_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        inventory_topic=f"inventory_orders_{suffix}",
        delivery_topic=f"delivery_orders_{suffix}",
        inventory_group=f"inventory_{suffix}",
        delivery_group=f"delivery_{suffix}",
        topic_partitions=3,
    )
    ensure_topics(test_settings)
    with settings_in_environment(test_settings):  # flows read their settings from the environment
        yield test_settings
    try:
        delete_topics(test_settings)
    except UserError as exc:  # best effort: the topics are uniquely named anyway
        warnings.warn(f"could not delete the test's topics: {exc}", stacklevel=1)


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.db_url)
