"""Foreseeable mistakes give one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

@pytest.fixture
def home_env(tmp_path) -> dict[str, str]:
    return {"ORDERSTREAM_HOME": str(tmp_path / "home"), "KAFKA_BOOTSTRAP_SERVERS": "", "DATABASE_URL": ""}

def clean(env: dict[str, str]) -> dict[str, str]:
    """Unset the variables given as empty strings."""
    out = {k: v for k, v in os.environ.items() if not (k in env and env[k] == "")}
    out.update({k: v for k, v in env.items() if v != ""})
    return out

def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orderstream", *args], env=clean(env),
                          capture_output=True, text=True, timeout=180)

@pytest.mark.unit
def test_missing_file_is_one_line(home_env):
    result = run("load", "does-not-exist.csv", env=home_env)
    assert result.returncode == 2
    assert "does-not-exist.csv: no such file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout

@pytest.mark.unit
def test_unreachable_database_is_one_line(home_env):
    env = {**home_env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = run("status", "--json", env=env)
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr

@pytest.mark.unit
def test_wrong_database_url_is_one_line(home_env):
    result = run("status", "--json", env={**home_env, "DATABASE_URL": "mysql://x@y/z"})
    assert result.returncode == 2 and "unsupported database" in result.stderr
    assert "Traceback" not in result.stderr

@pytest.mark.unit
def test_broker_down_is_one_line_and_moves_nothing(home_env, tmp_path):
    env = {**home_env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    csv = tmp_path / "e.csv"
    csv.write_text("event_id,order_id,type,created_at,sku,quantity\ne1,o1,inventory,2026-11-25T10:00:00Z,A,1\n")
    assert run("load", str(csv), env=env).returncode == 0
    result = run("produce", env=env)
    assert result.returncode == 2
    assert "did not answer" in result.stderr and "orderstream stack up" in result.stderr
    assert "Traceback" not in result.stderr

@pytest.mark.unit
def test_status_json_has_every_contract_key_without_a_broker(home_env):
    result = run("status", "--json", env={**home_env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 0, result.stderr
    status = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert set(status) == {"source", "quarantined", "produced", "applied", "inventory", "deliveries",
                           "dead_lettered", "notifications", "consumer_lag", "reconciliation"}
    assert status["source"] == {"inventory": 0, "delivery": 0, "other": 0, "refused_duplicates": 0}
    assert status["consumer_lag"] == {"inventory": -1, "delivery": -1}
