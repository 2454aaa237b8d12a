"""Spec parameters and headers a client library sends that the hub refused or ignored (found by a conformance
probe against the ETSI OpenAPI file): `local` (every entity here is local), `type` on merge and delete (a safety
catch: an entity of another type is left alone, 404), `pick`/`omit` on a temporal retrieve, no GeoJSON form for
answers that are not entities, and the tenant named on error answers too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client, problem

E = "/ngsi-ld/v1/entities"
T = "/ngsi-ld/v1/temporal/entities"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    for client, platform in hub_client():
        for n in (1, 2):
            body = {"id": f"urn:ngsi-ld:Meter:{n}", "type": "Meter",
                    "level": {"type": "Property", "value": n, "observedAt": "2026-11-29T08:00:00Z"},
                    "note": {"type": "Property", "value": "ok", "observedAt": "2026-11-29T08:00:00Z"}}
            assert client.post(E, json=body).status_code == 201
        yield client, platform


def test_local_is_taken_on_retrieve_merge_and_temporal_retrieve(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.get(f"{E}/urn:ngsi-ld:Meter:1", params={"local": "true"}).status_code == 200
    merged = client.patch(f"{E}/urn:ngsi-ld:Meter:1", params={"local": "true"},
                          json={"level": {"type": "Property", "value": 5}})
    assert merged.status_code == 204, merged.text
    assert client.get(f"{T}/urn:ngsi-ld:Meter:1", params={"local": "true"}).status_code == 200
    problem(client.get(f"{E}/urn:ngsi-ld:Meter:1", params={"local": "maybe"}), 400, "BadRequestData", "local")


def test_delete_and_merge_with_another_type_leave_the_entity_alone(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    problem(client.delete(f"{E}/urn:ngsi-ld:Meter:1", params={"type": "Valve"}), 404, "ResourceNotFound",
            "not of type Valve")
    assert client.get(f"{E}/urn:ngsi-ld:Meter:1").status_code == 200
    problem(client.patch(f"{E}/urn:ngsi-ld:Meter:1", params={"type": "Valve"},
                         json={"level": {"type": "Property", "value": 9}}), 404, "ResourceNotFound", "Valve")
    assert client.get(f"{E}/urn:ngsi-ld:Meter:1", params={"options": "keyValues"}).json()["level"] == 1
    assert client.patch(f"{E}/urn:ngsi-ld:Meter:1", params={"type": "Meter"},
                        json={"level": {"type": "Property", "value": 9}}).status_code == 204
    assert client.delete(f"{E}/urn:ngsi-ld:Meter:2", params={"type": "Meter"}).status_code == 204
    assert client.get(f"{E}/urn:ngsi-ld:Meter:2").status_code == 404


def test_a_temporal_retrieve_takes_pick_and_omit(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    picked = client.get(f"{T}/urn:ngsi-ld:Meter:1", params={"pick": "id,level"}).json()
    assert set(picked) == {"id", "level"}
    omitted = client.get(f"{T}/urn:ngsi-ld:Meter:1", params={"omit": "note"}).json()
    assert "note" not in omitted and "level" in omitted and omitted["type"] == "Meter"


@pytest.mark.parametrize("path", ["/ngsi-ld/v1/types", "/ngsi-ld/v1/attributes", "/ngsi-ld/v1/types/Meter",
                                  f"{T}/urn:ngsi-ld:Meter:1"])
def test_answers_that_are_not_entities_have_no_geojson_form(hub: tuple[TestClient, Platform], path: str) -> None:
    client, _ = hub
    either = client.get(path, headers={"Accept": "application/geo+json, application/json;q=0.5"})
    assert either.status_code == 200 and either.headers["content-type"].startswith("application/json")
    assert either.json().get("type") != "Feature"
    problem(client.get(path, headers={"Accept": "application/geo+json"}), 406, None)


def test_an_error_names_the_tenant_as_a_success_does(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    tenant = {"NGSILD-Tenant": "t2"}
    body = {"id": "urn:ngsi-ld:Meter:9", "type": "Meter", "level": {"type": "Property", "value": 1}}
    assert client.post(E, json=body, headers=tenant).status_code == 201
    missing = client.get(f"{E}/urn:ngsi-ld:Meter:404", headers=tenant)
    assert missing.status_code == 404 and missing.headers["NGSILD-Tenant"] == "t2"
    again = client.post(E, json=body, headers=tenant)
    assert again.status_code == 409 and again.headers["NGSILD-Tenant"] == "t2"
