"""P3: end-to-end latency in continuous mode, from source commit to applied, against Kafka's
own end-to-end latency tool as the floor.

One repeat, in a fresh workspace with the seed's stock:

1. start `orderstream produce --continuous` and `orderstream consume inventory` /
   `orderstream consume delivery` as subprocesses (as they run in production);
2. warm up: write at the measured rate for `warmup_s` and wait until both consumers applied
   it all (so start-up, GX's first runs, the group joins and the broker JVM's compilation of its
   request paths, a quarter of a core for the first half minute, are not counted: the figure is
   the pipeline's steady state, as on a long-running stack);
3. a writer thread in this process appends routed events of the seed data (inventory lines
   and delivery status events of successive orders, in lifecycle order; each event is one
   order message) to the source table at a fixed rate (default 1,000/s) for the duration: on
   a 10 ms tick it inserts every event due by then in one transaction and records the
   wall-clock time right after the commit returns as each row's commit time;
4. wait until every written event is in the ledger of its consumer group, then stop all
   three processes with SIGTERM;
5. latency of an event = `processed_events.processed_at` of it (stamped by the consumer at
   the start of the batch transaction that applies it) minus its commit time; p50/p95/p99
   over every written event (both consumers), in ms. Split in two for attribution with the
   producer's own mark `order_events.produced_at` (stamped when the batch's acks are in,
   just before its progress commit): `producer_*` = commit -> acknowledged (produced_at),
   `consumer_*` = acknowledged -> applied (processed_at);
6. `EndToEndLatency` (acks=all, records of the same mean size, one partition) on the same
   broker: its p50/p99/p99.9 are the floor;
7. the same again at a high rate (default 5,000/s, `high_rate`), reported apart.

Figures are the medians of the repeats' percentiles; `histogram` counts every event of the
runs (both rates apart) in log-spaced bins, for the plot in bench/.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import text

from orderstream.bench.common import CountMismatch, log, median, rounded
from orderstream.bench.data import frame_messages, load_stock, order_pool
from orderstream.bench.env import BenchEnv, Workspace
from orderstream.bench.kafka_tools import end_to_end
from orderstream.errors import UserError
from orderstream.source.fields import EVENT_FIELDS
from orderstream.source.repository import event_rows

GOAL_P99_MS = 250
GOAL_P50_MS = 100
GOAL_HIGH_RATE_P99_MS = 1_000
HISTOGRAM_EDGES_MS = tuple(float(e) for e in np.geomspace(1, 60_000, 49))  # 1 ms .. 60 s, 10 bins a factor of ~10
TICK_S = 0.01
WARMUP_MIN_EVENTS = 40
READY_TIMEOUT_S = 240.0
DRAIN_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
INSERT = (
    f"INSERT INTO order_events ({', '.join(EVENT_FIELDS)}, extra, loaded_at) "
    f"VALUES ({', '.join(['%s'] * (len(EVENT_FIELDS) + 2))})"
)


@dataclass
class Writer:
    """Appends rows at `rate` per second; remembers each row's commit time (epoch seconds)."""

    ws: Workspace
    rows: list[dict]
    rate: float
    committed: dict[str, float] = field(default_factory=dict)
    behind_max: int = 0
    error: BaseException | None = None

    def write(self, rows: list[dict], conn) -> None:
        now = dt.datetime.now(dt.UTC)
        params = [[*(row.get(c) for c in EVENT_FIELDS), row.get("extra"), now] for row in rows]
        with conn.cursor() as cursor:
            cursor.executemany(INSERT, params)
        conn.commit()
        at = time.time()
        for row in rows:
            self.committed[row["event_id"]] = at

    def run(self, stop_at: float) -> None:
        raw = self.ws.engine.raw_connection()
        try:
            conn = raw.driver_connection
            started = time.monotonic()
            written = 0
            while written < len(self.rows):
                now = time.monotonic()
                if now >= stop_at:
                    break
                due = min(len(self.rows), int((now - started) * self.rate) + 1)
                if due > written:
                    self.behind_max = max(self.behind_max, due - written)
                    self.write(self.rows[written:due], conn)
                    written = due
                time.sleep(max(0.0, TICK_S - (time.monotonic() - now)))
        except BaseException as exc:  # noqa: BLE001 - the writer thread hands any failure to the caller, never loses it
            self.error = exc
        finally:
            raw.close()


@dataclass
class P3Run:
    events: int
    achieved_rate_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    inventory_p99_ms: float | None
    delivery_p99_ms: float | None
    producer_p50_ms: float  # source commit -> produced_at (acknowledged, progress mark committed)
    producer_p99_ms: float
    consumer_p50_ms: float  # produced_at -> processed_at
    consumer_p99_ms: float
    floor_avg_ms: float
    floor_p50_ms: float
    floor_p99_ms: float
    floor_p999_ms: float
    writer_behind_max: int
    cpu: dict | None
    exit_codes: dict[str, int | None]
    histogram: list[int]  # events per bin of HISTOGRAM_EDGES_MS (below and above the edges in the end bins)


def _spawn(ws: Workspace, name: str, args: list[str]) -> tuple[subprocess.Popen, Path]:
    logs = ws.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name}.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orderstream", *args],
            env=ws.subprocess_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    return proc, log_file


def _stop(procs: dict[str, subprocess.Popen]) -> dict[str, int | None]:
    """SIGTERM every process, as an operator would: each must finish its batch and exit 0."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = proc.wait(10)
            log.warning("P3: %s ignored SIGTERM for %.0f s and was killed", name, STOP_TIMEOUT_S)
    return codes


def _produced(ws: Workspace) -> dict[str, float]:
    """event_id -> produced_at (epoch seconds): the producer's mark, set when the batch was acknowledged."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id, extract(epoch FROM produced_at) FROM order_events WHERE produced_at IS NOT NULL")
        ).all()
    return {event_id: float(at) for event_id, at in rows}


def _applied(ws: Workspace) -> dict[str, float]:
    """event_id -> processed_at (epoch seconds) over both consumer groups."""
    with ws.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id, extract(epoch FROM processed_at) FROM processed_events WHERE consumer_group IN (:a, :b)"),
            {"a": ws.settings.inventory_group, "b": ws.settings.delivery_group},
        ).all()
    return {event_id: float(at) for event_id, at in rows}


def _applied_count(ws: Workspace) -> int:
    with ws.engine.connect() as conn:
        return int(conn.execute(
            text("SELECT count(*) FROM processed_events WHERE consumer_group IN (:a, :b)"),
            {"a": ws.settings.inventory_group, "b": ws.settings.delivery_group},
        ).scalar() or 0)


def _wait_applied(ws: Workspace, expected: int, timeout: float, procs: dict[str, subprocess.Popen], what: str) -> None:
    deadline = time.monotonic() + timeout
    while (done := _applied_count(ws)) < expected:
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if dead:
            exits = ", ".join(f"{n} exited with {c}" for n, c in dead.items())
            raise UserError(f"P3: {exits} during {what}; logs in {ws.run_dir / 'logs'}")
        if time.monotonic() > deadline:
            raise CountMismatch(f"P3 {what}: {done} of {expected} events applied after {timeout:.0f} s")
        time.sleep(0.2)


def _histogram(values: np.ndarray) -> list[int]:
    clipped = np.clip(values, HISTOGRAM_EDGES_MS[0], HISTOGRAM_EDGES_MS[-1])
    return [int(n) for n in np.histogram(clipped, bins=HISTOGRAM_EDGES_MS)[0]]


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_once(env: BenchEnv, rate: float, duration_s: float, floor_records: int, warmup_s: float) -> P3Run:
    timed_events, warmup_events = int(rate * duration_s), max(WARMUP_MIN_EVENTS, int(rate * warmup_s))
    pool = order_pool(warmup_events + timed_events)
    rows = event_rows(pool)
    warm_rows, timed_rows = rows[:warmup_events], rows[warmup_events:]
    kinds = dict(zip(pool["event_id"], pool["type"]))
    with env.workspace("p3") as ws:
        load_stock(ws.engine)
        lifetime = READY_TIMEOUT_S + duration_s + DRAIN_TIMEOUT_S + 60
        procs: dict[str, subprocess.Popen] = {}
        try:
            for name, args in {
                "consume-inventory": ["consume", "inventory"],
                "consume-delivery": ["consume", "delivery"],
                "produce": ["produce", "--continuous", "--duration", str(lifetime)],
            }.items():
                procs[name], _ = _spawn(ws, name, args)
            warm = Writer(ws, warm_rows, rate)
            warm.run(time.monotonic() + warmup_s + 60)
            if warm.error:
                raise warm.error
            _wait_applied(ws, len(warm_rows), READY_TIMEOUT_S, procs, "warm-up")
            writer = Writer(ws, timed_rows, rate)
            with ws.meter() as meter:
                thread = threading.Thread(target=writer.run, args=(time.monotonic() + duration_s + 5,), name="p3-writer")
                started = time.monotonic()
                thread.start()
                thread.join()
                wrote_for = time.monotonic() - started
                if writer.error:
                    raise writer.error
                _wait_applied(ws, len(warm_rows) + len(writer.committed), DRAIN_TIMEOUT_S, procs, "drain")
        finally:
            codes = _stop(procs)
            for name, code in codes.items():
                if code not in (0, None):
                    tail = (ws.run_dir / "logs" / f"{name}.log").read_text(errors="replace").strip().splitlines()[-8:]
                    log.warning("P3: %s exited with %s after SIGTERM; its last lines:\n%s", name, code, "\n".join(tail))
        applied = _applied(ws)
        produced = _produced(ws)
        latencies = {eid: (applied[eid] - at) * 1000 for eid, at in writer.committed.items() if eid in applied}
        # The two halves: source commit -> acknowledged and marked produced, then -> applied.
        to_produced = np.array([(produced[e] - at) * 1000 for e, at in writer.committed.items() if e in produced])
        to_applied = np.array([(applied[e] - produced[e]) * 1000 for e in writer.committed if e in produced and e in applied])
        if len(latencies) != len(writer.committed) or len(writer.committed) != timed_events:
            raise CountMismatch(f"P3: {timed_events} events requested, {len(writer.committed)} written, {len(latencies)} applied")
        floor_topic = ws.topic("e2e", partitions=1)
        record_size = round(frame_messages(pool.iloc[warmup_events:]).avg_value_bytes)
        floor = end_to_end(ws.settings, env.bootstrap, floor_topic, floor_records, record_size)
    values = np.array(list(latencies.values()))
    by_kind = {kind: np.array([v for e, v in latencies.items() if kinds.get(e) == kind]) for kind in ("inventory", "delivery")}
    run = P3Run(
        events=len(latencies),
        achieved_rate_per_s=round(len(writer.committed) / wrote_for, 1),
        p50_ms=_percentile(values, 50),
        p95_ms=_percentile(values, 95),
        p99_ms=_percentile(values, 99),
        max_ms=float(values.max()),
        inventory_p99_ms=_percentile(by_kind["inventory"], 99) if len(by_kind["inventory"]) else None,
        delivery_p99_ms=_percentile(by_kind["delivery"], 99) if len(by_kind["delivery"]) else None,
        producer_p50_ms=_percentile(to_produced, 50),
        producer_p99_ms=_percentile(to_produced, 99),
        consumer_p50_ms=_percentile(to_applied, 50),
        consumer_p99_ms=_percentile(to_applied, 99),
        floor_avg_ms=floor.avg_ms,
        floor_p50_ms=floor.p50_ms,
        floor_p99_ms=floor.p99_ms,
        floor_p999_ms=floor.p999_ms,
        writer_behind_max=writer.behind_max,
        cpu=meter.split.as_dict() if meter.split else None,
        exit_codes=codes,
        histogram=_histogram(values),
    )
    log.info(
        "P3 run: %d events at %.0f/s: p50 %.0f ms, p95 %.0f ms, p99 %.0f ms (floor p99 %.0f ms)",
        run.events, run.achieved_rate_per_s, run.p50_ms, run.p95_ms, run.p99_ms, run.floor_p99_ms,
    )
    return run


def _summary(
    runs: list[P3Run], rate: float, duration_s: float, warmup_s: float, goal_p99_ms: float, goal_p50_ms: float | None
) -> dict:
    p99, p50 = median(r.p99_ms for r in runs), median(r.p50_ms for r in runs)
    met = p99 is not None and p99 <= goal_p99_ms and (goal_p50_ms is None or (p50 is not None and p50 <= goal_p50_ms))
    goal = f"p99_ms <= {goal_p99_ms}" + (f" and p50_ms <= {goal_p50_ms}" if goal_p50_ms is not None else "")
    return {
        "p50_ms": rounded(p50),
        "p95_ms": rounded(median(r.p95_ms for r in runs)),
        "p99_ms": rounded(p99),
        "floor_p50_ms": rounded(median(r.floor_p50_ms for r in runs)),
        "floor_p99_ms": rounded(median(r.floor_p99_ms for r in runs)),
        "floor_p999_ms": rounded(median(r.floor_p999_ms for r in runs)),
        "floor_avg_ms": rounded(median(r.floor_avg_ms for r in runs), 2),
        "producer_p50_ms": rounded(median(r.producer_p50_ms for r in runs)),
        "producer_p99_ms": rounded(median(r.producer_p99_ms for r in runs)),
        "consumer_p50_ms": rounded(median(r.consumer_p50_ms for r in runs)),
        "consumer_p99_ms": rounded(median(r.consumer_p99_ms for r in runs)),
        "goal": goal,
        "goal_met": met,
        "rate_per_s": rate,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "events": median(r.events for r in runs),
        "histogram_edges_ms": list(HISTOGRAM_EDGES_MS),
        "histogram": [sum(counts) for counts in zip(*(r.histogram for r in runs))],
        "repeats": len(runs),
        "runs": [asdict(r) for r in runs],
    }


def measure(
    env: BenchEnv, rate: float, duration_s: float, floor_records: int, repeats: int, high_rate: float | None = None,
    warmup_s: float = 1.0,
) -> dict:
    runs = [run_once(env, rate, duration_s, floor_records, warmup_s) for _ in range(repeats)]
    result = _summary(runs, rate, duration_s, warmup_s, GOAL_P99_MS, GOAL_P50_MS) | {"floor_records": floor_records}
    if high_rate:
        high = [run_once(env, high_rate, duration_s, floor_records, warmup_s) for _ in range(repeats)]
        result["high_rate"] = _summary(high, high_rate, duration_s, warmup_s, GOAL_HIGH_RATE_P99_MS, None)
    return result
