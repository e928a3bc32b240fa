"""What `orderstream serve` asks of the Prefect API: a client, the work pool, the deployments of
`prefect.yaml`, the automations of `automations.yaml`, and the flow runs of the pool (listing, ending
the runs nobody supervises any more, cancelling)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from orderstream.errors import UserError
from orderstream.processes import STOP_TIMEOUT_S, TAIL_LINES, cmdline, group_running, log_tail, signal_group, wait_until

WORK_POOL = "orderstream"
DEPLOY_TIMEOUT_S = 300.0
LIVE_STATES = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED")


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


def install_automations(client: Any, path: Path) -> list[str]:
    """Create the automations of `path` (`automations.yaml`), or update those that exist by name; their names."""
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the automations in {path}: {exc}") from None
    names = []
    for spec in data.get("automations", []):
        automation = AutomationCore.model_validate(spec)
        existing = client.read_automations_by_name(automation.name)
        if existing:
            client.update_automation(existing[0].id, automation)
        else:
            client.create_automation(automation)
        names.append(automation.name)
    return names


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
        tail = "\n".join(log_tail(log_path, TAIL_LINES))
        raise UserError(f"`prefect deploy --all` failed with code {done.returncode}; the end of {log_path}:\n{tail}")


# --- flow runs ------------------------------------------------------------------------------------


def pool_runs(client: Any, state_types: tuple[str, ...]) -> list[Any]:
    """The work pool's flow runs in these states."""
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


def run_pid(infrastructure_pid: str | None) -> int | None:
    """The pid (a process-group leader) of a flow run's process, from its `host:pid` infrastructure id."""
    if not infrastructure_pid:
        return None
    try:
        return int(str(infrastructure_pid).rsplit(":", 1)[-1])
    except ValueError:
        return None


def crash_leftover_runs(client: Any) -> list[str]:
    """End what a previous, killed `serve` left: runs in PENDING/RUNNING/CANCELLING become Crashed,
    and a flow-run process of theirs still alive is stopped.

    Called before this machine's worker starts, so no live worker holds such a run; left as they
    are they would hold their deployment's concurrency slot, and an orphaned consumer or producer
    would run beside the new one.
    """
    runs = pool_runs(client, ("PENDING", "RUNNING", "CANCELLING"))
    return crash_runs(client, runs, "left running by a previous `orderstream serve` that was killed")


def crash_runs(client: Any, runs: list[Any], message: str, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop the processes of runs that no worker supervises any more, then mark the runs Crashed.

    Their processes get SIGTERM together (each finishes the batch in hand, commits and leaves its
    consumer group) and SIGKILL after `timeout_s`. The state is set once they are gone: Prefect
    lets a run leave Crashed for the Completed that a stopping engine reports. Returns the names.
    """
    stop_groups(flow_run_pids(runs), timeout_s)
    return mark_crashed(client, runs, message)


def flow_run_pids(runs: list[Any]) -> list[int]:
    """The flow-run processes (process-group leaders) of `runs` that are still alive."""
    return [pid for run in runs if (pid := run_pid(run.infrastructure_pid)) is not None and _is_flow_run_process(pid)]


def mark_crashed(client: Any, runs: list[Any], message: str) -> list[str]:
    """Force the runs Crashed (a run stopped from outside may have reported Completed meanwhile, but
    it did not end on its own); their names."""
    from prefect.states import Crashed

    for run in runs:
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return [run.name for run in runs]


def stop_groups(pgids: list[int], timeout_s: float) -> None:
    """SIGTERM process groups at once, SIGKILL whatever of them still runs after `timeout_s`."""
    for pgid in pgids:
        signal_group(pgid, signal.SIGTERM)
    if not wait_until(lambda: not any(group_running(pgid) for pgid in pgids), timeout_s):
        for pgid in pgids:
            signal_group(pgid, signal.SIGKILL)


def latest_run(client: Any, deployment_id: UUID) -> Any | None:
    """The deployment's newest flow run (by expected start), or None."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=1,
    )
    return runs[0] if runs else None


def _is_flow_run_process(pid: int) -> bool:
    """True if pid runs a Prefect flow-run engine (guards against a recycled pid)."""
    return any("prefect.engine" in arg for arg in cmdline(pid))


def cancel_runs(client: Any, run_ids: list[UUID]) -> None:
    """Ask for cancellation: Cancelling for runs a worker may hold, Cancelled for runs not yet picked up."""
    from prefect.states import Cancelled, Cancelling, State

    for run_id in run_ids:
        run = client.read_flow_run(run_id)
        if run.state is None or run.state.is_final():
            continue
        state: State[Any]
        if run.state.is_scheduled() or run.state.is_paused():
            state = Cancelled(message="orderstream serve is stopping")
        else:
            state = Cancelling(message="orderstream serve is stopping")
        client.set_flow_run_state(run_id, state, force=True)
