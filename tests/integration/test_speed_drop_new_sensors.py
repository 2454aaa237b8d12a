"""A speed-drop rule compares a sensor's drop with its neighbours'. Its neighbour map was built once, at its first
evaluation: a rule installed before its sensors existed never learned the sensors added after the first one, and
a textbook incident (one road at 10 mph, the roads around it at 60) raised nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import LINK_SDM

RULE = {
    "id": "drop", "name": "drop", "kind": "anomaly", "scope": {"type": "TrafficFlowObserved"},
    "attribute": "averageVehicleSpeed", "detector": "speed-drop", "level": 0.3, "hysteresis": 0.1,
    "severity": "Moderate", "urgency": "Immediate", "certainty": "Observed",
}
WHERE = {"A": 144.9600, "B": 144.9622, "C": 144.9578, "D": 144.9644}  # B, C, D about 200 m from A


def _reading(name: str, speed: float, at: datetime) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:TrafficFlowObserved:new:{name}",
        "type": "TrafficFlowObserved",
        "averageVehicleSpeed": {"type": "Property", "value": speed, "observedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [WHERE[name], -37.81]}},
    }


def _upsert(client: TestClient, platform: Platform, items: list[dict[str, Any]]) -> None:
    response = client.post(
        "/ngsi-ld/v1/entityOperations/upsert", params={"options": "update"}, json=items, headers={"Link": LINK_SDM}
    )
    assert response.status_code in (201, 204), response.text
    assert platform.alerts.flush(10)


def test_a_rule_installed_before_its_sensors_learns_their_neighbours(client: TestClient, platform: Platform) -> None:
    assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5 * 70)
    _upsert(client, platform, [_reading("A", 60, start)])  # A alone: the rule's first neighbour map
    for step in range(1, 64):  # B, C and D join; enough readings for every sensor's free-flow speed
        _upsert(client, platform, [_reading(n, 60 + step % 3, start + timedelta(minutes=5 * step)) for n in WHERE])
    incident = start + timedelta(minutes=5 * 64)
    _upsert(client, platform, [_reading("A", 10, incident), *(_reading(n, 60, incident) for n in "BCD")])
    found = client.get("/polis/v1/alerts", params={"status": "all", "ruleId": "drop"}).json()
    assert [[e["id"] for e in a["entities"]] for a in found] == [["urn:ngsi-ld:TrafficFlowObserved:new:A"]]
