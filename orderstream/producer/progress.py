"""Commit a batch's outcome: only after the broker acknowledged its messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
import pandas as pd
from sqlalchemy import BigInteger, Integer, any_, bindparam, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from orderstream.db.bulk import bulk_update
from orderstream.db.engine import dialect_insert, is_postgres
from orderstream.db.models import OrderEvent, ProducerBatch, Quarantine, table_of, utcnow
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
    """Mark rows that were not produced (skipped, quarantined)."""
    if not ids:
        return
    values = {"outcome": outcome, "batch_id": batch_id, "produced_at": None}
    if is_postgres(session.get_bind()):
        # One array parameter instead of thousands of placeholders.
        match = OrderEvent.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
        session.execute(update(OrderEvent).where(match).values(**values), execution_options=NO_SYNC)
        return
    for start in range(0, len(ids), ID_CHUNK):
        chunk = OrderEvent.id.in_(ids[start : start + ID_CHUNK])
        session.execute(update(OrderEvent).where(chunk).values(**values), execution_options=NO_SYNC)


def _mark_produced(session: Session, positions: dict[int, tuple[int | None, int | None]], batch_id: str) -> None:
    """Mark acknowledged rows produced, each with the partition and offset the broker gave it:
    one statement whatever the row count (see `bulk_update`)."""
    now = utcnow()
    events = table_of(OrderEvent)
    bulk_update(
        session,
        events,
        [{"k_id": row_id, "k_partition": p, "k_offset": o} for row_id, (p, o) in positions.items()],
        {"k_id": BigInteger(), "k_partition": Integer(), "k_offset": BigInteger()},
        where=lambda k: [events.c.id == k["k_id"]],
        values=lambda k: {"outcome": "produced", "batch_id": batch_id, "produced_at": now,
                          "produced_partition": k["k_partition"], "produced_offset": k["k_offset"]},
    )


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
    produced: dict[int, tuple[int | None, int | None]],
    skipped_ids: list[int],
    rejected: pd.DataFrame,
    counts: BatchCounts,
    validation: dict,
) -> None:
    """Move the progress mark of every handled row and store the quarantine, in one transaction.

    `produced`: row id -> (partition, offset) of each acknowledged row, from the delivery reports.
    """
    _mark_produced(session, produced, batch_id)
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
