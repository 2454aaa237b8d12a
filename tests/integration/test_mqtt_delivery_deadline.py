"""An MQTT notification is held to one deadline in all: a broker that takes most of it to accept the connection
and then never acknowledges the message used to hold the delivery for twice the timeout (connecting and the
acknowledgement each had the whole of it)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.transports import DeliveryFailed, MqttPublisher

CONNACK = bytes([0x20, 0x02, 0x00, 0x00])  # MQTT 3.1.1: session not present, accepted


class _SlowBroker:
    """Accepts a connection after `connack_after_s`, then reads whatever comes and acknowledges nothing."""

    def __init__(self, connack_after_s: float) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self.port = int(self._sock.getsockname()[1])
        self._delay = connack_after_s
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(4096)  # CONNECT
            time.sleep(self._delay)
            conn.sendall(CONNACK)
            while conn.recv(4096):  # PUBLISH, PINGREQ: never a PUBACK
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()
        for conn in self._conns:
            conn.close()


def test_connecting_and_the_acknowledgement_share_one_deadline() -> None:
    broker = _SlowBroker(connack_after_s=1.2)
    publisher = MqttPublisher(EndpointPolicy.from_text("169.254.0.0/16", ""))
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryFailed, match="did not acknowledge"):
            publisher.send(f"mqtt://127.0.0.1:{broker.port}/alerts", b'{"id": "n1"}', {}, 1.5)
        took = time.monotonic() - started
        assert took < 2.1, f"a 1.5 s notification took {took:.1f} s"
    finally:
        publisher.close()
        broker.close()
