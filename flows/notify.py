"""The notification flow: send every queued customer notification once (SMTP or .eml files)."""

from __future__ import annotations

import logging

from prefect import flow, get_run_logger
from prefect.exceptions import MissingContextError

from orderstream.notify import NotifyIncomplete, NotifyReport, make_transport, send_queued
from orderstream.runtime import open_runtime

_MAX_LOGGED_FAILURES = 20


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called through .fn() in tests
        return logging.getLogger("orderstream.notify")


@flow(name="notify_customers")
def notify_customers(limit: int | None = None) -> NotifyReport:
    """Deliver queued notifications; raises NotifyIncomplete if the mail server stayed down."""
    runtime = open_runtime()
    settings = runtime.settings
    log = _logger()
    transport = make_transport(settings)
    log.info("sending queued notifications via %s", transport.describe())
    try:
        report = send_queued(runtime.sessions, settings, limit=limit, transport=transport)
    except NotifyIncomplete as exc:
        _log_report(log, exc.report)
        log.error("%s", exc)
        raise
    _log_report(log, report)
    return report


def _log_report(log: logging.Logger | logging.LoggerAdapter, report: NotifyReport) -> None:
    log.info(
        "notifications: %d sent, %d failed, %d deferred, %d needed retries, %d already delivered "
        "by an interrupted run, %d recovered from `sending`",
        report.sent, report.failed, report.deferred, report.retried, report.skipped, report.recovered,
    )
    for message_id, reason in report.failures[:_MAX_LOGGED_FAILURES]:
        log.warning("notification %s failed: %s", message_id, reason)
    if len(report.failures) > _MAX_LOGGED_FAILURES:
        log.warning("... and %d more failed notifications", len(report.failures) - _MAX_LOGGED_FAILURES)
    if report.deferred:
        log.warning("%d notifications were refused for now and stay queued for the next run", report.deferred)
