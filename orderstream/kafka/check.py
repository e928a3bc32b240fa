"""Is the cluster there, with the topics a client needs? One clear line if not, before any work starts."""

from __future__ import annotations

from confluent_kafka import KafkaException

from orderstream.errors import BrokerUnavailable, UserError
from orderstream.kafka.address import bootstrap_servers
from orderstream.kafka.clients import admin_client
from orderstream.settings import Settings


def check_broker(settings: Settings, topics: list[str], timeout: float = 10.0) -> None:
    where = bootstrap_servers(settings)
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka at {where} did not answer ({exc.args[0].str()}). "
            "Start the local broker with `orderstream stack up`, or check KAFKA_BOOTSTRAP_SERVERS."
        ) from None
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        raise UserError(
            f"topic(s) {', '.join(missing)} do not exist on {where}; "
            "`orderstream stack up` creates them"
        )
