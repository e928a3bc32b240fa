"""The local infrastructure: a KRaft broker per home, a 3-node cluster for faults, a throwaway PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from sqlalchemy import Engine, inspect

from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.kafka.address import bootstrap_servers
from orderstream.processes import cmdline
from orderstream.settings import Settings
from orderstream.stack.local import (
    delete_topics,
    down,
    kill_node,
    leader_of,
    pipeline_topics,
    run_kafka_tool,
    start_node,
    status,
    up,
)
from orderstream.stack.postgres import ThrowawayPostgres
from tests.helpers import wait_until

DEFAULT_TOPICS = {"inventory_orders", "delivery_orders", "inventory_orders.dlq", "delivery_orders.dlq"}


def home_settings(home: Path, **overrides) -> Settings:
    """Settings of a local home, immune to KAFKA_* variables of the environment."""
    values = {"orderstream_home": home, "kafka_bootstrap_servers": None, "kafka_port": 0, "topic_partitions": 6}
    return Settings(**{**values, **overrides})


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap_servers(settings)})


@pytest.fixture(scope="module")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = home_settings(tmp_path_factory.mktemp("stack-home"))
    up(settings)
    yield settings
    down(settings)


@pytest.fixture
def new_home(tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    """Settings for more homes in this test; whatever they start is stopped afterwards."""
    homes: list[Settings] = []

    def make(name: str, **overrides) -> Settings:
        homes.append(home_settings(tmp_path / name, **overrides))
        return homes[-1]

    yield make
    for settings in homes:
        down(settings)


@pytest.mark.integration
def test_up_runs_kafka_as_a_detached_java_process(local_home: Settings) -> None:
    (node,) = status(local_home).nodes
    argv = cmdline(node.pid)
    assert Path(argv[0]).name == "java"
    assert "kafka.Kafka" in argv
    assert str(local_home.home / "kafka" / "node-1" / "server.properties") in argv
    assert os.getsid(node.pid) == node.pid  # its own session: it outlives the command that started it


@pytest.mark.integration
def test_up_creates_the_four_topics_with_six_partitions(local_home: Settings) -> None:
    topics = admin(local_home).list_topics(timeout=10).topics
    assert set(pipeline_topics(local_home)) == DEFAULT_TOPICS
    assert {name: len(topics[name].partitions) for name in DEFAULT_TOPICS} == dict.fromkeys(DEFAULT_TOPICS, 6)


@pytest.mark.integration
def test_up_twice_is_harmless_and_keeps_the_pid(local_home: Settings) -> None:
    pid = status(local_home).nodes[0].pid
    again = up(local_home)
    assert again.started == ()
    assert [node.pid for node in again.nodes] == [pid]
    assert set(again.topics) == DEFAULT_TOPICS


@pytest.mark.integration
def test_status_reports_the_address_and_up(local_home: Settings) -> None:
    port = json.loads((local_home.home / "kafka" / "stack.json").read_text())["nodes"][0]["port"]
    current = status(local_home)
    assert current.up and not current.external
    assert current.bootstrap_servers == bootstrap_servers(local_home) == f"127.0.0.1:{port}"
    assert [(node.node_id, node.address, node.up) for node in current.nodes] == [(1, f"127.0.0.1:{port}", True)]


@pytest.mark.integration
def test_down_stops_only_its_own_home(local_home: Settings, new_home: Callable[..., Settings]) -> None:
    other = new_home("other")
    other_pid = up(other).nodes[0].pid
    assert other_pid != status(local_home).nodes[0].pid

    assert down(other) is True
    assert "kafka.Kafka" not in cmdline(other_pid)
    assert not status(other).up
    assert not (other.home / "kafka" / "node-1" / "kafka.pid").exists()
    assert down(other) is False
    assert status(local_home).up
    assert set(admin(local_home).list_topics(timeout=10).topics) >= DEFAULT_TOPICS


@pytest.mark.integration
def test_producer_performance_runs_on_the_broker_classpath(local_home: Settings) -> None:
    result = run_kafka_tool(
        local_home,
        "org.apache.kafka.tools.ProducerPerformance",
        ["--topic", "inventory_orders", "--num-records", "1000", "--record-size", "100", "--throughput", "-1",
         "--bootstrap-server", bootstrap_servers(local_home)],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "1000 records sent" in result.stdout


@pytest.mark.integration
def test_a_taken_port_is_a_one_line_user_error(new_home: Callable[..., Settings]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = new_home("taken", kafka_port=port)
        with pytest.raises(UserError) as raised:
            up(settings)
    message = str(raised.value)
    assert f"port {port}" in message and "KAFKA_PORT" in message
    assert "\n" not in message
    assert status(settings).nodes == ()  # the refused port was not remembered


@pytest.mark.integration
def test_missing_java_is_a_user_error(new_home: Callable[..., Settings], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    settings = new_home("no-java")
    with pytest.raises(UserError, match="java not found on PATH: install"):
        up(settings)
    assert status(settings).nodes == ()


@pytest.mark.integration
def test_external_mode_starts_nothing(local_home: Settings, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:12]
    external = Settings(
        orderstream_home=tmp_path / "external",
        kafka_bootstrap_servers=bootstrap_servers(local_home),
        inventory_topic=f"inventory_orders_{suffix}",
        delivery_topic=f"delivery_orders_{suffix}",
        topic_partitions=2,
    )
    info = up(external)
    try:
        assert (info.external, info.nodes, info.started) == (True, (), ())
        assert not (external.home / "kafka").exists()
        assert status(external).bootstrap_servers == bootstrap_servers(local_home)
        assert down(external) is False
        topics = admin(local_home).list_topics(timeout=10).topics
        partitions = {name: len(topics[name].partitions) for name in info.topics}
        assert partitions == dict.fromkeys(pipeline_topics(external), 2)
    finally:
        delete_topics(external)


@pytest.mark.integration
def test_settings_fixture_gives_private_topics_and_a_migrated_database(settings: Settings, engine: Engine) -> None:
    topics = clients.admin_client(settings).list_topics(timeout=10).topics
    assert {name: len(topics[name].partitions) for name in pipeline_topics(settings)} == dict.fromkeys(
        pipeline_topics(settings), 3
    )
    assert settings.inventory_group != "inventory" and settings.inventory_group.startswith("inventory_")
    assert "alembic_version" in inspect(engine).get_table_names()


@pytest.mark.integration
def test_throwaway_postgres_keeps_its_data_across_kill_and_start() -> None:
    with ThrowawayPostgres() as pg:
        assert pg.url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres"
        pg.create_database("orders")
        dsn = {"host": "127.0.0.1", "port": pg.port, "user": "postgres", "dbname": "orders"}
        with psycopg.connect(**dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")

        pg.kill()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(**dsn, connect_timeout=2)
        pg.start()
        with psycopg.connect(**dsn) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]


@pytest.mark.fault
def test_three_nodes_survive_losing_a_partition_leader(new_home: Callable[..., Settings]) -> None:
    trio = new_home("trio")
    info = up(trio, brokers=3)
    assert [node.node_id for node in info.nodes] == [1, 2, 3] and all(node.up for node in info.nodes)
    assert len({node.address for node in info.nodes}) == 3

    topic = trio.inventory_topic
    client = admin(trio)
    assert {len(p.replicas) for p in client.list_topics(topic, timeout=10).topics[topic].partitions.values()} == {3}
    (topic_config,) = client.describe_configs([ConfigResource("topic", topic)]).values()
    assert topic_config.result(timeout=10)["min.insync.replicas"].value == "2"
    (broker_config,) = client.describe_configs([ConfigResource("broker", "1")]).values()
    assert broker_config.result(timeout=10)["offsets.topic.replication.factor"].value == "3"

    leader = leader_of(trio, topic, 0)
    assert kill_node(trio, leader, hard=True) is True
    assert not next(node for node in status(trio).nodes if node.node_id == leader).up

    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap_servers(trio), "acks": "all", "message.timeout.ms": 60_000})
    for i in range(10):
        producer.produce(topic, value=f"order-{i}".encode(), partition=0, on_delivery=on_delivery)
    assert producer.flush(90) == 0
    assert errors == []
    assert leader_of(trio, topic, 0) not in (leader, -1)

    start_node(trio, leader)

    def partition_0_fully_in_sync() -> bool:
        partition = client.list_topics(topic, timeout=10).topics[topic].partitions[0]
        return len(partition.isrs) == 3

    wait_until(partition_0_fully_in_sync, timeout=60, message=f"node {leader} rejoining the ISR of {topic}[0]")
    assert down(trio) is True
    assert not any(node.up for node in status(trio).nodes)
