"""The dashboard's epidemic panel in a real headless Chromium against a real `polis serve` holding the
ingested covid-europe-2020 regions and flows: risk per region, and a what-if scenario run from the form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_dashboard import Hub, Page, open_dashboard, serve_city

pytestmark = pytest.mark.server

LONDON_PREFIX = "E09"  # London boroughs: many trips among them in the flow files (not every pair has any)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """covid-europe-2020 only; its "parks" department holds no grant on the epidemic views."""
    yield from serve_city(tmp_path_factory.mktemp("epidemic-dashboard") / "hub", ("covid-europe-2020",))


@pytest.fixture(scope="module")
def admin_page(browser: Any, hub: Hub) -> Iterator[Page]:
    opened = open_dashboard(browser, hub, None, signed_in=hub.admin_key)
    yield opened
    opened.page.context.close()


def test_the_panel_shows_risk_per_region_from_the_hub(admin_page: Page) -> None:
    page = admin_page.page
    page.wait_for_selector("#epidemic-body:not([hidden])", timeout=20_000)
    countries = page.eval_on_selector_all("#epidemic-country option", "os => os.map(o => o.value)")
    assert countries == ["England", "France", "Italy", "Spain"]
    assert page.text_content("#epidemic-asof") == "week to 2020-05-12"  # England's last day in the hub
    rows = page.locator("#epidemic-risk tbody tr")
    assert rows.count() == 12
    first = rows.nth(0).locator("td").all_text_contents()
    r_mean = float(first[1])
    low, high = (float(v) for v in first[2].split("–"))
    assert low <= r_mean <= high and float(first[4]) >= 0 and first[5].endswith("%")
    assert page.locator("#epidemic-regions option").count() == 151  # every English region can be picked
    assert admin_page.errors == []


def test_a_scenario_from_the_form_shows_both_projections_with_bands(admin_page: Page) -> None:
    page = admin_page.page
    page.wait_for_selector("#epidemic-body:not([hidden])", timeout=20_000)
    page.select_option("#epidemic-country", "England")
    page.wait_for_function("() => document.querySelector('#epidemic-asof').textContent === 'week to 2020-05-12'")
    options = page.eval_on_selector_all("#epidemic-regions option", "os => os.map(o => o.value)")
    london = [o for o in options if o.startswith(LONDON_PREFIX)]
    assert len(london) == 33
    page.select_option("#epidemic-regions", london)
    page.select_option("#epidemic-mode", "between")
    page.fill("#epidemic-reduction", "90")
    page.fill("#epidemic-start", "2020-05-13")
    page.click("#epidemic-run")
    page.wait_for_selector("#epidemic-result[data-intervention]", timeout=20_000)
    result = page.locator("#epidemic-result")
    without = float(result.get_attribute("data-baseline") or "nan")
    with_cut = float(result.get_attribute("data-intervention") or "nan")
    assert 0 < with_cut < 0.97 * without  # cutting 90 % of the trips among them lowers their cases
    summary = page.text_content("#epidemic-summary") or ""
    assert "33 region(s), 30 days from 2020-05-13" in summary and "Whole country" in summary
    for arm in ("baseline", "intervention"):
        assert page.locator(f"#epidemic-chart polygon.arm-band.{arm}").count() == 1
        points = page.get_attribute(f"#epidemic-chart polyline.arm-line.{arm}", "points") or ""
        assert len(points.split()) == 30
    assert admin_page.errors == []


def test_an_incomplete_form_is_explained_before_any_request(admin_page: Page) -> None:
    page = admin_page.page
    page.wait_for_selector("#epidemic-body:not([hidden])", timeout=20_000)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/scenario" in r.url else None)
    page.select_option("#epidemic-regions", ["E09000001"])
    page.select_option("#epidemic-mode", "between")
    page.click("#epidemic-run")
    page.wait_for_function("() => document.querySelector('#epidemic-summary').textContent.includes('at least two')")
    assert requests == [] and admin_page.errors == []


def test_a_department_without_the_grant_is_told_so(browser: Any, hub: Hub) -> None:
    opened = open_dashboard(browser, hub, hub.parks_key)
    try:
        page = opened.page
        assert page.text_content("#department") == "parks"
        notice = page.locator("#epidemic-notice")
        # told from its grants, before asking (other panels' refused requests are test_dashboard's matter)
        assert notice.is_visible() and "no grant to read epidemic" in (notice.text_content() or "")
        assert not page.locator("#epidemic-body").is_visible()
    finally:
        opened.page.context.close()


def test_the_panel_shows_the_served_forecast_once_the_hub_has_fitted_it(admin_page: Page, hub: Hub) -> None:
    page = admin_page.page
    page.wait_for_selector("#epidemic-body:not([hidden])", timeout=20_000)
    page.select_option("#epidemic-country", "England")
    # the first fit runs in the hub's background (202 meanwhile); the panel asks again until it is there
    page.wait_for_selector("#epidemic-forecast[data-status='ready']", timeout=240_000)
    served = httpx.get(f"{hub.server.url}/polis/v1/epidemic/England/forecast", headers=hub.server.headers, timeout=30)
    assert served.status_code == 200
    body = served.json()
    next_day = sum(r["cases"][0] for r in body["regions"])
    shown = float(page.get_attribute("#epidemic-forecast", "data-next-day") or "nan")
    assert shown == pytest.approx(next_day, abs=0.06)
    status = page.text_content("#epidemic-forecast-status") or ""
    assert "Data to 2020-05-12. 2020-05-13:" in status and "learned (LightGBM)" in status
    points = page.get_attribute("#epidemic-forecast-chart polyline.arm-line", "points") or ""
    assert len(points.split()) == 14 and page.locator("#epidemic-forecast-chart polygon.arm-band").count() == 1
    assert admin_page.errors == []
