"""inventory_data_consumer: reserve stock for every inventory event, exactly once.

Outcomes of an event that takes effect (ledger outcome `applied`):

* `reserved`: `quantity` of `sku` at `warehouse_id` was available (on_hand - reserved >=
  quantity) and is now counted in `stock.reserved`.
* `backordered`: it was not available; stock is untouched.

Rejected events (ledger outcome `dead_lettered`, copied to `<topic>.dlq`, no other row
changes): an empty, oversized or non-JSON value, a payload that violates the topic's schema
(`orderstream.events.models.InventoryOrder`: e.g. a missing order_id or sku, quantity not
an integer in 1..10000, wrong types, another event type), and an unknown SKU (no stock row
for that sku at that warehouse).

Compensation (the rule the Confluent demo leaves out, its issue #436):

* A reservation is released when a `delivery` event with status `cancelled` is applied
  for the same `order_id`. The delivery consumer does it in its own transaction, see
  `release_reservations`: every `reserved` reservation of that order whose `released_at`
  is NULL gets `released_at` set and its quantity is given back (`stock.reserved -= q`).
  `backordered` reservations took nothing and are left as they are.
* An inventory event applied AFTER its order's delivery is already `cancelled` is
  recorded as `reserved` with `released_at` set at once and takes no stock; it still
  counts as applied (it did take effect: reserved and released in one step).
* On PostgreSQL the two sides cannot miss each other: an inventory batch holds a shared
  advisory lock on each of its orders (`ORDER_LOCKS`, striped: `bulk.lock_stripes`) from before
  it reads the deliveries' states, and a cancelling delivery batch takes the same locks
  exclusively before it reads the reservations, so one of them always sees the other's
  committed rows. Only batches that share an order's stripe wait for each other (a table lock
  made every inventory batch wait for every cancelling delivery batch). Locks are taken in one
  order, deliveries and capacity rows, then order stripes, then stock rows, so two batches never
  deadlock. SQLite serializes writers.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import Integer, Text, case, select
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from orderstream.consumers.messages import Envelope, UnknownSku, ValueReader, value_reader
from orderstream.db import bulk as sql
from orderstream.db.models import Delivery, Reservation, Stock, table_of
from orderstream.events.models import InventoryOrder
from orderstream.settings import Settings

ROLE = "inventory"
STOCK = table_of(Stock)
RESERVATIONS = table_of(Reservation)
DELIVERIES = table_of(Delivery)
ORDER_LOCKS = 1  # the advisory lock space of orders (compensation, see above)


class InventoryEvent:
    __slots__ = ("event_id", "order_id", "sku", "warehouse_id", "quantity")

    def __init__(self, event_id: str, order_id: str, sku: str, warehouse_id: str, quantity: int) -> None:
        self.event_id = event_id
        self.order_id = order_id
        self.sku = sku
        self.warehouse_id = warehouse_id
        self.quantity = quantity


def inventory_event(order: InventoryOrder) -> InventoryEvent:
    return InventoryEvent(order.event_id, order.order_id, order.sku, order.warehouse_id, order.quantity)


_read_plain: ValueReader[InventoryOrder] = ValueReader(ROLE)


def parse_inventory(value: bytes | None) -> InventoryEvent:
    """The event in a plain JSON record value (either shape); raises `Rejected` with the reason it is not one."""
    return inventory_event(_read_plain(value))


def _available(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """on_hand - reserved per stock key; the rows are locked in key order on PostgreSQL."""
    query = select(STOCK.c.sku, STOCK.c.warehouse_id, STOCK.c.on_hand, STOCK.c.reserved).order_by(
        STOCK.c.sku, STOCK.c.warehouse_id
    )
    rows = sql.select_keys(session, query, (STOCK.c.sku, STOCK.c.warehouse_id), keys, lock=True)
    return {(sku, warehouse_id): on_hand - reserved for sku, warehouse_id, on_hand, reserved in rows}


def _cancelled_orders(session: Session, order_ids: list[str]) -> set[str]:
    query = select(DELIVERIES.c.order_id).where(DELIVERIES.c.status == "cancelled")
    return {row[0] for row in sql.select_where_in(session, query, DELIVERIES.c.order_id, order_ids)}


def _change_reserved(session: Session, delta: dict[tuple[str, str], int], now: dt.datetime, take: bool) -> int:
    """Add (take) or remove (give back) `delta` to stock.reserved; returns rows updated.

    Taking is conditional: it applies only while on_hand - reserved covers it. Giving back
    never goes below zero, even if a stock reload reset `reserved` meanwhile.
    """
    params = [{"k_sku": s, "k_wh": w, "k_q": q} for (s, w), q in sorted(delta.items())]
    types: dict[str, TypeEngine] = {"k_sku": Text(), "k_wh": Text(), "k_q": Integer()}

    def where(k):
        clauses = [STOCK.c.sku == k["k_sku"], STOCK.c.warehouse_id == k["k_wh"]]
        if take:
            clauses.append(STOCK.c.on_hand - STOCK.c.reserved >= k["k_q"])
        return clauses

    def values(k):
        if take:
            reserved = STOCK.c.reserved + k["k_q"]
        else:
            reserved = case((STOCK.c.reserved >= k["k_q"], STOCK.c.reserved - k["k_q"]), else_=0)
        return {"reserved": reserved, "updated_at": now}

    return sql.bulk_update(session, STOCK, params, types, where, values)


class InventoryHandler:
    role = ROLE

    def __init__(self, settings: Settings) -> None:
        self._read: ValueReader[InventoryOrder] = value_reader(settings, ROLE)

    def parse(self, value: bytes | None) -> InventoryEvent:
        return inventory_event(self._read(value))

    def apply(self, session: Session, events: Sequence[Envelope], now: dt.datetime) -> list[Envelope]:
        order_ids = sorted({env.event.order_id for env in events})
        # Before reading the deliveries' states: see the module docstring (compensation).
        sql.lock_stripes(session, ORDER_LOCKS, order_ids, shared=True)
        keys = sorted({(env.event.sku, env.event.warehouse_id) for env in events})
        available = _available(session, keys)
        cancelled = _cancelled_orders(session, order_ids)

        taken: dict[tuple[str, str], int] = defaultdict(int)
        rows: list[dict] = []
        rejected: list[Envelope] = []
        for env in events:
            ev: InventoryEvent = env.event
            key = (ev.sku, ev.warehouse_id)
            left = available.get(key)
            if left is None:
                env.rejection = UnknownSku(f"no stock row for sku {ev.sku!r} at warehouse {ev.warehouse_id!r}")
                rejected.append(env)
                continue
            released_at = None
            if ev.order_id in cancelled:
                outcome, released_at = "reserved", now
            elif left >= ev.quantity:
                outcome = "reserved"
                available[key] = left - ev.quantity
                taken[key] += ev.quantity
            else:
                outcome = "backordered"
            rows.append(
                {
                    "event_id": env.ledger_key,
                    "order_id": ev.order_id,
                    "sku": ev.sku,
                    "warehouse_id": ev.warehouse_id,
                    "quantity": ev.quantity,
                    "outcome": outcome,
                    "released_at": released_at,
                }
            )
        sql.require_rowcount(_change_reserved(session, taken, now, take=True), len(taken), "stock reservation")
        sql.insert_rows(session, RESERVATIONS, rows, constants={"created_at": now})
        return rejected


def release_reservations(session: Session, order_ids: Iterable[str], now: dt.datetime) -> int:
    """Compensation for cancelled orders: release their unreleased `reserved` reservations.

    Runs in the delivery consumer's batch transaction. Returns the number released.
    """
    order_ids = sorted(set(order_ids))
    if not order_ids:
        return 0
    sql.lock_stripes(session, ORDER_LOCKS, order_ids, shared=False)
    query = select(
        RESERVATIONS.c.event_id, RESERVATIONS.c.sku, RESERVATIONS.c.warehouse_id, RESERVATIONS.c.quantity
    ).where(RESERVATIONS.c.outcome == "reserved", RESERVATIONS.c.released_at.is_(None))
    held = sql.select_where_in(session, query, RESERVATIONS.c.order_id, order_ids)
    if not held:
        return 0
    give_back: dict[tuple[str, str], int] = defaultdict(int)
    for _event_id, sku, warehouse_id, quantity in held:
        give_back[(sku, warehouse_id)] += quantity
    _available(session, sorted(give_back))  # lock the stock rows in key order, as reserving does
    _change_reserved(session, give_back, now, take=False)
    sql.bulk_update(
        session,
        RESERVATIONS,
        [{"k_event_id": row[0]} for row in held],
        {"k_event_id": Text()},
        where=lambda k: [RESERVATIONS.c.event_id == k["k_event_id"]],
        values=lambda k: {"released_at": now},
    )
    return len(held)
