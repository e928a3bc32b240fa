"""The one audit every fault test ends with: drain, then compare every ledger with every other.

Sources compared (Jepsen style: what was acknowledged against what took effect):
- the source repository (`order_events`) and the producer ledger in it (`outcome`);
- the topics' contents (read back from the broker, by the `event_id` header);
- the processed-events ledger of each consumer group;
- the effects: reservations against stock, delivery history, notifications;
- the dead-letter topics.

Pass means 0 lost and 0 applied twice.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.consumers import run_consumer
from orderstream.db.models import (
    ConsumerCounter,
    DeliveryHistory,
    Notification,
    OrderEvent,
    ProcessedEvent,
    Reservation,
    Stock,
)
from orderstream.reconcile import reconcile
from orderstream.runtime import settings_in_environment
from orderstream.settings import Settings, dlq_topic
from tests.topics import read_topic

ROLES = ("inventory", "delivery")


@dataclass(frozen=True)
class AuditCounts:
    produced: int  # distinct valid routed events the producer ledger marks produced
    applied: int  # distinct events that took effect (ledger outcome `applied`)
    dead_lettered: int  # ledger outcome `dead_lettered` (records in the DLQ topics: `dlq_records`)
    dlq_records: int
    lost: int  # valid routed events not produced, or produced but not in the topic / not in the ledger
    applied_twice: int  # events whose effect exists more than once, or stock that disagrees with them
    duplicates_in_topic: int  # extra copies of an event in its topic (at-least-once re-sends)
    deduplicated: int  # redeliveries the consumers skipped (their counters)
    pending: int  # routed source rows whose progress mark never moved (outcome NULL)
    quarantined: int

    def as_dict(self) -> dict:
        return asdict(self)


def drain(settings: Settings) -> None:
    for role in ROLES:
        run_consumer(settings, role, drain=True, metrics_port=None)


def _topic_ids(settings: Settings, topic: str) -> Counter[str]:
    return Counter(r.headers["event_id"].decode() for r in read_topic(settings, topic) if "event_id" in r.headers)


def audit(settings: Settings, engine, *, drain_first: bool = True, check: bool = True) -> AuditCounts:
    """Drain both consumers, compare everything, and (with `check`) assert 0 lost and 0 applied twice."""
    if drain_first:
        drain(settings)
    problems: list[str] = []
    lost = applied_twice = duplicates = produced_total = applied_total = dead_total = dlq_total = 0
    with Session(engine) as s:
        source = {t: dict(s.execute(select(OrderEvent.event_id, OrderEvent.outcome).where(OrderEvent.type == t)).all())
                  for t in ROLES}
        quarantined = int(s.scalar(select(func.count()).where(OrderEvent.outcome == "quarantined")) or 0)
        dedup = int(s.scalar(select(func.coalesce(func.sum(ConsumerCounter.value), 0))
                             .where(ConsumerCounter.name == "deduplicated",
                                    ConsumerCounter.consumer_group.in_(list(settings.groups.values())))) or 0)
        pending = 0
        for role in ROLES:
            topic, group = settings.topics[role], settings.groups[role]
            unsent = sorted(e for e, o in source[role].items() if o is None)
            pending += len(unsent)
            if unsent:
                problems.append(f"{role}: {len(unsent)} valid source events never produced, e.g. {unsent[:5]}")
            produced = {e for e, o in source[role].items() if o == "produced"}
            produced_total += len(produced)
            in_topic = _topic_ids(settings, topic)
            duplicates += sum(n - 1 for n in in_topic.values())
            not_in_topic = produced - set(in_topic)
            if not_in_topic:
                problems.append(f"{topic}: {len(not_in_topic)} acknowledged events missing, e.g. {sorted(not_in_topic)[:5]}")
            ledger = dict(s.execute(select(ProcessedEvent.event_id, ProcessedEvent.outcome)
                                    .where(ProcessedEvent.consumer_group == group)).all())
            not_processed = set(in_topic) - set(ledger)
            if not_processed:
                problems.append(f"{group}: {len(not_processed)} events in the topic never processed, "
                                f"e.g. {sorted(not_processed)[:5]}")
            lost += len(unsent) + len(not_in_topic) + len(not_processed - not_in_topic)
            applied_total += sum(1 for o in ledger.values() if o == "applied")
            dead = {e for e, o in ledger.items() if o == "dead_lettered"}
            dead_total += len(dead)
            dlq = _topic_ids(settings, dlq_topic(topic))
            dlq_total += sum(dlq.values())
            if dead - set(dlq):
                problems.append(f"{group}: dead-lettered in the ledger but not in the DLQ: {sorted(dead - set(dlq))[:5]}")
                lost += len(dead - set(dlq))
            stray = set(ledger) - set(in_topic)
            if stray:
                problems.append(f"{group}: ledger holds events that are not in its topic: {sorted(stray)[:5]}")
                applied_twice += len(stray)
        # Effects: each event at most once, and stock agreeing with the reservations held.
        twice_res = list(s.scalars(select(Reservation.event_id).group_by(Reservation.event_id).having(func.count() > 1)))
        twice_hist = list(s.scalars(select(DeliveryHistory.event_id).where(DeliveryHistory.to_status != "scheduled")
                                    .group_by(DeliveryHistory.event_id).having(func.count() > 1)))
        twice_note = list(s.scalars(select(Notification.order_id).group_by(Notification.order_id, Notification.to_status)
                                    .having(func.count() > 1)))
        applied_twice += len(twice_res) + len(twice_hist) + len(twice_note)
        if twice_res or twice_hist or twice_note:
            problems.append(f"effects twice: reservations {twice_res[:5]}, history {twice_hist[:5]}, notes {twice_note[:5]}")
        held = dict(((sku, wh), int(q)) for sku, wh, q in s.execute(
            select(Reservation.sku, Reservation.warehouse_id, func.sum(Reservation.quantity))
            .where(Reservation.outcome == "reserved", Reservation.released_at.is_(None))
            .group_by(Reservation.sku, Reservation.warehouse_id)).all())
        for row in s.scalars(select(Stock)):
            if row.reserved != held.get((row.sku, row.warehouse_id), 0):
                applied_twice += 1
                problems.append(f"stock {row.sku}@{row.warehouse_id}: reserved {row.reserved} but reservations "
                                f"hold {held.get((row.sku, row.warehouse_id), 0)}")
            if row.reserved > row.on_hand:
                problems.append(f"stock {row.sku}@{row.warehouse_id}: reserved {row.reserved} > on hand {row.on_hand}")
        rec = reconcile(s, settings)
        if not rec.ok:
            problems.append(f"reconcile() not clean: missing {rec.missing}, duplicates {rec.duplicates}, "
                            f"unproduced {rec.unproduced_ids[:5]}, twice {rec.duplicate_ids[:5]}")
    counts = AuditCounts(produced=produced_total, applied=applied_total, dead_lettered=dead_total,
                         dlq_records=dlq_total, lost=lost, applied_twice=applied_twice,
                         duplicates_in_topic=duplicates, deduplicated=dedup, pending=pending, quarantined=quarantined)
    print(f"AUDIT {settings.inventory_topic}: {counts.as_dict()}")
    if check:
        assert not problems, f"audit failed {counts.as_dict()}:\n" + "\n".join(problems)
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
