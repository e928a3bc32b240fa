"""A small flow for the browser check: validate batches of order events with the GX suite and
render the Data Docs site, as the producer and the data-quality report do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, task

from orderstream.validation import validate_events
from orderstream.validation.docs import build_data_docs

NOW = "2026-11-25T10:00:00+00:00"
ADDRESS = {"customer_email": "ann@example.com", "address_line": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}
BATCH = [
    {"event_id": "ui-1", "order_id": "o-1", "type": "inventory", "created_at": NOW, "sku": "SKU-1", "quantity": "2"},
    {"event_id": "ui-2", "order_id": "o-1", "type": "delivery", "created_at": NOW, "status": "requested", **ADDRESS},
    # Two rows that break rules: a quantity out of range, and a country that is not ISO 3166.
    {"event_id": "ui-bad-qty", "order_id": "o-2", "type": "inventory", "created_at": NOW, "sku": "SKU-1",
     "quantity": "0"},
    {"event_id": "ui-bad-country", "order_id": "o-3", "type": "delivery", "created_at": NOW, "status": "requested",
     **{**ADDRESS, "country": "XX"}},
]


@task
def validate_batch(docs_dir: Path, batch_id: str) -> dict[str, int]:
    outcome = validate_events(pd.DataFrame.from_records(BATCH, columns=sorted({k for row in BATCH for k in row})),
                              docs_dir=docs_dir, batch_id=batch_id)
    return {"valid": len(outcome.valid), "rejected": len(outcome.rejected)}


@task
def render_docs(docs_dir: Path, batch_id: str) -> str:
    return str(build_data_docs(docs_dir, results=[batch_id]))


@flow(name="browser-check")
def browser_check(docs_dir: str, batch_id: str, earlier_batch_id: str) -> dict:
    """Validate BATCH as two batches, keep both results under docs_dir and render the later
    one's Data Docs, as the producer and the report do; the counts and the index path."""
    validate_batch(Path(docs_dir), earlier_batch_id)
    counts = validate_batch(Path(docs_dir), batch_id)
    return {**counts, "index": render_docs(Path(docs_dir), batch_id)}
