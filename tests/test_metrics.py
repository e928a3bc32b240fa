"""Prometheus metrics of a running consumer, and replicas as group members."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.errors import BrokerUnavailable
from orderstream.kafka.clients import connection_config
from orderstream.ops.offsets import active_members
from orderstream.source.repository import insert_stock
from tests.helpers import free_port, orderstream_env, sample, scrape, wait_until

pytestmark = pytest.mark.integration


def send_inventory(settings, n: int, sku: str = "SKU-1") -> None:
    producer = Producer(connection_config(settings))
    for i in range(n):
        event = {"event_id": f"m{i}", "order_id": f"o{i}", "type": "inventory",
                 "created_at": "2026-11-25T10:00:00Z", "sku": sku, "quantity": "1"}
        producer.produce(settings.inventory_topic, orjson.dumps(event), event["order_id"].encode(),
                         headers=[("event_id", event["event_id"])])
    assert producer.flush(30) == 0


def test_metrics_count_processed_messages_and_report_lag(settings, engine):
    import pandas as pd

    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame([{"sku": "SKU-1", "warehouse_id": "main", "on_hand": "1000"}]))
    send_inventory(settings, 40)
    port, stop = free_port(), threading.Event()
    worker = threading.Thread(target=run_consumer, args=(settings, "inventory"),
                              kwargs={"drain": False, "metrics_port": port, "stop_event": stop})
    worker.start()
    try:
        topic = settings.inventory_topic
        text = wait_until(
            lambda: (t := scrape(port))
            and sample(t, "orderstream_messages_processed_total", topic=topic, outcome="applied") == 40
            and t,
            120, "40 applied messages in /metrics")
        assert sample(text, "orderstream_messages_consumed_total", topic=topic) == 40
        assert sample(text, "orderstream_consumer_batch_size_count", topic=topic) >= 1
        assert sample(text, "orderstream_source_to_applied_seconds_count", topic=topic) >= 1
        lag = wait_until(lambda: (t := scrape(port)) and "orderstream_consumer_lag{" in t and t, 60, "lag gauges")
        lags = [line for line in lag.splitlines() if line.startswith("orderstream_consumer_lag{")]
        assert len(lags) == settings.topic_partitions
        wait_until(lambda: all(float(line.rsplit(" ", 1)[1]) == 0 for line in scrape(port).splitlines()
                               if line.startswith("orderstream_consumer_lag{")), 60, "lag back to 0")
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()


def test_replicas_are_separate_group_members_with_their_own_metrics(settings, engine, tmp_path):
    port = free_port(3)
    log = tmp_path / "consume.log"  # a file, not a pipe nobody reads while waiting: a full pipe blocks the logger
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orderstream", "consume", "inventory", "--replicas", "3",
                                 "--metrics-port", str(port)], env=orderstream_env(settings),
                                stdout=subprocess.DEVNULL, stderr=out, text=True)
    try:
        admin = AdminClient(connection_config(settings))
        wait_until(lambda: _members(admin, settings.inventory_group) == 3, 180, f"3 members in the group; their log: {log}")
        assert all(wait_until(lambda p=p: scrape(p), 30, f"metrics on {p}") for p in (port, port + 1, port + 2))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 0, log.read_text()[-2000:]


@pytest.mark.unit
def test_producer_delivery_errors_are_counted_per_topic(settings):
    from orderstream import metrics
    from orderstream.producer.pipeline import record_metrics
    from orderstream.producer.progress import BatchCounts

    counts = BatchCounts(extracted=10, produced_inventory=4, produced_delivery=3, unacknowledged=3)
    unacknowledged = {settings.inventory_topic: 1, settings.delivery_topic: 2}
    record_metrics(settings, counts, {"sku is required for inventory": 1}, unacknowledged, 0.1)
    for topic, n in unacknowledged.items():
        assert metrics.delivery_errors.labels(topic)._value.get() == n
    assert metrics.produced.labels(settings.inventory_topic)._value.get() == 4


def test_a_taken_metrics_port_is_one_line_and_starts_no_replica(settings, engine, tmp_path):
    port = free_port(2)
    with socket.socket() as taken:  # another program already serves on the second replica's port
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        result = subprocess.run([sys.executable, "-m", "orderstream", "consume", "inventory", "--replicas", "2",
                                 "--metrics-port", str(port)], env=orderstream_env(settings),
                                capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot serve metrics on 127.0.0.1:{port + 1}" in result.stderr and "--metrics-port" in result.stderr
    assert "Traceback" not in result.stderr
    admin = AdminClient(connection_config(settings))
    assert _members(admin, settings.inventory_group) == 0


def test_a_replica_that_dies_stops_the_others_and_the_command_fails(settings, engine, tmp_path):
    log = tmp_path / "consume.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orderstream", "consume", "inventory", "--replicas", "2"],
                                env=orderstream_env(settings), stdout=subprocess.DEVNULL, stderr=out, text=True)
    try:
        admin = AdminClient(connection_config(settings))
        wait_until(lambda: _members(admin, settings.inventory_group) == 2, 180, f"2 members; their log: {log}")
        victim = _replica_pids(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=120)  # the survivor is stopped and the command ends by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = log.read_text()
    assert proc.returncode == 2, err[-2000:]
    assert "1 of 2 inventory consumer replicas failed" in err and f"exit code {-signal.SIGKILL}" in err
    assert "Traceback" not in err


def _members(admin: AdminClient, group: str) -> int:
    try:
        return len(active_members(admin, group))
    except BrokerUnavailable:  # e.g. NOT_COORDINATOR while the group is being created: ask again
        return 0


def _replica_pids(parent: int) -> list[int]:
    """The consumer processes `parent` spawned (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
