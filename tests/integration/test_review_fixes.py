"""Regressions found in review: concurrent writers, instant ordering, tenants, POST query selectors."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient

from polis.platform import Platform

BASE = "/ngsi-ld/v1"


def test_concurrent_updates_of_one_entity_are_both_kept(client: TestClient, platform: Platform) -> None:
    assert (
        client.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:W:1", "type": "W", "a": 0, "b": 0}).status_code == 201
    )
    store = platform.store
    original = store.write

    def slow_write(*args: Any, **kwargs: Any) -> None:
        threading.Event().wait(0.2)  # widen the read-modify-write window
        original(*args, **kwargs)

    store.write = slow_write  # type: ignore[method-assign]
    results: list[int] = []

    def patch(name: str) -> None:
        results.append(client.patch(f"{BASE}/entities/urn:ngsi-ld:W:1/attrs", json={name: 9}).status_code)

    workers = [threading.Thread(target=patch, args=(n,)) for n in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.write = original  # type: ignore[method-assign]
    assert results == [204, 204]
    entity = client.get(f"{BASE}/entities/urn:ngsi-ld:W:1", params={"options": "keyValues"}).json()
    assert (entity["a"], entity["b"]) == (9, 9)


def test_concurrent_creates_of_one_id_give_one_conflict(client: TestClient, platform: Platform) -> None:
    original = platform.store.write

    def slow_write(*args: Any, **kwargs: Any) -> None:
        threading.Event().wait(0.2)  # widen the check-then-write window
        original(*args, **kwargs)

    platform.store.write = slow_write  # type: ignore[method-assign]
    statuses: list[int] = []

    def create() -> None:
        statuses.append(client.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:Z:1", "type": "Z"}).status_code)

    workers = [threading.Thread(target=create) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(statuses) == [201, 409]


def test_temporal_create_keeps_the_newest_instant_as_current(client: TestClient) -> None:
    body = {
        "id": "urn:ngsi-ld:T:1",
        "type": "T",
        "a": [
            {"type": "Property", "value": 1, "observedAt": "2024-01-01T10:00:00Z"},
            {"type": "Property", "value": 2, "observedAt": "2024-01-01T10:00:00.500Z"},
        ],
    }
    assert client.post(f"{BASE}/temporal/entities", json=body).status_code == 201
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:T:1", params={"options": "keyValues"}).json()["a"] == 2


def test_a_rejected_write_leaves_no_tenant_behind(client: TestClient) -> None:
    bad = client.post(
        f"{BASE}/entities", content=b"{nope", headers={"Content-Type": "application/json", "NGSILD-Tenant": "junk123"}
    )
    assert bad.status_code == 400
    read = client.get(f"{BASE}/entities", params={"type": "X"}, headers={"NGSILD-Tenant": "junk123"})
    assert read.status_code == 404 and read.json()["type"].endswith("/NonexistentTenant")


def test_post_query_with_several_selectors_matches_any_of_them_each_with_its_own_ids(client: TestClient) -> None:
    things = [{"id": f"urn:ngsi-ld:{t}:{n}", "type": t, "n": {"type": "Property", "value": n}}
              for t in ("X", "Y", "Z") for n in (1, 2)] + [{"id": "urn:ngsi-ld:X:special-9", "type": "X"}]
    assert client.post(f"{BASE}/entityOperations/create", json=things).status_code == 201
    body = {"type": "Query", "entities": [
        {"type": "X", "id": "urn:ngsi-ld:X:1"},  # only this X
        {"type": "Y"},  # every Y
        {"type": "X", "idPattern": "special"},  # and the X matching the pattern
        {"type": "Z", "id": "urn:ngsi-ld:X:2"},  # an X id under type Z: matches nothing
    ]}
    answer = client.post(f"{BASE}/entityOperations/query", json=body, params={"count": "true"})
    assert answer.status_code == 200, answer.text
    assert sorted(e["id"] for e in answer.json()) == [
        "urn:ngsi-ld:X:1", "urn:ngsi-ld:X:special-9", "urn:ngsi-ld:Y:1", "urn:ngsi-ld:Y:2"]
    assert answer.headers["NGSILD-Results-Count"] == "4"
    with_q = dict(body, q="n==2")  # the other filters still narrow every selector's matches
    assert [e["id"] for e in client.post(f"{BASE}/entityOperations/query", json=with_q).json()] == ["urn:ngsi-ld:Y:2"]
    bad = client.post(
        f"{BASE}/entityOperations/query", json={"type": "Query", "entities": [{"type": "X", "idPattern": 5}]}
    )
    assert bad.status_code == 400
