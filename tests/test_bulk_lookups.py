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


def test_a_batch_of_keys_is_looked_up_by_index_in_key_order(engine):
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(DELIVERIES.insert(), [
            {"order_id": f"o{i:05d}", "status": "scheduled", "customer_email": "a@example.com",
             "postal_area": "DE101", "updated_at": now}
            for i in range(5_000)
        ])
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE deliveries"))
    keys = [(f"o{i:05d}",) for i in (4_321, 17, 999, 2_500)] + [("missing",)]
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, params, context, executemany):
        if "deliveries" in statement:
            statements.append((statement, params))

    query = select(DELIVERIES.c.order_id, DELIVERIES.c.status).order_by(DELIVERIES.c.order_id)
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(engine) as session, session.begin():
            rows = sql.select_keys(session, query, (DELIVERIES.c.order_id,), keys, lock=True)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert [row.order_id for row in rows] == ["o00017", "o00999", "o02500", "o04321"]
    if engine.dialect.name == "postgresql":
        (statement, params), = statements
        with engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.connection.driver_connection.execute("EXPLAIN " + statement, params))
        # A hash join over a scan of the whole table costs what the table holds, not the batch.
        assert "Seq Scan on deliveries" not in plan, plan
        assert "Index Scan using deliveries_pkey" in plan, plan


def test_a_lookup_probes_the_index_even_when_the_tables_statistics_are_stale(engine):
    """The planner last saw a small table where no row passes the lookup's filter (on a column
    without an index): joined plainly, it scanned the grown table and matched the keys against each
    of its rows (seen in a P3 run, on the reservations of cancelled orders). A lookup must probe."""
    now = dt.datetime.now(dt.UTC)

    def rows(start: int, n: int, email: str) -> list[dict]:
        return [{"order_id": f"o{i:05d}", "status": "scheduled", "customer_email": email,
                 "postal_area": "DE101", "updated_at": now} for i in range(start, start + n)]

    with engine.begin() as conn:
        conn.execute(DELIVERIES.insert(), rows(0, 200, "a@example.com"))
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE deliveries"))
        conn.execute(DELIVERIES.insert(), rows(200, 5_000, "b@example.com"))  # not analyzed
    keys = [(f"o{i:05d}",) for i in (4_321, 17, 999, 2_500)]
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, params, context, executemany):
        if "deliveries" in statement:
            statements.append((statement, params))

    query = select(DELIVERIES.c.order_id).where(DELIVERIES.c.customer_email == "b@example.com")
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with Session(engine) as session:
            rows_found = sql.select_keys(session, query, (DELIVERIES.c.order_id,), keys)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert sorted(row.order_id for row in rows_found) == ["o00999", "o02500", "o04321"]
    if engine.dialect.name == "postgresql":
        (statement, params), = statements
        with engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.connection.driver_connection.execute("EXPLAIN " + statement, params))
        assert "Seq Scan on deliveries" not in plan, plan
        assert "Index Scan using deliveries_pkey" in plan, plan
