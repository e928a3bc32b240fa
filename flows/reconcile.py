"""The reconciliation flow: is every valid event produced once and applied once, and what is still on its way?"""

from __future__ import annotations

import orjson
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from orderstream.db.models import ReconciliationRun
from orderstream.reconcile import Reconciliation, reconcile
from orderstream.runtime import open_runtime
from orderstream.stack.secure import ADMIN
from orderstream.status import broker_view


@flow(name="reconcile")
def reconcile_pipeline() -> Reconciliation:
    runtime = open_runtime(ADMIN)
    settings, sessions = runtime.settings, runtime.sessions
    log = get_run_logger()
    broker = broker_view(settings)  # before the database: the ledger is committed before the offsets
    with sessions.begin() as session:
        result = reconcile(session, settings, broker.positions if broker else None)
        session.add(
            ReconciliationRun(
                ok=result.ok, missing=result.missing, duplicates=result.duplicates,
                details=orjson.dumps(result.as_dict()).decode(),
            )
        )
    create_table_artifact(
        key="reconciliation",
        table=[
            {"topic": t.topic, "produced": t.produced, "applied": t.applied, "dead_lettered": t.dead_lettered,
             "in_flight": t.in_flight, "end_offsets": t.end_offsets, "missing": t.missing,
             "missing_ids": ", ".join(t.missing_ids)}
            for t in result.topics
        ],
        description=f"ok={result.ok} missing={result.missing} duplicates={result.duplicates} "
        f"in_flight={result.in_flight} (pending at the source: {result.pending})",
    )
    level = log.info if result.ok else log.error
    level("reconciliation ok=%s missing=%d duplicates=%d in_flight=%d (pending at the source %d) unproduced=%s "
          "duplicate_ids=%s", result.ok, result.missing, result.duplicates, result.in_flight, result.pending,
          result.unproduced_ids[:5], result.duplicate_ids[:5])
    if not result.offsets_known:
        log.warning("the broker did not answer: produced events not consumed yet count as missing, not in flight")
    return result
