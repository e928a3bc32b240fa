"""Option checks the parser cannot express on its own: ranges that depend on two options, open bounds."""

from __future__ import annotations

import typer

from orderstream.errors import UserError

HIGHEST_PORT = 65535
PORT_RANGE = {"min": 1, "max": HIGHEST_PORT}
MAX_REPLICAS = 64  # processes on one machine; members beyond the partition count idle anyway


def more_than_zero(value: float | None) -> float | None:
    """A typer callback: a duration or age must be positive."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is not more than 0")
    return value


def not_negative(value: float | None) -> float | None:
    if value is not None and not value >= 0:
        raise typer.BadParameter(f"{value:g} is negative")
    return value


def check_port_span(port: int | None, count: int, option: str = "--metrics-port") -> None:
    """Replicas serve on port, port + 1, ...: the last one must be a port too."""
    if port is not None and port + count - 1 > HIGHEST_PORT:
        raise UserError(
            f"{option} {port} with --replicas {count} needs ports up to {port + count - 1}, "
            f"beyond the highest port {HIGHEST_PORT}: pick a port of at most {HIGHEST_PORT - count + 1}"
        )
