"""Validation of source events by the `order_events` suite of `expectations/`, and its Data Docs."""

from orderstream.validation.suite import ExpectationStat, ValidationFailed, ValidationOutcome, validate_events

__all__ = ["ExpectationStat", "ValidationFailed", "ValidationOutcome", "validate_events"]
