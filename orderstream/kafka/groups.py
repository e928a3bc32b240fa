"""Reading a consumer group's committed offsets safely.

Through a plain Consumer of the group (assigned, never subscribed, so it never joins),
not the AdminClient: librdkafka's admin ListConsumerGroupOffsets can crash the process
when the group's coordinator moves or is not known yet (confluentinc/librdkafka#5040).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from orderstream.errors import BrokerUnavailable
from orderstream.settings import Settings

TIMEOUT_S = 15.0
_COORDINATOR_RETRY_S = 30.0


def retry_transient(call, what: str, timeout_s: float = _COORDINATOR_RETRY_S):
    """`call()` retried with backoff while Kafka answers a transient error (a coordinator or
    partition leader that is moving, as on a fresh or restarting broker)."""
    transient = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
    }
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in transient or time.monotonic() + delay > deadline:
                raise
            logging.getLogger(__name__).debug("%s: %s; retrying in %.1fs", what, error.str(), delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def group_consumer(settings: Settings, group: str) -> Consumer:
    """A consumer of `group` for reading and committing its offsets; it never joins the group."""
    return Consumer(
        settings.kafka_client_config()
        | {"group.id": group, "enable.auto.commit": False, "client.id": f"orderstream-offsets-{group}"}
    )


def group_committed(settings: Settings, group: str, topic: str, partitions: list[int] | None = None) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (partitions without one left out)."""
    consumer = group_consumer(settings, group)
    try:
        if partitions is None:
            metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
            partitions = sorted(metadata.partitions) if metadata is not None and metadata.error is None else []
        request = [TopicPartition(topic, p) for p in partitions]
        tps = retry_transient(lambda: consumer.committed(request, timeout=TIMEOUT_S), f"offsets of {group}")
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read the offsets of group {group}: {exc.args[0].str()}") from None
    finally:
        consumer.close()
