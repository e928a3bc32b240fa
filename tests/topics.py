"""Read a whole test topic back from the real broker."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, TopicPartition

from orderstream.kafka.clients import admin_client, connection_config
from orderstream.kafka.lag import end_offsets
from orderstream.settings import Settings


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    @property
    def json(self) -> dict:
        return orjson.loads(self.value)


def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list[Record]:
    """Every record up to the topic's current end offsets (assign, no group)."""
    ends = end_offsets(admin_client(settings), topic)
    consumer = Consumer({**connection_config(settings), "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        pending = {p for p, end in ends.items() if end > 0}
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: partitions {sorted(pending)} not read to their end in {timeout}s")
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                records.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value(), dict(msg.headers() or ())))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
        return records
    finally:
        consumer.close()
