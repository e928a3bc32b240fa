"""Typed topics end to end on a real broker and both databases: the example files of `data/` loaded
and produced, every message checked against the committed schema of its topic, and consumers that
apply the all-text messages already in a topic and the typed ones alike."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.db.models import Delivery, Notification, ProcessedEvent, Quarantine, Reservation
from orderstream.events.models import DeliveryOrder, InventoryOrder
from orderstream.events.schemas import TOPIC_SCHEMAS, committed_versions
from orderstream.kafka.clients import connection_config
from orderstream.settings import Settings
from orderstream.source.fields import EVENT_FIELDS
from orderstream.source.loader import load_file
from orderstream.source.repository import insert_events, insert_stock
from tests.topics import Record, read_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
CE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema", "content-type")
# What data/README.md says each invalid example row is quarantined for.
QUARANTINED = {
    "csv-101": ["quantity must be an integer"],
    "csv-102": ["customer_email must be a valid email address", "country must be an ISO 3166-1 alpha-2 code"],
    "csv-103": ["type must be a lowercase word"],
    "jsonl-101": ["created_at must be ISO-8601 with an offset (Z or ±hh:mm)", "quantity must be between 1 and 10000"],
    "jsonl-102": ["address_line is required for delivery", "city is required for delivery",
                  "postal_code is required for delivery", "country is required for delivery",
                  "status must be one of requested, dispatched, delivered, cancelled"],
    "jsonl-103": ["quantity must be an integer"],
    "pq-101": ["quantity must be between 1 and 10000"],
    "pq-102": ["sku is required for inventory"],
}


def latest_schema(event_type: str) -> jsonschema.Draft202012Validator:
    versions = committed_versions(ROOT / "schemas", TOPIC_SCHEMAS[event_type].topic)
    return jsonschema.Draft202012Validator(versions[max(versions)], format_checker=jsonschema.FormatChecker())


def check_messages(records: list[Record], event_type: str) -> None:
    """Every record validates against its topic's latest committed schema, is keyed by order_id, carries
    event_id and the CloudEvents headers, and holds no field of the other type."""
    validator = latest_schema(event_type)
    own, theirs = (InventoryOrder, DeliveryOrder) if event_type == "inventory" else (DeliveryOrder, InventoryOrder)
    other = set(theirs.model_fields) - set(own.model_fields)
    for record in records:
        value = record.json
        validator.validate(value)
        assert record.key == value["order_id"].encode()
        assert record.headers["event_id"] == record.headers["ce_id"] == value["event_id"].encode()
        assert all(name in record.headers for name in CE_HEADERS), sorted(record.headers)
        assert record.headers["ce_time"] == value["created_at"].encode()
        assert record.headers["ce_dataschema"] == TOPIC_SCHEMAS[event_type].uri.encode()
        assert not other & set(value), f"{value['event_id']} carries {sorted(other & set(value))}"


def ledger(engine) -> dict[str, tuple[str, str | None]]:
    with Session(engine) as s:
        return {e: (o, c) for e, o, c in s.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome,
                                                          ProcessedEvent.error_class))}


def reservations(engine) -> dict[str, tuple[str, bool]]:
    with Session(engine) as s:
        return {r.event_id: (r.outcome, r.released_at is not None) for r in s.scalars(select(Reservation))}


def delivery_statuses(engine) -> dict[str, str]:
    with Session(engine) as s:
        return {d.order_id: d.status for d in s.scalars(select(Delivery))}


def drain_both(settings: Settings) -> None:
    for role in ("inventory", "delivery"):  # inventory first: a cancellation then releases what it reserved
        run_consumer(settings, role, drain=True, metrics_port=None)


def test_the_example_files_become_typed_messages_that_match_the_committed_schemas(settings, engine):
    sessions = session_factory(engine)
    loaded = [load_file(sessions, DATA / name) for name in ("events.csv", "events.jsonl", "events.parquet")]
    assert [(r.loaded, r.refused_duplicate) for r in loaded] == [(9, 0), (7, 0), (5, 1)]
    assert load_file(sessions, DATA / "stock.csv", stock=True).loaded == 4

    report = produce_orders()
    assert (report.counts.produced_inventory, report.counts.produced_delivery, report.counts.skipped_other) == (6, 6, 1)
    with sessions() as session:
        assert {q.event_id: orjson.loads(q.reasons) for q in session.scalars(select(Quarantine))} == QUARANTINED

    inventory = read_topic(settings, settings.inventory_topic)
    deliveries = read_topic(settings, settings.delivery_topic)
    check_messages(inventory, "inventory")
    check_messages(deliveries, "delivery")
    by_id = {r.json["event_id"]: r.json for r in inventory + deliveries}
    assert by_id["jsonl-001"]["gift_wrap"] is True and by_id["jsonl-001"]["quantity"] == 1
    assert by_id["jsonl-001"]["tags"] == ["gift", "fragile"]
    assert by_id["jsonl-001"]["meta"] == {"campaign": "winter", "discount": 0.1}
    assert (by_id["pq-001"]["gift_wrap"], by_id["pq-001"]["weight_kg"]) == (False, 1.5)
    assert by_id["csv-001"]["channel"] == "web"  # CSV extras are text
    assert (by_id["csv-001"]["warehouse_id"], by_id["csv-004"]["status"]) == ("main", "requested")
    assert by_id["csv-003"]["created_at"] == "2026-11-25T10:05:00Z"  # `2026-11-25 10:05Z` as loaded
    assert by_id["pq-001"]["created_at"] == "2026-11-25T13:00:00+00:00"  # a Parquet timestamp

    drain_both(settings)
    assert reservations(engine) == {"csv-001": ("reserved", True), "csv-003": ("reserved", False),
                                    "csv-006": ("backordered", False), "jsonl-001": ("reserved", False),
                                    "pq-001": ("reserved", False)}
    assert delivery_statuses(engine) == {"o-1001": "cancelled", "o-1002": "dispatched", "o-2001": "scheduled"}
    dead = {e: c for e, (o, c) in ledger(engine).items() if o == "dead_lettered"}
    assert dead == {"jsonl-004": "UnknownSku", "pq-003": "IllegalTransition"}


# -- the all-text messages already in a topic and the typed ones: the same outcomes ------------------------

CREATED = "2026-11-25T10:00:00+01:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}
# (event, its extra columns); each shape gets its own copy, with ids and SKUs prefixed.
EVENTS = [
    ({"event_id": "i-reserve", "order_id": "o1", "type": "inventory", "sku": "A", "quantity": "2"}, {"gift_wrap": True}),
    ({"event_id": "i-backorder", "order_id": "o2", "type": "inventory", "sku": "A", "quantity": "9"}, None),
    ({"event_id": "i-padded", "order_id": "o2", "type": "inventory", "sku": "B", "quantity": "007",
      "warehouse_id": "north"}, None),
    ({"event_id": "i-blank-warehouse", "order_id": "o3", "type": "inventory", "sku": "B", "quantity": "1",
      "warehouse_id": " "}, None),
    ({"event_id": "i-unknown", "order_id": "o3", "type": "inventory", "sku": "Z", "quantity": "1"}, None),
    ({"event_id": "d-request", "order_id": "o1", "type": "delivery", **ADDRESS}, {"gift_wrap": True}),
    ({"event_id": "d-cancel", "order_id": "o1", "type": "delivery", **ADDRESS, "status": "cancelled"}, None),
    ({"event_id": "d-request-2", "order_id": "o2", "type": "delivery", **ADDRESS, "status": "requested"}, None),
    ({"event_id": "d-delivered-too-soon", "order_id": "o2", "type": "delivery", **ADDRESS, "status": "delivered"}, None),
]
STOCK = [("A", "main", 5), ("B", "main", 3), ("B", "north", 10)]


def copy_of(shape: str) -> list[dict]:
    """The events as source rows of one shape's copy: ids, orders and SKUs prefixed with the shape."""
    rows = []
    for fields, extra in EVENTS:
        row = {**dict.fromkeys(EVENT_FIELDS), "created_at": CREATED, **fields, **(extra or {})}
        for name in ("event_id", "order_id", "sku"):
            if row[name] is not None:
                row[name] = f"{shape}-{row[name]}"
        rows.append(row)
    return rows


def all_text_value(row: dict) -> bytes:
    """The value the producer wrote before typed topics: extras, then every contract field as loaded."""
    extras = {k: v for k, v in row.items() if k not in EVENT_FIELDS}
    return orjson.dumps({**extras, **{name: row[name] for name in EVENT_FIELDS}})


def unprefixed(mapping: dict[str, object], shape: str) -> dict[str, object]:
    return {key.removeprefix(f"{shape}-"): value for key, value in mapping.items() if key.startswith(f"{shape}-")}


def test_all_text_messages_already_in_the_topics_and_typed_ones_have_the_same_outcomes(settings, engine):
    sessions = session_factory(engine)
    with sessions.begin() as session:
        stock = [{"sku": f"{shape}-{sku}", "warehouse_id": w, "on_hand": str(n)} for shape in ("old", "new")
                 for sku, w, n in STOCK]
        insert_stock(session, pd.DataFrame(stock))
    # Before the deploy: today's producer wrote the old copy, all text, with only the event_id header.
    producer = Producer(connection_config(settings))
    for row in copy_of("old"):
        producer.produce(settings.topics[row["type"]], all_text_value(row), row["order_id"].encode(),
                         headers=[("event_id", row["event_id"])])
    assert producer.flush(30) == 0
    # After it: the new copy goes through the pipeline, typed, onto the same topics behind the old one.
    new = copy_of("new")
    with sessions.begin() as session:
        frame = pd.DataFrame(new, dtype=object)
        insert_events(session, frame)
    assert produce_orders().counts.produced_inventory == 5
    typed = read_topic(settings, settings.inventory_topic)
    assert {r.json["event_id"]: r.json["quantity"] for r in typed if "ce_id" in r.headers}["new-i-padded"] == 7

    drain_both(settings)
    outcomes = ledger(engine)
    assert unprefixed(outcomes, "old") == unprefixed(outcomes, "new")
    assert unprefixed(reservations(engine), "old") == unprefixed(reservations(engine), "new") == {
        "i-reserve": ("reserved", True), "i-backorder": ("backordered", False), "i-padded": ("reserved", False),
        "i-blank-warehouse": ("reserved", False)}
    assert unprefixed(delivery_statuses(engine), "old") == unprefixed(delivery_statuses(engine), "new") == {
        "o1": "cancelled", "o2": "scheduled"}
    assert {e: c for e, (o, c) in unprefixed(outcomes, "new").items() if o == "dead_lettered"} == {
        "i-unknown": "UnknownSku", "d-delivered-too-soon": "IllegalTransition"}
    with Session(engine) as s:
        notices = [(n.order_id, n.to_status) for n in s.scalars(select(Notification).order_by(Notification.id))]
    old, new = ([(o.removeprefix(f"{shape}-"), t) for o, t in notices if o.startswith(shape)] for shape in ("old", "new"))
    assert sorted(old) == sorted(new) == [("o1", "cancelled"), ("o1", "requested"), ("o1", "scheduled"),
                                          ("o2", "requested"), ("o2", "scheduled")]


def test_readme_and_data_notes_name_the_same_quarantine_reasons():
    notes = (DATA / "README.md").read_text()
    for event_id, reasons in QUARANTINED.items():
        line = next(line for line in notes.splitlines() if f"`{event_id}`" in line)
        assert all(reason in line for reason in reasons), (event_id, line)
