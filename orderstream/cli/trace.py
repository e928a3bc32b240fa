"""`orderstream trace ORDER_ID`: the whole life of one order, hop by hop."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from orderstream.cli.app import LOOK, JsonFlag, app, sessions
from orderstream.console import print_line


@app.command(rich_help_panel=LOOK)
def trace(
    order_id: Annotated[str, typer.Argument(help="the order's order_id")],
    as_json: JsonFlag = False,
) -> None:
    """The whole life of one order, hop by hop, with the time each hop took.

    Its source rows (load and file), validation, the topic, partition and offset of each
    produced event, each consumer's outcome, reservations, the delivery with its slot and
    history, notifications. Exit 1 for an order nothing knows.
    """
    from orderstream.inspect.trace import trace_order
    from orderstream.runtime import settings_for

    s = settings_for()
    with sessions(s)() as session:
        found = trace_order(session, s, order_id)
    if found is None:
        print_line(f"no order {order_id!r}: no source event, reservation, delivery or notification has that order_id")
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(orjson.dumps(found.as_dict()).decode() + "\n")
    else:
        for line in found.lines():
            typer.echo(line)
