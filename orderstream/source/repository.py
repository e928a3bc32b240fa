"""Append events and stock to the source repository with bulk SQL."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.bulk import insert_rows
from orderstream.db.engine import dialect_insert
from orderstream.db.models import OrderEvent, SourceLoad, Stock, table_of, utcnow
from orderstream.source.fields import EVENT_FIELDS

INSERT_ROWS = 5_000  # rows per INSERT statement group; bounds memory of one call


@dataclass
class LoadReport:
    loaded: int = 0
    refused_missing_id: int = 0
    refused_duplicate: int = 0
    refused_invalid: int = 0  # stock rows only
    problems: list[str] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return self.refused_missing_id + self.refused_duplicate + self.refused_invalid

    def add(self, other: LoadReport) -> None:
        self.loaded += other.loaded
        self.refused_missing_id += other.refused_missing_id
        self.refused_duplicate += other.refused_duplicate
        self.refused_invalid += other.refused_invalid
        self.problems.extend(other.problems[: max(0, 20 - len(self.problems))])


def _missing(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def event_rows(frame: pd.DataFrame) -> list[dict]:
    """Repository rows: contract fields as columns, every other column into `extra`."""
    frame = frame.astype(object).where(frame.notna(), None)
    extra_columns = [c for c in frame.columns if c not in EVENT_FIELDS]
    rows = frame.reindex(columns=list(EVENT_FIELDS)).astype(object)
    rows = rows.where(rows.notna(), None)
    records = rows.to_dict("records")
    extras = frame[extra_columns].to_dict("records") if extra_columns else [None] * len(records)
    for record, extra in zip(records, extras):
        record["extra"] = orjson.dumps(extra).decode() if extra else None  # same keys in every row
    return records


def insert_events(session: Session, frame: pd.DataFrame, load_id: int | None = None) -> LoadReport:
    """Insert rows, refusing those without an event_id or with one already present."""
    report = LoadReport()
    if "event_id" not in frame.columns:
        report.refused_missing_id = len(frame)
        report.problems.append("the file has no event_id column")
        return report
    missing = _missing(frame["event_id"])
    report.refused_missing_id = int(missing.sum())
    frame = frame[~missing]
    # PostgreSQL text cannot hold U+0000; refuse such rows on every database alike.
    nul = frame.apply(lambda col: col.map(lambda v: isinstance(v, str) and "\x00" in v)).any(axis=1)
    if nul.any():
        report.refused_invalid += int(nul.sum())
        for event_id in frame.loc[nul, "event_id"].head(20):
            report.problems.append(f"event {event_id!r}: a field contains a NUL byte")
        frame = frame[~nul]
    records = event_rows(frame)
    now = utcnow()
    for start in range(0, len(records), INSERT_ROWS):
        part = records[start : start + INSERT_ROWS]
        inserted = len(
            insert_rows(session, table_of(OrderEvent), part, constants={"loaded_at": now, "load_id": load_id},
                        skip_conflicts_on=["event_id"], returning="event_id")
        )
        report.loaded += inserted
        report.refused_duplicate += len(part) - inserted
    return report


def insert_stock(session: Session, frame: pd.DataFrame, load_id: int | None = None) -> LoadReport:
    """Set on-hand stock from rows of sku, warehouse_id, on_hand (integer >= 0)."""
    report = LoadReport()
    if "sku" not in frame.columns or "on_hand" not in frame.columns:
        report.refused_invalid = len(frame)
        report.problems.append("a stock file needs the columns sku, warehouse_id, on_hand")
        return report
    frame = frame.astype(object).where(frame.notna(), None)
    warehouse = frame["warehouse_id"] if "warehouse_id" in frame.columns else pd.Series(None, index=frame.index)
    on_hand = pd.to_numeric(frame["on_hand"], errors="coerce")
    valid = (~_missing(frame["sku"])) & on_hand.notna() & (on_hand >= 0) & (on_hand == on_hand.round())
    for index in frame.index[~valid][:20]:
        report.problems.append(f"stock row {index + 1}: {frame.at[index, 'sku']!r} on_hand={frame.at[index, 'on_hand']!r}")
    report.refused_invalid = int((~valid).sum())
    rows = pd.DataFrame(
        {
            "sku": frame.loc[valid, "sku"],
            "warehouse_id": warehouse[valid].where(~_missing(warehouse[valid]), "main"),
            "on_hand": on_hand[valid].astype("int64"),
        }
    ).drop_duplicates(subset=["sku", "warehouse_id"], keep="last")
    if rows.empty:
        return report
    now = utcnow()
    records = [
        {"sku": s, "warehouse_id": w, "on_hand": int(q), "reserved": 0, "updated_at": now}
        for s, w, q in zip(rows["sku"], rows["warehouse_id"], rows["on_hand"])
    ]
    statement = dialect_insert(session, Stock)
    statement = statement.on_conflict_do_update(
        index_elements=["sku", "warehouse_id"],
        set_={"on_hand": statement.excluded.on_hand, "updated_at": statement.excluded.updated_at},
    )
    for start in range(0, len(records), INSERT_ROWS):
        session.execute(statement, records[start : start + INSERT_ROWS])
    report.loaded = len(records)
    return report


def start_load(session: Session, source: str, kind: str) -> SourceLoad:
    """The load's row, flushed first so its events can point at it."""
    load = SourceLoad(source=source, kind=kind)
    session.add(load)
    session.flush()
    return load


def finish_load(load: SourceLoad, report: LoadReport) -> None:
    load.loaded = report.loaded
    load.refused_missing_id = report.refused_missing_id
    load.refused_duplicate = report.refused_duplicate + report.refused_invalid


def refused_duplicates(session: Session) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(SourceLoad.refused_duplicate), 0)).where(SourceLoad.kind == "events")
    )
    return int(total or 0)
