"""The retention flow: delete fully handled, old source rows and ledger entries (scheduled)."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow

from orderstream.ops import retention
from orderstream.ops.common import publish_table
from orderstream.runtime import open_runtime
from orderstream.stack.secure import ADMIN


@flow(name="retention_cleanup")
def retention_cleanup(
    source_max_age_days: float = 30,
    ledger_max_age_days: float | None = None,
) -> retention.RetentionReport:
    """Delete source rows that are fully handled and older than `source_max_age_days`, and
    ledger entries whose message Kafka can no longer deliver (older than the topic's
    `retention.ms` + 1 day, or `ledger_max_age_days`, and below the log start offset).
    Never deletes anything not yet reconciled; see `orderstream.ops.retention`."""
    runtime = open_runtime(ADMIN)
    report = retention.retention_cleanup(
        runtime.settings,
        runtime.sessions,
        source_max_age_days=source_max_age_days,
        ledger_max_age_days=ledger_max_age_days,
    )
    counts = {k: v for k, v in asdict(report).items() if k.startswith(("deleted_", "kept_"))}
    publish_table(
        "retention-cleanup",
        [{"what": k.replace("_", " "), "rows": v} for k, v in counts.items()],
        f"source rows loaded before {report.source_cutoff}: {report.deleted} rows deleted",
    )
    return report
