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
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from polis.subscriptions.endpoints import EndpointPolicy, EndpointRefused, IPAddress, literal_address

STREAM_QUEUE_LIMIT = 1000  # events buffered per stream client; a client this far behind is disconnected
# What is read of a webhook's answer: its status decides, its body is only drained (so the connection can be
# kept) up to this much; a receiver answering with an endless body must not fill the hub's memory.
MAX_RESPONSE_BYTES = 64 * 1024
# A paho client (and its network thread, reconnecting for ever to a broker that is down) per MQTT endpoint in
# use, not per endpoint ever used: one left idle this long is closed, and past this many the least recently
# used goes, so that endpoints changed or abandoned (by a PATCH, a deletion) do not pile up threads.
MQTT_IDLE_S = 300.0
MQTT_MAX_BROKERS = 64


class DeliveryFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HttpSender:
    """One per delivery worker: its own keep-alive connection to its endpoint.

    The endpoint's host is resolved once per delivery and the request goes to an address that passed the
    policy (the URL's host replaced by it; Host header and TLS server name stay the host's), so the resolver
    cannot answer one address to the check and another to the connection (DNS rebinding).

    Each attempt, resolving included, ends by its deadline (`timeout_s` from its start). httpx's timeouts are
    per read, so a receiver answering a byte at a time would hold the subscription's delivery for as long as it
    liked; httpx bounds a whole request only by cancelling it, hence the asyncio client, run on an event loop
    of the worker's own (one thread, one request at a time, as before)."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._host = ""  # the host the client's connections were opened for

    def send(self, uri: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            url = httpx.URL(uri)
            host = url.raw_host.decode("ascii")
            port = url.port or (443 if url.scheme == "https" else 80)
        except (httpx.InvalidURL, ValueError) as error:
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        if self._client is None or host != self._host:
            # a pooled connection is kept per address: one opened (and TLS-verified) for another host name
            # must not carry this host's notifications
            self._close_client()
            self._client = httpx.AsyncClient(follow_redirects=False)
            self._host = host
        try:
            if literal_address(host) is not None:
                addresses = self.policy.addresses(host, port)  # no lookup: checked here, without the loop
            else:
                addresses = self._loop.run_until_complete(_resolve(self.policy, host, port, deadline))
        except EndpointRefused as refused:
            raise DeliveryFailed(refused.reason) from None
        except TimeoutError:
            raise DeliveryFailed(f"{host} was not resolved within {timeout_s:g} s") from None
        post = _post(self._client, url, host, addresses, body, headers, timeout_s, deadline)
        try:
            status = self._loop.run_until_complete(post)
        except TimeoutError:
            self._close_client()  # what a cancelled request leaves in the pool is not trusted with the next one
            raise DeliveryFailed(f"no answer from the endpoint within {timeout_s:g} s") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status} from the endpoint")

    def _close_client(self) -> None:
        if self._client is not None and self._loop is not None:
            with contextlib.suppress(Exception):  # closing what a failed request left must not fail a delivery
                self._loop.run_until_complete(self._client.aclose())
        self._client = None

    def close(self) -> None:
        self._close_client()
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self._loop = None


async def _resolve(policy: EndpointPolicy, host: str, port: int, deadline: float) -> list[IPAddress]:
    """The host's addresses, each checked (`EndpointPolicy.addresses`), by `deadline`. The system resolver
    blocks and cannot be cancelled, so it runs in the loop's executor: a resolver the endpoint's owner keeps
    waiting (its own name server) holds one executor thread until it gives up, not the delivery."""
    async with asyncio.timeout_at(deadline):
        return await asyncio.get_running_loop().run_in_executor(None, policy.addresses, host, port)


async def _post(
    client: httpx.AsyncClient,
    url: httpx.URL,
    host: str,
    addresses: list[IPAddress],
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    deadline: float,
) -> int:
    """POST to `url` at the first of `addresses` (checked for `host`) that connects and return the status;
    TimeoutError when the answer's status line and headers have not all come by `deadline` (time.monotonic(),
    which is asyncio's clock too)."""
    extensions = {} if literal_address(host) is not None else {"sni_hostname": host}
    sent_headers = {**headers, "Host": url.netloc.decode("ascii")}
    async with asyncio.timeout_at(deadline):
        for address in addresses:  # in the resolver's order, as a plain connect would try them
            try:
                request = client.build_request(
                    "POST",
                    url.copy_with(host=str(address)),
                    content=body,
                    headers=sent_headers,
                    timeout=timeout_s,
                    extensions=extensions,
                )
                response = await client.send(request, stream=True)  # the body is not read into memory
                break
            except httpx.ConnectError as error:
                if address == addresses[-1]:
                    raise DeliveryFailed(f"ConnectError: {_first_cause(error)}") from None
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as error:
                # ValueError: a header httpx cannot encode (a subscription stored before its check): a failure
                # counted in timesFailed, not an exception that retries forever unseen.
                raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
    try:
        await _drain(response, deadline)
    finally:
        await response.aclose()  # a body left unread closes the connection instead of keeping it
    return response.status_code


def _first_cause(error: BaseException) -> BaseException:
    """What started a chain of exceptions: anyio's connect says "All connection attempts failed" and chains the
    OSError that says why (refused, unreachable), which is what an operator reading the failure needs."""
    chain = [error]
    while (earlier := chain[-1].__cause__ or chain[-1].__context__) is not None and earlier not in chain:
        chain.append(earlier)
    return chain[-1]


async def _drain(response: httpx.Response, deadline: float) -> None:
    """Read (and forget) an answer's body, at most MAX_RESPONSE_BYTES and until `deadline`: a short body read
    to its end lets the connection be kept; a longer, endless or trickled one is cut off (the status is what
    counts). A body that fails half way does not change the status the endpoint answered."""
    read = 0
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout_at(deadline):
            # closed here, not left to the garbage collector to schedule on a loop that may not run again
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())  # typed as an AsyncIterator
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        return


class MqttPublisher:
    """MQTT notifications (`mqtt://[user:password@]host:port/topic`, `mqtts://` with TLS): one paho client
    per broker, shared by the workers; paho reconnects by itself. The payload follows the NGSI-LD MQTT
    binding: `{"metadata": {the HTTP headers}, "body": the Notification}`."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._clients: dict[tuple[str, str, int, str, str], _Broker] = {}  # least recently used first
        self._lock = threading.Lock()

    def send(self, uri: str, body: bytes, headers: dict[str, str], timeout_s: float, qos: int = 1) -> None:
        """Publish within `timeout_s` in all (resolving the broker's name, connecting and the broker's
        acknowledgement share it)."""
        deadline = time.monotonic() + timeout_s
        parts = urlsplit(uri)
        tls = parts.scheme.lower() == "mqtts"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (8883 if tls else 1883)
        try:  # checked at each delivery, and again by every (re)connection the client makes (_guarded_client)
            if literal_address(host) is not None:
                self.policy.addresses(host, port)  # no lookup: checked here, on no thread of its own
            else:
                _resolve_by(self.policy, host, port, deadline)
        except EndpointRefused as refused:
            raise DeliveryFailed(refused.reason) from None
        except TimeoutError:
            raise DeliveryFailed(f"{host} was not resolved within {timeout_s:g} s") from None
        key = (parts.scheme.lower(), host, port, unquote(parts.username or ""), unquote(parts.password or ""))
        with self._lock:
            broker = self._clients.pop(key, None)
            retired = self._retired_locked(room_for_one=broker is None)
            if broker is None:
                broker = _Broker.start(host, port, tls, key[3], key[4], self.policy)
            broker.last_used = time.monotonic()
            self._clients[key] = broker  # now the most recently used
        _stop_later(retired)
        if not broker.connected.wait(max(0.0, deadline - time.monotonic())):
            raise DeliveryFailed(f"MQTT broker {host}:{port} is not reachable")
        payload = orjson.dumps({"metadata": headers, "body": orjson.loads(body)})
        try:
            info = broker.client.publish(unquote(parts.path.lstrip("/")), payload, qos=qos)
            if qos > 0:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            published = info.is_published() if qos > 0 else info.rc == 0
        except (RuntimeError, ValueError, OSError) as error:
            raise DeliveryFailed(f"MQTT publish failed: {error}") from None
        if not published:
            raise DeliveryFailed(f"MQTT broker {host}:{port} did not acknowledge the notification")

    def reap(self) -> None:
        """Close the clients idle past MQTT_IDLE_S (the delivery workers' acknowledger calls this now and then)."""
        with self._lock:
            retired = self._retired_locked(room_for_one=False)
        _stop_later(retired)

    def _retired_locked(self, *, room_for_one: bool) -> list[_Broker]:
        """Take out the idle clients, and the least recently used beyond the limit (self._lock held)."""
        deadline = time.monotonic() - MQTT_IDLE_S
        retired = [k for k, b in self._clients.items() if b.last_used < deadline]
        keep = len(self._clients) - len(retired)
        excess = keep + (1 if room_for_one else 0) - MQTT_MAX_BROKERS
        if excess > 0:
            retired += [k for k in self._clients if k not in retired][:excess]
        return [self._clients.pop(k) for k in retired]

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        with self._lock:
            brokers, self._clients = list(self._clients.values()), {}
        for broker in brokers:
            broker.stop()


def _resolve_by(policy: EndpointPolicy, host: str, port: int, deadline: float) -> list[IPAddress]:
    """The host's addresses, each checked (`EndpointPolicy.addresses`), by `deadline` (time.monotonic());
    TimeoutError after it. The system resolver blocks and cannot be cancelled, so it runs on a daemon thread of
    its own that a name server the endpoint's owner keeps waiting holds until the resolver gives up, not the
    delivery. A thread per lookup rather than a pool: a few hung lookups cannot make the other subscriptions'
    lookups queue behind them, and a hung one does not hold up the hub's exit (a pool's threads are joined)."""
    found: Future[list[IPAddress]] = Future()

    def lookup() -> None:
        try:
            found.set_result(policy.addresses(host, port))
        except BaseException as error:  # EndpointRefused, or a bug: raised in the delivery, not lost here
            found.set_exception(error)

    threading.Thread(target=lookup, name="polis-mqtt-resolve", daemon=True).start()
    return found.result(max(0.0, deadline - time.monotonic()))  # TimeoutError (the builtin, since 3.11)


def _stop_later(brokers: list[_Broker]) -> None:
    """Stop clients on a thread of their own: paho's loop thread can take a second to notice (it sleeps between
    reconnection attempts), which a delivery or the acknowledger must not wait for."""
    def stop_all() -> None:
        for broker in brokers:
            broker.stop()

    if brokers:
        threading.Thread(target=stop_all, name="polis-mqtt-close", daemon=True).start()


@dataclass
class _Broker:
    client: Any
    connected: threading.Event
    last_used: float = 0.0  # time.monotonic() of the last send through it

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
