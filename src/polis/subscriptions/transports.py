"""How a notification reaches its endpoint: HTTP(S) webhook, MQTT publish, or a server-sent-events stream.

Each `send` returns when the endpoint has taken the notification (HTTP 2xx, MQTT PUBACK for QoS 1/2,
queued to at least one open stream) and raises `DeliveryFailed` with the reason otherwise; the delivery
worker then keeps it and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from polis.subscriptions.endpoints import EndpointPolicy, EndpointRefused, literal_address

STREAM_QUEUE_LIMIT = 1000  # events buffered per stream client; a client this far behind is disconnected


class DeliveryFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpSender:
    """One per delivery worker: its own keep-alive connection to its endpoint.

    The endpoint's host is resolved once per delivery and the request goes to an address that passed the
    policy (the URL's host replaced by it; Host header and TLS server name stay the host's), so the resolver
    cannot answer one address to the check and another to the connection (DNS rebinding)."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._client: httpx.Client | None = None
        self._host = ""  # the host the client's connections were opened for

    def send(self, uri: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
        try:
            url = httpx.URL(uri)
            host = url.raw_host.decode("ascii")
            addresses = self.policy.addresses(host, url.port or (443 if url.scheme == "https" else 80))
        except EndpointRefused as refused:
            raise DeliveryFailed(refused.reason) from None
        except (httpx.InvalidURL, ValueError) as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        if self._client is None or host != self._host:
            # a pooled connection is kept per address: one opened (and TLS-verified) for another host name
            # must not carry this host's notifications
            self.close()
            self._client = httpx.Client(follow_redirects=False)
            self._host = host
        extensions = {} if literal_address(host) is not None else {"sni_hostname": host}
        sent_headers = {**headers, "Host": url.netloc.decode("ascii")}
        response: httpx.Response | None = None
        for address in addresses:  # in the resolver's order, as a plain connect would try them
            try:
                response = self._client.post(
                    url.copy_with(host=str(address)),
                    content=body,
                    headers=sent_headers,
                    timeout=timeout_s,
                    extensions=extensions,
                )
                break
            except httpx.ConnectError as error:
                if address == addresses[-1]:
                    raise DeliveryFailed(f"ConnectError: {error}") from None
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
                # ValueError: a header httpx cannot encode (a subscription stored before its check): a failure
                # counted in timesFailed, not an exception that retries forever unseen.
                raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        assert response is not None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"HTTP {response.status_code} from the endpoint")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class MqttPublisher:
    """MQTT notifications (`mqtt://[user:password@]host:port/topic`, `mqtts://` with TLS): one paho client
    per broker, shared by the workers; paho reconnects by itself. The payload follows the NGSI-LD MQTT
    binding: `{"metadata": {the HTTP headers}, "body": the Notification}`."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._clients: dict[tuple[str, str, int, str, str], _Broker] = {}
        self._lock = threading.Lock()

    def send(self, uri: str, body: bytes, headers: dict[str, str], timeout_s: float, qos: int = 1) -> None:
        parts = urlsplit(uri)
        tls = parts.scheme.lower() == "mqtts"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (8883 if tls else 1883)
        try:  # checked at each delivery, and again by every (re)connection the client makes (_guarded_client)
            self.policy.addresses(host, port)
        except EndpointRefused as refused:
            raise DeliveryFailed(refused.reason) from None
        key = (parts.scheme.lower(), host, port, unquote(parts.username or ""), unquote(parts.password or ""))
        with self._lock:
            broker = self._clients.get(key)
            if broker is None:
                broker = self._clients[key] = _Broker.start(host, port, tls, key[3], key[4], self.policy)
        if not broker.connected.wait(timeout_s):
            raise DeliveryFailed(f"MQTT broker {host}:{port} is not reachable")
        payload = orjson.dumps({"metadata": headers, "body": orjson.loads(body)})
        try:
            info = broker.client.publish(unquote(parts.path.lstrip("/")), payload, qos=qos)
            if qos > 0:
                info.wait_for_publish(timeout_s)
            published = info.is_published() if qos > 0 else info.rc == 0
        except (RuntimeError, ValueError, OSError) as error:
            raise DeliveryFailed(f"MQTT publish failed: {error}") from None
        if not published:
            raise DeliveryFailed(f"MQTT broker {host}:{port} did not acknowledge the notification")

    def close(self) -> None:
        with self._lock:
            brokers, self._clients = list(self._clients.values()), {}
        for broker in brokers:
            broker.stop()


@dataclass
class _Broker:
    client: Any
    connected: threading.Event

    @classmethod
    def start(cls, host: str, port: int, tls: bool, username: str, password: str, policy: EndpointPolicy) -> _Broker:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = _guarded_client(policy)(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        connected = threading.Event()
        if username:
            client.username_pw_set(username, password or None)
        if tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not getattr(reason, "is_failure", False):
                connected.set()

        def on_disconnect(_c: Any, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
            connected.clear()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        return cls(client, connected)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.loop_stop()


def _guarded_client(policy: EndpointPolicy) -> type:
    """A paho client class whose every connection, the reconnections paho makes on its own included, goes to an
    address the endpoint policy was asked about just then: paho would otherwise resolve the broker's name
    again when it reconnects, and a name made to point into a denied network after the delivery's check
    (DNS rebinding) would be connected to. A refused or unresolvable name is a failed connection (OSError),
    which paho retries like a broker that is down. TLS still verifies the certificate against the name."""
    import paho.mqtt.client as mqtt

    class GuardedClient(mqtt.Client):  # type: ignore[misc]
        def _create_socket_connection(self) -> socket.socket:  # paho 2.x internal (pinned < 3 in pyproject)
            try:
                addresses = policy.addresses(self._host, self._port)
            except EndpointRefused as refused:
                raise ConnectionRefusedError(refused.reason) from None
            last: OSError | None = None
            for address in addresses:
                try:
                    return socket.create_connection((str(address), self._port), timeout=self._connect_timeout)
                except OSError as error:
                    last = error
            raise last or ConnectionRefusedError(f"no address for {self._host}")

    return GuardedClient


@dataclass(eq=False)
class StreamClient:
    """One open `GET /subscriptions/{id}/stream`: events go from delivery threads to its event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    backlog: int = 0
    closed: bool = False

    def push(self, event: bytes | None) -> bool:
        if self.closed:
            return False
        if event is not None and self.backlog >= STREAM_QUEUE_LIMIT:
            self.closed = True  # too slow: end its stream (it reconnects and gets what is still pending)
            event = None
        self.backlog += 1
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # its loop is gone
            self.closed = True
            return False
        return event is not None

    def taken(self) -> None:
        self.backlog -= 1


class StreamHub:
    """The open streams of `urn:polis:sse` subscriptions."""

    def __init__(self, on_open: Callable[[str, str], None]) -> None:
        self._clients: dict[tuple[str, str], list[StreamClient]] = {}
        self._lock = threading.Lock()
        self._on_open = on_open

    def open(self, tenant: str, sub_id: str, loop: asyncio.AbstractEventLoop) -> StreamClient:
        client = StreamClient(loop)
        with self._lock:
            self._clients.setdefault((tenant, sub_id), []).append(client)
        self._on_open(tenant, sub_id)  # pending notifications flow now, not at the next retry
        return client

    def close(self, tenant: str, sub_id: str, client: StreamClient) -> None:
        client.closed = True
        with self._lock:
            clients = self._clients.get((tenant, sub_id), [])
            if client in clients:
                clients.remove(client)
            if not clients:
                self._clients.pop((tenant, sub_id), None)

    def send(self, tenant: str, sub_id: str, body: bytes, event_id: str) -> None:
        event = b"id: " + event_id.encode() + b"\nevent: notification\ndata: " + body + b"\n\n"
        with self._lock:
            clients = list(self._clients.get((tenant, sub_id), ()))
        delivered = sum(1 for c in clients if c.push(event))
        if not delivered:
            raise DeliveryFailed("no stream client is connected")

    def close_all(self) -> None:
        with self._lock:
            clients = [c for group in self._clients.values() for c in group]
            self._clients.clear()
        for client in clients:
            client.push(None)
            client.closed = True
