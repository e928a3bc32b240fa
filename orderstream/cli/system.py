"""`orderstream serve` (the long-running system) and `bench` (the benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from orderstream.cli.app import SYSTEM, app, settings
from orderstream.cli.checks import PORT_RANGE
from orderstream.console import console
from orderstream.errors import UserError
from orderstream.soak.command import soak_command


@app.command(rich_help_panel=SYSTEM)
def serve(
    port: Annotated[int, typer.Option(help="Prefect UI/API port", **PORT_RANGE)] = 4200,
    open_browser: Annotated[bool, typer.Option("--open", help="open the UI in a browser")] = False,
) -> None:
    """The long-running system: Prefect server and UI, deployments, a worker, continuous producer and consumers."""
    from orderstream.serve import serve as run_serve

    run_serve(settings(), port=port, open_browser=open_browser)


@app.command(rich_help_panel=SYSTEM)
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object, last on stdout")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="smaller counts and shorter runs")] = False,
    repeats: Annotated[int, typer.Option(help="runs per measurement; the median is reported", min=1, max=99)] = 3,
    write: Annotated[Path | None, typer.Option(help="also write RESULTS.md and the plot into this directory")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="measure only these figures (repeatable): P1..P5")] = None,
) -> None:
    """Measure the pipeline against Kafka's own perf tools on the same broker (P1..P5)."""
    from orderstream.bench import MEASUREMENTS

    if write is not None and write.exists() and not write.is_dir():
        raise UserError(f"--write {write}: not a directory")
    chosen = [figure.upper() for figure in only or MEASUREMENTS]
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        raise UserError(f"--only {', '.join(unknown)}: no such figure; choose from {', '.join(MEASUREMENTS)}")
    from orderstream.bench import run_bench
    from orderstream.bench.report import print_table, write_results

    result = run_bench(quick=quick, home=None, repeats=repeats, only=[m for m in MEASUREMENTS if m in chosen])
    if write is not None:
        write_results(result, write)
    if as_json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print_table(result, console)
    if result.get("errors"):
        raise typer.Exit(1)


# The soak lives in its own package; it is one of the system commands.
app.command("soak", rich_help_panel=SYSTEM)(soak_command)
