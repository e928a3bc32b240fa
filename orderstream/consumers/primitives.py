"""What the live consumer loop and the dead-letter replay must do alike, defined once so that
they cannot drift apart: parse a record into its envelope, key it in the ledger, sort out what
a poll returned, and tell a failure that rolls the batch back and retries it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, cast

from confluent_kafka import KafkaError, Message
from sqlalchemy.exc import DBAPIError, OperationalError

from orderstream.consumers.dlq import DeadLetterUnavailable
from orderstream.consumers.messages import Envelope, Rejected, header_event_id
from orderstream.db import bulk as sql


def parse_into(env: Envelope, parse: Callable[[bytes | None], Any]) -> None:
    """Set the envelope's `event`, or its `rejection` if the value can never take effect."""
    env.event = None
    env.rejection = None
    try:
        env.event = parse(env.value)
    except Rejected as exc:
        env.rejection = exc.with_traceback(None)  # no frame references: no cycles for the GC


def ledger_key(env: Envelope) -> str:
    """The event's id in the processed-events ledger, once `parse_into` ran.

    The `event_id` header, else the payload's `event_id` (parsed or rejected), else the
    record's position: a record with no id at all is still applied or dead-lettered once.
    The replay keys a dead letter by its original record, so both find the same ledger row.
    """
    return (
        header_event_id(env.headers)
        or getattr(env.event, "event_id", None)
        or getattr(env.rejection, "event_id", None)
        or f"{env.topic}:{env.partition}:{env.offset}"
    )


class Record(Protocol):
    """A polled message without an error, as a consumer reads it: librdkafka has set its topic,
    partition and offset, and its headers are a list (the stubs type every Message, error
    events and messages built for producing included)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def records(
    msgs: Iterable[Message], fatal: Callable[[str], Exception], on_error: Callable[[KafkaError], None]
) -> Iterator[Record]:
    """The records among polled messages.

    A fatal error raises `fatal(message)`: the client cannot continue. A partition's end is no
    news; any other error goes to `on_error` and librdkafka recovers from it by itself.
    """
    for msg in msgs:
        err = msg.error()
        if err is None:
            yield cast(Record, msg)
        elif err.fatal():
            raise fatal(f"Kafka consumer fatal error: {err.str()}")
        elif err.code() != KafkaError._PARTITION_EOF:
            on_error(err)


def retryable(exc: BaseException) -> bool:
    """A failure that rolls the batch's transaction back and retries it after a backoff: the
    database (or the DLQ) is unreachable, or the batch met a concurrent change."""
    if isinstance(exc, (OperationalError, sql.RetryBatch, DeadLetterUnavailable)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated
