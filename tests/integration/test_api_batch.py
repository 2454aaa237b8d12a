"""Batch operations (/entityOperations/create|upsert|update|delete|merge): 201/204/207 and the
BatchOperationResult, per item, with nothing written for the items that failed."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import LINK_SDM, SDM_TRANSPORT

BASE = "/ngsi-ld/v1"
OPS = BASE + "/entityOperations"
ENTITIES = BASE + "/entities"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
SDM_HDR = {"Link": LINK_SDM}


def vehicle(n: int | str, **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": f"urn:ngsi-ld:Vehicle:{n}", "type": "Vehicle"}
    for name, value in attrs.items():
        body[name] = {"type": "Property", "value": value}
    return body


def vid(n: int | str) -> str:
    return f"urn:ngsi-ld:Vehicle:{n}"


def stored(client: TestClient, n: int | str) -> dict[str, Any] | None:
    """The entity in keyValues, or None when it does not exist."""
    r = client.get(f"{ENTITIES}/{vid(n)}", params={"options": "keyValues"}, headers=SDM_HDR)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def batch(client: TestClient, op: str, body: Any, **params: str) -> Any:
    return client.post(f"{OPS}/{op}", json=body, params=params, headers=SDM_HDR)


def errors_by_id(r: Any) -> dict[str | None, dict[str, Any]]:
    assert r.status_code == 207, r.text
    assert r.headers["content-type"].startswith("application/json")
    result = r.json()
    assert set(result) == {"success", "errors"}
    out = {}
    for item in result["errors"]:
        error = item["error"]
        assert error["type"].startswith(ERR) and error["detail"] and isinstance(error["status"], int)
        out[item["entityId"]] = error
    return out


# -- create -------------------------------------------------------------------------------------


def test_create_all_new_is_201_with_the_ids(client: TestClient) -> None:
    r = batch(client, "create", [vehicle(1, speed=10), vehicle(2, speed=20)])
    assert r.status_code == 201
    assert r.json() == [vid(1), vid(2)]
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 10}
    assert stored(client, 2) == {"id": vid(2), "type": "Vehicle", "speed": 20}


def test_create_with_an_existing_id_is_207_and_writes_the_rest(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=10)])
    r = batch(client, "create", [vehicle(1, speed=99), vehicle(2, speed=20)])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(2)]
    assert errors[vid(1)]["type"] == ERR + "AlreadyExists" and errors[vid(1)]["status"] == 409
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 10}
    assert stored(client, 2) == {"id": vid(2), "type": "Vehicle", "speed": 20}


def test_create_where_every_item_fails_is_still_207(client: TestClient) -> None:
    r = batch(client, "create", [{"id": "not a uri", "type": "Vehicle"}, {"id": vid(3)}])
    errors = errors_by_id(r)
    assert r.json()["success"] == []
    assert errors["not a uri"]["type"] == ERR + "BadRequestData"
    assert "not a uri" in errors["not a uri"]["detail"]
    assert errors[vid(3)]["type"] == ERR + "BadRequestData" and "type" in errors[vid(3)]["detail"]
    assert stored(client, 3) is None


def test_create_with_an_invalid_attribute_fails_only_that_item(client: TestClient) -> None:
    bad = {**vehicle(1), "speed": {"type": "Property"}}  # a Property without value
    r = batch(client, "create", [bad, vehicle(2, speed=1)])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(2)]
    assert "speed" in errors[vid(1)]["detail"]
    assert stored(client, 1) is None and stored(client, 2) is not None


def test_create_same_id_twice_reports_the_conflict_per_item(client: TestClient) -> None:
    r = batch(client, "create", [vehicle(1, speed=1), vehicle(1, speed=2), vehicle(2, speed=3)])
    assert r.status_code == 207, r.text
    result = r.json()
    assert sorted(result["success"]) == [vid(1), vid(2)]
    assert [e["entityId"] for e in result["errors"]] == [vid(1)]
    assert result["errors"][0]["error"]["status"] == 400
    assert "more than once" in result["errors"][0]["error"]["detail"]
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 1}  # the first item, untouched


def test_create_body_must_be_an_array(client: TestClient, platform: Platform) -> None:
    r = batch(client, "create", vehicle(1))
    assert r.status_code == 400
    assert r.json()["type"] == ERR + "BadRequestData"
    assert "array" in r.json()["detail"]
    assert platform.store.entity_count("") == 0


def test_create_ld_json_batch_takes_each_items_context(client: TestClient) -> None:
    items = [{**vehicle(1, speed=5), "@context": SDM_TRANSPORT},
             {**vehicle(2, speed=6), "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"}]
    r = client.post(f"{OPS}/create", json=items, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    # Item 1 used the SDM context, item 2 the core one (default vocabulary).
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 5}
    plain = client.get(f"{ENTITIES}/{vid(2)}", params={"options": "keyValues"}).json()
    assert plain == {"id": vid(2), "type": "Vehicle", "speed": 6}


# -- upsert ------------------------------------------------------------------------------------------


def test_upsert_new_entities_is_201_with_only_the_new_ids(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1)])
    r = batch(client, "upsert", [vehicle(1, speed=2), vehicle(2, speed=3)])
    assert r.status_code == 201, r.text
    assert r.json() == [vid(2)]
    assert stored(client, 1)["speed"] == 2  # type: ignore[index]
    assert stored(client, 2)["speed"] == 3  # type: ignore[index]


def test_upsert_all_existing_is_204(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1), vehicle(2, speed=1)])
    r = batch(client, "upsert", [vehicle(1, speed=5), vehicle(2, speed=6)])
    assert r.status_code == 204 and r.content == b""
    assert stored(client, 1)["speed"] == 5  # type: ignore[index]


def test_upsert_replace_is_the_default_and_drops_attributes_not_sent(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1, fuel=50)])
    assert batch(client, "upsert", [vehicle(1, speed=2)]).status_code == 204
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 2}
    assert batch(client, "upsert", [vehicle(1, fuel=7)], options="replace").status_code == 204
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "fuel": 7}


def test_upsert_update_keeps_attributes_not_sent(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1, fuel=50)])
    r = batch(client, "upsert", [vehicle(1, speed=2, brand="x")], options="update")
    assert r.status_code == 204, r.text
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 2, "fuel": 50, "brand": "x"}


def test_upsert_replace_and_update_together_is_400(client: TestClient) -> None:
    r = batch(client, "upsert", [vehicle(1, speed=1)], options="replace,update")
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
    assert stored(client, 1) is None


def test_upsert_same_id_twice_is_a_conflict_per_item(client: TestClient) -> None:
    r = batch(client, "upsert", [vehicle(1, speed=1), vehicle(1, speed=2)])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(1)]
    assert errors[vid(1)]["status"] == 400
    assert stored(client, 1)["speed"] == 1  # type: ignore[index]


def test_upsert_with_a_bad_item_is_207_and_keeps_the_good(client: TestClient) -> None:
    bad = {**vehicle(2), "owner": {"type": "Relationship", "object": "not a uri"}}
    r = batch(client, "upsert", [vehicle(1, speed=1), bad])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(1)]
    assert "owner" in errors[vid(2)]["detail"]
    assert stored(client, 1) is not None and stored(client, 2) is None


# -- update -----------------------------------------------------------------------------------------


def test_update_merges_attributes_into_existing_entities(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1, fuel=50)])
    r = batch(client, "update", [vehicle(1, speed=9, brand="x")])
    assert r.status_code == 204, r.text
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 9, "fuel": 50, "brand": "x"}


def test_update_no_overwrite_only_adds(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1)])
    r = batch(client, "update", [vehicle(1, speed=9, brand="x")], options="noOverwrite")
    assert r.status_code == 204, r.text
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 1, "brand": "x"}


def test_update_missing_entity_is_207_and_not_created(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1)])
    r = batch(client, "update", [vehicle(1, speed=2), vehicle(2, speed=3)])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(1)]
    assert errors[vid(2)]["type"] == ERR + "ResourceNotFound" and errors[vid(2)]["status"] == 404
    assert stored(client, 2) is None
    assert stored(client, 1)["speed"] == 2  # type: ignore[index]


# -- merge --------------------------------------------------------------------------------------------


def test_merge_patches_and_deletes_with_null(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1, fuel=50), vehicle(2, speed=1)])
    r = batch(client, "merge", [{"id": vid(1), "type": "Vehicle", "speed": 3, "fuel": "urn:ngsi-ld:null"},
                                {"id": vid(2), "type": "Vehicle", "brand": {"type": "Property", "value": "y"}}])
    assert r.status_code == 204, r.text
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 3}
    assert stored(client, 2) == {"id": vid(2), "type": "Vehicle", "speed": 1, "brand": "y"}


def test_merge_item_that_only_deletes(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1, fuel=50)])
    r = batch(client, "merge", [{"id": vid(1), "type": "Vehicle", "fuel": "urn:ngsi-ld:null"}])
    assert r.status_code == 204, r.text
    assert stored(client, 1) == {"id": vid(1), "type": "Vehicle", "speed": 1}


def test_merge_missing_entity_is_207(client: TestClient) -> None:
    batch(client, "create", [vehicle(1, speed=1)])
    r = batch(client, "merge", [vehicle(1, speed=4), vehicle(5, speed=4)])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(1)]
    assert errors[vid(5)]["type"] == ERR + "ResourceNotFound"
    assert stored(client, 5) is None and stored(client, 1)["speed"] == 4  # type: ignore[index]


# -- delete --------------------------------------------------------------------------------------------


def test_delete_all_existing_is_204(client: TestClient) -> None:
    batch(client, "create", [vehicle(1), vehicle(2), vehicle(3)])
    r = batch(client, "delete", [vid(1), vid(2)])
    assert r.status_code == 204 and r.content == b""
    assert stored(client, 1) is None and stored(client, 2) is None and stored(client, 3) is not None


def test_delete_with_missing_and_invalid_ids_is_207(client: TestClient) -> None:
    batch(client, "create", [vehicle(1)])
    r = batch(client, "delete", [vid(1), vid(404), "not a uri"])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(1)]
    assert errors[vid(404)]["type"] == ERR + "ResourceNotFound"
    assert errors["not a uri"]["type"] == ERR + "BadRequestData"
    assert stored(client, 1) is None


def test_delete_same_id_twice_is_reported(client: TestClient) -> None:
    batch(client, "create", [vehicle(1)])
    r = batch(client, "delete", [vid(1), vid(1)])
    errors = errors_by_id(r)
    assert r.json()["success"] == [vid(1)]
    assert vid(1) in errors
    assert stored(client, 1) is None


def test_delete_body_must_be_an_array_of_ids(client: TestClient) -> None:
    batch(client, "create", [vehicle(1)])
    r = batch(client, "delete", {"id": vid(1)})
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
    assert stored(client, 1) is not None


# -- tenants and operation names --------------------------------------------------------------------


def test_batch_create_in_a_tenant(client: TestClient) -> None:
    r = client.post(f"{OPS}/create", json=[vehicle(1)], headers={"NGSILD-Tenant": "north"})
    assert r.status_code == 201 and r.headers["NGSILD-Tenant"] == "north"
    assert stored(client, 1) is None
    got = client.get(f"{ENTITIES}/{vid(1)}", headers={"NGSILD-Tenant": "north"})
    assert got.status_code == 200


@pytest.mark.parametrize("op", ["create", "upsert", "update", "merge", "delete"])
def test_batch_refuses_unknown_options(client: TestClient, op: str) -> None:
    r = batch(client, op, [vehicle(1)], options="bogus")
    assert r.status_code == 400 and r.json()["type"] == ERR + "InvalidRequest"
    assert "bogus" in r.json()["detail"]
    assert stored(client, 1) is None
