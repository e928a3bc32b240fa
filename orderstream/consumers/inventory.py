"""inventory_data_consumer: reserve stock for every inventory event, exactly once.

Outcomes of an event that takes effect (ledger outcome `applied`):

* `reserved`: `quantity` of `sku` at `warehouse_id` was available (on_hand - reserved >=
  quantity) and is now counted in `stock.reserved`.
* `backordered`: it was not available; stock is untouched.

Rejected events (ledger outcome `dead_lettered`, copied to `<topic>.dlq`, no other row
changes): an empty, oversized or non-JSON value, a payload that violates the schema
(missing order_id or sku, quantity not an integer in 1..10000, wrong types, another event
type), and an unknown SKU (no stock row for that sku at that warehouse).

Compensation (the rule the Confluent demo leaves out, its issue #436):

* A reservation is released when a `delivery` event with status `cancelled` is applied
  for the same `order_id`. The delivery consumer does it in its own transaction, see
  `release_reservations`: every `reserved` reservation of that order whose `released_at`
  is NULL gets `released_at` set and its quantity is given back (`stock.reserved -= q`).
  `backordered` reservations took nothing and are left as they are.
* An inventory event applied AFTER its order's delivery is already `cancelled` is
  recorded as `reserved` with `released_at` set at once and takes no stock; it still
  counts as applied (it did take effect: reserved and released in one step).
* On PostgreSQL the two sides cannot miss each other: an inventory batch holds
  `reservations` in ROW EXCLUSIVE mode from before it reads the deliveries' states, and a
  cancelling delivery batch takes SHARE ROW EXCLUSIVE before it reads the reservations,
  so one of them always sees the other's committed rows. SQLite serializes writers.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence

import orjson
from sqlalchemy import Integer, Text, case, select
from sqlalchemy.orm import Session

from orderstream.consumers.messages import (
    MAX_VALUE_BYTES,
    Envelope,
    Rejected,
    SchemaViolation,
    UnknownSku,
    check_type,
    decode_object,
    optional_str,
    payload_event_id,
    required_str,
)
from orderstream.db import bulk as sql
from orderstream.db.models import Delivery, Reservation, Stock

ROLE = "inventory"
DEFAULT_WAREHOUSE = "main"
MAX_QUANTITY = 10_000
STOCK = Stock.__table__
RESERVATIONS = Reservation.__table__
DELIVERIES = Delivery.__table__


class InventoryEvent:
    __slots__ = ("event_id", "order_id", "sku", "warehouse_id", "quantity")

    def __init__(self, event_id: str | None, order_id: str, sku: str, warehouse_id: str, quantity: int) -> None:
        self.event_id = event_id
        self.order_id = order_id
        self.sku = sku
        self.warehouse_id = warehouse_id
        self.quantity = quantity


def parse_quantity(value: object) -> int:
    if isinstance(value, bool):
        raise SchemaViolation(f"quantity must be an integer, got {value!r}")
    if isinstance(value, int):
        quantity = value
    elif isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        quantity = int(value)
    else:
        raise SchemaViolation(f"quantity must be an integer, got {value!r:.40}")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise SchemaViolation(f"quantity must be in 1..{MAX_QUANTITY}, got {quantity}")
    return quantity


def _validated(obj: dict) -> InventoryEvent:
    """The thorough check, with a precise reason for whatever is wrong."""
    try:
        check_type(obj, ROLE)
        return InventoryEvent(
            event_id=payload_event_id(obj),
            order_id=required_str(obj, "order_id", max_len=64),
            sku=required_str(obj, "sku"),
            warehouse_id=optional_str(obj, "warehouse_id", DEFAULT_WAREHOUSE) or DEFAULT_WAREHOUSE,
            quantity=parse_quantity(obj.get("quantity")),
        )
    except Rejected as exc:
        exc.event_id = payload_event_id(obj)  # type: ignore[attr-defined]
        raise


def parse_inventory(value: bytes | None) -> InventoryEvent:
    """The event in a record value; raises `Rejected` with the reason it is not one.

    The common case (our producer's well-formed events) takes a fast path of plain type
    checks; anything unusual goes through `_validated`, which gives the same answer.
    """
    if not value or len(value) > MAX_VALUE_BYTES:
        return _validated(decode_object(value))
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return _validated(decode_object(value))
    if type(obj) is not dict:
        return _validated(decode_object(value))
    get = obj.get
    order_id, sku, quantity, warehouse_id = get("order_id"), get("sku"), get("quantity"), get("warehouse_id")
    if (
        type(order_id) is str
        and 0 < len(order_id) <= 64
        and type(sku) is str
        and sku
        and type(quantity) is str
        and quantity.isdigit()
        and quantity.isascii()
        and 0 < int(quantity) <= MAX_QUANTITY
        and (warehouse_id is None or (type(warehouse_id) is str and warehouse_id and not warehouse_id.isspace()))
        and get("type", ROLE) == ROLE
        and not order_id.isspace()
        and not sku.isspace()
    ):
        event_id = get("event_id")
        return InventoryEvent(
            event_id if type(event_id) is str and event_id else None,
            order_id,
            sku,
            warehouse_id or DEFAULT_WAREHOUSE,
            int(quantity),
        )
    return _validated(obj)


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
    types = {"k_sku": Text(), "k_wh": Text(), "k_q": Integer()}

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

    def parse(self, value: bytes | None) -> InventoryEvent:
        return parse_inventory(value)

    def apply(self, session: Session, events: Sequence[Envelope], now: dt.datetime) -> list[Envelope]:
        # Before reading the deliveries' states: see the module docstring (compensation).
        sql.lock_table(session, RESERVATIONS, "ROW EXCLUSIVE")
        keys = sorted({(env.event.sku, env.event.warehouse_id) for env in events})
        available = _available(session, keys)
        cancelled = _cancelled_orders(session, sorted({env.event.order_id for env in events}))

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
    sql.lock_table(session, RESERVATIONS, "SHARE ROW EXCLUSIVE")
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
