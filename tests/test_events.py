"""Typed messages without a broker: what the producer builds from validated rows, its CloudEvents
headers, how the consumers read both shapes a topic holds, and how files keep their extras' types."""

from __future__ import annotations

import datetime as dt
import json
import typing

import jsonschema
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orderstream.consumers.delivery import parse_delivery
from orderstream.consumers.inventory import parse_inventory
from orderstream.consumers.messages import Rejected, SchemaViolation
from orderstream.consumers.transitions import INCOMING_STATUSES
from orderstream.events.headers import cloud_event_headers
from orderstream.events.models import DeliveryStatus
from orderstream.events.registry import RegistryDeserializer, RegistrySerializer, RegistryUnavailable
from orderstream.events.schemas import schema_of
from orderstream.producer.publish import payloads, rfc3339
from orderstream.source.fields import EVENT_FIELDS
from orderstream.source.readers import read_chunks

pytestmark = pytest.mark.unit

INVENTORY_FIELDS = {"event_id", "order_id", "type", "created_at", "sku", "quantity", "warehouse_id"}
DELIVERY_FIELDS = {"event_id", "order_id", "type", "created_at", "customer_email", "address_line", "city",
                   "postal_code", "country", "status"}
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


def source_row(event_id: str, event_type: str, extra: dict | None = None, **fields) -> dict:
    """A validated row as the pipeline hands it to publish: contract fields as loaded (text or null)."""
    row = dict.fromkeys(EVENT_FIELDS)
    row.update(event_id=event_id, order_id=f"o-{event_id}", type=event_type, created_at="2026-11-25T10:00:00+01:00")
    if event_type == "inventory":
        row.update(sku="SKU-1", quantity="2")
    else:
        row.update(ADDRESS, status="requested")
    row.update(fields)
    row["extra"] = json.dumps(extra) if extra else None
    return row


def built(event_type: str, *rows: dict) -> list[dict]:
    frame = pd.DataFrame(rows, dtype=object)
    return [orjson.loads(value) for value in payloads(frame, event_type)]


def old_shape(row: dict) -> dict:
    """The value today's producer wrote for a row: every contract field as its text, the extras first."""
    return {**json.loads(row["extra"] or "{}"), **{name: row[name] for name in EVENT_FIELDS}}


def committed(event_type: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema_of(event_type).document())


def test_an_inventory_message_is_typed_and_carries_only_its_fields():
    [message] = built("inventory", source_row("i1", "inventory", quantity="+5", warehouse_id=None))
    assert set(message) == INVENTORY_FIELDS
    assert (message["quantity"], message["warehouse_id"], message["created_at"]) == (5, "main", "2026-11-25T10:00:00+01:00")
    committed("inventory").validate(message)


def test_a_delivery_message_carries_only_its_fields_with_the_default_status():
    [message] = built("delivery", source_row("d1", "delivery", status=None, sku="stray", quantity="1"))
    assert set(message) == DELIVERY_FIELDS
    assert message["status"] == "requested"
    committed("delivery").validate(message)


def test_extras_keep_their_json_types_and_contract_fields_win():
    extra = {"gift_wrap": True, "note": "ring twice", "tags": ["gift"], "meta": {"n": 1}, "weight": 1.5}
    [message] = built("inventory", source_row("i1", "inventory", extra=extra))
    assert {k: message[k] for k in extra} == extra
    committed("inventory").validate(message)


@pytest.mark.parametrize(("given", "sent"), [
    ("2026-11-25T10:00:00+01:00", "2026-11-25T10:00:00+01:00"),
    ("2026-11-25 10:00Z", "2026-11-25T10:00:00Z"),
    ("2026-11-25T10:00-05:00", "2026-11-25T10:00:00-05:00"),
    ("2026-11-25 10:00:00.123456789+05:30", "2026-11-25T10:00:00.123456789+05:30"),
])
def test_created_at_is_sent_in_rfc3339_with_its_own_offset(given, sent):
    assert rfc3339([given]) == [sent]


def test_every_message_has_the_cloud_events_headers_and_event_id_first():
    schema = schema_of("delivery")
    [headers] = cloud_event_headers("delivery", schema, ["d1"], ["2026-11-25T10:00:00Z"])
    assert headers[0] == ("event_id", "d1")
    as_text = {name: value.decode() if isinstance(value, bytes) else value for name, value in headers}
    assert as_text == {
        "event_id": "d1", "ce_id": "d1", "ce_time": "2026-11-25T10:00:00Z", "ce_specversion": "1.0",
        "ce_source": "/orderstream/delivery_orders_producer", "ce_type": "orderstream.order.delivery",
        "ce_dataschema": "urn:orderstream:schemas/delivery_orders.v1.json", "content-type": "application/json",
    }


def test_the_delivery_status_enum_is_the_consumers_incoming_statuses():
    assert typing.get_args(DeliveryStatus) == INCOMING_STATUSES


# -- both shapes a topic holds -----------------------------------------------------------------------


ROWS = [
    source_row("i-plain", "inventory"),
    source_row("i-wh", "inventory", warehouse_id="north", quantity="10000"),
    source_row("i-blank-wh", "inventory", warehouse_id="  ", extra={"gift_wrap": True}),
    source_row("i-padded", "inventory", quantity="007"),
]
DELIVERIES = [
    source_row("d-req", "delivery", status=None),
    source_row("d-cancel", "delivery", status="cancelled", created_at="2026-11-25 23:30Z"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r["event_id"] for r in ROWS])
def test_old_and_new_inventory_messages_read_as_the_same_event(row):
    [new] = built("inventory", row)
    old, typed = parse_inventory(orjson.dumps(old_shape(row))), parse_inventory(orjson.dumps(new))
    assert [getattr(old, f) for f in old.__slots__] == [getattr(typed, f) for f in typed.__slots__]


@pytest.mark.parametrize("row", DELIVERIES, ids=[r["event_id"] for r in DELIVERIES])
def test_old_and_new_delivery_messages_read_as_the_same_event(row):
    [new] = built("delivery", row)
    assert parse_delivery(orjson.dumps(old_shape(row))) == parse_delivery(orjson.dumps(new))


@pytest.mark.parametrize(("over", "error"), [
    ({"quantity": "+5"}, "quantity"),  # the all-text shape's consumer never read a sign
    ({"quantity": "0"}, "quantity"),
    ({"quantity": "2.5"}, "quantity"),
    ({"sku": None}, "sku"),
    ({"type": "delivery"}, "type"),
    ({"created_at": "yesterday"}, "created_at"),
])
def test_old_shape_messages_are_rejected_as_before_with_the_field_named(over, error):
    value = orjson.dumps({**old_shape(source_row("i1", "inventory")), **over})
    with pytest.raises(SchemaViolation, match=error) as info:
        parse_inventory(value)
    assert info.value.event_id == "i1"  # the ledger keys the dead letter by it


@pytest.mark.parametrize(("over", "error"), [
    ({"quantity": 3.0}, "quantity"),
    ({"quantity": True}, "quantity"),
    ({"warehouse_id": 5}, "warehouse_id"),
    ({"created_at": 1764061200}, "created_at"),
    ({"status": "Requested"}, "status"),
])
def test_values_of_the_wrong_type_are_rejected_in_either_shape(over, error):
    event_type = "delivery" if "status" in over else "inventory"
    [message] = built(event_type, source_row("x1", event_type))
    with pytest.raises(Rejected, match=error):
        (parse_delivery if event_type == "delivery" else parse_inventory)(orjson.dumps({**message, **over}))


def test_a_quantity_in_digits_is_read_whichever_shape_sent_it():
    [message] = built("inventory", source_row("i1", "inventory"))
    assert parse_inventory(orjson.dumps({**message, "quantity": " 12 "})).quantity == 12


# -- files keep their extras' JSON types -------------------------------------------------------------


def test_json_lines_and_parquet_keep_extra_types_and_contract_fields_as_text(tmp_path):
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text('{"event_id": "j1", "quantity": 1, "gift_wrap": true, "n": 2, "tags": ["a"], "meta": {"k": 1}}\n'
                     '{"event_id": "j2", "quantity": 2}\n')
    [frame] = read_chunks(jsonl)
    first, second = frame.to_dict("records")
    assert (first["quantity"], first["gift_wrap"], first["n"], first["tags"], first["meta"]) == ("1", True, 2, ["a"], {"k": 1})
    assert pd.isna(second["n"])  # a gap in an integer column does not turn the others into floats

    parquet = tmp_path / "e.parquet"
    pq.write_table(pa.table({
        "event_id": ["p1"], "quantity": pa.array([3], pa.int64()), "gift_wrap": [False], "weight": [1.5],
        "at": pa.array([dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)], pa.timestamp("s", tz="UTC")),
    }), parquet)
    [row] = next(read_chunks(parquet)).to_dict("records")
    assert row == {"event_id": "p1", "quantity": "3", "gift_wrap": False, "weight": 1.5, "at": "2026-11-25T10:00:00+00:00"}

    csv = tmp_path / "e.csv"
    csv.write_text("event_id,quantity,gift_wrap\nc1,1,true\n")
    [row] = next(read_chunks(csv)).to_dict("records")
    assert row == {"event_id": "c1", "quantity": "1", "gift_wrap": "true"}  # CSV cells are text


def test_an_unreachable_registry_is_one_clear_error_that_names_no_credentials():
    url = "http://user:s3cret@127.0.0.1:1/apis/ccompat/v7"  # nothing listens on port 1
    with pytest.raises(RegistryUnavailable, match="schema registry: no answer") as info:
        RegistrySerializer(url, "t", schema_of("inventory"))({"event_id": "e1"})
    assert "s3cret" not in str(info.value)
    reader = RegistryDeserializer(url, "t")
    assert reader(b'{"event_id": "plain JSON is not the registry\'s"}') is None
    with pytest.raises(RegistryUnavailable):
        reader(b"\x00\x00\x00\x00\x01{}")
