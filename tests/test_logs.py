"""Quiet by default: the libraries' narration stays out of stderr; warnings, errors and our own lines stay in."""

from __future__ import annotations

import logging

import pytest

from orderstream.errors import UserError
from orderstream.logs import QuietLibraries
from orderstream.ops.offsets import GroupActive


def record(name: str, level: int, message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


KEPT = [
    record("prefect.flow_runs", logging.INFO, "Beginning flow run 'red-fox' for flow 'orderstream_run'"),
    record("prefect.flow_runs", logging.INFO, "produced 3 inventory and 2 delivery events"),  # ours, via the run logger
    record("prefect.task_runs", logging.INFO, "batch 1f2e: 5 extracted, 3 -> inventory_orders"),
    record("prefect.flow_runs", logging.ERROR, "Finished in state Failed('Flow run encountered an exception: "
                                               "KafkaException: boom')"),
    record("great_expectations.core", logging.WARNING, "a real warning"),
    record("orderstream.consumers.runner", logging.INFO, "inventory: caught up, draining done"),
    record("orderstream.produce", logging.ERROR, "failed", RuntimeError("x")),
]
DROPPED = [
    record("great_expectations._docs_decorators", logging.INFO,
           "Skipping registering function DataSourceManager.x.<locals>.y because it is a closure"),
    record("great_expectations.datasource.fluent.config", logging.INFO, "Loading 'datasources' ->\n[]"),
    record("prefect.task_runs", logging.INFO, "Finished in state Completed()"),
    record("prefect.flow_runs", logging.INFO, "Beginning subflow run 'blue-jay' for flow 'produce_orders'"),
    record("prefect", logging.INFO, "Starting temporary server on http://127.0.0.1:8327\nSee https://example.org"),
    record("EventsWorker", logging.WARNING, "Still processing items: 1 items remaining..."),
    # A flow that ended in a UserError: the command prints the error as its one line.
    record("prefect.flow_runs", logging.ERROR, "Encountered exception during execution: GroupActive('busy')",
           GroupActive("busy")),
    record("prefect.flow_runs", logging.INFO, "Finished in state Failed('Flow run encountered an exception: "
                                              "GroupActive: consumer group inventory has 1 active member(s)')"),
    record("prefect.task_runs", logging.ERROR, "Task run failed", UserError("x")),
]


@pytest.mark.unit
@pytest.mark.parametrize("entry", KEPT, ids=lambda r: r.getMessage()[:40])
def test_warnings_errors_and_our_own_lines_are_kept(entry):
    assert QuietLibraries().filter(entry)


@pytest.mark.unit
@pytest.mark.parametrize("entry", DROPPED, ids=lambda r: r.getMessage()[:40])
def test_library_narration_is_dropped(entry):
    assert not QuietLibraries().filter(entry)


@pytest.mark.unit
def test_configure_filters_only_without_verbose():
    from orderstream import logs

    root = logging.getLogger()
    touched = ["orderstream", "httpx", "alembic", "alembic.runtime.migration", "librdkafka"]
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in touched}
    try:
        logs.configure("text", verbose=False)
        assert any(isinstance(f, QuietLibraries) for f in root.handlers[0].filters)
        assert logging.getLogger("orderstream").level == logging.INFO
        logs.configure("json", verbose=True)
        assert not root.handlers[0].filters
        assert logging.getLogger("orderstream").level == logging.DEBUG
    finally:
        handlers, level, levels = saved
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)
