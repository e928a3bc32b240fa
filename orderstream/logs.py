"""Standard logging for the CLI and consumers: readable text, or JSON lines for machines.

Quiet by default: what the libraries say about themselves (Great Expectations registering its
functions and loading its config, Prefect's engine announcing every task run's state and its
temporary server) stays out of the output unless `verbose`. Their warnings and errors show,
except Prefect's report of a flow that ended in a `UserError`: the command prints that error
as its one `error:` line, and the traceback would only bury it. Everything the product logs
shows. Prefect still receives every flow run's log lines for its UI: only this process's
stderr is filtered.
"""

from __future__ import annotations

import logging
import re

import orjson

from orderstream.errors import UserError

# Prefect engine lines at INFO that only narrate the engine's own progress.
PREFECT_CHATTER = re.compile(
    r"(Finished in state Completed\(\)"
    r"|Beginning subflow run "
    r"|Created (sub)?(flow|task) run "
    r"|(Starting|Stopping) temporary server on )"
)
LIBRARY_CHATTER = ("great_expectations", "alembic", "httpx", "httpcore", "asyncio", "urllib3", "matplotlib")
# Prefect's events worker flushing at exit.
EXIT_CHATTER = re.compile(r"Still processing items: \d+ items remaining")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("batch_id", "event_id", "topic", "partition"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class QuietLibraries(logging.Filter):
    """Drops the libraries' INFO narration (see the module docstring); keeps every warning and error."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name.startswith("prefect") and _reports_user_error(record):
            return False
        if record.levelno >= logging.WARNING:
            return not (name == "EventsWorker" and EXIT_CHATTER.match(record.getMessage()))
        if name.startswith(LIBRARY_CHATTER):
            return False
        if name.startswith("prefect"):
            return not PREFECT_CHATTER.match(record.getMessage())
        return True


def _reports_user_error(record: logging.LogRecord) -> bool:
    """Prefect's traceback of a UserError raised in a flow or task, or its "Finished in state Failed" line."""
    if record.exc_info and isinstance(record.exc_info[1], UserError):
        return True
    message = record.getMessage()
    return message.startswith("Finished in state Failed(") and any(
        f"exception: {name}:" in message for name in _user_error_names()
    )


def _user_error_names() -> set[str]:
    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def configure(log_format: str = "text", verbose: bool = False) -> None:
    """One stderr handler on the root logger; `verbose` lets the libraries talk and shows DEBUG lines of ours."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    if not verbose:
        handler.addFilter(QuietLibraries())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("orderstream").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "alembic", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    # Connection retries are librdkafka's business; our own errors say what is wrong.
    logging.getLogger("librdkafka").setLevel(logging.INFO if verbose else logging.CRITICAL)
