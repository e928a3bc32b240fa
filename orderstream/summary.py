"""Readable tables for `status` and the end of `run`."""

from __future__ import annotations

from rich.table import Table
from sqlalchemy import func, select

from orderstream.console import console


def _table(title: str, rows: list[tuple[str, object]]) -> Table:
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
    r = outcome.reconciliation
    verdict = "[green]clean[/]" if r.ok else f"[red]NOT clean[/]: missing {r.missing}, duplicates {r.duplicates}"
    console.print(f"reconciliation: {verdict}")
    console.print(f"reports: validation results under {settings.gx_dir}, mail under {settings.mail_dir}, "
                  f"Prefect runs under {settings.home / 'prefect'}")
