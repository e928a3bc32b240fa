"""What a consumed record becomes: an envelope with its ledger key, its parsed event or the
reason it is rejected. Pure functions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

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
    if name == EVENT_ID_HEADER and raw:  # our producer's only header
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


def required_str(obj: dict[str, Any], field: str, max_len: int | None = None) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value.strip():
        raise SchemaViolation(f"{field} is required and must be a non-empty string, got {value!r:.80}")
    if max_len is not None and len(value) > max_len:
        raise SchemaViolation(f"{field} is longer than {max_len} characters")
    return value


def optional_str(obj: dict[str, Any], field: str, default: str | None = None) -> str | None:
    value = obj.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if not isinstance(value, str):
        raise SchemaViolation(f"{field} must be a string, got {value!r:.80}")
    return value


def check_type(obj: dict[str, Any], expected: str) -> None:
    """A payload that names another event type is on the wrong topic."""
    value = obj.get("type")
    if value is not None and value != expected:
        raise SchemaViolation(f"type is {value!r:.40}, expected {expected!r}")


def payload_event_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("event_id")
    return value if isinstance(value, str) and value else None
