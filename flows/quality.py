"""The data-quality report flow: GX Data Docs and a markdown summary as a Prefect artifact."""

from __future__ import annotations

from prefect import flow

from orderstream.ops import quality
from orderstream.ops.common import publish_markdown, run_logger
from orderstream.runtime import open_runtime
from orderstream.validation.docs import build_data_docs


@flow(name="data_quality_report")
def data_quality_report(days: int = 30) -> quality.QualityReport:
    """Quarantine by reason per day, totals per expectation and the worst sources of the last
    `days` days; rebuilds the Data Docs site. Changes nothing in the database."""
    runtime = open_runtime()
    settings = runtime.settings
    log = run_logger(__name__)
    docs_index = build_data_docs(settings.gx_dir)
    with runtime.sessions() as session:
        report = quality.build_report(session, settings, days, docs_index=docs_index)
    path = quality.write_report(settings, report)
    publish_markdown(
        "data-quality-report",
        report.markdown,
        f"last {days} days: {report.quarantined} quarantined ({report.still_open} open), "
        f"{report.rows_rejected} of {report.rows_evaluated} rows rejected",
    )
    log.info("data quality report: %s; Data Docs: %s", path, docs_index)
    return report
