"""The subscription service: create, list, retrieve, update and delete subscriptions (§5.8), match every
committed change against them, and put what matches in the durable outbox for the delivery workers.

The staged bus listener runs in the write path, before the commit: it only matches, and the store writes
what matched to the outbox in the entity commit's own transaction (one outbox insert per commit, whatever
the number of entities and subscriptions), then hands it to the workers; rendering and sending happen in
the workers. No thread starts until a notification is waiting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from polis.domain.entity import ENTITY_MEMBERS, Entity
from polis.domain.errors import AlreadyExists, BadRequestData, NgsiError, ResourceNotFound
from polis.ngsi_ld.context import ContextCache, TermMap
from polis.ngsi_ld.events import EntityChange, EventBus
from polis.ngsi_ld.q import pattern_problem
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from polis.subscriptions.delivery import Dispatcher, Key, Target
from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.matching import Compiled, Diff
from polis.subscriptions.model import (
    DeliveryStatus,
    Endpoint,
    Subscription,
    apply_patch,
    department_id_prefix,
    parse_subscription,
    prefix_department,
    utc_text,
)
from polis.subscriptions.notification import Change, OutboxItem, new_notification_id
from polis.subscriptions.repository import Draft, SubscriptionRepository
from polis.subscriptions.transports import StreamClient, StreamHub

log = logging.getLogger(__name__)

MAX_CHANGES_PER_NOTIFICATION = 500  # a bulk commit becomes several notifications, not one huge body


class _Active:
    """A subscription in memory: compiled for matching, with the terms its notifications use and its
    incarnation (`min_seq`, see polis.subscriptions.repository)."""

    __slots__ = ("compiled", "min_seq", "status", "terms")

    def __init__(self, compiled: Compiled, terms: TermMap, status: DeliveryStatus, min_seq: int = 0) -> None:
        self.compiled = compiled
        self.terms = terms
        self.status = status
        self.min_seq = min_seq

    @property
    def sub(self) -> Subscription:
        return self.compiled.sub


class SubscriptionQuotaExceeded(NgsiError):
    """HTTP 403: the department holds as many subscriptions as the hub allows one (Settings)."""

    name = "SubscriptionQuotaExceeded"
    status = 403
    title = "Subscription quota exceeded"


class SubscriptionService:
    def __init__(
        self,
        store: DuckDBStore,
        bus: EventBus,
        contexts: ContextCache,
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.contexts = contexts
        self.clock = clock
        self.quota = settings.max_subscriptions_per_department
        self.repo = SubscriptionRepository(store.connection())
        self._lock = threading.RLock()
        self._active: dict[Key, _Active] = {}
        self._subs: dict[Key, Subscription] = {}
        # Whether a department of this name exists; the platform sets it to the access store's
        # `has_department` (polis.access), None = no departments (standalone use): see `_check_namespace`.
        self.department_exists: Callable[[str], bool] | None = None
        # (department, entity id) -> may its subscriptions carry that entity; the platform sets it to
        # AccessControl.notification_allows (polis.access), None = no access control (standalone use).
        self.entity_gate: Callable[[str | None, str], bool] | None = None
        self.streams = StreamHub(lambda tenant, sid: self.dispatcher.kick((tenant, sid)))
        self.policy = EndpointPolicy.from_text(
            settings.subscription_endpoint_deny, settings.subscription_endpoint_allow
        )
        self.dispatcher = Dispatcher(
            self.repo,
            self._target,
            retry_initial_s=settings.notify_retry_initial_s,
            retry_max_s=settings.notify_retry_max_s,
            timeout_s=settings.notify_timeout_s,
            streams=self.streams,
            policy=self.policy,
            gate=self._may_carry,
        )
        for sub, status, min_seq in self.repo.load():
            self._subs[(sub.tenant, sub.id)] = sub
            self._install(sub, status, min_seq)
        bus.subscribe_staged(self._stage)

    def start(self) -> None:
        """Deliver the outbox the last run left (the head of each backlog, the rest on demand). Called once the
        platform has set `entity_gate`: a notification queued before a grant was revoked must meet the check."""
        self.dispatcher.resume()

    # -- CRUD ----------------------------------------------------------------------------------------

    def create(
        self,
        tenant: str,
        body: Any,
        terms: TermMap,
        context: Any,
        *,
        department: str | None = None,
        id_prefix: str | None = None,
    ) -> Subscription:
        """`id_prefix`: the id must fall under it (a department's own namespace, `department_id_prefix`),
        refused before the id is looked up, so the answer is the same whether another department holds it.
        Without one (a department that administers `subscriptions`) the id may still not lie in another
        department's namespace (`_check_namespace`)."""
        sub = parse_subscription(
            body, terms, context, tenant=tenant, now=self.clock(), department=department, id_prefix=id_prefix
        )
        if id_prefix is None:
            self._check_namespace(sub.id, department)
        self._check_endpoint(sub.endpoint)
        active = self._compile(sub, DeliveryStatus())
        with self._lock:
            if (tenant, sub.id) in self._subs:
                raise AlreadyExists(f"subscription {sub.id} already exists")
            # Counted over every tenant: a subscription creates its tenant, so a quota per tenant is no bound.
            held = sum(1 for s in self._subs.values() if s.department == department)
            if held >= self.quota:
                raise SubscriptionQuotaExceeded(
                    f"{'department ' + department if department else 'this client'} holds {held} subscriptions, "
                    f"the most allowed (POLIS_MAX_SUBSCRIPTIONS_PER_DEPARTMENT={self.quota}); delete one first",
                    quota=self.quota,
                )
            active.min_seq = self.repo.insert(sub)
            self._subs[(tenant, sub.id)] = sub
            self._active[(tenant, sub.id)] = active
        return sub

    def list(
        self, tenant: str, offset: int, limit: int, *, department: str | None = None
    ) -> tuple[list[tuple[Subscription, DeliveryStatus]], int]:
        """`department`: only that department's subscriptions (access control); None: all of them."""
        with self._lock:
            subs = [
                s
                for (t, _), s in self._subs.items()
                if t == tenant and (department is None or s.department == department)
            ]
            page = subs[offset : offset + limit]
            return [(s, self._status(s)) for s in page], len(subs)

    def get(self, tenant: str, sub_id: str) -> tuple[Subscription, DeliveryStatus]:
        with self._lock:
            sub = self._subs.get((tenant, sub_id))
            if sub is None:
                raise ResourceNotFound(f"subscription {sub_id} was not found")
            return sub, self._status(sub)

    def update(self, tenant: str, sub_id: str, fragment: Any, terms: TermMap, context: Any) -> Subscription:
        with self._lock:
            current = self._subs.get((tenant, sub_id))
            if current is None:
                raise ResourceNotFound(f"subscription {sub_id} was not found")
            status = self._status(current)
            min_seq = self._min_seq(current)
        updated = apply_patch(current, fragment, terms, context, now=self.clock())
        if updated.endpoint.uri != current.endpoint.uri:  # one stored before a stricter policy can still be paused
            self._check_endpoint(updated.endpoint)
        active = self._compile(updated, status, min_seq)
        with self._lock:
            live = self._subs.get((tenant, sub_id))
            # deleted meanwhile, or deleted and created again (by another department too): not this one to change
            if live is None or self._min_seq(live) != min_seq:
                raise ResourceNotFound(f"subscription {sub_id} was not found")
            self.repo.update(updated)
            self._subs[(tenant, sub_id)] = updated
            self._active[(tenant, sub_id)] = active
        self.dispatcher.kick((tenant, sub_id))  # e.g. reactivated, or a new endpoint: try now
        return updated

    def delete(self, tenant: str, sub_id: str) -> None:
        with self._lock:
            if (tenant, sub_id) not in self._subs:
                raise ResourceNotFound(f"subscription {sub_id} was not found")
            self.repo.delete(tenant, sub_id)
            del self._subs[(tenant, sub_id)]
            self._active.pop((tenant, sub_id), None)
            # Before the id can be created again (this lock): what its worker holds was owed to this one only.
            self.dispatcher.drop((tenant, sub_id))

    def pending(self, tenant: str, sub_id: str) -> int:
        """Notifications of this subscription not yet taken by its endpoint."""
        return self.dispatcher.pending((tenant, sub_id))

    def open_stream(self, tenant: str, sub_id: str, loop: asyncio.AbstractEventLoop) -> StreamClient:
        sub, _ = self.get(tenant, sub_id)
        if sub.endpoint.transport != "sse":
            raise BadRequestData(
                f"subscription {sub_id} delivers to {sub.endpoint.uri}; only a subscription whose "
                "notification.endpoint.uri is urn:polis:sse has a stream"
            )
        return self.streams.open(tenant, sub_id, loop)

    def close_stream(self, tenant: str, sub_id: str, client: StreamClient) -> None:
        self.streams.close(tenant, sub_id, client)

    # -- matching ------------------------------------------------------------------------------------

    def _stage(self, changes: Sequence[EntityChange]) -> _OutboxRows | None:
        """The notifications a commit owes, matched before it is written and stored with it."""
        if not self._active:
            return None
        now = self.clock()
        with self._lock:
            candidates = [a for a in self._active.values() if a.sub.status(now) == "active"]
        if not candidates:
            return None
        matched: dict[tuple[str, str, int], list[Change]] = {}  # (tenant, id, incarnation) -> changes
        for change in changes:
            diff = Diff(change)
            for active in candidates:
                compiled = active.compiled
                trigger = compiled.wants(change, diff)
                if trigger is None:
                    continue
                sub = compiled.sub
                gate = self.entity_gate
                if gate is not None and not gate(sub.department, change.entity_id):
                    continue  # the subscribing department may not read or subscribe to this entity's dataset
                keep_previous = sub.show_changes or change.entity is None
                matched.setdefault((sub.tenant, sub.id, active.min_seq), []).append(
                    Change(
                        _projected(change.entity, sub.attributes),
                        _projected(change.previous, sub.attributes) if keep_previous else None,
                        trigger,
                    )
                )
        if not matched:
            return None
        notified_at = utc_text(now)
        drafts: list[Draft] = [
            (tenant, sid, min_seq, new_notification_id(), notified_at, found[i : i + MAX_CHANGES_PER_NOTIFICATION])
            for (tenant, sid, min_seq), found in matched.items()
            for i in range(0, len(found), MAX_CHANGES_PER_NOTIFICATION)
        ]
        return _OutboxRows(self, drafts)

    # -- internals -----------------------------------------------------------------------------------

    def _check_namespace(self, sub_id: str, department: str | None) -> None:
        """An administering department chooses ids under its own prefix or under none, never under another
        existing department's: that department may only choose ids there, and one taken from it would answer it
        409 for an id it cannot see (the subscription stays the creator's), a name squatted in its namespace.
        Subscriptions the platform creates itself (no department) are not confined."""
        owner = prefix_department(sub_id)
        exists = self.department_exists
        if department is None or owner is None or owner == department or exists is None or not exists(owner):
            return
        raise BadRequestData(
            f"id: {department_id_prefix(owner)} is department {owner}'s namespace; choose an id under "
            f"{department_id_prefix(department)} or one without a department prefix"
        )

    def _check_endpoint(self, endpoint: Endpoint) -> None:
        """An endpoint whose host is a literal IP in a denied network is refused now (400); a host name is
        checked at every delivery, against what it resolves to then."""
        if endpoint.transport == "sse":
            return
        host = urlsplit(endpoint.uri).hostname or ""
        problem = self.policy.check_host(host)
        if problem is not None:
            raise BadRequestData(f"notification.endpoint.uri: host {problem}")

    def _status(self, sub: Subscription) -> DeliveryStatus:
        active = self._active.get((sub.tenant, sub.id))
        return active.status if active is not None else DeliveryStatus()

    def _min_seq(self, sub: Subscription) -> int:
        """Its incarnation, from the repository (a subscription that could not be compiled at the start has no
        `_Active`, and a PATCH that mends it must keep the incarnation its row has)."""
        return self.repo.incarnation(sub.tenant, sub.id)

    def _target(self, key: Key) -> Target | None:
        with self._lock:
            active = self._active.get(key)
            if active is None:
                return None
            return Target(active.sub, active.terms, active.status, active.min_seq)

    def _may_carry(self, sub: Subscription, entity_id: str) -> bool:
        """Asked again at delivery: a grant revoked while the notification waited (its endpoint down, a
        throttling pause) stops it then, not only the changes committed after the revocation."""
        gate = self.entity_gate
        if gate is None:  # no access control (standalone use): only a subscription no department owns
            return sub.department is None
        return gate(sub.department, entity_id)

    def _install(self, sub: Subscription, status: DeliveryStatus, min_seq: int) -> None:
        try:
            self._active[(sub.tenant, sub.id)] = self._compile(sub, status, min_seq)
        except NgsiError as error:  # e.g. its remote @context is gone: kept, listed, but it matches nothing
            log.error("subscription %s cannot be matched after the restart: %s", sub.id, error.detail)

    def _compile(self, sub: Subscription, status: DeliveryStatus, min_seq: int = 0) -> _Active:
        """Parse q and geoQ and resolve the notification context; at create/update an unusable context is
        the client's error (LdContextNotAvailable, BadRequestData)."""
        q_terms = self.contexts.resolve(sub.q_context) if sub.q_text is not None else None
        notify_context = sub.jsonld_context if sub.jsonld_context is not None else sub.context
        terms = self.contexts.resolve(notify_context)
        q = sub.compiled_q(q_terms) if q_terms is not None else None
        for selector in sub.entities:  # stored before RE2 checked them: refused here, not at every write
            problem = pattern_problem(selector.id_pattern) if selector.id_pattern is not None else None
            if problem:
                raise BadRequestData(f"idPattern {problem}")
        geo = sub.compiled_geo()
        types = frozenset(t for s in sub.entities for g in s.types.any_of for t in g)
        return _Active(Compiled(sub, q, geo, types), terms, status, min_seq)

    def close(self) -> None:
        self.streams.close_all()
        self.dispatcher.stop()
        self.repo.close()


class _OutboxRows:
    """A commit's notifications: stored in its transaction, handed to the workers once it is committed
    (under the store's lock, so the workers receive them in commit order)."""

    def __init__(self, service: SubscriptionService, drafts: list[Draft]) -> None:
        self.service = service
        self.drafts = drafts
        self.items: list[OutboxItem] = []

    def write(self, con: Any) -> None:
        self.items = self.service.repo.enqueue(self.drafts, con)

    def committed(self) -> None:
        self.service.dispatcher.submit(self.items)


def _projected(entity: Entity | None, attributes: tuple[str, ...]) -> Entity | None:
    """Only what the notification will show goes into the outbox: smaller rows, a faster write path."""
    if entity is None or not attributes:
        return entity
    return {k: v for k, v in entity.items() if k in ENTITY_MEMBERS or k in attributes}
