"""Small helpers the operations share: logging, Prefect artifacts, markdown tables."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any


def run_logger(name: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run, else a module logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A Prefect markdown artifact; a no-op outside a flow or task run (Prefect would
    otherwise reach for an API, starting a server if none is configured)."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


def publish_table(key: str, table: list[dict[str, Any]], description: str) -> None:
    if not in_prefect_run():
        return
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=table, key=key, description=description)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; pipes and newlines in cells are escaped."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite gives back naive datetimes; every timestamp we store is UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# Group-coordinator answers that go away by themselves (the coordinator moved, is still
# loading the group's offsets, or is not known yet): retried, never surfaced.


