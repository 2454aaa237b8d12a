"""The NGSI-LD null marker ("urn:ngsi-ld:null") on every write path. Merge, append and update attributes
already read it as "delete this attribute"; these tests hold the other paths to the same rule, so the marker
is never stored as a value: a partial attribute update deletes, a create (single or batch) or a replace
leaves the attribute out, an upsert or batch update deletes, a sub-attribute set to it in a merge is deleted,
and a temporal instance cannot be null (400, nothing written). Also: PUT of an attribute instance (a
datasetId) the attribute does not have is 404, not a silently added instance."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client, problem

BASE = "/ngsi-ld/v1"
ENTITIES = BASE + "/entities"
TEMPORAL = BASE + "/temporal/entities"
OPS = BASE + "/entityOperations"
NULL = "urn:ngsi-ld:null"
EID = "urn:ngsi-ld:V:1"
T0 = "2026-03-01T00:00:00Z"
T1 = "2026-03-01T01:00:00Z"

# Each kind with a well-formed value and the body that sets its own value member to the null marker.
KINDS = [
    pytest.param({"type": "Property", "value": 5}, {"value": NULL}, id="Property"),
    pytest.param({"type": "Relationship", "object": "urn:ngsi-ld:X:1"}, {"object": NULL}, id="Relationship"),
    pytest.param({"type": "LanguageProperty", "languageMap": {"en": "a"}}, {"languageMap": NULL}, id="Language"),
    pytest.param({"type": "VocabProperty", "vocab": "Red"}, {"vocab": NULL}, id="Vocab"),
    pytest.param({"type": "JsonProperty", "json": {"a": 1}}, {"json": NULL}, id="Json"),
    pytest.param({"type": "ListProperty", "valueList": [1, 2]}, {"valueList": NULL}, id="List"),
    pytest.param(
        {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}, {"value": NULL}, id="Geo"
    ),
]


@pytest.fixture
def fresh() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def create(client: TestClient, **attributes: Any) -> None:
    r = client.post(ENTITIES, json={"id": EID, "type": "V", **attributes})
    assert r.status_code == 201, r.text


def stored(client: TestClient, eid: str = EID) -> dict[str, Any] | None:
    """The entity as GET returns it (normalized), or None when there is none."""
    r = client.get(f"{ENTITIES}/{eid}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def holds_marker(value: Any) -> bool:
    """Whether the marker is anywhere in a stored document (it never should be)."""
    if isinstance(value, dict):
        return any(holds_marker(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_marker(v) for v in value)
    return bool(value == NULL)


def prop(value: Any, **members: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **members}


# -- 1. PATCH /entities/{id}/attrs/{attrId} ---------------------------------------------------------------


@pytest.mark.parametrize(("attribute", "body"), KINDS)
def test_a_partial_update_to_the_null_marker_deletes_the_attribute(
    fresh: tuple[TestClient, Platform], attribute: dict[str, Any], body: dict[str, Any]
) -> None:
    """§5.6.4 PATCH .../attrs/m {"value": "urn:ngsi-ld:null"} (or the kind's own member): 204 and m is gone,
    the rest of the entity as it was. It was stored as the attribute's value."""
    client, _ = fresh
    create(client, m=attribute, other=prop(1))
    r = client.patch(f"{ENTITIES}/{EID}/attrs/m", json=body)
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "other": prop(1)}


def test_a_partial_update_to_the_null_marker_with_a_dataset_id_deletes_that_instance_only(
    fresh: tuple[TestClient, Platform],
) -> None:
    client, _ = fresh
    create(client, m=[prop(1), prop(2, datasetId="urn:ds:a"), prop(3, datasetId="urn:ds:b")])
    r = client.patch(f"{ENTITIES}/{EID}/attrs/m", json={"value": NULL, "datasetId": "urn:ds:a"})
    assert r.status_code == 204, r.text
    after = stored(client)
    assert after is not None
    assert after["m"] == [prop(1), prop(3, datasetId="urn:ds:b")]
    # An instance the attribute does not have is still 404, and nothing changes.
    r = client.patch(f"{ENTITIES}/{EID}/attrs/m", json={"value": NULL, "datasetId": "urn:ds:a"})
    problem(r, 404, "ResourceNotFound", "urn:ds:a")
    assert stored(client) == after


def test_a_partial_update_to_the_null_marker_of_a_sub_attribute_deletes_it(
    fresh: tuple[TestClient, Platform],
) -> None:
    client, _ = fresh
    create(client, m=prop(1, accuracy=prop(0.9), source=prop("s")))
    r = client.patch(f"{ENTITIES}/{EID}/attrs/m", json={"value": 2, "accuracy": NULL})
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": prop(2, source=prop("s"))}


# -- 2. create, replace and the batch operations ----------------------------------------------------------

NULL_ATTRIBUTES: dict[str, Any] = {
    "a": NULL,
    "b": {"type": "Relationship", "object": NULL},
    "c": {"type": "LanguageProperty", "languageMap": NULL},
    "d": {"type": "VocabProperty", "vocab": NULL},
    "e": {"type": "JsonProperty", "json": NULL},
    "f": {"type": "ListProperty", "valueList": NULL},
    "location": NULL,
    "g": {"value": NULL, "datasetId": "urn:ds:a"},
}


def test_create_leaves_out_null_attributes(fresh: tuple[TestClient, Platform]) -> None:
    """POST /entities with attributes that are the marker: 201, and those attributes are not created (the
    marker was stored as a Property value, a Relationship's object ..., or refused as a malformed attribute)."""
    client, _ = fresh
    create(client, keep=prop(1, note=NULL, unit=prop("u")), **NULL_ATTRIBUTES)
    assert stored(client) == {"id": EID, "type": "V", "keep": prop(1, unit=prop("u"))}


def test_create_of_an_entity_with_only_null_attributes_is_an_entity_without_attributes(
    fresh: tuple[TestClient, Platform],
) -> None:
    client, _ = fresh
    create(client, **NULL_ATTRIBUTES)
    assert stored(client) == {"id": EID, "type": "V"}


def test_replace_entity_leaves_out_null_attributes(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, a=prop(1), b=prop(2))
    r = client.put(f"{ENTITIES}/{EID}", json={"a": NULL, "c": prop(3, note=NULL)})
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "c": prop(3)}


def vid(n: int) -> str:
    return f"urn:ngsi-ld:V:{n}"


def vehicle(n: int, **attributes: Any) -> dict[str, Any]:
    return {"id": vid(n), "type": "V", **attributes}


def test_batch_create_leaves_out_null_attributes(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    items = [vehicle(1, keep=prop(1, note=NULL), **NULL_ATTRIBUTES), vehicle(2, **NULL_ATTRIBUTES)]
    r = client.post(f"{OPS}/create", json=items)
    assert r.status_code == 201, r.text
    assert stored(client, vid(1)) == vehicle(1, keep=prop(1))
    assert stored(client, vid(2)) == vehicle(2)


def test_a_uniform_batch_with_the_marker_in_some_items(
    fresh: tuple[TestClient, Platform], caplog: pytest.LogCaptureFixture
) -> None:
    """Items of one shape (the batch fast path's): those holding the marker go the generic way, the others
    stay on the plan, whose check against the generic reader must not fail because of the marker."""
    client, _ = fresh
    items = [
        vehicle(n, speed=prop(NULL if n in (1, 3) else n, observedAt=T0), ref={"type": "Relationship", "object": o})
        for n, o in ((1, "urn:x:1"), (2, "urn:x:2"), (3, "urn:x:3"), (4, NULL))
    ]
    with caplog.at_level(logging.WARNING, logger="polis.ngsi_ld.batch_plan"):
        r = client.post(f"{OPS}/create", json=items)
        assert r.status_code == 201, r.text
        assert [stored(client, vid(n)) for n in (1, 2, 3, 4)] == [
            vehicle(1, ref={"type": "Relationship", "object": "urn:x:1"}),
            vehicle(2, speed=prop(2, observedAt=T0), ref={"type": "Relationship", "object": "urn:x:2"}),
            vehicle(3, ref={"type": "Relationship", "object": "urn:x:3"}),
            vehicle(4, speed=prop(4, observedAt=T0)),
        ]
        r = client.post(f"{OPS}/upsert", json=items, params={"options": "update"})
        assert r.status_code == 204, r.text
        assert [stored(client, vid(n)) for n in (1, 2, 3, 4)] == [
            vehicle(1, ref={"type": "Relationship", "object": "urn:x:1"}),
            vehicle(2, speed=prop(2, observedAt=T0), ref={"type": "Relationship", "object": "urn:x:2"}),
            vehicle(3, ref={"type": "Relationship", "object": "urn:x:3"}),
            vehicle(4, speed=prop(4, observedAt=T0)),
        ]
    assert not [r for r in caplog.records if "disagreed" in r.getMessage()]
    history = client.get(f"{TEMPORAL}/{vid(1)}").json()
    assert "speed" not in history


def test_batch_upsert_replace_leaves_out_null_attributes(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, a=prop(1), b=prop(2))
    r = client.post(f"{OPS}/upsert", json=[vehicle(1, a=NULL, c=prop(3)), vehicle(2, **NULL_ATTRIBUTES)])
    assert r.status_code == 201, r.text
    assert r.json() == [vid(2)]
    assert stored(client) == vehicle(1, c=prop(3))
    assert stored(client, vid(2)) == vehicle(2)


def test_batch_upsert_update_deletes_null_attributes(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, a=prop(1), b=prop(2), m=[prop(1), prop(2, datasetId="urn:ds:a")])
    body = [vehicle(1, a=NULL, c=prop(3, note=NULL), m={"value": NULL, "datasetId": "urn:ds:a"}, nothing=NULL)]
    r = client.post(f"{OPS}/upsert", json=body, params={"options": "update"})
    assert r.status_code == 204, r.text
    assert stored(client) == vehicle(1, b=prop(2), m=prop(1), c=prop(3))


def test_batch_update_deletes_null_attributes(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, a=prop(1), b=prop(2), c={"type": "Relationship", "object": "urn:x:1"})
    r = client.post(f"{OPS}/update", json=[vehicle(1, a=NULL, c={"object": NULL}, b=prop(5))])
    assert r.status_code == 204, r.text
    assert stored(client) == vehicle(1, b=prop(5))


def test_batch_update_with_no_overwrite_keeps_what_a_null_would_delete(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, a=prop(1))
    r = client.post(f"{OPS}/update", json=[vehicle(1, a=NULL, b=NULL)], params={"options": "noOverwrite"})
    assert r.status_code == 204, r.text
    assert stored(client) == vehicle(1, a=prop(1))


# -- 3. a sub-attribute set to the marker in a merge --------------------------------------------------------


def test_merge_deletes_a_null_sub_attribute_and_keeps_the_attribute(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, m=prop(1, accuracy=prop(0.9), source=prop("s")), other=prop(2))
    r = client.patch(f"{ENTITIES}/{EID}", json={"m": prop(1, accuracy=NULL)})
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": prop(1, source=prop("s")), "other": prop(2)}
    r = client.patch(f"{ENTITIES}/{EID}", json={"m": prop(3, source={"type": "Property", "value": NULL})})
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": prop(3), "other": prop(2)}


def test_batch_merge_deletes_a_null_sub_attribute(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, m=prop(1, accuracy=prop(0.9), source=prop("s")))
    r = client.post(f"{OPS}/merge", json=[vehicle(1, m=prop(2, source={"value": NULL}))])
    assert r.status_code == 204, r.text
    assert stored(client) == vehicle(1, m=prop(2, accuracy=prop(0.9)))


@pytest.mark.parametrize(("method", "path"), [("POST", "/attrs"), ("PATCH", "/attrs")], ids=["append", "update"])
def test_append_and_update_store_no_null_sub_attribute(
    fresh: tuple[TestClient, Platform], method: str, path: str
) -> None:
    client, _ = fresh
    create(client, m=prop(1, accuracy=prop(0.9)))
    r = client.request(method, f"{ENTITIES}/{EID}{path}", json={"m": prop(2, accuracy=NULL, source=prop("s"))})
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": prop(2, source=prop("s"))}


# -- 4. temporal instances cannot be null --------------------------------------------------------------------


@pytest.mark.parametrize(
    "instance",
    [
        pytest.param(prop(NULL, observedAt=T1), id="value"),
        pytest.param({"type": "Relationship", "object": NULL, "observedAt": T1}, id="object"),
        pytest.param({"type": "LanguageProperty", "languageMap": NULL, "observedAt": T1}, id="languageMap"),
        pytest.param(NULL, id="bare"),
    ],
)
def test_a_null_temporal_instance_is_400_and_nothing_is_written(
    fresh: tuple[TestClient, Platform], instance: Any
) -> None:
    client, platform = fresh
    m = instance if instance == NULL else [prop(2, observedAt=T0), instance]
    body = {"id": EID, "type": "V", "speed": [prop(1, observedAt=T0)], "m": m}
    problem(client.post(TEMPORAL, json=body), 400, "BadRequestData", "'m'")
    assert stored(client) is None
    assert client.get(f"{TEMPORAL}/{EID}").status_code == 404
    # An entity that exists: POST /temporal/entities and POST .../attrs are refused alike.
    r = client.post(TEMPORAL, json={"id": EID, "type": "V", "speed": [prop(1, observedAt=T0)]})
    assert r.status_code == 201, r.text
    before = (stored(client), client.get(f"{TEMPORAL}/{EID}").json())
    add = {"speed": [prop(5, observedAt=T1)], "m": instance if instance == NULL else [instance]}
    problem(client.post(f"{TEMPORAL}/{EID}/attrs", json=add), 400, "BadRequestData", "'m'")
    problem(client.post(TEMPORAL, json={"id": EID, "type": "V", **add}), 400, "BadRequestData", "'m'")
    assert (stored(client), client.get(f"{TEMPORAL}/{EID}").json()) == before
    assert not holds_marker(platform.store.get("", [EID]))


def test_a_temporal_instance_cannot_be_modified_to_null(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    r = client.post(TEMPORAL, json={"id": EID, "type": "V", "speed": [prop(1, observedAt=T0)]})
    assert r.status_code == 201, r.text
    before = client.get(f"{TEMPORAL}/{EID}").json()
    instance_id = (
        before["speed"]["instanceId"] if isinstance(before["speed"], dict) else before["speed"][0]["instanceId"]
    )
    r = client.patch(f"{TEMPORAL}/{EID}/attrs/speed/{instance_id}", json=prop(NULL, observedAt=T0))
    problem(r, 400, "BadRequestData", "speed")
    assert client.get(f"{TEMPORAL}/{EID}").json() == before


# -- 5. PUT /entities/{id}/attrs/{attrId} --------------------------------------------------------------------


def test_replacing_an_instance_the_attribute_does_not_have_is_404(fresh: tuple[TestClient, Platform]) -> None:
    """§5.6.19 PUT .../attrs/m {"value": 9, "datasetId": "urn:ds:b"} where m has no such instance: 404 naming
    m and the datasetId (it added the instance). The instances m has are replaced as before."""
    client, _ = fresh
    create(client, m=[prop(1), prop(2, datasetId="urn:ds:a")])
    before = stored(client)
    problem(
        client.put(f"{ENTITIES}/{EID}/attrs/m", json=prop(9, datasetId="urn:ds:b")),
        404,
        "ResourceNotFound",
        "m",
        "urn:ds:b",
    )
    assert stored(client) == before
    problem(client.put(f"{ENTITIES}/{EID}/attrs/nothing", json=prop(9)), 404, "ResourceNotFound", "nothing")
    assert stored(client) == before
    r = client.put(f"{ENTITIES}/{EID}/attrs/m", json=prop(8, datasetId="urn:ds:a"))
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": [prop(1), prop(8, datasetId="urn:ds:a")]}


def test_replacing_an_attribute_without_a_default_instance_by_one_is_404(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, m=prop(2, datasetId="urn:ds:a"))
    before = stored(client)
    problem(client.put(f"{ENTITIES}/{EID}/attrs/m", json=prop(9)), 404, "ResourceNotFound", "m")
    assert stored(client) == before


def test_replacing_an_attribute_by_the_null_marker_deletes_it(fresh: tuple[TestClient, Platform]) -> None:
    client, _ = fresh
    create(client, m=[prop(1), prop(2, datasetId="urn:ds:a")], other=prop(3))
    r = client.put(f"{ENTITIES}/{EID}/attrs/m", json=prop(NULL, datasetId="urn:ds:a"))
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": prop(1), "other": prop(3)}
    r = client.put(f"{ENTITIES}/{EID}/attrs/m", json={"type": "Property", "value": 4, "note": NULL})
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "m": prop(4), "other": prop(3)}
    r = client.put(f"{ENTITIES}/{EID}/attrs/m", json=prop(NULL))
    assert r.status_code == 204, r.text
    assert stored(client) == {"id": EID, "type": "V", "other": prop(3)}
