"""`python -m orderstream.soak --minutes N [--rate R] [--json]`: the soak without the CLI around it."""

from __future__ import annotations

import sys

import typer

from orderstream.console import console
from orderstream.errors import UserError
from orderstream.soak.command import soak_command

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(soak_command)

try:
    app()
except UserError as exc:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    sys.exit(2)
