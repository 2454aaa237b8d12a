"""Live forecasts of pedestrian counts (what `make run` serves for Melbourne): hourly steps from the last
recorded hour, never a negative count or a negative interval bound, refreshed and scored when counts arrive."""

from __future__ import annotations

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
from polis.ingest.datasets import ingest, load_melbourne_pedestrians
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import LINK_SDM, admin_headers
from tests.integration.test_forecast_live import _wait_for

SENSORS = 6
LAST_HOUR = datetime(2022, 10, 31, 12, tzinfo=UTC)  # the recording's final hour (23:00 in Melbourne)


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[Platform, TestClient, Any]]:
    datasets_dir = Settings().datasets_dir
    panel = load_panel("melbourne-pedestrians", datasets_dir).sensors(SENSORS)
    platform = Platform.in_memory()
    load = load_melbourne_pedestrians(datasets_dir, "2026-01-01T00:00:00Z")
    keep = set(panel.entity_ids)
    load.entities = [e for e in load.entities if e["id"] in keep]
    rows = np.isin(load.history.entity_id, list(keep))
    for name in ("entity_id", "attribute", "observed_at", "value"):
        setattr(load.history, name, getattr(load.history, name)[rows])
    ingest(platform.store, "", load)
    model = GlobalGbm((1, 3), seed=0, params=GbmParams(lags=24, max_rounds=30, learning_rate=0.2, num_leaves=15))
    model.fit(panel, int(len(panel.values) * 0.9))
    platform.forecasts.debounce_s = 0.1
    live = live_model_for(panel, model, datasets_dir)
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        platform.forecasts.attach(live)
        platform.forecasts.mark_dirty("", live)  # as the demo does: forecast from what the hub already holds
        yield platform, client, live
    platform.close()


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_counters_are_forecast_from_their_last_hour_and_never_below_zero(
    hub: tuple[Platform, TestClient, Any],
) -> None:
    _, client, live = hub
    everyone = _wait_for(client, "/polis/v1/forecasts?type=CrowdFlowObserved",
                         lambda body: len(body) == SENSORS)
    assert {f["entityId"] for f in everyone} == set(live.entity_ids)
    for forecast in everyone:
        assert forecast["issuedAt"] == _stamp(LAST_HOUR)
        assert [p["horizonMinutes"] for p in forecast["points"]] == [60, 180]
        assert [p["validAt"] for p in forecast["points"]] == [_stamp(LAST_HOUR + timedelta(hours=h)) for h in (1, 3)]
        for point in forecast["points"]:
            assert 0.0 <= point["lower80"] <= point["value"] <= point["upper80"]
    # 02:00 in Melbourne three hours on: the night's intervals would reach below 0 without the floor
    assert any(f["points"][1]["lower80"] == 0.0 for f in everyone)


def test_new_counts_issue_a_new_forecast_and_score_the_last_one(hub: tuple[Platform, TestClient, Any]) -> None:
    _, client, live = hub
    _wait_for(client, "/polis/v1/forecasts?type=CrowdFlowObserved", lambda body: len(body) == SENSORS)
    arrival = LAST_HOUR + timedelta(hours=1)
    for entity_id in live.entity_ids:
        body = {"peopleCount": {"type": "Property", "value": 40, "unitCode": "C62", "observedAt": _stamp(arrival)}}
        response = client.patch(f"/ngsi-ld/v1/entities/{entity_id}/attrs", json=body,
                                headers={"Link": LINK_SDM, "Content-Type": "application/json"})
        assert response.status_code == 204, response.text
    sensor = live.entity_ids[0]
    latest = _wait_for(client, f"/polis/v1/forecasts/{sensor}?attr=peopleCount",
                       lambda body: body["issuedAt"] == _stamp(arrival))
    assert latest["model"] == "lightgbm:melbourne-pedestrians"
    accuracy = _wait_for(client, "/polis/v1/forecast-accuracy",
                         lambda rows: any(r["step"] == 1 and r["points"] >= SENSORS for r in rows))
    step_one = next(r for r in accuracy if r["model"] == "lightgbm:melbourne-pedestrians" and r["step"] == 1)
    assert step_one["mae"] < 500  # counts of tens to hundreds at midnight: scored, not garbage
