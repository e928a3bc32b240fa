"""In flight is not missing: reconciliation tells events still on their way (pending at the source, or
produced beyond the group's committed offset) from events that are lost (produced below it with no
ledger row). Both databases, the real broker; the produced positions it relies on are checked
against the topic itself."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pandas as pd
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent, ProcessedEvent
from orderstream.reconcile import reconcile
from orderstream.source.repository import insert_events, insert_stock
from orderstream.status import broker_view
from tests.helpers import orderstream_env
from tests.topics import read_topic

pytestmark = pytest.mark.integration

NOW = "2026-11-25T10:00:00+00:00"


def load(engine, ids: list[str]) -> None:
    rows = [{"event_id": i, "order_id": f"o-{i}", "type": "inventory", "created_at": NOW, "sku": "SKU-1", "quantity": "1"}
            for i in ids]
    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame({"sku": ["SKU-1"], "warehouse_id": ["main"], "on_hand": [1000]}))
        insert_events(session, pd.DataFrame.from_records(rows))


def check(engine, settings, *, with_broker: bool = True):
    broker = broker_view(settings) if with_broker else None
    assert broker is not None or not with_broker
    with Session(engine) as s:
        return reconcile(s, settings, broker.positions if broker else None)


def cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orderstream", *args], env=orderstream_env(settings),
                          capture_output=True, text=True, timeout=300)


def test_produced_events_are_recorded_where_the_broker_put_them(settings, engine):
    load(engine, [f"e{i}" for i in range(40)])
    produce_orders()
    with Session(engine) as s:
        recorded = {e: (p, o) for e, p, o in s.execute(
            select(OrderEvent.event_id, OrderEvent.produced_partition, OrderEvent.produced_offset))}
    in_topic = {r.headers["event_id"].decode(): (r.partition, r.offset) for r in read_topic(settings, settings.inventory_topic)}
    assert recorded == in_topic and len(recorded) == 40


def test_produced_but_not_consumed_is_in_flight_and_ok(settings, engine):
    load(engine, ["a1", "a2", "a3", "a4", "a5"])
    produce_orders()
    result = check(engine, settings)
    assert (result.ok, result.missing, result.duplicates, result.in_flight, result.pending) == (True, 0, 0, 5, 0)
    assert result.offsets_known
    load(engine, ["b1", "b2"])  # pending at the source
    status = orjson.loads(cli(settings, "status", "--json").stdout)
    assert status["reconciliation"] == {"ok": True, "missing": 0, "duplicates": 0, "in_flight": 7}
    reconciled = cli(settings, "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert "reconciliation: clean; in flight: 7 (2 pending at the source, 5 produced, not consumed yet)" in reconciled.stderr
    assert orjson.loads(reconciled.stdout)["in_flight"] == 7
    # A row produced before positions were recorded counts as in flight while the group has lag.
    with session_factory(engine).begin() as session:
        session.execute(update(OrderEvent).where(OrderEvent.event_id == "a1").values(produced_offset=None,
                                                                                    produced_partition=None))
    assert check(engine, settings).in_flight == 7
    run_consumer(settings, "inventory", drain=True, metrics_port=None)
    result = check(engine, settings)
    assert (result.ok, result.missing, result.in_flight, result.pending) == (True, 0, 2, 2)


def test_produced_below_the_committed_offset_without_a_ledger_row_is_missing(settings, engine):
    load(engine, ["c1", "c2", "c3"])
    produce_orders()
    run_consumer(settings, "inventory", drain=True, metrics_port=None)
    assert check(engine, settings).ok
    with session_factory(engine).begin() as session:  # the effect of c2 lost
        session.execute(delete(ProcessedEvent).where(ProcessedEvent.event_id == "c2"))
    result = check(engine, settings)
    assert (result.ok, result.missing, result.in_flight) == (False, 1, 0)
    assert result.topics[0].missing_ids == ["c2"]
    # Without the broker nothing can be told in flight: the safe answer is missing.
    unknown = check(engine, settings, with_broker=False)
    assert (unknown.ok, unknown.missing, unknown.offsets_known) == (False, 1, False)
    # With no position recorded and nothing left for the group to consume, it is missing too.
    with session_factory(engine).begin() as session:
        session.execute(update(OrderEvent).where(OrderEvent.event_id == "c2").values(produced_offset=None))
    assert check(engine, settings).missing == 1
    reconciled = cli(settings, "reconcile")
    assert reconciled.returncode == 1
    assert "reconciliation: NOT clean: missing 1, applied twice 0; nothing in flight" in reconciled.stderr
    assert orjson.loads(reconciled.stdout)["topics"][0]["missing_ids"] == ["c2"]
