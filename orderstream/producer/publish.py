"""Filter and produce: the two named producers over one shared Kafka producer.

A valid row becomes its topic's typed message (`orderstream.events.models`): only the fields
of its type, `quantity` an integer, `created_at` in RFC 3339 with its offset, the defaults
filled in, and the row's extra columns with the JSON types they were loaded with (contract
fields win on a clash). Values are built column by column from rows that validation has
already judged, so every conversion succeeds and nothing is validated again here; the
committed schemas are checked against real messages by the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import orjson
import pandas as pd

from orderstream.events.headers import cloud_event_headers
from orderstream.events.models import DEFAULT_STATUS, DEFAULT_WAREHOUSE, fields_of
from orderstream.events.schemas import schema_of
from orderstream.kafka.producer import DeliveryReport, OrderProducer

Encode = Callable[[dict[str, Any]], bytes]


def rfc3339(values: list[str]) -> list[str]:
    """Validated ISO-8601 timestamps in RFC 3339: `T` between date and time, seconds filled in.

    The validated shape is `YYYY-MM-DD[T ]HH:MM[:SS[.f]](Z|±hh:mm)`, so its 11th and 17th
    characters tell what is missing; the offset stays as given.
    """
    return [value if value[10] == "T" and value[16] == ":" else _rfc3339(value) for value in values]


def _rfc3339(value: str) -> str:
    value = f"{value[:10]}T{value[11:]}"
    return value if value[16] == ":" else f"{value[:16]}:00{value[16:]}"


def _filled(values: list[str | None], default: str) -> list[str]:
    return [value if value and not value.isspace() else default for value in values]


def typed_columns(rows: pd.DataFrame, event_type: str) -> dict[str, list]:
    """The message fields of `event_type` as typed column lists, in message order."""
    columns = {name: rows[name].tolist() for name in fields_of(schema_of(event_type).model)}
    columns["created_at"] = rfc3339(columns["created_at"])
    if event_type == "inventory":
        columns["quantity"] = [int(q) for q in columns["quantity"]]  # validated: [+-]digits, 1..10000
        columns["warehouse_id"] = _filled(columns["warehouse_id"], DEFAULT_WAREHOUSE)
    else:
        columns["status"] = _filled(columns["status"], DEFAULT_STATUS)
    return columns


def records(columns: dict[str, list], extras: list[str | None]) -> Iterator[dict[str, Any]]:
    """One message value per row: its extra columns (a JSON object's text, or None), then its fields."""
    names = tuple(columns)
    loads = orjson.loads
    for values, extra in zip(zip(*columns.values()), extras):
        record = dict(zip(names, values))
        yield {**loads(extra), **record} if extra else record


def payloads(frame: pd.DataFrame, event_type: str, encode: Encode = orjson.dumps) -> Iterator[bytes]:
    """The encoded values of the rows of `frame` (all of `event_type`).

    A generator: orjson hands each document back in a buffer of several kilobytes, so a
    chunk's worth held at once took hundreds of megabytes; the producer copies each one as
    it is sent and the buffer goes at once.
    """
    return map(encode, records(typed_columns(frame, event_type), frame["extra"].tolist()))


@cache
def _registry_encoder(url: str, topic: str, event_type: str) -> Encode:
    """One serializer per topic for the process: it registers the schema once, then caches its id."""
    from orderstream.events.registry import RegistrySerializer

    return RegistrySerializer(url, topic, schema_of(event_type))


def encoder(registry_url: str | None, topic: str, event_type: str) -> Encode:
    """Plain JSON, or the Schema Registry's JSON serializer where a registry is configured."""
    return orjson.dumps if registry_url is None else _registry_encoder(registry_url, topic, event_type)


def publish(frame: pd.DataFrame, event_type: str, topic: str, producer: OrderProducer, report: DeliveryReport) -> pd.DataFrame:
    """Send the rows of exactly `event_type`, answered into `report`; return them (awaiting acks)."""
    rows = frame[frame["type"] == event_type]
    if not rows.empty:
        columns = typed_columns(rows, event_type)
        encode = encoder(producer.settings.schema_registry_url, topic, event_type)
        keys = [k.encode() for k in columns["order_id"]]
        headers = cloud_event_headers(event_type, schema_of(event_type), columns["event_id"], columns["created_at"])
        producer.send(topic, keys, map(encode, records(columns, rows["extra"].tolist())), headers, report)
    return rows


def inventory_orders_producer(
    valid: pd.DataFrame, producer: OrderProducer, report: DeliveryReport, topic: str = "inventory_orders"
) -> pd.DataFrame:
    """Publish only valid `inventory` events, keyed by order_id."""
    return publish(valid, "inventory", topic, producer, report)


def delivery_orders_producer(
    valid: pd.DataFrame, producer: OrderProducer, report: DeliveryReport, topic: str = "delivery_orders"
) -> pd.DataFrame:
    """Publish only valid `delivery` events, keyed by order_id."""
    return publish(valid, "delivery", topic, producer, report)
