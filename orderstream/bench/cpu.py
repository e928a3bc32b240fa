"""Where the CPU went during one measured window: broker JVM, Python, PostgreSQL, the rest.

Reads `/proc/<pid>/stat` (utime + stime) of the processes at the start and the end of the
window, and `/proc/stat` for the whole machine. Processes are classified by pid:

* `broker`: the local Kafka node(s) of the bench home (unknown for an external cluster);
* `postgres`: the postmaster and its children (unknown for a remote database);
* `python`: this process and its live descendants other than the broker and Java tools,
  plus reaped children (`cutime`/`cstime` of this process, e.g. a finished subprocess);
* `java_tools`: live descendants running `java` other than the broker (the perf tools are
  run to completion inside a window, so they show up as reaped children: see `children_s`);
* `other`: the machine's busy time minus all of the above (other users, the kernel).

On a machine without procfs every figure is None.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class _Proc:
    ppid: int
    comm: str
    ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: reaped children


@dataclass(frozen=True)
class _Snapshot:
    at: float
    procs: dict[int, _Proc]
    machine_busy: int
    machine_total: int


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds per group over `wall_s`; `cores_busy` = all groups / wall."""

    wall_s: float
    python_s: float
    children_s: float  # reaped children of this process: perf-tool JVMs, finished subprocesses
    broker_s: float | None
    postgres_s: float | None
    other_s: float
    machine_busy_s: float

    @property
    def cores_busy(self) -> float:
        return self.machine_busy_s / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict[str, float | None]:
        data = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        data["cores_busy"] = round(self.cores_busy, 2)
        return data


def read_stat(pid: int) -> _Proc | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    head, _, tail = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()
    # fields[0] is state (field 3); utime is field 14, stime 15, cutime 16, cstime 17.
    return _Proc(
        ppid=int(fields[1]),
        comm=comm,
        ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
    )


def _machine() -> tuple[int, int]:
    first = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def _snapshot() -> _Snapshot | None:
    if not (PROC / "stat").exists():
        return None
    procs: dict[int, _Proc] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            proc = read_stat(int(entry.name))
            if proc is not None:
                procs[int(entry.name)] = proc
    busy, total = _machine()
    return _Snapshot(time.monotonic(), procs, busy, total)


def descendants(procs: dict[int, _Proc], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, stack = set(), list(roots)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def postmaster_pid(backend_pid: int | None) -> int | None:
    """The postmaster of a local backend (its parent), or None if it is not on this machine."""
    if backend_pid is None:
        return None
    proc = read_stat(backend_pid)
    return proc.ppid if proc is not None and proc.comm.startswith("postgres") else None


class CpuMeter:
    """`with CpuMeter(broker_pids, postmaster) as meter: ...` then `meter.split`."""

    def __init__(self, broker_pids: set[int] | None = None, postmaster: int | None = None) -> None:
        self.broker_pids = set(broker_pids or ())
        self.postmaster = postmaster
        self.split: CpuSplit | None = None
        self._start: _Snapshot | None = None

    def __enter__(self) -> CpuMeter:
        self._start = _snapshot()
        return self

    def __exit__(self, *exc) -> None:
        end = _snapshot()
        if self._start is not None and end is not None:
            self.split = self._split(self._start, end)

    def _delta(self, start: _Snapshot, end: _Snapshot, pids: set[int]) -> int:
        total = 0
        for pid in pids:
            now = end.procs.get(pid)
            if now is None:
                continue
            before = start.procs.get(pid)
            if before is not None and before.comm == now.comm and before.ticks <= now.ticks:
                total += now.ticks - before.ticks
            else:  # a pid that is new in the window (or reused) counts from zero
                total += now.ticks
        return total

    def _split(self, start: _Snapshot, end: _Snapshot) -> CpuSplit:
        me = os.getpid()
        live = set(end.procs)
        postgres = descendants(end.procs, {self.postmaster}) if self.postmaster in live else set()
        brokers = self.broker_pids & live
        mine = descendants(end.procs, {me}) - brokers - postgres
        python = {pid for pid in mine if end.procs[pid].comm != "java"}
        java = mine - python
        children = end.procs[me].child_ticks - start.procs[me].child_ticks if me in start.procs else 0

        def seconds(ticks: int) -> float:
            return ticks / TICKS

        python_s = seconds(self._delta(start, end, python))
        java_s = seconds(self._delta(start, end, java))
        broker_s = seconds(self._delta(start, end, brokers)) if self.broker_pids else None
        postgres_s = seconds(self._delta(start, end, postgres)) if self.postmaster else None
        children_s = seconds(children) + java_s
        busy = seconds(end.machine_busy - start.machine_busy)
        known = python_s + children_s + (broker_s or 0.0) + (postgres_s or 0.0)
        return CpuSplit(
            wall_s=end.at - start.at,
            python_s=python_s,
            children_s=children_s,
            broker_s=broker_s,
            postgres_s=postgres_s,
            other_s=max(0.0, busy - known),
            machine_busy_s=busy,
        )
