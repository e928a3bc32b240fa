"""A running `orderstream serve` system: the stack it prepares, its server, worker and long-running
flow runs, started in order and stopped the other way."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from orderstream.errors import UserError
from orderstream.processes import Child, group_running, stop_group, wait_until
from orderstream.serve.api import (
    LIVE_STATES,
    WORK_POOL,
    cancel_runs,
    crash_leftover_runs,
    deploy_all,
    ensure_work_pool,
    install_automations,
    pool_runs,
    prefect_client,
    run_pid,
)
from orderstream.serve.server import SERVER_START_TIMEOUT_S, PrefectServer, check_stop, prefect_env
from orderstream.serve.supervision import Recovery, Supervisor
from orderstream.settings import Settings

# Deployments (`flow name/deployment name`) started as long-running flow runs, in start order.
LONG_RUNNING = (
    "inventory_data_consumer/inventory-consumer",
    "delivery_data_consumer/delivery-consumer",
    "produce_orders/produce-continuous",
)
# The batch producer would race the continuous one over the same pending rows.
PAUSED_WHILE_SERVING = ("produce_orders/produce",)

AUTOMATIONS_FILE = "automations.yaml"  # next to prefect.yaml
WORKER_POLL_S = 2.0  # how soon the worker picks up a run that supervision starts again
CANCEL_TIMEOUT_S = 60.0
RUN_STOP_TIMEOUT_S = 10.0

Say = Callable[[str], None]


def find_project_root(start: Path | None = None) -> Path:
    """The directory holding `prefect.yaml`: this checkout's root, else `start` or the cwd and their parents."""
    candidates = [Path(__file__).resolve().parents[2]]
    here = (start or Path.cwd()).resolve()
    candidates += [here, *here.parents]
    for candidate in candidates:
        if (candidate / "prefect.yaml").is_file():
            return candidate
    raise UserError("no prefect.yaml found: run `orderstream serve` from the orderstream checkout")


@dataclass
class ServeHandle:
    """A running `orderstream serve`: start with `ServeHandle.start(...)`, stop with `stop()` (or `with`)."""

    settings: Settings
    project_root: Path
    server: PrefectServer
    worker: Child | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    long_running: tuple[str, ...] = LONG_RUNNING
    flow_runs: dict[str, UUID] = field(default_factory=dict)  # deployment name -> its newest run started here
    started_stack: bool = False
    crashed_leftovers: list[str] = field(default_factory=list)
    run_pids: set[int] = field(default_factory=set)  # flow-run processes (group leaders) seen while stopping
    final_states: dict[UUID, str] = field(default_factory=dict)  # run id -> its state name once stopped
    supervisor: Supervisor | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ui_url(self) -> str:
        return self.server.url

    @property
    def api_url(self) -> str:
        return self.server.api_url

    @property
    def prefect_home(self) -> Path:
        return self.server.home

    @property
    def recoveries(self) -> list[Recovery]:
        """What supervision restarted so far (see `orderstream.serve.supervision`)."""
        return list(self.supervisor.recoveries) if self.supervisor else []

    def flow_run_url(self, run_id: UUID | str) -> str:
        return f"{self.ui_url}/runs/flow-run/{run_id}"

    def client(self):
        """A synchronous Prefect client of this server (a context manager)."""
        return prefect_client(self.api_url)

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        port: int = 4200,
        host: str = "127.0.0.1",
        project_root: Path | None = None,
        start_stack: bool = True,
        long_running: tuple[str, ...] = LONG_RUNNING,
        server_timeout_s: float = SERVER_START_TIMEOUT_S,
        worker_poll_s: float = WORKER_POLL_S,
        stop: threading.Event | None = None,
        supervise: bool = True,
        say: Say = lambda message: None,
    ) -> ServeHandle:
        """Start everything; on any failure (or `stop` set meanwhile) stop what was started and raise.

        With `supervise`, a thread restarts the worker and the long-running roles when they die
        (see `orderstream.serve.supervision`) until `stop()`.
        """
        root = project_root or find_project_root()
        prefect_home = settings.home / "prefect"
        api_url = f"http://{host}:{port}/api"
        env = prefect_env(settings, api_url)
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(worker_poll_s)

        started_stack = False
        if start_stack:
            started_stack = _prepare_stack(settings, say)
        handle: ServeHandle | None = None
        try:
            t0 = time.monotonic()
            say(f"starting the Prefect server on {host}:{port} (data in {prefect_home})")
            server = PrefectServer.start(prefect_home, port=port, host=host, env=env, timeout_s=server_timeout_s, stop=stop)
            handle = cls(settings, root, server, env=env, long_running=long_running, started_stack=started_stack)
            say(f"Prefect server up in {time.monotonic() - t0:.1f} s")
            handle._start_rest(stop, say)
            if supervise:
                handle.supervisor = Supervisor(handle, say)
                handle.supervisor.start()
            return handle
        except BaseException:
            if handle is not None:
                handle.stop(say=say)
            elif started_stack:
                _stop_stack(settings, say)
            raise

    def _start_rest(self, stop: threading.Event | None, say: Say) -> None:
        logs = self.prefect_home / "logs"
        with self.client() as client:
            if ensure_work_pool(client):
                say(f"created the process work pool {WORK_POOL!r}")
            self.crashed_leftovers = crash_leftover_runs(client)
            if self.crashed_leftovers:
                say(f"marked {len(self.crashed_leftovers)} runs of a previous serve as Crashed")
            automations = install_automations(client, self.project_root / AUTOMATIONS_FILE)
            say(f"automations installed: {', '.join(automations)}")
        check_stop(stop)
        t0 = time.monotonic()
        say(f"registering the deployments of {self.project_root / 'prefect.yaml'}")
        deploy_all(self.project_root, self.env, logs / "deploy.log")
        say(f"deployments registered in {time.monotonic() - t0:.1f} s")
        check_stop(stop)
        with self.client() as client:
            for name in PAUSED_WHILE_SERVING:
                client.pause_deployment(client.read_deployment_by_name(name).id)
        worker = self.start_worker()
        say(f"worker started (pid {worker.pid}), its log in {worker.log_path}")
        for name in self.long_running:
            self.start_role(name)

    def start_worker(self) -> Child:
        """Start the process worker of the pool (again, after it died: its log is appended to)."""
        self.worker = Child.start(
            "prefect worker",
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
             "--name", f"orderstream-{socket.gethostname()}"],
            env=self.env, cwd=self.project_root, log_path=self.prefect_home / "logs" / "worker.log",
        )
        return self.worker

    def start_role(self, name: str) -> UUID:
        """A new flow run of the long-running deployment `name`; its id."""
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            run = run_deployment(name, timeout=0, as_subflow=False, tags=["orderstream-serve"])
        assert not isinstance(run, Coroutine)  # outside an event loop async_dispatch runs the sync function
        self.flow_runs[name] = run.id
        return run.id

    def check(self) -> None:
        """Raise UserError if the system cannot go on: the server exited, or (unsupervised) the worker did."""
        if self.supervisor is not None:
            if self.supervisor.error is not None:
                raise self.supervisor.error
            return
        for child in (self.server.child, self.worker):
            if child is not None and not child.alive():
                raise UserError(
                    f"{child.name} exited with code {child.process.returncode}; the end of {child.log_path}:\n{child.tail()}"
                )

    def stop(self, *, cancel_timeout_s: float = CANCEL_TIMEOUT_S, say: Say = lambda message: None) -> None:
        """Cancel the runs still going, stop the worker, the server, then the broker if this started it.

        Idempotent; safe to call from a signal-driven shutdown or a test's finally.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.supervisor is not None:
            self.supervisor.stop()  # what stops now is stopped on purpose
        try:
            if self.worker is not None and self.worker.alive() and self.server.child.alive():
                self._cancel_all(cancel_timeout_s, say)
        finally:
            try:
                if self.worker is not None:
                    say("stopping the worker")
                    self.worker.stop()
                    self._kill_leftover_run_processes(say)
            finally:
                say("stopping the Prefect server")
                self.server.stop()
                if self.started_stack:
                    _stop_stack(self.settings, say)

    def _cancel_all(self, timeout_s: float, say: Say) -> None:
        from prefect.states import Cancelled

        with self.client() as client:
            live = set(self.flow_runs.values())
            live |= {run.id for run in pool_runs(client, LIVE_STATES) if not (run.state and run.state.is_scheduled())}
            ids = sorted(live, key=str)
            say(f"cancelling {len(ids)} flow runs")
            cancel_runs(client, ids)

            def settled() -> bool:
                pending = 0
                for run_id in ids:
                    run = client.read_flow_run(run_id)
                    pid = run_pid(run.infrastructure_pid)
                    if pid is not None:
                        self.run_pids.add(pid)
                    if run.state is None or run.state.is_final():
                        continue
                    # The worker SIGTERMs the run's process group at once but reports Cancelled only
                    # once the group is gone, and counts its unreaped leader as alive for its 30 s
                    # grace. A run whose processes have all exited is cancelled: say so ourselves.
                    if pid is not None and run.state.is_cancelling() and not group_running(pid):
                        client.set_flow_run_state(run_id, Cancelled(message="orderstream serve stopped it"), force=True)
                        continue
                    pending += 1
                return pending == 0

            if not wait_until(settled, timeout_s, interval=0.5):
                left = [run.name for i in ids if not (run := client.read_flow_run(i)).state.is_final()]
                say(f"runs still not cancelled after {timeout_s:.0f} s: {', '.join(left)}; their processes are killed")
            for run_id in ids:
                state = client.read_flow_run(run_id).state
                self.final_states[run_id] = state.name if state else "?"

    def _kill_leftover_run_processes(self, say: Say) -> None:
        """Flow-run processes run in their own process groups: make sure none outlives the worker
        (a scheduled run may have started while the others were being cancelled)."""
        from prefect.states import Cancelled

        leftovers: list[Any] = []
        if self.server.child.alive():
            try:
                with self.client() as client:
                    leftovers = pool_runs(client, ("PENDING", "RUNNING", "CANCELLING"))
                    for run in leftovers:
                        client.set_flow_run_state(
                            run.id, Cancelled(message="orderstream serve stopped its worker"), force=True
                        )
            except Exception as exc:  # noqa: BLE001 - any failure: the processes we know of are killed all the same
                say(f"could not list the runs left on the server: {exc}")
        pids = self.run_pids | {pid for run in leftovers if (pid := run_pid(run.infrastructure_pid)) is not None}
        for pid in pids:
            if group_running(pid):
                stop_group(pid, RUN_STOP_TIMEOUT_S)

    def __enter__(self) -> ServeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _prepare_stack(settings: Settings, say: Say) -> bool:
    """The broker and topics (local ones started unless running) and the migrated database; True if
    this started local broker nodes (so `stop` stops them again)."""
    from orderstream.db.engine import make_engine, migrate
    from orderstream.kafka.address import bootstrap_servers
    from orderstream.stack import local

    t0 = time.monotonic()
    info = local.up(settings)
    if info.started:
        say(f"started the local Kafka in {time.monotonic() - t0:.1f} s at {bootstrap_servers(settings)}")
    migrate(make_engine(settings.db_url))
    return bool(info.started)


def _stop_stack(settings: Settings, say: Say) -> None:
    from orderstream.stack import local

    say("stopping the local Kafka")
    local.down(settings)
