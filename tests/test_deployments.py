"""prefect.yaml and `orderstream serve` against a real Prefect server, worker and Kafka broker.

One served system per module (a Prefect server start and `prefect deploy --all` cost most of a
minute between them): it registers every deployment, runs the long-running ones, runs a
reconcile deployment through the worker, and is stopped last, checking nothing is left running.
"""

from __future__ import annotations

import importlib
import inspect
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from orderstream.db.engine import make_engine, session_factory
from orderstream.db.models import ReconciliationRun
from orderstream.processes import free_port, group_running
from orderstream.serve import LONG_RUNNING, WORK_POOL, ServeHandle
from orderstream.settings import Settings
from orderstream.stack.local import delete_topics, ensure_topics

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "prefect.yaml"
RUNNING_TIMEOUT_S = 240.0


def yaml_deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def flow_name_of(entrypoint: str) -> str:
    path, attribute = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute).name


# --- the file itself ------------------------------------------------------------------------------


@pytest.mark.unit
def test_every_entrypoint_names_a_flow_in_flows_taking_the_parameters_given() -> None:
    from prefect import Flow

    for deployment in yaml_deployments():
        path, attribute = deployment["entrypoint"].split(":")
        assert re.fullmatch(r"flows/[a-z_]+\.py", path), deployment["entrypoint"]
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attribute)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(deployment.get("parameters", {})) <= accepted, (deployment["name"], accepted)


@pytest.mark.unit
def test_prefect_yaml_shares_pool_and_schedules_and_holds_no_secrets() -> None:
    text = PREFECT_YAML.read_text()
    config = yaml.safe_load(text)
    assert {d["work_pool"]["name"] for d in config["deployments"]} == {WORK_POOL}
    # Pools and schedules are written once, under definitions, and referenced by alias.
    assert re.findall(r"^ +name: (\S+)$", text, re.M).count(WORK_POOL) == len(config["definitions"]["work_pools"])
    assert all(re.search(rf"\*{alias}\b", text) for alias in ("batch_pool", "long_running_pool", "every_5_minutes"))
    # Settings and secrets come from the worker's environment: nothing is set for the runs here.
    assert all("job_variables" not in d["work_pool"] for d in config["deployments"])
    values = yaml.safe_dump(config).lower()  # without the comments
    for secret in ("smtp://", "postgresql", "password", "secret", "database_url", "bootstrap", "{{ prefect."):
        assert secret not in values, secret


# --- the served system ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve_settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Like the `settings` fixture, for the module: the session broker, uuid topics and groups,
    and a fresh SQLite database in the served home (which the worker's flow runs use)."""
    suffix = uuid.uuid4().hex[:12]
    settings = Settings(
        orderstream_home=tmp_path_factory.mktemp("serve-home"),
        database_url=None,
        kafka_bootstrap_servers=kafka_bootstrap,
        inventory_topic=f"inventory_orders_{suffix}",
        delivery_topic=f"delivery_orders_{suffix}",
        inventory_group=f"inventory_{suffix}",
        delivery_group=f"delivery_{suffix}",
        topic_partitions=3,
    )
    ensure_topics(settings)
    yield settings
    delete_topics(settings)


@pytest.fixture(scope="module")
def served(serve_settings: Settings) -> Iterator[ServeHandle]:
    handle = ServeHandle.start(serve_settings, port=free_port(), project_root=ROOT, worker_poll_s=2.0)
    try:
        yield handle
    finally:
        handle.stop()


def _by_name(handle: ServeHandle) -> dict[str, object]:
    with handle.client() as client:
        deployments = client.read_deployments()
        flows = {flow.id: flow.name for flow in client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in deployments}


@pytest.mark.integration
def test_deploy_all_registers_every_deployment_with_entrypoint_schedule_and_pool(served: ServeHandle) -> None:
    registered = _by_name(served)
    expected = {f"{flow_name_of(d['entrypoint'])}/{d['name']}": d for d in yaml_deployments()}
    assert set(registered) == set(expected)
    for name, spec in expected.items():
        deployment = registered[name]
        assert deployment.entrypoint == spec["entrypoint"], name
        assert (deployment.work_pool_name, deployment.work_queue_name) == (
            WORK_POOL, spec["work_pool"]["work_queue_name"]
        ), name
        assert deployment.parameters == spec.get("parameters", {}), name
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ], name
        schedules = [s.schedule for s in deployment.schedules]
        wanted = spec.get("schedules", [])
        assert len(schedules) == len(wanted), name
        for got, want in zip(schedules, wanted):
            if "interval" in want:
                assert got.interval == timedelta(seconds=want["interval"]), name
            else:
                assert (got.cron, got.timezone) == (want["cron"], want["timezone"]), name
        assert deployment.concurrency_options is not None, name
        assert deployment.concurrency_options.collision_strategy.value == spec["concurrency_limit"]["collision_strategy"]


@pytest.mark.integration
def test_serve_pauses_the_batch_producer_while_the_continuous_one_runs(served: ServeHandle) -> None:
    registered = _by_name(served)
    assert registered["produce_orders/produce"].paused is True
    assert registered["produce_orders/produce-continuous"].paused is False


@pytest.mark.integration
def test_serve_runs_the_continuous_producer_and_both_consumers(served: ServeHandle) -> None:
    assert set(served.flow_runs) == set(LONG_RUNNING)
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    with served.client() as client:
        while True:
            runs = {name: client.read_flow_run(run_id) for name, run_id in served.flow_runs.items()}
            states = {name: run.state.type.value for name, run in runs.items()}
            if all(state == "RUNNING" for state in states.values()):
                break
            assert not any(run.state.is_final() for run in runs.values()), states
            assert time.monotonic() < deadline, f"not all running after {RUNNING_TIMEOUT_S:.0f} s: {states}"
            time.sleep(1)
    assert runs["produce_orders/produce-continuous"].parameters["continuous"] is True
    assert runs["inventory_data_consumer/inventory-consumer"].parameters["replicas"] == 1


@pytest.mark.integration
def test_a_reconcile_deployment_run_completes_through_the_worker(
    served: ServeHandle, serve_settings: Settings
) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: served.api_url}):
        run = run_deployment("reconcile/reconcile", timeout=RUNNING_TIMEOUT_S, poll_interval=1, as_subflow=False)
    assert run.state is not None and run.state.name == "Completed", run.state
    # It ran in the worker's environment, i.e. against the served settings' database.
    with session_factory(make_engine(serve_settings.db_url))() as session:
        rows = session.scalars(select(ReconciliationRun)).all()
    assert [(r.ok, r.missing, r.duplicates) for r in rows] == [(True, 0, 0)]
    with served.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert [a.key for a in artifacts] == ["reconciliation"]


@pytest.mark.integration
def test_stop_cancels_the_runs_and_leaves_no_process(served: ServeHandle) -> None:
    """Last in the module: it stops the served system the tests above share."""
    server, worker = served.server.child, served.worker
    assert worker is not None and server.alive() and worker.alive()
    started = time.monotonic()
    served.stop()
    took = time.monotonic() - started
    assert {served.final_states[run_id] for run_id in served.flow_runs.values()} == {"Cancelled"}
    assert not server.alive() and not worker.alive()
    assert not group_running(server.pid) and not group_running(worker.pid)
    assert served.run_pids and not [pid for pid in served.run_pids if group_running(pid)]
    assert took < 90, f"stopping took {took:.0f} s"
