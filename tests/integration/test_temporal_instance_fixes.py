"""Temporal writes that change history in place (§5.6.13–5.6.16): a PATCHed instance is stored whole (its
datasetId too) and keeps the attribute's kind; DELETE of an attribute's history honours datasetId/deleteAll;
the entity's current state follows its newest remaining instance, through the event bus; DELETE of a temporal
entity also deletes the history of an entity already deleted; unknown query parameters are refused."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from polis.ngsi_ld.events import EntityChange
from polis.platform import Platform
from tests.conftest import problem

T = "/ngsi-ld/v1/temporal/entities"
E = "/ngsi-ld/v1/entities"
ID = "urn:ngsi-ld:Sensor:hist-1"
A, B, C = "urn:ngsi-ld:Dataset:A", "urn:ngsi-ld:Dataset:B", "urn:ngsi-ld:Dataset:C"


def reading(value: Any, hour: int, **more: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": f"2026-01-01T{hour:02d}:00:00Z", **more}


def create(client: TestClient, **attrs: Any) -> None:
    r = client.post(T, json={"id": ID, "type": "Sensor", **attrs})
    assert r.status_code == 201, r.text


def history(client: TestClient, **params: str) -> dict[str, Any]:
    r = client.get(f"{T}/{ID}", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def series(client: TestClient, attr: str, **params: str) -> list[tuple[Any, str | None]]:
    got = history(client, attrs=attr, **params).get(attr, [])
    return [(i["value"], i.get("datasetId")) for i in ([got] if isinstance(got, dict) else got)]


def current(client: TestClient) -> dict[str, Any]:
    r = client.get(f"{E}/{ID}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def shown(client: TestClient, attr: str) -> list[tuple[Any, str, str | None]]:
    """The current entity's instances of `attr`: (value, observedAt, datasetId)."""
    got = current(client).get(attr, [])
    return sorted(((i["value"], i.get("observedAt"), i.get("datasetId")) for i in
                   ([got] if isinstance(got, dict) else got)), key=repr)


def instance_id(client: TestClient, attr: str, value: Any) -> str:
    return next(str(i["instanceId"]) for i in history(client, attrs=attr)[attr] if i["value"] == value)


# -- 1. PATCH stores the whole instance, datasetId included ----------------------------------------------


def test_patched_instance_keeps_the_dataset_id_of_its_body(client: TestClient) -> None:
    create(client, speed=[reading(1, 0)], label=[reading("a", 0, datasetId=A)])
    speed_id, label_id = instance_id(client, "speed", 1), instance_id(client, "label", "a")
    # A plain number (stored without a document) moved into dataset B.
    r = client.patch(f"{T}/{ID}/attrs/speed/{speed_id}", json=reading(2, 0, datasetId=B))
    assert r.status_code == 204, r.text
    assert series(client, "speed") == [(2, B)]
    assert series(client, "speed", datasetId=B) == [(2, B)]
    assert series(client, "speed", datasetId="@none") == []
    # An instance of dataset A said to be of dataset C: shown and filtered alike.
    r = client.patch(f"{T}/{ID}/attrs/label/{label_id}", json=reading("c", 0, datasetId=C))
    assert r.status_code == 204, r.text
    assert series(client, "label") == [("c", C)]
    assert series(client, "label", datasetId=C) == [("c", C)]
    assert series(client, "label", datasetId=A) == []


# -- 2. DELETE of an attribute's history: datasetId, deleteAll -----------------------------------------


def test_delete_attribute_history_honours_dataset_id_and_delete_all(client: TestClient) -> None:
    create(client, speed=[reading(1, 0, datasetId=A), reading(2, 0, datasetId=B), reading(3, 0), reading(4, 1)])
    url = f"{T}/{ID}/attrs/speed"
    assert client.delete(url, params={"datasetId": A}).status_code == 204
    assert series(client, "speed") == [(2, B), (3, None), (4, None)]
    # Without a datasetId: the default instances only.
    assert client.delete(url).status_code == 204
    assert series(client, "speed") == [(2, B)]
    problem(client.delete(url), 404, "ResourceNotFound", "@none")
    problem(client.delete(url, params={"datasetId": C}), 404, "ResourceNotFound", C)
    problem(client.delete(url, params={"bogus": "1"}), 400, "InvalidRequest", "bogus")
    problem(client.delete(url, params={"datasetId": "not a uri"}), 400, "BadRequestData", "datasetId")
    assert series(client, "speed") == [(2, B)]
    create_more = client.post(f"{T}/{ID}/attrs", json={"speed": [reading(5, 2), reading(6, 2, datasetId=C)]})
    assert create_more.status_code == 204, create_more.text
    assert client.delete(url, params={"deleteAll": "true"}).status_code == 204
    assert "speed" not in history(client)


# -- 3. PATCH keeps the attribute's kind ---------------------------------------------------------------


def test_patch_cannot_turn_a_property_instance_into_a_relationship(client: TestClient) -> None:
    create(client, speed=[reading(1, 0), reading(2, 1)])
    first = instance_id(client, "speed", 1)
    body = {"type": "Relationship", "object": "urn:ngsi-ld:X:1", "observedAt": "2026-01-01T00:00:00Z"}
    problem(client.patch(f"{T}/{ID}/attrs/speed/{first}", json=body), 400, "BadRequestData", "Relationship")
    assert series(client, "speed") == [(1, None), (2, None)]
    values = history(client, options="temporalValues")["speed"]
    assert values == {"type": "Property", "values": [[1, "2026-01-01T00:00:00Z"], [2, "2026-01-01T01:00:00Z"]]}


# -- 4. the current state follows the newest remaining instance ----------------------------------------


def test_patch_of_the_newest_instance_moves_the_current_state_and_notifies(
    client: TestClient, platform: Platform
) -> None:
    create(client, speed=[reading(1, 0), reading(2, 1)])
    seen: list[EntityChange] = []
    platform.entities.bus.subscribe(seen.append)
    newest = instance_id(client, "speed", 2)
    # The newest reading is moved before the other: the other is now the current value.
    r = client.patch(f"{T}/{ID}/attrs/speed/{newest}", json={"value": 9, "observedAt": "2025-12-31T00:00:00Z"})
    assert r.status_code == 204, r.text
    assert shown(client, "speed") == [(1, "2026-01-01T00:00:00Z", None)]
    assert [(c.kind, c.entity_id) for c in seen] == [("temporal", ID)]
    notified = seen[0].entity or {}
    assert [i["value"] for k, v in notified.items() if k.endswith("/speed") for i in v] == [1]
    # Changing an older instance leaves the current state (and subscribers) alone.
    r = client.patch(f"{T}/{ID}/attrs/speed/{newest}", json={"value": 8, "observedAt": "2025-12-31T00:00:00Z"})
    assert r.status_code == 204, r.text
    assert len(seen) == 1
    # Moved after it again, with a new value: that value is current.
    r = client.patch(f"{T}/{ID}/attrs/speed/{newest}", json={"value": 7, "observedAt": "2026-01-01T05:00:00Z"})
    assert r.status_code == 204, r.text
    assert shown(client, "speed") == [(7, "2026-01-01T05:00:00Z", None)]


def test_deleting_instances_moves_or_removes_the_current_state(client: TestClient) -> None:
    create(client, speed=[reading(1, 0), reading(2, 1), reading(5, 1, datasetId=A)])
    assert client.post(f"{E}/{ID}/attrs", json={"name": {"type": "Property", "value": "static"}}).status_code == 204
    assert client.delete(f"{T}/{ID}/attrs/speed/{instance_id(client, 'speed', 2)}").status_code == 204
    assert shown(client, "speed") == [(1, "2026-01-01T00:00:00Z", None), (5, "2026-01-01T01:00:00Z", A)]
    assert client.delete(f"{T}/{ID}/attrs/speed/{instance_id(client, 'speed', 1)}").status_code == 204
    assert shown(client, "speed") == [(5, "2026-01-01T01:00:00Z", A)]
    # The last instance of the attribute: gone from the current entity too; an attribute without history stays.
    assert client.delete(f"{T}/{ID}/attrs/speed", params={"datasetId": A}).status_code == 204
    assert "speed" not in current(client)
    assert current(client)["name"]["value"] == "static"
    problem(client.delete(f"{T}/{ID}/attrs/name"), 404, "ResourceNotFound", "name")
    assert current(client)["name"]["value"] == "static"


def test_delete_of_a_temporal_attribute_removes_it_from_the_current_entity(client: TestClient) -> None:
    create(client, speed=[reading(1, 0)], temp=[reading(20, 0), reading(21, 1)])
    assert client.delete(f"{T}/{ID}/attrs/temp").status_code == 204
    assert "temp" not in current(client) and shown(client, "speed") == [(1, "2026-01-01T00:00:00Z", None)]


# -- 5. DELETE /temporal/entities/{id} after DELETE /entities/{id} -----------------------------------------


def test_history_of_a_deleted_entity_can_be_deleted(client: TestClient) -> None:
    create(client, speed=[reading(1, 0)])
    assert client.delete(f"{E}/{ID}").status_code == 204
    assert client.delete(f"{T}/{ID}").status_code == 204
    problem(client.delete(f"{T}/{ID}"), 404, "ResourceNotFound", ID)
    # The id's next entity starts without the old one's history.
    r = client.post(E, json={"id": ID, "type": "Other", "name": {"type": "Property", "value": "new"}})
    assert r.status_code == 201, r.text
    assert "speed" not in history(client)


# -- 6. unknown query parameters on the write routes -----------------------------------------------------


def test_write_routes_refuse_unknown_query_parameters(client: TestClient) -> None:
    r = client.post(T, params={"bogus": "1"}, json={"id": ID, "type": "Sensor", "speed": [reading(1, 0)]})
    problem(r, 400, "InvalidRequest", "bogus")
    create(client, speed=[reading(1, 0)])
    r = client.post(f"{T}/{ID}/attrs", params={"options": "noOverwrite"}, json={"speed": [reading(1, 0)]})
    problem(r, 400, "InvalidRequest", "options")
    assert series(client, "speed") == [(1, None)]  # no duplicate added
    first = instance_id(client, "speed", 1)
    problem(client.patch(f"{T}/{ID}/attrs/speed/{first}", params={"x": "1"}, json=reading(2, 0)),
            400, "InvalidRequest", "x")
    problem(client.delete(f"{T}/{ID}/attrs/speed/{first}", params={"x": "1"}), 400, "InvalidRequest", "x")
    problem(client.delete(f"{T}/{ID}", params={"bogus": "1"}), 400, "InvalidRequest", "bogus")
    assert series(client, "speed") == [(1, None)]
    # `local` is in every one of these routes' parameters: accepted.
    r = client.post(f"{T}/{ID}/attrs", params={"local": "true"}, json={"speed": [reading(2, 1)]})
    assert r.status_code == 204, r.text
    assert client.delete(f"{T}/{ID}", params={"local": "true"}).status_code == 204
