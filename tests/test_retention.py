"""The retention flow: deletes only fully handled old rows, pairs source rows with their ledger
entries once Kafka can no longer deliver the message, never touches what is not reconciled,
and changes nothing when run again."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from confluent_kafka import TopicPartition
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from flows.retention import retention_cleanup
from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent, ProcessedEvent, Quarantine
from orderstream.kafka.clients import admin_client
from orderstream.kafka.lag import end_offsets
from orderstream.ops.retention import KAFKA_DEFAULT_RETENTION_MS, LEDGER_MARGIN
from orderstream.reconcile import reconcile
from orderstream.source.repository import insert_events, insert_stock

NOW = "2026-11-25T10:00:00+00:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}
OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)


def inventory(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": NOW,
            "sku": "SKU-1", "quantity": "2", **over}


def delivery(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "delivery", "created_at": NOW,
            "status": "requested", **ADDRESS, **over}


def load(engine, rows: list[dict]) -> None:
    with session_factory(engine).begin() as session:
        insert_events(session, pd.DataFrame.from_records(rows))


def source(engine) -> dict[str, str | None]:
    with Session(engine) as s:
        return dict(s.execute(select(OrderEvent.event_id, OrderEvent.outcome)).all())


def ledger(engine) -> dict[tuple[str, str], str]:
    with Session(engine) as s:
        rows = s.execute(select(ProcessedEvent.consumer_group, ProcessedEvent.event_id, ProcessedEvent.outcome)).all()
    return {(g, e): o for g, e, o in rows}


def quarantine(engine) -> dict[str, bool]:
    with Session(engine) as s:
        return {q.event_id: q.resolved_at is not None for q in s.scalars(select(Quarantine))}


def reconciliation(engine, settings) -> tuple[bool, int, int, int]:
    with Session(engine) as s:
        result = reconcile(s, settings)
    return result.ok, result.missing, result.duplicates, result.pending


def age(engine, keep_young: set[str]) -> None:
    """Make every row and ledger entry 40 days old except the events in `keep_young`."""
    with session_factory(engine).begin() as s:
        s.execute(update(OrderEvent).where(OrderEvent.event_id.not_in(keep_young)).values(loaded_at=OLD))
        s.execute(update(ProcessedEvent).where(ProcessedEvent.event_id.not_in(keep_young)).values(processed_at=OLD))


def expire_topic(settings, topic: str) -> None:
    """What Kafka's retention does to old segments: move every partition's log start to its end."""
    admin = admin_client(settings)
    ends = end_offsets(admin, topic)
    futures = admin.delete_records([TopicPartition(topic, p, end) for p, end in ends.items() if end])
    for future in futures.values():
        future.result(30)


@pytest.mark.integration
def test_retention_deletes_only_handled_old_rows_and_never_unreconciled_ones(settings, engine):
    inv_group, dlv_group = settings.inventory_group, settings.delivery_group
    with session_factory(engine).begin() as s:
        insert_stock(s, pd.DataFrame({"sku": ["SKU-1"], "warehouse_id": ["main"], "on_hand": [100]}))
    load(engine, [
        inventory("i-old", "o1"),  # applied
        inventory("i-dead", "o2", sku="SKU-NONE"),  # dead-lettered, never replayed
        inventory("i-young", "o3"),  # applied, but recent
        delivery("d-old", "o4"),  # applied by the delivery consumer
        {"event_id": "p-old", "order_id": "o5", "type": "payment", "created_at": NOW},  # skipped
        inventory("q-open", "o6", quantity="abc"),  # quarantined, awaiting correction
        inventory("q-dismissed", "o7", quantity="abc"),  # quarantined, then dismissed
    ])
    produce_orders()
    run_consumer(settings, "inventory", drain=True, metrics_port=None)
    run_consumer(settings, "delivery", drain=True, metrics_port=None)
    load(engine, [inventory("i-pending", "o8")])  # loaded, not produced yet
    with session_factory(engine).begin() as s:
        s.execute(update(Quarantine).where(Quarantine.event_id == "q-dismissed").values(resolved_at=OLD))
    age(engine, keep_young={"i-young"})
    assert ledger(engine) == {(inv_group, "i-old"): "applied", (inv_group, "i-dead"): "dead_lettered",
                              (inv_group, "i-young"): "applied", (dlv_group, "d-old"): "applied"}
    reconciled = reconciliation(engine, settings)
    assert reconciled == (True, 0, 0, 1)  # i-pending is not produced yet: in flight, not missing

    # Kafka still holds every message: the ledger must stay, so must the produced rows.
    first = retention_cleanup(source_max_age_days=30)
    assert (first.deleted_skipped, first.deleted_quarantined, first.deleted_quarantine_entries) == (1, 1, 1)
    assert (first.deleted_produced, first.deleted_ledger) == (0, 0)
    assert (first.kept_pending, first.kept_quarantined_open, first.kept_dead_lettered, first.kept_in_kafka,
            first.kept_not_consumed) == (1, 1, 1, 2, 0)
    retention_ms = {t.topic: t.retention_ms for t in first.topics}
    assert retention_ms[settings.inventory_topic] == KAFKA_DEFAULT_RETENTION_MS
    assert set(source(engine)) == {"i-old", "i-dead", "i-young", "d-old", "q-open", "i-pending"}
    assert quarantine(engine) == {"q-open": False}

    # Retention removed the messages from the topics: now the applied pairs can go.
    expire_topic(settings, settings.inventory_topic)
    expire_topic(settings, settings.delivery_topic)
    second = retention_cleanup(source_max_age_days=30)
    assert (second.deleted_produced, second.deleted_ledger, second.deleted_skipped) == (2, 2, 0)
    assert source(engine) == {"i-dead": "produced", "i-young": "produced", "q-open": "quarantined",
                              "i-pending": None}
    assert ledger(engine) == {(inv_group, "i-dead"): "dead_lettered", (inv_group, "i-young"): "applied"}
    assert reconciliation(engine, settings) == reconciled  # retention changes no reconciliation result

    third = retention_cleanup(source_max_age_days=30)
    assert third.deleted == 0
    assert (third.kept_pending, third.kept_quarantined_open, third.kept_dead_lettered) == (1, 1, 1)
    assert len(source(engine)) == 4


@pytest.mark.integration
def test_a_ledger_entry_younger_than_kafka_retention_keeps_its_source_row(settings, engine):
    with session_factory(engine).begin() as s:
        insert_stock(s, pd.DataFrame({"sku": ["SKU-1"], "warehouse_id": ["main"], "on_hand": [100]}))
    load(engine, [inventory("i1")])
    produce_orders()
    run_consumer(settings, "inventory", drain=True, metrics_port=None)
    # The source row is old, but the event was applied only 3 days ago (< 7 days + margin).
    with session_factory(engine).begin() as s:
        s.execute(update(OrderEvent).values(loaded_at=OLD))
        s.execute(update(ProcessedEvent).values(processed_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)))
    expire_topic(settings, settings.inventory_topic)
    kept = retention_cleanup(source_max_age_days=30)
    assert (kept.deleted_produced, kept.kept_in_kafka) == (0, 1)
    assert KAFKA_DEFAULT_RETENTION_MS / 86_400_000 + LEDGER_MARGIN.days == 8
    # An explicit, shorter ledger age is honoured (the message is gone from the log).
    gone = retention_cleanup(source_max_age_days=30, ledger_max_age_days=2)
    assert (gone.deleted_produced, gone.deleted_ledger) == (1, 1)
    assert source(engine) == {} and ledger(engine) == {}
