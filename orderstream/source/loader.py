"""`orderstream load`: a whole file in one transaction, so a bad file loads nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from orderstream.source.readers import read_chunks
from orderstream.source.repository import LoadReport, insert_events, insert_stock, record_load


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
        for chunk in read_chunks(path):
            part = insert(session, chunk)
            report.add(part)
            if on_progress:
                on_progress(len(chunk))
        record_load(session, path.name, "stock" if stock else "events", report)
    return report
