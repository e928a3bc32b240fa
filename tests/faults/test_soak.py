"""The soak, scaled down for `make test-faults` (issue 17): the served system (Prefect server,
worker, continuous producer and both consumers as deployment runs) under steady load for
`SOAK_MINUTES`, the worker and then one consumer's process killed with SIGKILL in the middle
third, and the audit at the end.

The test checks the soak's verdict on what does not depend on the machine's speed: both kills
were recovered from by new runs (within the soak's own 300 s watch; the 60 s goal is the soak's
verdict, printed with the figures), no healthy run was marked Crashed, every killed run was, memory
stayed flat, and the audit found 0 lost and 0 applied twice. `SOAK_MINUTES` and `SOAK_RATE` scale it.
"""

from __future__ import annotations

import os

import orjson
import pytest

from orderstream.soak.report import MAX_RSS_RATIO, PLOT_NAME, SAMPLES_NAME
from orderstream.soak.run import RESULT_NAME, run_soak
from orderstream.soak.sampler import PROCESSES

SOAK_MINUTES = float(os.environ.get("SOAK_MINUTES", "5"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "500"))
FIELDS = {"minutes", "rate_per_s", "processes", "crashed_runs_unplanned", "recoveries", "lost", "applied_twice",
          "max_lag", "p99_ms", "passed"}


@pytest.mark.fault
@pytest.mark.timeout(1800)
def test_scaled_down_soak_recovers_from_both_kills_keeps_memory_flat_and_loses_nothing() -> None:
    soak = run_soak(SOAK_MINUTES, SOAK_RATE, say=lambda message: print(f"soak: {message}", flush=True))
    result = soak.result
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())

    assert set(result) == FIELDS
    assert orjson.loads((soak.home / RESULT_NAME).read_bytes()) == result
    assert (soak.home / PLOT_NAME).stat().st_size > 0 and (soak.home / SAMPLES_NAME).stat().st_size > 0

    assert [r["killed"] for r in result["recoveries"]] == ["worker", "consumer"]
    assert all(r["recovered_s"] is not None for r in result["recoveries"]), result["recoveries"]
    assert result["crashed_runs_unplanned"] == 0, soak.outcome.crashed_unplanned
    assert soak.outcome.planned_not_crashed == []

    assert set(result["processes"]) == set(PROCESSES)
    for name, memory in result["processes"].items():
        assert memory["ratio"] is not None and memory["ratio"] <= MAX_RSS_RATIO, (name, memory)

    assert soak.outcome.drained, soak.outcome.audit
    assert (result["lost"], result["applied_twice"]) == (0, 0), soak.outcome.audit_problems
    assert soak.outcome.audit["produced"] > 0 and soak.outcome.audit["pending"] == 0


# --- a soak stopped by an operator -----------------------------------------------------------------


def _processes(where) -> set[int]:
    """Live processes (other than this one) for which `where(cmdline, environ)` holds."""
    from pathlib import Path

    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if where((proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()):
                found.add(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def _mentioning(home: str) -> set[int]:
    return _processes(lambda cmdline, environ: home.encode() in cmdline or home.encode() in environ)


def _postmasters() -> set[int]:
    return _processes(lambda cmdline, _environ: cmdline.startswith(b"/") and b"postgres\x00-D\x00" in cmdline)


@pytest.mark.fault
@pytest.mark.timeout(900)
def test_a_soak_stopped_by_sigterm_stops_the_stack_and_the_served_roles_it_started() -> None:
    import queue
    import re
    import signal
    import subprocess
    import sys
    import threading

    from orderstream.processes import wait_until

    postmasters_before = _postmasters()
    soak = subprocess.Popen([sys.executable, "-m", "orderstream", "soak", "--minutes", "5", "--rate", "50"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    said: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in soak.stderr], daemon=True).start()  # type: ignore[union-attr]

    def heard(words: str) -> bool:
        while not lines.empty():
            said.append(lines.get())
        return any(words in line for line in said)

    try:
        assert wait_until(lambda: heard("load started"), 300, interval=0.5), "".join(said)
        home = re.search(r"home (\S+)", "".join(said)).group(1)  # type: ignore[union-attr]
        assert _mentioning(home), "the served roles run with the soak's home"
        soak.send_signal(signal.SIGTERM)
        assert soak.wait(240) == 130
    finally:
        if soak.poll() is None:
            soak.kill()
    assert wait_until(lambda: heard("interrupted"), 10, interval=0.2), "".join(said)
    assert not any("Traceback" in line for line in said), "".join(said)
    assert wait_until(lambda: not _mentioning(home), 30, interval=0.5), _mentioning(home)
    assert _postmasters() <= postmasters_before


# --- the zombie automation on its own -------------------------------------------------------------

ZOMBIE_WITHIN_S = 20  # the shipped 120 s, shortened: the test is about which runs it crashes
BEAT_S = 5


@pytest.fixture
def prefect_server(tmp_path):
    from orderstream.processes import free_port
    from orderstream.serve import PrefectServer

    server = PrefectServer.start(tmp_path / "prefect", port=free_port())
    try:
        yield server
    finally:
        server.stop()


def _heartbeat(api_url: str, run_id) -> None:
    import asyncio

    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async def send() -> None:
        async with PrefectEventsClient(api_url) as events:
            await events.emit(Event(
                event="prefect.flow-run.heartbeat",
                resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
                related=[{"prefect.resource.id": "prefect.tag.orderstream", "prefect.resource.role": "tag"}],
            ))

    asyncio.run(send())


@pytest.mark.fault
def test_zombie_automation_crashes_a_run_whose_heartbeats_stop_and_leaves_beating_and_finished_runs_alone(
    prefect_server,
) -> None:
    import time

    import yaml
    from prefect import flow
    from prefect.events.schemas.automations import AutomationCore
    from prefect.states import Completed, Running

    from orderstream.processes import wait_until
    from orderstream.serve import prefect_client
    from orderstream.serve.handle import AUTOMATIONS_FILE, find_project_root

    spec = yaml.safe_load((find_project_root() / AUTOMATIONS_FILE).read_text())["automations"][0]
    spec["trigger"]["within"] = ZOMBIE_WITHIN_S

    @flow(name="zombie_probe")
    def probe() -> None:
        pass

    api = prefect_server.api_url
    with prefect_client(api) as client:
        client.create_automation(AutomationCore.model_validate(spec))
        runs = {}
        for name in ("silent", "beating", "finished"):
            runs[name] = client.create_flow_run(probe, name=name, tags=["orderstream"], state=Running()).id
        for run_id in runs.values():
            _heartbeat(api, run_id)
        client.set_flow_run_state(runs["finished"], Completed())
        _heartbeat(api, runs["finished"])  # one more beat after the end (PrefectHQ/prefect#18653)

        def crashed() -> bool:
            _heartbeat(api, runs["beating"])
            time.sleep(BEAT_S)
            return client.read_flow_run(runs["silent"]).state.is_crashed()

        assert wait_until(crashed, 10 * ZOMBIE_WITHIN_S, interval=0), "the silent run was never marked Crashed"
        beat_until = time.monotonic() + 2 * ZOMBIE_WITHIN_S
        while time.monotonic() < beat_until:  # two more windows: a run that keeps beating is left alone
            _heartbeat(api, runs["beating"])
            time.sleep(BEAT_S)
        states = {name: client.read_flow_run(run_id).state.name for name, run_id in runs.items()}
    assert states == {"silent": "Crashed", "beating": "Running", "finished": "Completed"}


# --- supervision's restart policy and the soak's memory verdict, without a server -----------------


class _Client:
    def __init__(self) -> None:
        self.runs: list = []

    def read_flow_runs(self, **_filters):
        return self.runs[-1:]


class _Handle:
    long_running = ("inventory_data_consumer/inventory-consumer",)

    def __init__(self) -> None:
        self.started: list = []

    def start_role(self, name: str):
        import uuid

        self.started.append(name)
        return uuid.uuid4()


def _run(state, ran_s: float):
    import datetime as dt
    import types
    import uuid

    end = dt.datetime.now(dt.UTC)
    return types.SimpleNamespace(id=uuid.uuid4(), name="run", state=state, infrastructure_pid=None,
                                 start_time=end - dt.timedelta(seconds=ran_s), end_time=end)


@pytest.mark.unit
def test_supervision_restarts_crashed_roles_at_once_backs_off_quick_failures_and_leaves_cancelled_ones() -> None:
    import uuid

    from prefect.states import Cancelled, Crashed

    from orderstream.serve.supervision import FIRST_DELAY_S, Supervisor

    handle, client, said = _Handle(), _Client(), []
    supervisor = Supervisor(handle, said.append)  # type: ignore[arg-type]
    name, deployment = handle.long_running[0], uuid.uuid4()

    client.runs.append(_run(Crashed(), ran_s=600))  # a long-lived run killed: back at once
    supervisor._check_role(client, name, deployment)
    supervisor._check_role(client, name, deployment)  # the same ended run is never restarted twice
    assert handle.started == [name] and [r.kind for r in supervisor.recoveries] == ["role"]

    client.runs.append(_run(Crashed(), ran_s=2))  # a run that fails at once: restarted, but the next waits
    supervisor._check_role(client, name, deployment)
    client.runs.append(_run(Crashed(), ran_s=2))
    supervisor._check_role(client, name, deployment)
    assert len(handle.started) == 2
    assert any(f"next restart in {FIRST_DELAY_S:.0f} s" in line for line in said)

    client.runs.append(_run(Cancelled(), ran_s=600))  # stopped on purpose: stays stopped
    supervisor._check_role(client, name, deployment)
    assert len(handle.started) == 2 and "not restarting a role stopped on purpose" in said[-1]


@pytest.mark.unit
def test_soak_memory_is_judged_per_process_over_its_own_life() -> None:
    from orderstream.soak.report import process_memory
    from orderstream.soak.sampler import Sample

    def sample(t: float, pid: int, mb: float) -> Sample:
        return Sample(t=t, rss_mb={"worker": mb}, pids={"worker": pid}, lag={}, states={}, latency_p99_ms=None,
                      latency_max_ms=None, orders=0)

    # 600 s run: the first worker (100 MB) is replaced at 200 s by one that settles at 150 MB and grows 5%.
    samples = [sample(t, 1, 100.0) for t in range(0, 200, 10)]
    samples += [sample(t, 2, 150.0 if t < 500 else 157.5) for t in range(200, 610, 10)]
    worker = process_memory(samples, 600)["worker"]
    assert worker == {"rss_mb_after_warmup": 150.0, "rss_mb_end": 157.5, "ratio": 1.05}


@pytest.mark.unit
def test_a_dead_worker_is_replaced_with_new_runs_of_its_roles_before_its_old_runs_are_stopped(monkeypatch) -> None:
    import contextlib
    import types
    import uuid

    from orderstream.serve import supervision

    events: list[str] = []
    deployment = uuid.uuid4()
    old = types.SimpleNamespace(id=uuid.uuid4(), deployment_id=deployment, name="old-run")
    other = types.SimpleNamespace(id=uuid.uuid4(), deployment_id=uuid.uuid4(), name="a-run-of-no-role")
    monkeypatch.setattr(supervision, "pool_runs", lambda client, states: [old, other])
    monkeypatch.setattr(supervision, "crash_runs",
                        lambda client, runs, message: events.append(f"crash {len(runs)}") or [r.name for r in runs])

    class Handle(_Handle):
        worker = types.SimpleNamespace(name="prefect worker")

        def client(self):
            return contextlib.nullcontext(object())

        def start_worker(self):
            events.append("worker")
            return types.SimpleNamespace(pid=1)

        def start_role(self, name: str):
            events.append(f"role {name}")
            return super().start_role(name)

    handle = Handle()
    supervisor = supervision.Supervisor(handle, lambda message: None)  # type: ignore[arg-type]
    name = handle.long_running[0]
    supervisor._deployments = {name: deployment}
    supervisor._replace_worker(-9)
    assert events == ["worker", f"role {name}", "crash 2"]
    assert supervisor._roles[name].restarted >= {old.id}  # the tick after does not start it a second time
    assert supervisor.recoveries[-1].kind == "worker" and "started 1" in supervisor.recoveries[-1].detail
