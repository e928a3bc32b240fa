"""What a judgement of one batch by the suite is, whoever made it (the evaluator or GX), and how two are compared."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
class Judgement:
    """The suite's verdict on one prepared frame, rule by rule in suite order: the rule's stat
    and the positions (ascending, of the prepared frame) of the rows it failed."""

    stats: list[ExpectationStat]
    failing: list[np.ndarray]

    def reasons_by_row(self) -> tuple[np.ndarray, list[list[str]]]:
        """The failing positions (ascending) and, for each, its reasons in suite order."""
        pairs = [(rows, stat.reason) for stat, rows in zip(self.stats, self.failing) if len(rows)]
        if not pairs:
            return np.empty(0, dtype=np.int64), []
        positions = np.concatenate([rows for rows, _ in pairs]).astype(np.int64, copy=False)
        reasons = np.concatenate([np.full(len(rows), reason, dtype=object) for rows, reason in pairs])
        order = np.argsort(positions, kind="stable")  # stable: keeps the suite order within a row
        positions, reasons = positions[order], reasons[order]
        rows, starts = np.unique(positions, return_index=True)
        return rows, [chunk.tolist() for chunk in np.split(reasons, starts[1:])]


@dataclass(frozen=True)
class Disagreement:
    """One rule on which two judgements of the same batch differ."""

    reason: str
    rows: int  # rows failed by one judgement and not the other (at least 1 if only the counts differ)
    detail: str


def disagreements(ours: Judgement, theirs: Judgement) -> list[Disagreement]:
    """Every rule whose stat or failing rows differ between two judgements of one batch."""
    if [s.reason for s in ours.stats] != [s.reason for s in theirs.stats]:
        return [Disagreement("(the suite)", 1, "the two judgements are of different rules")]
    found = []
    for mine, other, my_rows, other_rows in zip(ours.stats, theirs.stats, ours.failing, theirs.failing):
        only_mine = np.setdiff1d(my_rows, other_rows)
        only_other = np.setdiff1d(other_rows, my_rows)
        if mine == other and not len(only_mine) and not len(only_other):
            continue
        detail = (
            f"evaluator {mine.evaluated} evaluated / {mine.unexpected} failed / success {mine.success}, "
            f"GX {other.evaluated} / {other.unexpected} / {other.success}; "
            f"rows failed only by the evaluator {only_mine[:5].tolist()}, only by GX {only_other[:5].tolist()}"
        )
        found.append(Disagreement(mine.reason, max(1, len(only_mine) + len(only_other)), detail))
    return found
