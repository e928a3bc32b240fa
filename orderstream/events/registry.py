"""The Schema Registry path (`SCHEMA_REGISTRY_URL`): confluent-kafka's JSON Schema serde.

The producer's serializer registers the topic's schema under the subject `<topic>-value` (the
topic name strategy) once, then frames every value in the registry's wire format: a zero
byte, the schema's 4-byte id, the JSON document. The consumers' deserializer reads the id,
fetches that schema once, and returns the document.

Neither side validates each message against the schema here: the producer builds values
from rows the validation suite passed, and the consumer validates every value with the
topic's model, which the schema is generated from; validating twice cost more than the rest
of a message's handling.
"""

from __future__ import annotations

from typing import Any

import orjson

from orderstream.errors import UserError
from orderstream.events.schemas import TopicSchema

MAGIC_BYTE = 0
REQUEST_TIMEOUT_S = 10


class RegistryUnavailable(UserError):
    """The registry did not answer, or refused the schema: the batch cannot be sent or read."""


class UnknownSchemaId(Exception):
    """A framed value names a schema id the registry does not have."""


class MalformedValue(Exception):
    """A framed value whose document is not JSON."""


def _client(url: str):
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url, "timeout": REQUEST_TIMEOUT_S})


def _topic_strategy():
    from confluent_kafka.schema_registry import topic_subject_name_strategy

    return topic_subject_name_strategy


def _transport_errors() -> tuple[type[Exception], ...]:
    import httpx2  # what confluent-kafka's registry client speaks HTTP with on Python 3.10+

    return (OSError, httpx2.HTTPError)


def _unavailable(url_free_message: str, exc: Exception) -> RegistryUnavailable:
    # The URL may hold credentials: the message names the registry's answer, never the URL.
    return RegistryUnavailable(f"schema registry: {url_free_message}: {type(exc).__name__}: {exc}")


class RegistrySerializer:
    """value -> wire format for one topic; registers the schema on first use."""

    def __init__(self, url: str, topic: str, schema: TopicSchema) -> None:
        from confluent_kafka.schema_registry import Schema
        from confluent_kafka.schema_registry.json_schema import JSONSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self.topic = topic
        self._context = SerializationContext(topic, MessageField.VALUE)
        self._serializer = JSONSerializer(
            Schema(schema.text(), schema_type="JSON"),
            _client(url),
            conf={"auto.register.schemas": True, "subject.name.strategy": _topic_strategy(), "validate": False},
            json_encode=orjson.dumps,
        )

    def __call__(self, value: dict[str, Any]) -> bytes:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            framed = self._serializer(value, self._context)
        except SchemaRegistryError as exc:
            raise _unavailable(f"cannot register the schema of {self.topic}", exc) from None
        except _transport_errors() as exc:
            raise _unavailable("no answer", exc) from None
        assert framed is not None  # None only for a None value
        return framed


class RegistryDeserializer:
    """wire format -> JSON object for one topic; None for a value that is not framed (plain JSON)."""

    def __init__(self, url: str, topic: str) -> None:
        from confluent_kafka.schema_registry.json_schema import JSONDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self._context = SerializationContext(topic, MessageField.VALUE)
        self._deserializer = JSONDeserializer(
            None,
            schema_registry_client=_client(url),
            conf={"subject.name.strategy": _topic_strategy(), "validate": False},
            json_decode=orjson.loads,
        )

    def __call__(self, value: bytes) -> dict[str, Any] | None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError
        from confluent_kafka.serialization import SerializationError

        if value[0] != MAGIC_BYTE:
            return None  # no JSON document starts with a zero byte: a plain value
        try:
            obj = self._deserializer(value, self._context)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise UnknownSchemaId(str(exc)) from None
            raise _unavailable("cannot fetch a schema", exc) from None
        except (SerializationError, orjson.JSONDecodeError) as exc:
            raise MalformedValue(f"value in the registry's wire format cannot be read: {exc}") from None
        except _transport_errors() as exc:
            raise _unavailable("no answer", exc) from None
        if not isinstance(obj, dict):
            raise MalformedValue(f"value is a JSON {type(obj).__name__}, expected an object")
        return obj
