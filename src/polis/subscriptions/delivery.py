"""Delivery workers: one thread per subscription with notifications waiting, started on demand and ended
after a minute idle.

Each subscription has one endpoint and its own queue, delivered strictly in order: the head is retried
(exponential backoff, at least the endpoint's `cooldown`) until its endpoint takes it, and only then does
the next one go. A dead endpoint therefore holds back only the subscriptions that point at it; every
other queue keeps flowing. With `throttling`, whatever queued up during the pause goes as one
notification. A paused (isActive false) or expired subscription keeps its queue and sends nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from polis.ngsi_ld.context import TermMap
from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.model import DeliveryStatus, Subscription, utc_text
from polis.subscriptions.notification import OutboxItem, build
from polis.subscriptions.repository import SubscriptionRepository
from polis.subscriptions.transports import DeliveryFailed, HttpSender, MqttPublisher, StreamHub

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0
ACK_EVERY_S = 0.2
MAX_MERGED = 1000  # throttled items merged into one notification at most


@dataclass(frozen=True, slots=True)
class Target:
    """What a worker needs to know about its subscription now (it may change while items wait)."""

    sub: Subscription
    terms: TermMap
    status: DeliveryStatus


Key = tuple[str, str]  # (tenant, subscription id)


class Dispatcher:
    def __init__(
        self,
        repo: SubscriptionRepository,
        target: Callable[[Key], Target | None],
        *,
        retry_initial_s: float,
        retry_max_s: float,
        timeout_s: float,
        streams: StreamHub,
        policy: EndpointPolicy,
    ) -> None:
        self.repo = repo
        self.target = target
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.timeout_s = timeout_s
        self.streams = streams
        self.policy = policy  # checked at every delivery, on the addresses the endpoint's host resolves to
        self.mqtt = MqttPublisher(policy)
        self.lock = threading.Lock()  # guards every worker's queue and the worker table
        self._workers: dict[Key, _Worker] = {}
        self.stopping = False
        # Delivered seqs and changed statuses, written to the outbox tables together every ACK_EVERY_S by one
        # thread: one small transaction for many notifications, and none in the ingest path's way.
        self._delivered: list[int] = []
        self._dirty: dict[Key, DeliveryStatus] = {}
        self._acker: threading.Thread | None = None

    def submit(self, items: list[OutboxItem]) -> None:
        """Hand stored items to their subscriptions' workers (in seq order)."""
        with self.lock:
            if self.stopping:
                return
            for item in items:
                key = (item.tenant, item.subscription_id)
                worker = self._workers.get(key)
                if worker is None:
                    worker = self._workers[key] = _Worker(self, key)
                    worker.start()
                worker.queue.append(item)
                worker.wakeup.notify()

    def record(self, key: Key, status: DeliveryStatus, delivered: list[int]) -> None:
        """A worker's outcome, persisted by the acker within ACK_EVERY_S (at least once: a crash before that
        sends these notifications again after the restart)."""
        with self.lock:
            self._delivered.extend(delivered)
            self._dirty[key] = status
            if self._acker is None and not self.stopping:
                self._acker = threading.Thread(target=self._ack_loop, name="polis-notify-acks", daemon=True)
                self._acker.start()

    def _ack_loop(self) -> None:
        while not self.stopping:
            time.sleep(ACK_EVERY_S)
            try:
                self.flush()
            except Exception:  # the outbox keeps the rows: they are sent again after a restart
                log.exception("could not record delivered notifications")

    def flush(self) -> None:
        with self.lock:
            delivered, self._delivered = self._delivered, []
            dirty, self._dirty = self._dirty, {}
        if delivered or dirty:
            self.repo.acknowledge(delivered, [(k[0], k[1], replace(s)) for k, s in dirty.items()])

    def kick(self, key: Key) -> None:
        """Retry now: the subscription changed or a stream client connected."""
        with self.lock:
            worker = self._workers.get(key)
            if worker is not None:
                worker.kicked = True
                worker.wakeup.notify()

    def pending(self, key: Key) -> int:
        with self.lock:
            worker = self._workers.get(key)
            return len(worker.queue) if worker is not None else 0

    def stop(self, timeout: float = 3.0) -> None:
        """Stop every worker; one stuck in a send (a silent endpoint) is left behind after `timeout`
        (a daemon thread): its item stays in the outbox and goes again after the restart."""
        with self.lock:
            self.stopping = True
            workers = list(self._workers.values())
            for worker in workers:
                worker.wakeup.notify()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        if self._acker is not None:
            self._acker.join(ACK_EVERY_S * 2)
        self.flush()
        self.mqtt.close()

    def _retire(self, worker: _Worker) -> bool:
        """Called with the lock held by an idle worker: leave the table unless items arrived meanwhile."""
        if worker.queue:
            return False
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]
        return True


class _Worker(threading.Thread):
    def __init__(self, dispatcher: Dispatcher, key: Key) -> None:
        super().__init__(name=f"polis-notify-{key[1][-12:]}", daemon=True)
        self.d = dispatcher
        self.key = key
        self.queue: deque[OutboxItem] = deque()
        self.wakeup = threading.Condition(dispatcher.lock)
        self.kicked = False
        self.http = HttpSender(dispatcher.policy)
        self.backoff = 0.0
        self.last_sent = -float("inf")

    def run(self) -> None:
        try:
            while True:
                try:
                    if not self._step():
                        return
                except Exception:  # a bug must not end delivery: the item stays and is tried again later
                    log.exception("notification worker for %s failed; retrying", self.key[1])
                    self.backoff = min(self.d.retry_max_s, max(self.d.retry_initial_s, self.backoff * 2))
                    if not self._pause(self.backoff):
                        return
        finally:
            self.http.close()

    def _step(self) -> bool:
        """Deliver the head of the queue once; False when the worker should end."""
        d = self.d
        with d.lock:
            idle_since = time.monotonic()
            while not self.queue and not d.stopping:
                if time.monotonic() - idle_since > IDLE_EXIT_S and d._retire(self):
                    return False
                self.wakeup.wait(IDLE_EXIT_S / 4)
            if d.stopping:
                return False
        target = d.target(self.key)
        if target is None:  # deleted: the repository dropped its rows already
            with d.lock:
                self.queue.clear()
            return True
        sub = target.sub
        if sub.status() != "active":
            return self._pause(1.0)
        if sub.throttling is not None:
            wait = self.last_sent + sub.throttling - time.monotonic()
            if wait > 0:
                return self._pause(wait)
        with d.lock:
            if sub.throttling is not None:
                batch = [self.queue[i] for i in range(min(len(self.queue), MAX_MERGED))]
            else:
                batch = [self.queue[0]] if self.queue else []
        if not batch:
            return True
        body, headers = build(sub, target.terms, batch)
        status = target.status
        now = utc_text(datetime.now(UTC))
        try:
            self._send(sub, body, headers, batch[0].notification_id)
        except DeliveryFailed as failure:
            status.times_sent += 1
            status.times_failed += 1
            status.last_notification = status.last_failure = now
            status.last_failure_reason = failure.reason
            d.record(self.key, status, [])
            if self.backoff == 0.0:
                # A stream subscription with no reader open (a dashboard tab closed) is waiting, as documented, not
                # failing: its notifications go to the next stream opened. Only real endpoints warn.
                level = logging.INFO if sub.endpoint.transport == "sse" else logging.WARNING
                log.log(level, "notification to %s for %s failed (%s); retrying", sub.endpoint.uri, sub.id,
                        failure.reason)
            self.backoff = min(d.retry_max_s, max(d.retry_initial_s, self.backoff * 2))
            cooldown = (sub.endpoint.cooldown_ms or 0.0) / 1000.0
            return self._pause(max(self.backoff, cooldown))
        status.times_sent += 1
        status.last_notification = status.last_success = now
        self.backoff = 0.0
        self.last_sent = time.monotonic()
        with d.lock:
            for _ in batch:
                self.queue.popleft()
        d.record(self.key, status, [i.seq for i in batch])
        return True

    def _send(self, sub: Subscription, body: bytes, headers: dict[str, str], notification_id: str) -> None:
        endpoint = sub.endpoint
        timeout = endpoint.timeout_ms / 1000.0 if endpoint.timeout_ms else self.d.timeout_s
        kind = endpoint.transport
        if kind == "sse":
            self.d.streams.send(sub.tenant, sub.id, body, notification_id)
        elif kind == "mqtt":
            qos = int(dict(endpoint.notifier_info).get("MQTT-QoS", "1"))
            self.d.mqtt.send(endpoint.uri, body, headers, timeout, qos=qos)
        else:
            self.http.send(endpoint.uri, body, headers, timeout)

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds`, or less when stopped or kicked (new items do not cut a backoff short)."""
        d = self.d
        deadline = time.monotonic() + seconds
        with d.lock:
            while not d.stopping and not self.kicked:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wakeup.wait(left)
            if self.kicked:
                self.kicked = False
                self.backoff = 0.0
            return not d.stopping
