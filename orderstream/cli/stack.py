"""`orderstream stack up / down / status`: the local Kafka broker of this ORDERSTREAM_HOME."""

from __future__ import annotations

from typing import Annotated

import typer

from orderstream.cli.app import SYSTEM, App, app, sessions, settings
from orderstream.console import print_line
from orderstream.errors import UserError
from orderstream.settings import KAFKA_VERSION, Settings

stack_app = App(help="The local Kafka broker of this ORDERSTREAM_HOME.")
app.add_typer(stack_app, name="stack", rich_help_panel=SYSTEM)

MAX_PARTITIONS = 1000


def _one_or_three(brokers: int) -> int:
    if brokers not in (1, 3):
        raise typer.BadParameter(f"{brokers} is not a cluster size here: use 1, or 3 for a local KRaft quorum")
    return brokers


@stack_app.command("up")
def stack_up(
    brokers: Annotated[int, typer.Option(help="1, or 3 for a local KRaft quorum", callback=_one_or_three)] = 1,
    partitions: Annotated[
        int | None, typer.Option(help="partitions per new topic (default 6)", min=1, max=MAX_PARTITIONS)
    ] = None,
    secure: Annotated[
        bool,
        typer.Option("--secure", help="SCRAM-SHA-512 logins and ACLs; passwords in $ORDERSTREAM_HOME/kafka/credentials.json"),
    ] = False,
) -> None:
    """Start the local broker (fetching Kafka on first use) and create the topics."""
    from orderstream.stack import local

    if secure and brokers != 1:
        raise UserError("--secure runs a single local node: leave out --brokers 3")
    s = settings() if partitions is None else Settings(topic_partitions=partitions)
    info = local.up(s, brokers=brokers, secure=secure)
    if partitions is not None:
        _require_partitions(s, info.topics, partitions)
    sessions(s)  # the local database is ready too
    typer.echo(f"Kafka {KAFKA_VERSION} up at {info.bootstrap_servers}; topics: {', '.join(info.topics)}")


def _require_partitions(s: Settings, topics: tuple[str, ...], wanted: int) -> None:
    """Refuse a partition count the existing topics do not have: Kafka keeps a topic's count, and
    raising it would move keys (one order's events) to other partitions."""
    from orderstream.stack.topics import ADMIN_TIMEOUT_S, admin

    metadata = admin(s).list_topics(timeout=ADMIN_TIMEOUT_S).topics
    other = {name: len(metadata[name].partitions) for name in topics if name in metadata}
    other = {name: n for name, n in other.items() if n != wanted}
    if other:
        found = ", ".join(f"{name} has {n}" for name, n in other.items())
        raise UserError(
            f"--partitions {wanted} applies only to topics it creates, and these exist already: {found}; "
            "use a fresh ORDERSTREAM_HOME (or delete the topics) to change it"
        )


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local broker of this home."""
    from orderstream.stack import local

    stopped = local.down(settings())
    print_line("stopped" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status() -> None:
    """Print the bootstrap address and whether the broker is up; exit 1 if it is down."""
    from orderstream.stack import local

    state = local.status(settings())
    typer.echo(f"{state.bootstrap_servers} {'up' if state.up else 'down'}")
    if not state.up:
        raise typer.Exit(1)
