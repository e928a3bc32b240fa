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


def _inbox_fed(items: list) -> tuple:
    """An Inbox reading a pipe that `items` are written to (the parent's side of the protocol)."""
    import pickle

    from orderstream.validation.gx_worker import Inbox

    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "wb")
    for item in items:
        pickle.dump(item, writer)
    writer.flush()
    return Inbox(os.fdopen(read_fd, "rb")), writer


def _take_within(inbox, max_rows: int, not_before: float, deadline_s: float = 60.0):
    """`inbox.take(...)` in a thread; what it returned, or "waiting" if it had not after `deadline_s`."""
    import threading

    out: list = []
    thread = threading.Thread(target=lambda: out.append(inbox.take(max_rows, not_before)), daemon=True)
    thread.start()
    thread.join(deadline_s)
    return out[0] if out else "waiting"


def test_the_worker_gathers_batches_until_its_next_run_unless_rows_pile_up_or_the_parent_flushes() -> None:
    import time

    from orderstream.validation.gx_check import CheckJob
    from orderstream.validation.gx_worker import FLUSH

    def job(k: int, rows: int) -> tuple[int, CheckJob]:
        return k, CheckJob(f"b{k}", pd.DataFrame({"x": range(rows)}), None)  # type: ignore[arg-type]

    far = time.monotonic() + 3600  # the next run is an hour away: only rows or a flush end the wait
    inbox, writer = _inbox_fed([job(0, 3)])
    assert _take_within(inbox, max_rows=10, not_before=far, deadline_s=1.0) == "waiting"
    writer.close()
    inbox, writer = _inbox_fed([job(0, 6), job(1, 6)])  # 12 rows waiting >= 10: a run at once
    assert [seq for seq, _ in _take_within(inbox, max_rows=10, not_before=far)] == [0]
    inbox, writer = _inbox_fed([job(0, 3), job(1, 3), FLUSH])
    assert [seq for seq, _ in _take_within(inbox, max_rows=10, not_before=far)] == [0, 1]
    writer.close()
    inbox, writer = _inbox_fed([job(0, 3)])
    writer.close()  # the parent closed its input: what is there is checked now
    assert [seq for seq, _ in _take_within(inbox, max_rows=10, not_before=far)] == [0]
