"""The simplified temporal representations keep one series per datasetId (temporalValues and aggregatedValues
of two sources are not one series), and options=sysAttrs, which history cannot honour, is refused."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import problem

T = "/ngsi-ld/v1/temporal/entities"
ID = "urn:ngsi-ld:Sensor:two-sources"
A, B = "urn:ngsi-ld:Dataset:A", "urn:ngsi-ld:Dataset:B"
AT0, AT1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"


def reading(value: float, observed: str, **more: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": observed, **more}


def test_temporal_and_aggregated_values_are_one_series_per_dataset(client: TestClient) -> None:
    speeds = [reading(1, AT0, datasetId=B), reading(10, AT0), reading(2, AT1, datasetId=B), reading(20, AT1),
              reading(100, AT0, datasetId=A)]
    r = client.post(T, json={"id": ID, "type": "Sensor", "speed": speeds, "temp": [reading(5, AT0, datasetId=A)]})
    assert r.status_code == 201, r.text
    got = client.get(f"{T}/{ID}", params={"options": "temporalValues"}).json()
    assert got["speed"] == [
        {"type": "Property", "values": [[10, AT0], [20, AT1]]},
        {"type": "Property", "values": [[100, AT0]], "datasetId": A},
        {"type": "Property", "values": [[1, AT0], [2, AT1]], "datasetId": B},
    ]
    assert got["temp"] == {"type": "Property", "values": [[5, AT0]], "datasetId": A}
    got = client.get(f"{T}/{ID}", params={"options": "aggregatedValues", "aggrMethods": "avg",
                                           "attrs": "speed"}).json()
    assert [(s.get("datasetId"), s["avg"][0][0]) for s in got["speed"]] == [(None, 15), (A, 100), (B, 1.5)]
    # One dataset asked for: one series, as before.
    got = client.get(f"{T}/{ID}", params={"options": "temporalValues", "datasetId": B}).json()
    assert got["speed"] == {"type": "Property", "values": [[1, AT0], [2, AT1]], "datasetId": B}


def test_sys_attrs_is_refused_on_temporal_retrieval(client: TestClient) -> None:
    r = client.post(T, json={"id": ID, "type": "Sensor", "speed": [reading(1, AT0)]})
    assert r.status_code == 201, r.text
    problem(client.get(f"{T}/{ID}", params={"options": "sysAttrs"}), 400, "InvalidRequest", "sysAttrs")
    problem(client.get(T, params={"type": "Sensor", "options": "temporalValues,sysAttrs"}), 400, "InvalidRequest",
            "sysAttrs")
