"""The Schema Registry path against a real registry (Apicurio Registry 3, started here), on a real
broker and both databases: the producer registers each topic's schema and frames every value in the
registry's wire format; the consumers decode it, and still read the plain JSON already in a topic."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import jsonschema
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from sqlalchemy import select
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.db.models import Delivery, ProcessedEvent, Reservation
from orderstream.events.schemas import TOPIC_SCHEMAS
from orderstream.kafka.clients import connection_config
from orderstream.runtime import settings_in_environment
from orderstream.settings import Settings
from orderstream.source.repository import insert_events, insert_stock
from tests.registry_server import MIN_JAVA, ThrowawayRegistry, find_java
from tests.test_schemas import BREAKING, COMPATIBLE, changed
from tests.topics import read_topic

pytestmark = pytest.mark.integration

CREATED = "2026-11-25T10:00:00+01:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}
EVENTS = [
    {"event_id": "i1", "order_id": "o1", "type": "inventory", "created_at": CREATED, "sku": "A", "quantity": "2",
     "gift_wrap": True},
    {"event_id": "i2", "order_id": "o2", "type": "inventory", "created_at": CREATED, "sku": "A", "quantity": "9"},
    {"event_id": "d1", "order_id": "o1", "type": "delivery", "created_at": CREATED, **ADDRESS},
]
# Written before the registry was configured: today's all-text shape, plain JSON.
PLAIN = {"event_id": "i0", "order_id": "o0", "type": "inventory", "created_at": CREATED, "sku": "A",
         "quantity": "1", "warehouse_id": None, "customer_email": None, "address_line": None, "city": None,
         "postal_code": None, "country": None, "status": None}


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    java = find_java()
    if java is None:
        pytest.skip(f"Apicurio Registry 3 needs Java {MIN_JAVA}+, and none was found "
                    "($REGISTRY_JAVA, $JAVA_HOME, PATH, /usr/lib/jvm)")
    with ThrowawayRegistry(java, tmp_path_factory.mktemp("schema-registry")) as registry:
        yield registry.url


@pytest.fixture
def registry_settings(settings: Settings, schema_registry: str) -> Iterator[Settings]:
    with_registry = settings.model_copy(update={"schema_registry_url": schema_registry})
    with settings_in_environment(with_registry):
        yield with_registry


def framed_id(value: bytes) -> int:
    assert value[0] == 0, value[:16]
    return struct.unpack(">I", value[1:5])[0]


def test_values_are_registered_and_framed_and_consumers_read_them_beside_plain_json(registry_settings, engine):
    settings = registry_settings
    client = SchemaRegistryClient({"url": settings.schema_registry_url, "timeout": 10})
    sessions = session_factory(engine)
    with sessions.begin() as session:
        insert_stock(session, pd.DataFrame([{"sku": "A", "warehouse_id": "main", "on_hand": "5"}]))
        insert_events(session, pd.DataFrame(EVENTS, dtype=object))
    plain = Producer(connection_config(settings))
    plain.produce(settings.inventory_topic, orjson.dumps(PLAIN), b"o0", headers=[("event_id", "i0")])
    unknown_schema = b"\x00" + struct.pack(">I", 987_654) + orjson.dumps({**PLAIN, "event_id": "i9"})
    plain.produce(settings.inventory_topic, unknown_schema, b"o9", headers=[("event_id", "i9")])
    assert plain.flush(30) == 0

    report = produce_orders()
    assert (report.counts.produced_inventory, report.counts.produced_delivery) == (2, 1)

    for event_type, count in (("inventory", 2), ("delivery", 1)):
        topic = settings.topics[event_type]
        schema = TOPIC_SCHEMAS[event_type]
        registered = client.get_latest_version(f"{topic}-value")
        assert json.loads(registered.schema.schema_str) == schema.document()
        framed = [r for r in read_topic(settings, topic) if r.headers.get("ce_id")]
        assert len(framed) == count
        # Read back with confluent-kafka's own deserializer, validating against the committed schema.
        reader = JSONDeserializer(schema.text())
        validator = jsonschema.Draft202012Validator(schema.document())
        for record in framed:
            assert framed_id(record.value) == registered.schema_id
            value = reader(record.value, SerializationContext(topic, MessageField.VALUE))
            validator.validate(value)
            assert record.key == value["order_id"].encode()
            assert record.headers["ce_dataschema"] == schema.uri.encode()
        if event_type == "inventory":
            gifted = next(reader(r.value, SerializationContext(topic, MessageField.VALUE)) for r in framed
                          if r.headers["event_id"] == b"i1")
            assert (gifted["gift_wrap"], gifted["quantity"]) == (True, 2)

    for role in ("inventory", "delivery"):
        run_consumer(settings, role, drain=True, metrics_port=None)
    with Session(engine) as s:
        ledger = {e: (o, c) for e, o, c in s.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome,
                                                              ProcessedEvent.error_class))}
        reserved = {r.event_id: r.outcome for r in s.scalars(select(Reservation))}
        statuses = {d.order_id: d.status for d in s.scalars(select(Delivery))}
    assert ledger == {"i0": ("applied", None), "i1": ("applied", None), "i2": ("applied", None),
                      "d1": ("applied", None), "i9": ("dead_lettered", "UnknownSchema")}
    assert reserved == {"i0": "reserved", "i1": "reserved", "i2": "backordered"}
    assert statuses == {"o1": "scheduled"}


# Changes the registry lets pass but our rules do not: consumers that read the field break.
STRICTER_THAN_THE_REGISTRY = {"sku: removed", "type: values narrowed"}


def test_the_registry_refuses_the_next_versions_our_rules_refuse_and_takes_the_others(registry_settings):
    client = SchemaRegistryClient({"url": registry_settings.schema_registry_url, "timeout": 10})
    v1 = TOPIC_SCHEMAS["inventory"].document()
    verdicts = {}
    for number, (change, edit) in enumerate([*BREAKING.items(), *COMPATIBLE.items()]):
        subject = f"{registry_settings.inventory_topic}-{number}-value"
        client.register_schema(subject, Schema(json.dumps(v1), "JSON"))
        client.set_compatibility(subject, "BACKWARD")
        verdicts[change] = client.test_compatibility(subject, Schema(json.dumps(changed(edit)), "JSON"))
    assert verdicts == {**{change: change in STRICTER_THAN_THE_REGISTRY for change in BREAKING},
                        **dict.fromkeys(COMPATIBLE, True)}
