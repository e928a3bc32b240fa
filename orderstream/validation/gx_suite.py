"""Great Expectations itself: the suite's configurations, and GX runs of (parts of) the suite on a prepared frame.

The GX context is ephemeral and built once per process: building it (and the suite) per batch
would cost more than validating 20k rows. Each part of the suite (`suite_parts`: the rules for
every row, then those of one event type) runs on its rows only; the parts' results are merged
back into one result of the whole `order_events` suite. Failing rows are read from the
positional `_row` index of the prepared frame, never by event_id, so a row whose event_id is
null or too long is still pinned.

GX runs here off the producer's latency path (the background check) and on the hot path only
for a rule the evaluator does not implement (`run_rules`). Importing GX takes seconds and over
100 MB: nothing imports it until one of these functions is called.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from expectations.order_events import SUITE_NAME, suite_parts
from orderstream.validation.evaluator import NOT_NULL, Rule
from orderstream.validation.results import RESULT_FORMAT, failing_rows
from orderstream.validation.verdicts import ExpectationStat, Judgement, ValidationFailed

CONFIG_KEYS = ("type", "kwargs", "meta")


@cache
def suite_configs() -> tuple[dict, ...]:
    """The expectation configurations of the `order_events` suite as JSON, in suite order."""
    from expectations.order_events import build_order_events_suite

    configs = (e.configuration.to_json_dict() for e in build_order_events_suite().expectations)
    return tuple({key: config[key] for key in CONFIG_KEYS if key in config} for config in configs)


@dataclass(frozen=True)
class _Validator:
    context: Any
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
    return _Validator(context, parts, asset.add_batch_definition_whole_dataframe("batch"), threading.Lock())


def warm_up() -> None:
    """Build the GX context now rather than at the first batch."""
    _validator()


def run_suite(frame: pd.DataFrame) -> tuple[Any, list[Any]]:
    """The whole suite's GX result on `frame`, and the expectations not run because no row is of their type."""
    validator = _validator()
    return _run_parts(validator, validator.parts, frame)


def _run_parts(validator: _Validator, parts: list[tuple[str | None, Any]], frame: pd.DataFrame) -> tuple[Any, list[Any]]:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validator import calc_validation_statistics

    results, not_run, metas = [], [], []
    with validator.lock:
        for event_type, suite in parts:
            rows = frame if event_type is None else frame[frame["type"] == event_type]
            if rows.empty:
                not_run.extend(suite.expectations)
                continue
            batch = validator.batch_definition.get_batch(batch_parameters={"dataframe": rows})
            part = batch.validate(suite, result_format=RESULT_FORMAT)
            results.extend(part.results)
            metas.append(part.meta)
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
        meta=dict(metas[0]) if metas else {},  # the first part is the whole batch
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


def stat_of(one: Any) -> tuple[ExpectationStat, np.ndarray]:
    """The stat of one GX expectation result and the positions of the rows it failed."""
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
    skipped = 0 if config.type == NOT_NULL else result.get("missing_count") or 0
    stat = ExpectationStat(
        expectation=config.type,
        column=config.meta.get("field", config.kwargs.get("column")),
        reason=reason,
        evaluated=element_count - int(skipped),
        unexpected=len(rows),
        success=bool(one.success),
    )
    return stat, np.asarray(sorted(rows), dtype=np.int64)


def judgement_of(suite_result: Any, not_run: list[Any], order: list[str]) -> Judgement:
    """GX's result read as a Judgement, rules in the order of the reasons in `order`."""
    by_reason: dict[str, tuple[ExpectationStat, np.ndarray]] = {}
    for expectation in not_run:
        meta = expectation.meta
        stat = ExpectationStat(expectation.expectation_type, meta["field"], meta["reason"], 0, 0, True)
        by_reason[meta["reason"]] = (stat, np.empty(0, dtype=np.int64))
    for one in suite_result.results:
        stat, rows = stat_of(one)
        by_reason[stat.reason] = (stat, rows)
    return Judgement([by_reason[r][0] for r in order], [by_reason[r][1] for r in order])


def run_rules(frame: pd.DataFrame, rules: tuple[Rule, ...]) -> Judgement:
    """GX's judgement of `frame` by some of the suite's rules only, split by event type as the suite is."""
    validator = _validator()
    suite_result, not_run = _run_parts(validator, _rule_parts(rules), frame)
    return judgement_of(suite_result, not_run, [rule.reason for rule in rules])


@cache
def _rule_parts(rules: tuple[Rule, ...]) -> list[tuple[str | None, Any]]:
    """GX suites of `rules`, one per event type they apply to, added once to the process's context."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    by_type: dict[str | None, list[Any]] = {}
    for rule in rules:
        config = ExpectationConfiguration(type=rule.type, kwargs=dict(rule.kwargs), meta=dict(rule.meta))
        by_type.setdefault(rule.applies_to, []).append(config.to_domain_obj())
    context = _validator().context
    number = next(_rule_suites)  # suite names are unique in a context
    return [
        (event_type, context.suites.add(
            gx.ExpectationSuite(name=f"{SUITE_NAME}.rules-{number}.{event_type or 'all'}", expectations=expectations)
        ))
        for event_type, expectations in by_type.items()
    ]


_rule_suites = itertools.count()
