"""`local` (§6.3.18, OAS Query.local) on POST /entityOperations/query and the batch operations: taken as the GET
routes take it (every entity here is local, so the answer is the same either way), a value that is not a
boolean refused as they refuse it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import problem

OPS = "/ngsi-ld/v1/entityOperations"
SENSOR = "urn:ngsi-ld:Sensor:local-1"


def _sensor(level: int) -> dict[str, Any]:
    return {"id": SENSOR, "type": "Sensor", "level": {"type": "Property", "value": level}}


def test_post_query_takes_local_and_answers_as_without_it(client: TestClient) -> None:
    assert client.post(f"{OPS}/create", json=[_sensor(1)]).status_code == 201
    query = {"type": "Query", "entities": [{"type": "Sensor"}]}
    plain = client.post(f"{OPS}/query", json=query)
    for local in ("true", "false"):
        r = client.post(f"{OPS}/query", params={"local": local, "count": "true"}, json=query)
        assert r.status_code == 200, r.text
        assert r.json() == plain.json() and [e["id"] for e in r.json()] == [SENSOR]
        assert r.headers["NGSILD-Results-Count"] == "1"
    problem(client.post(f"{OPS}/query", params={"local": "yes"}, json=query), 400, "BadRequestData", "local")
    get = client.get("/ngsi-ld/v1/entities", params={"type": "Sensor", "local": "yes"})
    assert client.post(f"{OPS}/query", params={"local": "yes"}, json=query).json() == get.json()  # the GET's problem


def test_merge_takes_local(client: TestClient) -> None:
    assert client.post(f"{OPS}/create", json=[_sensor(1)]).status_code == 201
    r = client.post(f"{OPS}/merge", params={"local": "true"}, json=[_sensor(7)])
    assert r.status_code == 204, r.text
    assert client.get(f"/ngsi-ld/v1/entities/{SENSOR}", params={"options": "keyValues"}).json()["level"] == 7
    problem(client.post(f"{OPS}/merge", params={"local": "1"}, json=[_sensor(8)]), 400, "BadRequestData", "local")
    assert client.get(f"/ngsi-ld/v1/entities/{SENSOR}", params={"options": "keyValues"}).json()["level"] == 7


@pytest.mark.parametrize(
    ("op", "body", "status"),
    [
        ("create", [_sensor(1)], 201),
        ("upsert", [_sensor(2)], 201),
        ("update", [_sensor(3)], 204),
        ("delete", [SENSOR], 204),
    ],
)
def test_every_batch_operation_takes_local(client: TestClient, op: str, body: list[Any], status: int) -> None:
    """The OAS lists Query.local on all five batch operations, not only merge."""
    if op in ("update", "delete"):
        assert client.post(f"{OPS}/create", json=[_sensor(0)]).status_code == 201
    r = client.post(f"{OPS}/{op}", params={"local": "true"}, json=body)
    assert r.status_code == status, r.text
