"""Delivery workers: one thread per subscription with notifications waiting (and not paused or expired),
started on demand and ended after a minute idle.

Each subscription has one endpoint and its own queue, delivered strictly in order: the head is retried
(exponential backoff, at least the endpoint's `cooldown`) until its endpoint takes it, and only then does
the next one go. A dead endpoint therefore holds back only the subscriptions that point at it; every
other queue keeps flowing. With `throttling`, whatever queued up during the pause goes as one
notification; the pause is counted from the last notification the endpoint took (`lastSuccess`, kept in the
database), so neither a worker ending idle nor a restart shortens it. A paused (isActive false) or expired
subscription sends nothing and holds no thread: its worker ends, its backlog waits in the outbox, and a PATCH
(which kicks) starts a worker again that reads the backlog back from where the last one stopped.

A worker holds at most MAX_QUEUED notifications in memory; a longer backlog (a dead endpoint under a busy
stream) waits in the outbox table and is read back in order as the queue drains, so an endpoint that is down
for days costs disk, not memory.

At delivery, not only when the change was matched, every entity in a notification is asked about again
(`gate`: the subscribing department's grants now), and a notification owed to an earlier subscription of the
same id (deleted, then created again, perhaps by another department) is dropped, never sent to the new one.
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
from polis.subscriptions.model import MAX_ENDPOINT_TIMEOUT_MS, DeliveryStatus, Subscription, parse_time, utc_text
from polis.subscriptions.notification import Change, OutboxItem, build
from polis.subscriptions.repository import SubscriptionRepository
from polis.subscriptions.transports import DeliveryFailed, HttpSender, MqttPublisher, StreamHub

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60.0
ACK_EVERY_S = 0.2
MAX_MERGED = 1000  # throttled items merged into one notification at most
MAX_QUEUED = 1000  # notifications one worker holds in memory; the rest of a backlog waits in the outbox
UNUSABLE_WAIT_S = 5.0  # how often a subscription that exists but cannot be compiled is looked at again
REAP_EVERY_S = 10.0  # how often idle MQTT notification clients are looked for


@dataclass(frozen=True, slots=True)
class Target:
    """What a worker needs to know about its subscription now (it may change while items wait)."""

    sub: Subscription
    terms: TermMap
    status: DeliveryStatus
    min_seq: int = 0  # its incarnation: an item with a lower seq was owed to an earlier subscription of this id


Key = tuple[str, str]  # (tenant, subscription id)
Gate = Callable[[Subscription, str], bool]  # may this subscription carry the entity with this id, now


def entity_id(change: Change) -> str:
    state = change.entity if change.entity is not None else change.previous
    return str((state or {}).get("id", ""))


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
        gate: Gate | None = None,
    ) -> None:
        self.repo = repo
        self.gate = gate
        self.target = target
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.timeout_s = timeout_s
        self.streams = streams
        self.policy = policy  # checked at every delivery, on the addresses the endpoint's host resolves to
        self.mqtt = MqttPublisher(policy)
        self.lock = threading.Lock()  # guards every worker's queue and the worker table
        self._workers: dict[Key, _Worker] = {}
        # Subscriptions paused or expired with a backlog: the seq after which it waits in the outbox. An int each,
        # not a sleeping thread each (thousands of paused subscriptions are thousands of idle threads otherwise).
        self._parked: dict[Key, int] = {}
        self.stopping = False
        # Delivered seqs and changed statuses, written to the outbox tables together every ACK_EVERY_S by one
        # thread: one small transaction for many notifications, and none in the ingest path's way.
        self._delivered: list[int] = []
        self._dirty: dict[Key, DeliveryStatus] = {}
        self._acker: threading.Thread | None = None

    def submit(self, items: list[OutboxItem]) -> None:
        """Hand stored (committed) items to their subscriptions' workers, in seq order. A worker already holding
        MAX_QUEUED leaves the rest in the outbox and reads them back when its queue drains (`_Worker._refill`)."""
        with self.lock:
            if self.stopping:
                return
            for item in items:
                worker = self._worker((item.tenant, item.subscription_id))
                worker.take(item)

    def resume(self) -> None:
        """At start: the head of every subscription's backlog left in the outbox; the rest is read on demand."""
        limit = MAX_QUEUED
        items = self.repo.pending(per_subscription=limit)
        counts: dict[Key, int] = {}
        heads: dict[Key, int] = {}  # the lowest seq each backlog holds
        for item in items:
            key = (item.tenant, item.subscription_id)
            counts[key] = counts.get(key, 0) + 1
            heads[key] = min(heads.get(key, item.seq), item.seq)
        idle = {key for key in counts if not self._deliverable(key)}  # asked before the lock: see `kick`
        with self.lock:
            if self.stopping:
                return
            for key in idle:  # no thread started only to end at once
                self._parked[key] = heads[key] - 1
            for item in items:
                if (item.tenant, item.subscription_id) not in idle:
                    self._worker((item.tenant, item.subscription_id)).take(item)
            for key, count in counts.items():
                if count >= limit and key not in idle:  # maybe more in the outbox
                    self._workers[key].overflow = True

    def _worker(self, key: Key) -> _Worker:
        """The key's worker, started if there is none (called with the lock held)."""
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = _Worker(self, key)
            parked = self._parked.pop(key, None)
            if parked is not None:  # its backlog, and whatever it is handed now, is read back from the outbox
                worker.last_seq = parked
                worker.overflow = True
            worker.start()
        return worker

    def _deliverable(self, key: Key) -> bool:
        """Whether the key's worker has anything to do now: not for a paused or expired subscription (one that is
        gone or cannot be compiled is left to the worker, which knows what to do with its backlog). Asks the
        service, so never with the lock held (the service calls in with its own lock held: `drop`)."""
        target = self.target(key)
        return target is None or target.sub.status() == "active"

    def record(self, key: Key, status: DeliveryStatus, delivered: list[int]) -> None:
        """A worker's outcome, persisted by the acker within ACK_EVERY_S (at least once: a crash before that
        sends these notifications again after the restart)."""
        with self.lock:
            self._delivered.extend(delivered)
            self._dirty[key] = status
            self._ack_soon()

    def discard(self, seqs: list[int]) -> None:
        """Rows that will never be sent (owed to a deleted subscription, or every entity refused): out of the
        outbox with the next acknowledgement, so they are not loaded again after a restart."""
        if not seqs:
            return
        with self.lock:
            self._delivered.extend(seqs)
            self._ack_soon()

    def _ack_soon(self) -> None:
        """Have the acker persist what was noted within ACK_EVERY_S (the lock held)."""
        if self._acker is None and not self.stopping:
            self._acker = threading.Thread(target=self._ack_loop, name="polis-notify-acks", daemon=True)
            self._acker.start()

    def drop(self, key: Key) -> None:
        """The subscription was deleted (its rows with it): its worker forgets what it holds, before the id can
        be created again, so none of it can reach a new subscription of the same id."""
        with self.lock:
            self._parked.pop(key, None)  # its rows went with it
            worker = self._workers.get(key)
            if worker is not None:
                worker.queue.clear()
                worker.overflow = False
                worker.kicked = True
                worker.wakeup.notify()

    def _ack_loop(self) -> None:
        reaped = time.monotonic()
        while not self.stopping:
            time.sleep(ACK_EVERY_S)
            try:
                self.flush()
            except Exception:  # the outbox keeps the rows: they are sent again after a restart
                log.exception("could not record delivered notifications")
            if time.monotonic() - reaped > REAP_EVERY_S:
                reaped = time.monotonic()
                try:
                    self.mqtt.reap()
                except Exception:
                    log.exception("could not close idle MQTT notification clients")

    def flush(self) -> None:
        with self.lock:
            delivered, self._delivered = self._delivered, []
            dirty, self._dirty = self._dirty, {}
        if delivered or dirty:
            self.repo.acknowledge(delivered, [(k[0], k[1], replace(s)) for k, s in dirty.items()])

    def kick(self, key: Key) -> None:
        """Retry now: the subscription changed or a stream client connected. A parked subscription (paused or
        expired with a backlog) gets a worker again once it may notify (a PATCH resumed or renewed it)."""
        deliverable = self._deliverable(key)
        with self.lock:
            worker = self._workers.get(key)
            if worker is not None:
                worker.kicked = True
                worker.wakeup.notify()
            elif key in self._parked and deliverable and not self.stopping:
                self._worker(key)

    def pending(self, key: Key) -> int:
        with self.lock:
            worker = self._workers.get(key)
            if worker is None and key not in self._parked:
                return 0
            if worker is not None and not worker.overflow:
                return len(worker.queue)
        return self.repo.count_pending(*key)  # a backlog longer than what is held in memory, or parked

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

    def _park(self, worker: _Worker) -> bool:
        """Called with the lock held by the worker of a paused or expired subscription: leave the table and note
        where its backlog starts, unless a kick came meanwhile (a PATCH that may have resumed it, whose `kick`
        found this worker still there): then False, and the worker looks at its subscription again."""
        if worker.kicked:
            worker.kicked = False
            return False
        if self._workers.get(worker.key) is worker:
            del self._workers[worker.key]
            # Everything before the head of the queue was delivered (its acknowledgement may be on its way still);
            # with an empty queue, everything up to what was read back from the outbox.
            self._parked[worker.key] = worker.queue[0].seq - 1 if worker.queue else worker.last_seq
        worker.queue.clear()
        worker.overflow = False
        return True

    def _retire(self, worker: _Worker) -> bool:
        """Called with the lock held by an idle worker: leave the table unless items arrived meanwhile."""
        if worker.queue or worker.overflow:
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
        self.overflow = False  # items of this subscription wait in the outbox beyond the queue's last one
        self.last_seq = 0  # the highest seq queued: an item read back from the outbox is not taken twice
        self.wakeup = threading.Condition(dispatcher.lock)
        self.kicked = False
        self.http = HttpSender(dispatcher.policy)
        self.backoff = 0.0
        self.last_sent = -float("inf")  # when this worker's last send ended (the saved lastSuccess is its start)

    def take(self, item: OutboxItem) -> None:
        """Queue one committed item (the dispatcher's lock held)."""
        if item.seq <= self.last_seq:
            return  # read back from the outbox already
        if self.overflow or len(self.queue) >= MAX_QUEUED:
            self.overflow = True  # it is in the outbox: read back in order once the queue drains
            return
        self.queue.append(item)
        self.last_seq = item.seq
        self.wakeup.notify()

    def _refill(self) -> None:
        """Read the next part of the backlog from the outbox (the dispatcher's lock held, so that no committed
        item is handed over between the read and the end of the overflow)."""
        items = self.d.repo.pending_after(self.key[0], self.key[1], self.last_seq, MAX_QUEUED)
        self.overflow = len(items) >= MAX_QUEUED
        for item in items:
            self.queue.append(item)
            self.last_seq = item.seq

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
                if self.overflow:
                    self._refill()
                    continue
                if time.monotonic() - idle_since > IDLE_EXIT_S and d._retire(self):
                    return False
                self.wakeup.wait(IDLE_EXIT_S / 4)
            if d.stopping:
                return False
        target = d.target(self.key)
        if target is None and d.repo.incarnation(*self.key) != -1:
            # It exists but could not be compiled after a restart (its @context unreachable for now): its
            # notifications stay in the outbox, waiting for the subscription to be usable again or deleted.
            return self._pause(UNUSABLE_WAIT_S)
        if target is None:  # deleted: the repository dropped its rows (all but a commit's racing the deletion)
            with d.lock:
                dropped = [i.seq for i in self.queue]
                self.queue.clear()
                self.overflow = False
            d.discard(dropped)
            return True
        sub = target.sub
        if sub.status() != "active":
            # Paused or expired: only a change of the subscription (a PATCH, which kicks) or its deletion can let
            # it notify again; until then the backlog waits in the outbox, and no thread waits with it.
            with d.lock:
                return not d._park(self)
        if sub.throttling is not None:
            wait = max(_throttle_wait(sub.throttling, target.status),
                       self.last_sent + sub.throttling - time.monotonic())
            if wait > 0:
                return self._pause(wait)
        with d.lock:
            if sub.throttling is not None:
                batch = [self.queue[i] for i in range(min(len(self.queue), MAX_MERGED))]
            else:
                batch = [self.queue[0]] if self.queue else []
        if not batch:
            return True
        if batch[0].seq < target.min_seq:  # owed to an earlier subscription of this id: never to this one
            self._done([i for i in batch if i.seq < target.min_seq], delivered=False)
            return True
        batch = self._allowed(sub, batch)
        if not batch:
            return True
        body, headers = build(sub, target.terms, batch)
        status = target.status
        now = utc_text(datetime.now(UTC))
        try:
            self._send(sub, body, headers, batch[0].notification_id)
        except DeliveryFailed as failure:
            if self.backoff == 0.0:  # logged before the status shows the failure: whoever sees one finds both
                # A stream subscription with no reader open (a dashboard tab closed) is waiting, as documented, not
                # failing: its notifications go to the next stream opened. Only real endpoints warn.
                level = logging.INFO if sub.endpoint.transport == "sse" else logging.WARNING
                log.log(level, "notification to %s for %s failed (%s); retrying", sub.endpoint.uri, sub.id,
                        failure.reason)
            status.times_sent += 1
            status.times_failed += 1
            status.last_notification = status.last_failure = now
            status.last_failure_reason = failure.reason
            d.record(self.key, status, [])
            self.backoff = min(d.retry_max_s, max(d.retry_initial_s, self.backoff * 2))
            cooldown = (sub.endpoint.cooldown_ms or 0.0) / 1000.0
            return self._pause(max(self.backoff, cooldown))
        status.times_sent += 1
        status.last_notification = status.last_success = now
        self.backoff = 0.0
        self.last_sent = time.monotonic()
        self._done(batch, delivered=True)
        d.record(self.key, status, [i.seq for i in batch])
        return True

    def _done(self, batch: list[OutboxItem], *, delivered: bool) -> None:
        """Take the batch off the head of the queue: only items still there (a deletion may have emptied the
        queue meanwhile, and a new subscription of the same id queued its own)."""
        seqs = {i.seq for i in batch}
        with self.d.lock:
            while self.queue and self.queue[0].seq in seqs:
                self.queue.popleft()
        if not delivered:
            self.d.discard(sorted(seqs))

    def _allowed(self, sub: Subscription, batch: list[OutboxItem]) -> list[OutboxItem]:
        """The batch with only the entities the subscription may carry now; an item left with none is dropped.
        What was refused is taken out of the queued item too, so that a retry neither sends nor audits it
        again."""
        gate = self.d.gate
        if gate is None:
            return batch
        kept: list[OutboxItem] = []
        refused: list[OutboxItem] = []
        changed: dict[int, OutboxItem] = {}
        for item in batch:
            changes = tuple(c for c in item.changes if gate(sub, entity_id(c)))
            if not changes:
                refused.append(item)
            elif len(changes) < len(item.changes):
                changed[item.seq] = replace(item, changes=changes)
                kept.append(changed[item.seq])
            else:
                kept.append(item)
        if changed or refused:
            # wherever they are in the queue (a throttled batch has kept items before refused ones)
            gone = {i.seq for i in refused}
            with self.d.lock:
                self.queue = deque(changed.get(i.seq, i) for i in self.queue if i.seq not in gone)
            self.d.discard(sorted(gone))
        return kept

    def _send(self, sub: Subscription, body: bytes, headers: dict[str, str], notification_id: str) -> None:
        endpoint = sub.endpoint
        # capped here too: a subscription stored before its create/PATCH refused a longer one
        asked = min(endpoint.timeout_ms, MAX_ENDPOINT_TIMEOUT_MS) if endpoint.timeout_ms else None
        timeout = asked / 1000.0 if asked is not None else self.d.timeout_s
        kind = endpoint.transport
        if kind == "sse":
            self.d.streams.send(sub.tenant, sub.id, body, notification_id)
        elif kind == "mqtt":
            qos = int(dict(endpoint.notifier_info).get("MQTT-QoS", "1"))
            self.d.mqtt.send(endpoint.uri, body, headers, timeout, qos=qos)
        else:
            self.http.send(endpoint.uri, body, headers, timeout)

    def _pause(self, seconds: float | None) -> bool:
        """Wait `seconds` (None: for ever), or less when stopped or kicked (new items do not cut a backoff short)."""
        d = self.d
        deadline = None if seconds is None else time.monotonic() + seconds
        with d.lock:
            while not d.stopping and not self.kicked:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.wakeup.wait(left)
            if self.kicked:
                self.kicked = False
                self.backoff = 0.0
            return not d.stopping


def _throttle_wait(throttling: float, status: DeliveryStatus) -> float:
    """Seconds until the subscription may notify again: `throttling` after the last notification its endpoint
    took (wall clock, from the saved status; never longer than `throttling`, whatever the clock did)."""
    if status.last_success is None:
        return 0.0
    elapsed = (datetime.now(UTC) - parse_time(status.last_success)).total_seconds()
    return max(0.0, min(throttling, throttling - elapsed))
