"""One soak run, start to end.

1. A temporary home with its own local Kafka, a throwaway PostgreSQL, and `orderstream serve`
   (Prefect server, worker, continuous producer and both consumers as deployment runs);
2. once the three runs are Running and have applied a few probe orders, the load generator
   appends orders at the rate for the duration, and every 10 s the sampler records memory, flow-run states, lag and latency;
3. in the middle third, kill -9 the worker, and once the roles work again, the inventory
   consumer's process; each kill's recovery is measured in a thread of its own;
4. stop the load, wait for the served system to drain (nothing pending at the source, no lag),
   list the Crashed runs, stop `serve`, run the audit, stop the stack.

The home is kept (samples, plot, result, every log); the broker's data in it is deleted.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orderstream.db.engine import make_engine, migrate, session_factory
from orderstream.db.models import OrderEvent, ProcessedEvent
from orderstream.errors import UserError
from orderstream.kafka.lag import partition_lag
from orderstream.processes import free_port, wait_until
from orderstream.serve import ServeHandle
from orderstream.serve.api import pool_runs
from orderstream.settings import Settings
from orderstream.soak.audit import run_audit
from orderstream.soak.faults import Fault, kill_consumer, kill_worker, watch_recovery
from orderstream.soak.load import ROUTED, LoadGenerator, load_stock
from orderstream.soak.report import PLOT_NAME, SAMPLES_NAME, Outcome, result_object, write_plot, write_samples
from orderstream.soak.sampler import INTERVAL_S, Sampler
from orderstream.source.repository import insert_events
from orderstream.source.seed import generate_events
from orderstream.stack import local
from orderstream.stack.layout import kafka_dir
from orderstream.stack.postgres import ThrowawayPostgres

DEFAULT_RATE = 500.0
RUNNING_TIMEOUT_S = 300.0
DRAIN_STALL_S = 180.0  # the drain gives up when the backlog has not shrunk for this long
DRAIN_MAX_S = 3600.0
DRAIN_REPORT_S = 30.0
# Fault times as shares of the run, both inside the middle third: the worker first; the consumer once
# the roles work again after that (plus SETTLE_S), or at the end of the third at the latest, so the
# two recoveries are measured apart and the new processes live long enough to be measured.
WORKER_KILL_AT = 0.34
CONSUMER_KILL_AT = 0.40
LAST_KILL_AT = 0.66
SETTLE_S = 15.0
RESULT_NAME = "result.json"
# Room for every delivery: at 500 orders/s the default 200 per postal area and day is full within
# minutes, after which each order's later events are illegal moves and dead-lettered, and the
# consumers' work would change halfway through the run.
DELIVERY_CAPACITY = 1_000_000_000
PROBE_ORDERS = 50
PROBE_SEED = 3

Say = Callable[[str], None]


@dataclass(frozen=True)
class SoakRun:
    result: dict[str, Any]  # the contract's object (`report.result_object`)
    outcome: Outcome  # what the table shows besides
    home: Path


def run_soak(minutes: float, rate: float = DEFAULT_RATE, say: Say = lambda message: None) -> SoakRun:
    """Run the soak (see the module docstring); raises UserError if it cannot run at all."""
    if minutes <= 0 or rate <= 0:
        raise UserError("--minutes and --rate must be positive")
    home = Path(tempfile.mkdtemp(prefix="orderstream-soak-"))
    say(f"home {home}")
    with ThrowawayPostgres() as pg:
        settings = Settings(orderstream_home=home, database_url=pg.url, kafka_bootstrap_servers=None, kafka_port=0,
                            daily_capacity_per_area=DELIVERY_CAPACITY)
        local.up(settings)
        try:
            result, outcome = _soak(settings, minutes, rate, say)
        finally:
            local.down(settings)
            shutil.rmtree(kafka_dir(settings) / "node-1" / "data", ignore_errors=True)
    (home / RESULT_NAME).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return SoakRun(result, outcome, home)


def _soak(settings: Settings, minutes: float, rate: float, say: Say) -> tuple[dict[str, Any], Outcome]:
    engine = make_engine(settings.db_url)
    migrate(engine)
    load_stock(engine)
    duration_s = minutes * 60
    handle = ServeHandle.start(settings, port=free_port(), start_stack=False, say=lambda m: say(f"serve: {m}"))
    try:
        _wait_running(handle)
        _wait_working(settings, engine)
        load = LoadGenerator(engine, rate)
        started = time.monotonic()
        load.start()
        say(f"load started: {rate:g} orders/s for {minutes:g} min")
        sampler = Sampler(settings, engine, handle, load, started)
        faults = _run_load(handle, settings, sampler, load, duration_s, say)
        load.stop()
        sampler.sample()
        if load.stats.error is not None:
            raise UserError(f"soak: the load generator failed: {load.stats.error}")
        say(f"load stopped after {load.stats.orders} orders ({load.stats.events} events); draining")
        drained = _drain(settings, engine, say)
        for fault in faults:
            fault.join()
        crashed_unplanned, planned_not_crashed = _crash_verdicts(handle, faults)
    finally:
        handle.stop(say=lambda m: say(f"serve: {m}"))
    say("auditing")
    audit = run_audit(settings, engine)
    outcome = Outcome(
        minutes=minutes, rate_per_s=rate, faults=faults, crashed_unplanned=crashed_unplanned,
        planned_not_crashed=planned_not_crashed, lost=audit.counts.lost, applied_twice=audit.counts.applied_twice,
        audit=audit.counts.as_dict(), audit_problems=audit.problems, drained=drained,
        load={"orders": load.stats.orders, "events": load.stats.events, "behind_max_orders": load.stats.behind_max},
    )
    write_samples(sampler.samples, settings.home / SAMPLES_NAME)
    if not write_plot(sampler.samples, faults, started, settings.home / PLOT_NAME):
        say("no plot: matplotlib is not installed (pip install matplotlib)")
    return result_object(sampler.samples, sampler.latencies_ms, outcome), outcome


def _wait_running(handle: ServeHandle) -> None:
    def running() -> bool:
        with handle.client() as client:
            return all(client.read_flow_run(run_id).state.is_running() for run_id in handle.flow_runs.values())

    if not wait_until(running, RUNNING_TIMEOUT_S, interval=1.0):
        raise UserError(f"soak: the served runs were not all Running after {RUNNING_TIMEOUT_S:.0f} s; "
                        f"see {handle.prefect_home / 'logs'}")


def _wait_working(settings: Settings, engine) -> None:
    """Write a few orders and wait until both consumers applied them: producer start-up (its first
    validation pass) and the group joins are not counted as the soak's latency."""
    frame = next(generate_events(PROBE_ORDERS, seed=PROBE_SEED, chunk_orders=PROBE_ORDERS))
    with session_factory(engine).begin() as session:
        insert_events(session, frame)
    routed = {role: int((frame["type"] == role).sum()) for role in ROUTED}

    def applied() -> bool:
        with Session(engine) as session:
            return all(
                (session.scalar(select(func.count()).where(ProcessedEvent.consumer_group == settings.groups[role])) or 0)
                >= n for role, n in routed.items()
            )

    if not wait_until(applied, RUNNING_TIMEOUT_S, interval=1.0):
        raise UserError(f"soak: {PROBE_ORDERS} probe orders were not applied within {RUNNING_TIMEOUT_S:.0f} s")


def _run_load(handle: ServeHandle, settings: Settings, sampler: Sampler, load: LoadGenerator, duration_s: float,
              say: Say) -> list[Fault]:
    faults: list[Fault] = []
    next_sample = 0.0
    while (elapsed := time.monotonic() - sampler.started) < duration_s:
        if load.stats.error is not None:
            break
        handle.check()
        if elapsed >= next_sample:
            s = sampler.sample()
            rss = " ".join(f"{name}={mb:.0f}" for name, mb in s.rss_mb.items() if mb is not None)
            say(f"t={s.t:5.0f}s orders={s.orders} lag={s.lag} p99={s.latency_p99_ms} ms RSS MB {rss}")
            next_sample += INTERVAL_S
        kinds = [f.killed for f in faults]
        if "worker" not in kinds and elapsed >= WORKER_KILL_AT * duration_s:
            faults.append(kill_worker(handle))
            say(f"kill -9 worker (pid {faults[-1].pid})")
            watch_recovery(faults[-1], handle, settings)
        elif ("worker" in kinds and "consumer" not in kinds and elapsed >= CONSUMER_KILL_AT * duration_s
              and (faults[0].settled(SETTLE_S) or elapsed >= LAST_KILL_AT * duration_s)):
            fault = kill_consumer(handle)
            if fault is not None:
                faults.append(fault)
                say(f"kill -9 consumer {fault.roles[0]} (pid {fault.pid}); the worker's recovery took "
                    f"{faults[0].recovered_s} s")
                watch_recovery(fault, handle, settings)
        time.sleep(0.2)
    return faults


def _drain(settings: Settings, engine, say: Say) -> bool:
    """Wait until nothing is pending at the source and neither group has lag, for as long as the
    backlog keeps shrinking (a slow consumer is not a lost event); False once it stalled for
    `DRAIN_STALL_S` or after `DRAIN_MAX_S`."""
    started = last_progress = last_report = time.monotonic()
    best: int | None = None
    while True:
        now = time.monotonic()
        try:
            left: int | None = _backlog(settings, engine)
        except Exception:  # noqa: BLE001 - a broker that blinks is asked again; the stall deadline still runs
            left = None
        if left == 0:
            return True
        if left is not None and (best is None or left < best):
            best, last_progress = left, now
        if now - last_progress > DRAIN_STALL_S or now - started > DRAIN_MAX_S:
            say(f"drain gave up with {left if left is not None else 'an unknown number of'} events pending or not consumed")
            return False
        if now - last_report >= DRAIN_REPORT_S:
            say(f"draining: {left} events pending or not consumed")
            last_report = now
        time.sleep(2.0)


def _backlog(settings: Settings, engine) -> int:
    """Source rows not yet handled by the producer plus both groups' lag."""
    with Session(engine) as session:
        pending = int(session.scalar(select(func.count()).where(OrderEvent.outcome.is_(None))) or 0)
    return pending + sum(sum(partition_lag(settings, settings.groups[r], settings.topics[r]).values()) for r in ROUTED)


def _crash_verdicts(handle: ServeHandle, faults: list[Fault]) -> tuple[list[str], list[str]]:
    """Crashed runs no fault explains, and runs a fault ended that were not marked Crashed."""
    planned = set().union(*(f.ended_runs for f in faults)) if faults else set()
    with handle.client() as client:
        crashed = pool_runs(client, ("CRASHED",))
        ended = [client.read_flow_run(run_id) for run_id in planned]
    unplanned = [f"{run.name} ({run.state.message})" for run in crashed if run.id not in planned]
    not_crashed = [f"{run.name} ({run.state.name})" for run in ended if run.state is None or run.state.type.value != "CRASHED"]
    return unplanned, not_crashed
