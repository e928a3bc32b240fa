"""The soak's faults and how long the system takes to get over them.

`kill_worker` sends SIGKILL to the Prefect worker (its flow runs survive it, unsupervised, until
`serve` ends them); `kill_consumer` sends SIGKILL to the process of one consumer's flow run. Each
remembers the runs it ends: those are the planned Crashed runs, every other Crashed run is a
false verdict.

A role has recovered once a run of its deployment that is not one of those is Running and has
done work since it was first seen Running: its group committed offsets further (a consumer), or
its topics grew (the producer). `recovered_s` is the time from the kill until every role the
fault took down has recovered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from uuid import UUID

from orderstream.errors import UserError
from orderstream.kafka import clients
from orderstream.kafka.groups import group_committed
from orderstream.kafka.lag import end_offsets
from orderstream.serve import ServeHandle
from orderstream.serve.api import pool_runs, run_pid
from orderstream.settings import Settings
from orderstream.soak.sampler import RUN_ROLES

RECOVERY_DEADLINE_S = 300.0  # well past the 60 s goal: the figure is reported even when it fails
POLL_S = 1.0
KILLED_CONSUMER = "inventory-consumer"
ROLE_OF_CONSUMER = {"inventory-consumer": "inventory", "delivery-consumer": "delivery"}


@dataclass
class Fault:
    killed: str  # "worker" | "consumer"
    pid: int
    at: float  # monotonic time of the kill
    roles: tuple[str, ...]  # the roles (sampler names) it takes down
    ended_runs: set[UUID]  # its planned crashes
    recovered_s: float | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def settled(self, for_s: float) -> bool:
        """Recovered at least `for_s` ago."""
        return self.recovered_s is not None and time.monotonic() >= self.at + self.recovered_s + for_s


def kill_worker(handle: ServeHandle) -> Fault:
    worker = handle.worker
    if worker is None or not worker.alive():
        raise UserError("soak: the worker is not running, so it cannot be killed")
    with handle.client() as client:
        runs = pool_runs(client, ("PENDING", "RUNNING", "CANCELLING"))
    os.kill(worker.pid, signal.SIGKILL)
    return Fault("worker", worker.pid, time.monotonic(), tuple(RUN_ROLES), {run.id for run in runs})


def kill_consumer(handle: ServeHandle, name: str = KILLED_CONSUMER) -> Fault | None:
    """None if the consumer has no Running run right now (the caller tries again later)."""
    with handle.client() as client:
        deployment_id = client.read_deployment_by_name(RUN_ROLES[name]).id
        runs = [run for run in pool_runs(client, ("RUNNING",)) if run.deployment_id == deployment_id]
    pids = [(run, pid) for run in runs if (pid := run_pid(run.infrastructure_pid)) is not None]
    if not pids:
        return None
    run, pid = pids[0]
    os.kill(pid, signal.SIGKILL)
    return Fault("consumer", pid, time.monotonic(), (name,), {run.id})


def watch_recovery(fault: Fault, handle: ServeHandle, settings: Settings) -> None:
    """Measure `fault.recovered_s` in a thread of its own (the soak samples meanwhile)."""
    fault._thread = threading.Thread(target=_watch, args=(fault, handle, settings), name=f"soak-recovery-{fault.killed}",
                                     daemon=True)
    fault._thread.start()


def _watch(fault: Fault, handle: ServeHandle, settings: Settings) -> None:
    remaining = set(fault.roles)
    baseline: dict[str, int] = {}
    with handle.client() as client:
        deployments = {client.read_deployment_by_name(RUN_ROLES[name]).id: name for name in fault.roles}
    while remaining and time.monotonic() - fault.at < RECOVERY_DEADLINE_S:
        try:
            with handle.client() as client:
                running = {deployments[run.deployment_id] for run in pool_runs(client, ("RUNNING",))
                           if run.deployment_id in deployments and run.id not in fault.ended_runs}
            for name in sorted(remaining & running):
                done = _progress(settings, name)
                if name not in baseline:
                    baseline[name] = done
                elif done > baseline[name]:
                    remaining.discard(name)
        except Exception:  # noqa: BLE001 - an API or broker call that fails is asked again next second
            pass
        if remaining:
            time.sleep(POLL_S)
    if not remaining:
        fault.recovered_s = round(time.monotonic() - fault.at, 1)


def _progress(settings: Settings, name: str) -> int:
    """How far a role has got: its group's committed offsets (a consumer), its topics' ends (the producer)."""
    if name in ROLE_OF_CONSUMER:
        role = ROLE_OF_CONSUMER[name]
        return sum(group_committed(settings, settings.groups[role], settings.topics[role]).values())
    admin = clients.admin_client(settings)
    return sum(sum(end_offsets(admin, topic).values()) for topic in settings.topics.values())
