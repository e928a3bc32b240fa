"""Foreseeable mistakes give one clear line and a non-zero exit, never a traceback.

The table below holds bad invocations of every command: each must end with exit 2 and exactly
one line on stderr, `error: ...`, saying what is wrong, and nothing on stdout.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from orderstream.cli.source import MAX_SEED_ORDERS
from orderstream.settings import Settings
from tests.helpers import orderstream_env


@pytest.fixture
def home(tmp_path) -> Settings:
    """A fresh home: its SQLite database, no broker (KAFKA_* and DATABASE_URL of this process unset)."""
    return Settings(orderstream_home=tmp_path / "home", database_url=None, kafka_bootstrap_servers=None,
                    kafka_port=0, kafka_security_protocol="PLAINTEXT", kafka_sasl_username=None,
                    kafka_sasl_password=None, kafka_ssl_ca_location=None)


def run(*args: str, settings: Settings, env: dict[str, str] | None = None, **update) -> subprocess.CompletedProcess[str]:
    environment = orderstream_env(settings.model_copy(update=update), **(env or {}))
    return subprocess.run([sys.executable, "-m", "orderstream", *args], env=environment,
                          capture_output=True, text=True, timeout=180)


BROKER_DOWN = {"kafka_bootstrap_servers": "127.0.0.1:1"}
NO_DATABASE = {"database_url": "postgresql://nobody@127.0.0.1:1/none"}

# (arguments, settings changed, what the one line must say); {name} is a file made by `files`.
BAD_INVOCATIONS: list[tuple[tuple[str, ...], dict, str]] = [
    (("nosuch",), {}, "No such command 'nosuch'"),
    (("--log-format", "xml", "status"), {}, "--log-format: 'xml' is not one of"),
    (("status",), {"env": {"TOPIC_PARTITIONS": "abc"}}, "bad setting TOPIC_PARTITIONS"),
    # stack
    (("stack", "up", "--brokers", "2"), {}, "--brokers: 2 is not a cluster size here"),
    (("stack", "up", "--brokers", "x"), {}, "--brokers: must be a valid integer"),
    (("stack", "up", "--partitions", "0"), {}, "--partitions: must be at least 1"),
    (("stack", "up", "--secure", "--brokers", "3"), {}, "--secure runs a single local node"),
    (("stack", "down", "extra"), {}, "unexpected extra argument"),
    (("stack", "status", "--bogus"), {}, "No such option: --bogus"),
    (("stack", "nosuch"), {}, "No such command 'nosuch'"),
    # load
    (("load",), {}, "Missing argument 'FILE'"),
    (("load", "{missing}"), {}, "no such file"),
    (("load", "{directory}"), {}, "is a directory"),
    (("load", "{empty_csv}"), {}, "is empty: there is nothing to load"),
    (("load", "{empty_jsonl}"), {}, "is empty: there is nothing to load"),
    (("load", "{header_only_csv}"), {}, "has no rows: there is nothing to load"),
    (("load", "{blank_lines_jsonl}"), {}, "has no rows: there is nothing to load"),
    (("load", "{no_event_id_csv}"), {}, "no event_id column, which every event needs (columns: order_id, type)"),
    (("load", "{stock_csv}"), {}, "it looks like a stock file: add --stock"),
    (("load", "--stock", "{events_csv}"), {}, "it has no sku, on_hand"),
    (("load", "{unknown_type}"), {}, "unknown file type '.xml'"),
    (("load", "{broken_jsonl}"), {}, "line 2 is not valid JSON"),
    # seed
    (("seed", "--orders", "-5"), {}, "--orders: must be at least 1"),
    (("seed", "--orders", "0"), {}, "--orders: must be at least 1"),
    (("seed", "--orders", str(MAX_SEED_ORDERS + 1)), {}, f"--orders: must be at most {MAX_SEED_ORDERS}"),
    (("seed", "--invalid-rate", "2"), {}, "--invalid-rate: must be at most 1"),
    (("seed", "--invalid-rate", "-0.1"), {}, "--invalid-rate: must be at least 0"),
    # produce
    (("produce", "--chunk-size", "0"), {}, "--chunk-size: must be at least 1"),
    (("produce", "--chunk-size", "-1"), {}, "--chunk-size: must be at least 1"),
    (("produce", "--duration", "5"), {}, "--duration applies to --continuous only"),
    (("produce", "--continuous", "--duration", "0"), {}, "--duration: 0 is not more than 0"),
    (("produce", "--continuous", "--metrics-port", "99999"), {}, "--metrics-port: must be at most 65535"),
    (("produce",), BROKER_DOWN, "did not answer"),
    # consume
    (("consume",), {}, "Missing argument 'ROLE'; choose from: inventory, delivery"),
    (("consume", "bogus"), {}, "'bogus' is not one of 'inventory', 'delivery'"),
    (("consume", "inventory", "--metrics-port", "99999"), {}, "--metrics-port: must be at most 65535"),
    (("consume", "inventory", "--metrics-port", "-1"), {}, "--metrics-port: must be at least 1"),
    (("consume", "inventory", "--replicas", "0"), {}, "--replicas: must be at least 1"),
    (("consume", "inventory", "--replicas", "-3"), {}, "--replicas: must be at least 1"),
    (("consume", "inventory", "--replicas", "2", "--metrics-port", "65535"), {}, "needs ports up to 65536"),
    (("consume", "delivery", "--drain"), BROKER_DOWN, "did not answer"),
    # run, notify, reconcile, status
    (("run", "extra"), {}, "unexpected extra argument"),
    (("run",), BROKER_DOWN, "did not answer"),
    (("notify", "--limit", "-1"), {}, "--limit: must be at least 1"),
    (("notify",), NO_DATABASE, "cannot reach the database"),
    (("reconcile", "--bogus"), {}, "No such option: --bogus"),
    (("reconcile",), NO_DATABASE, "cannot reach the database"),
    (("status", "--json", "extra"), {}, "unexpected extra argument"),
    (("status",), {"database_url": "mysql://x@y/z"}, "unsupported database"),
    # trace, dlq, quarantine
    (("trace",), {}, "Missing argument 'ORDER_ID'"),
    (("trace", "o1"), NO_DATABASE, "cannot reach the database"),
    (("dlq", "list", "--role", "x"), {}, "--role: 'x' is not one of 'inventory', 'delivery'"),
    (("dlq", "list", "--limit", "-1"), {}, "--limit: must be at least 0"),
    (("dlq", "list"), NO_DATABASE, "cannot reach the database"),
    (("dlq", "replay"), {}, "Missing option '--role'"),
    (("dlq", "replay", "--role", "inventory", "--limit", "0"), {}, "--limit: must be at least 1"),
    (("dlq", "replay", "--role", "inventory"), BROKER_DOWN, "did not answer"),
    (("quarantine", "list", "--limit", "-1"), {}, "--limit: must be at least 0"),
    (("quarantine", "list"), NO_DATABASE, "cannot reach the database"),
    (("quarantine", "revalidate", "{missing}"), {}, "no such file"),
    (("quarantine", "revalidate", "{directory}"), {}, "is a directory"),
    (("quarantine", "revalidate", "{empty_csv}"), {}, "is empty"),
    # reconsume, report, retention
    (("reconsume", "--from", "2026-11-25T10:00:00Z"), {}, "Missing option '--role'"),
    (("reconsume", "--role", "inventory"), {}, "Missing option '--from'"),
    (("reconsume", "--role", "inventory", "--from", "yesterday"), {}, "'yesterday' is not ISO-8601"),
    (("reconsume", "--role", "inventory", "--from", "2026-11-25T10:00:00"), {}, "has no UTC offset"),
    (("reconsume", "--role", "inventory", "--from", "2026-11-25T10:00:00Z"), BROKER_DOWN, "did not answer"),
    (("report", "--days", "0"), {}, "--days: must be at least 1"),
    (("report",), NO_DATABASE, "cannot reach the database"),
    (("retention", "--source-max-age-days", "-1"), {}, "--source-max-age-days: -1 is negative"),
    (("retention", "--ledger-max-age-days", "-2"), {}, "--ledger-max-age-days: -2 is negative"),
    (("retention",), NO_DATABASE, "cannot reach the database"),
    # serve, bench
    (("serve", "--port", "0"), {}, "--port: must be at least 1"),
    (("serve", "--port", "70000"), {}, "--port: must be at most 65535"),
    (("bench", "--repeats", "0"), {}, "--repeats: must be at least 1"),
    (("bench", "--write", "{empty_csv}"), {}, "not a directory"),
    (("bench", "--only", "P9"), {}, "--only P9: no such figure; choose from P1, P2, P3, P4, P5"),
]


def files(tmp_path: Path) -> dict[str, str]:
    """The files the table names, each with the mistake its name says."""
    made = tmp_path / "files"
    made.mkdir()
    contents = {
        "empty_csv": ("empty.csv", ""),
        "empty_jsonl": ("empty.jsonl", ""),
        "header_only_csv": ("header.csv", "event_id,order_id,type\n"),
        "blank_lines_jsonl": ("blank.jsonl", "\n\n"),
        "no_event_id_csv": ("no-id.csv", "order_id,type\no1,inventory\n"),
        "stock_csv": ("stock.csv", "sku,warehouse_id,on_hand\nA,main,3\n"),
        "events_csv": ("events.csv", "event_id,order_id,type,created_at\ne1,o1,inventory,2026-11-25T10:00:00Z\n"),
        "unknown_type": ("events.xml", "<x/>"),
        "broken_jsonl": ("broken.jsonl", '{"event_id": "e1"}\n{not json\n'),
    }
    paths = {}
    for key, (name, text) in contents.items():
        (made / name).write_text(text)
        paths[key] = str(made / name)
    (made / "a-directory").mkdir()
    return paths | {"directory": str(made / "a-directory"), "missing": str(made / "absent.csv")}


@pytest.mark.unit
def test_every_command_answers_a_bad_invocation_with_one_error_line_and_exit_2(home, tmp_path):
    names = files(tmp_path)

    def attempt(case: tuple[tuple[str, ...], dict, str]) -> str | None:
        args, changes, expected = case
        argv = [a.format(**names) for a in args]
        changes = dict(changes)
        result = run(*argv, settings=home, env=changes.pop("env", None), **changes)
        lines = result.stderr.splitlines()
        problems = []
        if result.returncode != 2:
            problems.append(f"exit {result.returncode}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr is not one error line: {result.stderr!r}")
        elif expected not in lines[0]:
            problems.append(f"the line does not say {expected!r}: {lines[0]!r}")
        if result.stdout:
            problems.append(f"stdout: {result.stdout!r}")
        if "\U0001f44e" in result.stderr:  # rich's :-1: emoji
            problems.append("an emoji")
        return f"orderstream {' '.join(args)}: {'; '.join(problems)}" if problems else None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(attempt, BAD_INVOCATIONS) if f]
    assert not failures, "\n".join(failures)


@pytest.mark.unit
def test_version_and_help(home):
    version = run("--version", settings=home)
    assert version.returncode == 0 and version.stdout.startswith("orderstream ") and "Apache Kafka 4.3.1" in version.stdout
    helped = run("consume", "--help", settings=home, env={"COLUMNS": "200"})
    assert helped.returncode == 0
    assert "<bool>" not in helped.stdout and "{role}" not in helped.stdout
    assert "Usage: orderstream consume [OPTIONS] ROLE" in helped.stdout
    assert "[default: 1]" in helped.stdout  # --replicas
    top = run("--help", settings=home, env={"COLUMNS": "200"})
    for command in ("load", "seed", "produce", "consume", "run", "notify", "reconcile", "status", "trace", "dlq",
                    "quarantine", "reconsume", "report", "retention", "stack", "serve", "bench"):
        assert f" {command} " in top.stdout, command


@pytest.mark.unit
def test_missing_file_is_one_line(home):
    result = run("load", "does-not-exist.csv", settings=home)
    assert result.returncode == 2
    assert result.stderr == "error: does-not-exist.csv: no such file\n"


@pytest.mark.unit
def test_unreachable_database_is_one_line(home):
    result = run("status", "--json", settings=home, database_url="postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
def test_broker_down_is_one_line_and_moves_nothing(home, tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text("event_id,order_id,type,created_at,sku,quantity\ne1,o1,inventory,2026-11-25T10:00:00Z,A,1\n")
    assert run("load", str(csv), settings=home, **BROKER_DOWN).returncode == 0
    result = run("produce", settings=home, **BROKER_DOWN)
    assert result.returncode == 2
    assert "did not answer" in result.stderr and "orderstream stack up" in result.stderr
    assert "Traceback" not in result.stderr
    status = orjson.loads(run("status", "--json", settings=home, **BROKER_DOWN).stdout)
    assert status["source"]["inventory"] == 1 and status["produced"]["inventory_orders"] == 0


@pytest.mark.unit
def test_status_json_has_every_contract_key_without_a_broker(home):
    result = run("status", "--json", settings=home, kafka_bootstrap_servers="127.0.0.1:1")
    assert result.returncode == 0, result.stderr
    status = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert set(status) == {"source", "quarantined", "produced", "applied", "inventory", "deliveries",
                           "dead_lettered", "notifications", "consumer_lag", "reconciliation"}
    assert status["source"] == {"inventory": 0, "delivery": 0, "other": 0, "refused_duplicates": 0}
    assert status["consumer_lag"] == {"inventory": -1, "delivery": -1}
    assert status["reconciliation"] == {"ok": True, "missing": 0, "duplicates": 0, "in_flight": 0}


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
        "def starting_flow_run(**_):\n"
        "    raise TerminationSignal(signal=15)\n"
        "cli.app = starting_flow_run\n"
        "cli.main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=orderstream_env(home),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == -signal.SIGTERM
    assert "stopped by SIGTERM" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.integration
def test_stack_up_refuses_a_partition_count_the_topics_do_not_have(settings):
    # The session's cluster is external to this home: `stack up` creates the topics if missing, and
    # the test's topics exist with 3 partitions.
    result = run("stack", "up", "--partitions", "5", settings=settings)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --partitions 5 applies only to topics it creates")
    assert f"{settings.inventory_topic} has 3" in result.stderr and len(result.stderr.splitlines()) == 1
    same = run("stack", "up", "--partitions", "3", settings=settings)
    assert same.returncode == 0, same.stderr
