"""Re-validate quarantined rows, with or without corrections, and release those that pass.

A row is *open* in quarantine when its `order_events.outcome` is `quarantined` and its
quarantine entry has no `resolved_at`. Only open rows are ever changed here: a correction
for any other event id is refused and counted (a row that was produced keeps the values it
was produced with; the event id is the idempotency key end to end).

Corrections: a CSV, JSON Lines or Parquet file (read with `orderstream.source.readers`)
keyed by `event_id`. For each open row with a correction, every contract field present in
the file with a non-empty value replaces the stored one (an empty cell keeps it: files of
corrections usually carry just the fields that were wrong); other non-empty columns are
merged into the row's extra columns. `event_id` itself cannot be corrected. When an
event id appears more than once in the file, its last row wins.

Then the rows (corrected, or as they are when no file is given, e.g. after a rule change)
are validated here, with the producer's GX suite (`orderstream.validation.validate_events`):

* a row that passes is released: its quarantine entry gets `resolved_at`, and its
  `outcome`, `batch_id` and `produced_at` go back to NULL, so the next produce pass (the
  continuous producer, `orderstream run` or `orderstream produce`) validates it again and
  sends it like any new row, with the same acknowledgement and progress guarantees.
  `produce=True` on the flow runs that pass at once;
* a row that still fails stays quarantined; its corrections are kept (a later file can
  finish them) and its quarantine reasons are replaced by the new ones.

Validating before releasing matters: the produce pass inserts a quarantine entry with ON
CONFLICT DO NOTHING, so a released row that failed there would keep its old, resolved
entry and disappear from the open quarantine.

Running it twice changes nothing the second time: released rows are no longer open, and
a still-failing row gets the same values and the same reasons again.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from sqlalchemy import BindParameter, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from orderstream.db.bulk import chunks
from orderstream.db.models import OrderEvent, Quarantine, table_of, utcnow
from orderstream.errors import UserError
from orderstream.ops.common import run_logger
from orderstream.settings import Settings
from orderstream.source.fields import EVENT_FIELDS
from orderstream.source.readers import read_chunks

COLUMNS = ("id", *EVENT_FIELDS, "extra")  # the producer's extract columns (tasks/extract.py)
CORRECTABLE = tuple(f for f in EVENT_FIELDS if f != "event_id")
CHUNK_ROWS = 10_000
SAMPLE = 20

ORDER_EVENTS = table_of(OrderEvent)
QUARANTINE = table_of(Quarantine)


@dataclass
class RevalidateReport:
    corrections: str | None = None
    corrections_read: int = 0  # rows in the file
    corrections_without_id: int = 0  # refused: no event_id
    unknown: int = 0  # refused: event id not in the repository
    not_quarantined: int = 0  # refused: the row is not open in quarantine
    corrected: int = 0  # open rows whose stored values changed
    revalidated: int = 0  # open rows validated
    released: int = 0  # passed: resolved and pending for the produce pass
    still_failing: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # of the rows still failing
    released_ids: list[str] = field(default_factory=list)  # a sample
    failing_ids: list[str] = field(default_factory=list)  # a sample
    batch_ids: list[str] = field(default_factory=list)  # validation results kept for Data Docs
    produced: dict | None = None  # the produce pass's counts with produce=True


def _open_rows(session: Session, event_ids: list[str] | None, after_id: int = 0, limit: int = CHUNK_ROWS) -> pd.DataFrame:
    """Open quarantined rows (the producer's extract columns), by event ids or by id page."""
    open_entry = (
        select(QUARANTINE.c.event_id)
        .where(QUARANTINE.c.event_id == ORDER_EVENTS.c.event_id, QUARANTINE.c.resolved_at.is_(None))
        .exists()
    )
    query = select(*(ORDER_EVENTS.c[c] for c in COLUMNS)).where(ORDER_EVENTS.c.outcome == "quarantined", open_entry)
    frames = []
    if event_ids is None:
        query = query.where(ORDER_EVENTS.c.id > after_id).order_by(ORDER_EVENTS.c.id).limit(limit)
        frames.append(session.execute(query).all())
    else:
        for chunk in chunks(event_ids):
            frames.append(session.execute(query.where(ORDER_EVENTS.c.event_id.in_(chunk)).order_by(ORDER_EVENTS.c.id)).all())
    rows = [row for part in frames for row in part]
    return pd.DataFrame(rows, columns=list(COLUMNS), dtype=object)


def _existing(session: Session, event_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(event_ids):
        found.update(session.scalars(select(ORDER_EVENTS.c.event_id).where(ORDER_EVENTS.c.event_id.in_(chunk))))
    return found


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip())


def read_corrections(path: Path, report: RevalidateReport) -> pd.DataFrame:
    """The file's rows keyed by event_id (last one wins), as text."""
    frames = list(read_chunks(path))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    report.corrections_read = len(frame)
    if frame.empty:
        return pd.DataFrame(columns=["event_id"], dtype=object)
    if "event_id" not in frame.columns:
        raise UserError(f"{path}: a corrections file needs an event_id column")
    missing = frame["event_id"].map(_blank)
    report.corrections_without_id = int(missing.sum())
    frame = frame[~missing].astype(object)
    return frame.drop_duplicates(subset=["event_id"], keep="last").set_index("event_id", drop=False)


def apply_corrections(rows: pd.DataFrame, corrections: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows with their corrections applied; and the event ids whose values changed."""
    rows = rows.copy()
    changed: list[str] = []
    fields = [c for c in corrections.columns if c in CORRECTABLE]
    extra_columns = [c for c in corrections.columns if c not in EVENT_FIELDS and c != "extra"]
    for index, row in rows.iterrows():
        fix = corrections.loc[row["event_id"]]
        before = row.to_dict()
        for name in fields:
            if not _blank(fix[name]):
                rows.at[index, name] = fix[name]
        extras = {c: fix[c] for c in extra_columns if not _blank(fix[c])}
        if extras:
            current = orjson.loads(row["extra"]) if row["extra"] else {}
            rows.at[index, "extra"] = orjson.dumps({**current, **extras}).decode()
        # pandas-stubs: iterrows yields labels as Hashable, which its `.loc` does not take (pandas does).
        if rows.loc[index].to_dict() != before:  # type: ignore[call-overload]
            changed.append(row["event_id"])
    return rows, changed


def _store(
    session: Session, rows: pd.DataFrame, changed: set[str], passed: pd.DataFrame, failed: pd.DataFrame
) -> None:
    """Write the corrected values; release the passed rows; replace the reasons of the failed ones."""
    now = utcnow()
    rows = rows[rows["event_id"].isin(changed)]
    if not rows.empty:
        values: dict[str, BindParameter[Any]] = {name: bindparam(f"v_{name}") for name in (*CORRECTABLE, "extra")}
        session.execute(
            update(ORDER_EVENTS).where(ORDER_EVENTS.c.id == bindparam("k_id")).values(**values),
            [
                {"k_id": int(r["id"]), **{f"v_{name}": r[name] for name in (*CORRECTABLE, "extra")}}
                for r in rows.to_dict("records")
            ],
        )
    if not passed.empty:
        ids = [int(i) for i in passed["id"]]
        event_ids = list(passed["event_id"])
        for chunk in chunks(ids):
            session.execute(
                update(ORDER_EVENTS)
                .where(ORDER_EVENTS.c.id.in_(chunk), ORDER_EVENTS.c.outcome == "quarantined")
                .values(outcome=None, batch_id=None, produced_at=None)
            )
        for chunk in chunks(event_ids):
            session.execute(
                update(QUARANTINE)
                .where(QUARANTINE.c.event_id.in_(chunk), QUARANTINE.c.resolved_at.is_(None))
                .values(resolved_at=now)
            )
    if not failed.empty:
        session.execute(
            update(QUARANTINE)
            .where(QUARANTINE.c.event_id == bindparam("k_event_id"), QUARANTINE.c.reasons != bindparam("k_reasons"))
            .values(reasons=bindparam("k_reasons")),
            [
                {"k_event_id": e, "k_reasons": orjson.dumps(list(r)).decode()}
                for e, r in zip(failed["event_id"], failed["reasons"])
            ],
        )


def _revalidate(
    session: Session, rows: pd.DataFrame, changed: set[str], settings: Settings, report: RevalidateReport
) -> None:
    from orderstream.validation import validate_events

    batch_id = f"revalidate-{uuid.uuid4().hex}"
    outcome = validate_events(rows, docs_dir=settings.gx_dir, batch_id=batch_id)
    report.batch_ids.append(batch_id)
    passed, failed = outcome.valid, outcome.rejected
    _store(session, rows, changed, passed, failed)
    report.revalidated += len(rows)
    report.released += len(passed)
    report.still_failing += len(failed)
    for reasons in failed.get("reasons", []):
        for reason, n in Counter(reasons).items():
            report.reasons[reason] = report.reasons.get(reason, 0) + n
    report.released_ids.extend(list(passed["event_id"])[: max(0, SAMPLE - len(report.released_ids))])
    report.failing_ids.extend(list(failed["event_id"])[: max(0, SAMPLE - len(report.failing_ids))])


def revalidate_quarantine(
    settings: Settings, sessions: sessionmaker[Session], corrections: Path | None = None
) -> RevalidateReport:
    """Correct (optionally) and re-validate the open quarantine; see the module docstring."""
    log = run_logger(__name__)
    report = RevalidateReport(corrections=str(corrections) if corrections else None)
    if corrections is not None:
        fixes = read_corrections(corrections, report)
        ids = list(fixes.index)
        # One transaction for the whole file: a file that cannot be applied changes nothing.
        with sessions.begin() as session:
            rows = _open_rows(session, ids)
            open_ids = set(rows["event_id"])
            existing = _existing(session, [i for i in ids if i not in open_ids])
            report.unknown = len([i for i in ids if i not in open_ids and i not in existing])
            report.not_quarantined = len(existing)
            if not rows.empty:
                rows, changed = apply_corrections(rows, fixes)
                report.corrected = len(changed)
                for start in range(0, len(rows), CHUNK_ROWS):
                    page = rows.iloc[start : start + CHUNK_ROWS].reset_index(drop=True)
                    _revalidate(session, page, set(changed), settings, report)
    else:
        after_id = 0
        while True:
            with sessions.begin() as session:  # each page is self-contained
                rows = _open_rows(session, None, after_id)
                if rows.empty:
                    break
                after_id = int(rows["id"].iloc[-1])
                _revalidate(session, rows, set(), settings, report)
    log.info(
        "revalidated %d quarantined rows: %d released for the next produce pass, %d still failing %s; "
        "corrections: %d read, %d applied, %d unknown ids, %d not open in quarantine",
        report.revalidated, report.released, report.still_failing, report.reasons,
        report.corrections_read, report.corrected, report.unknown, report.not_quarantined,
    )
    return report
