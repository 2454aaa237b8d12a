"""MQTT ingest: sensor messages from a broker into the hub, with nothing acknowledged ever lost.

The delivery contract, end to end:
1. a sensor publishes with QoS 1; the broker PUBACKs it once the message is queued for Polis's
   persistent session (client id `polis-ingest`, MQTT 3.1.1 with clean_session=False by default, or
   MQTT 5 with clean_start=False and a session expiry), so from then on the broker holds it for Polis,
   connected or not;
2. the ingestor takes messages with manual acknowledgement: a message is acknowledged to the broker
   only after the store transaction holding its readings has committed. Until then the broker keeps it
   and redelivers it after any crash or reconnect;
3. that transaction also records the message's receipt (source "mqtt", key = a hash of topic and
   payload), so a redelivered message is recognised (`store.seen`) and acknowledged without being
   stored again. Two messages with the same topic and payload are the same reading (every reading
   carries its observedAt), so this is exactly once for history;
3b. a reading is also the same reading when history already holds its (entity, attribute, datasetId,
   observedAt) with the same value (`reading_value`), however it came in: `polis ingest` of the dataset,
   or another message in another form (key-values, normalized, a gateway batch, twice in one group). It is
   skipped and counted (`duplicate_readings`; a message with nothing else is a duplicate, acknowledged and
   not written). Another value at that instant is a correction: stored beside the one held, as NGSI-LD
   keeps several instances of one instant (each its instanceId), and current if not older than the
   current value (a tie goes to the later message). `polis ingest` applies the same rule
   (`Store.bulk_history`); writes through the NGSI-LD API are not subject to it. Cost: the store knows
   each entity's newest instant in memory (`newest_history`), so a stream of readings newer than anything
   held is never looked up; only readings at or before it (replays, late or repeated readings) are, in one
   query per tenant and group;
4. a message that cannot be stored becomes a dead letter with the reason and is acknowledged too: a
   bad message never blocks the stream. (Dead letters are written just before the receipts that mark
   their messages done, in a separate transaction: a crash between the two can repeat a dead letter,
   never lose one; readings are never repeated.)

Throughput: messages are grouped (up to `batch_max`, waiting at most `batch_wait_s` after the oldest
arrived) into one store write per tenant per group: the entities' new state, every reading into history
and every receipt, in one transaction; then every message of the group is acknowledged in one write.
Rewriting an entity costs the same for one reading as for fifty, so under load the groups grow (the
worker takes everything queued) and the per-message cost falls.

Flow control: the in-process queue holds at most `max_pending` messages; when it is full the network
thread blocks, so nothing more is read from the socket and the broker keeps the rest. How many
unacknowledged messages the broker sends ahead is its window: `max_inflight_messages` in its config for
MQTT 3.1.1 (polis.ingest.broker sets 20,000; Mosquitto's default of 20 would cap ingest at 20 messages
per commit), or our Receive Maximum (= `max_pending`) with `protocol="5"`. MQTT 3.1.1 is the default
because paho decodes MQTT 5 properties on every message, which costs about 40 % of the network thread.
Beyond the window messages wait in the broker's per-client queue (bounded by `max_queued_messages`).
The lag (the age of the oldest message not yet committed) and the broker's backlog and drop counters
(from `$SYS`) are in `metrics()`.

Acknowledgements are tied to the connection they came from: a packet id is only meaningful on its own
connection, and a late PUBACK sent on a new connection could acknowledge a different message that
reused the id. Messages of an older connection are therefore never acknowledged; the broker redelivers
them on the new one and the receipts recognise them.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from polis.access.datasets import dataset_of
from polis.domain.entity import Entity, HistoryInstance, Instance
from polis.ingest.messages import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS,
    TOPIC_ROOT,
    TRANSPORTATION_CONTEXT_URL,
    MessageParser,
    MessageRejected,
    Reading,
    load_value_types,
    transportation_type_terms,
)
from polis.ngsi_ld.entities import parse_observed_at, utc_now
from polis.ngsi_ld.events import EntityChange, Staged
from polis.privacy.refusal import is_person_type, kept_payload, kept_reason, redacted
from polis.store.base import DeadLetter, HistoryColumns, reading_value

if TYPE_CHECKING:
    from polis.platform import Platform

SOURCE = "mqtt"
DATE_OBSERVED = "https://smartdatamodels.org/dateObserved"
SYS_TOPICS = {
    "$SYS/broker/publish/messages/dropped": "broker_dropped",
    "$SYS/broker/store/messages/count": "_broker_stored",
    "$SYS/broker/retained messages/count": "_broker_retained",
}
DEFAULT_PORT = 1883
_PUBACK = struct.Struct("!BBH")  # fixed header (PUBACK, remaining length 2) and the packet id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReceivedMessage:
    """One delivery from the broker, as the worker sees it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection it came on (acks go back only on that one)
    received_at: float  # time.time()
    key: str = ""


@dataclass(slots=True)
class _Counters:
    received: int = 0
    committed: int = 0
    readings: int = 0
    duplicates: int = 0
    duplicate_readings: int = 0
    dead_lettered: int = 0
    acked: int = 0
    not_acked_stale: int = 0
    store_errors: int = 0
    groups: int = 0
    connects: int = 0
    last_group_size: int = 0
    last_commit_ms: float | None = None
    last_latency_ms: float | None = None
    broker_dropped: int | None = None
    _broker_stored: int | None = None
    _broker_retained: int | None = None


@dataclass(slots=True)
class _HeldCounts:
    """What a group's readings already in history came to (`MqttIngestor._drop_held`)."""

    messages: int = 0  # every reading held: a duplicate, acknowledged, nothing written
    readings: int = 0  # readings held with the same value, skipped


# One plain reading's value: (entity id, attribute IRI, observedAt text, value, which merge of its entity).
_PlainRow = tuple[str, str, str, float, int]


@dataclass(slots=True)
class _Plan:
    """One tenant's share of a group: the entities' new state, their history, the receipts."""

    tenant: str
    entities: dict[str, Entity] = field(default_factory=dict)
    previous: dict[str, Entity | None] = field(default_factory=dict)
    history: list[HistoryInstance] = field(default_factory=list)
    receipts: list[tuple[str, str]] = field(default_factory=list)
    date_observed: dict[str, str] = field(default_factory=dict)  # entity id -> newest dateObserved sent
    instants: dict[str, datetime] = field(default_factory=dict)  # observedAt text -> parsed, per group
    messages: int = 0
    # Plain readings (one numeric Property per attribute, see Reading.plain) go to history as columns, and
    # only the newest value of each attribute is merged into its entity: a gateway group of 100 messages of
    # 207 readings then merges 207 times, not 20,700.
    plain: list[_PlainRow] = field(default_factory=list)
    pending: dict[str, dict[str, Instance]] = field(default_factory=dict)  # entity id -> attr -> newest
    pending_types: dict[str, str] = field(default_factory=dict)  # entity id -> type of its plain readings
    merges: dict[str, int] = field(default_factory=dict)  # entity id -> merges of pending values so far
    units: dict[tuple[str, str, int], str | None] = field(default_factory=dict)  # (entity, attr, merge) -> unit



class BufferedClient(mqtt.Client):
    """paho's Client reading the socket in 64 KiB chunks and handling every packet that arrived per wake-up.

    Stock paho (2.x) reads each packet's header one byte per recv() call and, for a client that only
    receives, handles one packet per select() round; at 10,000 messages/s that is a large share of the
    ingest process's CPU. Only the read path changes: `_sock_recv` serves reads from a buffer refilled by
    one large recv(), and `loop_read` keeps handling packets until the socket is drained (the buffer is
    then empty too, so select() never sleeps on buffered data), then pauses `read_pause_s` so that the
    next wake-up finds several messages rather than one (messages wait for a group anyway). The drain
    loop cannot run away: the broker's window bounds what arrives, and a full queue blocks on_message.
    `ack_many` queues many PUBACKs as one write. The hooks used exist throughout paho-mqtt 2.x.
    """

    read_pause_s: float = 0.001
    _read_buffer: bytes = b""
    _read_pos: int = 0
    _read_sock: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_sock is not self._sock:  # a new connection: nothing buffered belongs to it
            self._read_buffer, self._read_pos, self._read_sock = b"", 0, self._sock
        if self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(1 << 16)  # raises BlockingIOError when the socket is empty
            if not data:
                return data  # the broker closed the connection
            self._read_buffer, self._read_pos = data, 0
        start = self._read_pos
        chunk = self._read_buffer[start : start + bufsize]
        self._read_pos = start + len(chunk)
        return chunk

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK each of these QoS 1 packet ids: queued as one write, where `ack()` costs two system
        calls per message (a wake-up of the network thread and a send)."""
        if mids:
            packet = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
            self._packet_queue(0x40, packet, 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        handled = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                if handled and self.read_pause_s:
                    time.sleep(self.read_pause_s)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            handled += 1


def message_key(topic: str, payload: bytes) -> str:
    """The receipt key of a message: the same topic and payload are the same reading."""
    digest = hashlib.blake2b(topic.encode("utf-8", "surrogateescape"), digest_size=16)
    digest.update(b"\x00")
    digest.update(payload)
    return digest.hexdigest()


def parse_url(url: str) -> tuple[str, int]:
    """mqtt://host[:port] -> (host, port)."""
    parts = urlparse(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"MQTT broker URL must look like mqtt://127.0.0.1:1883, got {url!r}")
    return parts.hostname, parts.port or DEFAULT_PORT


def parser_for(
    platform: Platform,
    *,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    max_readings: int = MAX_READINGS,
    extra_types: Sequence[str] = (),
) -> MessageParser:
    """The parser the hub uses: the Transportation @context through the platform's context cache, its
    entity types, and the value types of the shipped Smart Data Models schemas."""
    from polis.ingest.datasets import TRANSPORTATION_CONTEXT

    datasets_dir = platform.settings.datasets_dir
    terms = platform.contexts.resolve(TRANSPORTATION_CONTEXT_URL)
    types = [*transportation_type_terms(datasets_dir / TRANSPORTATION_CONTEXT), *extra_types]
    value_types = load_value_types(datasets_dir / "smart-data-models", terms)
    return MessageParser(
        terms, types, value_types=value_types, max_payload_bytes=max_payload_bytes, max_readings=max_readings
    )


def _kept_topic(topic: str) -> str:
    """What a dead letter keeps of its topic (`redacted`), less the id after a person's type
    (`polis/<tenant>/Person/<id>`): whatever the id looks like, it is that person's, refused with the message."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == TOPIC_ROOT and is_person_type(parts[2]):
        parts[3] = "[withheld by privacy rule 'person-record']"
    return redacted("/".join(parts))


def _earlier(a: Any, b: Any) -> bool:
    """Whether timestamp `a` is strictly before `b` (False when either is missing or unreadable)."""
    if isinstance(a, str) and isinstance(b, str) and len(a) == len(b) and a[-1:] == b[-1:] == "Z":
        return a < b  # the codec's normalized form: same length, same layout, so text order is time order
    first, second = _instant(a), _instant(b)
    return first is not None and second is not None and first < second


def _instant(text: Any) -> datetime | None:
    """A stored UTC timestamp ('...Z') as an aware datetime; None when absent or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


PRUNE_EVERY_GROUPS = 1000


class MqttIngestor:
    def __init__(
        self,
        platform: Platform,
        url: str,
        *,
        client_id: str = "polis-ingest",
        topic: str = "polis/#",
        batch_max: int = 10_000,
        batch_wait_s: float = 0.05,
        batch_bytes_max: int = 2 << 20,
        max_pending: int = 20_000,
        session_expiry_s: int = 7 * 24 * 3600,
        protocol: str = "3.1.1",
        parser: MessageParser | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_readings: int = MAX_READINGS,
        on_commit: Callable[[Sequence[ReceivedMessage], float], None] | None = None,
    ) -> None:
        """`on_commit(messages, committed_at)` runs after each group is committed (benchmarks, tests)."""
        self.platform = platform
        self.store = platform.store
        self.host, self.port = parse_url(url)
        self.url = url
        self.client_id = client_id
        self.topic = topic
        self.batch_max = max(1, batch_max)
        self.batch_wait_s = batch_wait_s
        self.batch_bytes_max = batch_bytes_max  # gateway messages carry many readings: bound a group's size
        self.max_pending = max(self.batch_max, min(max_pending, 65_535))  # Receive Maximum is 16 bits
        self.session_expiry_s = session_expiry_s
        if protocol not in ("3.1.1", "5"):
            raise ValueError(f"MQTT protocol must be '3.1.1' or '5', got {protocol!r}")
        self.protocol = protocol
        self.parser = parser or parser_for(platform, max_payload_bytes=max_payload_bytes, max_readings=max_readings)
        self.on_commit = on_commit
        self._queue: deque[ReceivedMessage] = deque()
        self._cond = threading.Condition()
        self._conn_lock = threading.Lock()
        self._connection = 0
        self._connected = False
        self._connected_event = threading.Event()
        self._draining = False
        self._in_group: list[ReceivedMessage] = []
        self._worker: threading.Thread | None = None
        self._client: BufferedClient | None = None
        self._n = _Counters()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, wait_s: float | None = None) -> None:
        """Connect (in the background, retrying while the broker is down) and start ingesting.
        With `wait_s`, wait that long for the first connection and subscription, else raise TimeoutError."""
        if self._client is not None:
            raise RuntimeError("this ingestor is already started")
        if self.protocol == "5":
            client = BufferedClient(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
        else:
            client = BufferedClient(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                manual_ack=True,
                clean_session=False,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(1, 5)
        client.suppress_exceptions = True  # an exception in a callback must not end the network thread
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry_s
            props.ReceiveMaximum = self.max_pending
            client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        else:
            client.connect_async(self.host, self.port, keepalive=30)
        self._client = client
        self._worker = threading.Thread(target=self._work, name="polis-mqtt-ingest", daemon=True)
        self._worker.start()
        client.loop_start()
        if wait_s is not None and not self._connected_event.wait(wait_s):
            self.stop()
            raise TimeoutError(f"could not connect to the MQTT broker at {self.url} within {wait_s} s")

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed (the broker keeps messages for us from then on)."""
        return self._connected_event.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Commit and acknowledge what was received, then disconnect (the session stays on the broker)."""
        client, worker = self._client, self._worker
        if client is None:
            return
        with self._cond:
            self._draining = True
            self._cond.notify_all()
        if worker is not None:
            worker.join(timeout)
        client.disconnect()
        client.loop_stop()
        self._client = None
        self._worker = None

    def __enter__(self) -> MqttIngestor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- metrics ---------------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        n = self._n
        with self._cond:  # the worker moves messages from the queue to its group under this lock
            pending = len(self._queue)
            oldest = self._queue[0].received_at if self._queue else None
            group = self._in_group
        if group:
            oldest = group[0].received_at if oldest is None else min(oldest, group[0].received_at)
        backlog = None
        if n._broker_stored is not None:
            backlog = max(0, n._broker_stored - (n._broker_retained or 0))
        return {
            "url": self.url,
            "connected": self._connected,
            "connects": n.connects,
            "received": n.received,
            "committed": n.committed,
            "readings": n.readings,
            "duplicates": n.duplicates,
            "duplicate_readings": n.duplicate_readings,
            "dead_lettered": n.dead_lettered,
            "acked": n.acked,
            "left_for_redelivery": n.not_acked_stale,
            "pending": pending,
            "in_flight": pending + len(group),
            "max_pending": self.max_pending,
            "lag_s": round(time.time() - oldest, 3) if oldest is not None else 0.0,
            "groups": n.groups,
            "last_group_size": n.last_group_size,
            "last_commit_ms": n.last_commit_ms,
            "last_latency_ms": n.last_latency_ms,
            "store_errors": n.store_errors,
            "broker_backlog": backlog,
            "broker_dropped": n.broker_dropped,
        }

    # -- network thread (paho callbacks) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.url, reason)
            return
        with self._conn_lock:
            self._connection += 1
            self._connected = True
        self._n.connects += 1
        # The subscription lives in the persistent session; subscribing again is harmless and covers a
        # broker that lost its state.
        if self.protocol == "5":
            options = [(t, SubscribeOptions(qos=0)) for t in SYS_TOPICS]
            client.subscribe([(self.topic, SubscribeOptions(qos=1)), *options])
        else:
            client.subscribe([(self.topic, 1), *((t, 0) for t in SYS_TOPICS)])
        log.info("MQTT ingest connected to %s (session present: %s)", self.url, flags.session_present)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any) -> None:
        # Only from here on does the broker keep messages for us: a message published before the first
        # subscription reached the broker had no subscriber (MQTT semantics), so "ready" waits for this.
        if reasons and reasons[0].is_failure:
            log.error("the MQTT broker %s refused the subscription to %s: %s", self.url, self.topic, reasons[0])
            return
        self._connected_event.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._conn_lock:
            self._connection += 1  # nothing received before this may be acknowledged any more
            self._connected = False
        if not self._draining:
            log.warning("MQTT ingest lost the broker at %s (%s); reconnecting", self.url, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers refuse such topics; if one slips through, it is a dead letter
            topic = "(topic is not UTF-8)"
        if topic.startswith("$SYS/"):
            self._sys(topic, bytes(msg.payload))
            return
        item = ReceivedMessage(topic, bytes(msg.payload), msg.mid, msg.qos, self._connection, time.time())
        with self._cond:
            # Full: block the network thread, so nothing more is read from the socket until the worker
            # catches up; the broker keeps the rest.
            while len(self._queue) >= self.max_pending and not self._draining:
                self._cond.wait(0.5)
            if self._draining:
                return  # not acknowledged: the broker redelivers it to the next session
            self._queue.append(item)
            self._n.received += 1
            if len(self._queue) == 1 or len(self._queue) >= self.batch_max:
                self._cond.notify_all()

    def _sys(self, topic: str, payload: bytes) -> None:
        name = SYS_TOPICS.get(topic)
        if name is not None:
            try:
                setattr(self._n, name, int(payload))
            except ValueError:
                pass

    # -- worker thread ---------------------------------------------------------------------------

    def _take(self) -> list[ReceivedMessage]:
        """The next group: up to batch_max messages (and about batch_bytes_max of payload), waiting at most
        batch_wait_s after the oldest arrived."""
        with self._cond:
            while not self._queue:
                if self._draining:
                    return []
                self._cond.wait(0.5)
            deadline = self._queue[0].received_at + self.batch_wait_s
            while len(self._queue) < self.batch_max and not self._draining:
                left = deadline - time.time()
                if left <= 0:
                    break
                self._cond.wait(left)
            group: list[ReceivedMessage] = []
            size = 0
            while self._queue and len(group) < self.batch_max and (not group or size < self.batch_bytes_max):
                message = self._queue.popleft()
                group.append(message)
                size += len(message.payload)
            self._in_group = group
            self._cond.notify_all()  # room again for a blocked network thread
            return group

    def _work(self) -> None:
        while True:
            group = self._take()
            if not group:
                return
            delay = 0.1
            while True:
                try:
                    self._handle(group)
                    break
                except Exception:
                    # The store itself failed (disk full, closed...): nothing was acknowledged, so retrying
                    # is safe; when stopping, the broker redelivers to the next session instead.
                    self._n.store_errors += 1
                    log.exception("MQTT ingest could not commit a group of %d messages; retrying", len(group))
                    if self._draining:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._in_group = []

    def _handle(self, group: list[ReceivedMessage]) -> None:
        now = utc_now()
        firsts: dict[str, ReceivedMessage] = {}
        for message in group:
            if not message.key:
                message.key = message_key(message.topic, message.payload)
            firsts.setdefault(message.key, message)
        seen = self.store.seen(SOURCE, list(firsts))
        parsed, rejected = self._parse([m for k, m in firsts.items() if k not in seen], now)
        try:
            self._commit(parsed, rejected, now)
        except Exception as error:
            # One message the store cannot take must not hold back the others: one at a time (skipping
            # what the failed attempt did commit), and a message whose own write fails is a dead letter.
            # If the store is down altogether the dead letters fail too, and the group is retried whole.
            log.warning("group write failed (%s); retrying message by message", error)
            self._n.store_errors += 1
            done = self.store.seen(SOURCE, [m.key for m, _ in [*parsed, *rejected]])
            self._commit([], [r for r in rejected if r[0].key not in done], now)
            for item in parsed:
                if item[0].key in done:
                    continue
                try:
                    self._commit([item], [], now)
                except Exception as single:
                    self._commit([], [(item[0], f"the store rejected the write: {single}")], now)
        n = self._n
        n.duplicates += len(group) - len(firsts) + len(seen)
        n.groups += 1
        if n.groups % PRUNE_EVERY_GROUPS == 0:
            # A broker redelivers only within the session: receipts older than the session can go.
            self.store.prune_receipts(SOURCE, datetime.now(UTC) - timedelta(seconds=self.session_expiry_s))
        n.last_group_size = len(group)
        committed_at = time.time()
        n.last_latency_ms = round((committed_at - group[0].received_at) * 1000, 3)
        if self.on_commit is not None:
            self.on_commit(group, committed_at)
        self._in_group = []  # about to be acknowledged: the broker may send as many again
        self._ack(group)

    def _parse(
        self, messages: list[ReceivedMessage], now: str
    ) -> tuple[list[tuple[ReceivedMessage, list[Reading]]], list[tuple[ReceivedMessage, str]]]:
        parsed: list[tuple[ReceivedMessage, list[Reading]]] = []
        rejected: list[tuple[ReceivedMessage, str]] = []
        for message in messages:
            try:
                parsed.append((message, self.parser.parse(message.topic, message.payload, now)))
            except MessageRejected as why:
                rejected.append((message, why.reason))
        return self._writable(parsed, rejected)

    def _writable(
        self, parsed: list[tuple[ReceivedMessage, list[Reading]]], rejected: list[tuple[ReceivedMessage, str]]
    ) -> tuple[list[tuple[ReceivedMessage, list[Reading]]], list[tuple[ReceivedMessage, str]]]:
        """Ingest writes as the `sensors` department (polis.access): a message touching a dataset it may not
        write is a dead letter, whole. One audited decision per dataset per group."""
        of = _dataset_memo
        datasets = {m.key: {of(r.entity_id) for r in readings} for m, readings in parsed}
        allowed = self.platform.access.sensor_writable(set().union(*datasets.values()), f"MQTT {self.topic}")
        kept = []
        for message, readings in parsed:
            refused = sorted(datasets[message.key] - allowed)
            if refused:
                rejected.append((message, f"the sensors department may not write dataset '{refused[0]}'"))
            else:
                kept.append((message, readings))
        return kept, rejected

    def _commit(
        self, parsed: list[tuple[ReceivedMessage, list[Reading]]], rejected: list[tuple[ReceivedMessage, str]], now: str
    ) -> None:
        """Write one group: dead letters first, then per tenant the entities, history and receipts in one
        transaction, each followed by its change events. Under the hub's write lock, like every writer."""
        with self.platform.entities.write_lock:
            self._commit_locked(parsed, rejected, now)

    def _commit_locked(
        self, parsed: list[tuple[ReceivedMessage, list[Reading]]], rejected: list[tuple[ReceivedMessage, str]], now: str
    ) -> None:
        plans: dict[str, _Plan] = {}
        rejected = list(rejected)
        parsed, held = self._drop_held(parsed)
        for _, readings in parsed:
            tenant = readings[0].tenant
            if tenant not in plans:
                plans[tenant] = _Plan(tenant)
        for plan in plans.values():
            self._load(plan, [r.entity_id for _, readings in parsed for r in readings if r.tenant == plan.tenant])
        for message, readings in parsed:
            plan = plans[readings[0].tenant]
            conflict = _type_conflict(plan, readings)
            if conflict is not None:
                rejected.append((message, conflict))
                continue
            for reading in readings:
                if reading.plain:
                    _collect_plain(plan, reading)
                else:
                    if reading.entity_id in plan.pending:  # keep arrival order for this entity
                        _merge_pending(plan, reading.entity_id, now)
                    plan.history.extend(_apply(plan, reading, now))
            plan.receipts.append((SOURCE, message.key))
            plan.messages += 1
        plans = {t: p for t, p in plans.items() if p.messages}
        for plan in plans.values():
            for entity_id in list(plan.pending):
                _merge_pending(plan, entity_id, now)
            for entity_id, when in plan.date_observed.items():
                _set_date_observed(plan.entities[entity_id], when, now)
        started = time.perf_counter()
        n = self._n
        # Dead letters commit with their messages' receipts, in the first write: a crash can neither lose
        # one nor, after the broker redelivers, keep it twice.
        received = datetime.now(UTC)
        letters = [
            DeadLetter(SOURCE, _kept_topic(m.topic), kept_payload(m.payload, reason), kept_reason(reason), received)
            for m, reason in rejected
        ]
        letter_receipts = [(SOURCE, m.key) for m, _ in rejected]
        if letters and not plans:
            self.store.write("", receipts=letter_receipts, dead_letters=letters)
            n.dead_lettered += len(rejected)
        for index, plan in enumerate(plans.values()):
            changes = []
            for entity_id, entity in plan.entities.items():
                before = plan.previous.get(entity_id)
                kind = "created" if before is None else "updated"
                changes.append(EntityChange(plan.tenant, kind, entity_id, entity, before))

            def write(staged: Sequence[Staged], plan: _Plan = plan, first: bool = index == 0) -> None:
                self.store.write(
                    plan.tenant,
                    upserts=list(plan.entities.values()),
                    history=plan.history,
                    receipts=plan.receipts + letter_receipts if first else plan.receipts,
                    history_columns=_plain_history(plan),
                    dead_letters=letters if first else (),
                    staged=staged,  # the subscriptions' outbox commits with the readings
                )

            self.platform.bus.commit(changes, write)  # one commit, one publish: batch listeners write once
            if index == 0:
                n.dead_lettered += len(rejected)
            n.committed += plan.messages
            n.readings += len(plan.history) + len(plan.plain)
        n.duplicates += held.messages
        n.duplicate_readings += held.readings
        n.last_commit_ms = round((time.perf_counter() - started) * 1000, 3)

    def _drop_held(
        self, parsed: list[tuple[ReceivedMessage, list[Reading]]]
    ) -> tuple[list[tuple[ReceivedMessage, list[Reading]]], _HeldCounts]:
        """The messages without the readings that history holds already (see 3b above), and what that came
        to. Under the write lock, so nothing is stored between this look and the write."""
        counts = _HeldCounts()
        suspects = _suspects(parsed, self.store.newest_history)
        if not suspects:
            return parsed, counts  # the live case: every reading is newer than anything held, or a new entity's
        held: dict[tuple[int, int], set[tuple[str, int]]] = {}  # (message, reading) -> (attribute, instance)
        for tenant, (instances, places) in _candidates(parsed, suspects, held).items():
            for row in self.store.held_readings(tenant, instances):
                held.setdefault(places[row][0], set()).add(places[row][1])
        if not held:
            return parsed, counts
        counts.readings = sum(len(instances) for instances in held.values())
        kept: list[tuple[ReceivedMessage, list[Reading]]] = []
        for m, (message, readings) in enumerate(parsed):
            left = [_without(r, held.get((m, k), set())) for k, r in enumerate(readings)]
            left = [r for r in left if r.attributes]
            if left:
                kept.append((message, left))
            else:
                counts.messages += 1
        return kept, counts

    def _load(self, plan: _Plan, entity_ids: list[str]) -> None:
        """The current state of the entities a plan touches, in one read."""
        wanted = list(dict.fromkeys(entity_ids))
        found = self.store.get(plan.tenant, wanted)
        for entity_id in wanted:
            previous = found.get(entity_id)
            plan.previous[entity_id] = previous
            if previous is not None:
                plan.entities[entity_id] = dict(previous)

    def _ack(self, group: list[ReceivedMessage]) -> None:
        client = self._client
        if client is None:
            return
        with self._conn_lock:
            current = self._connection if self._connected else -1
            mids = [m.mid for m in group if m.connection == current and m.qos == 1]
            if mids:
                client.ack_many(mids)
        self._n.acked += len(mids)
        self._n.not_acked_stale += sum(1 for m in group if m.connection != current)


def _suspects(
    parsed: list[tuple[ReceivedMessage, list[Reading]]],
    newest: Callable[[str, Sequence[str]], dict[str, datetime]],
) -> dict[str, tuple[set[str], set[str]]]:
    """Per tenant, the entities whose readings in this group may repeat one already held: a reading not after
    the newest instant the store holds for its entity, or not after an earlier reading of it in the group;
    and those of the second kind. One dict lookup per reading: this runs on every group."""
    times: dict[str, tuple[dict[str, str], dict[str, str], set[str]]] = {}
    for _, readings in parsed:
        tenant = readings[0].tenant  # one topic, one tenant
        entry = times.get(tenant)
        if entry is None:
            entry = times[tenant] = ({}, {}, set())
        first, last, again = entry
        for reading in readings:
            entity_id = reading.entity_id
            if reading.plain and reading.date_observed is not None:  # (a plain reading always has one)
                earliest = latest = reading.date_observed
            else:
                stamps = sorted(
                    (i["observedAt"] for instances in reading.attributes.values() for i in instances),
                    key=parse_observed_at,
                )
                earliest, latest = stamps[0], stamps[-1]
            previous = last.get(entity_id)
            if previous is None:
                first[entity_id] = earliest
            # not strictly after the previous one; normalized times of one length compare as text (`_earlier`)
            elif not (previous < earliest if len(previous) == len(earliest) else _earlier(previous, earliest)):
                again.add(entity_id)
            last[entity_id] = latest
    suspects: dict[str, tuple[set[str], set[str]]] = {}
    for tenant, (first, _, again) in times.items():
        held = newest(tenant, list(first))
        late = {e for e, at in held.items() if parse_observed_at(first[e]) <= at}
        if late or again:
            suspects[tenant] = (late | again, again)
    return suspects


# A reading's place in a group: (message, reading) and (attribute, instance)
_Place = tuple[tuple[int, int], tuple[str, int]]


def _candidates(
    parsed: list[tuple[ReceivedMessage, list[Reading]]],
    suspects: dict[str, tuple[set[str], set[str]]],
    held: dict[tuple[int, int], set[tuple[str, int]]],
) -> dict[str, tuple[list[HistoryInstance], list[_Place]]]:
    """The suspects' readings to look up in history, per tenant, with their places. A reading that an earlier
    one of the group repeats with the same value (only possible for entities `_suspects` saw go back in time
    within the group) is settled here: added to `held`, not looked up."""
    out: dict[str, tuple[list[HistoryInstance], list[_Place]]] = {}
    earlier: dict[tuple[str, str, str, Any, datetime], list[Any]] = {}  # key -> values sent in the group
    for m, (_, readings) in enumerate(parsed):
        tenant = readings[0].tenant
        if tenant not in suspects:
            continue
        entities, again = suspects[tenant]
        candidates, places = out.setdefault(tenant, ([], []))
        for k, reading in enumerate(readings):
            entity_id = reading.entity_id
            if entity_id not in entities:
                continue
            for name, instances in reading.attributes.items():
                for j, instance in enumerate(instances):
                    at = parse_observed_at(instance["observedAt"])
                    dataset = instance.get("datasetId")
                    # as history keeps it (`history_of`): a plain reading's system members make no document
                    stored = instance if reading.plain else {
                        key: v for key, v in instance.items() if key != "createdAt" and key != "modifiedAt"
                    }
                    if entity_id in again:
                        value = reading_value(stored)
                        sent = earlier.setdefault((tenant, entity_id, name, dataset, at), [])
                        if value in sent:
                            held.setdefault((m, k), set()).add((name, j))
                            continue
                        sent.append(value)
                    candidates.append(HistoryInstance(entity_id, name, at, stored, dataset))
                    places.append(((m, k), (name, j)))
    return out


def _without(reading: Reading, held: set[tuple[str, int]]) -> Reading:
    """The reading less the instances history holds (an attribute left with none is left out)."""
    if not held:
        return reading
    attributes = {}
    for name, instances in reading.attributes.items():
        left = [i for j, i in enumerate(instances) if (name, j) not in held]
        if left:
            attributes[name] = left
    return Reading(
        reading.tenant, reading.entity_id, reading.type_iri, attributes, reading.date_observed, reading.plain
    )


def _type_conflict(plan: _Plan, readings: list[Reading]) -> str | None:
    """Why these readings cannot be merged: an entity that exists (or that the message itself creates)
    with another type. Checked for the whole message before any of it is applied."""
    types: dict[str, str] = {}
    for reading in readings:
        entity = plan.entities.get(reading.entity_id)
        if entity is not None:
            known = entity["type"]
        else:  # new: typed by an earlier message of the group (its plain readings wait to be merged) or this one
            first = plan.pending_types.get(reading.entity_id)
            known = [first if first is not None else types.setdefault(reading.entity_id, reading.type_iri)]
        if reading.type_iri not in known:
            return f"entity {reading.entity_id} exists with type {', '.join(known)}, not {reading.type_iri}"
    return None


def _apply(plan: _Plan, reading: Reading, now: str) -> list[HistoryInstance]:
    """Merge one reading into the plan's entity; the newest observation of each attribute instance is the
    current value (a late reading goes to history only). Returns the reading's history instances."""
    entity = plan.entities.get(reading.entity_id)
    if entity is None:
        entity = {"id": reading.entity_id, "type": [reading.type_iri], "createdAt": now, "modifiedAt": now}
        plan.entities[reading.entity_id] = entity
    for name, instances in reading.attributes.items():
        held = entity.get(name)
        if len(instances) == 1 and held is not None and len(held) == 1:
            instance, old = instances[0], held[0]
            if instance.get("datasetId") == old.get("datasetId"):  # the common case: one value replacing one
                _inherit_unit(instance, old)
                if not _earlier(instance.get("observedAt"), old.get("observedAt")):
                    instance["createdAt"] = old.get("createdAt", now)
                    instance["modifiedAt"] = now
                    entity[name] = instances
                continue
        current = {i.get("datasetId"): i for i in held or ()}
        for instance in instances:
            dataset = instance.get("datasetId")
            old = current.get(dataset)
            if old is not None:
                _inherit_unit(instance, old)
                if _earlier(instance.get("observedAt"), old.get("observedAt")):
                    continue
                if "createdAt" in old:
                    instance["createdAt"] = old["createdAt"]
            instance["modifiedAt"] = now
            current[dataset] = instance
        entity[name] = list(current.values())
    when = reading.date_observed
    if when is not None:
        latest = plan.date_observed.get(reading.entity_id)
        if latest is None or (latest != when and _earlier(latest, when)):
            plan.date_observed[reading.entity_id] = when
    entity["modifiedAt"] = now
    return _history(reading.entity_id, reading.attributes, plan.instants)


# A gateway names the same sensors in every message: their datasets are looked up once.
_dataset_memo = functools.lru_cache(maxsize=1 << 16)(dataset_of)


def _collect_plain(plan: _Plan, reading: Reading) -> None:
    """A plain reading: every value to the history columns, the newest of each attribute kept to merge."""
    entity_id = reading.entity_id
    pending = plan.pending.get(entity_id)
    if pending is None:
        pending = plan.pending[entity_id] = {}
        plan.pending_types.setdefault(entity_id, reading.type_iri)
    rows = plan.plain
    merge = plan.merges.get(entity_id, 0)
    for iri, instances in reading.attributes.items():
        instance = instances[0]
        observed = instance["observedAt"]
        rows.append((entity_id, iri, observed, instance["value"], merge))
        held = pending.get(iri)
        if held is None:
            pending[iri] = instance
        else:  # ties: the later message wins; same-length normalized times compare as text (see _earlier)
            last = held["observedAt"]
            if observed >= last if len(observed) == len(last) else not _earlier(observed, last):
                pending[iri] = instance
    when = reading.date_observed
    if when is not None:
        latest = plan.date_observed.get(entity_id)
        if latest is None or (latest < when if len(latest) == len(when) else _earlier(latest, when)):
            plan.date_observed[entity_id] = when


def _merge_pending(plan: _Plan, entity_id: str, now: str) -> None:
    """Merge an entity's newest plain values, as `_apply` merges any reading (their history is in columns)."""
    attributes = {iri: [instance] for iri, instance in plan.pending.pop(entity_id).items()}
    _apply(plan, Reading(plan.tenant, entity_id, plan.pending_types[entity_id], attributes), now)
    # The unit each of these values took (inherited from the attribute as it was): `_apply` just set it
    # on the newest, and every older one of the same merge met the same held attribute.
    merge = plan.merges.get(entity_id, 0)
    for iri, instances in attributes.items():
        plan.units[(entity_id, iri, merge)] = instances[0].get("unitCode")
    plan.merges[entity_id] = merge + 1


def _plain_history(plan: _Plan) -> HistoryColumns | None:
    """The plan's plain readings as history columns; each value carries its attribute's unit, as `_apply`
    gives a key-values reading the unit the attribute already has."""
    if not plan.plain:
        return None
    entity_ids, attributes, observed_at, values, merges = zip(*plan.plain, strict=True)
    stamps: dict[str, np.datetime64] = {}
    for text in dict.fromkeys(observed_at):
        at = plan.instants.get(text)
        if at is None:
            at = plan.instants[text] = parse_observed_at(text)
        stamps[text] = np.datetime64(at.astimezone(UTC).replace(tzinfo=None), "us")
    units = plan.units
    distinct = set(units.values())
    unit_codes = None
    if len(distinct) > 1:
        keys = zip(entity_ids, attributes, merges, strict=True)
        unit_codes = np.array([units[k] for k in keys], dtype=object)
    return HistoryColumns(
        np.array(entity_ids, dtype=object),
        np.array(attributes, dtype=object),
        np.array([stamps[t] for t in observed_at], dtype="datetime64[us]"),
        np.array(values, dtype=np.float64),
        unit_code=next(iter(distinct)) if len(distinct) == 1 else None,
        unit_codes=unit_codes,
    )


def _history(
    entity_id: str, attributes: dict[str, list[Instance]], instants: dict[str, datetime]
) -> list[HistoryInstance]:
    """`history_of` (polis.ngsi_ld.entities) for one reading's attributes: every instance with observedAt
    becomes a temporal instance, without its system members. The same, except that each observation time
    is parsed once per group (a gateway message shares one time among hundreds of readings); a test holds
    the two to the same output."""
    out = []
    for name, instances in attributes.items():
        for instance in instances:
            observed = instance.get("observedAt")
            if observed is None:
                continue
            at = instants.get(observed)
            if at is None:
                at = instants[observed] = parse_observed_at(observed)
            stored = {k: v for k, v in instance.items() if k != "createdAt" and k != "modifiedAt"}
            out.append(HistoryInstance(entity_id, name, at, stored, instance.get("datasetId")))
    return out


def _inherit_unit(instance: dict[str, Any], old: dict[str, Any]) -> None:
    """Key-values readings cannot carry a unit: they keep the one the attribute has (set by the dataset
    loader or an earlier normalized message), in the current value and in history."""
    if "unitCode" not in instance and "unitCode" in old and instance.get("type") == old.get("type"):
        instance["unitCode"] = old["unitCode"]


def _set_date_observed(entity: Entity, when: str, now: str) -> None:
    """`dateObserved` follows the newest observation merged into the entity, as the dataset loaders set it."""
    old = entity.get(DATE_OBSERVED)
    created = now
    if old:
        value = old[0].get("value")
        if _earlier(when, value.get("@value") if isinstance(value, dict) else value):
            return
        created = old[0].get("createdAt", now)
    entity[DATE_OBSERVED] = [
        {"type": "Property", "value": {"@type": "DateTime", "@value": when}, "createdAt": created, "modifiedAt": now}
    ]


# -- a stand-alone ingest process (crash tests, `python -m polis.ingest.mqtt`) ------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run Polis MQTT ingest with its own hub until SIGTERM.")
    parser.add_argument("--url", required=True, help="broker URL, mqtt://127.0.0.1:1883")
    parser.add_argument("--data-dir", required=True, help="the hub's data directory (its DuckDB file)")
    parser.add_argument("--client-id", default="polis-ingest")
    parser.add_argument("--topic", default="polis/#")
    parser.add_argument("--batch-max", type=int, default=10_000)
    parser.add_argument("--batch-wait-ms", type=float, default=50.0)
    parser.add_argument("--max-pending", type=int, default=20_000)
    args = parser.parse_args(argv)

    from pathlib import Path

    from polis.platform import Platform
    from polis.settings import Settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    platform = Platform(Settings(data_dir=Path(args.data_dir)))
    ingestor = MqttIngestor(
        platform,
        args.url,
        client_id=args.client_id,
        topic=args.topic,
        batch_max=args.batch_max,
        batch_wait_s=args.batch_wait_ms / 1000.0,
        max_pending=args.max_pending,
    )
    from polis.runtime import tune_for_service

    tune_for_service()
    try:
        ingestor.start()
        if ingestor.wait_connected(30.0):
            print("ready", flush=True)
        stop.wait()
    finally:
        ingestor.stop()
        print(ingestor.metrics(), flush=True)
        platform.close()


if __name__ == "__main__":
    main()
