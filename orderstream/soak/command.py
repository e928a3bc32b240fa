"""The `soak` command: `orderstream soak --minutes N [--rate R] [--json]`, exit 0 iff it passed."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated

import orjson
import typer
from rich.console import Console

from orderstream.soak.run import DEFAULT_RATE


def soak_command(
    minutes: Annotated[float, typer.Option(help="how long the load runs (make soak: 30)")] = 30.0,
    rate: Annotated[float, typer.Option(help="orders per second the load generator appends")] = DEFAULT_RATE,
    as_json: Annotated[bool, typer.Option("--json", help="the result as one JSON object, last on stdout")] = False,
) -> None:
    """The served system under steady load, with the worker and a consumer killed: flat memory, recovery, 0 lost."""
    from orderstream.soak.report import print_report
    from orderstream.soak.run import run_soak

    progress = Console(stderr=True)
    started = time.monotonic()

    def say(message: str) -> None:
        progress.print(f"[dim]soak {time.monotonic() - started:6.0f}s:[/] {message}", highlight=False, soft_wrap=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    try:
        soak = run_soak(minutes, rate, say=say)
    except KeyboardInterrupt:
        progress.print("soak: interrupted; the stack and the served roles it started are stopped")
        raise typer.Exit(130) from None
    print_report(soak.result, soak.outcome, soak.home, Console(stderr=as_json))
    if as_json:
        sys.stdout.write(orjson.dumps(soak.result).decode() + "\n")
    raise typer.Exit(0 if soak.result["passed"] else 1)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (or Ctrl-C): the soak unwinds and stops everything it started (the default action
    would leave the broker, PostgreSQL and the flow runs behind). Further signals are ignored so
    that nothing cuts the teardown short."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt
