"""NGSI-LD conformance gaps (ETSI GS CIM 009 v1.8): what the spec defines and the hub did otherwise.

- `attributeCount` of an Attribute (§5.2.28 in 1.8; the OAS: "Number of attribute instances with this
  attribute name") counts instances, one per datasetId, not the entities that hold the attribute.
- Pagination (§5.5.9, §6.3.10): `Link` rel="next"/"prev" on every query that takes limit/offset (temporal
  query §5.7.4, subscriptions §5.8.4), as on `/entities`; `NGSILD-Results-Count` with count=true (§6.3.13).
- BatchEntityError (§5.2.17): `entityId` is required and a URI, also for an item without a usable id.
- Merge (§5.6.17, batch §5.6.20, RFC 7396): a Property's JSON object value and a JsonProperty's `json` are
  merged key by key, recursively; a key set to null or urn:ngsi-ld:null is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import ERR, hub_client, problem

BASE = "/ngsi-ld/v1"
E = BASE + "/entities"
T = BASE + "/temporal/entities"
OPS = BASE + "/entityOperations"
SUBS = BASE + "/subscriptions"
NULL = "urn:ngsi-ld:null"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def pages(response: Any) -> dict[str, dict[str, list[str]]]:
    """The pagination links of an answer: rel -> the link's query parameters (the context link is left out)."""
    out = {}
    for part in response.headers.get("Link", "").split(","):
        if 'rel="next"' in part or 'rel="prev"' in part:
            target = part.split(">")[0].strip().lstrip("<")
            rel = "next" if 'rel="next"' in part else "prev"
            out[rel] = parse_qs(urlsplit(target).query)
    return out


def follow(client: TestClient, response: Any, rel: str) -> Any:
    for part in response.headers["Link"].split(","):
        if f'rel="{rel}"' in part:
            return client.get(part.split(">")[0].strip().lstrip("<"))
    raise AssertionError(f"no {rel} link in {response.headers['Link']}")


# -- attributeCount ------------------------------------------------------------------------------------


def _speed(value: float, dataset: str | None = None) -> dict[str, Any]:
    instance: dict[str, Any] = {"type": "Property", "value": value}
    if dataset is not None:
        instance["datasetId"] = dataset
    return instance


def test_attribute_count_counts_instances_not_entities(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    two = {"id": "urn:ngsi-ld:Car:1", "type": "Car", "speed": [_speed(1), _speed(2, "urn:ngsi-ld:Dataset:gps")]}
    one = {"id": "urn:ngsi-ld:Car:2", "type": "Car", "speed": _speed(3)}
    for body in (two, one):
        assert client.post(E, json=body).status_code == 201
    detail = client.get(f"{BASE}/attributes/speed").json()
    assert detail["attributeCount"] == 3 and detail["typeNames"] == ["Car"]
    listed = {a["attributeName"]: a for a in client.get(f"{BASE}/attributes", params={"details": "true"}).json()}
    assert listed["speed"]["attributeCount"] == 3
    # The type's entityCount stays a count of entities.
    assert client.get(f"{BASE}/types/Car").json()["entityCount"] == 2
    # Deleting one instance (a write that changes only how many instances there are) is counted too.
    gone = client.delete(f"{E}/urn:ngsi-ld:Car:1/attrs/speed", params={"datasetId": "urn:ngsi-ld:Dataset:gps"})
    assert gone.status_code == 204, gone.text
    assert client.get(f"{BASE}/attributes/speed").json()["attributeCount"] == 2


def test_attribute_count_of_batch_written_instances(hub: tuple[TestClient, Platform]) -> None:
    """A batch upsert of one shape (the batch plan's fast path) counts as the generic path does."""
    client, _ = hub
    items = [{"id": f"urn:ngsi-ld:Car:{n}", "type": "Car", "speed": _speed(n, "urn:ngsi-ld:Dataset:gps")}
             for n in range(4)]
    assert client.post(f"{OPS}/upsert", json=items).status_code == 201
    assert client.get(f"{BASE}/attributes/speed").json()["attributeCount"] == 4
    more = {"id": "urn:ngsi-ld:Car:0", "speed": _speed(9)}  # a default instance beside the gps one
    assert client.post(f"{E}/urn:ngsi-ld:Car:0/attrs", json={"speed": more["speed"]}).status_code == 204
    assert client.get(f"{BASE}/attributes/speed").json()["attributeCount"] == 5


def test_attribute_count_of_a_file_written_before_instances_were_counted(tmp_path: Any) -> None:
    """A hub file whose entity_attrs hold one row per attribute (as before) is counted right once reopened."""
    from polis.store.duckdb_ import DuckDBStore

    path = tmp_path / "hub.duckdb"
    store = DuckDBStore(path)
    now = "2026-01-01T00:00:00Z"
    doc = {"id": "urn:ngsi-ld:Car:1", "type": ["https://example.org/Car"], "createdAt": now, "modifiedAt": now,
           "https://example.org/speed": [{"type": "Property", "value": 1},
                                         {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"},
                                         {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}]}
    store.write("", upserts=[doc])
    assert [a.attribute_count for a in store.attributes("")] == [3]
    # What an older Polis left: one row for the attribute, and no note that the rows were counted.
    store._con.execute("DELETE FROM entity_attrs")
    store._con.execute("INSERT INTO entity_attrs SELECT tenant, seq, 'https://example.org/speed', 'Property' "
                       "FROM entities")
    store._con.execute("DELETE FROM meta WHERE key = 'entity_attrs_rows'")
    store.close()
    reopened = DuckDBStore(path)
    try:
        assert [(a.attribute, a.entity_count, a.attribute_count) for a in reopened.attributes("")] == [
            ("https://example.org/speed", 1, 3)
        ]
    finally:
        reopened.close()


# -- pagination ----------------------------------------------------------------------------------------


def _meters(client: TestClient, n: int) -> None:
    for k in range(n):
        body = {"id": f"urn:ngsi-ld:Meter:{k}", "type": "Meter",
                "level": {"type": "Property", "value": k, "observedAt": "2026-11-29T08:00:00Z"}}
        assert client.post(E, json=body).status_code == 201


def test_temporal_query_has_pagination_links_and_count(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    _meters(client, 3)
    first = client.get(T, params={"type": "Meter", "limit": "1", "count": "true"})
    assert first.status_code == 200, first.text
    assert first.headers["NGSILD-Results-Count"] == "3"
    assert pages(first) == {"next": {"type": ["Meter"], "limit": ["1"], "count": ["true"], "offset": ["1"]}}
    assert "json-ld#context" in first.headers["Link"]  # the context link is still there, beside them
    middle = follow(client, first, "next")
    assert middle.status_code == 200 and middle.json()[0]["id"] == "urn:ngsi-ld:Meter:1"
    assert set(pages(middle)) == {"next", "prev"} and pages(middle)["prev"]["offset"] == ["0"]
    last = follow(client, middle, "next")
    assert [e["id"] for e in last.json()] == ["urn:ngsi-ld:Meter:2"]
    assert set(pages(last)) == {"prev"}  # the count says there is no more
    only_count = client.get(T, params={"type": "Meter", "limit": "0", "count": "true"})
    assert only_count.json() == [] and only_count.headers["NGSILD-Results-Count"] == "3"
    assert pages(only_count) == {}


def _subscribe(client: TestClient, n: int) -> None:
    for k in range(n):
        body = {"id": f"urn:ngsi-ld:Subscription:page-{k}", "type": "Subscription",
                "entities": [{"type": "Meter"}], "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
        r = client.post(SUBS, json=body)
        assert r.status_code == 201, r.text


def test_subscription_list_has_pagination_links_and_count(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    _subscribe(client, 3)
    first = client.get(SUBS, params={"limit": "2"})
    assert first.status_code == 200 and len(first.json()) == 2
    assert "NGSILD-Results-Count" not in first.headers  # only when asked for
    assert pages(first) == {"next": {"limit": ["2"], "offset": ["2"]}}
    last = follow(client, first, "next")
    assert [s["id"] for s in last.json()] == ["urn:ngsi-ld:Subscription:page-2"]
    assert pages(last) == {"prev": {"limit": ["2"], "offset": ["0"]}}  # the total is known: no next
    counted = client.get(SUBS, params={"limit": "1", "offset": "1", "count": "true"})
    assert counted.headers["NGSILD-Results-Count"] == "3"
    assert set(pages(counted)) == {"next", "prev"}
    problem(client.get(SUBS, params={"limit": "0"}), 400, "BadRequestData", "count")


# -- BatchEntityError.entityId -------------------------------------------------------------------------


def _errors(r: Any) -> list[dict[str, Any]]:
    assert r.status_code == 207, r.text
    errors = r.json()["errors"]
    for item in errors:  # §5.2.17: entityId is mandatory and a URI
        assert isinstance(item["entityId"], str) and ":" in item["entityId"], item
        assert item["error"]["type"].startswith(ERR) and item["error"]["detail"]
    return errors  # type: ignore[no-any-return]


@pytest.mark.parametrize("op", ["create", "upsert", "update", "merge"])
def test_a_batch_item_without_a_usable_id_is_reported_with_a_uri(hub: tuple[TestClient, Platform], op: str) -> None:
    client, platform = hub
    items = [{"type": "Car", "speed": _speed(1)}, 42, {"id": 7, "type": "Car"}, {"id": None, "type": "Car"}]
    errors = _errors(client.post(f"{OPS}/{op}", json=items))
    assert [e["entityId"] for e in errors] == [NULL] * 4
    # The item's place in the request tells them apart.
    for position, error in enumerate(errors):
        assert f"item {position}" in error["error"]["detail"], error
    assert platform.store.entity_count("") == 0


def test_a_batch_item_with_an_id_is_still_reported_under_it(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    errors = _errors(client.post(f"{OPS}/create", json=[{"id": "urn:ngsi-ld:Car:1"}, {"type": "Car"}]))
    assert [e["entityId"] for e in errors] == ["urn:ngsi-ld:Car:1", NULL]
    assert "item" not in errors[0]["error"]["detail"]  # its id names it already


def test_a_batch_delete_item_that_is_no_id_is_reported_with_a_uri(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.post(E, json={"id": "urn:ngsi-ld:Car:1", "type": "Car"}).status_code == 201
    r = client.post(f"{OPS}/delete", json=["urn:ngsi-ld:Car:1", 5, {"id": "urn:ngsi-ld:Car:2"}, None])
    errors = _errors(r)
    assert r.json()["success"] == ["urn:ngsi-ld:Car:1"]
    assert [e["entityId"] for e in errors] == [NULL] * 3
    assert ["item 1" in e["error"]["detail"] for e in errors] == [True, False, False]
    assert "item 3" in errors[2]["error"]["detail"]


# -- merge of object values ----------------------------------------------------------------------------


ADDRESS = {"streetAddress": "Tiger Street 4", "addressRegion": "Metropolis", "addressLocality": "Cat City",
           "postalCode": "42420", "geo": {"lat": 1, "lon": 2}, "tags": ["a", "b"]}
STORE = {"id": "urn:ngsi-ld:Store:1", "type": "Store",
         "address": {"type": "Property", "value": ADDRESS, "observedAt": "2026-01-01T00:00:00Z"},
         "config": {"type": "JsonProperty", "json": {"mode": "auto", "limits": {"low": 1, "high": 9}}},
         "opened": {"type": "Property", "value": {"@type": "DateTime", "@value": "2020-01-01T00:00:00Z"}},
         "level": {"type": "Property", "value": {"a": 1}}}
# The NGSI-LD Primer's merge example (streetAddress replaced, addressRegion removed), plus a nested key merged,
# a JSON null removing a key (RFC 7396), and an array replaced whole.
ADDRESS_PATCH = {"streetAddress": "Superman Street 4", "addressRegion": NULL, "geo": {"lat": 3},
                 "postalCode": None, "tags": ["c"]}
MERGED_ADDRESS = {"streetAddress": "Superman Street 4", "addressLocality": "Cat City", "geo": {"lat": 3, "lon": 2},
                  "tags": ["c"]}
CONFIG_PATCH = {"limits": {"high": 5, "low": NULL}, "extra": True}
MERGED_CONFIG = {"mode": "auto", "limits": {"high": 5}, "extra": True}


def _stored(client: TestClient) -> dict[str, Any]:
    r = client.get(f"{E}/urn:ngsi-ld:Store:1")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_merge_merges_an_object_value_key_by_key(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.post(E, json=STORE).status_code == 201
    r = client.patch(f"{E}/urn:ngsi-ld:Store:1", json={
        "address": {"type": "Property", "value": ADDRESS_PATCH},
        "config": {"type": "JsonProperty", "json": CONFIG_PATCH},
    })
    assert r.status_code == 204, r.text
    got = _stored(client)
    assert got["address"] == {"type": "Property", "value": MERGED_ADDRESS, "observedAt": "2026-01-01T00:00:00Z"}
    assert got["config"] == {"type": "JsonProperty", "json": MERGED_CONFIG}
    # The history holds the merged value, as a read does.
    history = client.get(f"{T}/urn:ngsi-ld:Store:1", params={"attrs": "address"}).json()
    assert history["address"][-1]["value"] == MERGED_ADDRESS


def test_batch_merge_merges_an_object_value_key_by_key(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.post(E, json=STORE).status_code == 201
    item = {"id": "urn:ngsi-ld:Store:1", "type": "Store", "address": {"type": "Property", "value": ADDRESS_PATCH},
            "config": {"type": "JsonProperty", "json": CONFIG_PATCH}}
    r = client.post(f"{OPS}/merge", json=[item])
    assert r.status_code == 204, r.text
    got = _stored(client)
    assert got["address"]["value"] == MERGED_ADDRESS and got["config"]["json"] == MERGED_CONFIG


def test_merge_replaces_what_is_not_an_object_on_both_sides(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.post(E, json=STORE).status_code == 201
    r = client.patch(f"{E}/urn:ngsi-ld:Store:1", json={
        "address": {"type": "Property", "value": "somewhere"},  # an object replaced by a string
        "opened": {"type": "Property", "value": {"@type": "DateTime", "@value": "2021-06-01T00:00:00Z"}},
        "level": {"type": "Property", "value": [1, 2]},  # an object replaced by an array
    })
    assert r.status_code == 204, r.text
    got = _stored(client)
    assert got["address"]["value"] == "somewhere"
    assert got["opened"]["value"] == {"@type": "DateTime", "@value": "2021-06-01T00:00:00Z"}  # a date is one value
    assert got["level"]["value"] == [1, 2]
    r = client.patch(f"{E}/urn:ngsi-ld:Store:1", json={"address": {"type": "Property", "value": {"a": 1, "b": None}}})
    assert r.status_code == 204, r.text
    assert _stored(client)["address"]["value"] == {"a": 1}  # onto a string: a new object, without its nulls


def test_a_rejected_merge_writes_nothing(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.post(E, json=STORE).status_code == 201
    before = _stored(client)
    r = client.patch(f"{E}/urn:ngsi-ld:Store:1", json={
        "address": {"type": "Property", "value": ADDRESS_PATCH},
        "broken": {"type": "Relationship", "object": "not a uri"},
    })
    problem(r, 400, "BadRequestData", "broken")
    assert _stored(client) == before
