"""`orderstream load` and the `source` block of status, on both databases."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sqlalchemy import select

from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent, Stock
from orderstream.errors import UserError
from orderstream.source.loader import load_file
from orderstream.status import collect

pytestmark = pytest.mark.integration

ROWS = [
    {"event_id": "e1", "order_id": "o1", "type": "inventory", "created_at": "2026-11-25T10:00:00Z", "sku": "A", "quantity": "2"},
    {"event_id": "e2", "order_id": "o1", "type": "delivery", "created_at": "2026-11-25T10:00:00Z", "customer_email": "a@b.de"},
    {"event_id": "e3", "order_id": "o1", "type": "payment", "created_at": "2026-11-25T10:00:00Z"},
    {"event_id": "e4", "order_id": "o2", "type": "Inventory", "created_at": "2026-11-25T10:00:00Z"},
    {"event_id": "e5", "order_id": "o2", "type": " delivery", "created_at": "2026-11-25T10:00:00Z"},
    {"event_id": "e6", "order_id": "o2", "type": None, "created_at": "2026-11-25T10:00:00Z"},
    {"event_id": "e7", "order_id": "o3", "type": "inventory", "created_at": "x", "sku": "A", "quantity": "abc",
     "note": "keep me"},
    {"event_id": "e1", "order_id": "o9", "type": "inventory"},  # duplicate in the file
    {"event_id": None, "order_id": "o9", "type": "inventory"},  # missing event_id
]


def write(tmp_path, fmt: str, rows: list[dict]):
    frame = pd.DataFrame.from_records(rows)
    path = tmp_path / f"events.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_load_counts_match_the_contract(settings, engine, tmp_path, fmt):
    sessions = session_factory(engine)
    report = load_file(sessions, write(tmp_path, fmt, ROWS))
    assert (report.loaded, report.refused_missing_id, report.refused_duplicate) == (7, 1, 1)
    again = load_file(sessions, write(tmp_path, fmt, ROWS[:2]))
    assert (again.loaded, again.refused_duplicate) == (0, 2)
    with sessions() as session:
        source = collect(session, settings, with_broker=False)["source"]
        row = session.scalars(select(OrderEvent).where(OrderEvent.event_id == "e7")).one()
    assert source == {"inventory": 2, "delivery": 1, "other": 4, "refused_duplicates": 3}
    assert (row.quantity, row.created_at) == ("abc", "x")  # kept as given
    assert json.loads(row.extra)["note"] == "keep me"


def test_jsonl_numbers_are_kept_as_their_text(engine, tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"event_id": "n1", "order_id": "o", "type": "inventory", "quantity": 3, "sku": 1e308}\n')
    load_file(session_factory(engine), path)
    with session_factory(engine)() as session:
        row = session.scalars(select(OrderEvent)).one()
    assert (row.quantity, row.sku) == ("3", "1e+308")


def test_unparseable_file_loads_nothing(engine, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"event_id": "ok", "order_id": "o", "type": "inventory"}\n{not json\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        load_file(session_factory(engine), path)
    with session_factory(engine)() as session:
        assert session.scalars(select(OrderEvent)).all() == []


def test_missing_file_and_unknown_type_are_clear_errors(engine, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_file(session_factory(engine), tmp_path / "absent.csv")
    (tmp_path / "x.xml").write_text("<x/>")
    with pytest.raises(UserError, match="unknown file type"):
        load_file(session_factory(engine), tmp_path / "x.xml")


def test_stock_load_sets_on_hand_and_refuses_bad_rows(engine, tmp_path):
    path = tmp_path / "stock.csv"
    path.write_text("sku,warehouse_id,on_hand\nA,main,10\nB,,5\nC,main,-1\nD,main,x\nA,main,12\n")
    report = load_file(session_factory(engine), path, stock=True)
    assert (report.loaded, report.refused_invalid) == (2, 2)
    with session_factory(engine)() as session:
        stock = {(s.sku, s.warehouse_id): s.on_hand for s in session.scalars(select(Stock))}
    assert stock == {("A", "main"): 12, ("B", "main"): 5}
