"""Readable tables for `status` and the end of `run`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table
from sqlalchemy import func, select

from orderstream.console import console, print_line
from orderstream.reconcile import Reconciliation


def _table(title: str, rows: Sequence[tuple[str, object]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def print_status(counters: dict) -> None:
    for section, value in counters.items():
        if isinstance(value, dict):
            console.print(_table(section, list(value.items())))
        else:
            console.print(_table(section, [("total", value)]))


def dead_letter_reasons(session) -> list[tuple[str, int]]:
    from orderstream.db.models import ProcessedEvent

    rows = session.execute(
        select(ProcessedEvent.topic, ProcessedEvent.error_class, func.count())
        .where(ProcessedEvent.outcome == "dead_lettered")
        .group_by(ProcessedEvent.topic, ProcessedEvent.error_class)
    ).all()
    return [(f"{topic}: {error}", n) for topic, error, n in rows]


def print_summary(outcome) -> None:
    from orderstream import status as status_module
    from orderstream.db.engine import make_engine, session_factory

    settings = outcome.settings
    with session_factory(make_engine(settings.db_url))() as session:
        counters = status_module.collect(session, settings)
        dlq = dead_letter_reasons(session)
    c = outcome.produced.counts
    console.print(_table("this run", [
        ("events extracted", c.extracted),
        ("produced to inventory_orders", c.produced_inventory),
        ("produced to delivery_orders", c.produced_delivery),
        ("other types skipped", c.skipped_other),
        ("quarantined", c.quarantined),
        ("notifications sent", outcome.notifications.sent),
        ("notifications failed", outcome.notifications.failed),
    ]))
    reasons = sorted(outcome.produced.quarantine_reasons.items(), key=lambda kv: -kv[1])
    if reasons:
        console.print(_table("quarantine reasons (this run)", reasons))
    if dlq:
        console.print(_table("dead-letter reasons (all time)", dlq))
    print_status(counters)
    print_line(verdict(outcome.reconciliation))
    quality = outcome.quality
    if quality.docs_index:
        print_line(f"Data Docs (validation results): {Path(quality.docs_index).as_uri()}")
    if quality.markdown_path:
        print_line(f"data-quality report: {quality.markdown_path}")
    print_line(f"mail under {settings.mail_dir}, Prefect runs under {settings.home / 'prefect'}")


def verdict(result: Reconciliation) -> str:
    """One line: clean or not, and what is still on its way (in flight is not missing)."""
    state = "clean" if result.ok else f"NOT clean: missing {result.missing}, applied twice {result.duplicates}"
    if result.in_flight:
        produced = result.in_flight - result.pending
        state += (f"; in flight: {result.in_flight} ({result.pending} pending at the source, "
                  f"{produced} produced, not consumed yet)")
    else:
        state += "; nothing in flight"
    if not result.offsets_known:
        state += "; the broker did not answer, so events produced and not consumed count as missing"
    return f"reconciliation: {state}"
