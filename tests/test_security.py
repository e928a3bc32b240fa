"""`stack up --secure`: SCRAM-SHA-512 logins and StandardAuthorizer ACLs on a private local broker.

The refusals are proved with 0 records written, read as the admin from the topics' end offsets.
The broker here is this module's own (a tmp home), never the session's shared one.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from orderstream.consumers.dlq import DeadLetterProducer
from orderstream.consumers.messages import Envelope
from orderstream.errors import UserError
from orderstream.kafka.clients import admin_client, connection_config, producer_config
from orderstream.kafka.lag import end_offsets, partition_lag
from orderstream.settings import Settings, dlq_topic
from orderstream.stack.local import delete_topics, down, ensure_topics, status, up
from orderstream.stack.secure import (
    ADMIN,
    CONSUMER_PRINCIPALS,
    PRINCIPALS,
    PRODUCER,
    credentials_path,
    ensure_acls,
    ensure_credentials,
    load_credentials,
    secure_client_settings,
)
from tests.helpers import wait_until

INVENTORY_CONSUMER = CONSUMER_PRINCIPALS["inventory"]
DELIVERY_CONSUMER = CONSUMER_PRINCIPALS["delivery"]
PLAINTEXT_REFUSAL = "Unexpected Kafka request of type METADATA during SASL handshake"


@pytest.fixture(scope="module")
def secure_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A private secure broker; settings immune to KAFKA_* variables of the environment."""
    settings = home_settings(tmp_path_factory.mktemp("secure-home"))
    up(settings, secure=True)
    try:
        yield settings
    finally:
        down(settings)


@pytest.fixture
def pipeline(secure_home: Settings) -> Iterator[Settings]:
    """This test's own uuid topics and groups on the secure broker, with the pipeline's ACLs on them.

    The settings themselves carry no credentials: a client made from them connects in plaintext.
    """
    suffix = uuid.uuid4().hex[:12]
    settings = secure_home.model_copy(update={
        "inventory_topic": f"inventory_orders_{suffix}",
        "delivery_topic": f"delivery_orders_{suffix}",
        "inventory_group": f"inventory_{suffix}",
        "delivery_group": f"delivery_{suffix}",
    })
    ensure_topics(settings)  # the stack's own admin work runs as the super user
    ensure_acls(secure_client_settings(settings, ADMIN))
    yield settings
    delete_topics(settings)


def home_settings(home: Path) -> Settings:
    return Settings(
        orderstream_home=home, kafka_bootstrap_servers=None, kafka_port=0, kafka_security_protocol="PLAINTEXT",
        kafka_sasl_username=None, kafka_sasl_password=None, kafka_ssl_ca_location=None, topic_partitions=3,
    )


def records_in(settings: Settings, topic: str) -> int:
    """Records ever written to the topic: the sum of its end offsets, read as the admin."""
    ends = end_offsets(admin_client(secure_client_settings(settings, ADMIN)), topic)
    assert ends, f"topic {topic} has no partitions"
    return sum(ends.values())


def refusals_logged(settings: Settings) -> int:
    log = settings.home / "kafka" / "logs" / "server-1.log"
    return log.read_text(errors="replace").count(PLAINTEXT_REFUSAL)


class Reports:
    """Delivery reports and client-level errors of one producer."""

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self.failed: list[KafkaError] = []
        self.errors: list[KafkaError] = []

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered.append(msg)
        else:
            self.failed.append(err)

    def error_codes(self) -> set[int]:
        return {error.code() for error in self.errors}


def producer_as(settings: Settings, reports: Reports, **overrides) -> Producer:
    """The pipeline's own producer configuration (idempotent, acks=all) with `settings`' identity."""
    return Producer({**producer_config(settings), "error_cb": reports.errors.append, **overrides})


def consumer_as(settings: Settings, group: str, errors: list[KafkaError] | None = None) -> Consumer:
    config = {**connection_config(settings), "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False}
    if errors is not None:
        config["error_cb"] = errors.append
    return Consumer(config)


@pytest.mark.integration
def test_secure_up_keeps_private_credentials_and_turns_on_scram_and_the_authorizer(secure_home: Settings) -> None:
    path = credentials_path(secure_home)
    assert path == secure_home.home / "kafka" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config_file = secure_home.home / "kafka" / "node-1" / "server.properties"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600  # it holds the broker's own password
    credentials = load_credentials(secure_home)
    assert set(credentials) == set(PRINCIPALS) == {"admin", "producer", "inventory-consumer", "delivery-consumer"}
    passwords = {password.get_secret_value() for password in credentials.values()}
    assert len(passwords) == 4 and min(len(p) for p in passwords) >= 32

    props = dict(line.split("=", 1) for line in config_file.read_text().splitlines())
    port = json.loads((secure_home.home / "kafka" / "stack.json").read_text())["nodes"][0]["port"]
    assert props["listeners"].startswith(f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:")
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert status(secure_home).secure and status(secure_home).up

    # No password is in the broker's argv, its logs, the layout file or a leftover format argfile.
    (node,) = status(secure_home).nodes
    argv = Path(f"/proc/{node.pid}/cmdline").read_bytes().decode(errors="replace")
    exposed = [argv] + [
        p.read_text(errors="replace")
        for p in (secure_home.home / "kafka").rglob("*")
        if p.is_file() and p not in (path, config_file) and "data" not in p.parts
    ]
    assert not [p for p in passwords if any(p in text for text in exposed)]
    assert not list((secure_home.home / "kafka").rglob("format.args"))


@pytest.mark.fault  # also part of the fault suite (issue 8)
@pytest.mark.integration
def test_up_again_keeps_the_broker_and_its_credentials_and_plain_up_is_refused(secure_home: Settings) -> None:
    before = load_credentials(secure_home)
    pid = status(secure_home).nodes[0].pid
    again = up(secure_home, secure=True)
    assert (again.started, again.secure, [n.pid for n in again.nodes]) == ((), True, [pid])
    assert load_credentials(secure_home) == before
    refusal = r"runs 1 node\(s\) with --secure, not 1 in plaintext: run `orderstream stack down` first"
    with pytest.raises(UserError, match=refusal):
        up(secure_home)
    assert status(secure_home).nodes[0].pid == pid


@pytest.mark.integration
def test_a_wrong_password_is_refused_and_writes_nothing(pipeline: Settings) -> None:
    producer_settings = secure_client_settings(pipeline, PRODUCER)
    wrong = "not-" + producer_settings.kafka_sasl_password.get_secret_value()
    reports = Reports()
    producer = producer_as(producer_settings, reports, **{"sasl.password": wrong})
    producer.produce(pipeline.inventory_topic, value=b"order-1", on_delivery=reports.on_delivery)

    def refused() -> bool:
        producer.poll(0.1)
        return KafkaError._AUTHENTICATION in reports.error_codes()

    wait_until(refused, timeout=30, message="a SASL authentication error for the wrong password")
    auth = next(e for e in reports.errors if e.code() == KafkaError._AUTHENTICATION)
    assert "SASL authentication error" in auth.str() and "invalid credentials" in auth.str()
    assert wrong not in " ".join(e.str() for e in reports.errors)
    assert producer.flush(2) == 1  # still undelivered: the broker never took it
    assert reports.delivered == []
    producer.purge()
    producer.flush(5)
    assert records_in(pipeline, pipeline.inventory_topic) == 0


@pytest.mark.fault  # also part of the fault suite (issue 8)
@pytest.mark.fault  # also part of the fault suite (issue 8)
@pytest.mark.integration
@pytest.mark.parametrize(
    ("principal", "target"),
    [(INVENTORY_CONSUMER, "delivery"), (DELIVERY_CONSUMER, "delivery"), (PRODUCER, "inventory_dlq")],
    ids=["no-acl-on-delivery_orders", "read-but-not-write-delivery_orders", "producer-on-a-dlq"],
)
def test_a_principal_without_write_access_is_refused_and_writes_nothing(
    pipeline: Settings, principal: str, target: str
) -> None:
    topic = pipeline.delivery_topic if target == "delivery" else dlq_topic(pipeline.inventory_topic)
    reports = Reports()
    producer = producer_as(secure_client_settings(pipeline, principal), reports)
    producer.produce(topic, value=b"order-1", on_delivery=reports.on_delivery)
    assert producer.flush(30) == 0  # answered: refused, not left waiting
    assert [e.code() for e in reports.failed] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert reports.delivered == []
    assert records_in(pipeline, topic) == 0


@pytest.mark.integration
def test_a_plaintext_connection_to_the_sasl_listener_gets_no_metadata(pipeline: Settings) -> None:
    assert connection_config(pipeline).get("security.protocol") is None  # an unconfigured client
    refused_before = refusals_logged(pipeline)
    reports = Reports()
    producer = Producer({**connection_config(pipeline), "error_cb": reports.errors.append})
    producer.produce(pipeline.inventory_topic, value=b"order-1", on_delivery=reports.on_delivery)

    def cut_off() -> bool:
        producer.poll(0.1)
        return bool(reports.error_codes() & {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})

    wait_until(cut_off, timeout=30, message="the broker closing the plaintext connection")
    wait_until(lambda: refusals_logged(pipeline) > refused_before, timeout=30,
               message=f"the broker logging {PLAINTEXT_REFUSAL!r}")
    with pytest.raises(KafkaException) as raised:
        producer.list_topics(pipeline.inventory_topic, timeout=3)
    assert raised.value.args[0].code() == KafkaError._TRANSPORT
    assert producer.flush(2) == 1
    assert reports.delivered == []
    producer.purge()
    producer.flush(5)
    assert records_in(pipeline, pipeline.inventory_topic) == 0


@pytest.mark.integration
def test_the_producer_writes_its_topic_and_the_inventory_consumer_reads_it_in_its_group(pipeline: Settings) -> None:
    reports = Reports()
    producer = producer_as(secure_client_settings(pipeline, PRODUCER), reports)
    sent = [f"order-{i}".encode() for i in range(10)]
    for i, value in enumerate(sent):
        producer.produce(pipeline.inventory_topic, key=str(i).encode(), value=value, on_delivery=reports.on_delivery)
    assert producer.flush(60) == 0
    assert (len(reports.delivered), reports.failed) == (10, [])
    assert records_in(pipeline, pipeline.inventory_topic) == 10

    consumer_settings = secure_client_settings(pipeline, INVENTORY_CONSUMER)
    consumer = consumer_as(consumer_settings, pipeline.inventory_group)
    received: list[Message] = []
    try:
        consumer.subscribe([pipeline.inventory_topic])

        def all_received() -> bool:
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is None, msg.error()
                received.append(msg)
            return len(received) >= len(sent)

        wait_until(all_received, timeout=60, message="the inventory consumer reading 10 records")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sorted(msg.value() for msg in received) == sorted(sent)
    # Its lag, asked with its own identity, is 0 in its group.
    assert partition_lag(consumer_settings, pipeline.inventory_group, pipeline.inventory_topic) == {0: 0, 1: 0, 2: 0}

    # The consumer's real dead-letter producer may write the topic's DLQ.
    first = received[0]
    dead = Envelope(first.topic(), first.partition(), first.offset(), first.key(), first.value(), None,
                    first.timestamp()[1], ledger_key="security-test")
    dlq = DeadLetterProducer(consumer_settings, pipeline.inventory_group)
    try:
        dlq.send([dead])
    finally:
        dlq.close()
    assert records_in(pipeline, dlq_topic(pipeline.inventory_topic)) == 1


@pytest.mark.integration
def test_a_consumer_reads_only_its_topic_and_only_in_its_group(pipeline: Settings) -> None:
    consumer_settings = secure_client_settings(pipeline, INVENTORY_CONSUMER)
    cases = [
        (pipeline.delivery_topic, pipeline.inventory_group, KafkaError.TOPIC_AUTHORIZATION_FAILED),
        (pipeline.inventory_topic, pipeline.delivery_group, KafkaError.GROUP_AUTHORIZATION_FAILED),
    ]
    for topic, group, expected in cases:
        errors: list[KafkaError] = []
        consumer = consumer_as(consumer_settings, group, errors)
        try:
            consumer.subscribe([topic])

            def refused() -> bool:
                for msg in consumer.consume(10, timeout=0.5):
                    assert msg.error() is not None, f"read {topic} in group {group}: {msg.value()!r}"
                    errors.append(msg.error())
                return expected in {error.code() for error in errors}

            wait_until(refused, timeout=30, message=f"{KafkaError(expected).name()} reading {topic} in {group}")
        finally:
            consumer.close()


@pytest.mark.unit
def test_credentials_are_created_private_once_and_hand_each_role_its_principal(tmp_path: Path) -> None:
    settings = home_settings(tmp_path / "home")
    old_umask = os.umask(0o022)
    try:
        created = ensure_credentials(settings, may_create=True)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(credentials_path(settings).stat().st_mode) == 0o600
    assert ensure_credentials(settings, may_create=True) == created == load_credentials(settings)

    consumer = secure_client_settings(settings, INVENTORY_CONSUMER)
    assert (consumer.kafka_security_protocol, consumer.kafka_sasl_mechanism, consumer.kafka_sasl_username) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512", "inventory-consumer"
    )
    assert consumer.kafka_sasl_password == created[INVENTORY_CONSUMER]
    assert created[INVENTORY_CONSUMER].get_secret_value() not in repr(consumer)
    assert (consumer.inventory_topic, consumer.home) == (settings.inventory_topic, settings.home)
    assert settings.kafka_sasl_username is None  # a copy: the original is untouched
    with pytest.raises(UserError, match="no Kafka principal 'root'"):
        secure_client_settings(settings, "root")


@pytest.mark.unit
def test_formatted_storage_without_its_credentials_is_a_user_error(tmp_path: Path) -> None:
    settings = home_settings(tmp_path / "home")
    with pytest.raises(UserError, match="is formatted but credentials.json is gone"):
        ensure_credentials(settings, may_create=False)
    with pytest.raises(UserError, match="stack up --secure"):
        secure_client_settings(settings, PRODUCER)
