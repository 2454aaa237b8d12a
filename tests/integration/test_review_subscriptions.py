"""Subscriptions as an attacker and an operator meet them, against a real `polis serve` (and, where the
internals are the point, an in-process hub): found in a review on 2026-11-29, each test failed before its fix.

- a subscription id deleted and created again by another department never receives the notifications owed to
  the old one (they were sent to the new owner's endpoint when a send was in flight at the deletion);
- a receiver answering with an endless body cannot grow the hub's memory (the whole body was read);
- a notification queued before a grant was revoked is not delivered after the revocation;
- `throttling` holds across a restart (the last send time lived only in the worker thread);
- a dead endpoint's backlog stays in the outbox, not all of it in memory (every item was kept in a deque);
- MQTT endpoints no longer used do not keep a client and its thread each for ever (one per endpoint ever used).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from polis.access.control import AccessControl
from polis.platform import Platform
from polis.settings import Settings
from polis.subscriptions import delivery, transports
from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.transports import DeliveryFailed, MqttPublisher
from tests.conftest import Server, free_port, start_server, stop_server
from tests.integration.webhook import BlackHole, RawAnswerer, Receiver, wait_until

pytestmark = pytest.mark.server

LD = "/ngsi-ld/v1"
CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
FAST_RETRY = {"POLIS_NOTIFY_RETRY_INITIAL_S": "0.05", "POLIS_NOTIFY_RETRY_MAX_S": "0.3"}
MEL = "melbourne-pedestrians"


def department(server: Server, name: str, *grants: tuple[str, str, str]) -> dict[str, str]:
    """A department with these grants and a key, made beside the running server as `polis admin` does."""
    control = AccessControl(Settings(data_dir=server.data_dir, **CHEAP))  # type: ignore[arg-type]
    try:
        control.create_department(name)
        for grant in grants:
            control.grant(name, *grant)
        key = control.create_key(name).secret_key
    finally:
        control.close()
    return {"Authorization": f"Bearer {key}"}


def revoke(server: Server, name: str, grant: tuple[str, str, str]) -> None:
    control = AccessControl(Settings(data_dir=server.data_dir, **CHEAP))  # type: ignore[arg-type]
    try:
        control.revoke_grant(name, *grant)
    finally:
        control.close()


def put(server: Server, entity_id: str, etype: str, n: int, headers: dict[str, str] | None = None) -> None:
    r = httpx.post(server.url + f"{LD}/entityOperations/upsert", headers=headers or server.headers,
                   json=[{"id": entity_id, "type": etype, "count": {"type": "Property", "value": n}}])
    assert r.status_code in (201, 204), r.text


def subscribe(server: Server, headers: dict[str, str], etype: str, uri: str, **extra: Any) -> str:
    endpoint = {"uri": uri, **extra.pop("endpoint", {})}
    body = {"type": "Subscription", "entities": [{"type": etype}],
            "notification": {"format": "keyValues", "endpoint": endpoint}, **extra}
    r = httpx.post(server.url + f"{LD}/subscriptions", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


def notified_ids(receiver: Receiver) -> list[str]:
    return [e["id"] for body in receiver.bodies() for e in body["data"]]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "hub", env=FAST_RETRY)
    try:
        yield server
    finally:
        stop_server(server.process)


def test_a_reused_subscription_id_never_gets_the_previous_owners_notifications(hub: Server) -> None:
    """Health's notification is being sent (to a silent endpoint) when health deletes its subscription and
    transport creates one with the same id: the send times out and the worker retried it for the new
    subscription, so transport's endpoint got an entity of a dataset transport may not read."""
    # ids outside a department's prefix are for departments that administer `subscriptions`; both do here
    health = department(hub, "health", (MEL, "aggregate", "read"), (MEL, "aggregate", "subscribe"),
                        ("subscriptions", "aggregate", "administer"))
    transport = department(hub, "transport", ("los-loop", "aggregate", "read"), ("los-loop", "aggregate", "subscribe"),
                           ("subscriptions", "aggregate", "administer"))
    hole, receiver = BlackHole(), Receiver().start()
    sid = "urn:ngsi-ld:Subscription:shared-name"
    try:
        subscribe(hub, health, "Counter", hole.url, id=sid, endpoint={"timeout": 3000})
        put(hub, f"urn:ngsi-ld:Counter:{MEL}:c1", "Counter", 1234)
        time.sleep(0.5)  # the worker is waiting on the silent endpoint now
        assert httpx.delete(hub.url + f"{LD}/subscriptions/{sid}", headers=health).status_code == 204
        subscribe(hub, transport, "Counter", receiver.url, id=sid)
        time.sleep(4.0)  # past the 3 s timeout of the send that was in flight, and its retry
        put(hub, "urn:ngsi-ld:Counter:los-loop:c1", "Counter", 1)  # transport's own: proves delivery works
        wait_until(lambda: "urn:ngsi-ld:Counter:los-loop:c1" in notified_ids(receiver) or None, 10, "transport's")
        time.sleep(0.3)
        assert notified_ids(receiver) == ["urn:ngsi-ld:Counter:los-loop:c1"]
    finally:
        receiver.stop()
        hole.close()


class EndlessBody(RawAnswerer):
    """A webhook that answers 200 and then streams a body that never ends (a hostile receiver)."""

    def __init__(self) -> None:
        self.sent = 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        chunk = b"x" * 65536
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
            while not self._stop.is_set():
                conn.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            pass  # the hub closed the connection: what it should do
        finally:
            conn.close()


def test_an_endless_response_body_does_not_grow_the_hubs_memory(hub: Server) -> None:
    endless = EndlessBody()
    try:
        location = subscribe(hub, hub.headers, "Tap", endless.url, endpoint={"timeout": 60000})
        before = hub.memory_mib()["VmRSS"]
        put(hub, "urn:ngsi-ld:Tap:1", "Tap", 1)
        time.sleep(4.0)
        grown = hub.memory_mib()["VmRSS"] - before
        assert grown < 100, f"the hub's memory grew by {grown} MiB reading a receiver's answer"
        assert endless.sent < 50 * 2**20, f"the hub read {endless.sent} bytes of the answer"
        status = httpx.get(hub.url + location, headers=hub.headers).json()["notification"]
        assert status["timesSent"] >= 1 and status["status"] == "ok", status  # a 200 is a 200, body unread
    finally:
        endless.close()


def test_a_notification_queued_before_a_revocation_is_not_sent_after_it(hub: Server) -> None:
    parks = department(hub, "parks", ("los-loop", "aggregate", "read"), ("los-loop", "aggregate", "subscribe"),
                       (MEL, "aggregate", "read"), (MEL, "aggregate", "subscribe"))
    receiver = Receiver()  # down: what is notified waits in the outbox
    try:
        location = subscribe(hub, parks, "Bench", receiver.url)
        put(hub, f"urn:ngsi-ld:Bench:{MEL}:b1", "Bench", 7)
        wait_until(lambda: httpx.get(hub.url + location, headers=parks).json()["notification"].get("timesFailed"),
                   10, "a failed attempt")
        revoke(hub, "parks", (MEL, "aggregate", "read"))  # the operator takes the dataset back
        time.sleep(1.0)  # an attempt that was past its check at the revocation has failed by now (endpoint down)
        receiver.start()
        put(hub, "urn:ngsi-ld:Bench:los-loop:b1", "Bench", 1)
        wait_until(lambda: "urn:ngsi-ld:Bench:los-loop:b1" in notified_ids(receiver) or None, 10, "los-loop")
        time.sleep(0.3)
        assert notified_ids(receiver) == ["urn:ngsi-ld:Bench:los-loop:b1"]
    finally:
        receiver.stop()


def test_throttling_holds_across_a_restart(tmp_path: Path) -> None:
    throttling = 15
    receiver = Receiver().start()
    server = start_server(tmp_path / "hub", env=FAST_RETRY)
    try:
        subscribe(server, server.headers, "Pump", receiver.url, throttling=throttling)
        put(server, "urn:ngsi-ld:Pump:1", "Pump", 0)
        receiver.wait_for(1)
        stop_server(server.process)
        server = start_server(tmp_path / "hub", env=FAST_RETRY)
        put(server, "urn:ngsi-ld:Pump:1", "Pump", 1)
        receiver.wait_for(2, timeout=throttling + 10)
        first, second = receiver.received[0][0], receiver.received[1][0]
        assert second - first >= throttling - 0.5, f"{second - first:.1f} s apart, throttling is {throttling} s"
    finally:
        receiver.stop()
        stop_server(server.process)


# -- the backlog of a dead endpoint (in-process: what is held in memory is the point) -------------------


def _queued(platform: Platform) -> int:
    """Notifications the delivery workers hold in memory, all subscriptions together."""
    dispatcher = platform.subscriptions.dispatcher
    with dispatcher.lock:
        return sum(len(worker.queue) for worker in dispatcher._workers.values())


def test_a_dead_endpoints_backlog_waits_in_the_outbox_not_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "MAX_QUEUED", 20)
    receiver = Receiver()  # down
    settings = Settings(data_dir=tmp_path, notify_retry_initial_s=0.05, notify_retry_max_s=0.2, **CHEAP)  # type: ignore[arg-type]
    platform = Platform(settings)
    terms = platform.contexts.core()
    try:
        body = {"type": "Subscription", "entities": [{"type": "Meter"}],
                "notification": {"format": "keyValues", "endpoint": {"uri": receiver.url}}}
        platform.subscriptions.create("", body, terms, None)
        platform.entities.create("", {"id": "urn:ngsi-ld:Meter:1", "type": "Meter",
                                      "count": {"type": "Property", "value": 0}}, terms)
        for n in range(1, 100):
            platform.entities.update_attrs("", "urn:ngsi-ld:Meter:1", {"count": {"type": "Property", "value": n}},
                                           terms)
        assert _queued(platform) <= 20, f"{_queued(platform)} notifications held in memory"
    finally:
        platform.close()
    platform = Platform(settings)  # a restart with the backlog in the outbox
    try:
        assert _queued(platform) <= 20, f"{_queued(platform)} notifications loaded into memory at the start"
        receiver.start()
        receiver.wait_for(100, timeout=30)
        time.sleep(0.3)
        assert receiver.values("count") == list(range(100))  # every one, once, in order
    finally:
        receiver.stop()
        platform.close()


def test_mqtt_clients_of_endpoints_no_longer_used_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A department PATCHing its MQTT endpoint (another user name each time) left one paho client, and its
    network thread reconnecting for ever, per endpoint it ever used; deleting the subscription closed none."""
    monkeypatch.setattr(transports, "MQTT_MAX_BROKERS", 5)
    publisher = MqttPublisher(EndpointPolicy.from_text(Settings().subscription_endpoint_deny))
    down = free_port()  # no broker: every client keeps trying to connect
    threads = threading.active_count()
    try:
        for n in range(20):
            with pytest.raises(DeliveryFailed):
                publisher.send(f"mqtt://user{n}:pw@127.0.0.1:{down}/city", b"{}", {}, 0.05)
        assert len(publisher) <= 5
        # the clients let go are closed in the background: their threads end within a reconnection delay
        wait_until(lambda: threading.active_count() - threads <= 5 or None, 10, "at most one thread per client kept")
        monkeypatch.setattr(transports, "MQTT_IDLE_S", 0.0)
        publisher.reap()  # what the delivery workers' acknowledger runs now and then
        assert not len(publisher)
        wait_until(lambda: threading.active_count() <= threads or None, 10, "every client's thread to end")
    finally:
        publisher.close()
