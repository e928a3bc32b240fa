"""Prometheus metrics of a running consumer, and replicas as group members."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.source.repository import insert_stock
from tests.helpers import free_port, orderstream_env, sample, scrape, wait_until

pytestmark = pytest.mark.integration


def send_inventory(settings, n: int, sku: str = "SKU-1") -> None:
    producer = Producer(settings.kafka_client_config())
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
            lambda: (t := scrape(port)) and sample(t, "orderstream_messages_processed_total", topic=topic, outcome="applied") == 40 and t,
            120, "40 applied messages in /metrics")
        assert sample(text, "orderstream_messages_consumed_total", topic=topic) == 40
        assert sample(text, "orderstream_consumer_batch_size_count", topic=topic) >= 1
        assert sample(text, "orderstream_source_to_applied_seconds_count", topic=topic) >= 1
        lag = wait_until(lambda: (t := scrape(port)) and "orderstream_consumer_lag{" in t and t, 60, "lag gauges")
        lags = [line for line in lag.splitlines() if line.startswith("orderstream_consumer_lag{")]
        assert len(lags) == settings.topic_partitions
        wait_until(lambda: all(float(l.rsplit(" ", 1)[1]) == 0 for l in scrape(port).splitlines()
                               if l.startswith("orderstream_consumer_lag{")), 60, "lag back to 0")
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()


def test_replicas_are_separate_group_members_with_their_own_metrics(settings, engine):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orderstream", "consume", "inventory", "--replicas", "3",
                             "--metrics-port", str(port)], env=orderstream_env(settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        admin = AdminClient(settings.kafka_client_config())

        def members() -> int:
            group = admin.describe_consumer_groups([settings.inventory_group])[settings.inventory_group].result()
            return len(group.members)

        wait_until(lambda: members() == 3, 180, "3 members in the group")
        assert all(wait_until(lambda p=p: scrape(p), 30, f"metrics on {p}") for p in (port, port + 1, port + 2))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]


@pytest.mark.unit
def test_producer_delivery_errors_are_counted_per_topic(settings):
    from flows.produce import record_metrics
    from orderstream import metrics
    from tasks.progress import BatchCounts

    counts = BatchCounts(extracted=10, produced_inventory=4, produced_delivery=3, unacknowledged=3)
    unacknowledged = {settings.inventory_topic: 1, settings.delivery_topic: 2}
    record_metrics(settings, counts, {"sku is required for inventory": 1}, unacknowledged, 0.1)
    for topic, n in unacknowledged.items():
        assert metrics.delivery_errors.labels(topic)._value.get() == n
    assert metrics.produced.labels(settings.inventory_topic)._value.get() == 4
