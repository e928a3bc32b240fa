"""The data-quality report flow: Data Docs, quarantine by reason per day, expectation totals,
worst sources; a second run reports the same and changes nothing."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import orjson
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flows.produce import produce_orders
from flows.quality import data_quality_report
from orderstream.db.engine import session_factory
from orderstream.db.models import OrderEvent, ProducerBatch, Quarantine
from orderstream.ops.quality import render_markdown
from orderstream.source.loader import load_file

NOW = "2026-11-25T10:00:00+00:00"


def inventory(event_id: str, order_id: str = "o1", **over) -> dict:
    return {"event_id": event_id, "order_id": order_id, "type": "inventory", "created_at": NOW,
            "sku": "SKU-1", "quantity": "2", **over}


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame.from_records(rows).to_csv(path, index=False)
    return path


def table_counts(engine) -> tuple[int, int, int]:
    with Session(engine) as s:
        return tuple(int(s.scalar(select(func.count()).select_from(t))) for t in (OrderEvent, Quarantine, ProducerBatch))


@pytest.mark.integration
def test_report_counts_quarantine_by_reason_per_day_expectations_and_worst_sources(settings, engine, tmp_path):
    sessions = session_factory(engine)
    good = write_csv(tmp_path / "good.csv", [inventory(f"g{n}", f"og{n}") for n in range(4)])
    bad = write_csv(tmp_path / "bad.csv", [
        inventory("b-qty", quantity="abc"), inventory("b-two", sku="", quantity="0"), inventory("b-ok"),
    ])
    meh = write_csv(tmp_path / "meh.csv", [inventory("m-qty", quantity="-1")] + [inventory(f"m{n}") for n in range(5)])
    for path in (good, bad, meh):
        load_file(sessions, path)
    produce_orders()
    with Session(engine) as s:
        reasons = Counter(r for q in s.scalars(select(Quarantine)) for r in orjson.loads(q.reasons))
    assert sum(reasons.values()) >= 4  # b-two broke two rules at least

    report = data_quality_report(days=7)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert report.by_day == {today: dict(reasons)}
    assert report.by_reason == dict(reasons)
    assert (report.quarantined, report.still_open) == (3, 3)
    assert (report.batches, report.rows_evaluated, report.rows_rejected) == (1, 13, 3)
    failed = {t.reason: t.failed for t in report.expectations if t.failed}
    assert failed == dict(reasons)
    assert all(t.evaluated <= 13 for t in report.expectations)
    worst = [(s.source, s.loaded, s.quarantined, s.still_open) for s in report.worst_sources]
    assert worst == [("bad.csv", 3, 2, 2), ("meh.csv", 6, 1, 1)]  # good.csv had nothing quarantined
    assert report.worst_sources[0].rate == pytest.approx(2 / 3)

    index = Path(report.docs_index)
    assert index.name == "index.html" and index.is_file()
    assert "order_events" in index.read_text(encoding="utf-8")
    markdown = Path(report.markdown_path).read_text(encoding="utf-8")
    assert markdown == report.markdown
    assert "## Quarantine by reason per day" in markdown and "| bad.csv |" in markdown
    for reason in reasons:
        assert reason.replace("|", "\\|") in markdown

    # A second run reports the same and changes nothing in the database.
    before = table_counts(engine)
    again = data_quality_report(days=7)
    assert table_counts(engine) == before
    first, second = report.summary(), again.summary()
    for volatile in ("since", "generated_at"):
        first.pop(volatile), second.pop(volatile)
    assert first == second


@pytest.mark.integration
def test_report_of_an_empty_window_says_so(settings, engine):
    report = data_quality_report(days=1)
    assert (report.quarantined, report.batches, report.by_day, report.worst_sources) == (0, 0, {}, [])
    assert "Nothing was quarantined in the window." in report.markdown
    assert Path(report.docs_index).is_file()


@pytest.mark.unit
def test_markdown_escapes_pipes_in_reasons_and_sources():
    from orderstream.ops.quality import QualityReport, SourceQuality

    report = QualityReport(days=1, since="s", generated_at="g", quarantined=1, still_open=1,
                           by_day={"2026-11-25": {"a|b": 1}}, by_reason={"a|b": 1},
                           worst_sources=[SourceQuality(1, "x|y.csv", None, 2, 1, 1)])
    text = render_markdown(report)
    assert "| 2026-11-25 | a\\|b | 1 |" in text
    assert "| 1 | x\\|y.csv |  | 2 | 1 | 1 | 50.00% |" in text
