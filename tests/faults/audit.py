"""The one audit every fault test ends with: drain, then compare every ledger with every other.

The comparison itself is the product's (`orderstream.soak.audit`, which the soak ends with too):
the source and its producer ledger, the topics' contents, each group's processed-events ledger,
the effects and the dead-letter topics. Pass means 0 lost and 0 applied twice.
"""

from __future__ import annotations

import contextlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.consumers import run_consumer
from orderstream.db.models import OrderEvent
from orderstream.runtime import settings_in_environment
from orderstream.settings import Settings
from orderstream.soak.audit import ROLES, AuditCounts, run_audit

__all__ = ["ROLES", "AuditCounts", "audit", "drain"]


def drain(settings: Settings) -> None:
    for role in ROLES:
        run_consumer(settings, role, drain=True, metrics_port=None)


def audit(settings: Settings, engine, *, drain_first: bool = True, check: bool = True) -> AuditCounts:
    """Drain both consumers, compare everything, and (with `check`) assert 0 lost and 0 applied twice."""
    if drain_first:
        drain(settings)
    result = run_audit(settings, engine)
    counts = result.counts
    print(f"AUDIT {settings.inventory_topic}: {counts.as_dict()}")
    if check:
        assert not result.problems, f"audit failed {counts.as_dict()}:\n" + "\n".join(result.problems)
        assert counts.lost == 0 and counts.applied_twice == 0, counts
    return counts


# --- the harness the broker fault tests share -----------------------------------------------------

NOW = "2026-11-25T10:00:00+00:00"
SKUS = [f"SKU-{i:02d}" for i in range(20)]


def own_home(settings: Settings, home, **update) -> Settings:
    """The test's settings pointed at a local Kafka of its own in `home` (never the session broker)."""
    fields = {**settings.model_dump(), "orderstream_home": home, "kafka_bootstrap_servers": None, "kafka_port": 0,
              **update}
    return Settings(**fields)


def make_events(rng, start: int, n: int) -> list[dict]:
    """Every fifth a delivery request of its own order, the rest inventory events over SKUS."""
    rows = []
    for i in range(start, start + n):
        if i % 5 == 0:
            rows.append({"event_id": f"e{i}", "order_id": f"d{i}", "type": "delivery", "created_at": NOW,
                         "status": "requested", "customer_email": f"c{i}@example.com", "address_line": f"{i} Main St",
                         "city": "Berlin", "postal_code": f"{10000 + rng.randrange(400)}", "country": "DE"})
        else:
            rows.append({"event_id": f"e{i}", "order_id": f"o{rng.randrange(5000)}", "type": "inventory",
                         "created_at": NOW, "sku": rng.choice(SKUS), "quantity": str(rng.randint(1, 3))})
    return rows


def load_events(engine, rows: list[dict]) -> None:
    import pandas as pd

    from orderstream.db.engine import session_factory
    from orderstream.source.repository import insert_events

    with session_factory(engine).begin() as session:
        insert_events(session, pd.DataFrame.from_records(rows))


def produced_count(engine) -> int:
    """Source rows the producer has marked produced."""
    with Session(engine) as s:
        return s.scalar(select(func.count()).where(OrderEvent.outcome == "produced"))


def pending_count(engine) -> int:
    """Source rows the producer has not handled yet."""
    with Session(engine) as s:
        return s.scalar(select(func.count()).where(OrderEvent.outcome.is_(None)))


def load_stock(engine, on_hand: int = 1_000_000) -> None:
    import pandas as pd

    from orderstream.db.engine import session_factory
    from orderstream.source.repository import insert_stock

    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame({"sku": SKUS, "warehouse_id": "main", "on_hand": on_hand}))


class Pipeline:
    """A continuous producer and the consumers of `roles` (default both), each in a thread of this
    process, recording errors."""

    def __init__(self, settings: Settings, duration_s: float, chunk_size: int = 200, roles: tuple[str, ...] = ROLES):
        import threading

        self.settings = settings
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        # Daemons: a thread stuck in a client call fails the test (see __exit__) instead of
        # keeping the test process from exiting.
        self.threads = [threading.Thread(target=self._guard, args=(self._produce, duration_s, chunk_size),
                                         name="producer", daemon=True)]
        self.threads += [threading.Thread(target=self._guard, args=(self._consume, role), name=f"{role}-consumer",
                                          daemon=True)
                         for role in roles]

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def _produce(self, duration_s: float, chunk_size: int) -> None:
        from flows.produce import produce_orders

        produce_orders(continuous=True, duration_s=duration_s, chunk_size=chunk_size, poll_interval_s=0.2)

    def _consume(self, role: str) -> None:
        run_consumer(self.settings, role, drain=False, metrics_port=None, stop_event=self.stop)

    def __enter__(self) -> Pipeline:
        # The producer's flow reads its settings from the environment.
        self.environment = contextlib.ExitStack()
        self.environment.enter_context(settings_in_environment(self.settings))
        for t in self.threads:
            t.start()
        return self

    def producer_done(self, timeout: float) -> bool:
        self.threads[0].join(timeout)
        return not self.threads[0].is_alive()

    def __exit__(self, *exc) -> None:
        import sys
        import traceback

        self.threads[0].join(600)
        self.stop.set()
        self.environment.close()
        for t in self.threads[1:]:
            t.join(120)
        frames = sys._current_frames()
        for t in self.threads:
            if t.is_alive():  # a stop that was never honoured: the product hangs
                stack = "".join(traceback.format_stack(frames[t.ident])[-8:]) if t.ident in frames else "?"
                self.errors.append(AssertionError(f"{t.name} did not stop within its deadline; stuck in:\n{stack}"))
