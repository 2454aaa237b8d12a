"""The dashboard's mobility panel in a real headless Chromium against a real `polis serve` holding the Jersey City
bike trips as the privacy gate keeps them: departures per flow area (the hub's one unit, cells by default or
stations), the released hours and the OD matrix, drawn from the suppressed releases; and nothing of them left
in the page once the operator signs out."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from polis.cli import app
from polis.localserver import start_server, stop_server
from polis.settings import Settings
from tests.browser.test_dashboard import Hub, Page, open_dashboard, parks_department

pytestmark = pytest.mark.server

SUMMARY = "/polis/v1/mobility/citibike-jersey-city/summary"


@pytest.fixture(scope="module", params=["cell", "station"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """citibike-jersey-city through the gate, served with POLIS_FLOWS_UNIT = the param; "parks" may read the
    Melbourne counters only (no mobility grant)."""
    root = tmp_path_factory.mktemp(f"mobility-{request.param}")
    data_dir = root / "hub"
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir), "POLIS_FLOWS_UNIT": request.param}
    run = CliRunner().invoke(app, ["ingest", "citibike-jersey-city", "--data-dir", str(data_dir)], env=env)
    assert run.exit_code == 0, run.output[-2000:]
    parks_key = parks_department(Settings(data_dir=data_dir))
    server = start_server(data_dir, env=env)
    try:
        yield Hub(server, parks_key)
    finally:
        stop_server(server.process)


@pytest.fixture(scope="module")
def admin_page(browser: Any, hub: Hub) -> Iterator[Page]:
    opened = open_dashboard(browser, hub, None, signed_in=hub.admin_key)
    yield opened
    opened.page.context.close()


def test_the_panel_draws_the_hubs_released_flows_and_od_matrix(admin_page: Page, hub: Hub) -> None:
    page = admin_page.page
    page.wait_for_selector("#mobility-body:not([hidden])", timeout=20_000)
    summary = httpx.get(hub.server.url + SUMMARY, headers=hub.server.headers, timeout=10).json()
    assert page.eval_on_selector("#mobility-day-select", "s => s.value") == summary["lastDay"]
    offered = page.eval_on_selector_all("#mobility-day-select option", "os => os.map(o => o.value)")
    assert offered == summary["recentDays"][::-1] and len(offered) <= 60  # days held only, newest first
    dots = page.locator("#mobility-map circle")
    assert 0 < dots.count() <= len(summary["flowAreas"])  # one per released area of the hub's unit
    titles = page.eval_on_selector_all("#mobility-map circle title", "ts => ts.map(t => t.textContent)")
    assert any("departures" in t for t in titles), titles
    if summary["flowsUnit"] == "cell":
        assert all(t.startswith("cell ") for t in titles), titles[:3]
    else:
        names = {a["name"] for a in summary["flowAreas"] if a["name"]}
        assert all(t.split(":")[0] in names for t in titles), titles[:3]
    assert page.locator("#station-hours table").count() == 1
    assert page.locator("#od-matrix table tbody tr").count() > 0
    assert admin_page.errors == []  # a Content-Security-Policy violation is a console error too


def test_signing_out_leaves_nothing_of_the_flows_in_the_page(browser: Any, hub: Hub) -> None:
    opened = open_dashboard(browser, hub, None, signed_in=hub.admin_key)
    try:
        page = opened.page
        page.wait_for_selector("#mobility-body:not([hidden])", timeout=20_000)
        page.click("#signout-button")
        page.wait_for_function("() => document.querySelector('#department').textContent === 'public'", timeout=10_000)
        page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
        left = page.evaluate(
            """() => ["#mobility-map", "#station-hours", "#od-matrix", "#mobility-day-select"]
                 .map((s) => document.querySelector(s).childElementCount)"""
        )
        assert left == [0, 0, 0, 0]
        assert not page.locator("#mobility-body").is_visible()
    finally:
        opened.page.context.close()


def test_a_department_without_the_grant_sees_no_flows(browser: Any, hub: Hub) -> None:
    opened = open_dashboard(browser, hub, hub.parks_key)
    try:
        page = opened.page
        assert page.text_content("#department") == "parks"
        assert not page.locator("#mobility-body").is_visible()
        assert page.locator("#mobility-map circle").count() == 0
    finally:
        opened.page.context.close()
