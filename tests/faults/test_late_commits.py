"""Late commits (issue 8, test 9): 8 writers append to the source concurrently, each holding
its transaction open for 0-2 s, while the continuous producer runs. Every row is produced.

The hazard is a row that becomes visible after rows inserted later have already been produced
(an id high-water mark would skip it). On PostgreSQL the writers commit in parallel, and the
test checks that production really overtook some of them; SQLite serialises writers, so
there the check is only that nothing is lost while production waits for the write lock.
Ends with the audit: 0 lost, 0 applied twice.
"""

from __future__ import annotations

import random
import threading
import time

import pandas as pd
import pytest

from orderstream.db.engine import session_factory
from orderstream.source.repository import insert_events
from tests.faults.audit import Pipeline, audit, load_stock, make_events, pending_count, produced_count
from tests.helpers import wait_until

pytestmark = pytest.mark.fault

WRITERS = 8
TRANSACTIONS = 5  # per writer
ROWS = 20  # per transaction
HOLD_S = (0.0, 2.0)




def test_rows_committed_late_by_concurrent_writers_are_all_produced_once(settings, engine, db_url):
    load_stock(engine)
    sessions = session_factory(engine)
    sqlite = db_url.startswith("sqlite")
    written: list[str] = []
    overtaken: list[int] = []  # transactions during which production moved on
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        rng = random.Random(n)
        try:
            for t in range(TRANSACTIONS):
                rows = make_events(rng, (n * TRANSACTIONS + t) * ROWS, ROWS)
                with sessions.begin() as session:
                    insert_events(session, pd.DataFrame.from_records(rows))
                    # (On SQLite the probe would wait for this very transaction's write lock.)
                    produced_at_start = None if sqlite else produced_count(engine)
                    time.sleep(rng.uniform(*HOLD_S))  # the late commit
                    if produced_at_start is not None and produced_count(engine) > produced_at_start:
                        overtaken.append(n)
                written.extend(r["event_id"] for r in rows)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    # SQLite runs the writers one at a time: allow for all their holds end to end.
    duration_s = 20 + WRITERS * TRANSACTIONS * (HOLD_S[1] if sqlite else HOLD_S[1] / WRITERS)
    started = time.monotonic()
    with Pipeline(settings, duration_s=duration_s, chunk_size=50) as pipeline:
        writers = [threading.Thread(target=writer, args=(n,), name=f"writer-{n}") for n in range(WRITERS)]
        for t in writers:
            t.start()
        for t in writers:
            t.join(duration_s)
        assert not any(t.is_alive() for t in writers), "a writer is still running"
        assert not errors, errors
        assert not pipeline.producer_done(0), "the continuous producer ended before the writers did"
        wait_until(lambda: pending_count(engine) == 0, 120, "the continuous producer sends every late row")
    assert not pipeline.errors, pipeline.errors
    total = WRITERS * TRANSACTIONS * ROWS
    assert len(written) == total
    counts = audit(settings, engine)
    assert counts.produced == counts.applied == total  # 100% of the rows produced and applied once
    if not sqlite:
        assert overtaken, "no writer's transaction was overtaken by production: no late commit was tested"
    print(f"LATE COMMITS db={'sqlite' if sqlite else 'postgresql'} events={total} writers={WRITERS} "
          f"transactions={WRITERS * TRANSACTIONS} overtaken={len(overtaken)} dup_in_topic={counts.duplicates_in_topic} "
          f"deduplicated={counts.deduplicated} seconds={time.monotonic() - started:.0f}")
