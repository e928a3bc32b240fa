"""The background GX check: a worker process checks every batch the evaluator judged, keeps its
Data Docs, survives its own death and stops the producer only when it cannot go on."""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
from prometheus_client import REGISTRY

from orderstream.validation import checker as checker_module
from orderstream.validation.checker import BackgroundChecker, CheckerFailed
from orderstream.validation.docs import build_data_docs
from orderstream.validation.suite import validate_events
from tests.helpers import wait_until

pytestmark = pytest.mark.unit

GOOD = {"order_id": "o1", "type": "inventory", "created_at": "2026-11-25T10:00:00Z", "sku": "S", "quantity": "2"}


def batch(k: int, rows: int = 3) -> pd.DataFrame:
    records = [{**GOOD, "event_id": f"b{k}-{i}", "quantity": "0" if i == 1 else "2"} for i in range(rows)]
    return pd.DataFrame(records, dtype=object)


def checked() -> float:
    return REGISTRY.get_sample_value("orderstream_validation_gx_checked_total") or 0.0


def disagreements() -> float:
    return sum(s.value for m in REGISTRY.collect() if m.name == "orderstream_validation_disagreements" for s in m.samples
               if s.name.endswith("_total"))


@pytest.fixture(scope="module")
def background():
    checker = BackgroundChecker(max_rows_behind=10, merge_rows=100)
    yield checker
    checker.close()


def test_every_batch_is_checked_by_gx_in_the_background_and_kept_for_data_docs(background, tmp_path) -> None:
    before, disagreed = checked(), disagreements()
    outcomes = [validate_events(batch(k), docs_dir=tmp_path, batch_id=f"batch-{k}", checker=background) for k in range(6)]
    assert [len(o.rejected) for o in outcomes] == [1] * 6  # judged by the evaluator before GX ran
    assert background.drain(120) == []
    assert checked() == before + 6 and disagreements() == disagreed
    index = build_data_docs(tmp_path)
    assert {p.stem for p in index.parent.glob("validations/order_events/*/*/*.html")} == {f"batch-{k}" for k in range(6)}
    assert background.pid is not None and background.pid != os.getpid()


def test_a_dead_worker_is_restarted_and_checks_the_batches_it_had_not(background, tmp_path, monkeypatch) -> None:
    first = background.pid
    assert first is not None
    os.kill(first, signal.SIGSTOP)  # it holds the next batches unchecked...
    before = checked()
    for k in range(3):
        validate_events(batch(k), docs_dir=tmp_path, batch_id=f"again-{k}", checker=background)
    os.kill(first, signal.SIGKILL)  # ...and dies with them
    assert background.drain(180) == []
    assert background.pid != first
    assert checked() == before + 3
    index = build_data_docs(tmp_path)
    assert {p.stem for p in index.parent.glob("validations/order_events/*/*/*.html")} == {f"again-{k}" for k in range(3)}

    monkeypatch.setattr(checker_module, "MAX_RESTARTS", 1)  # the one restart above was the last allowed
    os.kill(background.pid, signal.SIGKILL)
    wait_until(lambda: not background._alive, 30, "the checker to see its worker die")
    with pytest.raises(CheckerFailed, match="died 2 times"):
        validate_events(batch(9), checker=background)
