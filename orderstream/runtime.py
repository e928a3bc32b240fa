"""What every entry point (a flow, a command) starts from: the settings, the migrated database.

Flows take only primitive parameters, which Prefect shows and stores; the settings, secrets
included, come from the environment of the process the flow runs in, here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from orderstream.db.engine import make_engine, migrate, session_factory
from orderstream.settings import Settings


def settings_for(principal: str | None = None) -> Settings:
    """The settings; on a local `--secure` stack, logged in as `principal` (a role's Kafka user)."""
    from orderstream.stack import local, secure

    settings = Settings()
    if principal and settings.kafka_bootstrap_servers is None and local.status(settings).secure:
        return secure.secure_client_settings(settings, principal)
    return settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]


def open_runtime(principal: str | None = None, settings: Settings | None = None) -> Runtime:
    """The settings (see `settings_for`) and their database, migrated to the newest schema."""
    settings = settings or settings_for(principal)
    engine = make_engine(settings.db_url)
    migrate(engine)
    return Runtime(settings, engine, session_factory(engine))


@contextmanager
def settings_in_environment(settings: Settings) -> Iterator[None]:
    """Run flows of this process with `settings`: the environment says exactly what they say
    (`Settings.subprocess_env`) inside the block, and what it said before afterwards.
    For entry points that hold a Settings object (the benchmark, tests), not for library code."""
    saved = dict(os.environ)
    _set_environment(settings.subprocess_env(saved))
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(wanted: dict[str, str]) -> None:
    # Variable by variable: the variables that stay are never absent, not even for a moment.
    for name in set(os.environ) - set(wanted):
        del os.environ[name]
    os.environ.update(wanted)
