"""A department that administers `subscriptions` chooses any id, but not one in another existing department's
namespace (`urn:ngsi-ld:Subscription:<department>:`): that department may choose ids only there, and one an
administrator took from it answered it 409 for a subscription it cannot see (it stays the creator's). Under its
own prefix, under no department prefix, or under a prefix no department has, an administrator's id is taken."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import admin_headers, problem

SUBS = "/ngsi-ld/v1/subscriptions"
Keys = dict[str, dict[str, str]]


def _hub(platform: Platform) -> Iterator[tuple[TestClient, Keys]]:
    """Police subscribes to los-loop; operations also administers `subscriptions`; admin holds every grant."""
    keys = {"admin": admin_headers(platform)}
    for department in ("police", "operations"):
        platform.access.create_department(department)
        platform.access.grant(department, "los-loop", "aggregate", "subscribe")
        keys[department] = {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}
    platform.access.grant("operations", "subscriptions", "aggregate", "administer")
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        yield client, keys
    platform.close()


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Keys]]:
    yield from _hub(Platform.in_memory())


def _body(sub_id: str) -> dict[str, object]:
    return {"id": sub_id, "type": "Subscription", "entities": [{"type": "TrafficFlowObserved"}],
            "notification": {"endpoint": {"uri": "urn:polis:sse"}}}


def test_an_administrator_cannot_take_an_id_in_another_departments_namespace(hub: tuple[TestClient, Keys]) -> None:
    client, keys = hub
    squat = "urn:ngsi-ld:Subscription:police:raids"
    for department in ("operations", "admin"):
        problem(client.post(SUBS, json=_body(squat), headers=keys[department]), 400, "BadRequestData",
                "urn:ngsi-ld:Subscription:police:", f"urn:ngsi-ld:Subscription:{department}:")
    created = client.post(SUBS, json=_body(squat), headers=keys["police"])  # still police's to choose
    assert created.status_code == 201, created.text
    assert client.get(f"{SUBS}/{squat}", headers=keys["police"]).json()["id"] == squat


def test_an_administrator_chooses_its_own_unprefixed_or_unclaimed_ids(hub: tuple[TestClient, Keys]) -> None:
    client, keys = hub
    for department, sub_id in (("operations", "urn:ngsi-ld:Subscription:operations:watch"),
                               ("operations", "urn:ngsi-ld:Subscription:citywide"),
                               ("operations", "urn:ngsi-ld:Subscription:nobody:watch"),  # no such department
                               ("operations", "urn:x-city:subs:police:watch"),  # not the Subscription namespace
                               ("admin", "urn:ngsi-ld:Subscription:admin:watch")):
        r = client.post(SUBS, json=_body(sub_id), headers=keys[department])
        assert r.status_code == 201, (sub_id, r.text)
