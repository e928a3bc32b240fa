"""The consumers on a real broker and both databases: effects, dead letters, exactly-once."""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from orderstream.consumers import make_handler, run_consumer, run_replicas, spawn_consumer
from orderstream.consumers.runner import BatchConsumer, StopSignal
from orderstream.consumers.stats import ConsumerStats
from orderstream.db.models import (
    ConsumerCounter,
    Delivery,
    DeliveryCapacity,
    DeliveryHistory,
    Notification,
    ProcessedEvent,
    Reservation,
    Stock,
)
from orderstream.kafka.clients import admin_client, connection_config
from orderstream.settings import Settings, dlq_topic
from tests.helpers import wait_until
from tests.topics import read_topic

pytestmark = pytest.mark.integration

CREATED = "2026-11-25T10:00:00+01:00"
DAY1 = dt.date(2026, 11, 26)
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


# -- messages in our producer's exact format -------------------------------------------------------


def inv(event_id: str, order_id: str, sku: str, quantity: int | str, warehouse_id: str | None = None) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": CREATED,
            "sku": sku, "quantity": str(quantity), "warehouse_id": warehouse_id, "customer_email": None,
            "address_line": None, "city": None, "postal_code": None, "country": None, "status": None,
            "gift_wrap": "no"}


def dlv(event_id: str, order_id: str, status: str | None = "requested", created_at: str = CREATED, **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "delivery", "created_at": created_at,
            "sku": None, "quantity": None, "warehouse_id": None, **ADDRESS, "status": status, **over}


def producer(settings: Settings, **extra) -> Producer:
    return Producer({**connection_config(settings), "enable.idempotence": True, "acks": "all",
                     "linger.ms": 5, **extra})


def produce(settings: Settings, topic: str, events: list[dict], p: Producer | None = None) -> None:
    own = p is None
    p = p or producer(settings)
    failed: list = []
    for event in events:
        while True:
            try:
                p.produce(topic, key=event["order_id"].encode(), value=orjson.dumps(event),
                          headers=[("event_id", event["event_id"].encode())],
                          on_delivery=lambda err, _msg: err and failed.append(err))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if own:
        assert p.flush(30) == 0 and not failed, failed


def produce_raw(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes | None, list | None]],
                **extra) -> None:
    p = producer(settings, **extra)
    failed: list = []
    for key, value, headers in records:
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=lambda err, _m: err and failed.append(err))
    assert p.flush(30) == 0 and not failed, failed


# -- database helpers --------------------------------------------------------------------------------


def seed_stock(engine, rows: list[tuple[str, str, int]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Stock.__table__), [{"sku": s, "warehouse_id": w, "on_hand": n, "reserved": 0}
                                               for s, w, n in rows])


def stock(engine) -> dict[tuple[str, str], tuple[int, int]]:
    with Session(engine) as s:
        return {(r.sku, r.warehouse_id): (r.on_hand, r.reserved) for r in s.scalars(select(Stock))}


def reservations(engine) -> dict[str, tuple[str, str, str, int, bool]]:
    with Session(engine) as s:
        return {r.event_id: (r.outcome, r.sku, r.warehouse_id, r.quantity, r.released_at is not None)
                for r in s.scalars(select(Reservation))}


def ledger(engine, group: str) -> dict[str, tuple[str, str | None]]:
    with Session(engine) as s:
        rows = s.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome, ProcessedEvent.error_class)
                         .where(ProcessedEvent.consumer_group == group)).all()
        return {e: (o, c) for e, o, c in rows}


def ledger_count(engine, group: str) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(ProcessedEvent)
                        .where(ProcessedEvent.consumer_group == group))


def counter(engine, group: str, name: str = "deduplicated") -> int:
    with Session(engine) as s:
        return s.scalar(select(ConsumerCounter.value).where(ConsumerCounter.consumer_group == group,
                                                            ConsumerCounter.name == name)) or 0


def deliveries(engine) -> dict[str, tuple[str, dt.date | None, int | None]]:
    with Session(engine) as s:
        return {d.order_id: (d.status, d.slot_date, d.slot) for d in s.scalars(select(Delivery))}


def history(engine, order_id: str) -> list[tuple[str | None, str]]:
    with Session(engine) as s:
        return [(h.from_status, h.to_status) for h in s.scalars(
            select(DeliveryHistory).where(DeliveryHistory.order_id == order_id).order_by(DeliveryHistory.id))]


def notifications(engine, order_id: str | None = None) -> list[Notification]:
    with Session(engine) as s:
        query = select(Notification).order_by(Notification.id)
        if order_id is not None:
            query = query.where(Notification.order_id == order_id)
        return list(s.scalars(query))


def drain(settings: Settings, role: str) -> ConsumerStats:
    return run_consumer(settings, role, drain=True, metrics_port=None)


def _group_client(settings: Settings, role: str) -> Consumer:
    # A consumer that never subscribes reads and commits the group's offsets without joining
    # it. (The AdminClient's ListConsumerGroupOffsets can crash librdkafka 2.16 on a broker
    # whose coordinator is still loading.)
    return Consumer({**connection_config(settings), "group.id": settings.groups[role],
                     "enable.auto.commit": False})


def committed_offsets(settings: Settings, role: str) -> dict[int, int]:
    client = _group_client(settings, role)
    try:
        tps = [TopicPartition(settings.topics[role], p) for p in range(settings.topic_partitions)]
        return {tp.partition: tp.offset for tp in client.committed(tps, timeout=30)}
    finally:
        client.close()


def total_lag(settings: Settings, role: str) -> int:
    client = _group_client(settings, role)
    try:
        lag = 0
        for tp in client.committed([TopicPartition(settings.topics[role], p)
                                    for p in range(settings.topic_partitions)], timeout=30):
            low, high = client.get_watermark_offsets(tp, timeout=30)
            lag += high - max(tp.offset, low)
        return lag
    finally:
        client.close()


def reset_offsets(settings: Settings, role: str) -> None:
    client = _group_client(settings, role)
    try:
        client.commit(offsets=[TopicPartition(settings.topics[role], p, 0) for p in range(settings.topic_partitions)],
                      asynchronous=False)
    finally:
        client.close()


def dlq_records(settings: Settings, role: str):
    return read_topic(settings, dlq_topic(settings.topics[role]))


# -- inventory ----------------------------------------------------------------------------------------


def test_reserves_while_stock_covers_then_backorders_with_exact_stock(settings, engine):
    seed_stock(engine, [("A", "main", 10), ("B", "north", 5), ("B", "main", 1)])
    # One order: one partition, so the offset order below is the order of allocation.
    produce(settings, settings.inventory_topic, [
        inv("e1", "o1", "A", 4),             # reserved: 6 left
        inv("e2", "o1", "A", 5),             # reserved: 1 left
        inv("e3", "o1", "A", 2),             # backordered: only 1 left
        inv("e4", "o1", "A", 1),             # reserved: 0 left
        inv("e5", "o1", "B", 6, "north"),    # backordered
        inv("e6", "o1", "B", 5, "north"),    # reserved
        inv("e7", "o1", "B", "1"),           # warehouse null -> main: reserved
    ])
    stats = drain(settings, "inventory")

    assert (stats.applied, stats.dead_lettered, stats.deduplicated) == (7, 0, 0)
    assert reservations(engine) == {
        "e1": ("reserved", "A", "main", 4, False), "e2": ("reserved", "A", "main", 5, False),
        "e3": ("backordered", "A", "main", 2, False), "e4": ("reserved", "A", "main", 1, False),
        "e5": ("backordered", "B", "north", 6, False), "e6": ("reserved", "B", "north", 5, False),
        "e7": ("reserved", "B", "main", 1, False),
    }
    assert stock(engine) == {("A", "main"): (10, 10), ("B", "north"): (5, 5), ("B", "main"): (1, 1)}
    assert set(ledger(engine, settings.inventory_group).values()) == {("applied", None)}
    assert total_lag(settings, "inventory") == 0


def _allow_large_messages(settings: Settings, topics: list[str], size: int) -> None:
    admin = admin_client(settings)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("max.message.bytes", str(size), incremental_operation=AlterConfigOpType.SET)]) for t in topics]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


@pytest.mark.fault  # also part of the fault suite (issue 8)
def test_poison_pills_go_to_the_dlq_with_headers_and_change_nothing(settings, engine):
    topic = settings.inventory_topic
    _allow_large_messages(settings, [topic, dlq_topic(topic)], 4 * 1024 * 1024)
    seed_stock(engine, [("A", "main", 10)])
    big = orjson.dumps({**inv("p-big", "o9", "A", 1), "padding": "x" * (2 * 1024 * 1024)})
    pills = {
        # ledger key -> (key, value, headers, expected error class)
        "p-nohdr-empty": (b"o1", b"", None, "EmptyValue"),
        "p-malformed": (b"o2", b'{"event_id": "p-malformed", "sku": ', [("event_id", b"p-malformed")], "MalformedJson"),
        "p-array": (b"o3", b'["not", "an", "object"]', [("event_id", b"p-array")], "SchemaViolation"),
        "p-qty-text": (b"o4", orjson.dumps(inv("p-qty-text", "o4", "A", "three")), [("event_id", b"p-qty-text")],
                       "SchemaViolation"),
        "p-qty-zero": (b"o5", orjson.dumps(inv("p-qty-zero", "o5", "A", 0)), [("event_id", b"p-qty-zero")],
                       "SchemaViolation"),
        "p-no-sku": (b"o6", orjson.dumps({**inv("p-no-sku", "o6", "A", 1), "sku": None}), [("event_id", b"p-no-sku")],
                     "SchemaViolation"),
        "p-wrong-type": (b"o7", orjson.dumps({**inv("p-wrong-type", "o7", "A", 1), "type": "delivery"}),
                         [("event_id", b"p-wrong-type")], "SchemaViolation"),
        "p-unknown-sku": (b"o8", orjson.dumps(inv("p-unknown-sku", "o8", "NOPE", 1)), [("event_id", b"p-unknown-sku")],
                          "UnknownSku"),
        "p-other-warehouse": (b"o8", orjson.dumps(inv("p-other-warehouse", "o8", "A", 1, "south")),
                              [("event_id", b"p-other-warehouse")], "UnknownSku"),
        "p-big": (b"o9", big, [("event_id", b"p-big")], "ValueTooLarge"),
        # no header, but the JSON names its event_id
        "p-json-id": (b"o10", orjson.dumps(inv("p-json-id", "o10", "A", -1)), None, "SchemaViolation"),
    }
    produce_raw(settings, topic, [(k, v, h) for k, v, h, _ in pills.values()], **{"message.max.bytes": 4_000_000})
    produce(settings, topic, [inv("good", "o11", "A", 3)])

    stats = drain(settings, "inventory")

    assert (stats.applied, stats.dead_lettered) == (1, len(pills))
    assert reservations(engine) == {"good": ("reserved", "A", "main", 3, False)}
    assert stock(engine) == {("A", "main"): (10, 3)}
    assert total_lag(settings, "inventory") == 0

    records = dlq_records(settings, "inventory")
    source = {(r.partition, r.offset): r for r in read_topic(settings, topic)}
    empty = next(r for r in source.values() if not r.value)
    expected_keys = {k for k in pills if k != "p-nohdr-empty"} | {f"{topic}:{empty.partition}:{empty.offset}"}
    rows = ledger(engine, settings.inventory_group)
    assert {k for k, (o, _) in rows.items() if o == "dead_lettered"} == expected_keys
    assert rows["good"] == ("applied", None)

    assert len(records) == len(pills)
    by_class: dict[str, int] = {}
    for record in records:
        h = record.headers
        original = source[(int(h["x-original-partition"]), int(h["x-original-offset"]))]
        assert (record.key, record.value) == (original.key, original.value)
        assert h["x-original-topic"] == topic.encode()
        assert h["x-consumer-group"] == settings.inventory_group.encode()
        assert int(h["x-original-timestamp"]) > 0
        assert h["x-error-message"]
        assert h.get("event_id") == original.headers.get("event_id")
        ledger_key = (h["event_id"].decode() if "event_id" in h
                      else ("p-json-id" if original.value and b"p-json-id" in original.value
                            else f"{topic}:{original.partition}:{original.offset}"))
        assert h["x-error-class"].decode() == rows[ledger_key][1]
        by_class[h["x-error-class"].decode()] = by_class.get(h["x-error-class"].decode(), 0) + 1
    assert by_class == {"EmptyValue": 1, "MalformedJson": 1, "SchemaViolation": 6, "UnknownSku": 2, "ValueTooLarge": 1}


@pytest.mark.fault  # also part of the fault suite (issue 8)
def test_a_pill_too_large_for_the_dlq_topic_is_dead_lettered_truncated(settings, engine):
    topic = settings.inventory_topic
    _allow_large_messages(settings, [topic], 4 * 1024 * 1024)  # the DLQ keeps the broker's 1 MB limit
    value = b'{"event_id": "big", "pad": "' + b"y" * (2 * 1024 * 1024) + b'"}'
    produce_raw(settings, topic, [(b"o1", value, [("event_id", b"big")])], **{"message.max.bytes": 4_000_000})
    stats = drain(settings, "inventory")
    assert (stats.applied, stats.dead_lettered) == (0, 1)
    [record] = dlq_records(settings, "inventory")
    assert record.headers["x-error-class"] == b"ValueTooLarge"
    assert record.headers["x-value-truncated"] == b"true"
    assert int(record.headers["x-original-value-bytes"]) == len(value)
    assert value.startswith(record.value) and len(record.value) < 1_000_000
    assert ledger(engine, settings.inventory_group) == {"big": ("dead_lettered", "ValueTooLarge")}


def test_a_redelivered_event_is_a_counted_no_op(settings, engine):
    seed_stock(engine, [("A", "main", 100)])
    events = [inv(f"e{i}", f"o{i}", "A", 2) for i in range(10)]
    produce(settings, settings.inventory_topic, events + [events[3]])  # e3 twice, same partition
    stats = drain(settings, "inventory")
    assert (stats.applied, stats.deduplicated) == (10, 1)
    assert stock(engine)[("A", "main")] == (100, 20)
    assert counter(engine, settings.inventory_group) == 1

    # Reset the group to the beginning (it is empty after the drain) and consume it all again.
    reset_offsets(settings, "inventory")
    assert total_lag(settings, "inventory") == 11

    again = drain(settings, "inventory")
    assert (again.consumed, again.applied, again.deduplicated) == (11, 0, 11)
    assert stock(engine)[("A", "main")] == (100, 20)
    assert len(reservations(engine)) == 10
    assert counter(engine, settings.inventory_group) == 12
    assert total_lag(settings, "inventory") == 0


def test_drain_returns_once_the_group_is_caught_up(settings, engine):
    seed_stock(engine, [("A", "main", 1000)])
    produce(settings, settings.inventory_topic, [inv(f"e{i}", f"o{i}", "A", 1) for i in range(300)])
    first = drain(settings, "inventory")
    assert first.applied == 300
    assert total_lag(settings, "inventory") == 0
    second = drain(settings, "inventory")  # nothing new: returns at once
    assert (second.consumed, second.applied) == (0, 0)


# -- delivery ------------------------------------------------------------------------------------------


def test_delivery_lifecycle_with_history_and_one_notification_per_change(settings, engine):
    produce(settings, settings.delivery_topic, [
        dlv("d1", "o1", None),  # null status means requested
        dlv("d2", "o1", "dispatched"),
        dlv("d3", "o1", "delivered"),
        dlv("d4", "o2", "requested", postal_code="101 99", country="de"),  # same area DE101
    ])
    stats = drain(settings, "delivery")

    assert (stats.applied, stats.dead_lettered) == (4, 0)
    states = deliveries(engine)
    assert (states["o1"][:2], states["o2"][:2]) == (("delivered", DAY1), ("scheduled", DAY1))
    assert sorted([states["o1"][2], states["o2"][2]]) == [0, 1]  # partitions race for the first slot
    assert history(engine, "o1") == [(None, "requested"), ("requested", "scheduled"),
                                     ("scheduled", "dispatched"), ("dispatched", "delivered")]
    sent = notifications(engine, "o1")
    assert [(n.to_status, n.recipient, n.message_id, n.state) for n in sent] == [
        (status, "ann@example.com", f"<o1.{status}@orderstream>", "queued")
        for status in ("requested", "scheduled", "dispatched", "delivered")]
    scheduled = sent[1]
    window = "08:00 and 11:00" if states["o1"][2] == 0 else "11:00 and 14:00"
    assert "2026-11-26" in scheduled.subject and window in scheduled.body
    with Session(engine) as s:
        assert s.scalar(select(DeliveryCapacity.booked).where(DeliveryCapacity.postal_area == "DE101",
                                                              DeliveryCapacity.day == DAY1)) == 2


def test_one_request_more_than_the_capacity_goes_to_the_next_day(settings, engine):
    settings = settings.model_copy(update={"daily_capacity_per_area": 3, "slots_per_day": 2})
    codes = ["SW1A 1AA", "sw1a 2bb", "S W1 9ZZ", "SW19 4EE"]  # all in area GBSW1
    produce(settings, settings.delivery_topic, [
        dlv(f"d{i}", f"o{i}", postal_code=code, country="GB") for i, code in enumerate(codes)])
    drain(settings, "delivery")

    got = sorted((day, slot) for _status, day, slot in deliveries(engine).values())
    assert got == [(DAY1, 0), (DAY1, 0), (DAY1, 1), (DAY1 + dt.timedelta(days=1), 0)]
    assert {status for status, _, _ in deliveries(engine).values()} == {"scheduled"}
    with Session(engine) as s:
        booked = dict(s.execute(select(DeliveryCapacity.day, DeliveryCapacity.booked)
                                .where(DeliveryCapacity.postal_area == "GBSW1", DeliveryCapacity.booked > 0)).all())
    assert booked == {DAY1: 3, DAY1 + dt.timedelta(days=1): 1}


def test_a_full_horizon_leaves_the_delivery_requested(settings, engine):
    settings = settings.model_copy(update={"daily_capacity_per_area": 1, "scheduling_horizon_days": 2})
    produce(settings, settings.delivery_topic, [dlv(f"d{i}", f"o{i}") for i in range(3)])
    stats = drain(settings, "delivery")

    assert stats.applied == 3
    states = deliveries(engine)
    assert sorted(states.values(), key=str) == sorted(
        [("scheduled", DAY1, 0), ("scheduled", DAY1 + dt.timedelta(days=1), 0), ("requested", None, None)], key=str)
    waiting = next(o for o, (status, _, _) in states.items() if status == "requested")
    assert history(engine, waiting) == [(None, "requested")]
    assert [n.to_status for n in notifications(engine, waiting)] == ["requested"]
    assert len(notifications(engine)) == 5  # 3 requested + 2 scheduled


@pytest.mark.fault  # also part of the fault suite (issue 8)
def test_illegal_transitions_are_recorded_and_dead_lettered(settings, engine):
    produce(settings, settings.delivery_topic, [
        dlv("x1", "o1", "dispatched"),                       # no delivery
        dlv("a1", "o2"), dlv("x2", "o2", "delivered"),       # delivered straight from scheduled
        dlv("x3", "o2", "requested"),                        # a delivery exists
        dlv("a2", "o3"), dlv("a3", "o3", "cancelled"), dlv("x4", "o3", "dispatched"),  # after cancelled
        dlv("a4", "o4"), dlv("a5", "o4", "dispatched"), dlv("a6", "o4", "delivered"),
        dlv("x5", "o4", "cancelled"),                        # after delivered
        dlv("x6", "o5", "scheduled"),                        # not an incoming status: schema
    ])
    stats = drain(settings, "delivery")

    assert (stats.applied, stats.dead_lettered) == (6, 6)
    rows = ledger(engine, settings.delivery_group)
    assert {k: v for k, v in rows.items() if k.startswith("x")} == {
        "x1": ("dead_lettered", "IllegalTransition"), "x2": ("dead_lettered", "IllegalTransition"),
        "x3": ("dead_lettered", "IllegalTransition"), "x4": ("dead_lettered", "IllegalTransition"),
        "x5": ("dead_lettered", "IllegalTransition"), "x6": ("dead_lettered", "SchemaViolation")}
    assert {s for s, _, _ in [deliveries(engine)[o] for o in ("o2", "o3", "o4")]} == {"scheduled", "cancelled",
                                                                                       "delivered"}
    assert deliveries(engine)["o2"][0] == "scheduled" and "o1" not in deliveries(engine)
    assert history(engine, "o2") == [(None, "requested"), ("requested", "scheduled")]
    assert len(notifications(engine)) == 2 + 3 + 4  # o2, o3, o4 changes only
    records = dlq_records(settings, "delivery")
    assert sorted(r.headers["event_id"].decode() for r in records) == ["x1", "x2", "x3", "x4", "x5", "x6"]
    x2 = next(r for r in records if r.headers["event_id"] == b"x2")
    assert x2.headers["x-error-class"] == b"IllegalTransition"
    assert b"scheduled" in x2.headers["x-error-message"]
    assert x2.headers["x-consumer-group"] == settings.delivery_group.encode()


def test_cancellation_releases_reservations_and_a_late_reservation_takes_no_stock(settings, engine):
    seed_stock(engine, [("A", "main", 10), ("B", "main", 1)])
    produce(settings, settings.inventory_topic, [
        inv("i1", "o1", "A", 3), inv("i2", "o1", "B", 5),  # o1: reserved A 3, backordered B 5
        inv("i3", "o2", "A", 4),                           # o2 untouched by o1's cancellation
    ])
    drain(settings, "inventory")
    assert stock(engine) == {("A", "main"): (10, 7), ("B", "main"): (1, 0)}

    produce(settings, settings.delivery_topic, [dlv("d1", "o1"), dlv("d2", "o1", "cancelled"),
                                                dlv("d3", "o1", "cancelled")])  # second cancel: illegal
    stats = drain(settings, "delivery")
    assert (stats.applied, stats.dead_lettered) == (2, 1)
    assert stock(engine) == {("A", "main"): (10, 4), ("B", "main"): (1, 0)}
    assert reservations(engine) == {"i1": ("reserved", "A", "main", 3, True),
                                    "i2": ("backordered", "B", "main", 5, False),
                                    "i3": ("reserved", "A", "main", 4, False)}

    produce(settings, settings.inventory_topic, [inv("i4", "o1", "A", 2)])  # after the cancellation
    late = drain(settings, "inventory")
    assert late.applied == 1
    assert reservations(engine)["i4"] == ("reserved", "A", "main", 2, True)
    assert stock(engine) == {("A", "main"): (10, 4), ("B", "main"): (1, 0)}


def test_metrics_port_serves_prometheus_text_while_running(settings, engine):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = threading.Event()
    result: list[ConsumerStats] = []
    worker = threading.Thread(target=lambda: result.append(
        run_consumer(settings, "inventory", drain=False, metrics_port=port, stop_event=stop)))
    worker.start()
    try:
        def scrape() -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    return response.read()
            except OSError:
                return None
        assert b"# TYPE" in wait_until(scrape, 60, "the metrics endpoint answers")
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive() and result and result[0].consumed == 0


def test_run_replicas_drains_with_separate_processes(settings, engine):
    seed_stock(engine, [("A", "main", 10_000)])
    produce(settings, settings.inventory_topic, [inv(f"e{i}", f"o{i}", "A", 1) for i in range(3000)])
    stats = run_replicas(settings, "inventory", 2, drain=True, metrics_port=None)
    assert len(stats) == 2 and sum(s.applied for s in stats) == 3000
    assert stock(engine)[("A", "main")] == (10_000, 3000)
    assert total_lag(settings, "inventory") == 0


# -- processes: concurrency, signals, rebalances --------------------------------------------------


def _group_members(settings: Settings, group: str) -> int:
    admin = admin_client(settings)
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sum(1 for m in description.members if m.assignment and m.assignment.topic_partitions)


def _stats_from(results, n: int, timeout: float = 60) -> list[dict]:
    collected = []
    deadline = time.monotonic() + timeout
    while len(collected) < n and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            collected.append(results.get(timeout=0.5))
    return collected


def test_two_consumers_on_a_hot_sku_never_oversell(settings, engine):
    settings = settings.model_copy(update={"consume_batch_size": 50})
    seed_stock(engine, [("HOT", "main", 500)])
    ctx = multiprocessing.get_context("spawn")
    results, stop = ctx.Queue(), ctx.Event()
    procs = [spawn_consumer(settings, "inventory", drain=False, stop_event=stop, results=results) for _ in range(2)]
    try:
        wait_until(lambda: _group_members(settings, settings.inventory_group) == 2, 60,
                   "both consumers own partitions")
        produce(settings, settings.inventory_topic, [inv(f"e{i}", f"o{i}", "HOT", 1) for i in range(1500)])
        wait_until(lambda: ledger_count(engine, settings.inventory_group) == 1500, 120, "all 1500 events applied")
    finally:
        stop.set()
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    applied = [s["applied"] for s in _stats_from(results, 2)]
    assert len(applied) == 2 and min(applied) > 0 and sum(applied) == 1500
    outcomes = [o for o, *_ in reservations(engine).values()]
    assert (outcomes.count("reserved"), outcomes.count("backordered")) == (500, 1000)
    assert stock(engine) == {("HOT", "main"): (500, 500)}


def _committed_total(settings: Settings, role: str) -> int:
    return sum(offset for offset in committed_offsets(settings, role).values() if offset > 0)


def test_sigterm_mid_stream_commits_what_is_done_and_a_restart_finishes_exactly(settings, engine):
    settings = settings.model_copy(update={"consume_batch_size": 100})
    seed_stock(engine, [("A", "main", 100_000)])
    events = [inv(f"e{i}", f"o{i % 97}", "A", 1 + i % 3) for i in range(6000)]
    produce(settings, settings.inventory_topic, events[:1000])

    def stream_the_rest() -> None:  # the stream goes on while the consumer stops
        for start in range(1000, len(events), 250):
            produce(settings, settings.inventory_topic, events[start:start + 250])
            time.sleep(0.1)  # pacing

    feeder = threading.Thread(target=stream_the_rest)
    proc = spawn_consumer(settings, "inventory", drain=False)
    try:
        wait_until(lambda: ledger_count(engine, settings.inventory_group) >= 500, 120, "consumer under way")
        feeder.start()
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
        if feeder.ident is not None:
            feeder.join(120)
    assert proc.exitcode == 0
    done = ledger_count(engine, settings.inventory_group)
    assert 500 <= done < 6000, "stopped mid-stream"
    assert _committed_total(settings, "inventory") == done  # everything applied was committed, nothing more

    stats = drain(settings, "inventory")
    assert stats.applied == 6000 - done and stats.deduplicated == 0
    assert set(ledger(engine, settings.inventory_group)) == {e["event_id"] for e in events}
    assert stock(engine)[("A", "main")] == (100_000, sum(int(e["quantity"]) for e in events))


def test_members_joining_and_leaving_mid_stream_apply_everything_once(settings, engine):
    settings = settings.model_copy(update={"consume_batch_size": 100})
    seed_stock(engine, [("A", "main", 5_000), ("B", "main", 100_000)])
    events = [inv(f"e{i}", f"o{i % 211}", "A" if i % 2 else "B", 1 + i % 4) for i in range(8000)]
    changes_done = threading.Event()

    def stream() -> None:  # paced; the last 30 % only after the membership changes
        p = producer(settings)
        for start in range(0, len(events), 200):
            if start >= len(events) * 7 // 10:
                changes_done.wait(300)
            produce(settings, settings.inventory_topic, events[start:start + 200], p)
            p.flush(30)
            time.sleep(0.2)  # pacing

    feeder = threading.Thread(target=stream)
    members = [spawn_consumer(settings, "inventory", drain=False)]
    feeder.start()
    try:
        wait_until(lambda: ledger_count(engine, settings.inventory_group) > 0, 120, "first member under way")
        members.append(spawn_consumer(settings, "inventory", drain=False))
        wait_until(lambda: _group_members(settings, settings.inventory_group) == 2, 60, "second member joined")
        members.append(spawn_consumer(settings, "inventory", drain=False))
        wait_until(lambda: _group_members(settings, settings.inventory_group) == 3, 60, "third member joined")
        for leaving in members[:2]:  # the first two leave mid-stream; their partitions move
            os.kill(leaving.pid, signal.SIGTERM)
            leaving.join(60)
            assert leaving.exitcode == 0
        changes_done.set()
        feeder.join(300)
        wait_until(lambda: ledger_count(engine, settings.inventory_group) == len(events), 120,
                   "the remaining member applies everything")
        os.kill(members[2].pid, signal.SIGTERM)
        members[2].join(60)
        assert members[2].exitcode == 0
    finally:
        changes_done.set()
        feeder.join(300)
        for p in members:
            if p.is_alive():
                p.kill()
    assert total_lag(settings, "inventory") == 0
    rows = reservations(engine)
    assert set(ledger(engine, settings.inventory_group)) == set(rows) == {e["event_id"] for e in events}
    for sku, on_hand in (("A", 5_000), ("B", 100_000)):
        taken = sum(q for o, s, _w, q, _r in rows.values() if s == sku and o == "reserved")
        assert stock(engine)[(sku, "main")] == (on_hand, taken)
    assert stock(engine)[("A", "main")][1] <= 5_000


# -- database outage ---------------------------------------------------------------------------------


class FlakyDatabase:
    """Wraps a handler: its first `failures` applies do their writes, then the database "fails"."""

    def __init__(self, handler, failures: int) -> None:
        self.handler, self.failures, self.calls = handler, failures, 0
        self.role = handler.role

    def parse(self, value):
        return self.handler.parse(value)

    def apply(self, session, events, now):
        rejected = self.handler.apply(session, events, now)
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection unexpectedly"))
        return rejected


def test_a_database_outage_rolls_back_and_retries_the_same_batch(settings, engine):
    seed_stock(engine, [("A", "main", 10)])
    events = [inv(f"e{i}", "o1", "A", 3) for i in range(5)] + [inv("bad", "o1", "NOPE", 1)]
    produce(settings, settings.inventory_topic, events)
    from orderstream.consumers import runner
    runner.BACKOFF_INITIAL_S, saved = 0.01, runner.BACKOFF_INITIAL_S
    try:
        stats = ConsumerStats(role="inventory", group=settings.inventory_group)
        consumer = BatchConsumer(settings, engine, FlakyDatabase(make_handler(settings, "inventory"), 3),
                                 drain=True, stop=StopSignal(), stats=stats)
        consumer.run()
    finally:
        runner.BACKOFF_INITIAL_S = saved
    assert stats.retries == 3
    assert (stats.applied, stats.dead_lettered) == (5, 1)
    assert reservations(engine) == {
        **{f"e{i}": ("reserved", "A", "main", 3, False) for i in range(3)},
        "e3": ("backordered", "A", "main", 3, False), "e4": ("backordered", "A", "main", 3, False)}
    assert stock(engine) == {("A", "main"): (10, 9)}
    assert counter(engine, settings.inventory_group) == 0  # retries are not redeliveries
    assert total_lag(settings, "inventory") == 0
    # The dead letter may be sent once per attempt (before each rollback); the ledger has it once.
    assert ledger(engine, settings.inventory_group)["bad"] == ("dead_lettered", "UnknownSku")
    assert {r.headers["event_id"] for r in dlq_records(settings, "inventory")} == {b"bad"}
