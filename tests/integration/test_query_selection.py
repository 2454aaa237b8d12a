"""Query parameters that select which entities or instances come back: scopeQ, datasetId, local, and pick/omit
on temporal queries. Each is applied (or refused), never accepted and ignored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import admin_headers

ENTITIES = "/ngsi-ld/v1/entities"
TEMPORAL = "/ngsi-ld/v1/temporal/entities"
AT = "2026-01-01T00:00:00Z"


@pytest.fixture
def client() -> Iterator[TestClient]:
    platform = Platform.in_memory()
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as c:
        yield c
    platform.close()


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return sorted(e["id"] for e in r.json())


def test_scope_q_filters_entity_and_temporal_queries_with_counts_and_pages(client: TestClient) -> None:
    scopes = {"a": "/Madrid/Gardens", "b": "/Madrid", "c": "/Paris", "d": ["/Paris", "/Madrid/Parks"]}
    for name, scope in scopes.items():
        body = {"id": f"urn:ngsi-ld:S:{name}", "type": "S", "scope": scope, "n": {"value": 1, "observedAt": AT}}
        assert client.post(ENTITIES, json=body).status_code == 201
    assert client.post(ENTITIES, json={"id": "urn:ngsi-ld:S:none", "type": "S", "n": 1}).status_code == 201

    assert _ids(client.get(ENTITIES, params={"type": "S", "scopeQ": "/Madrid/#"})) == [
        "urn:ngsi-ld:S:a", "urn:ngsi-ld:S:b", "urn:ngsi-ld:S:d",
    ]
    assert _ids(client.get(ENTITIES, params={"type": "S", "scopeQ": "/Paris;/Madrid/+"})) == ["urn:ngsi-ld:S:d"]
    # scopeQ alone is a filter, like q; /# is "has a scope"
    r = client.get(ENTITIES, params={"scopeQ": "/#", "count": "true", "limit": "2"})
    assert r.headers["NGSILD-Results-Count"] == "4" and len(r.json()) == 2
    paris = ["urn:ngsi-ld:S:c", "urn:ngsi-ld:S:d"]
    assert _ids(client.get(TEMPORAL, params={"type": "S", "scopeQ": "/Paris"})) == paris
    query = {"type": "Query", "entities": [{"type": "S"}], "scopeQ": "/Madrid/+"}
    assert _ids(client.post("/ngsi-ld/v1/entityOperations/query", json=query)) == [
        "urn:ngsi-ld:S:a", "urn:ngsi-ld:S:d",
    ]


def test_dataset_id_keeps_only_the_instances_asked_for(client: TestClient) -> None:
    speed = [
        {"type": "Property", "value": 10, "observedAt": AT},
        {"type": "Property", "value": 20, "observedAt": AT, "datasetId": "urn:ngsi-ld:Dataset:radar"},
    ]
    entity = {"id": "urn:ngsi-ld:Road:1", "type": "Road", "speed": speed, "name": "Ring"}
    assert client.post(ENTITIES, json=entity).status_code == 201

    def speeds(r: Any) -> list[Any]:
        assert r.status_code == 200, r.text
        body = r.json()[0] if isinstance(r.json(), list) else r.json()
        value = body.get("speed", [])
        return sorted(i["value"] for i in (value if isinstance(value, list) else [value]))

    radar = {"datasetId": "urn:ngsi-ld:Dataset:radar"}
    assert speeds(client.get(ENTITIES, params={"type": "Road", **radar})) == [20]
    assert speeds(client.get(f"{ENTITIES}/urn:ngsi-ld:Road:1", params={"datasetId": "@none"})) == [10]
    both = {"datasetId": "@none,urn:ngsi-ld:Dataset:radar"}
    assert speeds(client.get(f"{ENTITIES}/urn:ngsi-ld:Road:1", params=both)) == [10, 20]
    # an attribute without an instance of those datasets is left out (name has only the default instance)
    assert "name" not in client.get(f"{ENTITIES}/urn:ngsi-ld:Road:1", params=radar).json()
    assert speeds(client.get(TEMPORAL, params={"type": "Road", **radar})) == [20]
    assert speeds(client.get(f"{TEMPORAL}/urn:ngsi-ld:Road:1", params={"datasetId": "@none"})) == [10]


def test_local_takes_a_boolean_and_answers_the_same_for_either(client: TestClient) -> None:
    assert client.post(ENTITIES, json={"id": "urn:ngsi-ld:V:1", "type": "V", "n": 1}).status_code == 201
    for value in ("true", "false"):
        assert _ids(client.get(ENTITIES, params={"type": "V", "local": value})) == ["urn:ngsi-ld:V:1"]


def test_pick_and_omit_project_a_temporal_query(client: TestClient) -> None:
    observed = {"type": "Property", "value": 1, "observedAt": AT}
    entity = {"id": "urn:ngsi-ld:P:1", "type": "P", "a": observed, "b": {**observed, "value": 2}}
    assert client.post(ENTITIES, json=entity).status_code == 201
    r = client.get(TEMPORAL, params={"type": "P", "pick": "id,b"})
    assert r.status_code == 200 and set(r.json()[0]) == {"id", "b"}, r.text
    r = client.get(TEMPORAL, params={"type": "P", "omit": "type,a"})
    assert r.status_code == 200 and set(r.json()[0]) == {"id", "b"}, r.text


@pytest.mark.parametrize(
    ("path", "good", "misspelt"),
    [
        ("/polis/v1/alerts", {"status": "all"}, {"stauts": "all"}),
        ("/polis/v1/alerts/rules", {}, {"limit": "5"}),
        ("/polis/v1/forecast-accuracy", {"window_minutes": "60"}, {"window_minute": "60"}),
        ("/polis/v1/access/me", {}, {"department": "x"}),
        ("/polis/v1/access/audit/verify", {}, {"hed": "x"}),
    ],
)
def test_a_polis_route_refuses_a_query_parameter_it_does_not_take(
    client: TestClient, path: str, good: dict[str, str], misspelt: dict[str, str]
) -> None:
    assert client.get(path, params=good).status_code == 200
    r = client.get(path, params=misspelt)
    assert r.status_code == 400, r.text
    assert r.json()["type"].endswith("/InvalidRequest") and next(iter(misspelt)) in r.json()["detail"]


@pytest.mark.parametrize("body", [{"type": "V|W"}, {"type": "V", "a|b": 1}], ids=["type", "attribute"])
def test_a_name_holding_a_bar_is_refused(client: TestClient, body: dict[str, Any]) -> None:
    """`|` is "or" in type= and in q: an entity type or attribute named with one could never be selected."""
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:V:bar", **body})
    assert r.status_code == 400 and "|" in r.json()["detail"], r.text
    assert client.get(f"{ENTITIES}/urn:ngsi-ld:V:bar").status_code == 404
