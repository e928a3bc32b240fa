"""A real browser check: headless Chromium (Debian's package) renders the Prefect UI page of a
finished flow run and the GX Data Docs index, and the pages show what a person would look for.
The Data Docs pages are opened with the network off and must load everything from the site.

Screenshots are kept under test-artifacts/browser/ (gitignored) for a look after the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from orderstream.serve import PrefectServer, free_port, prefect_client
from tests.browser.chromium import Chromium, Requests, ensure_chromium

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = Path(request.config.rootpath) / "test-artifacts" / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium(ensure_chromium()) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = PrefectServer.start(tmp_path_factory.mktemp("prefect-ui"), port=free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def finished_run(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The `browser-check` flow run to completion against the server: its run, batch id and Data Docs index."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.browser.ui_flow import browser_check

    docs_dir = tmp_path_factory.mktemp("gx-docs")
    batch_id, earlier_batch_id = f"browser-{uuid.uuid4().hex[:8]}", f"browser-earlier-{uuid.uuid4().hex[:8]}"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        state = browser_check(str(docs_dir), batch_id, earlier_batch_id, return_state=True)
        result = state.result()
        # Send the run's logs and events now, to this server: at exit there is no API URL and
        # Prefect would start a temporary server just to deliver them.
        APILogWorker.drain_all(timeout=30)
        EventsWorker.drain_all(timeout=30)
    assert state.is_completed(), state
    assert (result["valid"], result["rejected"]) == (2, 2)
    with prefect_client(prefect_server.api_url) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None and run.state.name == "Completed"
    return {"run": run, "batch_id": batch_id, "earlier_batch_id": earlier_batch_id, "index": Path(result["index"])}


def test_prefect_ui_shows_the_finished_runs_name_and_completed_state(
    browser: Chromium, prefect_server: PrefectServer, finished_run: dict, artifacts: Path
) -> None:
    run = finished_run["run"]
    browser.open(f"{prefect_server.url}/runs/flow-run/{run.id}")
    try:
        text = browser.wait_for_text(run.name, "Completed", "browser-check", timeout_s=90)
    finally:
        browser.screenshot(artifacts / "prefect-flow-run.png")
    assert "Failed" not in text and "Crashed" not in text


def test_data_docs_index_lists_every_run_offline_and_loads_nothing_from_outside_the_site(
    browser: Chromium, finished_run: dict, artifacts: Path
) -> None:
    index: Path = finished_run["index"]
    assert index.is_file(), index
    requests = browser.record_requests()
    browser.set_offline(True)  # as on a machine without internet: only the site itself can serve
    try:
        browser.open(index.as_uri())
        text = browser.wait_for_text("Validation Results", finished_run["batch_id"], finished_run["earlier_batch_id"],
                                     timeout_s=30)
        browser.wait_for_load()
    finally:
        browser.screenshot(artifacts / "data-docs-index.png")
        browser.set_offline(False)
    # The rows are drawn by bootstrap-table, served from the site: both batches, the earlier one
    # kept by validation and rendered by the later build, which was asked for the later batch only.
    rows = browser.evaluate("[...document.querySelectorAll('.ge-index-page-validation-results-table tbody tr')]"
                            ".map(row => [row.innerText, !!row.querySelector('.ge-failed-icon')])")
    assert len(rows) == 2, rows
    assert all("order_events" in row and failed for row, failed in rows), rows  # both failed two rules
    _assert_styled_from_the_site(browser, requests, index.parent)
    assert "order_events" in text


def test_data_docs_result_page_shows_the_failures_from_the_site_alone(
    browser: Chromium, finished_run: dict, artifacts: Path
) -> None:
    index: Path = finished_run["index"]
    batch_id: str = finished_run["batch_id"]
    (page,) = (index.parent / "validations" / "order_events" / batch_id).rglob("*.html")
    requests = browser.record_requests()
    browser.set_offline(True)
    try:
        browser.open(page.as_uri())
        browser.wait_for_text("Expectation Validation Result", "ui-bad-qty", "Show more info", timeout_s=30)
        browser.wait_for_load()
        # The run's details are folded away by bootstrap's collapse, as a person finds them.
        browser.evaluate("[...document.querySelectorAll('a, button')].find(e => e.innerText.includes('Show more info'))"
                         ".click()")
        text = browser.wait_for_text("Run Name", timeout_s=30)
    finally:
        browser.screenshot(artifacts / "data-docs-validation-result.png")
        browser.set_offline(False)
    overview = " ".join(text.split())
    assert "Expectation Suite: order_events" in overview
    assert "Status: Failed" in overview
    assert f"Run Name {batch_id}" in overview
    assert "Unsuccessful Expectations 2" in overview
    for event_id in ("ui-bad-qty", "ui-bad-country"):
        assert event_id in text
    _assert_styled_from_the_site(browser, requests, index.parent)


def _assert_styled_from_the_site(browser: Chromium, requests: Requests, site: Path) -> None:
    """Every request of the page was for a file of the site, found there; its stylesheets,
    scripts and icon font are in effect."""
    site = site.resolve()
    outside = [url for url in requests.urls if not _in_site(url, site)]
    assert outside == [], f"requests outside {site}: {outside}"
    assert requests.failed == {}, f"requests that failed: {requests.failed}"
    assert any("/static/vendor/" in url for url in requests.urls), requests.urls
    assert browser.evaluate("typeof jQuery !== 'undefined' && !!jQuery.fn.bootstrapTable && !!jQuery.fn.datepicker"
                            " && typeof Popper !== 'undefined' && typeof vegaEmbed !== 'undefined'")
    # bootstrap's .sticky-top on the navbar, and Font Awesome's solid face loaded.
    assert browser.evaluate("getComputedStyle(document.querySelector('nav.navbar')).position") == "sticky"
    assert browser.evaluate("document.fonts.check('900 16px \"Font Awesome 6 Free\"')")


def _in_site(url: str, site: Path) -> bool:
    if url.startswith("data:"):  # inline, part of the page or stylesheet that holds it
        return True
    parts = urlsplit(url)
    return parts.scheme == "file" and Path(url2pathname(parts.path)).resolve().is_relative_to(site)
