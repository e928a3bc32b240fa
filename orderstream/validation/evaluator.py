"""Judge a prepared frame by the suite's expectation configurations with pandas, as GX's pandas engine does.

A GX validation call costs about 200 ms whatever the rows (most of it building GX's metric
graph), a floor under the producer's latency. This module reads the same configurations (type,
kwargs, meta) and evaluates each with the pandas operations of GX's own pandas metric for that
type, on the same rows: a rule with `meta["applies_to"]` judges the rows of that event type, a
column map rule other than "not null" skips the nulls of its column, and a rule whose column is
missing from rows it must judge cannot be evaluated (`ValidationFailed`), as in GX. Verdicts and
counts are GX's row for row: tests/test_evaluator_equivalence.py proves it against GX on random
and hostile frames, and the producer's background GX check counts any disagreement.

A rule of a type (or with a kwarg) not implemented here is `unsupported`: the caller runs GX on
it instead, never skips it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orderstream.validation.verdicts import ExpectationStat, Judgement, ValidationFailed

NOT_NULL = "expect_column_values_to_not_be_null"
# kwargs GX accepts on every column map expectation that do not change which rows fail.
COMMON_KWARGS = {"column", "mostly"}


@dataclass(frozen=True)
class Rule:
    """One expectation configuration of the suite, as JSON (`type`, `kwargs`, `meta`)."""

    index: int  # its place in the suite
    type: str
    kwargs: Mapping[str, Any] = field(hash=False)
    meta: Mapping[str, Any] = field(hash=False)

    @property
    def column(self) -> str:
        return self.kwargs["column"]

    @property
    def reason(self) -> str:
        return self.meta["reason"]

    @property
    def applies_to(self) -> str | None:
        return self.meta.get("applies_to")

    def stat(self, evaluated: int, unexpected: int, success: bool) -> ExpectationStat:
        return ExpectationStat(self.type, self.meta.get("field", self.column), self.reason, evaluated, unexpected, success)


def rules_of(configs: Iterable[Mapping[str, Any]]) -> tuple[Rule, ...]:
    """The rules of a suite's expectation configurations (`to_json_dict()` of each), in suite order."""
    return tuple(Rule(i, c["type"], dict(c["kwargs"]), dict(c.get("meta") or {})) for i, c in enumerate(configs))


# --- the conditions: for each type, the mask of failing values among the rows it judges ------------
# Each takes the judged values, nulls dropped, and the kwargs. "Not null" is read off the null masks.

Condition = Callable[[pd.Series, Mapping[str, Any]], Any]


def _between_mask(series: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    """GX's bounds on numbers: both inclusive unless strict_min / strict_max."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    strict_low, strict_high = bool(kwargs.get("strict_min")), bool(kwargs.get("strict_max"))
    inside = np.ones(len(series), dtype=bool)
    if low is not None:
        inside &= np.asarray(series > low if strict_low else series >= low, dtype=bool)
    if high is not None:
        inside &= np.asarray(series < high if strict_high else series <= high, dtype=bool)
    return ~inside


def _value_lengths_between(values: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.value_length.between: column.astype(str).str.len() between the bounds.
    return _between_mask(values.astype(str).str.len(), kwargs)


def _unique(values: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.unique: ~column.duplicated(keep=False); every copy of a repeated value fails.
    return values.duplicated(keep=False)


def _match_regex(values: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.match_regex: column.astype(str).str.contains(regex), a search.
    return ~values.astype(str).str.contains(kwargs["regex"])


def _in_set(values: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.in_set: column.isin(value_set); no set at all lets every value pass.
    value_set = kwargs.get("value_set")
    if value_set is None:
        return np.zeros(len(values), dtype=bool)
    return ~values.isin(value_set)


def _between(values: pd.Series, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.between: vectorized on int and float columns, value by value otherwise.
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        raise ValidationFailed("min_value and max_value cannot both be None")
    if low is not None and high is not None and low > high:
        raise ValidationFailed("min_value cannot be greater than max_value")
    if values.dtype in (int, float):
        return _between_mask(values, kwargs)
    return ~np.fromiter((_is_between(v, kwargs) for v in values), dtype=bool, count=len(values))


def _is_between(value: Any, kwargs: Mapping[str, Any]) -> bool:
    """One value of a column of another dtype, as GX's `is_between` compares it."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    for bound in (low, high):
        if bound is not None and isinstance(value, str) != isinstance(bound, str):
            raise ValidationFailed("Column values, min_value, and max_value must either be None or of the same type.")
    strict_low, strict_high = kwargs.get("strict_min"), kwargs.get("strict_max")
    above = low is None or (value > low if strict_low else value >= low)
    below = high is None or (value < high if strict_high else value <= high)
    return bool(above and below)


def _length_bounds_are_integers(kwargs: Mapping[str, Any]) -> bool:
    bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
    return any(b is not None for b in bounds) and all(
        b is None or (isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) and float(b).is_integer())
        for b in bounds
    )


def _numbers_or_none(kwargs: Mapping[str, Any]) -> bool:
    return all(
        kwargs.get(k) is None or (isinstance(kwargs[k], int | float) and not isinstance(kwargs[k], bool))
        for k in ("min_value", "max_value")
    )


@dataclass(frozen=True)
class Implementation:
    condition: Condition | None
    kwargs: frozenset[str]  # the kwargs it understands besides COMMON_KWARGS
    accepts: Callable[[Mapping[str, Any]], bool] = lambda kwargs: True  # kwargs values it handles like GX


BOUNDS = frozenset({"min_value", "max_value", "strict_min", "strict_max"})
IMPLEMENTED: dict[str, Implementation] = {
    NOT_NULL: Implementation(None, frozenset()),  # GX: ~column.isnull() on every row; read off the null masks
    "expect_column_value_lengths_to_be_between": Implementation(_value_lengths_between, BOUNDS, _length_bounds_are_integers),
    "expect_column_values_to_be_unique": Implementation(_unique, frozenset()),
    "expect_column_values_to_match_regex": Implementation(
        _match_regex, frozenset({"regex"}), lambda kwargs: isinstance(kwargs.get("regex"), str)
    ),
    "expect_column_values_to_be_in_set": Implementation(
        _in_set, frozenset({"value_set"}), lambda kwargs: kwargs.get("value_set") is None or isinstance(kwargs["value_set"], list)
    ),
    "expect_column_values_to_be_between": Implementation(_between, BOUNDS, _numbers_or_none),
}


def supported(rule: Rule) -> bool:
    """True if this module judges `rule` as GX does: a known type, only kwargs it understands,
    values it handles (a suite parameter such as {"$PARAMETER": ...} is left to GX)."""
    implementation = IMPLEMENTED.get(rule.type)
    if implementation is None or "column" not in rule.kwargs:
        return False
    if not set(rule.kwargs) <= COMMON_KWARGS | implementation.kwargs:
        return False
    mostly = rule.kwargs.get("mostly", 1)
    if not isinstance(mostly, int | float) or isinstance(mostly, bool):
        return False
    return implementation.accepts(rule.kwargs)


def _success(rule: Rule, element_count: int, nonnull: int, unexpected: int) -> bool:
    """GX's success: the share of judged rows that passed is at least `mostly` (vacuously true on none)."""
    mostly = rule.kwargs.get("mostly", 1)
    considered = element_count if rule.type == NOT_NULL else nonnull
    if considered == 0:
        return True
    return (considered - unexpected) / considered >= mostly


class Batch:
    """A prepared frame and, made once per frame, the masks the rules share: the rows of each
    event type, and the non-null values of each column."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.positions = frame.index.to_numpy(dtype=np.int64)
        self._of_type: dict[str | None, np.ndarray] = {}
        self._nonnull: dict[str, np.ndarray] = {}
        self._judged: dict[tuple[str | None, str], pd.Series] = {}

    def of_type(self, event_type: str | None) -> np.ndarray:
        """Which rows a rule of `event_type` judges (every row for None)."""
        if event_type not in self._of_type:
            if event_type is None:
                self._of_type[None] = np.ones(len(self.frame), dtype=bool)
            else:
                self._of_type[event_type] = (self.frame["type"] == event_type).to_numpy(dtype=bool, na_value=False)
        return self._of_type[event_type]

    def nonnull(self, column: str) -> np.ndarray:
        if column not in self._nonnull:
            self._nonnull[column] = self.frame[column].notnull().to_numpy(dtype=bool)
        return self._nonnull[column]

    def judged_values(self, event_type: str | None, column: str) -> pd.Series:
        """The non-null values of `column` in the rows a rule of `event_type` judges (shared by
        the rules on the same column and rows; pandas' per-call cost dominates a small batch)."""
        key = (event_type, column)
        if key not in self._judged:
            rows = self.of_type(event_type) & self.nonnull(column)
            values = self.frame[column]
            self._judged[key] = values if rows.all() else values[rows]
        return self._judged[key]


def evaluate_rule(rule: Rule, batch: Batch) -> tuple[ExpectationStat, np.ndarray]:
    """The stat of one supported rule on the rows it judges, and the positions of the rows it failed."""
    judged_rows = batch.of_type(rule.applies_to)
    element_count = int(judged_rows.sum())
    if element_count == 0:  # GX does not run a rule on no rows: nothing evaluated, nothing failed
        return rule.stat(0, 0, True), np.empty(0, dtype=np.int64)
    if rule.column not in batch.frame.columns:
        raise ValidationFailed(f"{rule.reason}: the column {rule.column!r} is not in the batch")
    nonnull = batch.nonnull(rule.column)
    if rule.type == NOT_NULL:
        positions = batch.positions[judged_rows & ~nonnull]
        unexpected = len(positions)
        return rule.stat(element_count, unexpected, _success(rule, element_count, 0, unexpected)), positions
    judged = batch.judged_values(rule.applies_to, rule.column)
    condition = IMPLEMENTED[rule.type].condition
    assert condition is not None
    try:
        failed = np.asarray(condition(judged, rule.kwargs), dtype=bool)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"{rule.reason}: {exc}") from exc
    positions = judged.index.to_numpy(dtype=np.int64)[failed]
    unexpected, considered = len(positions), len(judged)
    return rule.stat(considered, unexpected, _success(rule, element_count, considered, unexpected)), positions


GxJudge = Callable[[pd.DataFrame, tuple[Rule, ...]], Judgement]


def evaluate(frame: pd.DataFrame, rules: tuple[Rule, ...], gx: GxJudge) -> Judgement:
    """The judgement of the prepared `frame` by `rules`: the supported ones here, the others by `gx`
    (a GX run of just those rules), so that no rule is ever skipped."""
    batch = Batch(frame)
    verdicts: dict[int, tuple[ExpectationStat, np.ndarray]] = {}
    for rule in rules:
        if supported(rule):
            verdicts[rule.index] = evaluate_rule(rule, batch)
    left = tuple(rule for rule in rules if rule.index not in verdicts)
    if left:
        by_gx = gx(frame, left)
        for rule, stat, rows in zip(left, by_gx.stats, by_gx.failing):
            verdicts[rule.index] = (stat, rows)
    return Judgement([verdicts[r.index][0] for r in rules], [verdicts[r.index][1] for r in rules])
