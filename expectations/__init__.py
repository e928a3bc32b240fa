"""Great Expectations suites for orderstream (suites as code, see `order_events`)."""

from expectations.order_events import (
    SUITE_NAME,
    build_order_events_suite,
    configure_order_events,
    prepare,
)

__all__ = ["SUITE_NAME", "build_order_events_suite", "configure_order_events", "prepare"]
