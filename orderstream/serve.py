"""`orderstream serve`: the long-running system for one machine.

In order: the local Kafka (unless external) and the migrated database; a Prefect server with its UI,
its data in `$ORDERSTREAM_HOME/prefect`; the `orderstream` process work pool; the deployments of
`prefect.yaml` (`prefect deploy --all`); a worker; and flow runs of the continuous producer and both
consumers. Stopping (Ctrl-C, SIGTERM, or `ServeHandle.stop()`) goes the other way: cancel the
runs still going, stop the worker, stop the server, then the broker if this started it.

Every child runs in its own process group, so a Ctrl-C in the terminal reaches only this process,
which then stops the children in order instead of all of them dying at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import httpx

from orderstream.errors import UserError
from orderstream.settings import Settings

WORK_POOL = "orderstream"
# Deployments (`flow name/deployment name`) started as long-running flow runs, in start order.
LONG_RUNNING = (
    "inventory_data_consumer/inventory-consumer",
    "delivery_data_consumer/delivery-consumer",
    "produce_orders/produce-continuous",
)
# The batch producer would race the continuous one over the same pending rows.
PAUSED_WHILE_SERVING = ("produce_orders/produce",)

SERVER_START_TIMEOUT_S = 120.0  # a cold first start migrates the database and copies the UI
DEPLOY_TIMEOUT_S = 300.0
CANCEL_TIMEOUT_S = 60.0
PROCESS_STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 20

Say = Callable[[str], None]


class ServeInterrupted(UserError):
    """A stop was requested while the system was still starting."""


# --- environment ----------------------------------------------------------------------------------


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables, for the worker's flow runs (which build `Settings()`)."""
    return settings.as_env()


def prefect_env(settings: Settings, api_url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the Prefect children: this process's, the settings, and Prefect's own home."""
    env = settings.subprocess_env(base)  # a None setting must not come back from this process's environment
    env.update(
        PREFECT_HOME=str(settings.home / "prefect"),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("PREFECT_PROFILE", None)
    env.pop("PREFECT_API_KEY", None)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def find_project_root(start: Path | None = None) -> Path:
    """The directory holding `prefect.yaml`: this checkout's root, else `start` or the cwd and their parents."""
    candidates = [Path(__file__).resolve().parents[1]]
    here = (start or Path.cwd()).resolve()
    candidates += [here, *here.parents]
    for candidate in candidates:
        if (candidate / "prefect.yaml").is_file():
            return candidate
    raise UserError("no prefect.yaml found: run `orderstream serve` from the orderstream checkout")


# --- child processes ------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process in its own process group, its output in a log file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, name: str, argv: list[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_terminate_with_parent(),
            )
        except BaseException:
            log.close()
            raise
        return cls(name, process, log_path, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = PROCESS_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout_s`; the exit code."""
        try:
            if self.alive():
                _signal_group(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    _signal_group(self.pid, signal.SIGKILL)
                    self.process.wait(10)
            # Whatever the leader left behind in its group goes too.
            _signal_group(self.pid, signal.SIGKILL)
            return self.process.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def _terminate_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook (Linux) that has the child SIGTERMed if `serve` dies, even by SIGKILL.

    libc is looked up here, in the parent: between fork and exec the child only makes the call.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook


def _is_flow_run_process(pid: int) -> bool:
    """True if pid runs a Prefect flow-run engine (guards against a recycled pid)."""
    try:
        return b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_running(pgid: int) -> bool:
    """True while a process of the group is alive and not a zombie (from /proc; else any member)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return _group_alive(pgid)
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(predicate: Callable[[], Any], timeout_s: float, stop: threading.Event | None, interval: float = 0.25) -> Any:
    """Poll until `predicate()` is truthy (returned), the deadline (None) or a stop request (raises)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if stop is not None and stop.is_set():
            raise ServeInterrupted("stopped while starting")
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --- the Prefect server ---------------------------------------------------------------------------


@dataclass
class PrefectServer:
    """`prefect server start` (API and UI) on host:port with its data in `home`."""

    child: Child
    host: str
    port: int
    home: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        timeout_s: float = SERVER_START_TIMEOUT_S,
        stop: threading.Event | None = None,
    ) -> PrefectServer:
        """Start the server and return once `/api/health` answers; raise UserError at the deadline."""
        if not _port_is_free(host, port):
            raise UserError(f"port {port} on {host} is in use (another Prefect server?): choose another with --port")
        home.mkdir(parents=True, exist_ok=True)
        server_env = dict(os.environ if env is None else env)
        server_env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=f"http://{host}:{port}/api",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",  # the CLI quiets in-process servers; this one has a log
        )
        child = Child.start(
            "prefect server",
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env=server_env, cwd=home, log_path=home / "logs" / "server.log",
        )
        server = cls(child, host, port, home)
        try:
            server.wait_healthy(timeout_s, stop)
        except BaseException:
            child.stop()
            raise
        return server

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float, stop: threading.Event | None = None) -> None:
        started = time.monotonic()

        def ready() -> bool:
            if not self.child.alive():
                raise UserError(
                    f"the Prefect server exited with code {self.child.process.returncode} while starting; "
                    f"the end of {self.child.log_path}:\n{self.child.tail()}"
                )
            return self.healthy()

        if not _wait(ready, timeout_s, stop, interval=0.2):
            raise UserError(
                f"the Prefect server did not answer {self.api_url}/health within {timeout_s:.0f} s "
                f"(after {time.monotonic() - started:.0f} s); the end of {self.child.log_path}:\n{self.child.tail()}"
            )

    def stop(self, timeout_s: float = PROCESS_STOP_TIMEOUT_S) -> None:
        self.child.stop(timeout_s)


@contextmanager
def prefect_client(api_url: str) -> Iterator[Any]:
    """A synchronous Prefect client of the server at `api_url`, whatever this process's profile says."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            yield client


def ensure_work_pool(client: Any, name: str = WORK_POOL) -> bool:
    """Create the `process` work pool unless it exists; True if created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        client.read_work_pool(name)
        return False
    except ObjectNotFound:
        pass
    try:
        client.create_work_pool(
            WorkPoolCreate(name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template())
        )
    except ObjectAlreadyExists:
        return False
    return True


def deploy_all(project_root: Path, env: Mapping[str, str], log_path: Path, timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    """`prefect deploy --all` from the project root against env's PREFECT_API_URL; UserError on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                cwd=project_root, env={**env, "COLUMNS": "160"}, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, timeout=timeout_s, start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise UserError(f"`prefect deploy --all` took longer than {timeout_s:.0f} s; see {log_path}") from None
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
        raise UserError(f"`prefect deploy --all` failed with code {done.returncode}; the end of {log_path}:\n{tail}")


# --- flow runs ------------------------------------------------------------------------------------

_LIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")


def _pool_runs(client: Any, state_types: tuple[str, ...]) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in state_types]))
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[WORK_POOL])),
        limit=200,
    )


def crash_leftover_runs(client: Any) -> list[str]:
    """End what a previous, killed `serve` left: runs in PENDING/RUNNING/CANCELLING become Crashed,
    and a flow-run process of theirs still alive is stopped.

    Called before this machine's worker starts, so no live worker holds such a run; left as they
    are they would hold their deployment's concurrency slot, and an orphaned consumer or producer
    would run beside the new one.
    """
    from prefect.states import Crashed

    names = []
    for run in _pool_runs(client, ("PENDING", "RUNNING", "CANCELLING")):
        pid = _pid(run.infrastructure_pid)
        if pid is not None and _is_flow_run_process(pid):
            _signal_group(pid, signal.SIGTERM)
            if not _wait(lambda: not _group_running(pid), PROCESS_STOP_TIMEOUT_S, None):
                _signal_group(pid, signal.SIGKILL)
        client.set_flow_run_state(
            run.id, Crashed(message="left running by a previous `orderstream serve` that was killed"), force=True
        )
        names.append(run.name)
    return names


def cancel_runs(client: Any, run_ids: list[UUID]) -> None:
    """Ask for cancellation: Cancelling for runs a worker may hold, Cancelled for runs not yet picked up."""
    from prefect.states import Cancelled, Cancelling

    for run_id in run_ids:
        run = client.read_flow_run(run_id)
        if run.state is None or run.state.is_final():
            continue
        if run.state.is_scheduled() or run.state.is_paused():
            state = Cancelled(message="orderstream serve is stopping")
        else:
            state = Cancelling(message="orderstream serve is stopping")
        client.set_flow_run_state(run_id, state, force=True)


# --- the whole system -----------------------------------------------------------------------------


@dataclass
class ServeHandle:
    """A running `orderstream serve`: start with `ServeHandle.start(...)`, stop with `stop()` (or `with`)."""

    settings: Settings
    project_root: Path
    server: PrefectServer
    worker: Child | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    flow_runs: dict[str, UUID] = field(default_factory=dict)  # deployment name -> the run started here
    started_stack: bool = False
    crashed_leftovers: list[str] = field(default_factory=list)
    run_pids: set[int] = field(default_factory=set)  # flow-run processes (group leaders) seen while stopping
    final_states: dict[UUID, str] = field(default_factory=dict)  # run id -> its state name once stopped
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
        worker_poll_s: float = 5.0,
        stop: threading.Event | None = None,
        say: Say = lambda message: None,
    ) -> ServeHandle:
        """Start everything; on any failure (or `stop` set meanwhile) stop what was started and raise."""
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
            handle = cls(settings, root, server, env=env, started_stack=started_stack)
            say(f"Prefect server up in {time.monotonic() - t0:.1f} s")
            handle._start_rest(long_running, stop, say)
            return handle
        except BaseException:
            if handle is not None:
                handle.stop(say=say)
            elif started_stack:
                _stop_stack(settings, say)
            raise

    def _start_rest(self, long_running: tuple[str, ...], stop: threading.Event | None, say: Say) -> None:
        logs = self.prefect_home / "logs"
        with self.client() as client:
            if ensure_work_pool(client):
                say(f"created the process work pool {WORK_POOL!r}")
            self.crashed_leftovers = crash_leftover_runs(client)
            if self.crashed_leftovers:
                say(f"marked {len(self.crashed_leftovers)} runs of a previous serve as Crashed")
        _check_stop(stop)
        t0 = time.monotonic()
        say(f"registering the deployments of {self.project_root / 'prefect.yaml'}")
        deploy_all(self.project_root, self.env, logs / "deploy.log")
        say(f"deployments registered in {time.monotonic() - t0:.1f} s")
        _check_stop(stop)
        with self.client() as client:
            for name in PAUSED_WHILE_SERVING:
                client.pause_deployment(client.read_deployment_by_name(name).id)
        self.worker = Child.start(
            "prefect worker",
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
             "--name", f"orderstream-{socket.gethostname()}"],
            env=self.env, cwd=self.project_root, log_path=logs / "worker.log",
        )
        say(f"worker started (pid {self.worker.pid}), its log in {self.worker.log_path}")
        self._start_long_running(long_running)

    def _start_long_running(self, names: tuple[str, ...]) -> None:
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            for name in names:
                run = run_deployment(name, timeout=0, as_subflow=False, tags=["orderstream-serve"])
                self.flow_runs[name] = run.id

    def check(self) -> None:
        """Raise UserError if the server or the worker has exited."""
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
            ids = set(self.flow_runs.values())
            ids |= {run.id for run in _pool_runs(client, _LIVE_STATES) if not (run.state and run.state.is_scheduled())}
            ids = sorted(ids, key=str)
            say(f"cancelling {len(ids)} flow runs")
            cancel_runs(client, ids)

            def settled() -> bool:
                pending = 0
                for run_id in ids:
                    run = client.read_flow_run(run_id)
                    pid = _pid(run.infrastructure_pid)
                    if pid is not None:
                        self.run_pids.add(pid)
                    if run.state is None or run.state.is_final():
                        continue
                    # The worker SIGTERMs the run's process group at once but reports Cancelled only
                    # once the group is gone, and counts its unreaped leader as alive for its 30 s
                    # grace. A run whose processes have all exited is cancelled: say so ourselves.
                    if pid is not None and run.state.is_cancelling() and not _group_running(pid):
                        client.set_flow_run_state(run_id, Cancelled(message="orderstream serve stopped it"), force=True)
                        continue
                    pending += 1
                return pending == 0

            if not _wait(settled, timeout_s, None, interval=0.5):
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
                    leftovers = _pool_runs(client, ("PENDING", "RUNNING", "CANCELLING"))
                    for run in leftovers:
                        client.set_flow_run_state(
                            run.id, Cancelled(message="orderstream serve stopped its worker"), force=True
                        )
            except Exception as exc:  # noqa: BLE001 - the processes we know of are killed all the same
                say(f"could not list the runs left on the server: {exc}")
        pids = self.run_pids | {pid for run in leftovers if (pid := _pid(run.infrastructure_pid)) is not None}
        for pid in pids:
            if _group_running(pid):
                _signal_group(pid, signal.SIGTERM)
                _wait(lambda: not _group_running(pid), 10, None)
                _signal_group(pid, signal.SIGKILL)

    def __enter__(self) -> ServeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pid(infrastructure_pid: str | None) -> int | None:
    if not infrastructure_pid:
        return None
    try:
        return int(str(infrastructure_pid).rsplit(":", 1)[-1])
    except ValueError:
        return None


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise ServeInterrupted("stopped while starting")


def _prepare_stack(settings: Settings, say: Say) -> bool:
    """The broker and topics (local ones started unless running) and the migrated database; True if
    this started local broker nodes (so `stop` stops them again)."""
    from orderstream.db.engine import make_engine, migrate
    from orderstream.stack import local

    t0 = time.monotonic()
    info = local.up(settings)
    if info.started:
        say(f"started the local Kafka in {time.monotonic() - t0:.1f} s at {local.bootstrap_servers(settings)}")
    migrate(make_engine(settings.db_url))
    return bool(info.started)


def _stop_stack(settings: Settings, say: Say) -> None:
    from orderstream.stack import local

    say("stopping the local Kafka")
    local.down(settings)


# --- the command ----------------------------------------------------------------------------------


def serve(settings: Settings, *, port: int = 4200, open_browser: bool = False, host: str = "127.0.0.1") -> None:
    """Run the whole system until Ctrl-C or SIGTERM, then stop it cleanly. Raises UserError on failure."""
    from orderstream.console import console

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def say(message: str) -> None:
        console.print(f"[dim]serve:[/] {message}", highlight=False, soft_wrap=True)

    try:
        handle = ServeHandle.start(settings, port=port, host=host, stop=stop, say=say)
        try:
            console.print(f"\nPrefect UI: [bold]{handle.ui_url}[/]", highlight=False, soft_wrap=True)
            for name, run_id in handle.flow_runs.items():
                console.print(f"  {name}: {handle.flow_run_url(run_id)}", highlight=False, soft_wrap=True)
            console.print("Ctrl-C stops everything.\n")
            if open_browser:
                webbrowser.open(handle.ui_url)
            while not stop.wait(1.0):
                handle.check()
            say("stopping")
        finally:
            handle.stop(say=say)
    except ServeInterrupted:
        say("stopped before everything had started")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
