"""POST /temporal/entityOperations/query (§5.7.4, OAS temporalQueryBatch): the temporal query with its selection
in a Query body answers exactly what GET /temporal/entities answers for the same selection, under the same
access control, audit, tenant handling and problem details."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client, problem

LD = "/ngsi-ld/v1"
GET_URL = f"{LD}/temporal/entities"
POST_URL = f"{LD}/temporal/entityOperations/query"
LOS_1 = "urn:ngsi-ld:TrafficFlowObserved:los-loop:q1"
LOS_2 = "urn:ngsi-ld:TrafficFlowObserved:los-loop:q2"
SZ_1 = "urn:ngsi-ld:TrafficFlowObserved:sz-taxi:q1"
CROWD = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:q1"
DOWNTOWN = [-118.25, 34.05]


def at(hour: int, minute: int = 0) -> str:
    return f"2026-03-01T{hour:02d}:{minute:02d}:00Z"


def _entity(eid: str, etype: str, where: list[float], speeds: list[float]) -> dict[str, Any]:
    return {
        "id": eid,
        "type": etype,
        "speed": [{"type": "Property", "value": v, "observedAt": at(h)} for h, v in enumerate(speeds)],
        "location": [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": where}, "observedAt": at(0)}],
    }


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TestClient, Platform]]:
    for client, platform in hub_client():
        seed = [
            _entity(LOS_1, "TrafficFlowObserved", [-118.251, 34.051], [10, 20, 30, 40, 50]),
            _entity(LOS_2, "TrafficFlowObserved", [-118.40, 34.20], [5, 6, 7, 8, 9]),  # ~20 km out
            _entity(SZ_1, "TrafficFlowObserved", [-118.252, 34.049], [60, 70, 80, 90, 100]),
            _entity(CROWD, "CrowdFlowObserved", [-118.25, 34.05], [1, 2, 3, 4, 5]),
        ]
        for entity in seed:
            r = client.post(GET_URL, json=entity)
            assert r.status_code == 201, r.text
        yield client, platform


def _same(get: Any, post: Any) -> None:
    """The POST answers what the GET answers: status, body, and the headers that carry the answer."""
    assert post.status_code == get.status_code, (post.status_code, post.text, get.text)
    assert post.json() == get.json()
    for header in ("Content-Range", "NGSILD-Results-Count", "Content-Type"):
        assert post.headers.get(header) == get.headers.get(header), header
    rels = [part.split(";")[1].strip() for part in get.headers.get("Link", "").split(", ") if ";" in part]
    assert rels == [part.split(";")[1].strip() for part in post.headers.get("Link", "").split(", ") if ";" in part]


BETWEEN = {"timerel": "between", "timeAt": at(1), "endTimeAt": at(3, 30)}
TRAFFIC = [{"type": "TrafficFlowObserved"}]
NEAR = {"georel": "near;maxDistance==2000", "geometry": "Point"}

# (GET parameters, Query body members besides "type", URL parameters of the POST)
SELECTIONS: list[tuple[dict[str, str], dict[str, Any], dict[str, str]]] = [
    ({"type": "TrafficFlowObserved", "attrs": "speed", **BETWEEN},
     {"entities": TRAFFIC, "attrs": ["speed"], "temporalQ": BETWEEN}, {}),
    ({"type": "TrafficFlowObserved", "q": "speed>25", "timerel": "after", "timeAt": at(2)},
     {"entities": TRAFFIC, "q": "speed>25", "temporalQ": {"timerel": "after", "timeAt": at(2)}}, {}),
    ({"type": "TrafficFlowObserved", **NEAR, "coordinates": orjson.dumps(DOWNTOWN).decode(), "attrs": "speed"},
     {"entities": TRAFFIC, "geoQ": {**NEAR, "coordinates": DOWNTOWN}, "attrs": ["speed"], "temporalQ": {}}, {}),
    ({"type": "TrafficFlowObserved", "attrs": "speed", "lastN": "2", **BETWEEN},
     {"entities": TRAFFIC, "attrs": ["speed"], "temporalQ": BETWEEN}, {"lastN": "2"}),
    ({"type": "TrafficFlowObserved,CrowdFlowObserved", "attrs": "speed", "options": "temporalValues", **BETWEEN},
     {"entities": [{"type": "TrafficFlowObserved,CrowdFlowObserved"}], "attrs": ["speed"], "temporalQ": BETWEEN},
     {"options": "temporalValues"}),
    ({"type": "TrafficFlowObserved", "count": "true", "limit": "1", "offset": "1",
      "timerel": "before", "timeAt": at(2)},
     {"entities": TRAFFIC, "temporalQ": {"timerel": "before", "timeAt": at(2)}},
     {"count": "true", "limit": "1", "offset": "1"}),
    ({"type": "TrafficFlowObserved", "attrs": "speed", "options": "aggregatedValues", "aggrMethods": "avg,max",
      "aggrPeriodDuration": "PT2H", **BETWEEN},
     {"entities": TRAFFIC, "attrs": ["speed"], "temporalQ": BETWEEN},
     {"options": "aggregatedValues", "aggrMethods": "avg,max", "aggrPeriodDuration": "PT2H"}),
    ({"id": LOS_2, "type": "TrafficFlowObserved", "pick": "id,speed", "timerel": "after", "timeAt": at(3)},
     {"entities": [{"type": "TrafficFlowObserved", "id": LOS_2}], "temporalQ": {"timerel": "after", "timeAt": at(3)}},
     {"pick": "id,speed"}),
]


@pytest.mark.parametrize(("get_params", "query", "post_params"), SELECTIONS)
def test_the_post_answers_what_the_get_answers(
    hub: tuple[TestClient, Platform], get_params: dict[str, str], query: dict[str, Any], post_params: dict[str, str]
) -> None:
    client, _ = hub
    get = client.get(GET_URL, params=get_params)
    assert get.status_code in (200, 206) and get.json(), get.text  # a selection that holds something
    _same(get, client.post(POST_URL, params=post_params, json={"type": "Query", **query}))


def test_what_each_selection_holds(hub: tuple[TestClient, Platform]) -> None:
    """The comparisons above are not of two empty answers: the POST selects what its body names."""
    client, _ = hub

    def ids(query: dict[str, Any], **params: str) -> list[str]:
        r = client.post(POST_URL, params=params, json={"type": "Query", **query})
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()]

    assert ids({"entities": TRAFFIC, "temporalQ": BETWEEN}) == [LOS_1, LOS_2, SZ_1]
    assert ids({"entities": TRAFFIC, "q": "speed>55", "temporalQ": {}}) == [SZ_1]
    assert ids({"entities": TRAFFIC, "geoQ": {**NEAR, "coordinates": DOWNTOWN}, "temporalQ": {}}) == [LOS_1, SZ_1]
    r = client.post(POST_URL, params={"lastN": "2", "options": "temporalValues"},
                    json={"type": "Query", "entities": [{"type": "TrafficFlowObserved", "id": LOS_1}],
                          "attrs": ["speed"], "temporalQ": BETWEEN})
    assert r.json()[0]["speed"]["values"] == [[30, at(2)], [40, at(3)]]  # the last 2 in the window


def test_the_next_page_is_the_same_body_posted_to_the_next_link(hub: tuple[TestClient, Platform]) -> None:
    """§6.3.10 pagination of a POST query: the Link names this URL with the offset moved; the client POSTs the
    same body there and gets the GET's next page."""
    client, _ = hub
    body = {"type": "Query", "entities": TRAFFIC, "temporalQ": BETWEEN}
    first = client.post(POST_URL, params={"limit": "2"}, json=body)
    assert first.status_code == 200 and len(first.json()) == 2
    link = first.links["next"]["url"]
    assert link.startswith(POST_URL + "?")
    following = client.post(link, json=body)
    second = client.get(GET_URL, params={"type": "TrafficFlowObserved", "limit": "2", "offset": "2", **BETWEEN})
    _same(second, following)
    assert [e["id"] for e in following.json()] == [SZ_1]


# -- bad input: the GET's problems ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([{"type": "Query"}], "Query object"),
        ({"type": "Subscription", "temporalQ": BETWEEN}, "Query object"),
        ({"type": "Query", "entities": TRAFFIC}, "temporalQ"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": "between"}, "temporalQ"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": {"timeRel": "before", "timeAt": at(1)}}, "timeRel"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": {"timerel": "before", "timeAt": 5}}, "timeAt"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": {"timerel": "during", "timeAt": at(1)}}, "timerel"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": {"timerel": "between", "timeAt": at(1)}}, "endTimeAt"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": {"timerel": "after", "timeAt": "yesterday"}}, "timeAt"),
        ({"type": "Query", "entities": TRAFFIC, "temporalQ": {**BETWEEN, "timeproperty": "modifiedAt"}}, "observedAt"),
        ({"type": "Query", "entities": [{"id": LOS_1}], "temporalQ": BETWEEN}, "type"),
        ({"type": "Query", "temporalQ": BETWEEN}, "at least one"),
        ({"type": "Query", "entities": TRAFFIC, "q": "speed>", "temporalQ": BETWEEN}, "q"),
    ],
)
def test_a_bad_body_is_400(hub: tuple[TestClient, Platform], body: Any, fragment: str) -> None:
    client, _ = hub
    problem(client.post(POST_URL, json=body), 400, "BadRequestData", fragment)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"type": "TrafficFlowObserved"}, "type"),  # the selection is in the body, not in the URL
        ({"timerel": "before"}, "timerel"),
        ({"local": "maybe"}, "local"),
        ({"lastN": "0"}, "lastN"),
        ({"options": "keyValues"}, "keyValues"),
        ({"options": "aggregatedValues", "aggrMethods": "median"}, "median"),
        ({"limit": "-1"}, "limit"),
    ],
)
def test_bad_url_parameters_are_400_as_on_the_get(
    hub: tuple[TestClient, Platform], params: dict[str, str], fragment: str
) -> None:
    client, _ = hub
    body = {"type": "Query", "entities": TRAFFIC, "temporalQ": BETWEEN}
    post = problem(client.post(POST_URL, params=params, json=body), 400, None, fragment)
    if "type" not in params and "timerel" not in params:  # the GET takes those two; the rest it refuses alike
        get = client.get(GET_URL, params={"type": "TrafficFlowObserved", **BETWEEN, **params})
        assert post == get.json()


def test_local_is_taken(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    body = {"type": "Query", "entities": TRAFFIC, "temporalQ": BETWEEN}
    plain = client.post(POST_URL, json=body)
    assert plain.status_code == 200 and plain.json(), plain.text
    _same(plain, client.post(POST_URL, params={"local": "true"}, json=body))


def test_no_geojson_as_on_the_get(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    geo = {"Accept": "application/geo+json"}
    post = client.post(POST_URL, headers=geo, json={"type": "Query", "entities": TRAFFIC, "temporalQ": BETWEEN})
    assert post.status_code == client.get(GET_URL, headers=geo, params={"type": "TrafficFlowObserved"}).status_code
    problem(post, 406, None)


# -- tenants, access control and audit ------------------------------------------------------------------------


def test_tenants_as_on_the_get(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    body = {"type": "Query", "entities": TRAFFIC, "temporalQ": {}}
    missing = {"NGSILD-Tenant": "nosuchtenant"}
    post = problem(client.post(POST_URL, headers=missing, json=body), 404, "NonexistentTenant")
    assert post == client.get(GET_URL, headers=missing, params={"type": "TrafficFlowObserved"}).json()
    city = {"NGSILD-Tenant": "othercity"}
    elsewhere = _entity("urn:ngsi-ld:TrafficFlowObserved:los-loop:t9", "TrafficFlowObserved", DOWNTOWN, [1])
    assert client.post(GET_URL, headers=city, json=elsewhere).status_code == 201
    r = client.post(POST_URL, headers=city, json=body)
    assert r.status_code == 200 and [e["id"] for e in r.json()] == [elsewhere["id"]]
    assert r.headers["NGSILD-Tenant"] == "othercity"
    assert elsewhere["id"] not in [e["id"] for e in client.post(POST_URL, json=body).json()]


def _key(platform: Platform, department: str, *grants: tuple[str, str, str]) -> dict[str, str]:
    platform.access.create_department(department)
    for grant in grants:
        platform.access.grant(department, *grant)
    return {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}


def test_narrowed_to_the_readable_datasets_and_audited(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    transport = _key(platform, "transport-tq", ("los-loop", "aggregate", "read"))
    nothing = _key(platform, "nothing-tq")
    body = {"type": "Query", "entities": TRAFFIC, "temporalQ": BETWEEN}
    audit = platform.settings.audit_log_path
    before = len(audit.read_bytes().splitlines())
    r = client.post(POST_URL, headers=transport, params={"count": "true"}, json=body)
    assert [e["id"] for e in r.json()] == [LOS_1, LOS_2] and r.headers["NGSILD-Results-Count"] == "2"
    _same(client.get(GET_URL, headers=transport, params={"type": "TrafficFlowObserved", "count": "true", **BETWEEN}), r)
    # A key with no grants reads what the public may (alerts): no traffic sensor, here as on the GET.
    r = client.post(POST_URL, headers=nothing, json=body)
    assert r.status_code == 200 and r.json() == []
    _same(client.get(GET_URL, headers=nothing, params={"type": "TrafficFlowObserved", **BETWEEN}), r)
    entries = [orjson.loads(line) for line in audit.read_bytes().splitlines()[before:]]

    def decisions(method: str, url: str) -> list[tuple[str, str, str, str, str]]:
        return [(e["who"], e["decision"], e["action"], e["dataset"], e["tier"])
                for e in entries if e["what"] == f"{method} {url}"]

    assert decisions("POST", POST_URL) == decisions("GET", GET_URL)  # audited as the GET is
    assert {(who, decision) for who, decision, *_ in decisions("POST", POST_URL)} == {
        ("transport-tq", "allow"), ("nothing-tq", "allow")  # each allowed what the public and its grants read
    }


def test_instances_cut_at_the_cap_are_206_with_the_gets_content_range() -> None:
    for client, _ in hub_client(max_temporal_instances=3):
        assert client.post(GET_URL, json=_entity(LOS_1, "TrafficFlowObserved", DOWNTOWN, [1, 2, 3, 4, 5])).is_success
        for extra in ({}, {"lastN": "4"}):
            get = client.get(GET_URL, params={"type": "TrafficFlowObserved", "attrs": "speed", **extra})
            post = client.post(POST_URL, params=extra, json={"type": "Query", "entities": TRAFFIC,
                                                               "attrs": ["speed"], "temporalQ": {}})
            assert get.status_code == 206 and get.headers["Content-Range"]
            _same(get, post)
