"""The pipeline's commands: `produce`, `consume`, `run`, `notify`, `reconcile`, `status`."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from orderstream.cli.app import LOOK, PIPELINE, JsonFlag, Role, app, sessions
from orderstream.cli.checks import MAX_REPLICAS, PORT_RANGE, check_port_span, more_than_zero
from orderstream.console import print_line, progress
from orderstream.errors import UserError

MAX_CHUNK_SIZE = 1_000_000  # two chunks are in memory at once


@app.command(rich_help_panel=PIPELINE)
def produce(
    continuous: Annotated[bool, typer.Option("--continuous", help="keep polling for new events")] = False,
    chunk_size: Annotated[
        int | None, typer.Option(help="rows per batch (default 50000)", min=1, max=MAX_CHUNK_SIZE)
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="with --continuous: stop after this many seconds", callback=more_than_zero)
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus text on this port", **PORT_RANGE)] = None,
) -> None:
    """Run the produce flow: one pass over everything new, or keep polling."""
    if duration is not None and not continuous:
        raise UserError("--duration applies to --continuous only: a single pass ends when nothing is pending")
    from flows.produce import produce_orders
    from orderstream.lifecycle import install_signal_handlers
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_all
    from orderstream.producer.pipeline import watching_progress
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import PRODUCER

    install_signal_handlers()
    s = settings_for(PRODUCER)
    check_all(s)
    with progress("producing", None) as advance, watching_progress(advance), local_flow_runs():
        report = produce_orders(continuous=continuous, chunk_size=chunk_size, duration_s=duration,
                                metrics_port=metrics_port)
    c = report.counts
    typer.echo(
        f"produced {c.produced_inventory} inventory and {c.produced_delivery} delivery events in {report.batches} "
        f"batches; {c.skipped_other} other skipped, {c.quarantined} quarantined"
    )


@app.command(rich_help_panel=PIPELINE)
def consume(
    role: Annotated[Role, typer.Argument(help="inventory or delivery")],
    drain: Annotated[bool, typer.Option("--drain", help="exit 0 once the group has no lag")] = False,
    replicas: Annotated[int, typer.Option(help="group members, as separate processes", min=1, max=MAX_REPLICAS)] = 1,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus text on this port (+i per replica)", **PORT_RANGE)
    ] = None,
) -> None:
    """Run the inventory or delivery consumer."""
    check_port_span(metrics_port, replicas)
    from orderstream.consumers import run_consumer, run_replicas
    from orderstream.lifecycle import install_signal_handlers
    from orderstream.preflight import check_all
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import CONSUMER_PRINCIPALS

    install_signal_handlers()
    s = settings_for(CONSUMER_PRINCIPALS[role.value])
    check_all(s)
    if replicas > 1:
        run_replicas(s, role.value, replicas, drain=drain, metrics_port=metrics_port)
    else:
        stats = run_consumer(s, role.value, drain=drain, metrics_port=metrics_port)
        typer.echo(str(stats))


@app.command(rich_help_panel=PIPELINE)
def run() -> None:
    """One whole pass: produce, drain both consumers, reconcile, report, notify.

    Prints a summary with links to the Data Docs and the data-quality report; exit 0 iff
    nothing is missing or applied twice.
    """
    from flows.run import run_pipeline
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_all
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN
    from orderstream.summary import print_summary

    s = settings_for(ADMIN)
    check_all(s)
    with local_flow_runs():
        outcome = run_pipeline()
    print_summary(outcome)
    raise typer.Exit(0 if outcome.reconciliation.ok else 1)


@app.command(rich_help_panel=PIPELINE)
def notify(limit: Annotated[int | None, typer.Option(help="send at most this many", min=1)] = None) -> None:
    """Send every queued customer notification once (SMTP_URL, else .eml files)."""
    from flows.notify import notify_customers
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_database
    from orderstream.runtime import settings_for

    check_database(settings_for())
    with local_flow_runs():
        report = notify_customers(limit=limit)
    typer.echo(f"sent {report.sent}, failed {report.failed}, deferred {report.deferred}")
    for message_id, reason in report.failures[:10]:
        print_line(f"  {message_id}: {reason}")


@app.command(rich_help_panel=LOOK)
def reconcile() -> None:
    """Check that every event was produced and applied once; exit 0 iff nothing is missing or doubled.

    The result as JSON on stdout; the verdict and what is still in flight (pending at the
    source, or produced and not consumed yet: not missing) on stderr.
    """
    from flows.reconcile import reconcile_pipeline
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_database
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN
    from orderstream.summary import verdict

    s = settings_for(ADMIN)
    check_database(s)
    with local_flow_runs():
        result = reconcile_pipeline()
    typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    print_line(verdict(result))
    raise typer.Exit(0 if result.ok else 1)


@app.command(rich_help_panel=LOOK)
def status(as_json: JsonFlag = False) -> None:
    """The pipeline's counters (the contract's `status --json`)."""
    from orderstream import status as status_module
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN
    from orderstream.summary import print_status

    s = settings_for(ADMIN)
    with sessions(s)() as session:
        counters = status_module.collect(session, s)
    if as_json:
        sys.stdout.write(orjson.dumps(counters).decode() + "\n")
    else:
        print_status(counters)
