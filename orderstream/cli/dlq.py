"""`orderstream dlq list` and `dlq replay`: what waits in the dead-letter topics, and re-applying it after a fix."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from orderstream.cli.app import LISTED, REPAIR, App, JsonFlag, Role, RoleOption, app, sessions
from orderstream.console import print_line

dlq_app = App(help="The dead-letter topics: what waits there, and replaying it once the cause is fixed.")
app.add_typer(dlq_app, name="dlq", rich_help_panel=REPAIR)


@dlq_app.command("list")
def dlq_list(
    role: Annotated[Role | None, typer.Option("--role", help="inventory or delivery (default: both)")] = None,
    reason: Annotated[str | None, typer.Option(help="only errors whose class or message contains this")] = None,
    limit: Annotated[int, typer.Option(help="dead letters listed after the counts (0: counts only)", min=0)] = LISTED,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters still waiting, by error class, then newest first.

    Each with its event id, error and the topic, partition and offset it came from.
    """
    from orderstream.inspect.dead_letters import list_dead_letters
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN

    s = settings_for(ADMIN)
    with sessions(s)() as session:
        listing = list_dead_letters(session, s, role=role.value if role else None, reason=reason, limit=limit)
    if as_json:
        sys.stdout.write(orjson.dumps(listing.as_dict()).decode() + "\n")
    else:
        for line in listing.lines():
            typer.echo(line)


@dlq_app.command("replay")
def dlq_replay(
    role: RoleOption,
    limit: Annotated[int | None, typer.Option(help="read at most this many dead letters", min=1)] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="re-read the whole DLQ (after a code fix), not only what is new")
    ] = False,
) -> None:
    """Re-apply a role's dead-lettered events once their cause is fixed.

    The `replay-dead-letters` deployment. Those that fail again stay dead-lettered with the
    new reason.
    """
    from flows.reprocess import replay_dead_letters
    from orderstream.prefect_runs import local_flow_runs
    from orderstream.preflight import check_all
    from orderstream.runtime import settings_for
    from orderstream.stack.secure import ADMIN

    check_all(settings_for(ADMIN))
    with local_flow_runs():
        report = replay_dead_letters(role=role.value, limit=limit, from_beginning=from_beginning)
    typer.echo(
        f"{report.dlq_topic} into group {report.group}: read {report.read}, applied {report.applied}, "
        f"still dead-lettered {report.failed_again}, not dead-lettered any more {report.not_dead_lettered}, "
        f"unreplayable {report.unreplayable}, of another group {report.other_group}"
    )
    for reason, n in report.failed_reasons.items():
        print_line(f"  still failing: {reason}: {n}")
