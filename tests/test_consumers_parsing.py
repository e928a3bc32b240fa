"""Pure logic of the consumers: what a record value parses to, or why it is rejected."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from orderstream.consumers.delivery import parse_delivery, postal_area
from orderstream.consumers.inventory import parse_inventory
from orderstream.consumers.messages import (
    EmptyValue,
    MalformedJson,
    SchemaViolation,
    ValueTooLarge,
    header_event_id,
)
from orderstream.consumers.notices import message_id, render

pytestmark = pytest.mark.unit

GOOD = {"event_id": "e1", "order_id": "o1", "type": "inventory", "created_at": "2026-11-25T10:00:00+00:00",
        "sku": "SKU-1", "quantity": "3", "warehouse_id": None, "status": None, "gift_wrap": "yes"}


@pytest.mark.parametrize(("over", "expected"), [
    ({}, ("e1", "o1", "SKU-1", "main", 3)),
    ({"warehouse_id": "north"}, ("e1", "o1", "SKU-1", "north", 3)),
    ({"warehouse_id": ""}, ("e1", "o1", "SKU-1", "main", 3)),
    ({"quantity": 7}, ("e1", "o1", "SKU-1", "main", 7)),
    ({"quantity": " 12 "}, ("e1", "o1", "SKU-1", "main", 12)),
    ({"quantity": "10000"}, ("e1", "o1", "SKU-1", "main", 10000)),
    ({"type": None}, ("e1", "o1", "SKU-1", "main", 3)),
])
def test_inventory_events_parse_to_their_reservation_request(over, expected):
    event = parse_inventory(orjson.dumps({**GOOD, **over}))
    assert (event.event_id, event.order_id, event.sku, event.warehouse_id, event.quantity) == expected


@pytest.mark.parametrize(("value", "error"), [
    (b"", EmptyValue),
    (None, EmptyValue),
    (b"x" * 2_000_000, ValueTooLarge),
    (b'{"sku": ', MalformedJson),
    (b"[1, 2]", SchemaViolation),
    (b'"just a string"', SchemaViolation),
    (orjson.dumps({**GOOD, "quantity": "0"}), SchemaViolation),
    (orjson.dumps({**GOOD, "quantity": "10001"}), SchemaViolation),
    (orjson.dumps({**GOOD, "quantity": "3.5"}), SchemaViolation),
    (orjson.dumps({**GOOD, "quantity": 3.0}), SchemaViolation),
    (orjson.dumps({**GOOD, "quantity": True}), SchemaViolation),
    (orjson.dumps({**GOOD, "quantity": "\u0663"}), SchemaViolation),  # a non-ASCII digit
    (orjson.dumps({**GOOD, "quantity": None}), SchemaViolation),
    (orjson.dumps({**GOOD, "sku": None}), SchemaViolation),
    (orjson.dumps({**GOOD, "sku": "  "}), SchemaViolation),
    (orjson.dumps({**GOOD, "sku": 42}), SchemaViolation),
    (orjson.dumps({**GOOD, "order_id": ""}), SchemaViolation),
    (orjson.dumps({**GOOD, "order_id": "o" * 65}), SchemaViolation),
    (orjson.dumps({**GOOD, "warehouse_id": 5}), SchemaViolation),
    (orjson.dumps({**GOOD, "type": "delivery"}), SchemaViolation),
    (orjson.dumps({**GOOD, "event_id": None}), SchemaViolation),
    (orjson.dumps({**GOOD, "created_at": "yesterday"}), SchemaViolation),
])
def test_inventory_values_that_cannot_take_effect_are_rejected_with_a_reason(value, error):
    with pytest.raises(error) as info:
        parse_inventory(value)
    assert str(info.value)


def test_a_rejected_payload_still_names_its_event_id_for_the_ledger():
    with pytest.raises(SchemaViolation) as info:
        parse_inventory(orjson.dumps({**GOOD, "quantity": "-1"}))
    assert info.value.event_id == "e1"


DELIVERY = {"event_id": "d1", "order_id": "o1", "type": "delivery", "created_at": "2026-11-25T23:30:00-05:00",
            "customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Leeds",
            "postal_code": "ls1 4ap", "country": "gb", "status": None}


def test_a_delivery_request_parses_with_its_local_creation_date():
    event = parse_delivery(orjson.dumps(DELIVERY))
    assert (event.status, event.created_date, event.customer_email) == ("requested", dt.date(2026, 11, 25),
                                                                        "ann@example.com")
    assert postal_area(event.country, event.postal_code) == "GBLS1"


@pytest.mark.parametrize("over", [
    {"status": "scheduled"}, {"status": "lost"}, {"status": "Requested"},
    {"customer_email": None}, {"customer_email": "not-an-address"}, {"postal_code": None},
    {"created_at": "yesterday"}, {"created_at": None}, {"type": "inventory"},
])
def test_delivery_payloads_that_violate_the_schema_are_rejected(over):
    with pytest.raises(SchemaViolation):
        parse_delivery(orjson.dumps({**DELIVERY, **over}))


def test_later_statuses_carry_the_whole_event_too():
    event = parse_delivery(orjson.dumps({**DELIVERY, "status": "dispatched"}))
    assert (event.status, event.postal_code, event.created_date) == ("dispatched", "ls1 4ap", dt.date(2026, 11, 25))
    with pytest.raises(SchemaViolation):
        parse_delivery(orjson.dumps({"event_id": "d2", "order_id": "o1", "status": "dispatched"}))


def test_postal_areas_ignore_case_and_spaces():
    assert {postal_area("de", "10115"), postal_area("DE", "101 99"), postal_area("De", " 1 0 1")} == {"DE101"}


def test_a_scheduled_notification_names_the_day_and_window():
    subject, body = render(order_id="o1", status="scheduled", slot_date=dt.date(2026, 11, 26), slot=2,
                           slots_per_day=4, address=["1 Main St", "10115", "Berlin", "DE"])
    assert subject == "Your order o1 will be delivered on 2026-11-26"
    assert "between 14:00 and 17:00" in body and "1 Main St, 10115, Berlin, DE" in body
    assert message_id("o1", "scheduled") == "<o1.scheduled@orderstream>"


def test_the_event_id_header_is_found_wherever_it_is():
    assert header_event_id([("event_id", b"e1")]) == "e1"
    assert header_event_id([("trace", b"x"), ("event_id", b"e2")]) == "e2"
    assert header_event_id([("event_id", b"\xff")]) is None
    assert header_event_id(None) is None
