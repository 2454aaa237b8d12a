"""Durable delivery against a real `polis serve`: a dead endpoint never delays a live one, pending
notifications survive a server restart and all arrive in order once their endpoint is back, MQTT
notifications go through a real Mosquitto, and the server-sent-events stream delivers what is pending."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import start_broker
from tests.conftest import Server, start_server, stop_server
from tests.integration.webhook import BlackHole, Receiver, free_port, wait_until

SUBS = "/ngsi-ld/v1/subscriptions"
ENTITIES = "/ngsi-ld/v1/entities"
FAST_RETRY = {"POLIS_NOTIFY_RETRY_INITIAL_S": "0.05", "POLIS_NOTIFY_RETRY_MAX_S": "0.3"}

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that need no restart (each uses its own entity type)."""
    server = start_server(tmp_path_factory.mktemp("subs") / "hub", env=FAST_RETRY)
    yield server
    stop_server(server.process)


def subscribe(server: Server, etype: str, uri: str, **extra: Any) -> str:
    body = {"type": "Subscription", "entities": [{"type": etype}],
            "notification": {"format": "keyValues", "endpoint": {"uri": uri, **extra.pop("endpoint", {})}}, **extra}
    r = httpx.post(server.url + SUBS, json=body, headers=server.headers)
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


def write(server: Server, etype: str, n: int) -> None:
    """Entity 1 of `etype` gets `n` as its count (created on the first call)."""
    eid = f"urn:ngsi-ld:{etype}:1"
    r = httpx.post(server.url + "/ngsi-ld/v1/entityOperations/upsert", headers=server.headers,
                   json=[{"id": eid, "type": etype, "count": {"type": "Property", "value": n}}])
    assert r.status_code in (201, 204), r.text


def status(server: Server, location: str) -> dict[str, Any]:
    return httpx.get(server.url + location, headers=server.headers).json()["notification"]  # type: ignore[no-any-return]


def test_a_dead_endpoint_never_delays_a_live_one(hub: Server) -> None:
    hole = BlackHole()  # accepts connections, never answers: every attempt waits for the timeout
    live = Receiver().start()
    try:
        dead_sub = subscribe(hub, "Meter", hole.url, endpoint={"timeout": 5000})
        subscribe(hub, "Meter", live.url)
        written = []
        for n in range(12):
            write(hub, "Meter", n)
            written.append(time.time())
        live.wait_for(12, timeout=15)
        assert live.values("count") == list(range(12))
        # each arrived long before one attempt on the dead endpoint could even time out (5 s)
        delays = [t - w for (t, _, _), w in zip(live.received, written, strict=True)]
        assert max(delays) < 2.0, delays
        dead = wait_until(lambda: s if (s := status(hub, dead_sub)).get("timesFailed") else None, 10, "a failure")
        assert dead["status"] == "failed" and "lastFailure" in dead and "lastSuccess" not in dead
    finally:
        live.stop()
        hole.close()


def test_pending_notifications_survive_a_restart_and_arrive_in_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    receiver = Receiver()  # its port refuses connections until start()
    server = start_server(data_dir, env=FAST_RETRY)
    try:
        location = subscribe(server, "Gauge", receiver.url)
        for n in range(15):
            write(server, "Gauge", n)
        wait_until(lambda: s if (s := status(server, location)).get("timesFailed", 0) >= 2 else None, 10, "failures")
        assert status(server, location)["status"] == "failed"
    finally:
        stop_server(server.process)  # with all 15 notifications undelivered

    server = start_server(data_dir, env=FAST_RETRY)
    try:
        receiver.start()  # the endpoint comes back
        receiver.wait_for(15, timeout=15)
        time.sleep(0.3)
        assert receiver.values("count") == list(range(15))  # every one, once, in order
        after = status(server, location)
        assert after["status"] == "ok" and after["timesSent"] == 15 + after["timesFailed"]
        assert after["lastSuccess"] > after["lastFailure"]
    finally:
        receiver.stop()
        stop_server(server.process)


def test_mqtt_notifications_through_mosquitto_in_order(hub: Server, tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "mosquitto")
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe("city/alerts", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda _c, _u, message: got.append(json.loads(message.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert ready.wait(10)
        location = subscribe(hub, "Siren", f"mqtt://127.0.0.1:{broker.port}/city/alerts")
        for n in range(10):
            write(hub, "Siren", n)
        wait_until(lambda: got if len(got) >= 10 else None, 10, "10 MQTT notifications")
        assert [m["body"]["data"][0]["count"] for m in got] == list(range(10))
        assert got[0]["metadata"]["Content-Type"] == "application/json"
        assert got[0]["body"]["type"] == "Notification" and got[0]["body"]["subscriptionId"] in location
        assert status(hub, location)["status"] == "ok"
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()


def test_mqtt_broker_outage_loses_nothing(hub: Server, tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "mosquitto")
    got: list[tuple[str, int]] = []
    ready = threading.Event()
    # A persistent session: the broker keeps what arrives for this subscriber while it reconnects.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="subs-outage-test", clean_session=False)
    client.on_connect = lambda c, *_: c.subscribe("city/outage", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda _c, _u, m: got.append(
        (json.loads(m.payload)["body"]["id"], json.loads(m.payload)["body"]["data"][0]["count"])
    )
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert ready.wait(10)
        location = subscribe(hub, "Horn", f"mqtt://127.0.0.1:{broker.port}/city/outage")
        write(hub, "Horn", 0)
        wait_until(lambda: got or None, 10, "the first MQTT notification")
        broker.stop()
        for n in range(1, 6):
            write(hub, "Horn", n)
        wait_until(lambda: s if (s := status(hub, location)).get("timesFailed") else None, 15, "a failure")
        broker.restart()
        wait_until(lambda: got if len(dict(got)) >= 6 else None, 20, "every MQTT notification after the outage")
        # At least once: a publish cut off by the outage may arrive twice, with the same notification id.
        assert list(dict(got).values()) == list(range(6))
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()


def test_server_sent_events_stream_delivers_pending_then_live(hub: Server) -> None:
    location = subscribe(hub, "Panel", "urn:polis:sse")
    write(hub, "Panel", 1)  # no stream open yet: it waits in the outbox
    events: list[dict[str, Any]] = []

    def listen() -> None:
        with httpx.stream("GET", hub.url + location + "/stream", headers=hub.headers, timeout=20) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == 2:
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    wait_until(lambda: events or None, 10, "the pending event")
    write(hub, "Panel", 2)
    thread.join(10)
    assert [e["data"][0]["count"] for e in events] == [1, 2]
    assert events[0]["type"] == "Notification"
    # a subscription delivering elsewhere has no stream
    other = subscribe(hub, "Panel", f"http://127.0.0.1:{free_port()}/x")
    r = httpx.get(hub.url + other + "/stream", headers=hub.headers)
    assert r.status_code == 400 and "urn:polis:sse" in r.json()["detail"]
