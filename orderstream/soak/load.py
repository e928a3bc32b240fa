"""The soak's load: valid orders appended to the source repository at a steady rate, in batches.

A thread writes one batch of `rate * tick_s` orders per tick, in one transaction. A batch is due at
a fixed time from the start, so the rate holds on average even when a commit is slow; batches that
fell behind are written together, and `behind_max` says by how many orders.

The orders are realistic lifecycles from `orderstream.source.seed`, turned into repository rows by
`orderstream.source.repository.event_rows` once, for `TEMPLATE_ORDERS` orders; each batch takes the
next templates with a fresh order id and fresh event ids and appends them with the bulk insert the
repository uses. Generating and reshaping every batch through pandas costs about 70 ms of CPU per
100 ms batch at 500 orders/s, which on 2 cores would take the CPU from the system under test.

One routed event in `SAMPLE_EVERY` is remembered with the time its batch committed; the sampler
looks those up in the consumers' ledger to measure source -> applied latency.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from orderstream.db.bulk import insert_rows
from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent, table_of, utcnow
from orderstream.source.repository import event_rows, insert_stock
from orderstream.source.seed import WAREHOUSES, catalogue, generate_events

TICK_S = 0.1
SAMPLE_EVERY = 10
ROUTED = ("inventory", "delivery")
STOCK_ON_HAND = 1_000_000_000  # the soak measures the system, not running out of stock
TEMPLATE_ORDERS = 5_000

Row = dict[str, Any]


def load_stock(engine: Engine) -> None:
    """Plenty of every catalogue SKU in every warehouse."""
    frame = pd.DataFrame(
        [{"sku": sku, "warehouse_id": warehouse, "on_hand": STOCK_ON_HAND} for sku in catalogue() for warehouse in WAREHOUSES]
    )
    with session_factory(engine).begin() as session:
        insert_stock(session, frame)


@dataclass
class LoadStats:
    orders: int = 0
    events: int = 0
    batches: int = 0
    behind_max: int = 0  # orders that were due but not yet written, at worst
    error: BaseException | None = None


@dataclass
class LoadGenerator:
    """Appends orders at `rate` per second until `stop()`; `sampled` holds the latency samples."""

    engine: Engine
    rate: float
    seed: int = 17
    tick_s: float = TICK_S
    stats: LoadStats = field(default_factory=LoadStats)
    # role -> {event_id: epoch seconds its batch committed}; the sampler takes them out once applied
    sampled: dict[str, dict[str, float]] = field(default_factory=lambda: {role: {} for role in ROUTED})
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def batch_orders(self) -> int:
        return max(1, math.ceil(self.rate * self.tick_s))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def take_samples(self, role: str) -> dict[str, float]:
        with self.lock:
            return dict(self.sampled[role])

    def forget(self, role: str, event_ids: list[str]) -> None:
        with self.lock:
            for event_id in event_ids:
                self.sampled[role].pop(event_id, None)

    def _run(self) -> None:
        sessions = session_factory(self.engine)
        templates = order_templates(self.seed)
        interval = self.batch_orders / self.rate
        started = time.monotonic()
        routed_seen = 0
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - started) / interval) + 1  # batches due by now
                behind = due - self.stats.batches
                if behind <= 0:
                    self._stop.wait(started + self.stats.batches * interval - time.monotonic())
                    continue
                self.stats.behind_max = max(self.stats.behind_max, (behind - 1) * self.batch_orders)
                first = self.stats.orders
                rows = [row for n in range(first, first + behind * self.batch_orders)
                        for row in fresh_order(templates[n % len(templates)])]
                with sessions.begin() as session:
                    insert_rows(session, table_of(OrderEvent), rows, constants={"loaded_at": utcnow(), "load_id": None},
                                skip_conflicts_on=["event_id"])
                committed = time.time()
                routed_seen = self._remember(rows, committed, routed_seen)
                self.stats.batches += behind
                self.stats.orders += behind * self.batch_orders
                self.stats.events += len(rows)
        except BaseException as exc:  # noqa: BLE001 - handed to the soak, which reports it and fails
            self.stats.error = exc

    def _remember(self, rows: list[Row], committed: float, routed_seen: int) -> int:
        with self.lock:
            for row in rows:
                kind = row["type"]
                if kind in ROUTED:
                    if routed_seen % SAMPLE_EVERY == 0:
                        self.sampled[kind][row["event_id"]] = committed
                    routed_seen += 1
        return routed_seen


def order_templates(seed: int) -> list[list[Row]]:
    """`TEMPLATE_ORDERS` orders as repository rows, each order's events together and in order."""
    frame = next(generate_events(TEMPLATE_ORDERS, seed=seed, chunk_orders=TEMPLATE_ORDERS))
    orders: dict[str, list[Row]] = {}
    for row in event_rows(frame):
        orders.setdefault(row["order_id"], []).append(row)
    return list(orders.values())


def fresh_order(template: list[Row]) -> list[Row]:
    """The template's events as a new order: a new order id, new event ids, the rest as it was."""
    order_id = f"ORD-{uuid.uuid4().hex[:16]}"
    return [{**row, "order_id": order_id, "event_id": f"evt-{uuid.uuid4()}"} for row in template]
