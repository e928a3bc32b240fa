"""The pipeline's topics on the stack's cluster (local or external): creating them with leaders,
deleting them, finding a partition's leader, and the admin client that does it."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from orderstream.errors import BrokerUnavailable, UserError
from orderstream.kafka import clients
from orderstream.kafka.address import bootstrap_servers
from orderstream.processes import wait_until
from orderstream.settings import Settings, dlq_topic
from orderstream.stack import secure as sec
from orderstream.stack.layout import local_layout

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 30.0
UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}


def admin(settings: Settings) -> AdminClient:
    """The stack's admin client, logged in as `operator(settings)`."""
    # librdkafka's own log goes to this module's logger, which the CLI does not silence.
    return clients.admin_client(operator(settings), logger=log)


def operator(settings: Settings) -> Settings:
    """Who does the stack's admin work: on a local secure broker its super user, else the settings' identity."""
    layout = local_layout(settings)
    if layout is None or not layout.secure:
        return settings
    return sec.secure_client_settings(settings, sec.ADMIN)


def pipeline_topics(settings: Settings) -> tuple[str, ...]:
    return (
        settings.inventory_topic,
        settings.delivery_topic,
        dlq_topic(settings.inventory_topic),
        dlq_topic(settings.delivery_topic),
    )


def ensure_topics(
    settings: Settings, partitions: int | None = None, replication_factor: int | None = None
) -> tuple[str, ...]:
    """Create the settings' four topics unless they exist, and wait until each partition has a leader.

    The replication factor defaults to the local node count, or the external cluster's default.
    """
    names = pipeline_topics(settings)
    layout = local_layout(settings)
    rf = replication_factor or (len(layout.nodes) if layout else -1)
    config = {"min.insync.replicas": "2"} if rf >= 3 else {}
    client = admin(settings)
    futures = client.create_topics(
        [NewTopic(name, partitions or settings.topic_partitions, rf, config=config) for name in names],
        operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S,
    )
    for name, future in futures.items():
        _result(future, settings, f"create topic {name}", ok=KafkaError.TOPIC_ALREADY_EXISTS)
    _wait_for_leaders(settings, client, names)
    return names


def delete_topics(settings: Settings) -> None:
    """Delete the settings' four topics; missing ones are fine."""
    client = admin(settings)  # referenced until the futures resolve: a collected client cancels them
    futures = client.delete_topics(
        list(pipeline_topics(settings)), operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S
    )
    for name, future in futures.items():
        _result(future, settings, f"delete topic {name}", ok=KafkaError.UNKNOWN_TOPIC_OR_PART)


def leader_of(settings: Settings, topic: str, partition: int) -> int:
    """Node id leading the partition (-1 while it has no leader)."""
    metadata = admin(settings).list_topics(topic, timeout=ADMIN_TIMEOUT_S)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or partition not in found.partitions:
        raise UserError(f"no partition {topic}[{partition}] on {bootstrap_servers(settings)}")
    return found.partitions[partition].leader


def _result(future: Future[None], settings: Settings, what: str, ok: int) -> None:
    try:
        future.result(timeout=ADMIN_TIMEOUT_S + 5)
    except FutureTimeout:
        raise BrokerUnavailable(f"Kafka at {bootstrap_servers(settings)} did not answer: cannot {what}") from None
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() in UNREACHABLE:
            raise BrokerUnavailable(f"Kafka at {bootstrap_servers(settings)} is unreachable: cannot {what}") from None
        if error.code() != ok:
            raise UserError(f"cannot {what} on {bootstrap_servers(settings)}: {error.str()}") from None


def _wait_for_leaders(settings: Settings, client: AdminClient, names: tuple[str, ...]) -> None:
    def led() -> bool:
        try:
            topics = client.list_topics(timeout=5).topics
        except KafkaException:
            return False
        return all(
            name in topics and topics[name].error is None and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        )

    if not wait_until(led, ADMIN_TIMEOUT_S, interval=0.1):
        raise BrokerUnavailable(f"topics {list(names)} got no leaders on {bootstrap_servers(settings)}")
