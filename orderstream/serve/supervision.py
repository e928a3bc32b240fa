"""`serve`'s supervision: the worker and the long-running roles are started again when they die.

Every `TICK_S` a thread of the serving process looks at three things:

* **The Prefect server.** If it has exited nothing can be recovered here: supervision stops and
  `ServeHandle.check()` raises, so `serve` stops everything else.
* **The worker.** A process worker that dies leaves its flow-run processes behind (each runs in a
  process group of its own) and their runs Running: nobody would ever report their end, cancel them
  or restart them (Prefect's zombie runs). So supervision starts a new worker and a new run of each
  role at once and, while they boot, ends the old runs: their processes get SIGTERM (each finishes its batch, commits and
  leaves its consumer group; SIGKILL after `STOP_TIMEOUT_S`) and once they are gone the runs are
  marked Crashed. Not before: Prefect lets a run leave Crashed for Completed, which the engine of a
  stopping process would report, and a Completed run is one stopped on purpose. A flow run never
  outlives the worker that supervises it.
* **The roles.** When the newest run of a long-running deployment (continuous producer,
  consumers) has ended Crashed or Failed, a new run of it starts; a run that ended Cancelled or
  Completed was stopped on purpose (from the UI, or by SIGTERM) and stays stopped. A run found
  Crashed while its process still runs (a false zombie verdict) has that process stopped first, so
  there are never two of a role. Restarts of a role that keeps crashing are spaced out.

The worker itself reports a flow-run process that dies (kill -9, OOM) as Crashed within a second;
the zombie automation of `automations.yaml` covers runs that die while no worker is left.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from orderstream.errors import UserError
from orderstream.processes import STOP_TIMEOUT_S, group_running
from orderstream.serve.api import crash_runs, latest_run, mark_crashed, pool_runs, run_pid, stop_groups

if TYPE_CHECKING:
    from orderstream.serve.handle import ServeHandle

log = logging.getLogger(__name__)

TICK_S = 1.0
# A run that ended less than STABLE_AFTER_S after it started Running (or never ran) failed quickly:
# after one such run the next restart waits FIRST_DELAY_S, doubling with every further one up to
# MAX_DELAY_S. A run that lasted longer is restarted at once and the delay starts over.
STABLE_AFTER_S = 20.0
FIRST_DELAY_S = 5.0
MAX_DELAY_S = 300.0
RESTARTED_STATES = ("CRASHED", "FAILED")

Say = Callable[[str], None]


@dataclass(frozen=True)
class Recovery:
    """One thing supervision did: `kind` is "worker" (it died and was replaced) or "role"
    (a run of the deployment `name` ended and a new one started)."""

    kind: str
    name: str
    at: float  # epoch seconds
    ended_runs: tuple[UUID, ...] = ()
    new_run: UUID | None = None
    detail: str = ""


@dataclass
class _RoleState:
    delay: float = 0.0  # before the restart after the next run that fails quickly
    seen_run: UUID | None = None  # the ended run being restarted (or reported as staying stopped)
    not_before: float = 0.0  # monotonic
    restarted: set[UUID] = field(default_factory=set)  # ended runs a new run has replaced


class Supervisor:
    """Runs `tick()` in a daemon thread until `stop()`; what it did is in `recoveries`."""

    def __init__(self, handle: ServeHandle, say: Say, tick_s: float = TICK_S) -> None:
        self.handle = handle
        self.say = say
        self.tick_s = tick_s
        self.recoveries: list[Recovery] = []
        self.error: UserError | None = None
        self._roles = {name: _RoleState() for name in handle.long_running}
        self._deployments: dict[str, UUID] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-supervision", daemon=True)

    def start(self) -> None:
        with self.handle.client() as client:
            self._deployments = {name: client.read_deployment_by_name(name).id for name in self._roles}
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising (before the system is stopped on purpose); waits for a tick in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except UserError as exc:
                self.error = exc
                return
            except Exception as exc:  # noqa: BLE001 - a slow or restarting API must not end supervision
                log.warning("serve supervision: %s: %s", type(exc).__name__, exc)

    def tick(self) -> None:
        server = self.handle.server.child
        if not server.alive():
            raise UserError(
                f"{server.name} exited with code {server.process.returncode}; the end of {server.log_path}:\n{server.tail()}"
            )
        worker = self.handle.worker
        if worker is not None and not worker.alive():
            self._replace_worker(worker.process.returncode)
        with self.handle.client() as client:
            for name, deployment_id in self._deployments.items():
                if self._stop.is_set():
                    return
                self._check_role(client, name, deployment_id)

    def _replace_worker(self, code: int | None) -> None:
        old = self.handle.worker
        with self.handle.client() as client:
            runs = pool_runs(client, ("PENDING", "RUNNING", "CANCELLING"))
            new = self.handle.start_worker()
            # The new runs wait for the new worker while the old runs stop: a consumer's new member
            # joins its group as the old one leaves it, and a producer waits for the old one's lock.
            role_of = {deployment_id: name for name, deployment_id in self._deployments.items()}
            roles = sorted({role_of[run.deployment_id] for run in runs if run.deployment_id in role_of})
            for name in roles:
                self.handle.start_role(name)
            for run in runs:
                if run.deployment_id in role_of:  # its role has a new run: the next tick leaves it
                    self._roles[role_of[run.deployment_id]].restarted.add(run.id)
            names = crash_runs(
                client, runs,
                f"its worker exited with code {code}: `orderstream serve` stopped the run and started its role again",
            )
        detail = f"worker exited with code {code}; ended {len(names)} runs ({', '.join(names) or 'none'}), started {len(roles)}"
        self.say(f"{detail}; started a new worker (pid {new.pid})")
        self.recoveries.append(Recovery("worker", old.name if old else "worker", time.time(),
                                        tuple(run.id for run in runs), detail=detail))

    def _check_role(self, client: Any, name: str, deployment_id: UUID) -> None:
        run = latest_run(client, deployment_id)
        if run is None or run.state is None or not run.state.is_final():
            return
        role = self._roles[name]
        if run.id in role.restarted:
            return
        first_look = role.seen_run != run.id
        role.seen_run = run.id
        if run.state.type.value not in RESTARTED_STATES:
            if first_look:
                self.say(f"{name}: its run {run.name} ended {run.state.name}; not restarting a role stopped on purpose")
            return
        now = time.monotonic()
        if first_look:
            role.not_before = now + role.delay
            if role.delay:
                self.say(f"{name}: run {run.name} failed quickly again; next restart in {role.delay:.0f} s")
            role.delay = min(max(2 * role.delay, FIRST_DELAY_S), MAX_DELAY_S) if _ran_s(run) < STABLE_AFTER_S else 0.0
        if now < role.not_before:
            return
        pid = run_pid(run.infrastructure_pid)
        if pid is not None and group_running(pid):  # declared Crashed yet alive: it goes, and stays Crashed
            stop_groups([pid], STOP_TIMEOUT_S)
            mark_crashed(client, [run], run.state.message or "marked Crashed while its process still ran")
        new_run = self.handle.start_role(name)
        detail = f"run {run.name} ended {run.state.name}: {run.state.message or ''}".strip()
        self.say(f"{name}: {detail}; started a new run")
        self.recoveries.append(Recovery("role", name, time.time(), (run.id,), new_run, detail))
        role.restarted.add(run.id)


def _ran_s(run: Any) -> float:
    """How long the run was Running before it ended (0 if it never ran)."""
    if run.start_time is None:
        return 0.0
    return ((run.end_time or dt.datetime.now(dt.UTC)) - run.start_time).total_seconds()
