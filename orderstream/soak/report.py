"""The soak's verdict and how it is shown: the result object (`--json`), a table, the samples as CSV
and a PNG plot of memory and lag over time, written into the soak's home.

Memory figures per process: `rss_mb_after_warmup` is the median of the samples in the 5% of the
run right after the warm-up (the first 20%), `rss_mb_end` the median of the samples in its last 5%;
`ratio` is end / after warm-up. Both are of the process that runs at the end, over its own life: a
process that a fault replaced starts again (imports, caches, the backlog of the outage), so the
new one's warm-up is the same 20% of the run's length, counted from when it was first seen. That
is the growth inside one long-running flow run, which is what leaks would show as. (In a run too
short for that, the warm-up ends two windows before the end.)
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orderstream.soak.faults import Fault
from orderstream.soak.sampler import PROCESSES, Sample, percentile

WARMUP_SHARE = 0.20
WINDOW_SHARE = 0.05
MAX_RSS_RATIO = 1.15
MAX_RECOVERY_S = 60.0
PLOT_NAME = "soak.png"
SAMPLES_NAME = "samples.csv"
EXPECTED_FAULTS = ("worker", "consumer")


@dataclass(frozen=True)
class Outcome:
    """What the run produced besides the samples (the audit, the flow runs, the load)."""

    minutes: float
    rate_per_s: float
    faults: list[Fault]
    crashed_unplanned: list[str]  # names of Crashed runs no fault explains
    planned_not_crashed: list[str]  # runs a fault ended that did not end up Crashed
    lost: int
    applied_twice: int
    audit: dict[str, Any]
    audit_problems: list[str]
    drained: bool
    load: dict[str, Any]


def process_memory(samples: list[Sample], duration_s: float) -> dict[str, dict[str, float | None]]:
    """Each process's RSS after warm-up and at the end (see the module docstring)."""
    warmup = WARMUP_SHARE * duration_s
    window = max(WINDOW_SHARE * duration_s, 10.0)  # at least one sample interval
    result: dict[str, dict[str, float | None]] = {}
    for name in PROCESSES:
        measured = [(s.t, s.pids.get(name), mb) for s in samples if (mb := s.rss_mb.get(name)) is not None]
        last = measured[-1][1] if measured and measured[-1][0] >= duration_s - window else None
        mine = [(t, mb) for t, pid, mb in measured if last is not None and pid == last]
        warm = end = None
        if mine:
            born = mine[0][0]
            # A process born late in a short run is measured as late as leaves a window before the end.
            warm_from = max(born, min(born + warmup, duration_s - 2 * window))
            warm = _median([mb for t, mb in mine if warm_from <= t <= warm_from + window])
            end = _median([mb for t, mb in mine if t >= duration_s - window])
        ratio = round(end / warm, 3) if warm and end else None
        result[name] = {"rss_mb_after_warmup": warm, "rss_mb_end": end, "ratio": ratio}
    return result


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def result_object(samples: list[Sample], latencies_ms: list[float], outcome: Outcome) -> dict[str, Any]:
    """The `--json` object: exactly the fields of the soak's contract."""
    duration_s = outcome.minutes * 60
    processes = process_memory(samples, duration_s)
    recoveries = [{"killed": f.killed, "recovered_s": f.recovered_s} for f in outcome.faults]
    lags = [lag for s in samples if (lag := s.total_lag) is not None]
    p99 = percentile(latencies_ms, 99)
    result: dict[str, Any] = {
        "minutes": outcome.minutes,
        "rate_per_s": outcome.rate_per_s,
        "processes": processes,
        "crashed_runs_unplanned": len(outcome.crashed_unplanned),
        "recoveries": recoveries,
        "lost": outcome.lost,
        "applied_twice": outcome.applied_twice,
        "max_lag": max(lags) if lags else None,
        "p99_ms": p99,
    }
    result["passed"] = not failures(result)
    return result


def failures(result: dict[str, Any]) -> list[str]:
    """Why the soak failed (empty: it passed)."""
    reasons = []
    for name, memory in result["processes"].items():
        if memory["ratio"] is None:
            reasons.append(f"{name}: memory not measured at warm-up and at the end")
        elif memory["ratio"] > MAX_RSS_RATIO:
            reasons.append(f"{name}: memory grew {memory['ratio']:.2f}x (limit {MAX_RSS_RATIO})")
    if result["crashed_runs_unplanned"]:
        reasons.append(f"{result['crashed_runs_unplanned']} flow runs Crashed that no fault ended")
    killed = [r["killed"] for r in result["recoveries"]]
    for kind in EXPECTED_FAULTS:
        if kind not in killed:
            reasons.append(f"the {kind} was never killed")
    for recovery in result["recoveries"]:
        if recovery["recovered_s"] is None or recovery["recovered_s"] > MAX_RECOVERY_S:
            took = "never" if recovery["recovered_s"] is None else f"in {recovery['recovered_s']:.0f} s"
            reasons.append(f"after the {recovery['killed']} kill the roles recovered {took} (limit {MAX_RECOVERY_S:.0f} s)")
    if result["lost"] or result["applied_twice"]:
        reasons.append(f"audit: {result['lost']} lost, {result['applied_twice']} applied twice")
    return reasons


def print_report(result: dict[str, Any], outcome: Outcome, home: Path, console: Console) -> None:
    table = Table(title=f"soak: {outcome.minutes:g} min at {outcome.rate_per_s:g} orders/s")
    for column in ("process", "RSS after warm-up (MB)", "RSS at the end (MB)", "ratio"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for name, memory in result["processes"].items():
        table.add_row(name, _n(memory["rss_mb_after_warmup"]), _n(memory["rss_mb_end"]), _n(memory["ratio"]))
    console.print(table)
    for recovery in result["recoveries"]:
        console.print(f"kill -9 {recovery['killed']}: roles working again after {_n(recovery['recovered_s'])} s")
    console.print(f"max lag {_n(result['max_lag'])} messages, source -> applied p99 {_n(result['p99_ms'])} ms")
    console.print(f"unplanned Crashed runs: {result['crashed_runs_unplanned']} {outcome.crashed_unplanned or ''}".rstrip())
    if outcome.planned_not_crashed:
        console.print(f"killed runs not marked Crashed: {outcome.planned_not_crashed}")
    console.print(f"load: {outcome.load}")
    console.print(f"audit: {outcome.audit}" + ("" if outcome.drained else " (did not drain in time)"))
    for problem in outcome.audit_problems:
        console.print(f"  {problem}", highlight=False)
    console.print(f"samples, plot and logs in {home}")
    reasons = failures(result)
    console.print("[bold green]passed[/]" if not reasons else "[bold red]failed:[/] " + "; ".join(reasons))


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def write_samples(samples: list[Sample], path: Path) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t_s", "orders", *(f"rss_mb_{n}" for n in PROCESSES), "lag_inventory", "lag_delivery",
                         "latency_p99_ms", "latency_max_ms", "states"])
        for s in samples:
            writer.writerow([s.t, s.orders, *(s.rss_mb.get(n) for n in PROCESSES), s.lag.get("inventory"),
                             s.lag.get("delivery"), s.latency_p99_ms, s.latency_max_ms,
                             " ".join(f"{k}={v}" for k, v in sorted(s.states.items()))])


def write_plot(samples: list[Sample], faults: list[Fault], started: float, path: Path) -> bool:
    """RSS per process and lag per group over time, the kills marked; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t / 60 for s in samples]
    fig, (memory, lag) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    for name in PROCESSES:
        memory.plot(t, [s.rss_mb.get(name) for s in samples], label=name)
    memory.set_ylabel("RSS (MB)")
    memory.legend(loc="upper left", fontsize="small")
    for role in ("inventory", "delivery"):
        lag.plot(t, [s.lag.get(role) for s in samples], label=f"{role} lag")
    lag.set_ylabel("consumer lag (messages)")
    lag.set_xlabel("minutes since the load started")
    lag.legend(loc="upper left", fontsize="small")
    for fault in faults:
        for axis in (memory, lag):
            axis.axvline((fault.at - started) / 60, color="grey", linestyle="--", linewidth=0.8)
        memory.annotate(f"kill -9 {fault.killed}", ((fault.at - started) / 60, memory.get_ylim()[1]),
                        fontsize="small", ha="left", va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
