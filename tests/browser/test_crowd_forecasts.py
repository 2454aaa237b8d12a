"""The crowd panel beside a hub that forecasts the counters (`polis serve --forecast melbourne-pedestrians`):
each counter's next hour, with its 80 % interval, read from the hub's live forecasts."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from polis.forecast.data import load_panel
from polis.forecast.gbm import GbmParams, GlobalGbm
from polis.forecast.live import registry_for
from polis.ingest.datasets import ingest, load_dataset
from polis.ngsi_ld.entities import utc_now
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.browser.test_dashboard import Hub, open_dashboard
from tests.conftest import start_server, stop_server

pytestmark = pytest.mark.server

NEXT_HOUR = re.compile(r"^(\d+) \((\d+)–(\d+)\)$")  # "90 (0–198)": no number below 0, so no minus sign


def _counters_in(data_dir: Path) -> Settings:
    """A new hub in `data_dir` holding Melbourne's counters with their history."""
    data_dir.mkdir(parents=True)
    settings = Settings(data_dir=data_dir)
    store = DuckDBStore(settings.database_path, threads=settings.duckdb_threads)
    try:
        ingest(store, "", load_dataset("melbourne-pedestrians", settings.datasets_dir, utc_now()))
    finally:
        store.close()
    return settings


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Melbourne's counters in a hub whose model registry already holds a small model for them (training
    the served quick model takes a minute), served with their live forecasts."""
    data_dir = tmp_path_factory.mktemp("crowd-forecasts") / "hub"
    settings = _counters_in(data_dir)
    full = load_panel("melbourne-pedestrians", settings.datasets_dir)
    recent = replace(full, times=full.times[-4000:], values=full.values[-4000:])
    model = GlobalGbm((1, 3), seed=0, params=GbmParams(lags=24, max_rounds=20, learning_rate=0.3, num_leaves=15))
    model.fit(recent, 3500)
    registry_for(settings).save(model, "melbourne-pedestrians", "test", entity_type=full.entity_type,
                                attribute=full.attribute, entity_ids=full.entity_ids)
    server = start_server(data_dir, args=["--forecast", "melbourne-pedestrians"], timeout=60.0)
    try:
        yield Hub(server, parks_key="")
    finally:
        stop_server(server.process)


def test_the_crowd_table_shows_each_counters_next_hour(browser: Any, hub: Hub) -> None:
    forecasts = []
    for _ in range(300):  # the model loads and the first forecasts are issued in the background
        forecasts = httpx.get(f"{hub.server.url}/polis/v1/forecasts", params={"type": "CrowdFlowObserved"},
                              headers=hub.server.headers, timeout=10).json()
        if len(forecasts) == 55:
            break
        time.sleep(0.2)
    assert len(forecasts) == 55
    opened = open_dashboard(browser, hub, None, signed_in=hub.admin_key)
    try:
        page = opened.page
        page.wait_for_selector("#crowd-table tbody tr")
        cells = page.eval_on_selector_all("#crowd-table tbody tr", "rows => rows.map(r => r.cells[3].textContent)")
        assert cells and all(NEXT_HOUR.match(text) for text in cells), cells
        first = page.eval_on_selector("#crowd-table tbody tr", "r => [r.dataset.id, r.cells[3].title]")
        path = next(f for f in forecasts if f["entityId"] == first[0])
        point = path["points"][0]
        shown = NEXT_HOUR.match(page.eval_on_selector("#crowd-table tbody tr", "r => r.cells[3].textContent"))
        assert shown is not None
        assert [int(g) for g in shown.groups()] == [_js_round(point[k]) for k in ("value", "lower80", "upper80")]
        assert point["validAt"][:16].replace("T", " ") in first[1]
        assert opened.errors == []
    finally:
        opened.page.context.close()


def _js_round(x: float) -> int:
    return math.floor(x + 0.5)  # Math.round: halves go up


def test_without_forecasts_the_column_says_so_and_nothing_fails(browser: Any, tmp_path: Path) -> None:
    """A hub serving no forecasts (plain `polis serve`): the column holds dashes, no console error."""
    data_dir = tmp_path / "hub"
    _counters_in(data_dir)
    server = start_server(data_dir)
    try:
        opened = open_dashboard(browser, Hub(server, parks_key=""), None,
                                signed_in=server.headers["Authorization"].removeprefix("Bearer "))
        page = opened.page
        page.wait_for_selector("#crowd-table tbody tr")
        cells = page.eval_on_selector_all("#crowd-table tbody tr", "rows => rows.map(r => r.cells[3].textContent)")
        assert cells and set(cells) == {"–"}
        assert opened.errors == []
        opened.page.context.close()
    finally:
        stop_server(server.process)
