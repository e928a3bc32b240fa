"""The continuous producer wakes on new source rows: PostgreSQL notifies it (migration 0003), SQLite is polled."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from sqlalchemy import update

from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent
from orderstream.lifecycle import StopSignal
from orderstream.producer.extract import PendingRows
from orderstream.source.repository import insert_events
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

NEVER = 3600.0  # a poll interval no test waits out: only a notification or the stop ends a wait


def insert(engine, event_id: str) -> None:
    row = {"event_id": event_id, "order_id": "o1", "type": "inventory", "created_at": "2026-11-25T10:00:00Z",
           "sku": "SKU-1", "quantity": "2"}
    with session_factory(engine).begin() as session:
        insert_events(session, pd.DataFrame.from_records([row]))


def waiting(pending: PendingRows, stop: StopSignal) -> threading.Thread:
    thread = threading.Thread(target=pending.wait, args=(stop,), daemon=True)
    thread.start()
    return thread


def test_a_commit_of_new_rows_or_a_release_wakes_the_producer_on_postgresql(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no notifications: the producer polls it")
    stop = StopSignal()
    with PendingRows(engine, poll_interval_s=NEVER, safety_poll_s=NEVER) as pending:
        assert pending.listening
        pending.clear()
        woken = waiting(pending, stop)
        insert(engine, "e1")
        wait_until(lambda: not woken.is_alive(), 30, "the insert to wake the waiting producer")

        # Rows committed while a pass runs (nobody waiting yet) are not missed: the next wait returns at once.
        with session_factory(engine).begin() as session:
            session.execute(update(OrderEvent).values(outcome="quarantined"))
        pending.clear()
        with session_factory(engine).begin() as session:  # revalidation releases a quarantined row
            session.execute(update(OrderEvent).values(outcome=None))
        woken = waiting(pending, stop)
        wait_until(lambda: not woken.is_alive(), 30, "the release to wake the producer")

        # A progress mark (outcome set) is no reason to look again: only a stop ends this wait.
        pending.clear()
        with session_factory(engine).begin() as session:
            session.execute(update(OrderEvent).values(outcome="produced"))
        idle = waiting(pending, stop)
        stop.set()
        wait_until(lambda: not idle.is_alive(), 30, "the stop request to end the wait")
    assert not pending.listening


def test_sqlite_is_polled(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL notifies the producer")
    with PendingRows(engine, poll_interval_s=0.01, safety_poll_s=NEVER) as pending:
        assert not pending.listening
        pending.clear()
        pending.wait(StopSignal())  # the poll interval, not NEVER: SQLite cannot notify


def test_the_continuous_producer_sends_rows_committed_while_it_waits(settings, engine):
    from flows.produce import produce_orders
    from orderstream.validation.checker import producer_checker
    from tests.topics import read_topic

    producer_checker(settings).rules()  # GX's worker is up before the producer's clock starts
    insert(engine, "before")
    produced: list = []
    thread = threading.Thread(target=lambda: produced.append(produce_orders(continuous=True, duration_s=15)), daemon=True)
    thread.start()

    def sent() -> set[str]:
        return {r.headers["event_id"].decode() for r in read_topic(settings, settings.inventory_topic)}

    wait_until(lambda: "before" in sent(), 60, "the row committed before the start to be produced")
    insert(engine, "while-waiting")
    wait_until(lambda: "while-waiting" in sent(), 60, "the row committed while the producer waited to be produced")
    thread.join(60)
    assert not thread.is_alive() and produced[0].counts.produced_inventory == 2


def test_a_stream_of_commits_is_gathered_into_one_pass_per_gather_interval(settings, engine):
    """`produce_gather_s`: an idle producer sends at once; while rows keep coming, passes start at
    most that often. Without it, each of the three commits below would be a batch of its own."""
    import time

    from sqlalchemy import func, select

    from flows.produce import produce_orders
    from orderstream.db.models import ProducerBatch
    from orderstream.runtime import settings_in_environment
    from orderstream.validation.checker import producer_checker
    from tests.topics import read_topic

    producer_checker(settings).rules()
    insert(engine, "first")
    produced: list = []
    with settings_in_environment(settings.model_copy(update={"produce_gather_s": 4.0})):
        thread = threading.Thread(target=lambda: produced.append(produce_orders(continuous=True, duration_s=15)),
                                  daemon=True)
        thread.start()

        def sent() -> set[str]:
            return {r.headers["event_id"].decode() for r in read_topic(settings, settings.inventory_topic)}

        wait_until(lambda: "first" in sent(), 60, "the row waiting at the start to be sent at once")
        for k in range(3):  # a stream: a commit every 0.2 s, well inside the 4 s gather interval
            insert(engine, f"next-{k}")
            time.sleep(0.2)
        wait_until(lambda: {"next-0", "next-1", "next-2"} <= sent(), 60, "the stream to be sent")
        thread.join(60)
    assert not thread.is_alive() and produced[0].counts.produced_inventory == 4
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(ProducerBatch)) == 2


def test_the_continuous_producer_reads_above_what_it_read_and_finds_late_rows_in_a_full_pass(settings, engine, db_url):
    """A continuous pass reads only rows above the highest id read so far (on PostgreSQL a read from
    the first id walks an index entry of every row produced since the last vacuum); a row committed
    late below that id is still sent, by the full pass that runs every `produce_safety_poll_s`."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.sql import Select

    from flows.produce import produce_orders
    from orderstream.runtime import settings_in_environment
    from orderstream.validation.checker import producer_checker
    from tests.topics import read_topic

    safety_poll_s, duration_s = 3.0, 14.0
    reads_from: list[int] = []  # the `id >` bound of every extract of the producer

    def record(conn, clause, multiparams, params, options) -> None:
        if isinstance(clause, Select) and "order_events.outcome IS NULL" in str(clause):
            reads_from.extend(v for k, v in clause.compile().params.items() if k.startswith("id_"))

    def sent() -> list[str]:
        return [r.headers["event_id"].decode() for r in read_topic(settings, settings.inventory_topic)]

    producer_checker(settings).rules()
    insert(engine, "first")
    produced: list = []
    event.listen(Engine, "before_execute", record)
    try:
        with settings_in_environment(settings.model_copy(update={"produce_safety_poll_s": safety_poll_s})):
            thread = threading.Thread(
                target=lambda: produced.append(produce_orders(continuous=True, duration_s=duration_s)), daemon=True
            )
            thread.start()
            wait_until(lambda: "first" in sent(), 60, "the first row to be sent")
            late = not db_url.startswith("sqlite")  # SQLite serialises writers: no row commits late there
            if late:  # a writer takes an id, then commits after a later row was sent
                taken, release = threading.Event(), threading.Event()

                def late_writer() -> None:
                    with session_factory(engine).begin() as session:
                        row = {"event_id": "late", "order_id": "o2", "type": "inventory",
                               "created_at": "2026-11-25T10:00:00Z", "sku": "SKU-1", "quantity": "1"}
                        insert_events(session, pd.DataFrame.from_records([row]))
                        taken.set()
                        release.wait(60)

                writer = threading.Thread(target=late_writer, daemon=True)
                writer.start()
                assert taken.wait(30)
            insert(engine, "after")
            wait_until(lambda: "after" in sent(), 60, "the row above the one read to be sent")
            if late:
                release.set()
                writer.join(30)
                wait_until(lambda: "late" in sent(), 2 * safety_poll_s + 30, "the late row to be sent by a full pass")
            thread.join(duration_s + 60)
    finally:
        event.remove(Engine, "before_execute", record)
    assert not thread.is_alive()
    expected = ["first", "after"] + (["late"] if late else [])
    assert sorted(sent()) == sorted(expected)  # each once
    assert produced[0].counts.produced_inventory == len(expected)
    full = reads_from.count(0)
    assert len(reads_from) > full, "every pass read from the first id"
    assert full <= duration_s / safety_poll_s + 2, f"{full} full passes in {duration_s} s"
