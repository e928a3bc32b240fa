"""Validate a batch of source events with the `order_events` suite and split it into valid and rejected rows.

The GX context is ephemeral and built once per process: building it (and the suite) per batch
would cost more than validating 20k rows. Each part of the suite (`suite_parts`: the rules for
every row, then those of one event type) runs on its rows only; the parts' results are merged
back into one result of the whole `order_events` suite. Failing rows are found by the positional `_row` index
of the prepared frame, never by event_id, so a row whose event_id is null or too long is still
rejected with its reasons.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations.order_events import SUITE_NAME, prepare, suite_parts
from orderstream.validation.docs import keep_validation_result
from orderstream.validation.results import RESULT_FORMAT, failing_rows


class ValidationFailed(RuntimeError):
    """An expectation could not be evaluated: the batch must not pass unjudged."""


@dataclass(frozen=True)
class ExpectationStat:
    expectation: str
    column: str | None
    reason: str
    evaluated: int
    unexpected: int
    success: bool


@dataclass(frozen=True)
class ValidationOutcome:
    valid: pd.DataFrame  # the input rows that passed: same columns and index as the input
    rejected: pd.DataFrame  # the failing input rows plus `reasons`: list[str] of every rule broken
    stats: list[ExpectationStat]

    def summary(self) -> dict:
        """Counts per expectation and per row, JSON-able."""
        return {
            "suite": SUITE_NAME,
            "rows": {
                "evaluated": len(self.valid) + len(self.rejected),
                "valid": len(self.valid),
                "rejected": len(self.rejected),
            },
            "expectations": [asdict(stat) for stat in self.stats],
        }


@dataclass(frozen=True)
class _Validator:
    parts: list[tuple[str | None, Any]]  # (event type, or None for every row; its suite), in suite order
    batch_definition: Any
    lock: threading.Lock


@cache
def _validator() -> _Validator:
    """The process-wide ephemeral GX context with the suite's parts and a whole-dataframe batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    parts = [(event_type, context.suites.add(suite)) for event_type, suite in suite_parts()]
    asset = context.data_sources.add_pandas("orderstream").add_dataframe_asset("order_events")
    # The lock: one GX execution engine serves every batch, and it keeps the active batch as state.
    return _Validator(parts, asset.add_batch_definition_whole_dataframe("batch"), threading.Lock())


def _run_suite(frame: pd.DataFrame) -> tuple[Any, list[Any]]:
    """The whole suite's result on `frame`, and the rules not run because no row is of their type."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validator import calc_validation_statistics

    validator = _validator()
    parts, not_run = [], []
    with validator.lock:
        for event_type, suite in validator.parts:
            rows = frame if event_type is None else frame[frame["type"] == event_type]
            if rows.empty:
                not_run.extend(suite.expectations)
                continue
            batch = validator.batch_definition.get_batch(batch_parameters={"dataframe": rows})
            parts.append(batch.validate(suite, result_format=RESULT_FORMAT))
    results = [one for part in parts for one in part.results]
    statistics = calc_validation_statistics(results)
    merged = ExpectationSuiteValidationResult(
        success=statistics.success,
        results=results,
        suite_name=SUITE_NAME,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=dict(parts[0].meta) if parts else {},  # the first part is the whole batch
    )
    return merged, not_run


def _exception(info: dict | None) -> str | None:
    """The message of an exception GX caught while evaluating one expectation, if any.
    GX reports it either flat or keyed by the metric that raised."""
    if not info:
        return None
    for entry in (info, *(v for v in info.values() if isinstance(v, dict))):
        if entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def _read(suite_result, not_run: list) -> tuple[list[ExpectationStat], list[tuple[list[int], str]]]:
    """Per expectation: its stat, and the positions of the rows it failed with its reason."""
    stats = [
        ExpectationStat(expectation.expectation_type, expectation.meta["field"], expectation.meta["reason"], 0, 0, True)
        for expectation in not_run
    ]
    failures: list[tuple[list[int], str]] = []
    for one in suite_result.results:
        config = one.expectation_config
        reason = config.meta["reason"]
        error = _exception(one.exception_info)
        if error is not None:
            raise ValidationFailed(f"{reason}: {error}")
        result = one.result or {}
        rows = failing_rows(result)
        if "unexpected_count" not in result or result["unexpected_count"] != len(rows):
            # A failure we cannot pin to rows would let them through unjudged.
            raise ValidationFailed(f"{reason}: GX gave {result.get('unexpected_count')} failures, {len(rows)} rows")
        element_count = int(result.get("element_count", 0))
        # Nulls are not judged by a rule other than "required" (GX skips them).
        skipped = 0 if config.type == "expect_column_values_to_not_be_null" else result.get("missing_count") or 0
        stats.append(
            ExpectationStat(
                expectation=config.type,
                column=config.meta.get("field", config.kwargs.get("column")),
                reason=reason,
                evaluated=element_count - int(skipped),
                unexpected=len(rows),
                success=bool(one.success),
            )
        )
        if rows:
            failures.append((rows, reason))
    return stats, failures


def _reasons_by_row(failures: list[tuple[list[int], str]]) -> tuple[np.ndarray, list[list[str]]]:
    """The failing positions (ascending) and, for each, its reasons in suite order."""
    if not failures:
        return np.empty(0, dtype=np.int64), []
    positions = np.concatenate([np.asarray(rows, dtype=np.int64) for rows, _ in failures])
    reasons = np.concatenate([np.full(len(rows), reason, dtype=object) for rows, reason in failures])
    order = np.argsort(positions, kind="stable")  # stable: keeps the suite order within a row
    positions, reasons = positions[order], reasons[order]
    rows, starts = np.unique(positions, return_index=True)
    return rows, [chunk.tolist() for chunk in np.split(reasons, starts[1:])]


def validate_events(
    df: pd.DataFrame, *, docs_dir: Path | None = None, batch_id: str | None = None
) -> ValidationOutcome:
    """Validate `df` (columns as loaded, values as strings or null) against `order_events`.

    `valid` and `rejected` keep the input's columns and index; `rejected` adds `reasons`.
    With `docs_dir`, the batch's result is kept there for `build_data_docs`.
    """
    batch_id = batch_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    frame = prepare(df)
    suite_result, not_run = _run_suite(frame)
    stats, failures = _read(suite_result, not_run)
    rows, reasons = _reasons_by_row(failures)
    failed = np.zeros(len(df), dtype=bool)
    failed[rows] = True
    rejected = df.iloc[failed].copy()
    rejected["reasons"] = pd.Series(reasons, index=rejected.index, dtype=object)
    if docs_dir is not None:
        keep_validation_result(docs_dir, suite_result, frame, batch_id)
    return ValidationOutcome(valid=df.iloc[~failed], rejected=rejected, stats=stats)
