"""The /entities API in process: create, retrieve, replace, merge, delete, attributes, queries,
JSON-LD contexts and tenants, as a client sees them (status, headers, body)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import LINK_SDM, SDM_TRANSPORT, admin_headers

BASE = "/ngsi-ld/v1"
ENTITIES = BASE + "/entities"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
SDM = "https://smartdatamodels.org/dataModel.Transportation/"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
SDM_HDR = {"Link": LINK_SDM}
T0 = "2026-01-01T00:00:00Z"


# -- helpers ------------------------------------------------------------------------------------------


def flow(n: int, speed: float, lon: float = -118.25, lat: float = 34.05, **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:TrafficFlowObserved:{n}", "type": "TrafficFlowObserved",
            "averageVehicleSpeed": {"type": "Property", "value": speed, "unitCode": "KMH", "observedAt": T0},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}, **extra}


def create(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    r = client.post(ENTITIES, json=body, headers=SDM_HDR if headers is None else headers)
    assert r.status_code == 201, r.text
    return str(body["id"])


def get(client: TestClient, eid: str, headers: dict[str, str] | None = None, /, **params: str) -> dict[str, Any]:
    r = client.get(f"{ENTITIES}/{eid}", params=params, headers=SDM_HDR if headers is None else headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def query(client: TestClient, headers: dict[str, str] | None = None, /, **params: str) -> list[dict[str, Any]]:
    r = client.get(ENTITIES, params=params, headers=SDM_HDR if headers is None else headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def ids(entities: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in entities]


def problem(r: Any, status: int, name: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/")
    body = r.json()
    assert body["type"] == ERR + name
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]


def link_url(header: str) -> str:
    return header.split(">")[0].lstrip(" <")


# -- create and retrieve --------------------------------------------------------------------------------


def test_create_answers_201_with_location_and_no_body(client: TestClient) -> None:
    r = client.post(ENTITIES, json=flow(1, 55.5), headers=SDM_HDR)
    assert r.status_code == 201
    assert r.headers["location"] == f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:1"
    assert r.content == b""
    assert client.get(r.headers["location"], headers=SDM_HDR).status_code == 200


def test_create_existing_id_is_409_and_keeps_the_first(client: TestClient) -> None:
    create(client, flow(1, 55.5))
    r = client.post(ENTITIES, json=flow(1, 99.0), headers=SDM_HDR)
    assert "urn:ngsi-ld:TrafficFlowObserved:1" in problem(r, 409, "AlreadyExists")["detail"]
    assert get(client, "urn:ngsi-ld:TrafficFlowObserved:1")["averageVehicleSpeed"]["value"] == 55.5


def test_retrieve_normalized_under_the_link_context(client: TestClient) -> None:
    ref = {"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:7"}
    create(client, flow(1, 55.5, refRoadSegment=ref))
    r = client.get(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:1", headers=SDM_HDR)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert link_url(r.headers["link"]) == SDM_TRANSPORT
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in r.headers["link"]
    assert r.json() == {
        "id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
        "averageVehicleSpeed": {"type": "Property", "value": 55.5, "unitCode": "KMH", "observedAt": T0},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-118.25, 34.05]}},
        "refRoadSegment": ref,
    }


def test_retrieve_without_link_gives_full_iris_and_the_core_link(client: TestClient) -> None:
    create(client, flow(1, 55.5))
    r = client.get(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:1")
    body = r.json()
    assert body["type"] == SDM + "TrafficFlowObserved"
    assert body[SDM + "averageVehicleSpeed"]["value"] == 55.5
    assert "averageVehicleSpeed" not in body
    assert "location" in body  # a core term stays short
    assert link_url(r.headers["link"]) == CORE_CONTEXT


def test_terms_without_a_user_context_round_trip_under_the_default_vocab(client: TestClient) -> None:
    create(client, {"id": "urn:ngsi-ld:Thing:1", "type": "Thing", "speed": {"type": "Property", "value": 3}}, {})
    assert get(client, "urn:ngsi-ld:Thing:1", {}) == {
        "id": "urn:ngsi-ld:Thing:1", "type": "Thing", "speed": {"type": "Property", "value": 3}}
    # The same names spelt as full IRIs find the same entity and attribute.
    found = query(client, {}, type=DEFAULT_VOCAB + "Thing", q=f"{DEFAULT_VOCAB}speed==3")
    assert ids(found) == ["urn:ngsi-ld:Thing:1"]


@pytest.mark.parametrize("params", [{"options": "keyValues"}, {"options": "simplified"}, {"format": "keyValues"}])
def test_retrieve_key_values(client: TestClient, params: dict[str, str]) -> None:
    create(client, flow(1, 55.5, name={"type": "LanguageProperty", "languageMap": {"en": "Main St"}}))
    assert get(client, "urn:ngsi-ld:TrafficFlowObserved:1", **params) == {
        "id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved", "averageVehicleSpeed": 55.5,
        "location": {"type": "Point", "coordinates": [-118.25, 34.05]}, "name": {"en": "Main St"}}


def test_retrieve_concise(client: TestClient) -> None:
    body = flow(1, 55.5, congested={"type": "Property", "value": True},
                refRoadSegment={"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:7"},
                name={"type": "LanguageProperty", "languageMap": {"en": "Main St"}})
    create(client, body)
    assert get(client, "urn:ngsi-ld:TrafficFlowObserved:1", options="concise") == {
        "id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
        "averageVehicleSpeed": {"value": 55.5, "unitCode": "KMH", "observedAt": T0},
        "location": {"type": "Point", "coordinates": [-118.25, 34.05]},
        "congested": True,
        "refRoadSegment": {"object": "urn:ngsi-ld:RoadSegment:7"},
        "name": {"languageMap": {"en": "Main St"}},
    }


def test_concise_input_is_accepted_and_reads_back_normalized(client: TestClient) -> None:
    create(client, {"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
                    "intensity": 12, "refRoadSegment": {"object": "urn:ngsi-ld:RoadSegment:1"},
                    "location": {"type": "Point", "coordinates": [1.0, 2.0]}})
    body = get(client, "urn:ngsi-ld:TrafficFlowObserved:1")
    assert body["intensity"] == {"type": "Property", "value": 12}
    assert body["refRoadSegment"] == {"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:1"}
    assert body["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}


def test_sys_attrs_only_when_asked_and_created_at_survives_updates(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    plain = get(client, eid)
    assert "createdAt" not in plain and "createdAt" not in plain["averageVehicleSpeed"]
    first = get(client, eid, options="sysAttrs")
    for holder in (first, first["averageVehicleSpeed"], first["location"]):
        assert holder["createdAt"].endswith("Z") and holder["modifiedAt"].endswith("Z")
    r = client.patch(f"{ENTITIES}/{eid}/attrs", json={"averageVehicleSpeed": {"type": "Property", "value": 1}},
                     headers=SDM_HDR)
    assert r.status_code == 204
    second = get(client, eid, options="sysAttrs,keyValues")
    assert second["createdAt"] == first["createdAt"]
    assert second["modifiedAt"] > first["modifiedAt"]
    assert second["averageVehicleSpeed"] == 1


def test_client_supplied_system_attributes_are_ignored(client: TestClient) -> None:
    body = flow(1, 5.0)
    body["createdAt"] = "1999-01-01T00:00:00Z"
    body["averageVehicleSpeed"]["modifiedAt"] = "1999-01-01T00:00:00Z"
    eid = create(client, body)
    got = get(client, eid, options="sysAttrs")
    assert got["createdAt"] != "1999-01-01T00:00:00Z"
    assert got["averageVehicleSpeed"]["modifiedAt"] != "1999-01-01T00:00:00Z"


def test_pick_omit_and_attrs_project_the_entity(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5, intensity={"type": "Property", "value": 7}))
    assert set(get(client, eid, pick="id,averageVehicleSpeed")) == {"id", "averageVehicleSpeed"}
    assert set(get(client, eid, omit="location,type")) == {"id", "averageVehicleSpeed", "intensity"}
    assert set(get(client, eid, attrs="intensity")) == {"id", "type", "intensity"}
    r = client.get(f"{ENTITIES}/{eid}", params={"attrs": "occupancy"}, headers=SDM_HDR)
    problem(r, 404, "ResourceNotFound")


def test_retrieve_with_a_type_that_does_not_match_is_404(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    assert get(client, eid, type="TrafficFlowObserved")["id"] == eid
    problem(client.get(f"{ENTITIES}/{eid}", params={"type": "Vehicle"}, headers=SDM_HDR), 404, "ResourceNotFound")


def test_retrieve_unknown_entity_is_404(client: TestClient) -> None:
    r = client.get(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:nope", headers=SDM_HDR)
    assert "urn:ngsi-ld:TrafficFlowObserved:nope" in problem(r, 404, "ResourceNotFound")["detail"]


# -- replace, merge, delete -----------------------------------------------------------------------------


def test_replace_swaps_the_attribute_set(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    created = get(client, eid, options="sysAttrs")["createdAt"]
    r = client.put(f"{ENTITIES}/{eid}", json={"intensity": {"type": "Property", "value": 9}}, headers=SDM_HDR)
    assert r.status_code == 204 and r.content == b""
    after = get(client, eid, options="sysAttrs")
    assert after["type"] == "TrafficFlowObserved"
    assert "averageVehicleSpeed" not in after and "location" not in after
    assert after["intensity"]["value"] == 9
    assert after["createdAt"] == created


def test_replace_with_another_id_or_unknown_entity_fails_and_writes_nothing(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.put(f"{ENTITIES}/{eid}", json={"id": "urn:ngsi-ld:TrafficFlowObserved:2", "intensity": 1},
                   headers=SDM_HDR)
    problem(r, 400, "BadRequestData")
    assert get(client, eid)["averageVehicleSpeed"]["value"] == 55.5
    r = client.put(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:9", json={"intensity": 1}, headers=SDM_HDR)
    problem(r, 404, "ResourceNotFound")


def test_replace_with_another_type_is_400_and_writes_nothing(client: TestClient) -> None:
    # §5.6.18 (sheet §4): id and type in the body, if present, must match the entity's.
    eid = create(client, flow(1, 55.5))
    r = client.put(f"{ENTITIES}/{eid}", json={"type": "Vehicle", "intensity": 1}, headers=SDM_HDR)
    problem(r, 400, "BadRequestData")
    after = get(client, eid)
    assert after["type"] == "TrafficFlowObserved" and after["averageVehicleSpeed"]["value"] == 55.5


def test_merge_adds_overwrites_keeps_and_deletes_with_null(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5, intensity={"type": "Property", "value": 7}))
    r = client.patch(f"{ENTITIES}/{eid}", headers=SDM_HDR, json={
        "averageVehicleSpeed": {"type": "Property", "value": 60.0},
        "congested": {"type": "Property", "value": True},
        "intensity": "urn:ngsi-ld:null",
    })
    assert r.status_code == 204, r.text
    body = get(client, eid)
    # Members not sent (unitCode, observedAt) survive a merge.
    assert body["averageVehicleSpeed"] == {"type": "Property", "value": 60.0, "unitCode": "KMH", "observedAt": T0}
    assert body["congested"]["value"] is True
    assert "intensity" not in body
    assert body["location"]["value"]["coordinates"] == [-118.25, 34.05]


@pytest.mark.parametrize("null", ["urn:ngsi-ld:null", {"type": "Property", "value": "urn:ngsi-ld:null"},
                                  {"value": "urn:ngsi-ld:null"}])
def test_merge_that_only_deletes(client: TestClient, null: Any) -> None:
    eid = create(client, flow(1, 55.5, intensity={"type": "Property", "value": 7}))
    r = client.patch(f"{ENTITIES}/{eid}", json={"intensity": null}, headers=SDM_HDR)
    assert r.status_code == 204, r.text
    body = get(client, eid)
    assert "intensity" not in body
    assert body["averageVehicleSpeed"]["value"] == 55.5


def test_merge_observed_at_parameter_is_a_default(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.patch(f"{ENTITIES}/{eid}", params={"observedAt": "2026-02-01T00:00:00Z"},
                     json={"intensity": {"type": "Property", "value": 3}}, headers=SDM_HDR)
    assert r.status_code == 204, r.text
    assert get(client, eid)["intensity"]["observedAt"].startswith("2026-02-01T00:00:00")


def test_merge_unknown_entity_is_404(client: TestClient) -> None:
    r = client.patch(f"{ENTITIES}/urn:ngsi-ld:X:404", json={"a": 1})
    problem(r, 404, "ResourceNotFound")


def test_delete_entity(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.delete(f"{ENTITIES}/{eid}")
    assert r.status_code == 204 and r.content == b""
    problem(client.get(f"{ENTITIES}/{eid}"), 404, "ResourceNotFound")
    problem(client.delete(f"{ENTITIES}/{eid}"), 404, "ResourceNotFound")
    assert query(client, type="TrafficFlowObserved") == []


# -- attributes ----------------------------------------------------------------------------------------


def test_append_adds_and_overwrites_with_204(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.post(f"{ENTITIES}/{eid}/attrs", headers=SDM_HDR, json={
        "intensity": {"type": "Property", "value": 7}, "averageVehicleSpeed": {"type": "Property", "value": 1.5}})
    assert r.status_code == 204 and r.content == b""
    body = get(client, eid)
    assert body["intensity"]["value"] == 7
    assert body["averageVehicleSpeed"] == {"type": "Property", "value": 1.5}  # overwritten whole


def test_append_no_overwrite_reports_207_and_keeps_the_old_value(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.post(f"{ENTITIES}/{eid}/attrs", params={"options": "noOverwrite"}, headers=SDM_HDR, json={
        "intensity": {"type": "Property", "value": 7}, "averageVehicleSpeed": {"type": "Property", "value": 1.5}})
    assert r.status_code == 207, r.text
    result = r.json()
    assert result["updated"] == ["intensity"]
    assert [n["attributeName"] for n in result["notUpdated"]] == ["averageVehicleSpeed"]
    assert result["notUpdated"][0]["reason"]
    body = get(client, eid)
    assert body["averageVehicleSpeed"]["value"] == 55.5 and body["intensity"]["value"] == 7


def test_append_a_second_dataset_instance(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.post(f"{ENTITIES}/{eid}/attrs", headers=SDM_HDR, json={"averageVehicleSpeed": {
        "type": "Property", "value": 40, "datasetId": "urn:ngsi-ld:Dataset:radar"}})
    assert r.status_code == 204, r.text
    instances = get(client, eid)["averageVehicleSpeed"]
    assert isinstance(instances, list)
    assert sorted((i.get("datasetId") or "", i["value"]) for i in instances) == [
        ("", 55.5), ("urn:ngsi-ld:Dataset:radar", 40)]


def test_update_attrs_204_when_all_exist(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.patch(f"{ENTITIES}/{eid}/attrs", json={"averageVehicleSpeed": {"type": "Property", "value": 2}},
                     headers=SDM_HDR)
    assert r.status_code == 204 and r.content == b""
    assert get(client, eid)["averageVehicleSpeed"]["value"] == 2


def test_update_attrs_207_lists_the_missing_and_does_not_create_them(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.patch(f"{ENTITIES}/{eid}/attrs", headers=SDM_HDR, json={
        "averageVehicleSpeed": {"type": "Property", "value": 2}, "intensity": {"type": "Property", "value": 3}})
    assert r.status_code == 207
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"updated": ["averageVehicleSpeed"],
                        "notUpdated": [{"attributeName": "intensity", "reason": "attribute does not exist"}]}
    body = get(client, eid)
    assert body["averageVehicleSpeed"]["value"] == 2 and "intensity" not in body


def test_update_attrs_on_unknown_entity_is_404(client: TestClient) -> None:
    r = client.patch(f"{ENTITIES}/urn:ngsi-ld:X:9/attrs", json={"a": {"type": "Property", "value": 1}})
    problem(r, 404, "ResourceNotFound")


def test_partial_attribute_update_changes_only_the_members_sent(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.patch(f"{ENTITIES}/{eid}/attrs/averageVehicleSpeed", json={"value": 41}, headers=SDM_HDR)
    assert r.status_code == 204 and r.content == b""
    assert get(client, eid)["averageVehicleSpeed"] == {
        "type": "Property", "value": 41, "unitCode": "KMH", "observedAt": T0}


def test_partial_attribute_update_by_full_iri_without_link(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.patch(f"{ENTITIES}/{eid}/attrs/{SDM}averageVehicleSpeed", json={"value": 42})
    assert r.status_code == 204, r.text
    assert get(client, eid)["averageVehicleSpeed"]["value"] == 42


def test_partial_attribute_update_of_missing_attribute_or_entity_is_404(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    problem(client.patch(f"{ENTITIES}/{eid}/attrs/intensity", json={"value": 1}, headers=SDM_HDR),
            404, "ResourceNotFound")
    assert "intensity" not in get(client, eid)
    problem(client.patch(f"{ENTITIES}/urn:ngsi-ld:X:9/attrs/a", json={"value": 1}), 404, "ResourceNotFound")


def test_replace_attribute_swaps_the_whole_instance(client: TestClient) -> None:
    eid = create(client, flow(1, 55.5))
    r = client.put(f"{ENTITIES}/{eid}/attrs/averageVehicleSpeed", json={"type": "Property", "value": 12},
                   headers=SDM_HDR)
    assert r.status_code == 204, r.text
    assert get(client, eid)["averageVehicleSpeed"] == {"type": "Property", "value": 12}
    r = client.put(f"{ENTITIES}/{eid}/attrs/intensity", json={"type": "Property", "value": 1}, headers=SDM_HDR)
    problem(r, 404, "ResourceNotFound")
    assert "intensity" not in get(client, eid)


def test_delete_attribute_default_dataset_and_delete_all(client: TestClient) -> None:
    radar = "urn:ngsi-ld:Dataset:radar"
    body = flow(1, 55.5)
    body["averageVehicleSpeed"] = [{"type": "Property", "value": 1},
                                   {"type": "Property", "value": 2, "datasetId": radar},
                                   {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:loop"}]
    eid = create(client, body)
    url = f"{ENTITIES}/{eid}/attrs/averageVehicleSpeed"
    assert client.delete(url, headers=SDM_HDR).status_code == 204
    left = get(client, eid)["averageVehicleSpeed"]
    assert sorted(i["value"] for i in left) == [2, 3]
    assert client.delete(url, params={"datasetId": radar}, headers=SDM_HDR).status_code == 204
    left = get(client, eid)["averageVehicleSpeed"]
    assert left["value"] == 3  # one instance left: no longer an array
    problem(client.delete(url, params={"datasetId": radar}, headers=SDM_HDR), 404, "ResourceNotFound")
    assert client.delete(url, params={"deleteAll": "true"}, headers=SDM_HDR).status_code == 204
    assert "averageVehicleSpeed" not in get(client, eid)
    problem(client.delete(url, headers=SDM_HDR), 404, "ResourceNotFound")


# -- queries -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city() -> Iterator[TestClient]:
    """Four flows (three around LA, one in Paris) with varied attributes, one CrowdFlowObserved and one
    entity with both types. Shared by the read-only query tests of this module (writes are slow-ish)."""
    platform = Platform.in_memory()
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        _populate(client)
        yield client
    platform.close()


def _populate(client: TestClient) -> None:
    create(client, flow(1, 10.0, -118.2500, 34.0500, congested={"type": "Property", "value": True},
                        laneId={"type": "Property", "value": 1},
                        address={"type": "Property", "value": {"addressLocality": "Melbourne", "postalCode": "3000"}},
                        refRoadSegment={"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:A"}))
    create(client, flow(2, 50.0, -118.2600, 34.0500, congested={"type": "Property", "value": False},
                        laneId={"type": "Property", "value": 2},
                        address={"type": "Property", "value": {"addressLocality": "Sydney"}},
                        refRoadSegment={"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:B"}))
    speed3 = {"type": "Property", "value": 80.0, "observedAt": "2026-01-02T00:00:00Z",
              "accuracy": {"type": "Property", "value": 0.9}}
    create(client, {**flow(3, 0.0, -118.4000, 34.1000), "averageVehicleSpeed": speed3,
                    "name": {"type": "Property", "value": "Hollywood Fwy"}})
    create(client, flow(4, 120.0, 2.35, 48.85, name={"type": "Property", "value": "Periph"}))
    create(client, {"id": "urn:ngsi-ld:CrowdFlowObserved:1", "type": "CrowdFlowObserved",
                    "peopleCount": {"type": "Property", "value": 812},
                    "location": {"type": "GeoProperty", "value": {
                        "type": "Polygon", "coordinates": [[[-118.3, 34.0], [-118.2, 34.0], [-118.2, 34.1],
                                                            [-118.3, 34.1], [-118.3, 34.0]]]}}})
    create(client, {"id": "urn:ngsi-ld:Both:1", "type": ["TrafficFlowObserved", "CrowdFlowObserved"],
                    "peopleCount": {"type": "Property", "value": 3}})


F1, F2, F3, F4 = (f"urn:ngsi-ld:TrafficFlowObserved:{n}" for n in (1, 2, 3, 4))
C1, B1 = "urn:ngsi-ld:CrowdFlowObserved:1", "urn:ngsi-ld:Both:1"


@pytest.mark.parametrize(("selector", "expected"), [
    ("TrafficFlowObserved", {F1, F2, F3, F4, B1}),
    ("CrowdFlowObserved", {C1, B1}),
    ("TrafficFlowObserved,CrowdFlowObserved", {F1, F2, F3, F4, C1, B1}),
    ("TrafficFlowObserved|CrowdFlowObserved", {F1, F2, F3, F4, C1, B1}),
    ("TrafficFlowObserved;CrowdFlowObserved", {B1}),
    ("(TrafficFlowObserved;CrowdFlowObserved),Vehicle", {B1}),
    ("Vehicle", set()),
])
def test_query_type_selection(city: TestClient, selector: str, expected: set[str]) -> None:
    assert set(ids(query(city, type=selector))) == expected


def test_query_by_id_and_id_pattern(city: TestClient) -> None:
    assert set(ids(query(city, id=f"{F1},{F3}"))) == {F1, F3}
    assert set(ids(query(city, type="TrafficFlowObserved", id=F2))) == {F2}
    assert set(ids(query(city, idPattern=r"^urn:ngsi-ld:TrafficFlowObserved:[12]$"))) == {F1, F2}
    assert set(ids(query(city, idPattern="Crowd"))) == {C1}


def test_query_attrs_selects_and_projects(city: TestClient) -> None:
    found = query(city, attrs="name")
    assert set(ids(found)) == {F3, F4}
    for entity in found:
        assert set(entity) == {"id", "type", "name"}


@pytest.mark.parametrize(("q", "expected"), [
    ("averageVehicleSpeed>40", {F2, F3, F4}),
    ("averageVehicleSpeed>=50", {F2, F3, F4}),
    ("averageVehicleSpeed<50", {F1}),
    ("averageVehicleSpeed<=50", {F1, F2}),
    ("averageVehicleSpeed==50", {F2}),
    ("averageVehicleSpeed!=50", {F1, F3, F4}),
    ("averageVehicleSpeed==10..80", {F1, F2, F3}),
    ("averageVehicleSpeed==10,120", {F1, F4}),
    ("laneId==1,3", {F1}),
    ("congested==true", {F1}),
    ("congested==false", {F2}),
    ('name=="Periph"', {F4}),
    ('name~="^Holly"', {F3}),
    ('name!~="^Holly"', {F4}),
    ('refRoadSegment=="urn:ngsi-ld:RoadSegment:B"', {F2}),
    ("congested", {F1, F2}),
    ("!congested;averageVehicleSpeed>0", {F3, F4}),
    ("congested==true;averageVehicleSpeed<20", {F1}),
    ("congested==true;averageVehicleSpeed>20", set()),
    ("averageVehicleSpeed>100|laneId==2", {F2, F4}),
    ("(averageVehicleSpeed>100|laneId==2);congested==false", {F2}),
    ("laneId==1|averageVehicleSpeed>100;name==\"Periph\"", {F1, F4}),
    ("averageVehicleSpeed.accuracy>0.5", {F3}),
    ('averageVehicleSpeed.observedAt>"2026-01-01T12:00:00Z"', {F3}),
    ('address[addressLocality]=="Melbourne"', {F1}),
    ('address[postalCode]=="3000"', {F1}),
    ('address[addressLocality]~="ney$"', {F2}),
])
def test_query_q(city: TestClient, q: str, expected: set[str]) -> None:
    assert set(ids(query(city, type="TrafficFlowObserved", q=q))) == expected


def test_query_q_alone_is_enough_and_uses_the_link_context(city: TestClient) -> None:
    assert set(ids(query(city, q="peopleCount>100"))) == {C1}
    # Without the Link header the short name means another IRI: nothing matches.
    assert query(city, {}, q="peopleCount>100") == []
    assert set(ids(query(city, {}, q=f"{SDM}peopleCount>100"))) == {C1}


def test_query_without_any_filter_is_400(client: TestClient) -> None:
    create(client, flow(1, 1.0))
    problem(client.get(ENTITIES), 400, "BadRequestData")
    # The POST form is the same operation (§5.7.2): a Query with nothing to narrow it is refused too.
    problem(client.post(BASE + "/entityOperations/query", json={"type": "Query"}), 400, "BadRequestData")


POINT = "[-118.25,34.05]"
SQUARE = "[[[-118.27,34.04],[-118.24,34.04],[-118.24,34.06],[-118.27,34.06],[-118.27,34.04]]]"


@pytest.mark.parametrize(("georel", "geometry", "coordinates", "expected"), [
    ("near;maxDistance==500", "Point", POINT, {F1, C1}),  # F2 is ~920 m west
    ("near;maxDistance==2000", "Point", POINT, {F1, F2, C1}),
    ("near;minDistance==2000", "Point", POINT, {F3, F4}),
    ("within", "Polygon", SQUARE, {F1, F2}),
    ("intersects", "Polygon", SQUARE, {F1, F2, C1}),
    ("contains", "Point", "[-118.21,34.09]", {C1}),
    ("intersects", "Point", POINT, {F1, C1}),
    ("equals", "Point", "[-118.26,34.05]", {F2}),
    ("disjoint", "Polygon", SQUARE, {F3, F4}),
])
def test_query_geo(city: TestClient, georel: str, geometry: str, coordinates: str, expected: set[str]) -> None:
    found = query(city, georel=georel, geometry=geometry, coordinates=coordinates)
    assert set(ids(found)) == expected


def test_query_geo_combines_with_type_and_q(city: TestClient) -> None:
    found = query(city, type="TrafficFlowObserved", q="averageVehicleSpeed>20", georel="near;maxDistance==2000",
                  geometry="Point", coordinates=POINT)
    assert ids(found) == [F2]


def test_pagination_count_and_stable_order(client: TestClient) -> None:
    for n in range(7):
        create(client, flow(n, float(n)))
    everything = query(client, type="TrafficFlowObserved")
    assert len(everything) == 7
    assert ids(everything) == ids(query(client, type="TrafficFlowObserved"))  # stable
    first = client.get(ENTITIES, params={"type": "TrafficFlowObserved", "limit": "3"}, headers=SDM_HDR)
    links = ", ".join(first.headers.get_list("link"))
    assert 'rel="next"' in links and "offset=3" in links  # §6.3.10 pagination link
    assert SDM_TRANSPORT in links  # next to the JSON-LD context link, not instead of it
    pages = []
    for offset in (0, 3, 6):
        r = client.get(ENTITIES, params={"type": "TrafficFlowObserved", "limit": "3", "offset": str(offset),
                                         "count": "true"}, headers=SDM_HDR)
        assert r.status_code == 200
        assert r.headers["NGSILD-Results-Count"] == "7"
        pages.extend(ids(r.json()))
    assert pages == ids(everything)
    r = client.get(ENTITIES, params={"type": "TrafficFlowObserved", "limit": "0", "count": "true"}, headers=SDM_HDR)
    assert r.status_code == 200 and r.json() == [] and r.headers["NGSILD-Results-Count"] == "7"
    r = client.get(ENTITIES, params={"type": "TrafficFlowObserved", "offset": "10"}, headers=SDM_HDR)
    assert r.status_code == 200 and r.json() == []
    assert "NGSILD-Results-Count" not in client.get(ENTITIES, params={"type": "TrafficFlowObserved"},
                                                    headers=SDM_HDR).headers


def test_default_limit_applies(client: TestClient, platform: Platform) -> None:
    default = platform.settings.default_limit
    r = client.post(BASE + "/entityOperations/create",
                    json=[{"id": f"urn:ngsi-ld:Thing:{n}", "type": "Thing", "a": 1} for n in range(default + 2)])
    assert r.status_code == 201
    r = client.get(ENTITIES, params={"type": "Thing", "count": "true"})
    assert len(r.json()) == default
    assert r.headers["NGSILD-Results-Count"] == str(default + 2)


def test_post_query(city: TestClient) -> None:
    body = {"type": "Query", "entities": [{"type": "TrafficFlowObserved"}], "attrs": ["averageVehicleSpeed"],
            "q": "averageVehicleSpeed>20",
            "geoQ": {"geometry": "Point", "coordinates": [-118.25, 34.05], "georel": "near;maxDistance==2000"}}
    r = city.post(BASE + "/entityOperations/query", json=body, params={"count": "true"}, headers=SDM_HDR)
    assert r.status_code == 200, r.text
    assert r.headers["NGSILD-Results-Count"] == "1"
    assert r.json() == [{"id": F2, "type": "TrafficFlowObserved",
                         "averageVehicleSpeed": {"type": "Property", "value": 50.0, "unitCode": "KMH",
                                                 "observedAt": T0}}]
    r = city.post(BASE + "/entityOperations/query", headers=SDM_HDR, params={"options": "keyValues"},
                  json={"type": "Query", "entities": [{"type": "CrowdFlowObserved", "idPattern": "Crowd"}]})
    assert r.status_code == 200 and r.json() == [{"id": C1, "type": "CrowdFlowObserved", "peopleCount": 812,
                                                   "location": r.json()[0]["location"]}]


def test_query_representations(city: TestClient) -> None:
    kv = query(city, type="CrowdFlowObserved", options="keyValues", id=C1)
    assert kv[0]["peopleCount"] == 812
    concise = query(city, id=F1, options="concise")
    assert concise[0]["congested"] is True
    assert concise[0]["averageVehicleSpeed"] == {"value": 10.0, "unitCode": "KMH", "observedAt": T0}
    picked = query(city, id=F1, pick="id,laneId")
    assert picked == [{"id": F1, "laneId": {"type": "Property", "value": 1}}]
    omitted = query(city, id=F1, omit="address,refRoadSegment,location,laneId,congested")
    assert set(omitted[0]) == {"id", "type", "averageVehicleSpeed"}


# -- JSON-LD -----------------------------------------------------------------------------------------


def test_ld_json_in_and_out(client: TestClient) -> None:
    body = {**flow(1, 55.5), "@context": SDM_TRANSPORT}
    r = client.post(ENTITIES, json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    # Stored under the body's context: the short names read back under the same Link.
    assert get(client, body["id"])["averageVehicleSpeed"]["value"] == 55.5
    r = client.get(f"{ENTITIES}/{body['id']}", headers={**SDM_HDR, "Accept": "application/ld+json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/ld+json")
    got = r.json()
    contexts = got["@context"] if isinstance(got["@context"], list) else [got["@context"]]
    assert SDM_TRANSPORT in contexts
    assert got["averageVehicleSpeed"]["value"] == 55.5


def test_ld_json_query_puts_a_context_in_every_entity(city: TestClient) -> None:
    r = city.get(ENTITIES, params={"type": "TrafficFlowObserved"},
                 headers={**SDM_HDR, "Accept": "application/ld+json"})
    assert r.status_code == 200
    assert len(r.json()) == 5
    for entity in r.json():
        assert "@context" in entity


def test_inline_context_in_ld_json_body(client: TestClient) -> None:
    ctx = {"mySpeed": "https://example.org/speed", "Gadget": "https://example.org/Gadget"}
    body = {"id": "urn:ngsi-ld:Gadget:1", "type": "Gadget", "mySpeed": {"type": "Property", "value": 1},
            "@context": [ctx, CORE_CONTEXT]}
    r = client.post(ENTITIES, json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    got = get(client, "urn:ngsi-ld:Gadget:1", {})
    assert got["type"] == "https://example.org/Gadget"
    assert got["https://example.org/speed"]["value"] == 1


def test_accept_geo_json(city: TestClient) -> None:
    r = city.get(f"{ENTITIES}/{F1}", headers={**SDM_HDR, "Accept": "application/geo+json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json")
    feature = r.json()
    assert feature["type"] == "Feature" and feature["id"] == F1
    assert feature["geometry"] == {"type": "Point", "coordinates": [-118.25, 34.05]}
    assert feature["properties"]["averageVehicleSpeed"]["value"] == 10.0
    r = city.get(ENTITIES, params={"type": "TrafficFlowObserved", "q": "averageVehicleSpeed>40"},
                 headers={**SDM_HDR, "Accept": "application/geo+json"})
    collection = r.json()
    assert collection["type"] == "FeatureCollection"
    assert {f["id"] for f in collection["features"]} == {F2, F3, F4}
    assert all(f["type"] == "Feature" for f in collection["features"])


def test_accept_wildcard_and_json_are_json(city: TestClient) -> None:
    for accept in ("*/*", "application/json", "application/*", "text/html, application/json;q=0.5"):
        r = city.get(f"{ENTITIES}/{F1}", headers={**SDM_HDR, "Accept": accept})
        assert r.status_code == 200, accept
        assert r.headers["content-type"].startswith("application/json")
        assert "@context" not in r.json()


# -- tenants -------------------------------------------------------------------------------------------


def test_tenants_are_isolated_and_echoed(client: TestClient) -> None:
    east = {**SDM_HDR, "NGSILD-Tenant": "east"}
    r = client.post(ENTITIES, json=flow(1, 1.0), headers=east)
    assert r.status_code == 201
    assert r.headers.get("NGSILD-Tenant") == "east"
    create(client, flow(1, 2.0))  # same id, default tenant: no conflict
    r = client.get(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:1", headers=east)
    assert r.status_code == 200 and r.json()["averageVehicleSpeed"]["value"] == 1.0
    assert r.headers["NGSILD-Tenant"] == "east"
    assert get(client, "urn:ngsi-ld:TrafficFlowObserved:1")["averageVehicleSpeed"]["value"] == 2.0
    found = client.get(ENTITIES, params={"type": "TrafficFlowObserved"}, headers=east)
    assert [e["averageVehicleSpeed"]["value"] for e in found.json()] == [1.0]
    assert client.delete(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:1", headers=east).status_code == 204
    assert get(client, "urn:ngsi-ld:TrafficFlowObserved:1")["averageVehicleSpeed"]["value"] == 2.0


@pytest.mark.parametrize(("method", "path", "params"), [
    ("GET", f"{ENTITIES}/urn:ngsi-ld:X:1", {}),
    ("GET", ENTITIES, {"type": "X"}),
    ("DELETE", f"{ENTITIES}/urn:ngsi-ld:X:1", {}),
    ("GET", BASE + "/types", {}),
])
def test_unknown_tenant_is_404_nonexistent_tenant(client: TestClient, method: str, path: str,
                                                  params: dict[str, str]) -> None:
    r = client.request(method, path, params=params, headers={"NGSILD-Tenant": "nowhere"})
    assert "nowhere" in problem(r, 404, "NonexistentTenant")["detail"]


def test_update_in_unknown_tenant_does_not_create_it(client: TestClient, platform: Platform) -> None:
    r = client.patch(f"{ENTITIES}/urn:ngsi-ld:X:1/attrs", json={"a": 1}, headers={"NGSILD-Tenant": "ghost"})
    assert r.status_code == 404
    assert "ghost" not in platform.store.tenants()


def test_near_follows_every_move_and_delete(client: TestClient, platform: Platform) -> None:
    """`near` over Point rows runs on an in-memory copy of the geo index (store.geo_index.PointTable):
    each write that moves or deletes something must show in the next answer, whether the copy was rebuilt
    for it or, rebuilt under a second ago, the query went to SQL instead."""
    def sensor(name: str, lon: float) -> dict[str, Any]:
        return {"id": f"urn:ngsi-ld:TrafficFlowObserved:{name}", "type": "TrafficFlowObserved",
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, 34.05]}}}

    for name, lon in (("a", -118.240), ("b", -118.241), ("far", -118.0)):
        assert client.post(ENTITIES, json=sensor(name, lon), headers=SDM_HDR).status_code == 201

    def near() -> set[str]:
        r = client.get(ENTITIES, params={"type": "TrafficFlowObserved", "georel": "near;maxDistance==500",
                                         "geometry": "Point", "coordinates": "[-118.24,34.05]"}, headers=SDM_HDR)
        assert r.status_code == 200, r.text
        return {e["id"].rsplit(":", 1)[1] for e in r.json()}

    assert near() == {"a", "b"}
    assert platform.store._points  # the in-memory path answered
    move = {"location": sensor("a", -118.0)["location"]}
    assert client.patch(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:a/attrs", json=move,
                        headers=SDM_HDR).status_code == 204
    assert near() == {"b"}  # rebuilt, or SQL: either way the move shows
    back = {"location": sensor("far", -118.2401)["location"]}
    assert client.patch(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:far/attrs", json=back,
                        headers=SDM_HDR).status_code == 204
    assert near() == {"b", "far"}
    assert client.delete(f"{ENTITIES}/urn:ngsi-ld:TrafficFlowObserved:b").status_code == 204
    assert near() == {"far"}
