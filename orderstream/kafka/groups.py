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
from orderstream.kafka import clients
from orderstream.retry import Backoff
from orderstream.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0
_COORDINATOR_RETRY_S = 30.0
TRANSIENT_BACKOFF_INITIAL_S = 0.1
TRANSIENT_BACKOFF_MAX_S = 2.0
# Answers of a coordinator or partition leader that is moving, as on a fresh or restarting broker.
TRANSIENT_ERRORS = frozenset(
    {
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
)


def retry_transient(call, what: str, timeout_s: float = _COORDINATOR_RETRY_S):
    """`call()` retried with backoff while Kafka answers a transient error, for up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    backoff = Backoff(TRANSIENT_BACKOFF_INITIAL_S, TRANSIENT_BACKOFF_MAX_S)
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in TRANSIENT_ERRORS or time.monotonic() + backoff.delay > deadline:
                raise
            log.debug("%s: %s; retrying in %.1fs", what, error.str(), backoff.delay)
            backoff.wait()


def group_consumer(settings: Settings, group: str) -> Consumer:
    """A consumer of `group` for reading and committing its offsets; it never joins the group."""
    return clients.consumer(settings, group, f"orderstream-offsets-{group}")


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
