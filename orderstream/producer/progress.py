"""Commit a batch's outcome: only after the broker acknowledged its messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
import pandas as pd
from sqlalchemy import BigInteger, any_, bindparam, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from orderstream.db.engine import dialect_insert, is_postgres
from orderstream.db.models import OrderEvent, ProducerBatch, Quarantine, utcnow
from orderstream.source.fields import EVENT_FIELDS

ID_CHUNK = 10_000  # keeps SQLite's IN lists under its parameter limit
# No ORM objects of these rows live in the session: syncing them would re-read every id.
NO_SYNC = {"synchronize_session": False}


@dataclass
class BatchCounts:
    extracted: int = 0
    produced_inventory: int = 0
    produced_delivery: int = 0
    skipped_other: int = 0
    quarantined: int = 0
    unacknowledged: int = 0


def _mark(session: Session, ids: list[int], outcome: str, batch_id: str) -> None:
    now = utcnow()
    values = {"outcome": outcome, "batch_id": batch_id, "produced_at": now if outcome == "produced" else None}
    if is_postgres(session.get_bind()):
        # One array parameter instead of thousands of placeholders.
        match = OrderEvent.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
        session.execute(update(OrderEvent).where(match).values(**values), execution_options=NO_SYNC)
        return
    for start in range(0, len(ids), ID_CHUNK):
        chunk = OrderEvent.id.in_(ids[start : start + ID_CHUNK])
        session.execute(update(OrderEvent).where(chunk).values(**values), execution_options=NO_SYNC)


def quarantine_rows(rejected: pd.DataFrame, batch_id: str) -> list[dict]:
    now = utcnow()
    rows = rejected[list(EVENT_FIELDS)].to_dict("records")
    return [
        {
            "event_id": row["event_id"],
            "source_id": int(source_id),
            "batch_id": batch_id,
            "reasons": orjson.dumps(list(reasons)).decode(),
            "row": orjson.dumps({**(orjson.loads(extra) if extra else {}), **row}).decode(),
            "quarantined_at": now,
        }
        for row, source_id, reasons, extra in zip(rows, rejected["id"], rejected["reasons"], rejected["extra"])
    ]


def commit_batch(
    session: Session,
    batch_id: str,
    *,
    produced_ids: list[int],
    skipped_ids: list[int],
    rejected: pd.DataFrame,
    counts: BatchCounts,
    validation: dict,
) -> None:
    """Move the progress mark of every handled row and store the quarantine, in one transaction."""
    _mark(session, produced_ids, "produced", batch_id)
    _mark(session, skipped_ids, "skipped", batch_id)
    if not rejected.empty:
        _mark(session, [int(i) for i in rejected["id"]], "quarantined", batch_id)
        # A row quarantined again (after a correction that still fails) reopens its entry.
        statement = dialect_insert(session, Quarantine)
        statement = statement.on_conflict_do_update(
            index_elements=["event_id"],
            set_={"batch_id": statement.excluded.batch_id, "reasons": statement.excluded.reasons,
                  "row": statement.excluded.row, "quarantined_at": statement.excluded.quarantined_at,
                  "resolved_at": None},
        )
        session.execute(statement, quarantine_rows(rejected, batch_id))
    session.add(
        ProducerBatch(
            batch_id=batch_id,
            finished_at=utcnow(),
            validation=orjson.dumps(validation).decode(),
            **{k: v for k, v in asdict(counts).items() if k != "unacknowledged"},
        )
    )
