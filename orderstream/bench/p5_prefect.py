"""P5: the share of a 100k-event batch produce run's wall time spent outside the task bodies.

Method: in this (warmed-up) process, run a produce flow on N events whose steps carry
stopwatches. The flow is the produce flow's body (`run_producer` with the task steps of
`tasks/produce.py`), its tasks copies of the same Tasks, injected through `Steps`:

* each task **call** is timed (what the flow waits for: Prefect's task run creation, state
  changes and result handling plus the body; for the submitted `finish_batch`, until its
  result is in), around a copy of the Task whose `fn` times the **body** alone;
* the flow's `fn` times the **flow body**. The outer wall time is the call of that flow from
  this process until it returns.

    prefect_overhead_share = (wall - task bodies) / wall          (the figure)

where a clock counts the time covered by at least one of its intervals: `finish_batch` of one
chunk runs while `extract_chunk` and `send_batch` of the next do, and that time counts once.
It splits exactly into
    flow_orchestration  = wall - flow body                 (flow run set-up and tear-down)
    flow_body_own       = flow body - task calls           (engine, migrate, producer, loop)
    task_orchestration  = task calls - task bodies         (per task run)
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from orderstream.bench.common import check_count, log, median, rounded, warm_up
from orderstream.bench.data import copy_events, inventory_frames
from orderstream.bench.env import BenchEnv
from orderstream.runtime import settings_in_environment

GOAL_SHARE = 0.05


@dataclass
class Clock:
    """Time covered by the intervals it timed (overlapping intervals count once)."""

    intervals: list[tuple[float, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, started: float, ended: float) -> None:
        with self._lock:  # bodies end in task-runner threads
            self.intervals.append((started, ended))

    @property
    def calls(self) -> int:
        return len(self.intervals)

    @property
    def seconds(self) -> float:
        covered, reach = 0.0, float("-inf")
        for started, ended in sorted(self.intervals):
            if ended > reach:
                covered += ended - max(started, reach)
                reach = ended
        return covered

    def timed(self, fn: Callable) -> Callable:
        """`fn` with a stopwatch; it looks like `fn` to Prefect (name, signature)."""
        add = self.add

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(started, time.perf_counter())

        return wrapper


@dataclass
class Clocks:
    flow_body: Clock = field(default_factory=Clock)
    task_calls: Clock = field(default_factory=Clock)
    task_bodies: Clock = field(default_factory=Clock)


class _TimedTask:
    """Stands in for a Task where the flow calls or submits it: times the call (for a
    submission, from `submit` until its result is in), runs a timed-body copy."""

    def __init__(self, task, clocks: Clocks) -> None:
        self._task = copy.copy(task)
        self._task.fn = clocks.task_bodies.timed(task.fn)
        self._call = clocks.task_calls.timed(self._task.__call__)
        self._calls = clocks.task_calls

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def submit(self, *args, **kwargs):
        started = time.perf_counter()
        future = self._task.submit(*args, **kwargs)
        future.add_done_callback(lambda _: self._calls.add(started, time.perf_counter()))
        return future


def instrumented() -> tuple[Callable, Clocks]:
    """A produce flow whose flow body and task steps are timed."""
    from prefect import flow

    from orderstream.producer.run import run_producer
    from orderstream.runtime import open_runtime
    from tasks.produce import batch_steps, extract_chunk, finish_batch, send_batch

    clocks = Clocks()
    steps = batch_steps(_TimedTask(extract_chunk, clocks), _TimedTask(send_batch, clocks), _TimedTask(finish_batch, clocks))

    def produce_orders():
        return run_producer(open_runtime(), batch_steps=steps)

    return flow(name="produce_orders")(clocks.flow_body.timed(produce_orders)), clocks


@dataclass
class P5Run:
    events: int
    wall_s: float
    task_bodies_s: float
    task_calls_s: float
    flow_body_s: float
    task_runs: int

    @property
    def share(self) -> float:
        return (self.wall_s - self.task_bodies_s) / self.wall_s

    def breakdown(self) -> dict[str, float]:
        return {
            "flow_orchestration_s": round(self.wall_s - self.flow_body_s, 3),
            "flow_body_own_s": round(self.flow_body_s - self.task_calls_s, 3),
            "task_orchestration_s": round(self.task_calls_s - self.task_bodies_s, 3),
            "task_bodies_s": round(self.task_bodies_s, 3),
        }


def run_once(env: BenchEnv, events: int) -> P5Run:
    with env.workspace("p5") as ws:
        copy_events(ws.engine, inventory_frames(events))
        flow, clocks = instrumented()
        with settings_in_environment(ws.settings):
            started = time.perf_counter()
            report = flow()
            wall = time.perf_counter() - started
    check_count("P5 produced", events, report.counts.produced_inventory)
    run = P5Run(
        events=events,
        wall_s=wall,
        task_bodies_s=clocks.task_bodies.seconds,
        task_calls_s=clocks.task_calls.seconds,
        flow_body_s=clocks.flow_body.seconds,
        task_runs=clocks.task_bodies.calls,
    )
    log.info(
        "P5 run: %.2f s wall, %.2f s in %d task bodies: overhead share %.3f", wall, run.task_bodies_s, run.task_runs, run.share
    )
    return run


def measure(env: BenchEnv, events: int, repeats: int) -> dict:
    warm_up(env)
    runs = [run_once(env, events) for _ in range(repeats)]
    share = median(r.share for r in runs)
    breakdown = {key: median(r.breakdown()[key] for r in runs) for key in runs[0].breakdown()}
    return {
        "prefect_overhead_share": rounded(share, 4),
        "goal": f"prefect_overhead_share <= {GOAL_SHARE}",
        "goal_met": share is not None and share <= GOAL_SHARE,
        "events": events,
        "wall_s": rounded(median(r.wall_s for r in runs), 3),
        "task_runs": runs[0].task_runs,
        **{k: rounded(v, 3) for k, v in breakdown.items()},
        "prefect_only_share": rounded(
            median((r.wall_s - r.flow_body_s + r.task_calls_s - r.task_bodies_s) / r.wall_s for r in runs), 4
        ),
        "repeats": len(runs),
        "runs": [{**asdict(r), "share": round(r.share, 4)} for r in runs],
    }
