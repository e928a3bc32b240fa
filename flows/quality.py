"""The data-quality report flow: GX Data Docs and a markdown summary as a Prefect artifact."""

from __future__ import annotations

from prefect import flow

from orderstream.db.engine import make_engine, migrate, session_factory
from orderstream.ops import quality
from orderstream.ops.common import publish_markdown, run_logger
from orderstream.settings import Settings


@flow(name="data_quality_report")
def data_quality_report(settings: Settings | None = None, days: int = 30) -> quality.QualityReport:
    """Quarantine by reason per day, totals per expectation and the worst sources of the last
    `days` days; rebuilds the Data Docs site. Changes nothing in the database."""
    from tasks.validate import build_data_docs

    settings = settings or Settings()
    log = run_logger(__name__)
    engine = make_engine(settings.db_url)
    migrate(engine)
    docs_index = build_data_docs(settings.gx_dir)
    with session_factory(engine)() as session:
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
