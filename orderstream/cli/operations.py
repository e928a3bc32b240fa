"""The remaining operations of the deployments: `reconsume`, `report`, `retention`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from orderstream.cli.app import REPAIR, RoleOption, app
from orderstream.cli.checks import not_negative
from orderstream.console import print_line

MAX_REPORT_DAYS = 3660


def _timestamp(value: str) -> str:
    """Checked while parsing: ISO-8601 with an offset."""
    from orderstream.errors import UserError
    from orderstream.ops.offsets import parse_timestamp

    try:
        parse_timestamp(value)
    except UserError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.command(rich_help_panel=REPAIR)
def reconsume(
    role: RoleOption,
    timestamp: Annotated[
        str, typer.Option("--from", help="ISO-8601 with an offset, e.g. 2026-11-25T10:00:00Z", callback=_timestamp)
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be re-read, change nothing")] = False,
) -> None:
    """Reset a consumer group to a point in time, so that its consumers re-read from there.

    The `reconsume-from-timestamp` deployment. Refused while the group has members: stop its
    consumers first. Events that took effect already are counted no-ops when re-read.
    """
    from flows.reprocess import reconsume_from_timestamp
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_all
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN

    check_all(settings_for(ADMIN))
    with local_flow_runs():
        reset = reconsume_from_timestamp(role=role.value, timestamp=timestamp, dry_run=dry_run)
    for p in reset.partitions:
        before = "none" if p.committed_before is None else str(p.committed_before)
        print_line(f"  {reset.topic}[{p.partition}]: committed {before} -> {p.offset} (end {p.end}), "
                   f"{p.to_reread} to re-read")
    verb = "would reset" if dry_run else ("reset" if reset.changed else "left unchanged (already there)")
    typer.echo(f"group {reset.group} on {reset.topic} {verb} to {reset.timestamp}: {reset.to_reread} records to re-read")


@app.command(rich_help_panel=REPAIR)
def report(
    days: Annotated[int, typer.Option(help="the window, in days back from now", min=1, max=MAX_REPORT_DAYS)] = 30,
) -> None:
    """Build the Data Docs and the data-quality report, and print where they are.

    The `data-quality-report` deployment: the Great Expectations Data Docs of every validation
    run, and a markdown report of quarantine reasons per day, per-expectation totals and the
    worst sources.
    """
    from flows.quality import data_quality_report
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_database
    from orderstream.runtime import settings_for

    check_database(settings_for())
    with local_flow_runs():
        quality = data_quality_report(days=days)
    typer.echo(f"last {days} days: {quality.rows_rejected} of {quality.rows_evaluated} rows rejected, "
               f"{quality.quarantined} quarantined ({quality.still_open} still open)")
    if quality.docs_index:
        typer.echo(f"Data Docs: {Path(quality.docs_index).as_uri()}")
    typer.echo(f"report: {quality.markdown_path}")


@app.command(rich_help_panel=REPAIR)
def retention(
    source_max_age_days: Annotated[
        float, typer.Option(help="delete fully handled source rows loaded longer ago than this", callback=not_negative)
    ] = 30,
    ledger_max_age_days: Annotated[
        float | None,
        typer.Option(help="ledger entries older than this may go (default: the topic's retention + 1 day)",
                     callback=not_negative),
    ] = None,
) -> None:
    """Delete old, fully handled source rows and ledger entries Kafka can no longer redeliver.

    The `retention` deployment. Never deletes anything not yet reconciled.
    """
    from flows.retention import retention_cleanup
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_database
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN

    check_database(settings_for(ADMIN))
    with local_flow_runs():
        result = retention_cleanup(source_max_age_days=source_max_age_days, ledger_max_age_days=ledger_max_age_days)
    cutoff = dt.datetime.fromisoformat(result.source_cutoff).isoformat(timespec="seconds")
    typer.echo(
        f"deleted {result.deleted} rows loaded before {cutoff}: {result.deleted_produced} produced, "
        f"{result.deleted_skipped} skipped, {result.deleted_quarantined} quarantined and released, "
        f"{result.deleted_ledger} ledger entries, {result.deleted_quarantine_entries} resolved quarantine entries"
    )
    typer.echo(
        f"kept: {result.kept_pending} pending, {result.kept_quarantined_open} open in quarantine, "
        f"{result.kept_not_consumed} not consumed yet, {result.kept_dead_lettered} dead-lettered, "
        f"{result.kept_in_kafka} still deliverable by Kafka"
    )
    for topic in result.topics:
        if topic.note:
            print_line(f"  {topic.topic}: {topic.note}")
