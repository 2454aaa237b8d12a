"""Subscription delivery against hostile or odd endpoints: an IPv6 address hiding a denied IPv4 address, a
receiver that answers a byte at a time, and a subscription that cannot notify (expired or paused) while it
has a backlog. Every receiver is a real server on 127.0.0.1; host names are resolved by a stand-in."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from polis.subscriptions.delivery import Target
from polis.subscriptions.model import DeliveryStatus, utc_text
from tests.conftest import hub_client, problem
from tests.integration.webhook import RawAnswerer, Receiver, wait_until

SUBS = "/ngsi-ld/v1/subscriptions"
FAST = {"notify_retry_initial_s": 0.05, "notify_retry_max_s": 0.2}
DEADLINE_S = 1.0  # POLIS_NOTIFY_TIMEOUT_S in these tests: the whole of one delivery attempt


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client(notify_timeout_s=DEADLINE_S, **FAST)


def subscribe(client: TestClient, etype: str, uri: str, **extra: Any) -> str:
    body = {"type": "Subscription", "entities": [{"type": etype}],
            "notification": {"format": "keyValues", "endpoint": {"uri": uri}}, **extra}
    r = client.post(SUBS, json=body)
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


def write(client: TestClient, etype: str, n: int) -> None:
    entity = {"id": f"urn:ngsi-ld:{etype}:1", "type": etype, "count": {"type": "Property", "value": n}}
    r = client.post("/ngsi-ld/v1/entityOperations/upsert", json=[entity])
    assert r.status_code in (201, 204), r.text


def status(platform: Platform, location: str) -> DeliveryStatus:
    return platform.subscriptions.get("", location.rsplit("/", 1)[1])[1]


def failed(platform: Platform, location: str, timeout: float = 10.0) -> DeliveryStatus:
    return wait_until(  # type: ignore[no-any-return]
        lambda: s if (s := status(platform, location)).times_failed else None, timeout, "a failed notification"
    )


# -- a denied IPv4 address written as IPv6 ------------------------------------------------------------------


@pytest.mark.parametrize("host", [
    pytest.param("[64:ff9b::a9fe:a9fe]", id="nat64"),
    pytest.param("[64:ff9b:1::a9fe:a9fe]", id="nat64-local-use"),
    pytest.param("[2002:a9fe:a9fe::1]", id="6to4"),
    pytest.param("[::169.254.169.254]", id="ipv4-compatible"),
    pytest.param("[2001:0:a9fe:a9fe::fefd:fcfb]", id="teredo-server"),
])
def test_the_metadata_address_inside_an_ipv6_literal_is_refused_at_create_and_update(
    hub: tuple[TestClient, Platform], host: str
) -> None:
    client, _ = hub
    uri = f"http://{host}/latest/meta-data/"
    body = {"type": "Subscription", "entities": [{"type": "Meter"}], "notification": {"endpoint": {"uri": uri}}}
    problem(client.post(SUBS, json=body), 400, "BadRequestData", "169.254.169.254", "169.254.0.0/16")
    location = subscribe(client, "Meter", "http://127.0.0.1:9/notify")
    fragment = {"notification": {"endpoint": {"uri": uri}}}
    problem(client.patch(location, json=fragment), 400, "BadRequestData", "169.254.0.0/16")
    assert client.get(location).json()["notification"]["endpoint"]["uri"] == "http://127.0.0.1:9/notify"


@pytest.fixture
def resolve_to(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """`resolve_to(name, address)`: the system resolver answers `address` for `name`. A connection anywhere but
    loopback is refused, so a guard that let the address through fails the test without reaching it."""
    real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect
    answers: dict[str, str] = {}

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real_lookup(answers.get(host, host), port, *args, **kwargs)

    def loopback_only(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else ""
        if not (host.startswith("127.") or host == "::1"):
            raise ConnectionRefusedError(f"test: no connection to {host} outside loopback")
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    return answers.__setitem__


def test_a_name_resolving_to_the_metadata_address_through_nat64_is_a_failed_notification(
    hub: tuple[TestClient, Platform], resolve_to: Callable[[str, str], None]
) -> None:
    client, platform = hub
    resolve_to("nat64.hooks.test", "64:ff9b::a9fe:a9fe")
    location = subscribe(client, "Probe", "http://nat64.hooks.test/latest/meta-data/")
    write(client, "Probe", 1)
    reason = failed(platform, location).last_failure_reason or ""
    assert "nat64.hooks.test resolves to 64:ff9b::a9fe:a9fe" in reason, reason
    assert "169.254.169.254 (NAT64)" in reason and "169.254.0.0/16" in reason, reason


# -- a receiver that trickles its answer --------------------------------------------------------------------


class Trickler(RawAnswerer):
    """A webhook that reads the request and then answers one byte every `every_s`, as long as the hub listens:
    a status line and headers that never end (`part="headers"`), or a 200 whose body never ends (`"body"`).
    Each byte arrives well within any per-read timeout."""

    def __init__(self, part: str, every_s: float = 0.1) -> None:
        if part == "headers":  # a status line, then a header that never ends
            self._at_once, self._trickled = b"", b"HTTP/1.1 200 OK\r\nX-Slow: "
        else:  # the headers at once, then the body
            self._at_once, self._trickled = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b""
        self._every_s = every_s
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(self._at_once)
            trickle = iter(self._trickled)
            while not self._stop.is_set():
                conn.sendall(bytes([next(trickle, ord("a"))]))
                time.sleep(self._every_s)
        except OSError:
            pass  # the hub gave up on the answer: what it should do
        finally:
            conn.close()


def test_a_receiver_trickling_its_headers_fails_the_attempt_at_the_deadline(hub: tuple[TestClient, Platform]) -> None:
    """httpx's timeouts are per read: a byte every 0.1 s held the subscription's delivery for as long as the
    receiver liked. The whole attempt now ends at POLIS_NOTIFY_TIMEOUT_S as a failure, and once the endpoint is
    changed to a good one the notification goes there at once."""
    client, platform = hub
    slow, good, other = Trickler("headers"), Receiver().start(), Receiver().start()
    try:
        location = subscribe(client, "Drip", slow.url)
        subscribe(client, "Drip", other.url)
        started = time.monotonic()
        write(client, "Drip", 1)
        state = failed(platform, location, timeout=DEADLINE_S + 4.0)
        assert time.monotonic() - started < DEADLINE_S + 2.0
        assert f"within {DEADLINE_S:g} s" in (state.last_failure_reason or ""), state.last_failure_reason
        assert client.get(location).json()["notification"]["status"] == "failed"
        assert other.values("count") == [1]  # another subscription was never held up
        r = client.patch(location, json={"notification": {"endpoint": {"uri": good.url}}})
        assert r.status_code == 204, r.text
        good.wait_for(1, timeout=DEADLINE_S + 3.0)
        assert good.values("count") == [1]
        wait_until(lambda: client.get(location).json()["notification"]["status"] == "ok" or None, 3, "status ok")
    finally:
        slow.close()
        good.stop()
        other.stop()


def test_a_receiver_trickling_a_200s_body_is_a_success_cut_off_at_the_deadline(
    hub: tuple[TestClient, Platform]
) -> None:
    """The status is what counts (README): the body is only drained, and no longer than the attempt's deadline."""
    client, platform = hub
    slow = Trickler("body")
    try:
        location = subscribe(client, "Sip", slow.url)
        started = time.monotonic()
        write(client, "Sip", 1)
        wait_until(lambda: status(platform, location).times_sent or None, DEADLINE_S + 4.0, "the attempt to end")
        assert time.monotonic() - started < DEADLINE_S + 2.0
        state = status(platform, location)
        assert state.times_failed == 0 and state.last_success is not None, state
    finally:
        slow.close()


# -- a subscription that cannot notify has nothing to do until it changes ---------------------------------


@pytest.mark.parametrize("stopped", ["expired", "paused"])
def test_a_subscription_that_cannot_notify_waits_for_a_change_without_polling(
    hub: tuple[TestClient, Platform], monkeypatch: pytest.MonkeyPatch, stopped: str
) -> None:
    """Its worker (it holds a backlog) looked its subscription up again every second for as long as it stayed
    expired or paused, that is for ever; it now sleeps until the subscription changes, and a change that lets
    it notify again (a later expiresAt, isActive true) sends the backlog at once."""
    client, platform = hub
    receiver = Receiver()  # down: the notification stays queued
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    extra = {"expiresAt": utc_text(expires)} if stopped == "expired" else {}
    location = subscribe(client, "Lamp", receiver.url, **extra)
    write(client, "Lamp", 1)
    reason = failed(platform, location).last_failure_reason or ""
    assert "Errno" in reason, reason  # why it could not connect, not only that it could not
    if stopped == "paused":
        assert client.patch(location, json={"isActive": False}).status_code == 204
    else:
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()))
    assert client.get(location).json()["status"] == stopped
    time.sleep(0.5)  # a retry in flight meets the new state and settles
    dispatcher = platform.subscriptions.dispatcher
    lookups: list[float] = []
    looked_up = dispatcher.target

    def counted(key: tuple[str, str]) -> Target | None:
        lookups.append(time.monotonic())
        return looked_up(key)

    monkeypatch.setattr(dispatcher, "target", counted)
    time.sleep(3.0)
    assert len(lookups) <= 1, f"the worker woke {len(lookups)} times in 3 s with nothing to do"
    try:
        receiver.start()
        change = {"isActive": True} if stopped == "paused" else {
            "expiresAt": utc_text(datetime.now(UTC) + timedelta(hours=1))}
        assert client.patch(location, json=change).status_code == 204
        receiver.wait_for(1, timeout=3.0)
        assert receiver.values("count") == [1]
    finally:
        receiver.stop()
