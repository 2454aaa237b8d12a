"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright) against a real
`polis serve` holding the real Los-loop and Melbourne data: one server and one browser for the module."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from polis.access.control import AccessControl
from polis.ingest.datasets import ingest, load_dataset
from polis.ngsi_ld.entities import utc_now
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import LINK_SDM, Server, start_server, stop_server

LOS_LOOP_SENSORS = 207
MELBOURNE_COUNTERS = 55
SENSOR = "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"
ALERT_SENSOR = "urn:ngsi-ld:TrafficFlowObserved:los-loop:767541"

pytestmark = pytest.mark.server


@dataclass
class Hub:
    server: Server
    parks_key: str  # a department that may read the Melbourne counters and nothing else

    @property
    def admin_key(self) -> str:
        return self.server.headers["Authorization"].removeprefix("Bearer ")


def parks_department(settings: Settings) -> str:
    """A "parks" department that may read the Melbourne counters only, in the hub's access files (made with
    admin, public and sensors on first start); its new key."""
    access = AccessControl(settings)
    try:
        access.create_department("parks", "parks and public space")
        access.grant("parks", "melbourne-pedestrians", "aggregate", "read")
        return access.create_key("parks").secret_key
    finally:
        access.close()


def serve_city(data_dir: Path, datasets: Sequence[str]) -> Iterator[Hub]:
    """A real `polis serve` on a hub holding `datasets`, with a "parks" department that may read the
    Melbourne counters only (generator: stops the server when resumed)."""
    settings = Settings(data_dir=data_dir)
    data_dir.mkdir(parents=True)
    store = DuckDBStore(settings.database_path, threads=settings.duckdb_threads)
    try:
        for name in datasets:
            ingest(store, "", load_dataset(name, settings.datasets_dir, utc_now()))
    finally:
        store.close()
    parks_key = parks_department(settings)
    server = start_server(data_dir)
    try:
        yield Hub(server, parks_key)
    finally:
        stop_server(server.process)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from serve_city(tmp_path_factory.mktemp("dashboard") / "hub", ("los-loop", "melbourne-pedestrians"))


@dataclass
class Page:
    page: Any
    errors: list[str]


def open_dashboard(browser: Any, hub: Hub, key: str | None, *, signed_in: str | None = None) -> Page:
    """A fresh page (own sessionStorage) signed in through the form with `key`, every view loaded;
    `signed_in`: a key already in its sessionStorage when the page loads (a returning operator).
    The page runs under the hub's Content-Security-Policy (no eval): waits are given as functions, which
    Playwright calls from outside the page, never as expressions it would have to evaluate inside it."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    if signed_in is not None:
        context.add_init_script(f"sessionStorage.setItem('polis.apiKey', {signed_in!r})")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    origin = hub.server.url + "/"
    # offline: nothing is fetched from anywhere but the hub (no CDN, no tile server)
    page.on("request", lambda r: None if r.url.startswith((origin, "data:")) else errors.append(f"fetched {r.url}"))
    page.goto(hub.server.url + "/")
    page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
    if key is not None:
        page.fill("#api-key", key)
        page.click("#signin-button")
        page.wait_for_function("() => document.querySelector('#department').textContent !== 'public'", timeout=10_000)
        page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
    return Page(page, errors)


@pytest.fixture(scope="module")
def admin_page(browser: Any, hub: Hub) -> Iterator[Page]:
    opened = open_dashboard(browser, hub, None, signed_in=hub.admin_key)
    # live: the page's subscription stream is open before the tests write anything
    opened.page.wait_for_function("() => document.querySelector('#m-live b').textContent === 'live'", timeout=10_000)
    yield opened
    opened.page.context.close()


def marker(entity_id: str) -> str:
    return f"#traffic-map circle.sensor[data-id='{entity_id}']"


def write_speed(hub: Hub, entity_id: str, mph: float) -> None:
    observed = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    response = httpx.patch(
        f"{hub.server.url}/ngsi-ld/v1/entities/{entity_id}/attrs",
        json={"averageVehicleSpeed": {"type": "Property", "value": mph, "observedAt": observed}},
        headers={**hub.server.headers, "Link": LINK_SDM},
        timeout=10,
    )
    assert response.status_code == 204, response.text


def test_the_page_loads_with_every_view_and_no_console_errors(admin_page: Page) -> None:
    page = admin_page.page
    assert page.text_content("#department") == "admin"
    assert page.locator("#crowd-table tbody tr").count() > 0  # counts against expected
    assert page.locator("#alerts-list li.empty").count() == 1  # no alert yet, and it says so
    assert "not available" not in (page.text_content("#m-entities") or "")
    assert admin_page.errors == []


def test_a_marker_is_drawn_for_every_sensor(admin_page: Page, hub: Hub) -> None:
    page = admin_page.page
    assert page.locator("#traffic-map circle.sensor").count() == LOS_LOOP_SENSORS
    assert page.locator("#crowd-map circle.sensor").count() == MELBOURNE_COUNTERS
    fills = page.eval_on_selector_all("#traffic-map circle.sensor", "cs => cs.map(c => c.getAttribute('fill'))")
    assert all(fill and fill.startswith("hsl(") for fill in fills)  # every one coloured by a reading
    assert page.locator("#traffic-map path.hood").count() > 100  # the neighbourhood base map


def test_a_new_observation_changes_its_marker_within_two_seconds(admin_page: Page, hub: Hub) -> None:
    page = admin_page.page
    before = page.get_attribute(marker(SENSOR), "fill")
    started = time.monotonic()
    write_speed(hub, SENSOR, 7.5)
    page.wait_for_function(f"() => document.querySelector(\"{marker(SENSOR)}\").dataset.value === '7.5'", timeout=2_000)
    assert time.monotonic() - started < 2.0
    after = page.get_attribute(marker(SENSOR), "fill")
    assert after != before and after.startswith("hsl(0,")  # crawling: red
    assert admin_page.errors == []


def test_a_sensor_chart_shows_its_history(admin_page: Page) -> None:
    page = admin_page.page
    page.dispatch_event(marker(ALERT_SENSOR), "click")  # neighbours overlap it at this zoom
    page.wait_for_selector("#sensor-chart polyline.history", timeout=5_000)
    points = page.get_attribute("#sensor-chart polyline.history", "points") or ""
    assert len(points.split()) == 72  # six hours of 5-minute readings
    assert "767541" in (page.text_content("#sensor-name") or "")
    assert page.text_content("#forecast-note")  # the forecast, or why there is none


def declare_crawl_rule(hub: Hub) -> None:
    rule = {
        "kind": "threshold",
        "name": "Crawling traffic",
        "scope": {"type": "TrafficFlowObserved", "ids": [ALERT_SENSOR]},
        "attribute": "averageVehicleSpeed",
        "below": 10,
        "severity": "Severe",
        "capCategory": "Transport",
    }
    response = httpx.put(
        f"{hub.server.url}/polis/v1/alerts/rules/dashboard-crawl", json=rule, headers=hub.server.headers, timeout=10
    )
    assert response.status_code in (200, 201), response.text


def test_an_alert_appears_within_two_seconds_of_its_condition(admin_page: Page, hub: Hub) -> None:
    page = admin_page.page
    declare_crawl_rule(hub)
    page.dispatch_event(marker(ALERT_SENSOR), "click")
    page.wait_for_selector("#sensor-chart polyline.history", timeout=5_000)
    started = time.monotonic()
    write_speed(hub, ALERT_SENSOR, 4.0)
    page.wait_for_selector("#alerts-list li.alert", timeout=2_000)
    assert time.monotonic() - started < 2.0
    page.wait_for_selector("#sensor-chart circle.last[data-value='4']", timeout=2_000)  # the open chart too
    assert page.locator("#traffic-map circle.alert-area").count() == 1
    page.click("#alerts-list li.alert")
    page.wait_for_selector("#cap-detail dl.cap-fields", timeout=5_000)
    cap = page.text_content("#cap-detail") or ""
    assert "Crawling traffic" in cap and "Severe" in cap and "Actual" in cap
    assert admin_page.errors == []


def test_a_department_without_a_grant_sees_no_data_of_that_dataset(browser: Any, hub: Hub) -> None:
    opened = open_dashboard(browser, hub, hub.parks_key)
    page = opened.page
    try:
        assert page.text_content("#department") == "parks"
        assert page.locator("#traffic-map circle.sensor").count() == 0
        assert "No access" in (page.text_content("#traffic-notice") or "")
        assert page.locator("#crowd-map circle.sensor").count() == MELBOURNE_COUNTERS  # what it may read
        # Alerts' details need a grant; the public CAP feed is every department's (a key never gives less than none)
        page.wait_for_function("() => document.querySelector('#alerts-notice').textContent.includes('public CAP feed')")
        feed = httpx.get(f"{hub.server.url}/polis/v1/alerts/feed", timeout=10).content  # what anyone may read
        entries = etree.fromstring(feed).findall("{http://www.w3.org/2005/Atom}entry")
        assert page.locator("#alerts-list li.alert").count() == len(entries)
        assert page.text_content("#m-entities") == "entities: no access"
        # a live reading of Los-loop does not reach it either
        write_speed(hub, SENSOR, 33.0)
        page.wait_for_timeout(1_000)
        assert page.locator("#traffic-map circle.sensor").count() == 0
    finally:
        page.context.close()


def test_the_public_sees_the_cap_feed_and_no_readings(browser: Any, hub: Hub) -> None:
    declare_crawl_rule(hub)
    write_speed(hub, ALERT_SENSOR, 3.0)  # the alert is raised (or still active)
    opened = open_dashboard(browser, hub, None)
    page = opened.page
    try:
        assert page.text_content("#department") == "public"
        assert page.locator("#traffic-map circle.sensor").count() == 0
        assert page.locator("#crowd-map circle.sensor").count() == 0
        assert "CAP feed" in (page.text_content("#alerts-notice") or "")
        page.click("#alerts-list li.alert")
        page.wait_for_selector("#cap-detail dl.cap-fields", timeout=5_000)
        assert "Crawling traffic" in (page.text_content("#cap-detail") or "")
        page.fill("#api-key", "polis_nosuchkey.0000")  # a mistyped key changes nothing
        page.click("#signin-button")
        page.wait_for_function("() => document.querySelector('#signin-error').textContent !== ''", timeout=5_000)
        assert page.text_content("#signin-error") == "That key is not valid."
        assert page.text_content("#department") == "public"
        # an operator signs in at this desk, opens a sensor, signs out: nothing of theirs stays on screen
        page.fill("#api-key", hub.admin_key)
        page.click("#signin-button")
        page.wait_for_function(
            f"() => document.querySelectorAll('#traffic-map circle.sensor').length === {LOS_LOOP_SENSORS}")
        page.dispatch_event(marker(SENSOR), "click")
        page.wait_for_selector("#sensor-chart polyline.history", timeout=5_000)
        page.click("#signout-button")
        page.wait_for_function("() => document.querySelector('#department').textContent === 'public'", timeout=5_000)
        page.wait_for_selector("body[data-ready=yes]", timeout=10_000)
        assert page.locator("#traffic-map circle.sensor").count() == 0
        assert page.is_hidden("#sensor-detail") and page.locator("#sensor-chart polyline").count() == 0
        assert page.evaluate("sessionStorage.getItem('polis.apiKey')") is None
    finally:
        page.context.close()
