"""The `orderstream` Typer application: its global options, its help format, and what commands share."""

from __future__ import annotations

from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from orderstream.settings import KAFKA_VERSION, Settings

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"]}


class _PlainHelp:
    """Help without type noise: no `<bool>` after a flag, arguments in capitals without braces."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = (param.name or "value").upper()
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        if isinstance(self, TyperGroup):
            pieces.append(self.subcommand_metavar)
        return pieces


class Command(_PlainHelp, TyperCommand):
    pass


class Group(_PlainHelp, TyperGroup):
    pass


class App(typer.Typer):
    """A Typer whose commands and groups use the plain help above and show their defaults."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("context_settings", CONTEXT)
        super().__init__(add_completion=False, pretty_exceptions_enable=False, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


app = App(help="Real-time order pipeline on Apache Kafka.")

# The help's panels of commands.
SOURCE = "Source"
PIPELINE = "Pipeline"
LOOK = "Look inside"
REPAIR = "Reprocess and maintain"
SYSTEM = "System"


class Role(StrEnum):
    inventory = "inventory"
    delivery = "delivery"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


LISTED = 20  # entries `dlq list` and `quarantine list` show after their counts

RoleOption = Annotated[Role, typer.Option("--role", help="inventory or delivery")]
JsonFlag = Annotated[bool, typer.Option("--json", help="one JSON object on stdout")]


def product_version() -> str:
    try:
        return version("orderstream")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"orderstream {product_version()} (Apache Kafka {KAFKA_VERSION})")
        raise typer.Exit()


@app.callback()
def main_options(
    log_format: Annotated[LogFormat, typer.Option(help="text, or json lines for machines")] = LogFormat.text,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="also the libraries' own log lines")] = False,
    _version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    from orderstream import logs
    from orderstream.prefect_runs import prepare_prefect

    logs.configure(log_format.value, verbose=verbose)
    prepare_prefect(settings().home)


def settings() -> Settings:
    return Settings()


def sessions(s: Settings):
    """The settings' database, migrated, as a session factory."""
    from orderstream.db.engine import make_engine, migrate, session_factory

    engine = make_engine(s.db_url)
    migrate(engine)
    return session_factory(engine)
