"""Consumer lag: the group's committed offsets against the topics' end offsets."""

from __future__ import annotations

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from orderstream.errors import BrokerUnavailable
from orderstream.kafka import clients
from orderstream.kafka.groups import group_committed, retry_transient
from orderstream.settings import Settings


def end_offsets(admin: AdminClient, topic: str, timeout: float = 10.0, spec: OffsetSpec | None = None) -> dict[int, int]:
    """Each partition's latest offset (or `spec`, e.g. OffsetSpec.earliest())."""
    try:
        metadata = admin.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"Kafka did not answer: {exc.args[0].str()}") from None
    partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
    if not partitions:
        return {}
    request = {TopicPartition(topic, p): spec or OffsetSpec.latest() for p in partitions}

    def ask() -> dict[int, int]:
        futures = admin.list_offsets(request, request_timeout=timeout)
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    return retry_transient(ask, f"offsets of {topic}")


def partition_lag(settings: Settings, group: str, topic: str, admin: AdminClient | None = None) -> dict[int, int]:
    """Messages per partition that the group has not committed yet.

    A partition the group never committed counts from its earliest retained offset.
    """
    admin = admin or clients.admin_client(settings)
    ends = end_offsets(admin, topic)
    starts = end_offsets(admin, topic, spec=OffsetSpec.earliest())
    committed = group_committed(settings, group, topic, sorted(ends))
    return {p: max(0, end - committed.get(p, starts.get(p, 0))) for p, end in ends.items()}
