"""`python -m orderstream.events.peek TOPIC [--limit N]`: the messages on a topic, one JSON object
a line (partition, offset, key, headers, value), to see what a topic carries.

It reads from each partition's start without joining a consumer group, so it commits nothing
and moves no consumer. A value in the Schema Registry's wire format is shown as its JSON with
the schema id beside it; a value that is not JSON is shown as text.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.kafka.lag import end_offsets
from orderstream.settings import Settings

READ_TIMEOUT_S = 30.0


def _text(raw: str | bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _headers(headers: list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None) -> dict[str, str | None]:
    """A consumed message's headers (a list of pairs; the stubs allow a dict too) by name, as text."""
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    return {name: _text(raw) for name, raw in pairs}


def shown(value: bytes | None) -> dict[str, Any]:
    """The value as JSON where it is JSON, with the registry's schema id where it is framed."""
    if not value:
        return {"value": _text(value)}
    framed = value[0] == 0 and len(value) > 5
    body = value[5:] if framed else value
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = _text(body)
    return {"schema_id": struct.unpack(">I", value[1:5])[0], "value": parsed} if framed else {"value": parsed}


def messages(settings: Settings, topic: str, limit: int) -> Iterator[dict[str, Any]]:
    """Up to `limit` messages of `topic`, partition by partition, oldest first."""
    ends = {p: end for p, end in end_offsets(clients.admin_client(settings), topic).items() if end > 0}
    if not ends:
        return
    consumer = clients.consumer(settings, f"orderstream-peek-{os.getpid()}", "orderstream-peek")
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline, left = time.monotonic() + READ_TIMEOUT_S, limit
        while ends and left > 0:
            if time.monotonic() > deadline:
                raise UserError(f"{topic}: partitions {sorted(ends)} not read to their end in {READ_TIMEOUT_S:.0f}s")
            for msg in consumer.consume(min(left, 500), 0.5):
                if msg.error():
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition is None or offset is None:
                    continue
                left -= 1
                yield {"partition": partition, "offset": offset, "key": _text(msg.key()),
                       "headers": _headers(msg.headers()), **shown(msg.value())}
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                if left == 0:
                    break
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orderstream.events.peek", description=__doc__.splitlines()[0])
    parser.add_argument("topic")
    parser.add_argument("--limit", type=int, default=20, help="at most this many messages (default 20)")
    args = parser.parse_args(argv)
    from orderstream.runtime import settings_for

    try:
        for message in messages(settings_for("admin"), args.topic, args.limit):
            sys.stdout.write(orjson.dumps(message).decode() + "\n")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
