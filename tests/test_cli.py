"""Foreseeable mistakes give one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys

import orjson
import pytest

from orderstream.settings import Settings
from tests.helpers import orderstream_env


@pytest.fixture
def home(tmp_path) -> Settings:
    """A fresh home: its SQLite database, no broker (KAFKA_* and DATABASE_URL of this process unset)."""
    return Settings(orderstream_home=tmp_path / "home", database_url=None, kafka_bootstrap_servers=None,
                    kafka_port=0, kafka_security_protocol="PLAINTEXT", kafka_sasl_username=None,
                    kafka_sasl_password=None, kafka_ssl_ca_location=None)


def run(*args: str, settings: Settings, **update) -> subprocess.CompletedProcess[str]:
    env = orderstream_env(settings.model_copy(update=update))
    return subprocess.run([sys.executable, "-m", "orderstream", *args], env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.unit
def test_missing_file_is_one_line(home):
    result = run("load", "does-not-exist.csv", settings=home)
    assert result.returncode == 2
    assert "does-not-exist.csv: no such file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.unit
def test_unreachable_database_is_one_line(home):
    result = run("status", "--json", settings=home, database_url="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_wrong_database_url_is_one_line(home):
    result = run("status", "--json", settings=home, database_url="mysql://x@y/z")
    assert result.returncode == 2 and "unsupported database" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_broker_down_is_one_line_and_moves_nothing(home, tmp_path):
    down = {"kafka_bootstrap_servers": "127.0.0.1:1"}
    csv = tmp_path / "e.csv"
    csv.write_text("event_id,order_id,type,created_at,sku,quantity\ne1,o1,inventory,2026-11-25T10:00:00Z,A,1\n")
    assert run("load", str(csv), settings=home, **down).returncode == 0
    result = run("produce", settings=home, **down)
    assert result.returncode == 2
    assert "did not answer" in result.stderr and "orderstream stack up" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_status_json_has_every_contract_key_without_a_broker(home):
    result = run("status", "--json", settings=home, kafka_bootstrap_servers="127.0.0.1:1")
    assert result.returncode == 0, result.stderr
    status = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert set(status) == {"source", "quarantined", "produced", "applied", "inventory", "deliveries",
                           "dead_lettered", "notifications", "consumer_lag", "reconciliation"}
    assert status["source"] == {"inventory": 0, "delivery": 0, "other": 0, "refused_duplicates": 0}
    assert status["consumer_lag"] == {"inventory": -1, "delivery": -1}


@pytest.mark.unit
def test_a_sqlite_database_locked_by_another_writer_says_so(tmp_path):
    import sqlite3

    from sqlalchemy import create_engine

    from orderstream.db.engine import migrate
    from orderstream.errors import UserError

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's open write transaction
    try:
        with pytest.raises(UserError, match="stayed locked by another writer"):
            migrate(create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1}))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.unit
def test_sigterm_while_prefect_starts_a_flow_run_ends_like_sigterm_without_a_traceback(home):
    # Prefect's engine turns a SIGTERM that arrives before the flow body into TerminationSignal.
    code = (
        "import orderstream.cli as cli\n"
        "from prefect.exceptions import TerminationSignal\n"
        "def starting_flow_run():\n"
        "    raise TerminationSignal(signal=15)\n"
        "cli.app = starting_flow_run\n"
        "cli.main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=orderstream_env(home),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == -signal.SIGTERM
    assert "stopped by SIGTERM" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
