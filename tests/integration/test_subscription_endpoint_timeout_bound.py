"""notification.endpoint.timeout (milliseconds, as NGSI-LD has it) is bounded: a subscription's notifications go
one at a time, so a client asking for hours (and an endpoint that accepts and never answers) held its delivery
worker, and everything queued behind it, for hours. Over MAX_ENDPOINT_TIMEOUT_MS is a 400 naming the member
and the maximum, on create and on PATCH; a subscription stored before the bound is held to it at delivery."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from polis.subscriptions.delivery import _Worker
from polis.subscriptions.model import MAX_ENDPOINT_TIMEOUT_MS
from tests.conftest import hub_client, problem
from tests.integration.webhook import free_port

SUBS = "/ngsi-ld/v1/subscriptions"
URL = f"http://127.0.0.1:{free_port()}/notify"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def _body(timeout: object) -> dict[str, object]:
    return {"type": "Subscription", "entities": [{"type": "Meter"}],
            "notification": {"endpoint": {"uri": URL, "timeout": timeout}}}


def test_the_maximum_is_a_minute_in_milliseconds() -> None:
    assert MAX_ENDPOINT_TIMEOUT_MS == 60_000


@pytest.mark.parametrize("timeout", [MAX_ENDPOINT_TIMEOUT_MS + 1, 3_600_000, 10**9])
def test_a_longer_timeout_is_refused_on_create(hub: tuple[TestClient, Platform], timeout: int) -> None:
    client, _ = hub
    problem(client.post(SUBS, json=_body(timeout)), 400, "BadRequestData", "notification.endpoint.timeout", "60000")
    assert client.get(SUBS).json() == []  # nothing was created


def test_a_longer_timeout_is_refused_on_patch(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    created = client.post(SUBS, json=_body(MAX_ENDPOINT_TIMEOUT_MS))  # the maximum itself is allowed
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert client.get(location).json()["notification"]["endpoint"]["timeout"] == MAX_ENDPOINT_TIMEOUT_MS
    patch = {"notification": {"endpoint": {"uri": URL, "timeout": 7_200_000}}}
    problem(client.patch(location, json=patch), 400, "BadRequestData", "notification.endpoint.timeout", "60000")
    assert client.get(location).json()["notification"]["endpoint"]["timeout"] == MAX_ENDPOINT_TIMEOUT_MS
    assert client.patch(location, json={"notification": {"endpoint": {"uri": URL, "timeout": 2500}}}).status_code == 204
    assert client.get(location).json()["notification"]["endpoint"]["timeout"] == 2500


class _Recorder:
    """Stands in for the worker's HTTP sender: the real one would wait out the timeout under test (an hour)."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def send(self, uri: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
        self.timeouts.append(timeout_s)


def test_a_subscription_stored_before_the_bound_is_held_to_it(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    location = client.post(SUBS, json=_body(1000)).headers["Location"]
    sub, _ = platform.subscriptions.get("", location.rsplit("/", 1)[1])
    stored = replace(sub, endpoint=replace(sub.endpoint, timeout_ms=3_600_000.0))  # as an older hub kept it
    worker = _Worker(platform.subscriptions.dispatcher, (sub.tenant, sub.id))
    recorder = _Recorder()
    worker.http = recorder  # type: ignore[assignment]
    worker._send(stored, b"{}", {}, "urn:ngsi-ld:Notification:1")
    worker._send(sub, b"{}", {}, "urn:ngsi-ld:Notification:2")
    assert recorder.timeouts == [MAX_ENDPOINT_TIMEOUT_MS / 1000, 1.0]
