"""How CLI processes set Prefect up: state in the home, no heartbeats for the temporary server."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from orderstream.prefect_runs import local_flow_runs, prepare_prefect

pytestmark = pytest.mark.unit


def test_flow_runs_on_the_temporary_server_send_no_heartbeats() -> None:
    with temporary_settings({PREFECT_API_URL: None}), local_flow_runs():
        assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() is None


def test_flow_runs_on_a_real_server_keep_their_heartbeats() -> None:
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):
        with local_flow_runs():
            assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == 60


def test_prefect_home_is_created_inside_a_home_that_does_not_exist_yet(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_HOME", raising=False)  # restored by monkeypatch afterwards
    home = tmp_path / "new" / "home"
    prepare_prefect(home)
    assert (home / "prefect").is_dir()
