"""An MQTT notification's broker name is resolved within the notification's deadline, as a webhook's is: a
subscriber whose name server keeps the system resolver waiting used to hold its delivery for as long as the
resolver took, before the deadline (connecting, the broker's acknowledgement) even began. The same publisher
then delivers through a real Mosquitto, by name and by literal address."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import Broker
from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.transports import DeliveryFailed, MqttPublisher


@pytest.fixture
def slow_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """slow.example answers after 3 s, broker.example at once (both 127.0.0.1); other names as usual."""
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow.example":  # the stand-in for a name server that answers late
            time.sleep(3.0)
        if host in ("slow.example", "broker.example"):
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.fixture
def listener(broker: Broker) -> Iterator[list[bytes]]:
    """What a client subscribed to city/# on the real broker receives."""
    received: list[bytes] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, message: received.append(bytes(message.payload))
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe("city/#", qos=1)
    client.loop_start()
    assert subscribed.wait(5)
    yield received
    client.loop_stop()
    client.disconnect()


def test_a_slow_resolver_is_held_to_the_notifications_deadline(
    slow_resolver: None, broker: Broker, listener: list[bytes]
) -> None:
    publisher = MqttPublisher(EndpointPolicy.from_text("169.254.0.0/16", ""))
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryFailed, match=r"slow\.example was not resolved within 0\.5 s"):
            publisher.send(f"mqtt://slow.example:{broker.port}/city/slow", b'{"id": "n0"}', {}, 0.5)
        took = time.monotonic() - started
        assert took < 1.5, f"a 0.5 s notification took {took:.1f} s"
        # the next deliveries are not held either: by a name that resolves at once, and by a literal address
        publisher.send(f"mqtt://broker.example:{broker.port}/city/named", b'{"id": "n1"}', {}, 5.0)
        publisher.send(f"mqtt://127.0.0.1:{broker.port}/city/literal", b'{"id": "n2"}', {}, 5.0)
        deadline = time.monotonic() + 5
        while len(listener) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [b'"n1"' in p for p in listener] == [True, False] and b'"n2"' in listener[1], listener
    finally:
        publisher.close()
