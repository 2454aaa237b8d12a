"""Subscription ids are one namespace for every department, and a chosen id says what it watches
(`urn:ngsi-ld:Subscription:police-raids`). Found in a review on 2026-11-30 (the first test failed before its
fix): creating a subscription with an id another department holds answered 409 where an unused id was 201, so
any department could find out which ids the others chose. A department that does not administer
`subscriptions` now chooses ids only under `urn:ngsi-ld:Subscription:<department>:`, and the hub generates
its ids there too; any other id is a 400 naming that prefix, whether or not someone holds it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import admin_headers, problem

SUBS = "/ngsi-ld/v1/subscriptions"
POLICE_RAIDS = "urn:ngsi-ld:Subscription:police:raids"
# Whatever a response says beyond these (the date, a length that follows the id) may differ.
VARYING_HEADERS = {"date", "content-length"}

Keys = dict[str, dict[str, str]]


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Keys]]:
    """Police, parks and water_2-b may subscribe to los-loop; operations also administers `subscriptions`."""
    platform = Platform.in_memory()
    keys = {"admin": admin_headers(platform)}
    for department in ("police", "parks", "water_2-b", "operations"):
        platform.access.create_department(department)
        platform.access.grant(department, "los-loop", "aggregate", "subscribe")
        keys[department] = {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}
    platform.access.grant("operations", "subscriptions", "aggregate", "administer")
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        yield client, keys
    platform.close()


def _body(sub_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"type": "Subscription", "entities": [{"type": "TrafficFlowObserved"}],
                               "notification": {"endpoint": {"uri": "urn:polis:sse"}}}
    return body if sub_id is None else {"id": sub_id, **body}


def _created_id(client: TestClient, headers: dict[str, str], sub_id: str | None = None) -> str:
    r = client.post(SUBS, json=_body(sub_id), headers=headers)
    assert r.status_code == 201, r.text
    return r.headers["Location"].removeprefix(f"{SUBS}/")


def _seen(client: TestClient, headers: dict[str, str], sub_id: str) -> tuple[int, dict[str, str], str]:
    """What a client learns from creating `sub_id`, with the id written out of it."""
    r = client.post(SUBS, json=_body(sub_id), headers=headers)
    kept = {k: v for k, v in r.headers.items() if k not in VARYING_HEADERS}
    return r.status_code, kept, r.text.replace(sub_id, "<id>")


def test_another_departments_id_answers_as_an_unused_id_when_created(hub: tuple[TestClient, Keys]) -> None:
    client, keys = hub
    assert _created_id(client, keys["police"], POLICE_RAIDS) == POLICE_RAIDS
    taken = _seen(client, keys["parks"], POLICE_RAIDS)
    for unused in ("urn:ngsi-ld:Subscription:police:rests", "urn:ngsi-ld:Subscription:parks-raids"):
        assert _seen(client, keys["parks"], unused) == taken, unused
    refused = client.post(SUBS, json=_body(POLICE_RAIDS), headers=keys["parks"])
    problem(refused, 400, "BadRequestData", "urn:ngsi-ld:Subscription:parks:")
    assert client.get(f"{SUBS}/{POLICE_RAIDS}", headers=keys["police"]).status_code == 200  # police's untouched


def test_a_department_chooses_ids_under_its_own_prefix(hub: tuple[TestClient, Keys]) -> None:
    client, keys = hub
    own = "urn:ngsi-ld:Subscription:parks:raids"  # the same name as police's, in parks's namespace
    assert _created_id(client, keys["police"], POLICE_RAIDS) == POLICE_RAIDS
    assert _created_id(client, keys["parks"], own) == own
    assert client.get(f"{SUBS}/{own}", headers=keys["parks"]).json()["id"] == own
    problem(client.post(SUBS, json=_body(own), headers=keys["parks"]), 409, "AlreadyExists")  # its own: told
    problem(client.post(SUBS, json=_body("urn:ngsi-ld:Subscription:parks"), headers=keys["parks"]), 400,
            "BadRequestData", "urn:ngsi-ld:Subscription:parks:")  # the prefix ends with its ':'


def test_a_generated_id_falls_under_the_departments_prefix(hub: tuple[TestClient, Keys]) -> None:
    client, keys = hub
    for department in ("parks", "water_2-b"):  # every character a department name may hold
        generated = _created_id(client, keys[department])
        assert generated.startswith(f"urn:ngsi-ld:Subscription:{department}:"), generated
        assert client.get(f"{SUBS}/{generated}", headers=keys[department]).json()["id"] == generated
    chosen = "urn:ngsi-ld:Subscription:water_2-b:reservoir-level"
    assert _created_id(client, keys["water_2-b"], chosen) == chosen


def test_administering_departments_choose_any_id(hub: tuple[TestClient, Keys]) -> None:
    client, keys = hub
    for department, sub_id in (("admin", "urn:ngsi-ld:Subscription:citywide"),
                               ("operations", "urn:ngsi-ld:Subscription:operations-watch"),
                               ("operations", "urn:ngsi-ld:Subscription:operations:own-prefix")):
        assert _created_id(client, keys[department], sub_id) == sub_id
    generated = _created_id(client, keys["operations"])
    assert generated.startswith("urn:ngsi-ld:Subscription:") and generated.count(":") == 3, generated
