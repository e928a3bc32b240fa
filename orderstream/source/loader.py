"""`orderstream load`: a whole file in one transaction, so a bad file loads nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from orderstream.source.readers import read_chunks
from orderstream.source.repository import LoadReport, finish_load, insert_events, insert_stock, start_load


def load_file(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    stock: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> LoadReport:
    report = LoadReport()
    insert = insert_stock if stock else insert_events
    with sessions.begin() as session:
        load = start_load(session, path.name, "stock" if stock else "events")
        for chunk in read_chunks(path):
            report.add(insert(session, chunk, load.id))
            if on_progress:
                on_progress(len(chunk))
        finish_load(load, report)
    return report
