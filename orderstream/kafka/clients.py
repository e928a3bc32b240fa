"""Every Kafka client of the product is made here, its librdkafka configuration built from the settings.

One place renders the connection (brokers, security, credentials) and the role of each client
(admin, consumer, producer), so a setting such as SASL or a timeout cannot be missed by one of
them. Constructors do no network I/O: librdkafka connects on first use.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from orderstream.kafka.address import bootstrap_servers
from orderstream.settings import Settings

Config = dict[str, Any]

# librdkafka's own log lines go through Python logging instead of raw stderr.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def connection_config(settings: Settings) -> Config:
    """What every client needs to reach and log in to the cluster (the password in the clear:
    hand it to librdkafka only, never log it)."""
    config: Config = {"bootstrap.servers": bootstrap_servers(settings), "logger": LIBRDKAFKA_LOG}
    if settings.kafka_security_protocol != "PLAINTEXT":
        config["security.protocol"] = settings.kafka_security_protocol
    if settings.kafka_security_protocol.startswith("SASL"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password
        config["sasl.password"] = password.get_secret_value() if password else ""
    if settings.kafka_ssl_ca_location:
        config["ssl.ca.location"] = settings.kafka_ssl_ca_location
    return config


def consumer_config(settings: Settings, group: str, client_id: str, **overrides: Any) -> Config:
    """A member (or offset reader) of `group` that stores and commits offsets only when told:
    offsets move after the work they stand for is durable."""
    return connection_config(settings) | {
        "group.id": group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    } | overrides


def producer_config(settings: Settings, **overrides: Any) -> Config:
    """Idempotent and acks=all: a message is acknowledged once every in-sync replica has it, and a
    retry never writes it twice. Batching is tuned for throughput; callers override it for latency."""
    return connection_config(settings) | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        "compression.type": "lz4",
        "message.timeout.ms": settings.message_timeout_ms,
    } | overrides


# Continuous mode sends each small batch as soon as it is produced: a tight produce() loop puts a
# batch's messages in the queue within about a millisecond, so 2 ms still sends them in one
# request per partition (20 ms of linger was a floor under source-to-applied latency).
LATENCY_PRODUCER = {"linger.ms": 2}
# A long-running consumer: the broker answers a fetch as soon as one byte is there
# (fetch.min.bytes), so a record never waits out fetch.wait.max.ms; that only paces idle
# fetches. At 10 ms the idle fetches of two consumers kept the broker busy (bench P3 at 1,000
# events/s: broker 0.51 cores, p99 1,040 ms; at 100 ms: 0.44 cores, p99 516 ms).
LATENCY_CONSUMER = {"fetch.min.bytes": 1, "fetch.wait.max.ms": 100}


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient(connection_config(settings) | overrides)


def consumer(settings: Settings, group: str, client_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group, client_id, **overrides))


def producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))
