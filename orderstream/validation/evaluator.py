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
from functools import cache, cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
# A text column's values come as Arrow too: where Arrow's kernel is the one pandas itself calls
# for GX's operation, the condition calls it directly (pandas' per-call cost dominates a small batch).


class Judged:
    """The non-null values of a column in the rows a rule judges, and their positions."""

    def __init__(self, column: pd.Series, rows: np.ndarray | None, positions: np.ndarray, text: pa.Array | None):
        self._column, self._rows = column, rows  # rows None: every row
        self.positions = positions
        self.text = text  # the values as Arrow strings if the column holds text, else None

    def __len__(self) -> int:
        return len(self.positions)

    @cached_property
    def series(self) -> pd.Series:
        return self._column if self._rows is None else self._column[self._rows]


Condition = Callable[[Judged, Mapping[str, Any]], Any]


def _between_mask(values: Any, kwargs: Mapping[str, Any]) -> Any:
    """GX's bounds on numbers: both inclusive unless strict_min / strict_max."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    strict_low, strict_high = bool(kwargs.get("strict_min")), bool(kwargs.get("strict_max"))
    inside = np.ones(len(values), dtype=bool)
    if low is not None:
        inside &= np.asarray(values > low if strict_low else values >= low, dtype=bool)
    if high is not None:
        inside &= np.asarray(values < high if strict_high else values <= high, dtype=bool)
    return ~inside


def _numpy(values: pa.Array) -> np.ndarray:
    return values.to_numpy(zero_copy_only=False)


def _value_lengths_between(judged: Judged, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.value_length.between: column.astype(str).str.len() between the bounds
    # (on text, astype(str) is the column itself and str.len is Arrow's utf8_length).
    if judged.text is not None:
        return _between_mask(_numpy(pc.utf8_length(judged.text)), kwargs)
    return _between_mask(judged.series.astype(str).str.len(), kwargs)


def _unique(judged: Judged, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.unique: ~column.duplicated(keep=False); every copy of a repeated value fails.
    return judged.series.duplicated(keep=False)


# Escapes that mean the same literal character to Python's re and to RE2.
_LITERAL_ESCAPES = frozenset(".^$*+?()[]{}|/-")


@cache
def re2_spelling(regex: str) -> str | None:
    """The pattern as pandas hands it to Arrow's RE2 whatever the data, or None if pandas may use
    Python's re for it (GX's match_regex is pandas' str.contains).

    Conservative: only literal escapes and `\\Z` (which pandas spells `\\z`), no `$` outside a
    class (Python's also matches before a final newline), no `(?` group but `(?:`. Anything
    else (classes such as \\d or \\s, lookarounds, back references, flags) stays with pandas.
    """
    in_class, chars, i = False, [], 0
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            escaped = regex[i + 1 : i + 2]
            if escaped == "Z" and not in_class:
                chars.append("\\z")
            elif escaped in _LITERAL_ESCAPES and escaped:
                chars.append(char + escaped)
            else:
                return None
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            if regex[i + 1 : i + 2] == "]" or regex[i + 1 : i + 3] == "^]":
                return None  # a literal "]" first in a class: leave the reading to pandas
            in_class = True
        elif char == "$" or (char == "(" and regex[i + 1 : i + 2] == "?" and regex[i + 2 : i + 3] != ":"):
            return None
        chars.append(char)
        i += 1
    return "".join(chars)


def _match_regex(judged: Judged, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.match_regex: column.astype(str).str.contains(regex), a search.
    regex = kwargs["regex"]
    if judged.text is not None and (spelled := re2_spelling(regex)) is not None:
        return ~_numpy(pc.match_substring_regex(judged.text, spelled))
    return ~judged.series.astype(str).str.contains(regex)


def _in_set(judged: Judged, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.in_set: column.isin(value_set); no set at all lets every value pass.
    value_set = kwargs.get("value_set")
    if value_set is None:
        return np.zeros(len(judged), dtype=bool)
    if judged.text is not None and all(isinstance(v, str) for v in value_set):
        # pandas' isin of text by text is Arrow's is_in
        return ~_numpy(pc.is_in(judged.text, value_set=pa.array(value_set, type=judged.text.type)))
    return ~judged.series.isin(value_set)


def _between(judged: Judged, kwargs: Mapping[str, Any]) -> Any:
    # GX column_values.between: vectorized on int and float columns, value by value otherwise.
    values = judged.series
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
    """A prepared frame and, made once per frame, what the rules share: the rows of each event
    type, the non-null values of each column and their positions, text columns as Arrow."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.positions = frame.index.to_numpy(dtype=np.int64)
        self._columns: dict[str, tuple[pd.Series, pa.Array | None]] = {}
        self._of_type: dict[str | None, np.ndarray] = {}
        self._nonnull: dict[str, np.ndarray] = {}
        self._judged: dict[tuple[str | None, str], Judged] = {}

    def column(self, name: str) -> tuple[pd.Series, pa.Array | None]:
        """The column, and its values as Arrow strings if it holds text (pandas' Arrow-backed str)."""
        if name not in self._columns:
            series = self.frame[name]
            text = pa.array(series.array) if isinstance(series.array, pd.arrays.ArrowStringArray) else None
            self._columns[name] = series, text
        return self._columns[name]

    def of_type(self, event_type: str | None) -> np.ndarray:
        """Which rows a rule of `event_type` judges (every row for None)."""
        if event_type not in self._of_type:
            if event_type is None:
                self._of_type[None] = np.ones(len(self.frame), dtype=bool)
            else:
                series, text = self.column("type")
                if text is not None:
                    self._of_type[event_type] = _numpy(pc.equal(text, event_type).fill_null(False))
                else:
                    self._of_type[event_type] = (series == event_type).to_numpy(dtype=bool, na_value=False)
        return self._of_type[event_type]

    def nonnull(self, column: str) -> np.ndarray:
        if column not in self._nonnull:
            series, text = self.column(column)
            self._nonnull[column] = _numpy(text.is_valid()) if text is not None else series.notnull().to_numpy(dtype=bool)
        return self._nonnull[column]

    def judged_values(self, event_type: str | None, column: str) -> Judged:
        """The non-null values of `column` in the rows a rule of `event_type` judges (shared by
        the rules on the same column and rows)."""
        key = (event_type, column)
        if key not in self._judged:
            rows = self.of_type(event_type) & self.nonnull(column)
            series, text = self.column(column)
            if rows.all():
                self._judged[key] = Judged(series, None, self.positions, text)
            else:
                self._judged[key] = Judged(series, rows, self.positions[rows], None if text is None else text.filter(rows))
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
    positions = judged.positions[failed]
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
