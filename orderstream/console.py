"""Terminal output: rich progress bars that vanish when stderr is not a terminal, and one-line errors.

The console never turns text into emoji (rich reads `127.0.0.1:-1:` as the `:-1:` emoji) and
never wraps a line that it prints with `soft_wrap`: a log file or a pipe gets whole lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, emoji=False, highlight=False)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:,.0f}/s")


def print_error(message: str) -> None:
    """`error: message` as one line on stderr, whatever the message holds (no markup, no emoji, no wrapping)."""
    line = " ".join(message.split())  # a multi-line message becomes one line
    console.print(Text.assemble(("error:", "bold red"), " ", line), soft_wrap=True)


def print_line(message: str) -> None:
    """A line of plain text on stderr, never wrapped, markup and emoji left as they are."""
    console.print(Text(message), soft_wrap=True)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n)` callback: a live bar with its rate on a terminal, a no-op otherwise."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task_id = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task_id, n)
