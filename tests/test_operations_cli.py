"""The operations of the deployments and the inspection views as commands, on both databases and the
real broker: `dlq list/replay`, `quarantine list/revalidate`, `trace`, `reconsume`, `report`,
`retention`. Each command runs as an `orderstream` process, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import orjson
import pandas as pd
import pytest
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from orderstream.consumers import run_consumer
from orderstream.db.engine import session_factory
from orderstream.db.models import ProcessedEvent
from orderstream.ops.offsets import group_committed
from orderstream.settings import dlq_topic
from orderstream.source.repository import insert_events, insert_stock
from tests.helpers import orderstream_env
from tests.topics import read_topic

pytestmark = pytest.mark.integration

NOW = "2026-11-25T10:00:00+00:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


def inventory(event_id: str, order_id: str, **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": NOW,
            "sku": "SKU-1", "quantity": "2", **over}


def stock(engine, sku: str, on_hand: int) -> None:
    with session_factory(engine).begin() as session:
        insert_stock(session, pd.DataFrame({"sku": [sku], "warehouse_id": ["main"], "on_hand": [on_hand]}))


def cli(settings, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "orderstream", *args], env=orderstream_env(settings),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == code, f"orderstream {' '.join(args)}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def as_json(settings, *args: str) -> dict:
    return orjson.loads(cli(settings, *args, "--json").stdout)


@pytest.fixture
def pipeline(settings, engine):
    """o1 reserved, o2 dead-lettered (unknown SKU), o3 a scheduled delivery, o4 quarantined."""
    stock(engine, "SKU-1", 10)
    rows = [inventory("i-ok", "o1"), inventory("i-new", "o2", sku="SKU-NEW"),
            {"event_id": "d-1", "order_id": "o3", "type": "delivery", "created_at": NOW, "status": "requested", **ADDRESS},
            inventory("i-bad", "o4", quantity="abc")]
    with session_factory(engine).begin() as session:
        insert_events(session, pd.DataFrame.from_records(rows))
    produce_orders()
    for role in ("inventory", "delivery"):
        run_consumer(settings, role, drain=True, metrics_port=None)
    return settings


def test_dlq_list_shows_what_waits_with_its_origin(pipeline, engine):
    settings = pipeline
    listing = as_json(settings, "dlq", "list")
    assert listing["total"] == 1
    assert listing["counts"] == {dlq_topic(settings.inventory_topic): {"UnknownSku": 1}}
    with Session(engine) as s:
        entry = s.get(ProcessedEvent, (settings.inventory_group, "i-new"))
    dead = listing["dead_letters"][0]
    assert (dead["event_id"], dead["order_id"], dead["role"], dead["error_class"]) == ("i-new", "o2", "inventory", "UnknownSku")
    assert (dead["topic"], dead["partition"], dead["offset"]) == (settings.inventory_topic, entry.partition, entry.offset)
    assert "SKU-NEW" in dead["error_message"]
    assert as_json(settings, "dlq", "list", "--role", "delivery")["total"] == 0
    assert as_json(settings, "dlq", "list", "--reason", "no such reason")["total"] == 0
    text = cli(settings, "dlq", "list", "--reason", "unknownsku").stdout
    assert text.startswith("1 dead letters waiting\n") and "i-new order o2  UnknownSku" in text
    assert f"(from {settings.inventory_topic}[{entry.partition}]@{entry.offset})" in text


def test_quarantine_list_and_revalidate_release_the_corrected_row(pipeline, tmp_path):
    settings = pipeline
    listing = as_json(settings, "quarantine", "list")
    assert (listing["total"], listing["counts"]) == (1, {"quantity must be an integer": 1})
    row = listing["rows"][0]
    assert (row["event_id"], row["order_id"], row["reasons"]) == ("i-bad", "o4", ["quantity must be an integer"])
    assert as_json(settings, "quarantine", "list", "--reason", "QUANTITY")["total"] == 1
    assert as_json(settings, "quarantine", "list", "--reason", "email")["total"] == 0
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("event_id,quantity\ni-bad,2\n")
    revalidated = cli(settings, "quarantine", "revalidate", str(fixes)).stdout
    assert "released 1, still failing 0" in revalidated and "1 applied" in revalidated
    assert as_json(settings, "quarantine", "list") == {"total": 0, "resolved": 1, "counts": {}, "rows": []}


def test_dlq_replay_applies_once_the_sku_exists(pipeline, engine):
    settings = pipeline
    stock(engine, "SKU-NEW", 5)
    replayed = cli(settings, "dlq", "replay", "--role", "inventory").stdout
    assert "read 1, applied 1, still dead-lettered 0" in replayed
    assert as_json(settings, "dlq", "list")["total"] == 0
    again = cli(settings, "dlq", "replay", "--role", "inventory", "--limit", "10").stdout
    assert "read 0, applied 0" in again


def test_trace_follows_each_hop_of_an_order(pipeline):
    settings = pipeline
    trace = as_json(settings, "trace", "o1")
    (event,) = trace["events"]
    [record] = [r for r in read_topic(settings, settings.inventory_topic) if r.headers["event_id"] == b"i-ok"]
    assert (event["event_id"], event["outcome"], event["topic"]) == ("i-ok", "produced", settings.inventory_topic)
    assert (event["partition"], event["offset"]) == (record.partition, record.offset)
    assert [h["step"] for h in event["hops"]] == ["loaded", "validated", "produced", "applied"]
    produced, applied = event["hops"][2], event["hops"][3]
    assert produced["seconds"] >= 0 and applied["seconds"] >= 0
    assert applied["detail"] == f"group {settings.inventory_group}: reserved 2 x SKU-1 at main"
    assert [(r["event_id"], r["outcome"], r["quantity"]) for r in trace["reservations"]] == [("i-ok", "reserved", 2)]

    delivery = as_json(settings, "trace", "o3")
    assert delivery["delivery"]["status"] == "scheduled" and delivery["delivery"]["slot_date"] is not None
    assert [(h["from_status"], h["to_status"]) for h in delivery["history"]] == [(None, "requested"), ("requested", "scheduled")]
    assert [(n["to_status"], n["state"]) for n in delivery["notifications"]] == [("requested", "queued"), ("scheduled", "queued")]

    dead = as_json(settings, "trace", "o2")["events"][0]
    assert dead["hops"][-1]["step"] == "dead_lettered" and "UnknownSku" in dead["hops"][-1]["detail"]
    quarantined = as_json(settings, "trace", "o4")["events"][0]
    assert [h["step"] for h in quarantined["hops"]] == ["loaded", "quarantined"]
    assert quarantined["hops"][1]["detail"] == "quantity must be an integer"

    text = cli(settings, "trace", "o1").stdout
    assert text.startswith("order o1: 1 source events\n")
    assert f"produced      {settings.inventory_topic}[{record.partition}]@{record.offset}" in text

    unknown = cli(settings, "trace", "no-such-order", code=1)
    assert unknown.stdout == ""
    assert unknown.stderr.splitlines() == [
        "no order 'no-such-order': no source event, reservation, delivery or notification has that order_id"
    ]


def test_reconsume_report_and_retention(pipeline):
    settings = pipeline
    before = group_committed(settings, settings.inventory_group, settings.inventory_topic)
    dry = cli(settings, "reconsume", "--role", "inventory", "--from", "2000-01-01T00:00:00Z", "--dry-run").stdout
    assert f"group {settings.inventory_group} on {settings.inventory_topic} would reset" in dry
    assert f"{sum(before.values())} records to re-read" in dry
    assert group_committed(settings, settings.inventory_group, settings.inventory_topic) == before
    reset = cli(settings, "reconsume", "--role", "inventory", "--from", "2000-01-01T00:00:00Z").stdout
    assert f"group {settings.inventory_group} on {settings.inventory_topic} reset to 2000-01-01T00:00:00+00:00" in reset
    every_partition = dict.fromkeys(range(settings.topic_partitions), 0)
    assert group_committed(settings, settings.inventory_group, settings.inventory_topic) == every_partition

    report = cli(settings, "report", "--days", "7").stdout.splitlines()
    assert report[0] == "last 7 days: 1 of 4 rows rejected, 1 quarantined (1 still open)"
    docs = Path(urlparse(report[1].removeprefix("Data Docs: ")).path)
    markdown = Path(report[2].removeprefix("report: "))
    assert docs.name == "index.html" and docs.is_file()
    assert markdown.is_file() and "quantity must be an integer" in markdown.read_text()

    kept = cli(settings, "retention").stdout
    assert kept.startswith("deleted 0 rows loaded before ")
