"""Reprocessing flows on a real broker and both databases: replay dead letters, re-validate
quarantine, re-consume from a timestamp. Each must change nothing when run a second time."""

from __future__ import annotations

import datetime as dt
import threading

import orjson
import pandas as pd
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from flows.reprocess import reconsume_from_timestamp, replay_dead_letters, revalidate_quarantine
from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.db.models import (
    ConsumerCounter,
    Delivery,
    Notification,
    OrderEvent,
    ProcessedEvent,
    Quarantine,
    Reservation,
    Stock,
)
from orderstream.errors import UserError
from orderstream.kafka.clients import admin_client
from orderstream.kafka.lag import end_offsets
from orderstream.ops.offsets import GroupActive, active_members, group_committed, parse_timestamp
from orderstream.ops.replay import replay_group
from orderstream.reconcile import reconcile
from orderstream.settings import dlq_topic
from orderstream.source.repository import insert_events, insert_stock
from tests.helpers import wait_until
from tests.topics import read_topic

NOW = "2026-11-25T10:00:00+00:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


def inventory(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": NOW,
            "sku": "SKU-1", "quantity": "2", **over}


def delivery(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "delivery", "created_at": NOW,
            "status": "requested", **ADDRESS, **over}


def load(engine, rows: list[dict]) -> None:
    with session_factory(engine).begin() as session:
        insert_events(session, pd.DataFrame.from_records(rows))


def load_stock(engine, rows: list[tuple[str, str, int]]) -> None:
    """What `orderstream load --stock` does with a file of sku, warehouse_id, on_hand."""
    frame = pd.DataFrame.from_records(rows, columns=["sku", "warehouse_id", "on_hand"])
    with session_factory(engine).begin() as session:
        insert_stock(session, frame)


def drain(settings, role: str):
    return run_consumer(settings, role, drain=True, metrics_port=None)


def ledger(engine, group: str) -> dict[str, tuple[str, str | None]]:
    with Session(engine) as s:
        rows = s.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome, ProcessedEvent.error_class)
                         .where(ProcessedEvent.consumer_group == group)).all()
    return {e: (o, c) for e, o, c in rows}


def ledger_rows(engine, group: str) -> list[tuple]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(
            select(ProcessedEvent.event_id, ProcessedEvent.outcome, ProcessedEvent.topic, ProcessedEvent.partition,
                   ProcessedEvent.offset, ProcessedEvent.error_class, ProcessedEvent.error_message,
                   ProcessedEvent.processed_at)
            .where(ProcessedEvent.consumer_group == group).order_by(ProcessedEvent.event_id)).all()]


def reservations(engine) -> dict[str, tuple[str, str, int]]:
    with Session(engine) as s:
        return {r.event_id: (r.outcome, r.sku, r.quantity) for r in s.scalars(select(Reservation))}


def stock(engine) -> dict[tuple[str, str], tuple[int, int]]:
    with Session(engine) as s:
        return {(r.sku, r.warehouse_id): (r.on_hand, r.reserved) for r in s.scalars(select(Stock))}


def source(engine) -> dict[str, tuple]:
    with Session(engine) as s:
        return {r.event_id: (r.outcome, r.quantity, r.sku, r.batch_id) for r in s.scalars(select(OrderEvent))}


def quarantine(engine) -> dict[str, tuple[list[str], bool]]:
    with Session(engine) as s:
        return {q.event_id: (orjson.loads(q.reasons), q.resolved_at is not None) for q in s.scalars(select(Quarantine))}


def deduplicated(engine, group: str) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(ConsumerCounter.value).where(ConsumerCounter.consumer_group == group,
                                                                ConsumerCounter.name == "deduplicated")) or 0)


def reconciliation(engine, settings) -> tuple[bool, int, int]:
    with Session(engine) as s:
        result = reconcile(s, settings)
    return result.ok, result.missing, result.duplicates


# -- replay dead letters -----------------------------------------------------------------------------


@pytest.mark.integration
def test_unknown_sku_dead_letters_apply_exactly_once_after_the_stock_is_loaded(settings, engine):
    group = settings.inventory_group
    load_stock(engine, [("SKU-1", "main", 10)])
    load(engine, [inventory("i-ok", "o1"), inventory("i-new-1", "o2", sku="SKU-NEW", quantity="3"),
                  inventory("i-new-2", "o3", sku="SKU-NEW", quantity="4")])
    produce_orders()
    drain(settings, "inventory")
    assert ledger(engine, group) == {"i-ok": ("applied", None), "i-new-1": ("dead_lettered", "UnknownSku"),
                                     "i-new-2": ("dead_lettered", "UnknownSku")}
    dlq = dlq_topic(settings.inventory_topic)
    assert len(read_topic(settings, dlq)) == 2

    # Replayed before the cause is fixed: they fail again, stay dead-lettered, are not re-sent.
    early = replay_dead_letters(role="inventory")
    assert (early.read, early.applied, early.failed_again, early.failed_reasons) == (2, 0, 2, {"UnknownSku": 2})
    assert ledger(engine, group)["i-new-1"] == ("dead_lettered", "UnknownSku")
    assert set(reservations(engine)) == {"i-ok"}

    load_stock(engine, [("SKU-NEW", "main", 7)])  # the fix
    # `limit` caps the dead letters read; the failed ones of the early run were left unread
    # (the replay group's offset stays at them), so the rest is picked up by the next run.
    one = replay_dead_letters(role="inventory", limit=1)
    assert (one.read, one.applied, one.failed_again) == (1, 1, 0)
    rest = replay_dead_letters(role="inventory")
    assert (rest.read, rest.applied, rest.failed_again) == (1, 1, 0)
    assert sorted(one.applied_ids + rest.applied_ids) == ["i-new-1", "i-new-2"]
    assert reservations(engine) == {"i-ok": ("reserved", "SKU-1", 2), "i-new-1": ("reserved", "SKU-NEW", 3),
                                    "i-new-2": ("reserved", "SKU-NEW", 4)}
    assert stock(engine) == {("SKU-1", "main"): (10, 2), ("SKU-NEW", "main"): (7, 7)}
    rows = ledger_rows(engine, group)
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in rows] == [
        (e, "applied", settings.inventory_topic, None, None) for e in ("i-new-1", "i-new-2", "i-ok")
    ]
    assert len(read_topic(settings, dlq)) == 2  # nothing was dead-lettered again
    assert reconciliation(engine, settings) == (True, 0, 0)
    ends = end_offsets(admin_client(settings), dlq)
    assert group_committed(settings, replay_group(settings, "inventory"), dlq) == {p: e for p, e in ends.items() if e}

    # Second run: nothing to read, nothing changes; a full re-read also changes nothing.
    before = (ledger_rows(engine, group), reservations(engine), stock(engine))
    again = replay_dead_letters(role="inventory")
    assert (again.read, again.applied, again.failed_again) == (0, 0, 0)
    full = replay_dead_letters(role="inventory", from_beginning=True)
    assert (full.read, full.applied, full.failed_again, full.not_dead_lettered) == (2, 0, 0, 2)
    assert (ledger_rows(engine, group), reservations(engine), stock(engine)) == before


@pytest.mark.integration
def test_illegal_delivery_transition_applies_on_replay_once_its_order_exists(settings, engine):
    group = settings.delivery_group
    # `dispatched` arrives before the delivery exists (and before it is scheduled): illegal then.
    load(engine, [delivery("d-dispatched", "o9", status="dispatched"), delivery("d-requested", "o9")])
    produce_orders()
    drain(settings, "delivery")
    assert ledger(engine, group) == {"d-dispatched": ("dead_lettered", "IllegalTransition"),
                                     "d-requested": ("applied", None)}
    report = replay_dead_letters(role="delivery")
    assert (report.read, report.applied, report.failed_again) == (1, 1, 0)
    with Session(engine) as s:
        assert s.get(Delivery, "o9").status == "dispatched"
        assert sorted(n.to_status for n in s.scalars(select(Notification))) == ["dispatched", "requested", "scheduled"]
    assert ledger(engine, group)["d-dispatched"] == ("applied", None)
    assert reconciliation(engine, settings) == (True, 0, 0)

    again = replay_dead_letters(role="delivery", from_beginning=True)
    assert (again.read, again.applied, again.not_dead_lettered) == (1, 0, 1)
    with Session(engine) as s:
        assert len(s.scalars(select(Notification)).all()) == 3


# -- re-validate quarantine --------------------------------------------------------------------------


@pytest.mark.integration
def test_corrected_quarantined_row_is_released_and_produced_once(settings, engine, tmp_path):
    load(engine, [inventory("q1", "o1", quantity="abc"), inventory("ok1", "o2")])
    produce_orders()
    assert source(engine)["q1"][0] == "quarantined"
    fix = tmp_path / "fix.csv"
    fix.write_text("event_id,quantity,note\nq1,3,fixed by ops\nok1,9,\nnope,1,\n")

    report = revalidate_quarantine(corrections=str(fix), produce=True)
    assert (report.corrections_read, report.unknown, report.not_quarantined) == (3, 1, 1)
    assert (report.corrected, report.revalidated, report.released, report.still_failing) == (1, 1, 1, 0)
    assert report.produced["produced_inventory"] == 1
    rows = source(engine)
    assert rows["q1"][:2] == ("produced", "3") and rows["ok1"][:2] == ("produced", "2")
    assert quarantine(engine)["q1"][1] is True
    records = read_topic(settings, settings.inventory_topic)
    by_id = {}
    for r in records:
        by_id.setdefault(r.headers["event_id"], []).append(r.json)
    assert {k: len(v) for k, v in by_id.items()} == {b"q1": 1, b"ok1": 1}
    assert by_id[b"q1"][0]["quantity"] == 3 and by_id[b"q1"][0]["note"] == "fixed by ops"  # a typed message

    snapshot = (source(engine), quarantine(engine))
    again = revalidate_quarantine(corrections=str(fix), produce=True)
    assert (again.released, again.revalidated, again.not_quarantined, again.unknown) == (0, 0, 2, 1)
    assert again.produced is None
    assert (source(engine), quarantine(engine)) == snapshot
    assert len(read_topic(settings, settings.inventory_topic)) == 2


@pytest.mark.integration
def test_revalidation_without_corrections_releases_rows_that_now_pass_and_keeps_the_rest(settings, engine):
    load(engine, [inventory("q-fixed", quantity="abc"), inventory("q-bad", sku=None)])
    produce_orders()
    reasons_fixed, reasons_bad = quarantine(engine)["q-fixed"][0], quarantine(engine)["q-bad"][0]
    # Fixed in place by an operator (or a rule was relaxed): re-validated as it is now.
    with session_factory(engine).begin() as s:
        s.execute(update(OrderEvent).where(OrderEvent.event_id == "q-fixed").values(quantity="5"))

    report = revalidate_quarantine()
    assert (report.revalidated, report.released, report.still_failing) == (2, 1, 1)
    assert report.failing_ids == ["q-bad"] and report.reasons == {r: 1 for r in reasons_bad}
    assert source(engine)["q-fixed"] == (None, "5", "SKU-1", None)  # pending for the next produce pass
    assert source(engine)["q-bad"][0] == "quarantined"
    assert quarantine(engine) == {"q-fixed": (reasons_fixed, True), "q-bad": (reasons_bad, False)}

    snapshot = (source(engine), quarantine(engine))
    again = revalidate_quarantine()
    assert (again.revalidated, again.released, again.still_failing) == (1, 0, 1)
    assert (source(engine), quarantine(engine)) == snapshot

    produce_orders()
    assert source(engine)["q-fixed"][0] == "produced"
    assert [r.headers["event_id"] for r in read_topic(settings, settings.inventory_topic)] == [b"q-fixed"]


# -- re-consume from a timestamp ---------------------------------------------------------------------


@pytest.mark.integration
def test_reconsume_from_a_timestamp_rereads_and_the_ledger_makes_it_a_counted_no_op(settings, engine):
    group = settings.inventory_group
    load_stock(engine, [("SKU-1", "main", 100)])
    load(engine, [inventory(f"i{n}", f"o{n}") for n in range(3)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    produce_orders()
    first = drain(settings, "inventory")
    assert first.applied == 3
    effects = (reservations(engine), stock(engine), ledger_rows(engine, group))

    reset = reconsume_from_timestamp(role="inventory", timestamp=start.isoformat())
    assert reset.changed and reset.to_reread == 3
    assert all(p.offset == 0 for p in reset.partitions)
    assert group_committed(settings, group, settings.inventory_topic) == {
        p.partition: 0 for p in reset.partitions
    }
    again = reconsume_from_timestamp(role="inventory", timestamp=start.isoformat())
    assert not again.changed and again.to_reread == 0
    assert [(p.partition, p.committed_before, p.offset) for p in again.partitions] == [
        (p.partition, 0, 0) for p in reset.partitions
    ]

    second = drain(settings, "inventory")
    assert (second.consumed, second.applied, second.deduplicated) == (3, 0, 3)
    assert deduplicated(engine, group) == 3
    assert (reservations(engine), stock(engine), ledger_rows(engine, group)) == effects
    assert reconciliation(engine, settings) == (True, 0, 0)

    # A time after every record: nothing to re-read, offsets go to the end.
    later = reconsume_from_timestamp(role="inventory", timestamp="2999-01-01T00:00:00Z", dry_run=True)
    assert later.to_reread == 0 and later.dry_run


@pytest.mark.integration
def test_reconsume_is_refused_while_the_group_has_active_members(settings, engine):
    load_stock(engine, [("SKU-1", "main", 100)])
    load(engine, [inventory("i1")])
    produce_orders()
    stop = threading.Event()
    thread = threading.Thread(
        target=run_consumer, args=(settings, "inventory"), kwargs={"drain": False, "metrics_port": None,
                                                                     "stop_event": stop}, daemon=True)
    thread.start()
    try:
        admin = admin_client(settings)
        wait_until(lambda: active_members(admin, settings.inventory_group), 60, "the consumer joined its group")
        wait_until(lambda: ledger(engine, settings.inventory_group), 60, "the consumer applied the event")
        committed = wait_until(
            lambda: group_committed(settings, settings.inventory_group, settings.inventory_topic), 30, "offsets committed")
        with pytest.raises(GroupActive, match="active member"):
            reconsume_from_timestamp(role="inventory", timestamp="2000-01-01T00:00:00Z")
        assert group_committed(settings, settings.inventory_group, settings.inventory_topic) == committed
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


@pytest.mark.unit
@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-11-25T10:00:00"])
def test_reconsume_timestamp_must_be_iso_8601_with_an_offset(value):
    with pytest.raises(UserError):
        parse_timestamp(value)


@pytest.mark.unit
def test_reconsume_timestamp_is_taken_as_utc():
    assert parse_timestamp("2026-11-25T11:00:00+01:00") == dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)
    assert parse_timestamp("2026-11-25T10:00:00Z") == dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)
