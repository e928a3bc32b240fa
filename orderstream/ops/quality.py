"""The data-quality report: GX Data Docs plus a markdown summary of the last N days.

* Quarantine by reason per day: every quarantine entry whose `quarantined_at` is in the
  window counts once for each reason it has (a row that broke two rules counts under both),
  by UTC day; resolved entries included (they were quarantined that day).
* Expectations: the per-expectation counts the producer stored in
  `producer_batches.validation`, summed over the batches started in the window.
* Worst sources: the `source_loads` whose rows were quarantined in the window, by number of
  quarantined rows, then by rate (quarantined / rows loaded by that load). Rows loaded
  without a load record (e.g. straight into the table) are grouped as `(no load record)`.

The markdown goes to `$ORDERSTREAM_HOME/reports/data_quality.md` and, inside a flow run, to
the Prefect artifact `data-quality-report`. Nothing in the database changes.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from orderstream.db.models import OrderEvent, ProducerBatch, Quarantine, SourceLoad
from orderstream.ops.common import as_utc, markdown_table, utcnow
from orderstream.settings import Settings

WORST_SOURCES = 10
NO_LOAD = "(no load record)"
STREAM_ROWS = 10_000


@dataclass
class ExpectationTotal:
    reason: str
    column: str | None
    expectation: str
    evaluated: int = 0
    failed: int = 0
    batches: int = 0

    @property
    def fail_rate(self) -> float:
        return self.failed / self.evaluated if self.evaluated else 0.0


@dataclass
class SourceQuality:
    load_id: int | None
    source: str
    loaded_at: str | None
    loaded: int
    quarantined: int
    still_open: int

    @property
    def rate(self) -> float:
        return self.quarantined / self.loaded if self.loaded else 0.0


@dataclass
class QualityReport:
    days: int
    since: str
    generated_at: str
    batches: int = 0
    rows_evaluated: int = 0
    rows_rejected: int = 0
    quarantined: int = 0  # entries in the window
    still_open: int = 0  # of those, not resolved
    by_day: dict[str, dict[str, int]] = field(default_factory=dict)  # day -> reason -> rows
    by_reason: dict[str, int] = field(default_factory=dict)
    expectations: list[ExpectationTotal] = field(default_factory=list)
    worst_sources: list[SourceQuality] = field(default_factory=list)
    docs_index: str | None = None
    markdown_path: str | None = None
    markdown: str = ""

    def summary(self) -> dict:
        data = asdict(self)
        data.pop("markdown")
        return data


def quarantine_by_day(session: Session, since: dt.datetime, report: QualityReport) -> None:
    by_day: dict[str, Counter] = defaultdict(Counter)
    query = (
        select(Quarantine.quarantined_at, Quarantine.reasons, Quarantine.resolved_at)
        .where(Quarantine.quarantined_at >= since)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for quarantined_at, reasons, resolved_at in session.execute(query):
        report.quarantined += 1
        report.still_open += resolved_at is None
        day = as_utc(quarantined_at).date().isoformat()
        for reason in orjson.loads(reasons or "[]"):
            by_day[day][reason] += 1
    report.by_day = {day: dict(counts.most_common()) for day, counts in sorted(by_day.items())}
    totals: Counter = Counter()
    for counts in by_day.values():
        totals.update(counts)
    report.by_reason = dict(totals.most_common())


def expectation_totals(session: Session, since: dt.datetime, report: QualityReport) -> None:
    totals: dict[str, ExpectationTotal] = {}
    query = (
        select(ProducerBatch.validation)
        .where(ProducerBatch.started_at >= since, ProducerBatch.validation.is_not(None))
        .execution_options(yield_per=STREAM_ROWS)
    )
    for (validation,) in session.execute(query):
        assert validation is not None  # the query excludes NULL
        data = orjson.loads(validation)
        report.batches += 1
        rows = data.get("rows") or {}
        report.rows_evaluated += int(rows.get("evaluated", 0))
        report.rows_rejected += int(rows.get("rejected", 0))
        for stat in data.get("expectations") or []:
            reason = stat.get("reason") or stat.get("expectation") or "?"
            total = totals.setdefault(
                reason, ExpectationTotal(reason=reason, column=stat.get("column"), expectation=stat.get("expectation", ""))
            )
            total.evaluated += int(stat.get("evaluated", 0))
            total.failed += int(stat.get("unexpected", 0))
            total.batches += 1
    report.expectations = sorted(totals.values(), key=lambda t: (-t.failed, t.reason))


def worst_sources(session: Session, since: dt.datetime, report: QualityReport, top: int = WORST_SOURCES) -> None:
    rows = session.execute(
        select(
            OrderEvent.load_id,
            func.count(),
            func.sum(case((Quarantine.resolved_at.is_(None), 1), else_=0)),
        )
        .select_from(Quarantine)
        .join(OrderEvent, OrderEvent.id == Quarantine.source_id)
        .where(Quarantine.quarantined_at >= since)
        .group_by(OrderEvent.load_id)
    ).all()
    if not rows:
        return
    load_ids = [load_id for load_id, _, _ in rows if load_id is not None]
    loads = {
        load.id: load
        for load in session.scalars(select(SourceLoad).where(SourceLoad.id.in_(load_ids)))
    } if load_ids else {}
    sources = []
    for load_id, quarantined, still_open in rows:
        load = loads.get(load_id) if load_id is not None else None
        if load is not None:
            loaded = int(load.loaded)
            name, loaded_at = load.source, as_utc(load.loaded_at).isoformat(timespec="seconds")
        else:
            condition = OrderEvent.load_id.is_(None) if load_id is None else OrderEvent.load_id == load_id
            loaded = int(session.scalar(select(func.count()).where(condition)) or 0)
            name, loaded_at = NO_LOAD if load_id is None else f"load {load_id} (record missing)", None
        sources.append(SourceQuality(load_id, name, loaded_at, loaded, int(quarantined), int(still_open or 0)))
    sources.sort(key=lambda s: (-s.quarantined, -s.rate, s.load_id or 0))
    report.worst_sources = sources[:top]


def render_markdown(report: QualityReport) -> str:
    lines = [
        f"# Data quality: the last {report.days} days",
        "",
        f"Since {report.since} (generated {report.generated_at}).",
        "",
        f"* {report.batches} producer batches validated: {report.rows_evaluated} rows evaluated, "
        f"{report.rows_rejected} rejected.",
        f"* {report.quarantined} rows quarantined in the window, {report.still_open} still open "
        f"(awaiting correction), {report.quarantined - report.still_open} resolved.",
    ]
    if report.docs_index:
        lines.append(f"* Great Expectations Data Docs: [{report.docs_index}](file://{report.docs_index})")
    lines += ["", "## Quarantine by reason per day", ""]
    if report.by_day:
        lines.append(
            markdown_table(
                ["day", "reason", "rows"],
                [(day, reason, n) for day, counts in report.by_day.items() for reason, n in counts.items()],
            )
        )
        lines += ["", "### Totals by reason", ""]
        lines.append(markdown_table(["reason", "rows"], list(report.by_reason.items())))
    else:
        lines.append("Nothing was quarantined in the window.")
    lines += ["", "## Expectations", ""]
    if report.expectations:
        lines.append(
            markdown_table(
                ["reason", "column", "expectation", "evaluated", "failed", "fail rate"],
                [
                    (t.reason, t.column, t.expectation, t.evaluated, t.failed, f"{t.fail_rate:.2%}")
                    for t in report.expectations
                ],
            )
        )
    else:
        lines.append("No producer batch was validated in the window.")
    lines += ["", "## Worst offending sources", ""]
    if report.worst_sources:
        lines.append(
            markdown_table(
                ["load", "source", "loaded at", "rows loaded", "quarantined", "still open", "rate"],
                [
                    (s.load_id, s.source, s.loaded_at, s.loaded, s.quarantined, s.still_open, f"{s.rate:.2%}")
                    for s in report.worst_sources
                ],
            )
        )
    else:
        lines.append("No source had a row quarantined in the window.")
    return "\n".join(lines) + "\n"


def build_report(session: Session, settings: Settings, days: int, *, docs_index: Path | None) -> QualityReport:
    """Everything but Data Docs (built by the caller, it may be slow) and the file."""
    if days < 1:
        from orderstream.errors import UserError

        raise UserError("days must be at least 1")
    now = utcnow()
    since = now - dt.timedelta(days=days)
    report = QualityReport(
        days=days, since=since.isoformat(timespec="seconds"), generated_at=now.isoformat(timespec="seconds"),
        docs_index=str(docs_index) if docs_index else None,
    )
    quarantine_by_day(session, since, report)
    expectation_totals(session, since, report)
    worst_sources(session, since, report)
    report.markdown = render_markdown(report)
    return report


def report_path(settings: Settings) -> Path:
    return settings.home / "reports" / "data_quality.md"


def write_report(settings: Settings, report: QualityReport) -> Path:
    path = report_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(report.markdown, encoding="utf-8")
    tmp.replace(path)
    report.markdown_path = str(path)
    return path
