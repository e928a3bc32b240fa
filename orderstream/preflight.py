"""Checks a command makes before it starts a flow, so a foreseeable problem is one clear line."""

from __future__ import annotations

from orderstream.db.engine import make_engine, migrate
from orderstream.kafka.check import check_broker
from orderstream.settings import Settings


def check_database(settings: Settings) -> None:
    migrate(make_engine(settings.db_url))


def check_all(settings: Settings) -> None:
    check_database(settings)
    check_broker(settings, list(settings.topics.values()))
