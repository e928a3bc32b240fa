"""P4: peak RSS of the producer flow and of the inventory consumer on a large backlog
against a small one (default 2M vs 200k events).

One repeat per size, in a fresh workspace:

1. load the backlog into the source table (COPY) and the seed's stock (not measured);
2. run `orderstream produce` (one batch pass of the flow) as a subprocess until it exits;
3. run `orderstream consume inventory --drain` as a subprocess on the backlog that produced;
4. both must account for every event (source rows produced; ledger rows = events).

Peak RSS of a subprocess: its own high-water mark `VmHWM` from `/proc/<pid>/status`,
sampled every 50 ms until it exits (the mark never goes down, so the last sample is the
peak up to 50 ms before the exit). `ru_maxrss` from `os.wait4` is kept in the runs as
`wait4_mb` but not used: Python starts children with vfork + exec, and at exec Linux
records the high-water mark of the *parent's* memory as the child's, so it reports at
least this bench process's own peak. The producer's Prefect API server (a temporary server
in a subprocess of its own) is reported apart, as `prefect_server_mb`: it is not the flow's
memory and does not grow with the backlog. Nor is the GX check process the producer starts
(`orderstream.validation.gx_worker`, which judges every batch again off the latency path and
keeps the Data Docs): its peak is reported apart too, as `gx_check_mb`.

`ratio` = median large / median small.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import func, select

from orderstream.bench.common import check_count, log, median, rounded
from orderstream.bench.cpu import descendants, read_stat
from orderstream.bench.data import copy_events, inventory_frames, load_stock
from orderstream.bench.env import BenchEnv, Workspace
from orderstream.db.models import OrderEvent, ProcessedEvent
from orderstream.errors import UserError
from orderstream.processes import cmdline

GOAL_RATIO = 1.2
GOAL_MB = 400
SAMPLE_S = 0.05
GX_CHECK_MODULE = "orderstream.validation.gx_worker"
MB = 1024 * 1024


@dataclass
class PeakRss:
    self_mb: float  # VmHWM of the process itself
    wait4_mb: float  # ru_maxrss from wait4: process and its reaped children
    children_mb: float  # largest VmHWM seen among its other descendants (e.g. Prefect's server)
    gx_check_mb: float  # VmHWM of its GX check process, if it started one
    seconds: float
    exit_code: int


def _hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _descendant_pids(pid: int) -> set[int]:
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            procs[int(entry.name)] = stat
    return descendants(procs, {pid}) - {pid}


def run_measured(args: list[str], env: dict[str, str], log_file: Path) -> PeakRss:
    """Run `orderstream <args>` to completion and return its peak RSS."""
    peaks = {"self": 0, "children": 0, "gx": 0}
    gx_checks: set[int] = set()
    done = threading.Event()
    with open(log_file, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "orderstream", *args], env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )

        def sample() -> None:
            tick = 0
            while not done.is_set():
                peaks["self"] = max(peaks["self"], _hwm_kb(proc.pid) or 0)
                if tick % 10 == 0:  # descendants every 0.5 s: walking /proc costs more
                    for child in _descendant_pids(proc.pid):
                        if child not in gx_checks and GX_CHECK_MODULE in cmdline(child):
                            gx_checks.add(child)
                        kind = "gx" if child in gx_checks else "children"
                        peaks[kind] = max(peaks[kind], _hwm_kb(child) or 0)
                tick += 1
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
    return PeakRss(
        self_mb=peaks["self"] / 1024,
        wait4_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        children_mb=peaks["children"] / 1024,
        gx_check_mb=peaks["gx"] / 1024,
        seconds=elapsed,
        exit_code=proc.returncode,
    )


@dataclass
class P4Run:
    events: int
    producer: PeakRss
    consumer: PeakRss


def run_once(env: BenchEnv, events: int) -> P4Run:
    with env.workspace("p4") as ws:
        copy_events(ws.engine, inventory_frames(events))
        load_stock(ws.engine)
        logs = ws.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        environ = ws.subprocess_env()
        producer = run_measured(["produce"], environ, logs / "produce.log")
        _check_exit(ws, "produce", producer, logs / "produce.log")
        check_count("P4 produced", events, _count(ws, select(func.count()).where(OrderEvent.outcome == "produced")))
        consumer = run_measured(["consume", "inventory", "--drain"], environ, logs / "consume.log")
        _check_exit(ws, "consume", consumer, logs / "consume.log")
        check_count("P4 applied", events, _count(ws, select(func.count()).select_from(ProcessedEvent)))
    log.info(
        "P4 run, %d events: producer %.0f MB (%.0f s), consumer %.0f MB (%.0f s)",
        events, producer.self_mb, producer.seconds, consumer.self_mb, consumer.seconds,
    )
    return P4Run(events, producer, consumer)


def _count(ws: Workspace, query) -> int:
    with ws.engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def _check_exit(ws: Workspace, what: str, peak: PeakRss, log_file: Path) -> None:
    if peak.exit_code != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        raise UserError(f"P4: orderstream {what} exited with {peak.exit_code}: {' | '.join(tail)}")


def _role(runs_small: list[P4Run], runs_large: list[P4Run], role: str) -> dict:
    small = median(getattr(r, role).self_mb for r in runs_small) or 0.0
    large = median(getattr(r, role).self_mb for r in runs_large) or 0.0
    return {
        "small_mb": rounded(small),
        "large_mb": rounded(large),
        "ratio": rounded(large / small if small else None, 3),
        "children_large_mb": rounded(median(getattr(r, role).children_mb for r in runs_large)),
        "gx_check_large_mb": rounded(median(getattr(r, role).gx_check_mb for r in runs_large)),
        "large_seconds": rounded(median(getattr(r, role).seconds for r in runs_large)),
    }


def measure(env: BenchEnv, small: int, large: int, repeats: int, scaled_down: bool) -> dict:
    runs_small: list[P4Run] = []
    runs_large: list[P4Run] = []
    for _ in range(repeats):
        runs_large.append(run_once(env, large))
        runs_small.append(run_once(env, small))
    producer = _role(runs_small, runs_large, "producer")
    consumer = _role(runs_small, runs_large, "consumer")
    producer["prefect_server_mb"] = producer.pop("children_large_mb")
    consumer.pop("children_large_mb")
    consumer.pop("gx_check_large_mb")
    met = all(
        role["ratio"] is not None and role["ratio"] <= GOAL_RATIO and (role["large_mb"] or 0) <= GOAL_MB
        for role in (producer, consumer)
    )
    return {
        "producer": producer,
        "consumer": consumer,
        "goal": f"ratio <= {GOAL_RATIO} and large_mb <= {GOAL_MB}",
        "goal_met": met,
        "small_events": small,
        "large_events": large,
        "scaled_down": scaled_down,
        "note": f"{'--quick: ' if scaled_down else ''}{large:,} vs {small:,} events",
        "repeats": repeats,
        "runs": [
            {"events": r.events, "producer": asdict(r.producer), "consumer": asdict(r.consumer)} for r in runs_large + runs_small
        ],
    }
