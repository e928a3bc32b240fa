"""Hostile text end to end: stored and delivered literally when valid, quarantined when not,
every table intact, and the audit exact (issue 8, test 7)."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from orderstream.db.engine import session_factory
from orderstream.db.models import Base, OrderEvent, Quarantine, Reservation, Stock
from orderstream.source.repository import insert_events, insert_stock
from tests.faults.audit import audit
from tests.topics import read_topic

pytestmark = pytest.mark.fault

NOW = "2026-11-25T10:00:00+00:00"
INJECT = "'); DROP TABLE order_events;--"
RTL = "\u202eשלום עולם \u0645\u0631\u062d\u0628\u0627"  # right-to-left override, Hebrew, Arabic
EMOJI = "📦🚚 👨‍👩‍👧‍👦 🏳️‍🌈"


def inv(event_id: str, **over) -> dict:
    return {"event_id": event_id, "order_id": f"o-{event_id}", "type": "inventory", "created_at": NOW,
            "sku": "SKU-1", "quantity": "2", "warehouse_id": "main", **over}


def dlv(event_id: str, **over) -> dict:
    return {"event_id": event_id, "order_id": f"o-{event_id}", "type": "delivery", "created_at": NOW,
            "status": "requested", "customer_email": "ann@example.com", "address_line": "1 Main St",
            "city": "Berlin", "postal_code": "10115", "country": "DE", **over}


VALID = [
    inv("h-sql", order_id=INJECT, sku=INJECT, warehouse_id=INJECT, note=INJECT),
    inv("h-sql-id" + INJECT, sku="SKU-1"),
    dlv("h-rtl", order_id=RTL, address_line=RTL, city="\u062a\u0644 \u0623\u0628\u064a\u0628", note=RTL),
    inv("h-emoji", order_id=EMOJI, sku="SKU-" + EMOJI, note=EMOJI),
    dlv("h-emoji-d", order_id="o-" + EMOJI, address_line=EMOJI + " street 1", city=INJECT),
    inv("h-quote", order_id='o"\\\n\t', sku='SKU"\\', note="\\u0000 is not a NUL"),
]
INVALID = {
    "h-1e308": inv("h-1e308", quantity="1e308"),
    "h-type": inv("h-type", type="inventory_orders;x"),
    "h-type-d": dlv("h-type-d", type="delivery;DROP TABLE stock"),
    "h-mail": dlv("h-mail", customer_email=INJECT),
}
STOCK = [("SKU-1", "main", 100), (INJECT, INJECT, 100), ("SKU-" + EMOJI, "main", 100), ('SKU"\\', "main", 100)]
CHECKED = ("order_id", "sku", "warehouse_id", "address_line", "city", "note")


def _load(engine, rows: list[dict]) -> int:
    with session_factory(engine).begin() as session:
        return insert_events(session, pd.DataFrame.from_records(rows)).loaded


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_hostile_text_is_stored_and_delivered_literally_and_invalid_rows_quarantined(settings, engine):
    tables = _tables(engine)
    assert set(Base.metadata.tables) <= tables
    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame.from_records(STOCK, columns=["sku", "warehouse_id", "on_hand"]))
    assert _load(engine, VALID + list(INVALID.values())) == len(VALID) + len(INVALID)

    with Session(engine) as s:  # stored byte-exact
        stored = {e.event_id: e for e in s.scalars(select(OrderEvent))}
    for row in VALID:
        for field in ("order_id", "sku", "address_line", "city"):
            if field in row:
                assert getattr(stored[row["event_id"]], field) == row[field], (row["event_id"], field)

    report = produce_orders()
    assert report.counts.quarantined == len(INVALID)
    assert report.counts.produced_inventory + report.counts.produced_delivery == len(VALID)

    records = read_topic(settings, settings.inventory_topic) + read_topic(settings, settings.delivery_topic)
    by_id = {r.headers["event_id"].decode(): r for r in records}
    assert set(by_id) == {row["event_id"] for row in VALID}
    for row in VALID:
        record = by_id[row["event_id"]]
        assert record.key == row["order_id"].encode()  # byte-exact key
        payload = record.json
        for field in CHECKED:
            if field in row:
                assert payload[field] == row[field], (row["event_id"], field)
                # byte-exact in the raw payload: the UTF-8 JSON string of the value, unescaped
                assert orjson.dumps(row[field]) in record.value, (row["event_id"], field)

    with Session(engine) as s:
        quarantined = {q.event_id: orjson.loads(q.reasons) for q in s.scalars(select(Quarantine))}
    assert set(quarantined) == set(INVALID)
    assert any("quantity" in r for r in quarantined["h-1e308"])
    assert any("type" in r for r in quarantined["h-type"])
    assert any("type" in r for r in quarantined["h-type-d"])
    assert any("email" in r for r in quarantined["h-mail"])

    counts = audit(settings, engine)
    outcomes = (counts.produced, counts.applied, counts.dead_lettered, counts.quarantined)
    assert outcomes == (len(VALID), len(VALID), 0, len(INVALID))
    assert _tables(engine) == tables  # every table intact
    with Session(engine) as s:
        held = {r.event_id: (r.sku, r.warehouse_id, r.outcome) for r in s.scalars(select(Reservation))}
        levels = {(r.sku, r.warehouse_id): r.reserved for r in s.scalars(select(Stock))}
    assert held["h-sql"] == (INJECT, INJECT, "reserved")
    assert held["h-emoji"] == ("SKU-" + EMOJI, "main", "reserved")
    assert levels[(INJECT, INJECT)] == 2 and levels[("SKU-" + EMOJI, "main")] == 2


def test_a_nul_byte_in_a_field_is_refused_or_quarantined_with_a_reason_never_a_crashed_batch(settings, engine):
    """PostgreSQL text cannot hold U+0000. Whatever the database, the row with it must be refused at
    load time or quarantined with a reason, and the rows around it must go on."""
    tables = _tables(engine)
    rows = [inv("n-ok-1"), inv("n-nul", sku="SKU\x00-1", note="a\x00b"), inv("n-ok-2")]
    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame.from_records([("SKU-1", "main", 100)], columns=["sku", "warehouse_id", "on_hand"]))
    try:
        loaded = _load(engine, rows)
    except Exception as exc:  # noqa: BLE001 - the defect being looked for is exactly an unhandled crash
        pytest.fail(f"loading 3 rows, one with a NUL byte, crashed the whole load: {type(exc).__name__}: {str(exc)[:300]}")
    produce_orders()
    with Session(engine) as s:
        outcome = dict(s.execute(select(OrderEvent.event_id, OrderEvent.outcome)).all())
        quarantined = {q.event_id: orjson.loads(q.reasons) for q in s.scalars(select(Quarantine))}
    assert outcome.get("n-ok-1") == outcome.get("n-ok-2") == "produced"
    if "n-nul" in outcome:  # stored (SQLite can): then it must be quarantined, not produced
        assert loaded == 3
        assert outcome["n-nul"] == "quarantined" and quarantined.get("n-nul"), outcome
    else:
        assert loaded == 2
    counts = audit(settings, engine)
    assert counts.applied == 2
    assert _tables(engine) == tables
