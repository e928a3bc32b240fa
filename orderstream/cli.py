"""The `orderstream` command line."""

from __future__ import annotations

import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from orderstream.console import console, progress
from orderstream.errors import UserError
from orderstream.prefect_runs import local_flow_runs, prepare_prefect
from orderstream.preflight import check_all, check_database
from orderstream.runtime import settings_for
from orderstream.settings import KAFKA_VERSION, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Real-time order pipeline on Apache Kafka.")
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker of this ORDERSTREAM_HOME.")
app.add_typer(stack_app, name="stack")


class Role(str, Enum):
    inventory = "inventory"
    delivery = "delivery"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


def settings() -> Settings:
    return Settings()


@app.callback()
def main_options(log_format: Annotated[LogFormat, typer.Option(help="text, or json lines for machines")] = LogFormat.text) -> None:
    from orderstream import logs

    logs.configure(log_format.value)
    prepare_prefect(settings().home)


def _sessions(s: Settings):
    from orderstream.db.engine import make_engine, migrate, session_factory

    engine = make_engine(s.db_url)
    migrate(engine)
    return session_factory(engine)


# --- stack ---------------------------------------------------------------------------


@stack_app.command("up")
def stack_up(
    brokers: Annotated[int, typer.Option(help="1, or 3 for a local KRaft quorum")] = 1,
    partitions: Annotated[int | None, typer.Option(help="partitions per topic (default 6)")] = None,
    secure: Annotated[bool, typer.Option("--secure", help="SCRAM-SHA-512 logins and ACLs; passwords in $ORDERSTREAM_HOME/kafka/credentials.json")] = False,
) -> None:
    """Start the local broker (fetching Kafka on first use) and create the topics."""
    from orderstream.stack import local

    s = settings() if partitions is None else Settings(topic_partitions=partitions)
    info = local.up(s, brokers=brokers, secure=secure)
    _sessions(s)  # the local database is ready too
    typer.echo(f"Kafka {KAFKA_VERSION} up at {info.bootstrap_servers}; topics: {', '.join(info.topics)}")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local broker of this home."""
    from orderstream.stack import local

    stopped = local.down(settings())
    console.print("stopped" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status() -> None:
    """Print the bootstrap address and whether the broker is up."""
    from orderstream.stack import local

    state = local.status(settings())
    typer.echo(f"{state.bootstrap_servers} {'up' if state.up else 'down'}")
    if not state.up:
        raise typer.Exit(1)


# --- source ----------------------------------------------------------------------------


@app.command()
def load(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file")],
    stock: Annotated[bool, typer.Option("--stock", help="rows are sku, warehouse_id, on_hand")] = False,
) -> None:
    """Append events (or stock levels) to the source repository."""
    from orderstream.source.loader import load_file

    s = settings()
    with progress(f"loading {file.name}", None) as advance:
        report = load_file(_sessions(s), file, stock=stock, on_progress=advance)
    what = "stock rows" if stock else "events"
    typer.echo(
        f"loaded {report.loaded} {what}, refused {report.refused}"
        f" (missing event_id: {report.refused_missing_id}, duplicate event_id: {report.refused_duplicate}"
        + (f", invalid: {report.refused_invalid}" if stock else "")
        + ")"
    )
    for problem in report.problems[:5]:
        typer.echo(f"  {problem}", err=True)


@app.command()
def seed(
    orders: Annotated[int, typer.Option(help="orders to generate")] = 1000,
    invalid_rate: Annotated[float, typer.Option(help="share of rows spoiled like a real feed")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
) -> None:
    """Generate realistic sample events and stock into the source repository."""
    from orderstream.source.repository import LoadReport, finish_load, insert_events, insert_stock, start_load
    from orderstream.source.seed import generate_events, generate_stock

    if not 0 <= invalid_rate <= 1:
        raise UserError("--invalid-rate must be between 0 and 1")
    sessions = _sessions(settings())
    report = LoadReport()
    with sessions.begin() as session:
        insert_stock(session, generate_stock(seed))
        load = start_load(session, f"seed(orders={orders}, invalid_rate={invalid_rate}, seed={seed})", "events")
        with progress("seeding orders", orders) as advance:
            for frame in generate_events(orders, invalid_rate, seed):
                report.add(insert_events(session, frame, load.id))
                advance(frame["order_id"].nunique())
        finish_load(load, report)
    typer.echo(f"seeded {report.loaded} events for {orders} orders (refused {report.refused})")


# --- pipeline --------------------------------------------------------------------------


@app.command()
def produce(
    continuous: Annotated[bool, typer.Option("--continuous", help="keep polling for new events")] = False,
    chunk_size: Annotated[int | None, typer.Option(help="rows per batch")] = None,
    duration: Annotated[float | None, typer.Option(help="stop continuous mode after this many seconds")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus text on this port")] = None,
) -> None:
    """Run the produce flow: one pass over everything new, or keep polling."""
    from flows.produce import produce_orders
    from orderstream.lifecycle import install_signal_handlers
    from orderstream.producer.pipeline import watching_progress
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


@app.command()
def consume(
    role: Annotated[Role, typer.Argument(help="inventory or delivery")],
    drain: Annotated[bool, typer.Option("--drain", help="exit 0 once the group has no lag")] = False,
    replicas: Annotated[int, typer.Option(help="group members, as separate processes")] = 1,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus text on this port (+i per replica)")] = None,
) -> None:
    """Run the inventory or delivery consumer."""
    from orderstream.consumers import run_consumer, run_replicas
    from orderstream.lifecycle import install_signal_handlers
    from orderstream.stack.secure import CONSUMER_PRINCIPALS

    install_signal_handlers()
    s = settings_for(CONSUMER_PRINCIPALS[role.value])
    check_all(s)
    if replicas > 1:
        run_replicas(s, role.value, replicas, drain=drain, metrics_port=metrics_port)
    else:
        stats = run_consumer(s, role.value, drain=drain, metrics_port=metrics_port)
        typer.echo(str(stats))


@app.command()
def reconcile() -> None:
    """Run the reconciliation flow; exit 0 iff clean."""
    from flows.reconcile import reconcile_pipeline
    from orderstream.stack.secure import ADMIN

    s = settings_for(ADMIN)
    check_database(s)
    with local_flow_runs():
        result = reconcile_pipeline()
    typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def notify(limit: Annotated[int | None, typer.Option(help="send at most this many")] = None) -> None:
    """Send every queued customer notification once (SMTP_URL, else .eml files)."""
    from flows.notify import notify_customers

    with local_flow_runs():
        report = notify_customers(limit=limit)
    typer.echo(f"sent {report.sent}, failed {report.failed}, deferred {report.deferred}")
    for message_id, reason in report.failures[:10]:
        typer.echo(f"  {message_id}: {reason}", err=True)


@app.command()
def run() -> None:
    """One whole pass: produce, drain both consumers, reconcile, notify; exit 0 iff clean."""
    from flows.run import run_pipeline
    from orderstream.stack.secure import ADMIN
    from orderstream.summary import print_summary

    s = settings_for(ADMIN)
    check_all(s)
    with local_flow_runs():
        outcome = run_pipeline()
    print_summary(outcome)
    raise typer.Exit(0 if outcome.reconciliation.ok else 1)


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="Prefect UI/API port")] = 4200,
    open_browser: Annotated[bool, typer.Option("--open", help="open the UI in a browser")] = False,
) -> None:
    """The long-running system: Prefect server and UI, deployments, a worker, continuous producer and consumers."""
    from orderstream.serve import serve as run_serve

    run_serve(settings(), port=port, open_browser=open_browser)


@app.command()
def bench(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object, last on stdout")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="smaller counts and shorter runs")] = False,
    repeats: Annotated[int, typer.Option(help="runs per measurement; the median is reported")] = 3,
    write: Annotated[Path | None, typer.Option(help="also write RESULTS.md and the plot into this directory")] = None,
) -> None:
    """Measure the pipeline against Kafka's own perf tools on the same broker (P1..P5)."""
    from orderstream.bench import run_bench
    from orderstream.bench.report import print_table, write_results

    result = run_bench(quick=quick, home=None, repeats=repeats)
    if write is not None:
        write_results(result, write)
    if as_json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print_table(result, console)
    if result.get("errors"):
        raise typer.Exit(1)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False) -> None:
    """The pipeline's counters."""
    from orderstream import status as status_module
    from orderstream.stack.secure import ADMIN
    from orderstream.summary import print_status

    s = settings_for(ADMIN)
    with _sessions(s)() as session:
        counters = status_module.collect(session, s)
    if as_json:
        sys.stdout.write(orjson.dumps(counters).decode() + "\n")
    else:
        print_status(counters)


def main() -> None:
    try:
        app()
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as exc:
        if not _prefect_termination(exc):
            raise
        # SIGTERM while Prefect's engine was starting or ending a flow run, outside the flow body
        # whose own handler finishes the batch in hand: no batch was in progress. End the way
        # SIGTERM's default action would, without a traceback.
        console.print("stopped by SIGTERM while a flow run was starting or ending; no batch was in progress")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _prefect_termination(exc: BaseException) -> bool:
    """Prefect's TerminationSignal (possible only once Prefect has been imported)."""
    exceptions = sys.modules.get("prefect.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.TerminationSignal)
