"""A real browser check: headless Chromium (Debian's package) renders the Prefect UI page of a
finished flow run and the GX Data Docs index, and the pages show what a person would look for.

Screenshots are kept under test-artifacts/browser/ (gitignored) for a look after the run.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from orderstream.serve import PrefectServer, free_port, prefect_client
from tests.browser.chromium import Chromium, ensure_chromium

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
    batch_id = f"browser-{uuid.uuid4().hex[:8]}"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        state = browser_check(str(docs_dir), batch_id, return_state=True)
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
    return {"run": run, "batch_id": batch_id, "index": Path(result["index"])}


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


def test_data_docs_show_the_suites_validation_result(browser: Chromium, finished_run: dict, artifacts: Path) -> None:
    index: Path = finished_run["index"]
    batch_id: str = finished_run["batch_id"]
    assert index.is_file(), index

    browser.open(index.as_uri())
    try:
        text = browser.wait_for_text("Validation Results", timeout_s=30)
    finally:
        browser.screenshot(artifacts / "data-docs-index.png")
    # The index draws its table of results with jQuery and bootstrap-table from public CDNs; a
    # machine without internet access (CI here) shows the page without its rows.
    if browser.evaluate("typeof jQuery !== 'undefined' && !!jQuery.fn.bootstrapTable"):
        assert "order_events" in text and batch_id in text, text[:2000]
    else:
        warnings.warn("Data Docs index: its table scripts come from CDNs this machine cannot reach, "
                      "so the index lists no rows here; the result page is checked instead", stacklevel=1)

    # The batch's result page is plain HTML: the suite, its status, the counts and the failing ids.
    (page,) = (index.parent / "validations" / "order_events" / batch_id).rglob("*.html")
    browser.open(page.as_uri())
    try:
        text = browser.wait_for_text("Expectation Validation Result", "ui-bad-qty", timeout_s=30)
    finally:
        browser.screenshot(artifacts / "data-docs-validation-result.png")
    overview = " ".join(text.split())
    assert "Expectation Suite: order_events" in overview
    assert "Status: Failed" in overview
    assert f"Run Name {batch_id}" in overview
    assert "Unsuccessful Expectations 2" in overview
    for event_id in ("ui-bad-qty", "ui-bad-country"):
        assert event_id in text
