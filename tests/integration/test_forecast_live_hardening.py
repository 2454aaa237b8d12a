"""Live forecasts against readings a sensor or a tenant should not be able to spoil others' forecasts with: a
reading dated far in the future, another tenant's readings scoring this tenant's forecasts, and a long-running
hub's memory of which points it scored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

import polis.forecast.live as live_module
from polis.api.app import create_app
from polis.forecast.baselines import Persistence
from polis.forecast.data import load_panel
from polis.forecast.live import LiveModel, live_model_for
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import LINK_SDM, admin_headers
from tests.integration.test_forecast_live import SPEED, los_loop_hub

LAST = datetime(2012, 3, 8, 7, 55, tzinfo=UTC)  # the recording's final step
FIVE = timedelta(minutes=5)

Hub = tuple[Platform, TestClient, LiveModel]


@pytest.fixture
def hub() -> Iterator[Hub]:
    """Two Los-loop sensors watched by a persistence model, refreshed by hand (no debounce thread races)."""
    datasets_dir = Settings().datasets_dir
    platform = los_loop_hub(2)
    panel = load_panel("los-loop", datasets_dir).sensors(2)
    model = Persistence((1, 2, 3))
    model.fit(panel, len(panel.values) - 10)
    platform.forecasts.debounce_s = 3600  # readings mark the model dirty; the tests refresh it themselves
    live = live_model_for(panel, model, datasets_dir)
    platform.forecasts.attach(live)
    with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
        yield platform, client, live
    platform.close()


def _write(client: TestClient, entity_id: str, value: float, observed: datetime, tenant: str = "") -> None:
    headers = {"Link": LINK_SDM, "Content-Type": "application/json", **({"NGSILD-Tenant": tenant} if tenant else {})}
    body = {"averageVehicleSpeed": {"type": "Property", "value": value,
                                    "observedAt": observed.isoformat().replace("+00:00", "Z")}}
    response = client.patch(f"/ngsi-ld/v1/entities/{entity_id}/attrs", json=body, headers=headers)
    if response.status_code == 404:  # not in that tenant yet
        response = client.post("/ngsi-ld/v1/entities", headers=headers,
                               json={"id": entity_id, "type": "TrafficFlowObserved", **body})
    assert response.status_code in (201, 204), response.text


def test_a_reading_dated_far_ahead_stops_no_other_sensors_forecasts(hub: Hub) -> None:
    platform, client, live = hub
    broken, other = live.entity_ids
    _write(client, broken, 50.0, datetime(2100, 1, 1, tzinfo=UTC))  # a sensor's clock gone wrong
    _write(client, other, 42.0, LAST + FIVE)
    platform.forecasts.refresh("", live)
    path = platform.forecasts.latest(other, SPEED)
    assert path is not None and path.issued_at == LAST + FIVE and path.points[0].value == 42.0
    # the calendar's last minute: its forecast would end after year 9999
    _write(client, broken, 51.0, datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    _write(client, other, 43.0, LAST + 2 * FIVE)
    platform.forecasts.refresh("", live)
    path = platform.forecasts.latest(other, SPEED)
    assert path is not None and path.issued_at == LAST + 2 * FIVE and path.points[0].value == 43.0
    served = client.get(f"/polis/v1/forecasts/{other}", params={"attr": "averageVehicleSpeed"})
    assert served.status_code == 200 and served.json()["issuedAt"] == "2012-03-08T08:05:00Z"


def test_live_accuracy_is_each_tenants_own(hub: Hub) -> None:
    """The same sensors in a second tenant, whose readings are far off: they score that tenant's forecasts, and
    neither spoil nor show in the default tenant's accuracy."""
    platform, client, live = hub
    platform.forecasts.refresh("", live)  # from the recorded week: issued at its last step
    for entity_id in live.entity_ids:
        _write(client, entity_id, 60.0, LAST, tenant="sandbox")
    platform.forecasts.refresh("sandbox", live)
    recorded = {e: platform.forecasts.latest(e, SPEED) for e in live.entity_ids}
    for entity_id in live.entity_ids:
        _write(client, entity_id, 1e6, LAST + FIVE, tenant="sandbox")
        forecast = recorded[entity_id]
        assert forecast is not None
        _write(client, entity_id, forecast.points[0].value + 2.0, LAST + FIVE)  # off by 2 in the default tenant
    platform.forecasts.refresh("sandbox", live)
    platform.forecasts.refresh("", live)

    mine = client.get("/polis/v1/forecast-accuracy").json()
    assert mine == [{"model": "persistence:los-loop", "step": 1, "mae": 2.0, "points": 2}]
    theirs = client.get("/polis/v1/forecast-accuracy", headers={"NGSILD-Tenant": "sandbox"}).json()
    assert len(theirs) == 1 and theirs[0]["points"] == 2 and theirs[0]["mae"] == pytest.approx(1e6 - 60.0)
    unknown = client.get("/polis/v1/forecast-accuracy", headers={"NGSILD-Tenant": "nobody"})
    assert unknown.status_code == 404 and "does not exist" in unknown.text


def test_the_marks_of_scored_points_stay_as_bounded_as_the_kept_forecasts(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub runs for months: what it remembers of the points it scored goes with the forecasts it lets go, and
    no point is scored twice."""
    platform, client, live = hub
    monkeypatch.setattr(live_module, "HISTORY_PER_SERIES", 4)
    platform.forecasts.refresh("", live)
    rounds = 30
    for k in range(1, rounds + 1):
        for entity_id in live.entity_ids:
            _write(client, entity_id, 60.0, LAST + k * FIVE)
        platform.forecasts.refresh("", live)
    service = platform.forecasts
    assert len(service._scored_keys) <= 4 * 3 * 2  # kept paths x steps x sensors
    # each reading scores the forecasts issued one, two and three steps before it, once
    assert len(service._scored) == 2 * (1 + 2 + 3 * (rounds - 2))
    assert len(service.history(live.entity_ids[0], SPEED)) == 4
