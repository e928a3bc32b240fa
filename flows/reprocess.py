"""Ad-hoc reprocessing flows: replay dead letters, re-validate quarantine, re-consume from a time.

Each is idempotent: running it a second time changes nothing. The logic lives in
`orderstream.ops` (replay, revalidate, offsets); these flows add the settings, the schema
migration and a Prefect artifact describing what the run did.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Literal

from prefect import flow

from orderstream.ops import offsets, replay, revalidate
from orderstream.ops.common import markdown_table, publish_markdown, publish_table, run_logger
from orderstream.runtime import open_runtime, settings_for
from orderstream.stack.secure import ADMIN

Role = Literal["inventory", "delivery"]


@flow(name="replay_dead_letters")
def replay_dead_letters(
    role: Role = "inventory",
    limit: int | None = None,
    from_beginning: bool = False,
) -> replay.ReplayReport:
    """Re-apply the role's dead-lettered events (e.g. after the missing SKU was loaded).

    Reads `<topic>.dlq` with the group `<group>.replay`; only events the ledger still records
    as dead-lettered are applied, through the consumer's handler, one transaction per batch.
    `limit` caps the dead letters read; `from_beginning` re-reads the whole DLQ (after a code fix).
    """
    runtime = open_runtime(ADMIN)
    report = replay.replay_dead_letters(runtime.settings, runtime.engine, role, limit=limit, from_beginning=from_beginning)
    publish_table(
        "replay-dead-letters",
        [
            {"what": "read from the DLQ", "count": report.read},
            {"what": "applied now", "count": report.applied},
            {"what": "still dead-lettered", "count": report.failed_again},
            {"what": "not dead-lettered any more (skipped)", "count": report.not_dead_lettered},
            {"what": "unreplayable (truncated or foreign)", "count": report.unreplayable},
            {"what": "of another consumer group", "count": report.other_group},
        ]
        + [{"what": f"still failing: {reason}", "count": n} for reason, n in report.failed_reasons.items()],
        f"replay of {report.dlq_topic} into group {report.group}: {report.applied} applied, "
        f"{report.failed_again} still dead-lettered",
    )
    return report


@flow(name="revalidate_quarantine")
def revalidate_quarantine(
    corrections: str | None = None,
    produce: bool = False,
) -> revalidate.RevalidateReport:
    """Correct quarantined rows from a CSV/JSONL/Parquet file keyed by event_id (or take them as
    they are), re-validate them, and release those that pass to the next produce pass.

    `produce=True` runs that produce pass now (it sends every pending row, not only these).
    """
    runtime = open_runtime()
    path = Path(corrections).expanduser() if corrections else None
    report = revalidate.revalidate_quarantine(runtime.settings, runtime.sessions, path)
    if produce and report.released:
        from flows.produce import produce_orders

        report.produced = asdict(produce_orders().counts)
    elif produce:
        run_logger(__name__).info("nothing released: no produce pass needed")
    rows = [
        ("corrections read", report.corrections_read),
        ("corrections without event_id", report.corrections_without_id),
        ("unknown event ids", report.unknown),
        ("not open in quarantine (refused)", report.not_quarantined),
        ("rows corrected", report.corrected),
        ("rows re-validated", report.revalidated),
        ("released for producing", report.released),
        ("still failing", report.still_failing),
    ] + [(f"still failing: {reason}", n) for reason, n in report.reasons.items()]
    publish_markdown(
        "revalidate-quarantine",
        "# Quarantine re-validation\n\n" + markdown_table(["", "rows"], rows) + "\n",
        f"{report.released} released, {report.still_failing} still failing",
    )
    return report


@flow(name="reconsume_from_timestamp")
def reconsume_from_timestamp(
    role: Role = "inventory",
    timestamp: str | None = None,
    dry_run: bool = False,
) -> offsets.OffsetReset:
    """Reset the role's consumer group to the first offsets at or after `timestamp`
    (ISO-8601 with an offset, e.g. 2026-11-25T10:00:00Z) so its consumers re-read the topic.

    Refused while the group has active members. Re-read events that already took effect are
    counted no-ops (the processed-events ledger).
    """
    reset = offsets.reset_offsets_to_timestamp(settings_for(ADMIN), role, timestamp, dry_run=dry_run)
    publish_table(
        "reconsume-from-timestamp",
        [
            {"partition": p.partition, "committed_before": p.committed_before, "offset": p.offset, "end": p.end,
             "to_reread": p.to_reread}
            for p in reset.partitions
        ],
        f"{'dry run: ' if dry_run else ''}group {reset.group} on {reset.topic} from {reset.timestamp}: "
        f"{reset.to_reread} records to re-read",
    )
    return reset
