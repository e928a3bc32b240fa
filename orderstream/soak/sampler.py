"""What the soak records every `INTERVAL_S`: the memory of each process of the served system, the
flow-run states, the consumer lag and the source -> applied latency.

Processes are found afresh at every sample, by role, because a fault replaces them: the Prefect
server and the worker are `serve`'s children; the continuous producer and each consumer are the
flow-run processes of their deployments' Running runs. A role's RSS is the sum over its process
group (a flow run with replicas > 1 supervises its replicas in its group; the worker's flow runs
have groups of their own, so they do not count as the worker's).

Latency: the load generator remembers the commit time of one routed event in ten; each sample
looks those up in the consumer groups' ledger (by primary key) and takes out the ones applied.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from orderstream.db.models import ProcessedEvent
from orderstream.kafka.lag import partition_lag
from orderstream.serve import ServeHandle
from orderstream.serve.api import pool_runs, run_pid
from orderstream.settings import Settings
from orderstream.soak.load import ROUTED, LoadGenerator

INTERVAL_S = 10.0
LOOKUP_CHUNK = 1_000
PROC = Path("/proc")

# Report name -> deployment, for the flow-run roles.
RUN_ROLES = {
    "inventory-consumer": "inventory_data_consumer/inventory-consumer",
    "delivery-consumer": "delivery_data_consumer/delivery-consumer",
    "producer": "produce_orders/produce-continuous",
}
PROCESSES = ("inventory-consumer", "delivery-consumer", "producer", "prefect-server", "worker")
CONSUMER_OF = {"inventory": "inventory-consumer", "delivery": "delivery-consumer"}


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_mb: dict[str, float | None]  # process -> resident memory (None: not running at that moment)
    pids: dict[str, int | None]
    lag: dict[str, int | None]  # role -> messages its group has not committed (None: unreadable)
    states: dict[str, int]  # flow-run state name -> runs of the pool in it (Scheduled ones left out)
    latency_p99_ms: float | None  # of the sampled events applied since the previous sample
    latency_max_ms: float | None
    orders: int  # written by the load generator so far

    @property
    def total_lag(self) -> int | None:
        values = [v for v in self.lag.values() if v is not None]
        return sum(values) if values else None


@dataclass
class Sampler:
    settings: Settings
    engine: Engine
    handle: ServeHandle
    load: LoadGenerator
    started: float  # monotonic time the load started
    samples: list[Sample] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # every sampled event applied so far
    _deployments: dict[UUID, str] = field(default_factory=dict, repr=False)

    def sample(self) -> Sample:
        pids = self.role_pids()
        rss = rss_by_group()
        with self.handle.client() as client:
            runs = pool_runs(client, ("PENDING", "RUNNING", "CANCELLING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED"))
        states = Counter(run.state.name for run in runs if run.state is not None)
        window = self.collect_latencies()
        sample = Sample(
            t=round(time.monotonic() - self.started, 1),
            rss_mb={name: (rss.get(pid) if pid is not None else None) for name, pid in pids.items()},
            pids=pids,
            lag={role: self.lag(role) for role in ROUTED},
            states=dict(states),
            latency_p99_ms=percentile(window, 99),
            latency_max_ms=max(window) if window else None,
            orders=self.load.stats.orders,
        )
        self.samples.append(sample)
        return sample

    def role_pids(self) -> dict[str, int | None]:
        """The process (group leader) of each role now."""
        pids: dict[str, int | None] = {name: None for name in PROCESSES}
        pids["prefect-server"] = self.handle.server.child.pid if self.handle.server.child.alive() else None
        worker = self.handle.worker
        pids["worker"] = worker.pid if worker is not None and worker.alive() else None
        with self.handle.client() as client:
            if not self._deployments:
                self._deployments = {client.read_deployment_by_name(d).id: name for name, d in RUN_ROLES.items()}
            for run in pool_runs(client, ("RUNNING",)):
                name = self._deployments.get(run.deployment_id)
                if name is not None:
                    pids[name] = run_pid(run.infrastructure_pid)
        return pids

    def lag(self, role: str) -> int | None:
        try:
            return sum(partition_lag(self.settings, self.settings.groups[role], self.settings.topics[role]).values())
        except Exception:  # noqa: BLE001 - a broker that blinks leaves a gap in the plot, not a failed soak
            return None

    def collect_latencies(self) -> list[float]:
        """Latencies (ms) of the sampled events applied since the last call."""
        window: list[float] = []
        for role in ROUTED:
            waiting = self.load.take_samples(role)
            ids = list(waiting)
            found: list[str] = []
            with Session(self.engine) as session:
                for start in range(0, len(ids), LOOKUP_CHUNK):
                    chunk = ids[start : start + LOOKUP_CHUNK]
                    rows = session.execute(
                        select(ProcessedEvent.event_id, ProcessedEvent.processed_at).where(
                            ProcessedEvent.consumer_group == self.settings.groups[role],
                            ProcessedEvent.event_id.in_(chunk),
                        )
                    ).all()
                    for event_id, processed_at in rows:
                        window.append(max(0.0, (epoch(processed_at) - waiting[event_id]) * 1000))
                        found.append(event_id)
            self.load.forget(role, found)
        self.latencies_ms.extend(window)
        return window


def epoch(value: dt.datetime) -> float:
    """Epoch seconds of a database timestamp (SQLite hands back naive UTC ones)."""
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return round(ordered[index], 1)


def rss_by_group() -> dict[int, float]:
    """Resident memory (MB) of every process group, by group id (its leader's pid)."""
    if not (PROC / "self" / "stat").exists():
        return _rss_by_group_ps()
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    groups: dict[int, float] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        pgrp, rss_pages = int(fields[2]), int(fields[21])
        groups[pgrp] = groups.get(pgrp, 0.0) + rss_pages * page_mb
    return {pgrp: round(mb, 1) for pgrp, mb in groups.items()}


def _rss_by_group_ps() -> dict[int, float]:
    out = subprocess.run(["ps", "-A", "-o", "pgid=,rss="], capture_output=True, text=True).stdout
    groups: dict[int, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            groups[int(parts[0])] = groups.get(int(parts[0]), 0.0) + int(parts[1]) / 1024
    return {pgrp: round(mb, 1) for pgrp, mb in groups.items()}
