"""GX's own judgement of batches the evaluator already judged: compared rule by rule, and kept for the Data Docs.

GX costs about 200 ms per call whatever the rows, so batches that wait together are checked in
one GX run of their concatenation, then its result is cut back into one result per batch, as
GX would have given for that batch alone: the failing positions of the batch's rows, the counts
and percentages of GX's map-expectation result format. Batches are run together only when
that cannot change a verdict: every rule is row by row, except uniqueness, and the batches
share no value of a column that must be unique; their columns also have the same dtypes (a
number column of one batch can be int64 and of the next float64, and GX compares by dtype).

Each batch's result goes to its Data Docs (`docs.ResultKeeper`) whatever the comparison
says; a difference between the evaluator and GX is reported as `Disagreement`s, never hidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from expectations.order_events import ROW
from orderstream.validation.evaluator import NOT_NULL, Batch
from orderstream.validation.gx_suite import judgement_of, run_suite, stat_of, suite_configs
from orderstream.validation.verdicts import Disagreement, Judgement, ValidationFailed, disagreements

UNIQUE = "expect_column_values_to_be_unique"
ROW_BY_ROW = {
    NOT_NULL,
    "expect_column_value_lengths_to_be_between",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between",
}
PARTIAL_UNEXPECTED_COUNT = 20  # GX's default for partial_unexpected_index_list
DEFAULT_MERGE_ROWS = 50_000  # GX's time per row dominates its fixed cost from here on


@dataclass(frozen=True)
class CheckJob:
    """One batch for GX: its prepared frame, the evaluator's judgement of it, where its Data Docs go."""

    batch_id: str
    frame: pd.DataFrame
    judgement: Judgement
    docs_dir: Path | None = None


@dataclass(frozen=True)
class CheckReport:
    batch_id: str
    rows: int
    disagreements: list[Disagreement] = field(default_factory=list)


def check(jobs: list[CheckJob], merge_rows: int = DEFAULT_MERGE_ROWS) -> list[CheckReport]:
    """GX's judgement of every job, compared with the evaluator's and kept for its Data Docs.

    A batch GX cannot judge (or whose check fails) is reported with that as a disagreement: the
    evaluator judged it, GX did not agree."""
    reports = []
    for group in groups(jobs, merge_rows):
        results: list[tuple[Any, list[Any]] | Exception]
        try:
            results = list(split_results(group))
        except Exception as exc:  # noqa: BLE001 - reported with the error, to a metric and the log
            if len(group) == 1:
                reports.append(_failed(group[0], exc))
                continue
            results = [_alone(job) for job in group]  # one by one, to find which batch GX cannot judge
        keepers = _Keepers()
        for job, result in zip(group, results):
            try:
                if isinstance(result, Exception):
                    reports.append(_failed(job, result))
                else:
                    reports.append(_compare_and_keep(job, *result, keepers))
            except Exception as exc:  # noqa: BLE001 - as above
                reports.append(_failed(job, exc))
    return reports


class _Keepers(dict):
    """One `ResultKeeper` per Data Docs directory, for the results of one group."""

    def __missing__(self, docs_dir: Path) -> Any:
        from orderstream.validation.docs import ResultKeeper

        keeper = self[docs_dir] = ResultKeeper(docs_dir)
        return keeper


def _alone(job: CheckJob) -> tuple[Any, list[Any]] | Exception:
    try:
        return split_results([job])[0]
    except Exception as exc:  # noqa: BLE001 - handed back to be reported
        return exc


def _failed(job: CheckJob, exc: Exception) -> CheckReport:
    return CheckReport(job.batch_id, len(job.frame), [Disagreement("(GX check failed)", 1, f"{type(exc).__name__}: {exc}")])


def _compare_and_keep(job: CheckJob, suite_result: Any, not_run: list[Any], keepers: _Keepers) -> CheckReport:
    gx = judgement_of(suite_result, not_run, [stat.reason for stat in job.judgement.stats])
    found = disagreements(job.judgement, gx)
    if job.docs_dir is not None:
        keepers[job.docs_dir].keep(suite_result, job.frame, job.batch_id)
    return CheckReport(job.batch_id, len(job.frame), found)


# --- which batches run together ---------------------------------------------------------------------


def _mergeable_suite() -> tuple[bool, list[str]]:
    """Whether the suite's rules allow batches to run together, and the columns that must be unique."""
    configs = suite_configs()
    unique = [c["kwargs"]["column"] for c in configs if c["type"] == UNIQUE]
    return all(c["type"] in ROW_BY_ROW or c["type"] == UNIQUE for c in configs), unique


def groups(jobs: Iterable[CheckJob], merge_rows: int) -> Iterator[list[CheckJob]]:
    """Consecutive jobs in runs that GX can judge together (see the module docstring)."""
    mergeable, unique_columns = _mergeable_suite()
    group: list[CheckJob] = []
    rows = 0
    seen: dict[str, set] = {}
    for job in jobs:
        values = {c: set(job.frame[c].dropna()) if c in job.frame.columns else set() for c in unique_columns}
        fits = (
            mergeable
            and group
            and rows + len(job.frame) <= merge_rows
            and job.frame.dtypes.equals(group[0].frame.dtypes)
            and all(seen[c].isdisjoint(values[c]) for c in unique_columns)
        )
        if group and not fits:
            yield group
            group, rows, seen = [], 0, {}
        group.append(job)
        rows += len(job.frame)
        for c in unique_columns:
            seen.setdefault(c, set()).update(values[c])
    if group:
        yield group


# --- one GX run, cut back into one result per batch -----------------------------------------------


def split_results(group: list[CheckJob]) -> list[tuple[Any, list[Any]]]:
    """GX's result for each job of `group` (and the expectations not run on it), from one GX run."""
    if len(group) == 1:
        return [run_suite(group[0].frame)]
    frames = [job.frame for job in group]
    merged = pd.concat(frames, ignore_index=True)
    merged.index.name = ROW
    suite_result, not_run = run_suite(merged)
    owners = _Owners(merged, [len(f) for f in frames])
    per_job: list[list[Any]] = [[] for _ in group]
    for one in suite_result.results:
        stat_of(one)  # raises ValidationFailed if GX could not evaluate the rule or pin its failures
        for k, piece in enumerate(_cut(one, owners)):
            if piece is not None:
                per_job[k].append(piece)
    return [_suite_result(results, suite_result, not_run) for results in per_job]


class _Owners:
    """Which job each row of the merged frame came from, and the per-job counts the cut needs,
    with numpy over the merged frame: per job and expectation with pandas, the cut cost more
    than GX's run itself. The row masks are the evaluator's (`Batch`), on the merged frame."""

    def __init__(self, merged: pd.DataFrame, lengths: list[int]) -> None:
        self.rows, self.jobs = Batch(merged), len(lengths)
        self.offsets = np.cumsum([0, *lengths])
        self.owner = np.repeat(np.arange(self.jobs), lengths)

    def per_job(self, rows: np.ndarray) -> np.ndarray:
        """How many of `rows` (a mask over the merged frame) each job has."""
        return np.bincount(self.owner[rows], minlength=self.jobs)

    def split(self, positions: np.ndarray) -> list[list[int]]:
        """Merged positions as each job's own positions, in the order GX listed them."""
        owner = np.searchsorted(self.offsets, positions, side="right") - 1
        order = np.argsort(owner, kind="stable")
        bounds = np.searchsorted(owner[order], np.arange(self.jobs + 1))
        local = positions[order] - self.offsets[owner[order]]
        return [local[bounds[k]:bounds[k + 1]].tolist() for k in range(self.jobs)]


def _cut(one: Any, owners: _Owners) -> list[Any]:
    """One expectation's merged result as one result per job; None for a job with no row of its part."""
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

    from orderstream.validation.results import failing_rows

    config = one.expectation_config
    judged = owners.rows.of_type(config.meta.get("applies_to"))
    element_counts = owners.per_job(judged)
    nonnull_counts = owners.per_job(judged & owners.rows.nonnull(config.kwargs["column"]))
    failing = owners.split(np.asarray(failing_rows(one.result), dtype=np.int64))
    pieces: list[Any] = []
    totals = [0, 0]
    for k in range(owners.jobs):
        element_count, nonnull, mine = int(element_counts[k]), int(nonnull_counts[k]), failing[k]
        if element_count == 0:
            pieces.append(None)
            continue
        result = _map_result(config.type, element_count, nonnull, mine)
        totals[0] += element_count
        totals[1] += result.get("missing_count") or 0
        success = _success(config.type, config.kwargs.get("mostly", 1), element_count, nonnull, len(mine))
        pieces.append(ExpectationValidationResult(
            success=success, expectation_config=config, result=result, meta=one.meta, exception_info=one.exception_info,
        ))
    merged_result = one.result or {}
    missing = merged_result.get("missing_count") or 0
    if totals != [merged_result.get("element_count"), missing]:
        raise ValidationFailed(f"{config.meta.get('reason')}: GX counted {merged_result.get('element_count')} rows "
                               f"({missing} null) over the batches, their sum is {totals[0]} ({totals[1]} null)")
    return pieces


def _map_result(expectation_type: str, element_count: int, nonnull: int, rows: list[int]) -> dict:
    """GX's COMPLETE map-expectation result (positions only) for counts and failing positions."""
    unexpected = len(rows)
    total_percent = unexpected / element_count * 100 if element_count > 0 else None
    index_list = [{ROW: rows}] if rows else []
    if expectation_type == NOT_NULL:  # GX judges nulls here: no missing counts
        result: dict = {"element_count": element_count, "unexpected_count": unexpected, "unexpected_percent": total_percent,
                        "unexpected_index_column_names": [ROW]}
    else:
        missing = element_count - nonnull
        nonmissing_percent = unexpected / nonnull * 100 if element_count > 0 and nonnull > 0 else None
        result = {
            "element_count": element_count,
            "unexpected_count": unexpected,
            "unexpected_percent": nonmissing_percent,
            "unexpected_index_column_names": [ROW],
            "missing_count": missing,
            "missing_percent": missing / element_count * 100 if element_count > 0 else None,
            "unexpected_percent_total": total_percent,
            "unexpected_percent_nonmissing": nonmissing_percent,
        }
    result["partial_unexpected_index_list"] = index_list[:PARTIAL_UNEXPECTED_COUNT]
    result["unexpected_index_list"] = index_list
    return result


def _success(expectation_type: str, mostly: float, element_count: int, nonnull: int, unexpected: int) -> bool:
    considered = element_count if expectation_type == NOT_NULL else nonnull
    return considered == 0 or (considered - unexpected) / considered >= mostly


def _suite_result(results: list[Any], merged: Any, merged_not_run: list[Any]) -> tuple[Any, list[Any]]:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validator import calc_validation_statistics

    ran = {id(one.expectation_config) for one in results}
    not_run = list(merged_not_run) + [
        _expectation_of(one) for one in merged.results if id(one.expectation_config) not in ran
    ]
    statistics = calc_validation_statistics(results)
    meta = {k: v for k, v in merged.meta.items() if k != "batch_markers"}  # the markers fingerprint the merged frame
    suite_result = ExpectationSuiteValidationResult(
        success=statistics.success,
        results=results,
        suite_name=merged.suite_name,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=meta,
    )
    return suite_result, not_run


def _expectation_of(one: Any) -> Any:
    """The expectation of a result, for a job on which its part did not run."""
    return one.expectation_config.to_domain_obj()
