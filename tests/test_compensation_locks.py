"""A cancellation and a reservation of the same order, in concurrent batches, never miss each other;
batches of unrelated orders do not wait for each other.

The two handlers are applied in two open transactions, as the two consumers would: whichever
goes first, the order ends cancelled with nothing held for it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import orjson
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from orderstream.consumers.delivery import DeliveryHandler
from orderstream.consumers.inventory import InventoryHandler
from orderstream.consumers.messages import Envelope
from orderstream.db.bulk import stripes_of
from orderstream.db.models import Reservation, Stock
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


def _inventory(event_id: str, order_id: str, sku: str, quantity: int) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": "2026-11-25T10:00:00Z",
            "sku": sku, "quantity": str(quantity), "warehouse_id": None, "customer_email": None,
            "address_line": None, "city": None, "postal_code": None, "country": None, "status": None}


def _delivery(event_id: str, order_id: str, status: str) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "delivery", "created_at": "2026-11-25T10:00:00Z",
            "sku": None, "quantity": None, "warehouse_id": None, **ADDRESS, "status": status}


Step = Callable[[Session], None]


class Consumers:
    """The two handlers, each applying one event in the caller's transaction."""

    def __init__(self, settings) -> None:
        self.inventory, self.delivery = InventoryHandler(settings), DeliveryHandler(settings)

    @staticmethod
    def _apply(handler, session: Session, event: dict) -> None:
        value = orjson.dumps(event)
        envelope = Envelope("t", 0, 0, None, value, None, 0, event["event_id"], handler.parse(value))
        assert handler.apply(session, [envelope], NOW) == []

    def reserve(self, event_id: str, order_id: str, sku: str, quantity: int) -> Step:
        return lambda session: self._apply(self.inventory, session, _inventory(event_id, order_id, sku, quantity))

    def deliver(self, event_id: str, order_id: str, status: str) -> Step:
        return lambda session: self._apply(self.delivery, session, _delivery(event_id, order_id, status))


def _commit(engine, *steps: Step) -> None:
    with Session(engine) as session, session.begin():
        for step in steps:
            step(session)


class InThread:
    """A step in its own transaction in a thread, whose failure reaches the test."""

    def __init__(self, engine, step: Step) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(engine, step), name="second-batch")
        self._thread.start()

    def _run(self, engine, step: Step) -> None:
        try:
            _commit(engine, step)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the second batch never finished"
        if self.error is not None:
            raise self.error


def _lock_waits(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar() or 0)


def _stock(engine) -> dict[str, tuple[int, int]]:
    with Session(engine) as session:
        return {row.sku: (row.on_hand, row.reserved) for row in session.scalars(select(Stock))}


def _released(engine) -> dict[str, bool]:
    with Session(engine) as session:
        return {row.event_id: row.released_at is not None for row in session.scalars(select(Reservation))}


def _seed(engine, consumers: Consumers, *orders: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Stock.__table__), [{"sku": sku, "warehouse_id": "main", "on_hand": 10, "reserved": 0}
                                               for sku in ("A", "B")])
    _commit(engine, *(consumers.deliver(f"requested-{o}", o, "requested") for o in orders))


@pytest.mark.parametrize("first", ["reservation", "cancellation"])
def test_a_reservation_and_a_cancellation_of_one_order_in_concurrent_batches_never_miss_each_other(
    settings, engine, first
):
    consumers = Consumers(settings)
    _seed(engine, consumers, "o1")
    reserve, cancel = consumers.reserve("i1", "o1", "A", 3), consumers.deliver("c1", "o1", "cancelled")
    held_step, second_step = (reserve, cancel) if first == "reservation" else (cancel, reserve)
    with Session(engine) as held:
        held.begin()
        held_step(held)  # applied, not committed yet
        second = InThread(engine, second_step)
        if engine.dialect.name == "postgresql":  # SQLite serializes the two transactions at BEGIN
            wait_until(lambda: _lock_waits(engine) > 0, 30, "the second batch waits for the first to commit")
            assert not second.done.is_set()
        held.commit()
    second.join()
    assert _stock(engine)["A"] == (10, 0)  # nothing held for a cancelled order
    assert _released(engine) == {"i1": True}


def test_batches_of_unrelated_orders_do_not_wait_for_each_other(settings, engine):
    consumers = Consumers(settings)
    o1, o2 = "o1", next(o for o in (f"o{i}" for i in range(2, 100)) if stripes_of([o]) != stripes_of(["o1"]))
    _seed(engine, consumers, o1, o2)
    _commit(engine, consumers.reserve("i2", o2, "B", 4))
    with Session(engine) as held:
        held.begin()
        consumers.reserve("i1", o1, "A", 3)(held)  # an open inventory batch of another order
        if engine.dialect.name == "postgresql":
            second = InThread(engine, consumers.deliver("c2", o2, "cancelled"))
            assert second.done.wait(30), "the cancellation of an unrelated order waited for the inventory batch"
            second.join()
        held.commit()
    if engine.dialect.name == "sqlite":  # one writer at a time: nothing to overlap
        _commit(engine, consumers.deliver("c2", o2, "cancelled"))
    assert _stock(engine) == {"A": (10, 3), "B": (10, 0)}
    assert _released(engine) == {"i1": False, "i2": True}
