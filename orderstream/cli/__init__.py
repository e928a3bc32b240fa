"""The `orderstream` command line: one module per command group, all on one Typer app.

Every foreseeable mistake ends the command with one line on stderr, `error: ...`, and exit 2:
a bad option value (found while the command line is parsed, before anything starts), and a
`UserError` from the library (a missing file, a broker or database that does not answer).
"""

from __future__ import annotations

import os
import re
import signal
import sys

import typer
from pydantic import ValidationError

from orderstream.cli import dlq, operations, pipeline, quarantine, source, stack, system, trace  # noqa: F401 (commands)
from orderstream.cli.app import LOOK, PIPELINE, REPAIR, SOURCE, SYSTEM, app
from orderstream.console import print_error, print_line
from orderstream.errors import UserError

PROG = "orderstream"
PANELS = (SOURCE, PIPELINE, LOOK, REPAIR, SYSTEM)  # the order of the help's panels


def _panel_order(info) -> int:
    """Where a command's panel comes in the help; a command without one of these panels goes last."""
    return PANELS.index(info.rich_help_panel) if info.rich_help_panel in PANELS else len(PANELS)


app.registered_commands.sort(key=_panel_order)
app.registered_groups.sort(key=_panel_order)


def main() -> None:
    try:
        code = app(prog_name=PROG, standalone_mode=False)
    except typer.TyperException as exc:  # a usage error: bad option, missing argument, unknown command
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
            sys.exit(2)
        print_error(_usage_message(exc))
        sys.exit(2)
    except UserError as exc:
        print_error(str(exc))
        sys.exit(2)
    except ValidationError as exc:  # a setting from the environment that is not what it must be
        print_error(_settings_message(exc))
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except BaseException as exc:
        if not _prefect_termination(exc):
            raise
        # SIGTERM while Prefect's engine was starting or ending a flow run, outside the flow body
        # whose own handler finishes the batch in hand: no batch was in progress. End the way
        # SIGTERM's default action would, without a traceback.
        print_line("stopped by SIGTERM while a flow run was starting or ending; no batch was in progress")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(code if isinstance(code, int) else 0)


# The parser's wording, shortened to the point.
_PHRASES = (
    (re.compile(r"Invalid value for '([^']+)': "), r"\1: "),
    (re.compile(r"Input should be greater than or equal to (\S+)"), r"must be at least \1"),
    (re.compile(r"Input should be less than or equal to (\S+)"), r"must be at most \1"),
    (re.compile(r"Input should be a valid (integer|number)[^.;]*"), r"must be a valid \1"),
    (re.compile(r"Value error, "), ""),
    (re.compile(r"\.\s+Choose from:"), "; choose from:"),
)


def _usage_message(exc: typer.TyperException) -> str:
    """`command: what is wrong (see command --help)`, in one line."""
    message = " ".join(exc.format_message().split())
    for pattern, replacement in _PHRASES:
        message = pattern.sub(replacement, message)
    message = message.rstrip(". ")
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message} (see {ctx.command_path} --help)"


def _settings_message(exc: ValidationError) -> str:
    """Each bad setting by its environment variable (values left out: they may be secrets)."""
    problems = [f"{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}" for error in exc.errors()]
    return "bad setting " + "; ".join(problems)


def _prefect_termination(exc: BaseException) -> bool:
    """Prefect's TerminationSignal (possible only once Prefect has been imported)."""
    exceptions = sys.modules.get("prefect.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.TerminationSignal)
