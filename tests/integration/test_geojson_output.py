"""GeoJSON answers (Accept: application/geo+json) and notifications: a Feature's geometry is the value of a real
GeoProperty, in every representation. keyValues drops the attribute's type, so a Property whose value is a
GeoJSON-shaped object looked like a geometry there; the geometry must come from a GeoProperty only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client
from tests.integration.webhook import Receiver

ENTITIES = "/ngsi-ld/v1/entities"
SUBS = "/ngsi-ld/v1/subscriptions"
GEO = {"Accept": "application/geo+json"}
POINT = {"type": "Point", "coordinates": [144.96, -37.81]}
OTHER_POINT = {"type": "Point", "coordinates": [1.0, 2.0]}


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client(notify_retry_initial_s=0.05, notify_retry_max_s=0.2)


def features(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["features"] if body["type"] == "FeatureCollection" else [body]  # type: ignore[no-any-return]


def answers(client: TestClient, eid: str, etype: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """The Feature of `eid` from retrieve and from a query, both 200 application/geo+json."""
    out = []
    for path, extra in ((f"{ENTITIES}/{eid}", {}), (ENTITIES, {"type": etype})):
        r = client.get(path, params={**params, **extra}, headers=GEO)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        (feature,) = features(r.json())
        out.append(feature)
    return out


@pytest.mark.parametrize("params", [
    pytest.param({"options": "keyValues"}, id="options-keyValues"),
    pytest.param({"options": "simplified"}, id="options-simplified"),
    pytest.param({"format": "keyValues"}, id="format-keyValues"),
    pytest.param({"options": "concise"}, id="concise"),
    pytest.param({}, id="normalized"),
])
def test_a_property_holding_a_geojson_object_is_never_the_geometry(
    hub: tuple[TestClient, Platform], params: dict[str, str]
) -> None:
    """`road` is a Property whose value is shaped like a GeoJSON Point: with keyValues it read back exactly as
    a GeoProperty would, and became the Feature's geometry. It is not a GeoProperty: the geometry is null."""
    client, _ = hub
    eid = "urn:ngsi-ld:Van:1"
    entity = {"id": eid, "type": "Van", "road": {"type": "Property", "value": POINT}}
    assert client.post(ENTITIES, json=entity).status_code == 201
    for feature in answers(client, eid, "Van", {"geometryProperty": "road", **params}):
        assert feature["geometry"] is None, feature
        assert feature["properties"]["road"]  # still shown, as a property


@pytest.mark.parametrize("params", [
    pytest.param({"options": "keyValues"}, id="keyValues"),
    pytest.param({"options": "concise"}, id="concise"),
    pytest.param({}, id="normalized"),
])
def test_a_geoproperty_is_the_geometry_in_every_representation(
    hub: tuple[TestClient, Platform], params: dict[str, str]
) -> None:
    client, _ = hub
    eid = "urn:ngsi-ld:Van:2"
    entity = {"id": eid, "type": "Van", "location": {"type": "GeoProperty", "value": POINT},
              "route": {"type": "GeoProperty", "value": OTHER_POINT},
              "road": {"type": "Property", "value": OTHER_POINT}}
    assert client.post(ENTITIES, json=entity).status_code == 201
    for feature in answers(client, eid, "Van", params):
        assert feature["geometry"] == POINT, feature
    for feature in answers(client, eid, "Van", {"geometryProperty": "route", **params}):
        assert feature["geometry"] == OTHER_POINT, feature


def test_keyvalues_query_decides_each_entity_on_its_own(hub: tuple[TestClient, Platform]) -> None:
    """One query page where `spot` is a GeoProperty on one entity and a Property on the other."""
    client, _ = hub
    assert client.post(ENTITIES, json={"id": "urn:ngsi-ld:Kiosk:geo", "type": "Kiosk",
                                       "spot": {"type": "GeoProperty", "value": POINT}}).status_code == 201
    assert client.post(ENTITIES, json={"id": "urn:ngsi-ld:Kiosk:prop", "type": "Kiosk",
                                       "spot": {"type": "Property", "value": POINT}}).status_code == 201
    r = client.get(ENTITIES, params={"type": "Kiosk", "options": "keyValues", "geometryProperty": "spot"},
                   headers=GEO)
    assert r.status_code == 200, r.text
    geometry = {f["id"]: f["geometry"] for f in r.json()["features"]}
    assert geometry == {"urn:ngsi-ld:Kiosk:geo": POINT, "urn:ngsi-ld:Kiosk:prop": None}


# -- notifications in application/geo+json ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["keyValues", "normalized", "concise"])
def test_a_geojson_notification_takes_its_geometry_from_the_location_geoproperty_only(
    hub: tuple[TestClient, Platform], fmt: str
) -> None:
    """A notification in application/geo+json: `location` a Property holding a GeoJSON-shaped object (or a
    Relationship) is not a geometry; a GeoProperty `location` is. The FeatureCollection took any object there."""
    client, _ = hub
    receiver = Receiver().start()
    try:
        sub = {"type": "Subscription", "entities": [{"type": "Stall"}], "notification": {
            "format": fmt, "endpoint": {"uri": receiver.url, "accept": "application/geo+json"}}}
        assert client.post(SUBS, json=sub).status_code == 201
        entities = [
            {"id": "urn:ngsi-ld:Stall:prop", "type": "Stall", "location": {"type": "Property", "value": POINT}},
            {"id": "urn:ngsi-ld:Stall:rel", "type": "Stall",
             "location": {"type": "Relationship", "object": "urn:ngsi-ld:Road:1"}},
            {"id": "urn:ngsi-ld:Stall:geo", "type": "Stall", "location": {"type": "GeoProperty", "value": POINT}},
        ]
        for entity in entities:
            assert client.post(ENTITIES, json=entity).status_code == 201, entity
        bodies = receiver.wait_for(3)
        geometry = {f["id"]: f["geometry"] for body in bodies for f in body["data"]["features"]}
        assert geometry == {"urn:ngsi-ld:Stall:prop": None, "urn:ngsi-ld:Stall:rel": None,
                            "urn:ngsi-ld:Stall:geo": POINT}
    finally:
        receiver.stop()
