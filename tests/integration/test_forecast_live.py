"""Live forecasts through the API: readings written to the hub refresh the forecasts, which are served for
one entity, for all entities of a type, as NGSI-LD, and scored once their valid times pass."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.forecast.data import load_panel
from polis.forecast.gbm import GbmParams, GlobalGbm
from polis.forecast.live import live_model_for
from polis.ingest.datasets import ingest, load_los_loop
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import LINK_SDM, admin_headers

SENSORS = 8
SPEED = "https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"


def los_loop_hub(sensors: int) -> Platform:
    """An in-memory hub holding the first `sensors` Los-loop sensors and their recorded week."""
    platform = Platform.in_memory()
    load = load_los_loop(Settings().datasets_dir, "2026-01-01T00:00:00Z")
    keep = {e["id"] for e in load.entities[:sensors]}
    load.entities = load.entities[:sensors]
    rows = np.isin(load.history.entity_id, list(keep))
    for name in ("entity_id", "attribute", "observed_at", "value"):
        setattr(load.history, name, getattr(load.history, name)[rows])
    ingest(platform.store, "", load)
    return platform


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[Platform, TestClient, Any]]:
    datasets_dir = Settings().datasets_dir
    platform = los_loop_hub(SENSORS)
    panel = load_panel("los-loop", datasets_dir).sensors(SENSORS)
    model = GlobalGbm((1, 2, 3), seed=0, params=GbmParams(lags=6, max_rounds=30, learning_rate=0.2, num_leaves=15))
    model.fit(panel, 1800)
    platform.forecasts.debounce_s = 0.1
    live = live_model_for(panel, model, datasets_dir)
    platform.forecasts.attach(live)
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        yield platform, client, live
    platform.close()


def _write(client: TestClient, entity_id: str, value: float, observed: datetime) -> None:
    body = {"averageVehicleSpeed": {"type": "Property", "value": value, "unitCode": "HM",
                                    "observedAt": observed.isoformat().replace("+00:00", "Z")}}
    response = client.patch(f"/ngsi-ld/v1/entities/{entity_id}/attrs", json=body,
                            headers={"Link": LINK_SDM, "Content-Type": "application/json"})
    assert response.status_code == 204, response.text


def _wait_for(client: TestClient, url: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        if response.status_code == 200 and check(response.json()):
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: {response.status_code} {response.text[:300]}")
        time.sleep(0.1)


def test_live_forecasts_follow_new_readings_and_are_scored(hub: tuple[Platform, TestClient, Any]) -> None:
    platform, client, live = hub
    last = datetime(2012, 3, 8, 7, 55, tzinfo=UTC)  # the recording's final step
    sensor = live.entity_ids[0]
    for i, entity_id in enumerate(live.entity_ids):
        _write(client, entity_id, 60.0 + i, last + timedelta(minutes=5))
    url = f"/polis/v1/forecasts/{sensor}?attr=averageVehicleSpeed"
    first = _wait_for(client, url, lambda body: body["issuedAt"] == "2012-03-08T08:00:00Z")
    assert [p["horizonMinutes"] for p in first["points"]] == [5, 10, 15]
    assert all(p["lower80"] <= p["value"] <= p["upper80"] for p in first["points"])
    assert 30 < first["points"][0]["value"] < 90  # speeds near the last reading of 60 mph
    assert first["model"] == "lightgbm:los-loop"

    # the contract the alerts engine relies on
    path = platform.forecasts.latest(sensor, SPEED)
    assert path is not None and path.points[0].valid_at == datetime(2012, 3, 8, 8, 5, tzinfo=UTC)

    everyone = client.get("/polis/v1/forecasts", params={"type": "TrafficFlowObserved"}).json()
    assert {f["entityId"] for f in everyone} == set(live.entity_ids)
    as_ld = client.get(url + "&format=ngsi-ld").json()
    assert as_ld["type"] == "Forecast" and as_ld["refEntity"]["object"] == sensor
    assert len(as_ld["forecast"]["json"]) == 3

    # the next readings arrive: a new forecast is issued and the old one's first step is scored
    for i, entity_id in enumerate(live.entity_ids):
        _write(client, entity_id, 58.0 + i, last + timedelta(minutes=10))
    _wait_for(client, url, lambda body: body["issuedAt"] == "2012-03-08T08:05:00Z")
    # the last sensor's reading may land after a refresh has started: scoring catches up on the next one
    accuracy = _wait_for(client, "/polis/v1/forecast-accuracy",
                         lambda rows: any(r["step"] == 1 and r["points"] >= SENSORS for r in rows))
    step_one = next(r for r in accuracy if r["model"] == "lightgbm:los-loop" and r["step"] == 1)
    assert step_one["mae"] < 30
    history = client.get(f"/polis/v1/forecasts/{sensor}/history", params={"attr": "averageVehicleSpeed"}).json()
    assert [h["issuedAt"] for h in history][-2:] == ["2012-03-08T08:00:00Z", "2012-03-08T08:05:00Z"]


def test_unknown_forecast_is_a_problem_not_a_crash(hub: tuple[Platform, TestClient, Any]) -> None:
    _, client, _ = hub
    response = client.get("/polis/v1/forecasts/urn:ngsi-ld:Nothing:1", params={"attr": "averageVehicleSpeed"})
    assert response.status_code == 404 and response.json()["type"].endswith("ResourceNotFound")
    bad = client.get("/polis/v1/forecasts", params={"type": "TrafficFlowObserved", "format": "xml"})
    assert bad.status_code == 400
