"""The produce flow on a real broker and both databases."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import orjson
import pandas as pd
import pytest
from sqlalchemy import func, select

from flows.produce import produce_orders
from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent, ProducerBatch, Quarantine
from orderstream.errors import BrokerUnavailable
from orderstream.producer.extract import read_pending
from orderstream.runtime import settings_in_environment
from orderstream.source.repository import insert_events
from tests.helpers import orderstream_env, wait_until
from tests.topics import read_topic

pytestmark = pytest.mark.integration

NOW = "2026-11-25T10:00:00+00:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


def inventory(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": NOW,
            "sku": "SKU-1", "quantity": "2", **over}


def delivery(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "delivery", "created_at": NOW,
            "status": "requested", **ADDRESS, **over}


def load(engine, rows: list[dict]) -> None:
    with session_factory(engine).begin() as session:
        insert_events(session, pd.DataFrame.from_records(rows))


def outcomes(engine) -> dict[str, str | None]:
    with session_factory(engine)() as session:
        return dict(session.execute(select(OrderEvent.event_id, OrderEvent.outcome)).all())


def test_routes_each_type_to_its_topic_keyed_with_header_and_extras(settings, engine):
    load(engine, [
        inventory("i1", "o1", gift_wrap="yes"), delivery("d1", "o1"), inventory("i2", "o2"),
        {"event_id": "p1", "order_id": "o1", "type": "payment", "created_at": NOW},
    ])
    report = produce_orders()
    assert (report.counts.produced_inventory, report.counts.produced_delivery, report.counts.skipped_other) == (2, 1, 1)
    inv = read_topic(settings, settings.inventory_topic)
    dlv = read_topic(settings, settings.delivery_topic)
    assert sorted(r.headers["event_id"] for r in inv) == [b"i1", b"i2"]
    assert [r.headers["event_id"] for r in dlv] == [b"d1"]
    by_id = {r.json["event_id"]: r for r in inv + dlv}
    assert all(r.json["type"] == "inventory" for r in inv)
    assert by_id["i1"].key == b"o1" and by_id["i2"].key == b"o2"
    assert by_id["i1"].json["gift_wrap"] == "yes"  # extra column kept
    assert by_id["d1"].json["postal_code"] == "10115"
    assert outcomes(engine) == {"i1": "produced", "d1": "produced", "i2": "produced", "p1": "skipped"}


def test_invalid_rows_are_quarantined_with_reasons_and_never_produced(settings, engine):
    bad = [
        inventory("q-qty", quantity="abc"), inventory("q-zero", quantity="0"), inventory("q-sku", sku=None),
        delivery("q-mail", customer_email="nope"), delivery("q-country", country="Germany"),
        {**inventory("q-type"), "type": "Inventory"}, inventory("q-time", created_at="yesterday"),
        inventory("q-two", quantity="10001", sku=None),
    ]
    load(engine, bad + [inventory("ok-1")])
    report = produce_orders()
    assert report.counts.quarantined == len(bad)
    assert report.counts.produced_inventory == 1
    with session_factory(engine)() as session:
        reasons = {q.event_id: orjson.loads(q.reasons) for q in session.scalars(select(Quarantine))}
    assert set(reasons) == {row["event_id"] for row in bad}
    assert any("quantity" in r for r in reasons["q-qty"])
    assert any("sku" in r for r in reasons["q-sku"])
    assert any("email" in r for r in reasons["q-mail"])
    assert any("country" in r for r in reasons["q-country"])
    assert any("type" in r for r in reasons["q-type"])
    assert any("created_at" in r for r in reasons["q-time"])
    assert len(reasons["q-two"]) == 2
    assert [r.headers["event_id"] for r in read_topic(settings, settings.inventory_topic)] == [b"ok-1"]


def test_an_entirely_bad_batch_is_a_successful_run(settings, engine):
    load(engine, [inventory(f"bad-{i}", quantity="-1") for i in range(5)])
    report = produce_orders()
    assert (report.counts.quarantined, report.counts.produced_inventory) == (5, 0)


def test_second_pass_sends_nothing_new(settings, engine):
    load(engine, [inventory(f"i{i}", f"o{i}") for i in range(50)])
    produce_orders()
    again = produce_orders()
    assert again.batches == 0
    assert len(read_topic(settings, settings.inventory_topic)) == 50


def test_broker_down_is_a_clear_error_and_moves_no_mark(settings, engine):
    load(engine, [inventory("i1")])
    dead = settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    with pytest.raises(BrokerUnavailable, match="did not answer"):
        with settings_in_environment(dead):
            produce_orders()
    assert outcomes(engine) == {"i1": None}


@pytest.mark.fault  # also part of the fault suite (issue 8)
def test_late_commits_are_never_skipped(settings, engine):
    """8 writers hold their transactions open 0-0.2 s while passes run; every row is produced."""
    sessions = session_factory(engine)
    written: list[str] = []

    def writer(n: int) -> None:
        rng = random.Random(n)
        for i in range(10):
            with sessions.begin() as session:
                event_id = f"w{n}-{i}"
                insert_events(session, pd.DataFrame.from_records([inventory(event_id, f"o{n}")]))
                time.sleep(rng.uniform(0, 0.2))  # the late commit being simulated
            written.append(event_id)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in writers:
        t.start()
    passes = 0
    while any(t.is_alive() for t in writers):
        produce_orders(chunk_size=7)
        passes += 1
    produce_orders()
    produced = {r.headers["event_id"].decode() for r in read_topic(settings, settings.inventory_topic)}
    with session_factory(engine)() as session:
        batches = session.scalar(select(func.count()).select_from(ProducerBatch))
    assert batches > 1 and passes >= 1  # extraction really interleaved with the writers
    assert produced == set(written) and len(written) == 80


def test_kill_9_mid_batch_loses_no_event(settings, engine):
    """Kill the producer at random moments, repeatedly; a final pass leaves nothing unproduced."""
    load(engine, [inventory(f"k{i}", f"o{i % 97}") for i in range(10_000)])
    settings.home.mkdir(parents=True, exist_ok=True)
    env = orderstream_env(settings.model_copy(update={"produce_chunk_size": 1000}))
    rng = random.Random(3)

    def produced_rows() -> int:
        with session_factory(engine)() as session:
            return session.scalar(select(func.count()).where(OrderEvent.outcome == "produced"))

    kills = 0
    while kills < 3 and produced_rows() < 10_000:
        before = produced_rows()
        log = settings.home / f"produce-{kills}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "orderstream", "produce"], env=env, stdout=out, stderr=out)
        wait_until(lambda: produced_rows() > before or proc.poll() is not None, 120,
                   f"the producer to commit a batch; its output: {log}")
        assert proc.poll() is None or proc.returncode == 0, log.read_text()[-2000:]
        time.sleep(rng.uniform(0, 0.4))  # a random instant inside a later batch
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    assert kills >= 2, "the producer finished before it could be killed mid-pass"
    produce_orders()
    produced = {r.headers["event_id"].decode() for r in read_topic(settings, settings.inventory_topic)}
    assert produced == {f"k{i}" for i in range(10_000)}
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).where(OrderEvent.outcome.is_(None))) == 0


def test_a_message_the_broker_refuses_leaves_only_its_row_pending(settings, engine):
    """Acknowledgements are tied to rows by message number, so one failed message does not hold
    back the rest of its batch (the broker refuses a value over the topic's max.message.bytes)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    from orderstream.db.engine import session_factory as sessions_of
    from orderstream.kafka import clients

    admin = clients.admin_client(settings)
    resource = ConfigResource(ResourceType.TOPIC, settings.inventory_topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "20000", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    load(engine, [inventory("i1", "o1"), inventory("big", "o2", note="x" * 60_000), inventory("i3", "o3"),
                  delivery("d1", "o1")])
    with settings_in_environment(settings):
        # One message per request, so that the refusal is that message's alone.
        from orderstream.kafka.producer import OrderProducer
        from orderstream.producer.pipeline import finish_batch, send_batch

        with sessions_of(engine)() as session:
            frame = read_pending(session, 0, 100)
        with OrderProducer(settings, **{"linger.ms": 0, "batch.num.messages": 1, "compression.type": "none"}) as producer:
            counts, _ = finish_batch(send_batch(frame, settings, producer), settings, producer, sessions_of(engine))
    assert (counts.produced_inventory, counts.produced_delivery, counts.unacknowledged) == (2, 1, 1)
    assert outcomes(engine) == {"i1": "produced", "big": None, "i3": "produced", "d1": "produced"}
    assert sorted(m.headers["event_id"].decode() for m in read_topic(settings, settings.inventory_topic)) == ["i1", "i3"]
