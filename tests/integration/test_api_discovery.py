"""Discovery (/types, /attributes) and the @context registry (/jsonldContexts)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import LINK_SDM, SDM_TRANSPORT

BASE = "/ngsi-ld/v1"
ENTITIES = BASE + "/entities"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
SDM = "https://smartdatamodels.org/dataModel.Transportation/"
SDM_HDR = {"Link": LINK_SDM}
JSONLD_REL = "http://www.w3.org/ns/json-ld#context"


def link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="{JSONLD_REL}"; type="application/ld+json"'}


@pytest.fixture
def hub(client: TestClient) -> TestClient:
    entities: list[dict[str, Any]] = [
        {"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
         "intensity": {"type": "Property", "value": 1},
         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [0, 0]}}},
        {"id": "urn:ngsi-ld:TrafficFlowObserved:2", "type": "TrafficFlowObserved",
         "intensity": {"type": "Property", "value": 2},
         "refRoadSegment": {"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:1"}},
        {"id": "urn:ngsi-ld:CrowdFlowObserved:1", "type": "CrowdFlowObserved",
         "peopleCount": {"type": "Property", "value": 3},
         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 1]}}},
    ]
    r = client.post(BASE + "/entityOperations/create", json=entities, headers=SDM_HDR)
    assert r.status_code == 201, r.text
    return client


def problem(r: Any, status: int, name: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == ERR + name and body["status"] == status and body["detail"]
    return body  # type: ignore[no-any-return]


# -- /types -------------------------------------------------------------------------------------------


def test_types_list(hub: TestClient) -> None:
    r = hub.get(BASE + "/types", headers=SDM_HDR)
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "EntityTypeList"
    assert body["id"].startswith("urn:ngsi-ld:EntityTypeList:")
    assert sorted(body["typeList"]) == ["CrowdFlowObserved", "TrafficFlowObserved"]
    assert SDM_TRANSPORT in r.headers["link"]


def test_types_list_without_context_gives_iris(hub: TestClient) -> None:
    body = hub.get(BASE + "/types").json()
    assert sorted(body["typeList"]) == [SDM + "CrowdFlowObserved", SDM + "TrafficFlowObserved"]


def test_types_details(hub: TestClient) -> None:
    r = hub.get(BASE + "/types", params={"details": "true"}, headers=SDM_HDR)
    assert r.status_code == 200
    by_name = {t["typeName"]: t for t in r.json()}
    assert set(by_name) == {"TrafficFlowObserved", "CrowdFlowObserved"}
    flow = by_name["TrafficFlowObserved"]
    assert flow["id"] == SDM + "TrafficFlowObserved" and flow["type"] == "EntityType"
    assert sorted(flow["attributeNames"]) == ["intensity", "location", "refRoadSegment"]


def test_type_info(hub: TestClient) -> None:
    r = hub.get(BASE + "/types/TrafficFlowObserved", headers=SDM_HDR)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == SDM + "TrafficFlowObserved"
    assert body["type"] == "EntityTypeInfo" and body["typeName"] == "TrafficFlowObserved"
    assert body["entityCount"] == 2
    details = {d["attributeName"]: d for d in body["attributeDetails"]}
    assert set(details) == {"intensity", "location", "refRoadSegment"}
    assert details["intensity"] == {"id": SDM + "intensity", "type": "Attribute", "attributeName": "intensity",
                                    "attributeTypes": ["Property"]}
    assert details["refRoadSegment"]["attributeTypes"] == ["Relationship"]
    assert details["location"]["attributeTypes"] == ["GeoProperty"]


def test_type_info_by_full_iri_without_link(hub: TestClient) -> None:
    r = hub.get(f"{BASE}/types/{SDM}CrowdFlowObserved")
    assert r.status_code == 200 and r.json()["entityCount"] == 1


def test_unknown_type_is_404(hub: TestClient) -> None:
    problem(hub.get(BASE + "/types/Vehicle", headers=SDM_HDR), 404, "ResourceNotFound")
    # Without the Link context the short name is another IRI, which no entity has.
    problem(hub.get(BASE + "/types/TrafficFlowObserved"), 404, "ResourceNotFound")


def test_types_follow_deletes(hub: TestClient) -> None:
    assert hub.delete(f"{ENTITIES}/urn:ngsi-ld:CrowdFlowObserved:1").status_code == 204
    assert hub.get(BASE + "/types", headers=SDM_HDR).json()["typeList"] == ["TrafficFlowObserved"]
    problem(hub.get(BASE + "/types/CrowdFlowObserved", headers=SDM_HDR), 404, "ResourceNotFound")
    problem(hub.get(BASE + "/attributes/peopleCount", headers=SDM_HDR), 404, "ResourceNotFound")


def test_types_are_per_tenant(hub: TestClient) -> None:
    tenant = {"NGSILD-Tenant": "south"}
    r = hub.post(ENTITIES, json={"id": "urn:ngsi-ld:Bike:1", "type": "Bike", "gear": 3}, headers=tenant)
    assert r.status_code == 201
    assert hub.get(BASE + "/types", headers=tenant).json()["typeList"] == ["Bike"]
    assert "Bike" not in hub.get(BASE + "/types").json()["typeList"]


def test_empty_hub_has_empty_lists(client: TestClient) -> None:
    assert client.get(BASE + "/types").json()["typeList"] == []
    assert client.get(BASE + "/types", params={"details": "true"}).json() == []
    assert client.get(BASE + "/attributes").json()["attributeList"] == []


# -- /attributes -----------------------------------------------------------------------------------


def test_attributes_list(hub: TestClient) -> None:
    r = hub.get(BASE + "/attributes", headers=SDM_HDR)
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "AttributeList" and body["id"].startswith("urn:ngsi-ld:AttributeList:")
    assert sorted(body["attributeList"]) == ["intensity", "location", "peopleCount", "refRoadSegment"]


def test_attributes_details(hub: TestClient) -> None:
    r = hub.get(BASE + "/attributes", params={"details": "true"}, headers=SDM_HDR)
    by_name = {a["attributeName"]: a for a in r.json()}
    assert by_name["location"] == {"id": "https://uri.etsi.org/ngsi-ld/location", "type": "Attribute",
                                   "attributeName": "location", "attributeCount": 2,
                                   "attributeTypes": ["GeoProperty"],
                                   "typeNames": ["CrowdFlowObserved", "TrafficFlowObserved"]}
    assert by_name["intensity"]["attributeCount"] == 2
    assert by_name["intensity"]["typeNames"] == ["TrafficFlowObserved"]


def test_attribute_info(hub: TestClient) -> None:
    r = hub.get(BASE + "/attributes/peopleCount", headers=SDM_HDR)
    assert r.status_code == 200
    assert r.json() == {"id": SDM + "peopleCount", "type": "Attribute", "attributeName": "peopleCount",
                        "attributeCount": 1, "attributeTypes": ["Property"], "typeNames": ["CrowdFlowObserved"]}


def test_unknown_attribute_is_404(hub: TestClient) -> None:
    problem(hub.get(BASE + "/attributes/speed", headers=SDM_HDR), 404, "ResourceNotFound")


@pytest.mark.parametrize("path", ["/types", "/attributes"])
def test_discovery_rejects_unknown_parameters(hub: TestClient, path: str) -> None:
    problem(hub.get(BASE + path, params={"colour": "red"}), 400, "InvalidRequest")
    problem(hub.get(BASE + path, params={"details": "yes"}), 400, "BadRequestData")


# -- /jsonldContexts -----------------------------------------------------------------------------------


CONTEXT = {"@context": {"Bike": "https://example.org/Bike", "gear": "https://example.org/gear"}}


def register(client: TestClient, content_type: str = "application/ld+json") -> str:
    r = client.post(BASE + "/jsonldContexts", json=CONTEXT, headers={"Content-Type": content_type})
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    assert "/ngsi-ld/v1/jsonldContexts/" in location
    return location


def test_register_serve_list_use_and_delete_a_context(client: TestClient) -> None:
    location = register(client)
    served = client.get(location)
    assert served.status_code == 200
    assert served.json() == CONTEXT
    listed = client.get(BASE + "/jsonldContexts")
    assert listed.status_code == 200 and location in listed.json()
    details = client.get(BASE + "/jsonldContexts", params={"details": "true"}).json()
    assert [d["kind"] for d in details if d["url"] == location] == ["Hosted"]

    url = "http://testserver" + location if location.startswith("/") else location
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Bike:1", "type": "Bike", "gear": 3}, headers=link(url))
    assert r.status_code == 201, r.text
    plain = client.get(f"{ENTITIES}/urn:ngsi-ld:Bike:1").json()
    assert plain["type"] == "https://example.org/Bike" and "https://example.org/gear" in plain
    short = client.get(f"{ENTITIES}/urn:ngsi-ld:Bike:1", headers=link(url))
    assert short.json() == {"id": "urn:ngsi-ld:Bike:1", "type": "Bike", "gear": {"type": "Property", "value": 3}}
    assert url in short.headers["link"]

    assert client.delete(location).status_code == 204
    problem(client.get(location), 404, "ResourceNotFound")
    assert location not in client.get(BASE + "/jsonldContexts").json()
    problem(client.delete(location), 404, "ResourceNotFound")


def test_register_with_plain_json_content_type(client: TestClient) -> None:
    # The OAS (§5.13.2) lists application/json first for this body, @context member included.
    location = register(client, "application/json")
    assert client.get(location).json() == CONTEXT


def test_serve_context_details(client: TestClient) -> None:
    location = register(client)
    r = client.get(location, params={"details": "true"})
    assert r.status_code == 200
    meta = r.json()
    assert meta["kind"] == "Hosted" and location.endswith(meta["id"])  # §5.13.4: metadata, not the context


def test_list_contexts_by_kind(client: TestClient) -> None:
    location = register(client)
    assert location in client.get(BASE + "/jsonldContexts", params={"kind": "Hosted"}).json()
    assert location not in client.get(BASE + "/jsonldContexts", params={"kind": "Cached"}).json()


def test_register_needs_an_at_context(client: TestClient) -> None:
    r = client.post(BASE + "/jsonldContexts", json={"Bike": "https://example.org/Bike"},
                    headers={"Content-Type": "application/ld+json"})
    problem(r, 400, "BadRequestData")
    assert client.get(BASE + "/jsonldContexts").json() == []


def test_register_a_broken_context_is_400_and_not_kept(client: TestClient) -> None:
    r = client.post(BASE + "/jsonldContexts", json={"@context": {"a": 5}},
                    headers={"Content-Type": "application/ld+json"})
    assert "'a'" in problem(r, 400, "BadRequestData")["detail"]
    assert client.get(BASE + "/jsonldContexts").json() == []


def test_unknown_context_id_is_404(client: TestClient) -> None:
    problem(client.get(BASE + "/jsonldContexts/no-such-id"), 404, "ResourceNotFound")
    problem(client.delete(BASE + "/jsonldContexts/no-such-id"), 404, "ResourceNotFound")
