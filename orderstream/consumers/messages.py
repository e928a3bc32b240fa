"""What a consumed record becomes: an envelope with its ledger key, its parsed event or the
reason it is rejected.

A value is read with its topic's model (`orderstream.events.models`), the one its schema is
generated from, in either shape a topic holds: typed (version 1) or all-text (version 0,
`orderstream.events.legacy`). With a Schema Registry configured, values in the registry's wire
format are decoded by its deserializer first; plain JSON values are still read as before.
No I/O, except that the registry's deserializer fetches each schema id once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import ValidationError

from orderstream.events.legacy import as_current
from orderstream.events.models import OrderEvent
from orderstream.events.registry import MalformedValue, RegistryDeserializer, UnknownSchemaId
from orderstream.events.schemas import schema_of
from orderstream.settings import Settings

# A legitimate order event is well under a kilobyte; anything bigger than Kafka's default
# message size cannot have come from our producer and is rejected before parsing.
MAX_VALUE_BYTES = 1_048_576
MAX_ERROR_MESSAGE_CHARS = 1_000
EVENT_ID_HEADER = "event_id"


class Rejected(Exception):
    """An event that can never take effect; it is dead-lettered under its class name."""


class EmptyValue(Rejected):
    pass


class ValueTooLarge(Rejected):
    pass


class MalformedJson(Rejected):
    pass


class SchemaViolation(Rejected):
    pass


class UnknownSku(Rejected):
    pass


class IllegalTransition(Rejected):
    pass


class UnknownSchema(Rejected):
    """A registry-framed value whose schema id the registry does not know."""


@dataclass(slots=True)
class Envelope:
    """One consumed record. `event` is the handler's parsed event when `rejection` is None."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None
    timestamp_ms: int
    ledger_key: str
    event: Any = None
    rejection: Rejected | None = None

    @property
    def error_class(self) -> str | None:
        return type(self.rejection).__name__ if self.rejection is not None else None

    @property
    def error_message(self) -> str | None:
        if self.rejection is None:
            return None
        return str(self.rejection)[:MAX_ERROR_MESSAGE_CHARS]


def header_event_id(headers: list[tuple[str, bytes | None]] | None) -> str | None:
    if not headers:
        return None
    name, raw = headers[0]
    if name == EVENT_ID_HEADER and raw:  # our producer puts it first
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    for name, raw in headers:
        if name == EVENT_ID_HEADER and raw:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def decode_object(value: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object, or the reason it is not one."""
    if not value:
        raise EmptyValue("message value is empty")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLarge(f"message value is {len(value)} bytes, the limit is {MAX_VALUE_BYTES}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"value is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaViolation(f"value is a JSON {type(obj).__name__}, expected an object")
    return obj


def payload_event_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("event_id")
    return value if isinstance(value, str) and value else None


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "value"
        got = "" if error["type"] == "missing" else f", got {error['input']!r:.60}"
        parts.append(f"{where}: {error['msg']}{got}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


Event = TypeVar("Event", bound=OrderEvent)


def validated(obj: dict[str, Any], model: type[Event], event_type: str) -> Event:
    """`obj` as the model's event (either shape), or SchemaViolation naming what is wrong."""
    try:
        return model.model_validate(as_current(obj, event_type))
    except ValidationError as exc:
        rejected = SchemaViolation(_first_errors(exc))
        rejected.event_id = payload_event_id(obj)  # type: ignore[attr-defined]
        raise rejected from None


class ValueReader(Generic[Event]):
    """A topic's record values as events of its model; `registry` decodes the registry's wire
    format where a Schema Registry is configured (plain JSON values are read all the same)."""

    def __init__(self, event_type: str, registry: RegistryDeserializer | None = None) -> None:
        self.event_type = event_type
        self.model: type[Event] = schema_of(event_type).model  # type: ignore[assignment]
        self._registry = registry

    def __call__(self, value: bytes | None) -> Event:
        obj = None
        if self._registry is not None and value and len(value) <= MAX_VALUE_BYTES:
            try:
                obj = self._registry(value)
            except UnknownSchemaId as exc:
                raise UnknownSchema(str(exc)) from None
            except MalformedValue as exc:
                raise MalformedJson(str(exc)) from None
        return validated(decode_object(value) if obj is None else obj, self.model, self.event_type)


def value_reader(settings: Settings, event_type: str) -> ValueReader:
    """The reader of the type's topic under `settings`: with the registry's deserializer if one is configured."""
    url = settings.schema_registry_url
    registry = RegistryDeserializer(url, settings.topics[event_type]) if url else None
    return ValueReader(event_type, registry)
