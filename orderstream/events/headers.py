"""The CloudEvents headers of each message (Kafka protocol binding, binary content mode): the
value is the event's data as it is, its attributes are `ce_` headers.

`ce_id` is the event id, `ce_time` the event's `created_at`, `ce_type` names the event type,
`ce_source` the producer, `ce_dataschema` the topic's schema and version. The `event_id`
header stays, first, where consumers have always found it.
"""

from __future__ import annotations

from collections.abc import Iterator

from orderstream.events.schemas import TopicSchema

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
EVENT_ID_HEADER = "event_id"

Headers = list[tuple[str, str | bytes]]


def event_type_name(event_type: str) -> str:
    return f"orderstream.order.{event_type}"


def source_name(event_type: str) -> str:
    return f"/orderstream/{event_type}_orders_producer"


def constant_headers(event_type: str, schema: TopicSchema) -> Headers:
    """The headers every message of the type carries alike."""
    return [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_source", source_name(event_type).encode()),
        ("ce_type", event_type_name(event_type).encode()),
        ("ce_dataschema", schema.uri.encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]


def cloud_event_headers(event_type: str, schema: TopicSchema, event_ids: list[str], times: list[str]) -> Iterator[Headers]:
    """Each message's headers, in the order of `event_ids` and their `created_at` `times`."""
    constant = constant_headers(event_type, schema)
    for event_id, time in zip(event_ids, times):
        yield [(EVENT_ID_HEADER, event_id), ("ce_id", event_id), ("ce_time", time), *constant]
