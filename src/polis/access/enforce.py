"""Enforcement on every API route: one FastAPI dependency on the whole app (`create_app` installs it).

Each route has a declared policy in `ROUTE_POLICIES`, keyed by method and path template; a route with
none is denied to everyone, so a route added without thinking about access fails closed. The policy is:

- `Open`: anyone, no key needed (liveness, the API docs);
- `Fixed(dataset, tier, action)`: the department needs exactly that grant (`/metrics`, dead letters, ...);
- `CapOrJson(...)`: one alert, whose tier depends on what the client asks for (`wants_cap`);
- `EntityById(action)`: the entity named in the path decides the dataset (`polis.access.datasets`),
  checked here at the dataset's entity tier;
- `InRoute(action)`: the route itself decides after reading the request (bodies naming entities,
  queries narrowed to the readable datasets, products with a tier parameter) through
  `access_of(request)`; here only a department with no grant for that action at all is turned away.

Every decision, allowed or denied, goes to the audit log. No key = the `public` department, and every
department may also do what `public` may (`AccessControl.permissions`); a bad key is 401 even where the
public department would be allowed (a client that sent a key meant to use it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from polis.access.control import AccessControl, KeyChecksThrottled, Principal, bearer_key
from polis.access.datasets import ALERTS, AUDIT, CITIBIKE, CONTEXTS, DATASETS, OPERATIONS, SUBSCRIPTIONS
from polis.alerts.cap import CAP_MEDIA_TYPE
from polis.domain.errors import Forbidden, NgsiError, ResourceNotFound, Unauthorized


@dataclass(frozen=True, slots=True)
class Open:
    pass


@dataclass(frozen=True, slots=True)
class Fixed:
    dataset: str
    tier: str
    action: str


@dataclass(frozen=True, slots=True)
class CapOrJson:
    """An alert served as its CAP message (`cap_tier`, like the feed that links to it) when the Accept header
    asks for CAP, else as JSON naming the entities and values that raised it (`json_tier`)."""

    dataset: str
    cap_tier: str
    json_tier: str
    action: str

    def tier(self, accept: str) -> str:
        return self.cap_tier if wants_cap(accept) else self.json_tier


def wants_cap(accept: str) -> bool:
    """Whether `GET /polis/v1/alerts/{id}` answers CAP XML; the route (polis.api.routes_alerts) asks this too,
    because the tier checked must be the tier served."""
    return CAP_MEDIA_TYPE in accept or ("application/xml" in accept and "json" not in accept)


@dataclass(frozen=True, slots=True)
class EntityById:
    action: str
    param: str = "entity_id"


@dataclass(frozen=True, slots=True)
class InRoute:
    action: str
    # The route may record no decision of its own (creating a subscription that names no entity id, listing
    # one's subscriptions): then the gate records the allowance, so that no request goes unaudited.
    audit_here: bool = False


@dataclass(frozen=True, slots=True)
class OwnSubscription:
    """The subscription named in the path must be the department's own (or it may administer them all)."""

    param: str = "subscription_id"


Policy = Open | Fixed | CapOrJson | EntityById | InRoute | OwnSubscription

_LD = "/ngsi-ld/v1"
_E = f"{_LD}/entities/{{entity_id:path}}"
_T = f"{_LD}/temporal/entities/{{entity_id:path}}"
_S = f"{_LD}/subscriptions/{{subscription_id:path}}"
_M = f"/polis/v1/mobility/{CITIBIKE}"
_A = "/polis/v1/alerts"
READ, WRITE, SUBSCRIBE = "read", "write", "subscribe"

ROUTE_POLICIES: dict[tuple[str, str], Policy] = {
    ("GET", "/health"): Open(),
    ("GET", "/docs"): Open(),
    ("GET", "/"): Open(),  # the dashboard page (polis.api.routes_dashboard): its data comes from the API
    ("GET", "/metrics"): Fixed(OPERATIONS, "aggregate", READ),
    ("GET", "/polis/v1/deadletters"): Fixed(OPERATIONS, "raw-pseudonymous", READ),  # payloads as received
    # entities
    ("POST", f"{_LD}/entities"): InRoute(WRITE),
    ("GET", f"{_LD}/entities"): InRoute(READ),
    ("GET", f"{_E}/attrs"): EntityById(READ),
    ("GET", _E): EntityById(READ),
    ("PATCH", f"{_E}/attrs/{{attr_id:path}}"): EntityById(WRITE),
    ("PUT", f"{_E}/attrs/{{attr_id:path}}"): EntityById(WRITE),
    ("PUT", _E): EntityById(WRITE),
    ("DELETE", f"{_E}/attrs/{{attr_id:path}}"): EntityById(WRITE),
    ("POST", f"{_E}/attrs"): EntityById(WRITE),
    ("PATCH", f"{_E}/attrs"): EntityById(WRITE),
    ("PATCH", _E): EntityById(WRITE),
    ("DELETE", _E): EntityById(WRITE),
    **{("POST", f"{_LD}/entityOperations/{op}"): InRoute(WRITE) for op in ("create", "upsert", "update", "merge")},
    ("POST", f"{_LD}/entityOperations/delete"): InRoute(WRITE),
    ("POST", f"{_LD}/entityOperations/query"): InRoute(READ),
    # temporal
    ("POST", f"{_LD}/temporal/entities"): InRoute(WRITE),
    ("GET", f"{_LD}/temporal/entities"): InRoute(READ),
    ("POST", f"{_LD}/temporal/entityOperations/query"): InRoute(READ),  # the same query, its selection in a body
    ("GET", _T): EntityById(READ),
    ("POST", f"{_T}/attrs"): EntityById(WRITE),
    ("PATCH", f"{_T}/attrs/{{attr_id}}/{{instance_id}}"): EntityById(WRITE),
    ("DELETE", f"{_T}/attrs/{{attr_id}}/{{instance_id}}"): EntityById(WRITE),
    ("DELETE", f"{_T}/attrs/{{attr_id}}"): EntityById(WRITE),
    ("DELETE", _T): EntityById(WRITE),
    # discovery: answers narrowed to the readable datasets
    ("GET", f"{_LD}/types"): InRoute(READ),
    ("GET", f"{_LD}/types/{{type_name:path}}"): InRoute(READ),
    ("GET", f"{_LD}/attributes"): InRoute(READ),
    ("GET", f"{_LD}/attributes/{{attr_name:path}}"): InRoute(READ),
    # subscriptions: creating one needs `subscribe` on some dataset (on the datasets of the entity ids it
    # names, checked in the route); one's notifications carry only entities of datasets its department may
    # read and subscribe to (`AccessControl.notification_allows`). Another department's subscription is
    # off limits unless `administer` on dataset `subscriptions` is granted.
    ("POST", f"{_LD}/subscriptions"): InRoute(SUBSCRIBE, audit_here=True),
    ("GET", f"{_LD}/subscriptions"): InRoute(SUBSCRIBE, audit_here=True),
    ("GET", f"{_S}/stream"): OwnSubscription(),
    ("GET", _S): OwnSubscription(),
    ("PATCH", _S): OwnSubscription(),
    ("DELETE", _S): OwnSubscription(),
    # mobility products (polis.api.routes_mobility.MOBILITY_ROUTES names the same; a test keeps them equal)
    ("GET", f"{_M}/summary"): Fixed(CITIBIKE, "public", READ),
    ("GET", f"{_M}/flows"): Fixed(CITIBIKE, "aggregate", READ),
    ("GET", f"{_M}/od"): Fixed(CITIBIKE, "aggregate", READ),
    ("GET", f"{_M}/trips"): Fixed(CITIBIKE, "raw-pseudonymous", READ),
    # alerts: rules configure what the hub watches (administer); alerts as JSON name the entities and values
    # that raised them (aggregate); the CAP messages and their feed are for everyone (public)
    ("POST", f"{_A}/rules"): Fixed(ALERTS, "aggregate", "administer"),
    ("GET", f"{_A}/rules"): Fixed(ALERTS, "aggregate", READ),
    ("GET", f"{_A}/rules/{{rule_id}}"): Fixed(ALERTS, "aggregate", READ),
    ("PUT", f"{_A}/rules/{{rule_id}}"): Fixed(ALERTS, "aggregate", "administer"),
    ("DELETE", f"{_A}/rules/{{rule_id}}"): Fixed(ALERTS, "aggregate", "administer"),
    ("GET", _A): Fixed(ALERTS, "aggregate", READ),
    ("GET", f"{_A}/feed"): Fixed(ALERTS, "public", READ),
    ("GET", f"{_A}/{{alert_id}}"): CapOrJson(ALERTS, "public", "aggregate", READ),
    ("GET", f"{_A}/{{alert_id}}/cap"): Fixed(ALERTS, "public", READ),
    # forecasts (polis.api.routes_forecasts): a forecast of an entity is data of that entity's dataset; the
    # per-type list is narrowed (in the route) to the datasets the department may read; accuracy per model
    ("GET", "/polis/v1/forecasts"): InRoute(READ),
    ("GET", "/polis/v1/forecasts/{entity_id}"): EntityById(READ),
    ("GET", "/polis/v1/forecasts/{entity_id}/history"): EntityById(READ),
    ("GET", "/polis/v1/forecast-accuracy"): Fixed("forecasts", "aggregate", READ),
    # who am I; the audit chain
    ("GET", "/polis/v1/access/me"): Open(),
    ("GET", "/polis/v1/access/audit/verify"): Fixed(AUDIT, "raw-pseudonymous", "administer"),
    # the @context registry
    ("POST", f"{_LD}/jsonldContexts"): Fixed(CONTEXTS, "public", WRITE),
    ("GET", f"{_LD}/jsonldContexts"): Fixed(CONTEXTS, "public", READ),
    ("GET", f"{_LD}/jsonldContexts/{{context_id:path}}"): Fixed(CONTEXTS, "public", READ),
    ("DELETE", f"{_LD}/jsonldContexts/{{context_id:path}}"): Fixed(CONTEXTS, "public", WRITE),
    # epidemic products (polis.api.routes_epidemic): region-level aggregates; a scenario computes, it writes nothing
    **{(m, f"/polis/v1/epidemic/{{country}}/{p}"): Fixed("epidemic", "aggregate", READ)
       for m, p in (("GET", "risk"), ("GET", "forecast"), ("POST", "scenario"))},
    ("GET", "/polis/v1/epidemic"): Fixed("epidemic", "aggregate", READ),  # which countries the hub holds
}

# Served outside FastAPI's routing (no dependency runs): the API's own description, public by design.
UNENFORCED_PATHS = frozenset({"/openapi.json", "/docs-assets", "/dashboard"})  # /dashboard: page code, base maps


class RequestAccess:
    """What one request may do; routes with an `InRoute` policy ask it (`access_of(request)`)."""

    def __init__(self, control: AccessControl, principal: Principal, what: str) -> None:
        self.control = control
        self.principal = principal
        self.what = what

    @property
    def department(self) -> str:
        return self.principal.department

    def require(self, dataset: str, tier: str, action: str) -> None:
        self.control.require(self.principal, dataset, tier, action, self.what)

    def allows(self, dataset: str, tier: str, action: str) -> bool:
        """Decide (and audit) without raising: for answers that leave out what is not granted."""
        return self.control.decide(self.principal, dataset, tier, action, self.what)

    def require_entities(self, entity_ids: Iterable[str], action: str) -> None:
        self.control.require_entities(self.principal, entity_ids, action, self.what)

    def readable(self, action: str = READ) -> tuple[str, ...]:
        """The datasets whose entities this request may see; 403 when there are none."""
        return self.control.readable(self.principal, self.what, action)


def body_ids(data: Any) -> list[str]:
    """The entity ids a write body names: an entity, or a batch of entities or of ids (batch delete).
    Items without a string id are left to the service, which refuses them."""
    items = data if isinstance(data, list) else [data]
    ids = [item.get("id") if isinstance(item, dict) else item for item in items]
    return [i for i in ids if isinstance(i, str)]


def readable_scope(request: Request) -> tuple[str, ...] | None:
    """The datasets a query is narrowed to, in the query itself (so pages and counts stay honest);
    None when the department may read every dataset (no filter to run). 403 when it may read none."""
    datasets = access_of(request).readable()
    return None if set(datasets) >= set(DATASETS) else datasets


def access_of(request: Request) -> RequestAccess:
    access = getattr(request.state, "access", None)
    if not isinstance(access, RequestAccess):  # only when the dependency was bypassed: fail closed
        raise Forbidden("this request passed no access check")
    return access


async def enforce(request: Request) -> None:
    """The app-wide dependency: authenticate, find the route's policy, decide what can be decided here."""
    control: AccessControl = request.app.state.platform.access
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    what = f"{request.method} {request.url.path}"
    try:
        principal = await authenticate(control, request.headers.get("authorization"))
    except (Unauthorized, KeyChecksThrottled) as error:
        control.audit.append(
            who="-", action="-", dataset="-", tier="-", what=what, decision="deny", reason=error.detail,
            unauthenticated=True,  # a bad key is no key: it must not decide how fast the log grows
        )
        raise
    access = RequestAccess(control, principal, what)
    request.state.access = access
    request.state.department = principal.department
    policy = ROUTE_POLICIES.get((request.method, template))
    if policy is None:
        control.audit.append(
            who=principal.department, key=principal.key_id, action="-", dataset="-", tier="-", what=what,
            decision="deny", reason="no access policy is declared for this route", unauthenticated=principal.anonymous,
        )
        raise Forbidden(f"no access policy is declared for {request.method} {template}: denied")
    if isinstance(policy, Open):
        control.audit.append(
            who=principal.department, key=principal.key_id, action="read", dataset="-", tier="public", what=what,
            decision="allow", reason="open route", unauthenticated=principal.anonymous,
        )
    elif isinstance(policy, Fixed):
        access.require(policy.dataset, policy.tier, policy.action)
    elif isinstance(policy, CapOrJson):
        access.require(policy.dataset, policy.tier(request.headers.get("accept", "")), policy.action)
    elif isinstance(policy, EntityById):
        access.require_entities([request.path_params[policy.param]], policy.action)
    elif isinstance(policy, OwnSubscription):
        _require_own_subscription(request, access, request.path_params[policy.param])
    elif not control.permissions(principal.department).has_any(policy.action):
        control.audit.append(
            who=principal.department, key=principal.key_id, action=policy.action, dataset="*", tier="*", what=what,
            decision="deny", reason="no grant for this action on any dataset", unauthenticated=principal.anonymous,
        )
        raise Forbidden(f"department '{principal.department}' may not {policy.action} any dataset")
    elif policy.audit_here:
        control.audit.append(
            who=principal.department, key=principal.key_id, action=policy.action, dataset="*", tier="*", what=what,
            decision="allow", reason=f"holds {policy.action} on some dataset; the route narrows to what is granted",
            unauthenticated=principal.anonymous,
        )


def _require_own_subscription(request: Request, access: RequestAccess, subscription_id: str) -> None:
    """A department reaches its own subscriptions, and one that administers `subscriptions` reaches them all.
    To any other department, another department's subscription answers exactly as an id nobody uses does:
    404, decided here, before the route reads anything else of the request. A 403 there, or the route's 400
    about a query parameter where an unused id got 404, would tell it which ids other departments use, and
    client-chosen ids name what they watch. The audit log keeps the real reason for the operator."""
    platform = request.app.state.platform
    tenant = request.headers.get("NGSILD-Tenant") or ""
    try:
        sub, _ = platform.subscriptions.get(tenant, subscription_id)
    except NgsiError:  # unknown, or a bad tenant
        sub = None
    control = access.control
    if sub is not None and sub.department == access.department:
        if not control.permissions(access.department).has_any(SUBSCRIBE):
            access.require("*", "*", SUBSCRIBE)  # audited denial
        _audit_subscription(access, SUBSCRIBE, "-", "allow", "own subscription")
        return
    if control.allows(access.department, SUBSCRIPTIONS, "aggregate", "administer"):
        access.require(SUBSCRIPTIONS, "aggregate", "administer")  # audited allowance; an unknown id: the route's 404
        return
    if not control.permissions(access.department).has_any(SUBSCRIBE):
        access.require("*", "*", SUBSCRIBE)  # the same audited 403 whatever the id
    if sub is None and tenant and not platform.store.has_tenant(tenant):
        # No subscription of anyone is there: the route's answer (400 or 404 NonexistentTenant) names the tenant only.
        _audit_subscription(access, SUBSCRIBE, "-", "allow", "no such tenant: the route answers")
        return
    if sub is None:
        _audit_subscription(access, SUBSCRIBE, "-", "deny", "no subscription has this id")
    else:
        owner = "the platform itself" if sub.department is None else f"department '{sub.department}'"
        _audit_subscription(
            access, "administer", "aggregate", "deny",
            f"a subscription of {owner}: needs administer on {SUBSCRIPTIONS}/aggregate; answered as an unknown id",
        )
    raise ResourceNotFound(f"subscription {subscription_id} was not found")  # word for word the route's 404


def _audit_subscription(access: RequestAccess, action: str, tier: str, decision: str, reason: str) -> None:
    access.control.audit.append(
        who=access.department, key=access.principal.key_id, action=action, dataset=SUBSCRIPTIONS, tier=tier,
        what=access.what, decision=decision, reason=reason, unauthenticated=access.principal.anonymous,
    )


async def authenticate(control: AccessControl, authorization: str | None) -> Principal:
    presented = bearer_key(authorization)
    if presented is None:
        return control.authenticate(None)
    verified = control.cached(presented)
    if verified is None:
        verified = await run_in_threadpool(control.verify, presented)  # argon2: tens of ms, off the event loop
    return Principal(verified.department, verified.key_id)


def app_routes(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path template, route) of every route the app serves, included routers opened up."""
    for route in app.routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            for ctx in candidates():
                for method in sorted(ctx.methods or ()):
                    yield method, ctx.path, ctx
            continue
        for method in sorted(getattr(route, "methods", None) or {"*"}):
            yield method, getattr(route, "path", ""), route
