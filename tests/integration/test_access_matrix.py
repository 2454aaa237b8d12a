"""The full access matrix: every department x dataset x tier x action gives exactly the granted answer,
through the real routes (entities, batch, temporal, discovery, subscriptions, and every route with a fixed
policy: operations, contexts, mobility products, alerts, audit), and in the decision itself for the
combinations no route exercises (e.g. `administer` on a dataset)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from polis.access.datasets import DATASETS, dataset_of, entity_tier, served_tiers
from polis.access.enforce import ROUTE_POLICIES, Fixed
from polis.access.grants import ACTIONS, ANY, TIERS
from polis.api.app import create_app
from polis.platform import Platform

LD = "/ngsi-ld/v1"

# One entity per dataset, each of its own type (so type-based discovery shows the narrowing too).
SEED = {
    "los-loop": ("urn:ngsi-ld:TrafficFlowObserved:los-loop:m1", "TrafficFlowObserved"),
    "melbourne-pedestrians": ("urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:m1", "CrowdFlowObserved"),
    "montgomery-911": ("urn:ngsi-ld:EmergencyCall:montgomery-911:m1", "EmergencyCall"),
    "alerts": ("urn:ngsi-ld:Alert:m1", "Alert"),
    "other": ("urn:ngsi-ld:Sensor:m1", "Sensor"),
}

GRANTS: dict[str, set[tuple[str, str, str]]] = {
    "transport": {
        ("los-loop", "aggregate", "read"), ("los-loop", "aggregate", "write"), ("los-loop", "aggregate", "subscribe"),
        ("other", "aggregate", "read"), ("citibike-jersey-city", "aggregate", "read"),
        ("operations", "aggregate", "read"),
    },
    "health": {
        ("melbourne-pedestrians", "aggregate", "read"), ("melbourne-pedestrians", "aggregate", "subscribe"),
        ("montgomery-911", "raw-pseudonymous", "read"), ("citibike-jersey-city", "public", "read"),
        ("contexts", "public", "write"),
    },
    "emergency": {
        ("montgomery-911", "raw-pseudonymous", "read"), ("montgomery-911", "raw-pseudonymous", "write"),
        ("alerts", "aggregate", "read"), ("alerts", "aggregate", "administer"), ("alerts", "public", "write"),
        ("operations", "raw-pseudonymous", "read"), ("citibike-jersey-city", "raw-pseudonymous", "read"),
        ("audit", "raw-pseudonymous", "administer"), ("other", "aggregate", "write"),
    },
    # the right datasets at the wrong tiers (tiers they are served at: others are refused): a coarser tier
    # opens nothing finer, and only read carries over to coarser tiers
    "wrongtier": {
        ("citibike-jersey-city", "public", "read"), ("citibike-jersey-city", "aggregate", "write"),
        ("alerts", "aggregate", "subscribe"), ("alerts", "public", "administer"), ("operations", "aggregate", "write"),
    },
    "nogrants": set(),
    # `public` is the bootstrap grant set (requests without a key)
    "public": {("alerts", "public", "read"), ("contexts", "public", "read")},
}
DEPARTMENTS = list(GRANTS)
ALL_DATASETS = sorted({*DATASETS, "operations", "contexts", "audit", "subscriptions"})


def granted(department: str, dataset: str, tier: str, action: str) -> bool:
    """Its own grants and public's (a key never gives less than no key); read at a tier includes the
    coarser tiers the dataset is served at."""
    return any(
        d == dataset and a == action
        and (t == tier or (a == "read" and TIERS.index(t) < TIERS.index(tier) and tier in served_tiers(d)))
        for d, t, a in GRANTS[department] | GRANTS["public"]
    )


@dataclass
class Hub:
    client: TestClient
    platform: Platform
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    platform = Platform.in_memory()
    admin = {"Authorization": f"Bearer {platform.access.admin_key()}"}
    headers = {"public": {}}
    for department, grants in GRANTS.items():
        if department == "public":
            continue
        platform.access.create_department(department)
        for grant in grants:
            platform.access.grant(department, *grant)
        headers[department] = {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        for entity_id, etype in SEED.values():
            body = {"id": entity_id, "type": etype, "level": {"type": "Property", "value": 1,
                                                              "observedAt": "2026-11-26T08:00:00Z"}}
            assert client.post(f"{LD}/entities", json=body, headers=admin).status_code == 201
        yield Hub(client, platform, headers)
    platform.close()


# -- probes: one real request each, and the (dataset, tier, action) it needs ---------------------------------

Probe = Callable[[TestClient, dict[str, str], str], Response]
_fresh = itertools.count()


def _entity_probes(dataset: str) -> dict[str, tuple[str, Probe]]:
    entity_id, etype = SEED[dataset]

    def query(c: TestClient, h: dict[str, str], d: str) -> Response:
        r = c.get(f"{LD}/entities", params={"type": etype, "count": "true"}, headers=h)
        return _present(r, entity_id)

    def post_query(c: TestClient, h: dict[str, str], d: str) -> Response:
        r = c.post(f"{LD}/entityOperations/query", json={"type": "Query", "entities": [{"type": etype}]}, headers=h)
        return _present(r, entity_id)

    def temporal_query(c: TestClient, h: dict[str, str], d: str) -> Response:
        return _present(c.get(f"{LD}/temporal/entities", params={"type": etype}, headers=h), entity_id)

    def types(c: TestClient, h: dict[str, str], d: str) -> Response:
        r = c.get(f"{LD}/types", headers=h)
        if r.status_code == 200 and etype not in r.json()["typeList"]:
            return Response(403)
        return r

    def attributes(c: TestClient, h: dict[str, str], d: str) -> Response:
        r = c.get(f"{LD}/types/{etype}", headers=h)
        return Response(403) if r.status_code == 404 else r  # narrowed away = not there for this department

    def create_delete(c: TestClient, h: dict[str, str], d: str) -> Response:
        fresh = entity_id.rsplit(":", 1)[0] + f":fresh{next(_fresh)}"
        if len(fresh.split(":")) < 5 and dataset == "other":
            fresh = f"urn:ngsi-ld:Sensor:fresh{next(_fresh)}"
        r = c.post(f"{LD}/entities", json={"id": fresh, "type": etype}, headers=h)
        if r.status_code != 201:
            return r
        return c.delete(f"{LD}/entities/{fresh}", headers=h)

    def subscribe(c: TestClient, h: dict[str, str], d: str) -> Response:
        body = {"type": "Subscription", "entities": [{"type": etype, "id": entity_id}],
                "notification": {"endpoint": {"uri": "urn:polis:sse"}}}
        return c.post(f"{LD}/subscriptions", json=body, headers=h)

    def forecast(c: TestClient, h: dict[str, str], d: str) -> Response:
        r = c.get(f"/polis/v1/forecasts/{entity_id}", params={"attr": "level"}, headers=h)
        return Response(200) if r.status_code == 404 else r  # allowed, and no forecast made for it

    attr = {"probe": {"type": "Property", "value": 2}}
    return {
        "retrieve": ("read", lambda c, h, d: c.get(f"{LD}/entities/{entity_id}", headers=h)),
        "query": ("read", query),
        "post-query": ("read", post_query),
        "temporal-retrieve": ("read", lambda c, h, d: c.get(f"{LD}/temporal/entities/{entity_id}", headers=h)),
        "temporal-query": ("read", temporal_query),
        "types": ("read", types),
        "type-details": ("read", attributes),
        "append-attrs": ("write", lambda c, h, d: c.post(f"{LD}/entities/{entity_id}/attrs", json=attr, headers=h)),
        "patch-attr": ("write", lambda c, h, d: c.patch(f"{LD}/entities/{entity_id}/attrs/level",
                                                         json={"value": 3}, headers=h)),
        "batch-upsert": ("write", lambda c, h, d: c.post(f"{LD}/entityOperations/upsert?options=update",
                                                          json=[{"id": entity_id, "type": etype, **attr}], headers=h)),
        "temporal-add": ("write", lambda c, h, d: c.post(f"{LD}/temporal/entities", headers=h, json={
            "id": entity_id, "type": etype,
            "level": [{"type": "Property", "value": 4, "observedAt": "2026-11-26T09:00:00Z"}]})),
        "create-delete": ("write", create_delete),
        "subscribe": ("subscribe", subscribe),
        "forecast": ("read", forecast),
    }


def _present(r: Response, entity_id: str) -> Response:
    """A query answers 200 either way: the entity missing from it is the denial."""
    if r.status_code == 200 and entity_id not in [e["id"] for e in r.json()]:
        return Response(403)
    return r


ENTITY_CASES = [
    (dataset, name, action, probe)
    for dataset in SEED
    for name, (action, probe) in _entity_probes(dataset).items()
]


def _fixed_routes() -> list[tuple[str, str, Fixed]]:
    return [(m, p, policy) for (m, p), policy in ROUTE_POLICIES.items() if isinstance(policy, Fixed)]


def _fill(path: str) -> str:
    """Dummy values for path parameters: an allowed request may 404 or 400, only a denied one is 403."""
    import re

    return re.sub(r"\{[^}]+\}", "probe-1", path)


@pytest.mark.parametrize("department", DEPARTMENTS)
@pytest.mark.parametrize("dataset,name,action,probe", ENTITY_CASES,
                         ids=[f"{d}-{n}" for d, n, _, _ in ENTITY_CASES])
def test_entity_routes_answer_exactly_the_grant(
    hub: Hub, department: str, dataset: str, name: str, action: str, probe: Probe
) -> None:
    expected = granted(department, dataset, entity_tier(dataset), action)
    r = probe(hub.client, hub.headers[department], department)
    assert r.status_code not in (401, 500), r.text
    if expected:
        assert r.status_code < 300, (department, dataset, name, r.status_code, r.text)
    else:
        assert r.status_code == 403, (department, dataset, name, r.status_code, r.text)


@pytest.mark.parametrize("department", DEPARTMENTS)
@pytest.mark.parametrize("method,path,policy", _fixed_routes(), ids=[f"{m} {p}" for m, p, _ in _fixed_routes()])
def test_fixed_policy_routes_answer_exactly_the_grant(
    hub: Hub, department: str, method: str, path: str, policy: Fixed
) -> None:
    expected = granted(department, policy.dataset, policy.tier, policy.action)
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    r = hub.client.request(method, _fill(path), headers=hub.headers[department], **kwargs)  # type: ignore[arg-type]
    assert r.status_code not in (401, 500), r.text
    assert (r.status_code != 403) == expected, (department, method, path, r.status_code, r.text)
    if not expected:
        problem = r.json()
        assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/Forbidden" and problem["status"] == 403
        assert department in problem["detail"] and policy.dataset in problem["detail"]


def test_the_decision_matrix_is_exact_for_every_combination(hub: Hub) -> None:
    """Every department x dataset x tier x action, including the ones no route exercises."""
    wrong = [
        (d, ds, t, a)
        for d in DEPARTMENTS
        for ds in ALL_DATASETS
        for t in TIERS
        for a in ACTIONS
        if hub.platform.access.allows(d, ds, t, a) != granted(d, ds, t, a)
    ]
    assert wrong == []
    assert len(DEPARTMENTS) * len(ALL_DATASETS) * len(TIERS) * len(ACTIONS) >= 600


def test_admin_holds_every_grant_through_its_wildcard(hub: Hub) -> None:
    assert all(hub.platform.access.allows("admin", ds, t, a) for ds in ALL_DATASETS for t in TIERS for a in ACTIONS)
    assert (ANY, ANY, ANY) in {(g.dataset, g.tier, g.action) for g in hub.platform.access.permissions("admin").grants}


def test_counts_are_honest_for_a_narrowed_query(hub: Hub) -> None:
    """Filtering happens in the query: the total and the pages only count what the department may read."""
    admin = {"Authorization": f"Bearer {hub.platform.access.admin_key()}"}
    everything = hub.client.get(f"{LD}/entities", params={"type": "*", "count": "true", "limit": 100}, headers=admin)
    assert everything.status_code == 200 and int(everything.headers["NGSILD-Results-Count"]) >= len(SEED)
    ids = {e["id"] for e in everything.json() if dataset_of(e["id"]) in ("los-loop", "other", "alerts")}  # transport's
    assert {SEED["los-loop"][0], SEED["other"][0]} <= ids
    first = hub.client.get(f"{LD}/entities", params={"type": "*", "count": "true", "limit": 1},
                           headers=hub.headers["transport"])
    assert first.status_code == 200 and int(first.headers["NGSILD-Results-Count"]) == len(ids)
    second = hub.client.get(f"{LD}/entities", params={"type": "*", "limit": 1, "offset": 1},
                            headers=hub.headers["transport"])
    assert len(first.json()) == len(second.json()) == 1
    assert {first.json()[0]["id"], second.json()[0]["id"]} <= ids


def test_every_decision_allowed_or_denied_is_appended_to_an_intact_audit_log(hub: Hub) -> None:
    import orjson

    from polis.access.audit import verify

    path = hub.platform.settings.audit_log_path
    before = len(path.read_bytes().splitlines())
    los_loop = SEED["los-loop"][0]
    for department in DEPARTMENTS:
        hub.client.get(f"{LD}/entities/{los_loop}", headers=hub.headers[department])
    entries = [orjson.loads(x) for x in path.read_bytes().splitlines()[before:]]
    assert [(e["who"], e["decision"], e["dataset"], e["tier"], e["action"], e["what"]) for e in entries] == [
        (d, "allow" if granted(d, "los-loop", "aggregate", "read") else "deny", "los-loop", "aggregate", "read",
         f"GET {LD}/entities/{los_loop}")
        for d in DEPARTMENTS
    ]
    assert all(e["key"] for e in entries if e["who"] != "public")  # which key, not only which department
    result = verify(path)
    assert result.ok and result.entries == before + len(DEPARTMENTS), result
