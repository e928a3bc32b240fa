"""Scale out through the product's own CLI on a 3-node cluster (issue 6, "Done means").

`orderstream stack up --brokers 3` in the test's own home, then `orderstream produce` and
`orderstream consume inventory --replicas 3 --metrics-port P` as subprocesses against it:
3 members in the group, each replica's /metrics counts what it processed and reports lag per
partition, lag returns to 0, every event is in the ledger exactly once, and the topics are
replicated 3 ways with min.insync.replicas=2.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.engine import make_engine
from orderstream.db.models import OrderEvent, ProcessedEvent, Reservation, Stock
from orderstream.kafka.clients import connection_config
from orderstream.settings import Settings
from orderstream.stack.local import down, pipeline_topics
from tests.helpers import free_port, orderstream_env, sample, scrape, stop_tree, wait_until

pytestmark = pytest.mark.integration

EVENTS = 3000
REPLICAS = 3
SKUS = [f"SKU-{i:02d}" for i in range(12)]
ON_HAND = 1_000_000  # every event is covered: each one reserves


def cli(settings: Settings, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "orderstream", *args], env=orderstream_env(settings),
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"orderstream {' '.join(args)}: {result.stdout[-1500:]}\n{result.stderr[-3000:]}"
    return result


def write_inputs(folder: Path) -> tuple[Path, Path, dict[str, int]]:
    """A CSV of EVENTS inventory events over many orders (so every partition gets some) and one of stock."""
    folder.mkdir(parents=True, exist_ok=True)
    events, stock = folder / "events.csv", folder / "stock.csv"
    quantities: dict[str, int] = {}
    with events.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["event_id", "order_id", "type", "created_at", "sku", "quantity"])
        for i in range(EVENTS):
            quantities[f"r{i}"] = 1 + i % 3
            out.writerow([f"r{i}", f"o{i % 997}", "inventory", "2026-11-25T10:00:00Z", SKUS[i % len(SKUS)], 1 + i % 3])
    with stock.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sku", "warehouse_id", "on_hand"])
        out.writerows([sku, "main", ON_HAND] for sku in SKUS)
    return events, stock, quantities


def group_members(admin: AdminClient, group: str) -> dict[str, set[int]]:
    """Member id -> its assigned partitions, as the group coordinator reports them."""
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException:  # the group does not exist yet, or the coordinator is still moving
        return {}
    return {m.member_id: {tp.partition for tp in m.assignment.topic_partitions} for m in description.members}


def lag_lines(text: str) -> dict[int, float]:
    lags = {}
    for line in text.splitlines():
        if line.startswith("orderstream_consumer_lag{"):
            partition = int(line.split('partition="', 1)[1].split('"', 1)[0])
            lags[partition] = float(line.rsplit(" ", 1)[1])
    return lags


def test_three_cli_replicas_on_a_three_node_cluster_share_the_work_and_apply_each_event_once(db_url, tmp_path):
    suffix = uuid.uuid4().hex[:12]
    s = Settings(
        orderstream_home=tmp_path / "home", database_url=db_url, kafka_bootstrap_servers=None, kafka_port=0,
        kafka_security_protocol="PLAINTEXT", kafka_sasl_username=None, kafka_sasl_password=None,
        kafka_ssl_ca_location=None, topic_partitions=6,
        inventory_topic=f"inventory_orders_{suffix}", delivery_topic=f"delivery_orders_{suffix}",
        inventory_group=f"inventory_{suffix}", delivery_group=f"delivery_{suffix}",
    )
    events, stock, quantities = write_inputs(tmp_path / "input")
    started = time.monotonic()
    consumer: subprocess.Popen[str] | None = None
    try:
        up = cli(s, "stack", "up", "--brokers", "3")
        assert up.stdout.count("127.0.0.1:") == 3, up.stdout
        admin = AdminClient(connection_config(s))

        # Every pipeline topic: 6 partitions, each on 3 replicas, and min.insync.replicas=2.
        metadata = admin.list_topics(timeout=30).topics
        for topic in pipeline_topics(s):
            assert len(metadata[topic].partitions) == 6, topic
            assert {len(p.replicas) for p in metadata[topic].partitions.values()} == {3}, topic
        configs = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in pipeline_topics(s)])
        for resource, future in configs.items():
            assert future.result(timeout=30)["min.insync.replicas"].value == "2", resource.name

        cli(s, "load", str(stock), "--stock")
        cli(s, "load", str(events))

        port = free_port(REPLICAS)
        ports = [port + i for i in range(REPLICAS)]
        log = tmp_path / "consume.log"
        with log.open("w") as out:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "orderstream", "consume", "inventory", "--replicas", str(REPLICAS),
                 "--metrics-port", str(port)],
                env=orderstream_env(s), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, text=True,
            )
        members = wait_until(
            lambda: (m := group_members(admin, s.inventory_group)) and len(m) == REPLICAS
            and all(len(parts) == 2 for parts in m.values()) and m,
            180, f"{REPLICAS} members in group {s.inventory_group}, 2 partitions each; log: {log}", interval=0.5)
        assert set().union(*members.values()) == set(range(6))
        for p in ports:
            wait_until(lambda p=p: lag_lines(scrape(p)), 60, f"lag gauges on port {p}")

        cli(s, "produce")  # the events flow in while the replicas run

        def applied_per_replica() -> list[float]:
            return [sample(scrape(p), "orderstream_messages_processed_total",
                           topic=s.inventory_topic, outcome="applied") or 0 for p in ports]

        wait_until(lambda: sum(applied_per_replica()) == EVENTS, 180,
                   f"{EVENTS} applied over the replicas' /metrics; log: {log}", interval=0.5)
        per_replica = applied_per_replica()
        assert all(n > 0 for n in per_replica), per_replica  # each member did its share
        for p in ports:  # each replica reports the group's lag on every partition, and it is back to 0
            lags = wait_until(lambda p=p: (lag := lag_lines(scrape(p))) and not any(lag.values()) and lag, 60,
                              f"lag 0 on every partition at port {p}", interval=0.5)
            assert sorted(lags) == list(range(6))
        assert len(group_members(admin, s.inventory_group)) == REPLICAS  # nobody left while working

        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(90) == 0, log.read_text()[-3000:]
    finally:
        if consumer is not None:
            stop_tree(consumer)
        down(s)
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            ledger = session.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome)
                                     .where(ProcessedEvent.consumer_group == s.inventory_group)).all()
            reserved = dict(session.execute(select(Reservation.event_id, Reservation.quantity)).all())
            taken = session.scalar(select(func.sum(Stock.reserved)))
            produced = session.scalar(select(func.count()).where(OrderEvent.outcome == "produced"))
    finally:
        engine.dispose()
    assert produced == EVENTS
    assert len(ledger) == EVENTS and {e for e, _ in ledger} == set(quantities)  # every event exactly once
    assert {o for _, o in ledger} == {"applied"}
    assert reserved == quantities and taken == sum(quantities.values())
    print(f"CLUSTER REPLICAS db={db_url.split(':', 1)[0]} applied_per_replica={per_replica} "
          f"seconds={time.monotonic() - started:.0f}")
