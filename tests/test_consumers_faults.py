"""Consumers under crashes and outages: kill -9 of consumers, a database that dies mid-stream."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.consumers import ConsumerStats, run_consumer, spawn_consumer
from orderstream.db.models import DeliveryCapacity, DeliveryHistory, Notification
from tests.helpers import wait_until
from tests.test_consumers import (
    committed_offsets,
    counter,
    deliveries,
    dlv,
    inv,
    ledger,
    ledger_count,
    produce,
    producer,
    reservations,
    seed_stock,
    stock,
    total_lag,
)

pytestmark = pytest.mark.fault

SKUS = [f"SKU-{i:02d}" for i in range(40)]


def _stream(settings, events: list[dict], chunk: int, pause_s: float, done: threading.Event) -> threading.Thread:
    def run() -> None:
        p = producer(settings)
        try:
            for start in range(0, len(events), chunk):
                produce(settings, settings.inventory_topic, events[start:start + chunk], p)
                p.flush(30)
                time.sleep(pause_s)  # pacing the stream, not waiting for anything
            assert p.flush(60) == 0
        finally:
            done.set()

    thread = threading.Thread(target=run, name="stream")
    thread.start()
    return thread


def _assert_each_event_took_effect_once(settings, engine, events: list[dict], on_hand: int) -> None:
    produced = {e["event_id"] for e in events}
    rows = ledger(engine, settings.inventory_group)
    assert len(rows) == len(produced) and set(rows) == produced
    assert {outcome for outcome, _ in rows.values()} == {"applied"}
    held = reservations(engine)
    assert set(held) == produced
    levels = stock(engine)
    for sku in SKUS:
        reserved = sum(q for o, s, _w, q, _r in held.values() if s == sku and o == "reserved")
        assert levels[(sku, "main")] == (on_hand, reserved), sku  # every reservation counted once
        left = on_hand - reserved
        # Stock only goes down here, so a backorder was right iff it still does not fit now.
        assert all(q > left for o, s, _w, q, _r in held.values() if s == sku and o == "backordered"), sku
    assert total_lag(settings, "inventory") == 0


def test_twenty_kill_9s_during_a_20k_stream_then_a_drain_apply_each_event_exactly_once(settings, engine):
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    settings = settings.model_copy(update={"consume_batch_size": 50})
    on_hand = 400
    seed_stock(engine, [(sku, "main", on_hand) for sku in SKUS])
    events = [inv(f"k{i}", f"o{rng.randrange(3000)}", rng.choice(SKUS), rng.randint(1, 4)) for i in range(20_000)]
    # The restarted consumer takes the killed one's place at once (static membership)
    # instead of waiting for the dead member's session to time out.
    member = {"group.instance.id": f"kill-test-{uuid.uuid4().hex[:8]}"}
    p = producer(settings)
    progress = []
    for cycle in range(20):
        # The stream goes on while consumers die: 1000 more events per cycle.
        produce(settings, settings.inventory_topic, events[cycle * 1000:(cycle + 1) * 1000], p)
        assert p.flush(30) == 0
        proc = spawn_consumer(settings, "inventory", drain=False, client_config=member)
        try:
            # A random point in the first half of this cycle's share of the stream, then a random
            # few milliseconds more: the kill lands inside a batch, in its transaction or between
            # it and the commit. (With up to 700 events and 50 ms, a fast SQLite consumer often
            # finished the cycle before the kill.)
            target = cycle * 1000 + rng.randrange(1, 500)
            wait_until(lambda: ledger_count(engine, settings.inventory_group) >= target, 120,
                       f"consumer {cycle} reaches event {target} (seed {seed})", interval=0.005)
            time.sleep(rng.uniform(0.0, 0.01))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
        assert proc.exitcode == -signal.SIGKILL
        progress.append(ledger_count(engine, settings.inventory_group))
    mid_stream = sum(1 for i, n in enumerate(progress) if n < (i + 1) * 1000)
    assert mid_stream >= 12, f"kills landed with work pending: {progress} (seed {seed})"

    stats = run_consumer(settings, "inventory", drain=True, metrics_port=None, client_config=member)
    assert stats.applied == len(events) - progress[-1]
    _assert_each_event_took_effect_once(settings, engine, events, on_hand)
    print(f"CONSUMER KILL -9 seed={seed} events={len(events)} kills=20 mid_stream={mid_stream} "
          f"deduplicated={counter(engine, settings.inventory_group)} dlq=0")


def test_kill_9s_of_the_delivery_consumer_leave_one_history_row_and_notification_per_change(settings, engine):
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    settings = settings.model_copy(update={"consume_batch_size": 40})
    orders = [f"o{i}" for i in range(1000)]
    final = {o: "cancelled" if i % 5 == 0 else "delivered" for i, o in enumerate(orders)}
    steps = [[dlv(f"{o}-req", o, postal_code=f"{10000 + rng.randrange(300)}") for o in orders],
             [dlv(f"{o}-2", o, "cancelled" if final[o] == "cancelled" else "dispatched") for o in orders],
             [dlv(f"{o}-3", o, "delivered") for o in orders if final[o] == "delivered"]]
    events = [e for step in steps for e in step]  # each order's events in order, orders interleaved
    member = {"group.instance.id": f"kill-test-{uuid.uuid4().hex[:8]}"}
    p = producer(settings)
    share = len(events) // 10
    for cycle in range(10):
        produce(settings, settings.delivery_topic, events[cycle * share:(cycle + 1) * share], p)
        assert p.flush(30) == 0
        proc = spawn_consumer(settings, "delivery", drain=False, client_config=member)
        try:
            target = cycle * share + rng.randrange(1, share * 2 // 3)
            wait_until(lambda: ledger_count(engine, settings.delivery_group) >= target, 120,
                       f"consumer {cycle} reaches event {target} (seed {seed})", interval=0.005)
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
    produce(settings, settings.delivery_topic, events[10 * share:], p)
    assert p.flush(30) == 0
    run_consumer(settings, "delivery", drain=True, metrics_port=None, client_config=member)

    rows = ledger(engine, settings.delivery_group)
    assert set(rows) == {e["event_id"] for e in events}
    assert {outcome for outcome, _ in rows.values()} == {"applied"}
    assert {o: status for o, (status, _, _) in deliveries(engine).items()} == final
    changes = {o: 4 if final[o] == "delivered" else 3 for o in orders}  # requested, scheduled, ...
    with Session(engine) as s:
        history = dict(s.execute(select(DeliveryHistory.order_id, func.count()).group_by(DeliveryHistory.order_id)).all())
        notes = dict(s.execute(select(Notification.order_id, func.count()).group_by(Notification.order_id)).all())
        booked = s.scalar(select(func.sum(DeliveryCapacity.booked)))
    assert history == changes and notes == changes
    assert booked == len(orders)  # one booking per delivery, none twice
    assert total_lag(settings, "delivery") == 0
    print(f"DELIVERY KILL -9 seed={seed} events={len(events)} kills=10 "
          f"deduplicated={counter(engine, settings.delivery_group)} dlq=0")


def test_postgres_crashing_mid_stream_loses_and_duplicates_nothing(settings, engine, request):
    if not settings.db_url.startswith("postgresql"):
        pytest.skip("a server crash is a PostgreSQL scenario; the SQLite path is covered by the outage test")
    server = request.getfixturevalue("postgres_server")
    settings = settings.model_copy(update={"consume_batch_size": 200})
    on_hand = 300
    seed_stock(engine, [(sku, "main", on_hand) for sku in SKUS])
    rng = random.Random(7)
    events = [inv(f"p{i}", f"o{rng.randrange(500)}", rng.choice(SKUS), rng.randint(1, 4)) for i in range(6000)]
    done = threading.Event()
    feeder = _stream(settings, events, chunk=300, pause_s=0.2, done=done)
    results = multiprocessing.get_context("spawn").Queue()
    proc = spawn_consumer(settings, "inventory", drain=False, results=results)
    try:
        wait_until(lambda: ledger_count(engine, settings.inventory_group) > 0, 120, "consumer under way")
        server.kill()  # mid-stream: the consumer's open transaction dies with it
        time.sleep(2)  # the commit of the last batch made durable before the crash is answered
        frozen = committed_offsets(settings, "inventory")
        time.sleep(3)  # the outage goes on, and so does the stream
        assert proc.is_alive(), "the consumer rides out the outage"
        assert committed_offsets(settings, "inventory") == frozen, "an offset was committed while the database was down"
        server.start()
        engine.dispose()
        wait_until(lambda: ledger_count(engine, settings.inventory_group) == len(events), 180,
                   "the consumer catches up after the outage")
        os.kill(proc.pid, signal.SIGTERM)
        stats = ConsumerStats.from_dict(results.get(timeout=60))
        proc.join(60)
        assert proc.exitcode == 0
        assert stats.retries >= 1, "the consumer never retried a batch during the outage"
    finally:
        server.start()
        done.wait(120)
        feeder.join(60)
        if proc.is_alive():
            proc.kill()
    _assert_each_event_took_effect_once(settings, engine, events, on_hand)
    print(f"POSTGRES CRASH events={len(events)} crashes=1 retries={stats.retries} "
          f"deduplicated={counter(engine, settings.inventory_group)} dlq=0")
