"""`orderstream quarantine list` and `quarantine revalidate`: rejected rows, and releasing corrected ones."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from orderstream.cli.app import LISTED, REPAIR, App, JsonFlag, app, sessions
from orderstream.console import print_line

quarantine_app = App(help="Rows that failed validation: what they broke, and releasing them once corrected.")
app.add_typer(quarantine_app, name="quarantine", rich_help_panel=REPAIR)


@quarantine_app.command("list")
def quarantine_list(
    reason: Annotated[str | None, typer.Option(help="only rows with a reason that contains this")] = None,
    limit: Annotated[int, typer.Option(help="rows listed after the counts (0: counts only)", min=0)] = LISTED,
    as_json: JsonFlag = False,
) -> None:
    """Rows in quarantine, by reason, then newest first with every reason each failed."""
    from orderstream.inspect.quarantined import list_quarantine
    from orderstream.runtime import settings_for

    with sessions(settings_for())() as session:
        listing = list_quarantine(session, reason=reason, limit=limit)
    if as_json:
        sys.stdout.write(orjson.dumps(listing.as_dict()).decode() + "\n")
    else:
        for line in listing.lines():
            typer.echo(line)


@quarantine_app.command("revalidate")
def quarantine_revalidate(
    file: Annotated[
        Path | None, typer.Argument(help="corrected rows keyed by event_id (CSV, JSON Lines or Parquet); "
                                         "without it the open rows are re-validated as they are")
    ] = None,
    produce: Annotated[bool, typer.Option("--produce", help="run a produce pass right after")] = False,
) -> None:
    """Correct quarantined rows, re-validate them, and release those that pass.

    The `revalidate-quarantine` deployment: released rows go out with the next produce pass
    (or at once with --produce).
    """
    from flows.reprocess import revalidate_quarantine
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_all, check_database
    from orderstream.runtime import settings_for
    from orderstream.source.readers import readable_format

    if file is not None:
        readable_format(file)  # before the flow starts: a missing or empty file is one line
    s = settings_for()
    if produce:
        check_all(s)
    else:
        check_database(s)
    with local_flow_runs():
        report = revalidate_quarantine(corrections=str(file.resolve()) if file else None, produce=produce)
    typer.echo(
        f"re-validated {report.revalidated} rows: released {report.released}, still failing {report.still_failing}; "
        f"corrections: {report.corrections_read} read, {report.corrected} applied, {report.unknown} unknown ids, "
        f"{report.not_quarantined} not open in quarantine, {report.corrections_without_id} without event_id"
    )
    for reason, n in report.reasons.items():
        print_line(f"  still failing: {reason}: {n}")
    if report.produced is not None:
        typer.echo(f"produced {report.produced['produced_inventory']} inventory and "
                   f"{report.produced['produced_delivery']} delivery events")
