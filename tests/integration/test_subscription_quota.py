"""A department holds at most POLIS_MAX_SUBSCRIPTIONS_PER_DEPARTMENT subscriptions: each with a
backlog has its own delivery worker, so thousands pointed at a dead endpoint would exhaust the hub's threads
(found by a review, 2026-11-29). The quota counts every tenant (a subscription creates its tenant). Past
it a creation is a 403 problem naming the setting; other departments are not affected, and deleting one makes
room."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import problem

SUBS = "/ngsi-ld/v1/subscriptions"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    platform = Platform.in_memory(max_subscriptions_per_department=2)
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        yield client, platform
    platform.close()


def _key(platform: Platform, department: str) -> dict[str, str]:
    platform.access.create_department(department)
    platform.access.grant(department, "los-loop", "aggregate", "subscribe")
    return {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}


def _subscription(name: str) -> dict[str, object]:
    return {"id": f"urn:ngsi-ld:Subscription:{name}", "type": "Subscription", "entities": [{"type": "Road"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}


def test_a_department_past_its_quota_is_refused_and_others_are_not(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    parks, transport = _key(platform, "parks"), _key(platform, "transport")
    for name in ("parks:p1", "parks:p2"):
        assert client.post(SUBS, json=_subscription(name), headers=parks).status_code == 201
    refused = client.post(SUBS, json=_subscription("parks:p3"), headers=parks)
    body = problem(refused, 403, "SubscriptionQuotaExceeded", "parks", "POLIS_MAX_SUBSCRIPTIONS_PER_DEPARTMENT=2")
    assert body["quota"] == 2
    assert client.get(f"{SUBS}/urn:ngsi-ld:Subscription:parks:p3", headers=parks).status_code == 404  # nothing written
    elsewhere = client.post(SUBS, json=_subscription("parks:p3"), headers={**parks, "NGSILD-Tenant": "district-7"})
    problem(elsewhere, 403, "SubscriptionQuotaExceeded")  # a new tenant is no way around it
    assert client.post(SUBS, json=_subscription("transport:t1"), headers=transport).status_code == 201  # its own quota
    assert client.delete(f"{SUBS}/urn:ngsi-ld:Subscription:parks:p1", headers=parks).status_code == 204
    assert client.post(SUBS, json=_subscription("parks:p3"), headers=parks).status_code == 201  # room again
