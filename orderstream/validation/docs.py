"""The Data Docs of the validation runs: each batch's result kept in a GX file store, the site rendered on demand."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from expectations.order_events import SUITE_NAME, configure_order_events
from orderstream.validation.results import failing_rows
from orderstream.validation.site_assets import localize_pages

DOCS_SAMPLE = 20  # failing event ids kept per expectation in a result kept for Data Docs

@cache
def _docs_context(docs_dir: str):
    """A file context rooted at docs_dir (its stores, and the site under uncommitted/data_docs),
    made once per directory and process."""
    import great_expectations as gx

    context = gx.get_context(mode="file", context_root_dir=docs_dir)
    configure_order_events(context)
    return context


class ResultKeeper:
    """Stores batches' results in docs_dir's validation results store, for `build_data_docs`.

    Rendering is left to the report: building the site costs far more than validating a batch.
    A kept result holds the counts and a sample of failing rows (event_id and value) per
    expectation; every failing row with all its reasons is in the quarantine already.

    GX's own serialization of a result (a deep copy and two marshmallow passes) cost more than
    GX's run of a whole merged group, once per batch. The results cut from one merged run share
    their expectation configurations and differ only in counts, verdicts and run ids, so the
    first result with a given expectation is serialized by GX and the others reuse that text of
    the configuration: the stored text is GX's own, byte for byte (tests/test_evaluator_equivalence.py).
    """

    def __init__(self, docs_dir: Path) -> None:
        self._store = _docs_context(str(Path(docs_dir).resolve())).validation_results_store
        self._entries: dict[int, dict] = {}  # per expectation configuration (by identity): its serialized entry
        self._top: dict | None = None  # what every result of the suite serializes to besides its own fields

    def keep(self, suite_result, frame: pd.DataFrame, batch_id: str):
        """Store one batch's result; its key in the store."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        for one in suite_result.results:
            one.result = _docs_sample(one.result or {}, frame, one.expectation_config.meta["field"])
        run_id = RunIdentifier(run_name=batch_id, run_time=datetime.now(UTC))
        suite_result.meta.update({"run_id": run_id, "validation_time": run_id.run_time})
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=SUITE_NAME),
            run_id=run_id,
            batch_identifier=batch_id,
        )
        self._store.store_backend.set(self._store.key_to_tuple(key), self._serialized(suite_result))
        return key

    def _serialized(self, suite_result) -> str:
        from great_expectations.util import convert_to_json_serializable

        if self._top is None or any(id(one.expectation_config) not in self._entries for one in suite_result.results):
            text = self._store.serialize(suite_result)
            parsed = json.loads(text)
            for one, entry in zip(suite_result.results, parsed["results"]):
                self._entries[id(one.expectation_config)] = entry
            self._top = {k: v for k, v in parsed.items() if k not in OWN_FIELDS}
            return text
        return json.dumps({
            **self._top,
            "success": bool(suite_result.success),
            "statistics": convert_to_json_serializable(suite_result.statistics),
            "meta": convert_to_json_serializable(suite_result.meta),
            "results": [
                {**self._entries[id(one.expectation_config)], "success": bool(one.success),
                 "result": convert_to_json_serializable(one.result)}
                for one in suite_result.results
            ],
        }, indent=2, sort_keys=True)


OWN_FIELDS = ("success", "statistics", "meta", "results")  # what differs between the results of one suite


def _docs_sample(result: dict, frame: pd.DataFrame, field: str) -> dict:
    """The result with its full position list replaced by a few (value, event_id) samples,
    in the shape Data Docs renders as a table of unexpected values and their ids."""
    rows = failing_rows(result)[:DOCS_SAMPLE]
    kept = {k: v for k, v in result.items() if k not in ("unexpected_index_list", "partial_unexpected_index_list")}
    if not rows:
        return kept
    sample = frame.iloc[rows]
    values = [None if pd.isna(v) else v for v in sample[field]]
    ids = [None if pd.isna(v) else v for v in sample["event_id"]]
    counts = pd.Series(values, dtype=object).value_counts(dropna=False)
    kept.update(
        unexpected_index_column_names=["event_id"],
        partial_unexpected_list=values,
        partial_unexpected_counts=[{"value": v, "count": int(n)} for v, n in counts.items()],
        unexpected_index_list=[{**{field: v}, "event_id": i} for v, i in zip(values, ids)],
    )
    return kept


def build_data_docs(docs_dir: Path, results: Iterable[str] | None = None) -> Path:
    """Render the Data Docs site under docs_dir and return its index.html.

    `results`: batch ids whose kept results get (re)rendered, with every kept result that has
    no page yet; None renders every kept result. The index lists every kept result: GX's index
    builder lists the result pages the site has, not the results kept in the store.
    The pages load their stylesheets and scripts from the site itself (`site_assets`).
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    context = _docs_context(str(Path(docs_dir).resolve()))
    site = _site_dir(context)
    identifiers: list[ValidationResultIdentifier | ExpectationSuiteIdentifier] | None = None
    if results is not None:
        wanted, rendered = set(results), _rendered_results(site)
        identifiers = [
            key
            for key in context.validation_results_store.list_keys()
            if isinstance(key, ValidationResultIdentifier)
            and (key.batch_identifier in wanted or key.to_tuple() not in rendered)
        ]
        # The suite's page too (the index links it); never an empty list, which GX takes as "all".
        identifiers.append(ExpectationSuiteIdentifier(name=SUITE_NAME))
    started = time.time()
    context.build_data_docs(resource_identifiers=identifiers)
    # A page's mtime comes from a coarser clock than time.time(): a second of slack, and
    # rewriting a page twice changes nothing.
    written = [page for page in site.rglob("*.html") if page.stat().st_mtime >= started - 1]
    localize_pages(site, written)
    return site / "index.html"


def _site_dir(context) -> Path:
    (site,) = context.get_docs_sites_urls(only_if_exists=False)
    return Path(url2pathname(urlparse(site["site_url"]).path)).parent


def _rendered_results(site: Path) -> set[tuple[str, ...]]:
    """The keys (as tuples) of the validation results that have a page in the site."""
    pages = site / "validations"
    return {page.relative_to(pages).with_suffix("").parts for page in pages.rglob("*.html")}
