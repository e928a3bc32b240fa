"""`orderstream bench`: the pipeline measured side by side with Kafka's own perf tools.

    result = run_bench(quick=False, home=None)   # P1..P5, cores, kafka_version, machine, ...
    print(to_json(result))                       # --json: one object
    print_table(result)                          # otherwise
    write_results(result, Path("bench"))         # make bench: bench/RESULTS.md + bench/p1_p2.png

One module per measurement (`p1_producer`, `p2_consumer`, `p3_latency`, `p4_memory`,
`p5_prefect`), each with a `measure(env, ...)` returning its JSON section; their docstrings
say exactly what is timed. Every figure is the median of `repeats` runs, each in a fresh
workspace (schema, topics, groups) on the same broker and database.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from orderstream.bench.report import machine_facts, print_table, to_json, write_results

__all__ = [
    "BenchConfig", "FULL", "MEASUREMENTS", "QUICK", "SMALLEST",
    "run_bench", "run_measurements", "print_table", "to_json", "write_results",
]

MEASUREMENTS = ("P1", "P2", "P3", "P4", "P5")


@dataclass(frozen=True)
class BenchConfig:
    p1_events: int
    p2_events: int
    p3_rate_per_s: float
    p3_high_rate_per_s: float | None  # a second P3 run at this rate (None: none)
    p3_duration_s: float
    p3_warmup_s: float  # written at the rate before the timed run (see p3_latency)
    p3_floor_records: int
    p4_small_events: int
    p4_large_events: int
    p4_scaled_down: bool
    p5_events: int


FULL = BenchConfig(
    p1_events=200_000, p2_events=200_000,
    p3_rate_per_s=1_000, p3_high_rate_per_s=5_000, p3_duration_s=60, p3_warmup_s=20, p3_floor_records=10_000,
    p4_small_events=200_000, p4_large_events=2_000_000, p4_scaled_down=False,
    p5_events=100_000,
)
QUICK = replace(
    FULL, p1_events=50_000, p2_events=50_000, p3_duration_s=15, p3_warmup_s=10, p3_floor_records=2_000,
    p4_small_events=50_000, p4_large_events=500_000, p4_scaled_down=True,
)
# The smallest configuration that still exercises every path (tests).
SMALLEST = BenchConfig(
    p1_events=2_000, p2_events=2_000, p3_rate_per_s=200, p3_high_rate_per_s=None, p3_duration_s=3, p3_warmup_s=0.5,
    p3_floor_records=200,
    p4_small_events=1_000, p4_large_events=2_000, p4_scaled_down=True, p5_events=2_000,
)


def run_measurements(env, config: BenchConfig, repeats: int, only: Iterable[str] = MEASUREMENTS) -> dict:
    """Run the chosen measurements on `env`; a failing one is reported, the others still run."""
    from orderstream.bench import p1_producer, p2_consumer, p3_latency, p4_memory, p5_prefect
    from orderstream.bench.common import log

    steps = {
        "P1": lambda: p1_producer.measure(env, config.p1_events, repeats),
        "P2": lambda: p2_consumer.measure(env, config.p2_events, repeats),
        "P3": lambda: p3_latency.measure(
            env, config.p3_rate_per_s, config.p3_duration_s, config.p3_floor_records, repeats, config.p3_high_rate_per_s,
            config.p3_warmup_s,
        ),
        "P4": lambda: p4_memory.measure(env, config.p4_small_events, config.p4_large_events, repeats, config.p4_scaled_down),
        "P5": lambda: p5_prefect.measure(env, config.p5_events, repeats),
    }
    result: dict = {}
    errors: list[str] = []
    for key in only:
        started = time.monotonic()
        log.info("%s: measuring", key)
        try:
            result[key] = steps[key]()
        except Exception as exc:  # noqa: BLE001 - one broken measurement must not hide the others' figures
            log.exception("%s failed", key)
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
            errors.append(f"{key}: {type(exc).__name__}: {exc}")
        log.info("%s: done in %.0f s", key, time.monotonic() - started)
    result["errors"] = errors
    return result


def run_bench(
    quick: bool,
    home: Path | None,
    repeats: int = 3,
    *,
    only: Iterable[str] = MEASUREMENTS,
    config: BenchConfig | None = None,
) -> dict:
    """Start a broker and PostgreSQL (unless the settings point elsewhere), measure P1..P5.

    Returns one JSON-able dict: `P1`..`P5` (each with its figures, `goal`, `goal_met`,
    `runs`; or `error`), `cores`, `kafka_version`, `quick`, `repeats`, `date`, `machine`,
    `duration_s` and `errors` (a list, empty when every measurement ran).
    """
    from orderstream.bench.env import BenchEnv
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.settings import KAFKA_VERSION

    config = config or (QUICK if quick else FULL)
    started = time.monotonic()
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # In-process flow runs as the CLI makes them (subprocesses are the CLI itself).
    with BenchEnv.start(home) as env, local_flow_runs():
        measured = run_measurements(env, config, repeats, only)
        machine = machine_facts(env.postgres_version())
    return {
        **{key: measured[key] for key in MEASUREMENTS if key in measured},
        "cores": os.cpu_count(),
        "kafka_version": KAFKA_VERSION,
        "quick": quick,
        "repeats": repeats,
        "date": date,
        "machine": machine,
        "duration_s": round(time.monotonic() - started, 1),
        "errors": measured["errors"],
    }
