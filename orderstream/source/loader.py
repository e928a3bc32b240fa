"""`orderstream load`: a whole file in one transaction, so a bad file loads nothing.

A file whose shape cannot give a single row (no `event_id` column for events, no `sku` and
`on_hand` for stock, no rows at all) is refused as a whole with a UserError that says what it
has, instead of "loaded 0".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from orderstream.errors import UserError
from orderstream.source.readers import read_chunks
from orderstream.source.repository import LoadReport, finish_load, insert_events, insert_stock, start_load

STOCK_COLUMNS = ("sku", "on_hand")
SHOWN_COLUMNS = 8


def load_file(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    stock: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> LoadReport:
    report = LoadReport()
    insert = insert_stock if stock else insert_events
    rows = 0
    with sessions.begin() as session:
        load = start_load(session, path.name, "stock" if stock else "events")
        for chunk in read_chunks(path):
            if rows == 0:
                check_columns(path, list(chunk.columns), stock=stock)
            rows += len(chunk)
            report.add(insert(session, chunk, load.id))
            if on_progress:
                on_progress(len(chunk))
        if rows == 0:
            raise UserError(f"{path} has no rows: there is nothing to load")
        finish_load(load, report)
    return report


def check_columns(path: Path, columns: Iterable[str], *, stock: bool) -> None:
    """Refuse a file whose columns cannot make one row of its kind, naming what it has instead."""
    have = [str(c) for c in columns]
    shown = ", ".join(have[:SHOWN_COLUMNS]) + (", ..." if len(have) > SHOWN_COLUMNS else "")
    if stock:
        lacking = [c for c in STOCK_COLUMNS if c not in have]
        if lacking:
            hint = "; it looks like an events file: leave out --stock" if "event_id" in have else ""
            raise UserError(
                f"{path}: a stock file needs the columns sku, on_hand (and optionally warehouse_id), "
                f"it has no {', '.join(lacking)} (columns: {shown}){hint}"
            )
    elif "event_id" not in have:
        hint = "; it looks like a stock file: add --stock" if all(c in have for c in STOCK_COLUMNS) else ""
        raise UserError(f"{path}: no event_id column, which every event needs (columns: {shown}){hint}")
