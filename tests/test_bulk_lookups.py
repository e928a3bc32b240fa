"""Key lookups of a batch (`bulk.select_keys`) probe the table's index once per key, whatever the
table's size, and return (and lock) the rows in key order."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from orderstream.db import bulk as sql
from orderstream.db.models import Delivery, table_of

pytestmark = pytest.mark.integration

DELIVERIES = table_of(Delivery)


def _deliveries(start: int, n: int, email: str = "a@example.com") -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    return [{"order_id": f"o{i:05d}", "status": "scheduled", "customer_email": email, "postal_area": "DE101",
             "updated_at": now} for i in range(start, start + n)]


def _looked_up(engine, query, keys: list[tuple], *, lock: bool = False) -> tuple[list, str | None]:
    """`select_keys` on the deliveries' order ids, and on PostgreSQL the plan of the statement it sent."""
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, params, context, executemany):
        if "deliveries" in statement:
            statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(engine) as session, session.begin():
            rows = sql.select_keys(session, query, (DELIVERIES.c.order_id,), keys, lock=lock)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    if engine.dialect.name != "postgresql":
        return rows, None
    (statement, params), = statements
    with engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.connection.driver_connection.execute("EXPLAIN " + statement, params))
    return rows, plan


def test_a_batch_of_keys_is_looked_up_by_index_in_key_order(engine):
    with engine.begin() as conn:
        conn.execute(DELIVERIES.insert(), _deliveries(0, 5_000))
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE deliveries"))
    keys = [(f"o{i:05d}",) for i in (4_321, 17, 999, 2_500)] + [("missing",)]
    query = select(DELIVERIES.c.order_id, DELIVERIES.c.status).order_by(DELIVERIES.c.order_id)
    rows, plan = _looked_up(engine, query, keys, lock=True)
    assert [row.order_id for row in rows] == ["o00017", "o00999", "o02500", "o04321"]
    if plan is not None:
        # A hash join over a scan of the whole table costs what the table holds, not the batch.
        assert "Seq Scan on deliveries" not in plan, plan
        assert "Index Scan using deliveries_pkey" in plan, plan


def test_a_lookup_probes_the_index_even_when_the_tables_statistics_are_stale(engine):
    """The planner last saw a small table where no row passes the lookup's filter (on a column
    without an index): joined plainly, it scanned the grown table and matched the keys against each
    of its rows (seen in a P3 run, on the reservations of cancelled orders). A lookup must probe."""
    with engine.begin() as conn:
        conn.execute(DELIVERIES.insert(), _deliveries(0, 200, "a@example.com"))
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE deliveries"))
        conn.execute(DELIVERIES.insert(), _deliveries(200, 5_000, "b@example.com"))  # not analyzed
    keys = [(f"o{i:05d}",) for i in (4_321, 17, 999, 2_500)]
    query = select(DELIVERIES.c.order_id).where(DELIVERIES.c.customer_email == "b@example.com")
    rows, plan = _looked_up(engine, query, keys)
    assert sorted(row.order_id for row in rows) == ["o00999", "o02500", "o04321"]
    if plan is not None:
        assert "Seq Scan on deliveries" not in plan, plan
        assert "Index Scan using deliveries_pkey" in plan, plan
