"""What the inspection views share: timestamps as text, and a case-insensitive substring filter."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, func

from orderstream.ops.common import as_utc

DEFAULT_LIMIT = 20


def iso(value: dt.datetime | None) -> str | None:
    """A stored timestamp as ISO-8601 UTC with milliseconds (SQLite hands them back naive)."""
    return None if value is None else as_utc(value).isoformat(timespec="milliseconds")


def shown(value: str | None) -> str:
    """An `iso()` timestamp for a terminal: `2026-11-25 10:00:00.123` (UTC)."""
    return (value or "")[:23].replace("T", " ")


def contains(column, text: str) -> ColumnElement[bool]:
    """`column` holds `text`, ignoring case; `%` and `_` in the text match themselves."""
    return func.lower(column).contains(text.lower(), autoescape=True)
