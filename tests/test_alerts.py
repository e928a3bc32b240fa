"""The Prometheus rules in alerts/: `promtool test rules` on made-up series, the notification
counts they read, and a real Prometheus server (Debian's `prometheus` package) scraping a live
consumer.

The live test keeps the consumer's process up and its metrics answering while the consumer
cannot commit (the test holds the write lock on the ledger, as a long transaction or a stuck
migration would): lag is read from the broker at scrape time, so Prometheus sees it grow and
fires the lag alerts. A frozen process (SIGSTOP) answers no scrape and its lag vanishes with
it: that is what `OrderstreamProcessDown` is for, and the test sees it fire too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import orjson
import pandas as pd
import pytest
import yaml
from confluent_kafka import Producer
from sqlalchemy import Engine, insert, text

from orderstream import metrics
from orderstream.db.engine import is_postgres, make_engine, session_factory
from orderstream.db.models import Notification
from orderstream.kafka.clients import connection_config
from orderstream.notify import send_queued
from orderstream.notify.errors import Deferred, Permanent
from orderstream.settings import Settings
from orderstream.source.repository import insert_stock
from tests.helpers import free_port, orderstream_env, sample, scrape, wait_until

ALERTS = Path(__file__).resolve().parent.parent / "alerts"
RULES = ALERTS / "orderstream.rules.yml"
RULE_TESTS = ALERTS / "orderstream.rules.test.yml"
APT_TIMEOUT_S = 900.0
JOB = "orderstream-consumer"


def ensure_prometheus() -> tuple[str, str]:
    """The paths of `prometheus` and `promtool`, installing Debian's package first if missing;
    skips only where it cannot be installed."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found  # type: ignore[return-value]
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("prometheus is not installed and there is no apt-get to install Debian's `prometheus` package")
    if os.geteuid() != 0:
        pytest.skip("prometheus is not installed and this user is not root: run `apt-get install -y prometheus` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    if done.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run([apt, "update", "-qq"], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
    found = shutil.which("prometheus"), shutil.which("promtool")
    if done.returncode != 0 or not all(found):
        pytest.fail(f"`apt-get install prometheus` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    return found  # type: ignore[return-value]


# --- the rules on made-up series --------------------------------------------------------


@pytest.mark.unit
def test_the_rules_pass_promtools_check_and_their_unit_tests() -> None:
    _, promtool = ensure_prometheus()
    for command in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run([promtool, *command], cwd=ALERTS, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(command)}:\n{done.stdout}{done.stderr}"


@pytest.mark.unit
def test_every_alert_has_a_promtool_case_that_fires_and_one_that_does_not() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
              if "alert" in rule}
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    stays_silent = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert len(alerts) >= 7
    assert fires == alerts and stays_silent == alerts


def fast_rules(rules: str) -> str:
    """The same rules with every minute a second (windows and `for`), for a test that lasts seconds."""
    document = yaml.safe_load(rules)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"\[(\d+)m\]", r"[\1s]", rule["expr"])
            if "for" in rule:
                rule["for"] = re.sub(r"^(\d+)m$", r"\1s", rule["for"])
    return yaml.safe_dump(document, sort_keys=False)


@pytest.mark.unit
def test_fast_rules_turn_minutes_into_seconds_and_nothing_else() -> None:
    fast = yaml.safe_load(fast_rules(RULES.read_text()))
    rules = {rule.get("alert") or rule["record"]: rule for group in fast["groups"] for rule in group["rules"]}
    assert rules["OrderstreamConsumerLagGrowing"]["for"] == "10s"
    assert "[10s]" in rules["OrderstreamConsumerLagGrowing"]["expr"]
    assert "[5s]" in rules["topic:orderstream_messages_consumed:rate5m"]["expr"]
    assert not any(re.search(r"\[\d+m\]", rule["expr"]) for rule in rules.values())


# --- the counts the notifications alert reads ---------------------------------------------


class RefusingTransport:
    """Accepts every message except those to `refuse@` (for good) and `later@` (for now)."""

    commit_every = 1
    sender = "orders@example.com"

    def describe(self) -> str:
        return "a test transport"

    def __enter__(self) -> RefusingTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, message: EmailMessage) -> bool:
        if str(message["To"]).startswith("refuse@"):
            raise Permanent("550 no such mailbox")
        if str(message["To"]).startswith("later@"):
            raise Deferred("451 try again later")
        return True

    def sync(self) -> None:
        return None


@pytest.mark.integration
def test_notification_outcomes_are_counted_for_the_alert(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    recipients = ["a@example.com", "refuse@example.com", "later@example.com", "b@example.com"]
    with session_factory(engine).begin() as session:
        session.execute(insert(Notification), [
            {"order_id": f"ORD-{i}", "to_status": "scheduled", "event_id": f"ev-{i}", "recipient": to,
             "subject": "Your order", "body": "Hello", "message_id": f"<ORD-{i}@orderstream>", "state": "queued",
             "attempts": 0, "created_at": dt.datetime(2026, 11, 25, 10, i, tzinfo=dt.UTC)}
            for i, to in enumerate(recipients)
        ])
    before = {outcome: metrics.notifications.labels(outcome)._value.get() for outcome in metrics.NOTIFICATION_OUTCOMES}
    send_queued(session_factory(engine), Settings(orderstream_home=tmp_path, database_url=db_url),
                transport=RefusingTransport(), backoff=(0.0,), sleep=lambda _s: None)
    counted = {o: metrics.notifications.labels(o)._value.get() - n for o, n in before.items()}
    assert counted == {"sent": 2, "failed": 1, "deferred": 1}


# --- a real Prometheus and a live consumer ------------------------------------------------


class Prometheus:
    """One Prometheus server on 127.0.0.1 with a throwaway storage, scraping every second."""

    def __init__(self, executable: str, workdir: Path, targets: list[str], rules: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "orderstream.rules.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["orderstream.rules.yml"],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [executable, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def get(self, path: str) -> dict | None:
        """The JSON at path, or None while the server does not answer."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def wait_ready(self, timeout_s: float) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
            return (self.get("/api/v1/status/runtimeinfo") or {}).get("status") == "success"

        wait_until(ready, timeout_s, f"prometheus answering at {self.url}", interval=0.2)

    def firing(self, alertname: str, **labels: str) -> list[dict]:
        """The firing alerts of that name whose labels include `labels`."""
        alerts = ((self.get("/api/v1/alerts") or {}).get("data") or {}).get("alerts", [])
        return [a for a in alerts if a["state"] == "firing" and a["labels"].get("alertname") == alertname
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def query(self, promql: str) -> list[dict]:
        body = self.get(f"/api/v1/query?query={urllib.parse.quote(promql)}") or {}
        return (body.get("data") or {}).get("result", [])


class InventorySender:
    """Inventory events on the test's topic: a few at once, or a steady trickle from a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent = 0
        self._producer = Producer(connection_config(settings))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, n: int) -> None:
        for _ in range(n):
            i = self.sent = self.sent + 1
            event = {"event_id": f"alert-{i}", "order_id": f"o{i}", "type": "inventory",
                     "created_at": "2026-11-25T10:00:00Z", "sku": "SKU-1", "quantity": "1"}
            self._producer.produce(self.settings.inventory_topic, orjson.dumps(event), event["order_id"].encode(),
                                   headers=[("event_id", event["event_id"])])
        assert self._producer.flush(30) == 0

    def trickle(self, per_tick: int = 5, tick_s: float = 0.5, limit: int = 2000) -> None:
        """Keep sending until `stop()` (at most `limit` events): lag grows while nobody commits."""
        def run() -> None:
            while not self._stop.wait(tick_s) and self.sent < limit:
                self.send(per_tick)

        self._thread = threading.Thread(target=run, name="inventory-trickle")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)


@contextmanager
def ledger_locked(engine: Engine) -> Iterator[None]:
    """Hold the lock the consumer needs to write its ledger, until the block ends: its batch
    waits (PostgreSQL) or times out and is retried (SQLite), and nothing is committed."""
    with engine.begin() as conn:  # SQLite: this engine begins with BEGIN IMMEDIATE, the write lock
        if is_postgres(conn):
            conn.execute(text("LOCK TABLE processed_events IN ACCESS EXCLUSIVE MODE"))
        yield


@pytest.mark.integration
def test_prometheus_fires_the_lag_alerts_for_a_consumer_that_stops_consuming_and_the_down_alert_when_it_freezes(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    prometheus_bin, _ = ensure_prometheus()
    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame([{"sku": "SKU-1", "warehouse_id": "main", "on_hand": "100000"}]))
    topic, group = settings.inventory_topic, settings.inventory_group
    port = free_port()
    consumer_log = tmp_path / "consume.log"
    with consumer_log.open("w") as out:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "orderstream", "consume", "inventory", "--metrics-port", str(port)],
            env=orderstream_env(settings), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
        )
    sender = InventorySender(settings)
    prometheus: Prometheus | None = None

    def committed() -> float | None:
        assert consumer.poll() is None, f"the consumer exited with {consumer.returncode}: {consumer_log.read_text()[-3000:]}"
        return sample(scrape(port), "orderstream_messages_consumed_total", topic=topic)

    try:
        sender.send(20)
        wait_until(lambda: committed() == 20, 180, f"the consumer commits the first 20 events; its log: {consumer_log}")

        prometheus = Prometheus(prometheus_bin, tmp_path, [f"127.0.0.1:{port}"], fast_rules(RULES.read_text()))
        prometheus.wait_ready(60)
        wait_until(lambda: prometheus.query(f'group_topic:orderstream_consumer_lag:sum{{group="{group}"}}'), 60,
                   "the lag recorded from the live consumer")
        alerts = ("OrderstreamConsumerLagGrowing", "OrderstreamConsumerStalled", "OrderstreamProcessDown")
        assert not any(prometheus.firing(name) for name in alerts)

        # The consumer stops consuming while events keep coming: both lag alerts fire.
        with ledger_locked(engine):
            sender.trickle()
            try:
                growing = wait_until(lambda: prometheus.firing("OrderstreamConsumerLagGrowing", group=group, topic=topic),
                                     120, "OrderstreamConsumerLagGrowing firing")
                wait_until(lambda: prometheus.firing("OrderstreamConsumerStalled", group=group, topic=topic), 120,
                           "OrderstreamConsumerStalled firing")
            finally:
                sender.stop()
            assert float(growing[0]["value"]) > 0
            assert f"Lag of {group} on {topic} is" in growing[0]["annotations"]["description"]

            # Frozen, it answers no scrape: its lag vanishes with it and the down alert fires instead.
            os.kill(consumer.pid, signal.SIGSTOP)
            try:
                wait_until(lambda: prometheus.firing("OrderstreamProcessDown", job=JOB, instance=f"127.0.0.1:{port}"),
                           60, "OrderstreamProcessDown firing")
                wait_until(lambda: not prometheus.firing("OrderstreamConsumerLagGrowing", group=group), 60,
                           "the lag alert gone with the lag series of the frozen process")
            finally:
                os.kill(consumer.pid, signal.SIGCONT)

        # Resumed and unblocked, it catches up: every event committed, lag back to 0.
        wait_until(lambda: committed() == sender.sent, 180,
                   f"all {sender.sent} events committed after the lock is released; log: {consumer_log}")
        wait_until(lambda: not prometheus.firing("OrderstreamProcessDown"), 60, "the scrape answered again")
    finally:
        sender.stop()
        if prometheus is not None:
            prometheus.stop()
        consumer.send_signal(signal.SIGCONT)
        consumer.send_signal(signal.SIGTERM)
        try:
            consumer.wait(120)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait(10)
    assert consumer.returncode == 0, consumer_log.read_text()[-3000:]
