"""`orderstream load` and `seed`: events and stock into the source repository."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from orderstream.cli.app import SOURCE, app, sessions, settings
from orderstream.console import print_line, progress

log = logging.getLogger("orderstream.seed")

MAX_SEED_ORDERS = 1_000_000  # about 4 million events; a few minutes to generate


@app.command(rich_help_panel=SOURCE)
def load(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file")],
    stock: Annotated[bool, typer.Option("--stock", help="rows are sku, warehouse_id, on_hand")] = False,
) -> None:
    """Append events (or stock levels) to the source repository."""
    from orderstream.source.loader import load_file

    s = settings()
    with progress(f"loading {file.name}", None) as advance:
        report = load_file(sessions(s), file, stock=stock, on_progress=advance)
    what = "stock rows" if stock else "events"
    typer.echo(
        f"loaded {report.loaded} {what}, refused {report.refused}"
        f" (missing event_id: {report.refused_missing_id}, duplicate event_id: {report.refused_duplicate}"
        + (f", invalid: {report.refused_invalid}" if stock else "")
        + ")"
    )
    for problem in report.problems[:5]:
        print_line(f"  {problem}")


@app.command(rich_help_panel=SOURCE)
def seed(
    orders: Annotated[int, typer.Option(help="orders to generate", min=1, max=MAX_SEED_ORDERS)] = 1000,
    invalid_rate: Annotated[float, typer.Option(help="share of rows spoiled like a real feed", min=0.0, max=1.0)] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
) -> None:
    """Generate realistic sample events and stock into the source repository."""
    from orderstream.source.repository import LoadReport, finish_load, insert_events, insert_stock, start_load
    from orderstream.source.seed import generate_events, generate_stock

    session_factory = sessions(settings())
    report = LoadReport()
    done = 0
    with session_factory.begin() as session:
        insert_stock(session, generate_stock(seed))
        load = start_load(session, f"seed(orders={orders}, invalid_rate={invalid_rate}, seed={seed})", "events")
        with progress("seeding orders", orders) as advance:
            for frame in generate_events(orders, invalid_rate, seed):
                report.add(insert_events(session, frame, load.id))
                added = frame["order_id"].nunique()
                done += added
                advance(added)
                if done < orders and not sys.stderr.isatty():  # no bar off a terminal: a line per chunk
                    log.info("seeded %d of %d orders", done, orders)
        finish_load(load, report)
    typer.echo(f"seeded {report.loaded} events for {orders} orders (refused {report.refused})")
