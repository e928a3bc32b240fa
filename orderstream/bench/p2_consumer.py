"""P2: inventory events/s applied into PostgreSQL with the exactly-once ledger, against
Kafka's consumer perf test and the raw PostgreSQL write path, in the same run.

One repeat, in a fresh workspace:

1. load the seed's stock levels; fill the workspace's inventory topic with N messages exactly
   as the pipeline produces them (not timed);
2. **apply**: time `run_consumer(settings, "inventory", drain=True)` in this process, from the
   call (group join included) to its return once the group's committed offsets reach the end
   offsets (the drain); it must report N consumed and applied + dead-lettered = N, and the
   ledger must hold N rows;
3. **consumer perf test**: `ConsumerPerformance` reads the same topic (N records, own group);
   `nMsg.sec` over its whole run (group join included, like the apply figure);
4. **pg raw**: the rows the apply wrote (its N ledger rows and N reservation rows, read back
   untimed) are COPYed in one transaction into two empty tables created `LIKE` the ledger and
   reservations (indexes and keys included); timed from the first COPY to the commit.

`pg_raw_ratio` (the goal: >= 0.8) is the median of the per-repeat ratios apply / pg raw: what
the exactly-once consumer keeps of the database's own write speed for the same rows. `ratio` is
the median of apply / consumer perf test, reported beside it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from orderstream.bench.common import check_count, log, median, rounded
from orderstream.bench.data import copy_statement, load_stock, prefill_topic
from orderstream.bench.env import BenchEnv, Workspace
from orderstream.bench.kafka_tools import consumer_perf
from orderstream.db.models import ProcessedEvent, Reservation, table_of

GOAL_PG_RAW_RATIO = 0.8
LEDGER_COLUMNS = (
    "consumer_group", "event_id", "topic", "partition", "offset", "outcome", "error_class", "error_message", "processed_at",
)
RESERVATION_COLUMNS = ("event_id", "order_id", "sku", "warehouse_id", "quantity", "outcome", "created_at", "released_at")


@dataclass
class P2Run:
    events: int
    apply_per_s: float
    consumer_perf_test_per_s: float
    consumer_perf_fetch_per_s: float
    pg_raw_per_s: float
    batches: int
    batch_size_mean: float
    apply_cpu: dict | None
    perf_test_cpu: dict | None
    pg_raw_cpu: dict | None

    @property
    def ratio(self) -> float:
        return self.apply_per_s / self.consumer_perf_test_per_s if self.consumer_perf_test_per_s else 0.0

    @property
    def pg_raw_ratio(self) -> float:
        return self.apply_per_s / self.pg_raw_per_s if self.pg_raw_per_s else 0.0


def _apply(ws: Workspace, events: int):
    from orderstream.consumers import run_consumer

    with ws.meter() as meter:
        started = time.perf_counter()
        stats = run_consumer(ws.settings, "inventory", drain=True, metrics_port=None)
        elapsed = time.perf_counter() - started
    check_count("P2 consumed", events, stats.consumed)
    check_count("P2 applied + dead-lettered", events, stats.applied + stats.dead_lettered)
    with ws.sessions() as session:
        ledger = session.scalar(
            select(func.count()).select_from(ProcessedEvent).where(ProcessedEvent.consumer_group == ws.settings.inventory_group)
        )
    check_count("P2 ledger rows", events, int(ledger or 0))
    return events / elapsed, stats, meter.split.as_dict() if meter.split else None


def _pg_raw(ws: Workspace, events: int) -> tuple[float, dict | None]:
    """COPY the apply's own rows into empty look-alike tables, one transaction."""
    with ws.engine.connect() as conn:
        ledger = conn.execute(select(*(table_of(ProcessedEvent).c[c] for c in LEDGER_COLUMNS))).all()
        reservations = conn.execute(select(*(table_of(Reservation).c[c] for c in RESERVATION_COLUMNS))).all()
    raw = ws.engine.raw_connection()
    try:
        pg = raw.driver_connection
        assert pg is not None  # a connection fresh from the pool has its driver connection
        pg.execute("CREATE TABLE raw_ledger (LIKE processed_events INCLUDING ALL)")
        pg.execute("CREATE TABLE raw_reservations (LIKE reservations INCLUDING ALL)")
        pg.commit()
        with ws.meter() as meter:
            started = time.perf_counter()
            with pg.cursor() as cursor:
                with cursor.copy(copy_statement("raw_ledger", LEDGER_COLUMNS)) as copy:
                    for row in ledger:
                        copy.write_row(row)
                with cursor.copy(copy_statement("raw_reservations", RESERVATION_COLUMNS)) as copy:
                    for row in reservations:
                        copy.write_row(row)
            pg.commit()
            elapsed = time.perf_counter() - started
    finally:
        raw.close()
    check_count("P2 raw ledger rows", events, len(ledger))
    return events / elapsed, meter.split.as_dict() if meter.split else None


def _perf_test(ws: Workspace, events: int):
    with ws.meter() as meter:
        result = consumer_perf(ws.settings, ws.env.bootstrap, ws.settings.inventory_topic, events)
    check_count("P2 ConsumerPerformance", events, result.records)
    return result, meter.split.as_dict() if meter.split else None


def run_once(env: BenchEnv, events: int) -> P2Run:
    with env.workspace("p2") as ws:
        load_stock(ws.engine)
        prefill_topic(ws.settings, ws.settings.inventory_topic, events)
        apply_per_s, stats, apply_cpu = _apply(ws, events)
        perf, perf_cpu = _perf_test(ws, events)
        raw_per_s, raw_cpu = _pg_raw(ws, events)
    run = P2Run(
        events=events,
        apply_per_s=apply_per_s,
        consumer_perf_test_per_s=perf.per_s,
        consumer_perf_fetch_per_s=perf.fetch_per_s,
        pg_raw_per_s=raw_per_s,
        batches=stats.batches,
        batch_size_mean=round(stats.batch_size_mean, 1),
        apply_cpu=apply_cpu,
        perf_test_cpu=perf_cpu,
        pg_raw_cpu=raw_cpu,
    )
    log.info(
        "P2 run: apply %.0f/s, consumer perf test %.0f/s, pg raw %.0f/s, apply / pg raw %.2f",
        run.apply_per_s, run.consumer_perf_test_per_s, run.pg_raw_per_s, run.pg_raw_ratio,
    )
    return run


def measure(env: BenchEnv, events: int, repeats: int) -> dict:
    runs = [run_once(env, events) for _ in range(repeats)]
    apply_per_s = median(r.apply_per_s for r in runs)
    ratio = median(r.ratio for r in runs)
    pg_raw_ratio = median(r.pg_raw_ratio for r in runs)
    return {
        "apply_per_s": rounded(apply_per_s, 0),
        "consumer_perf_test_per_s": rounded(median(r.consumer_perf_test_per_s for r in runs), 0),
        "pg_raw_per_s": rounded(median(r.pg_raw_per_s for r in runs), 0),
        "pg_raw_ratio": rounded(pg_raw_ratio, 3),
        "ratio": rounded(ratio, 3),
        "consumer_perf_fetch_per_s": rounded(median(r.consumer_perf_fetch_per_s for r in runs), 0),
        "goal": f"pg_raw_ratio >= {GOAL_PG_RAW_RATIO}",
        "goal_met": bool(pg_raw_ratio and pg_raw_ratio >= GOAL_PG_RAW_RATIO),
        "events": events,
        "repeats": len(runs),
        "runs": [{**asdict(r), "ratio": round(r.ratio, 3), "pg_raw_ratio": round(r.pg_raw_ratio, 3)} for r in runs],
    }
