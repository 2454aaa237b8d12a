"""Defects found by fuzzing the in-process API's write operations (batch, attribute PATCH/PUT/POST, temporal
instances, subscriptions, @context registration, content negotiation), one test per defect. Each test states
the behaviour the product rules ask for: a specific NGSI-LD problem with the right 4xx status, nothing
written by a refused request, no personal data kept, and no malformed data stored or served. They fail until
the defects are fixed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import ERR, hub_client, problem

BASE = "/ngsi-ld/v1"
ENTITIES = BASE + "/entities"
TEMPORAL = BASE + "/temporal/entities"
SUBSCRIPTIONS = BASE + "/subscriptions"
CONTEXTS = BASE + "/jsonldContexts"
JSONLD_REL = "http://www.w3.org/ns/json-ld#context"
NULL = "urn:ngsi-ld:null"
EMAIL = "jane.roe@example.org"
EID = "urn:ngsi-ld:V:1"


@pytest.fixture
def fresh() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="{JSONLD_REL}"; type="application/ld+json"'}


# -- subscriptions: never scanned for personal data ---------------------------------------------------------

SUBSCRIPTION: dict[str, Any] = {
    "type": "Subscription",
    "entities": [{"type": "V"}],
    "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
}


def _with_endpoint(**members: Any) -> dict[str, Any]:
    return {"notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify", **members}}}


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        pytest.param("description", {"description": f"write to {EMAIL} when it fires"}, id="email-in-description"),
        pytest.param("subscriptionName", {"subscriptionName": "call +33 6 12 34 56 78"}, id="phone-in-name"),
        pytest.param("q", {"q": f'contact=="{EMAIL}"'}, id="email-in-q"),
        pytest.param(
            "receiverInfo",
            _with_endpoint(receiverInfo=[{"key": "X-Owner", "value": EMAIL}]),
            id="email-in-receiverInfo",
        ),
        pytest.param(
            "notifierInfo",
            _with_endpoint(notifierInfo=[{"key": "X-Owner", "value": EMAIL}]),
            id="email-in-notifierInfo",
        ),
        pytest.param(
            "uri", {"notification": {"endpoint": {"uri": f"http://127.0.0.1:9/notify?to={EMAIL}"}}}, id="email-in-uri"
        ),
    ],
)
def test_a_subscription_holding_personal_data_is_refused(
    fresh: tuple[TestClient, Platform], method: str, member: str, fragment: dict[str, Any]
) -> None:
    """POST /ngsi-ld/v1/subscriptions (or PATCH /subscriptions/{id}) with an e-mail address or a phone number in
    description, subscriptionName, q, notification.endpoint.receiverInfo/notifierInfo or the endpoint URI:
    201/204, the subscription is stored with the identifier and served back by GET /subscriptions. Nothing in
    polis/subscriptions (model.parse_subscription / apply_patch, service.create / update) calls the privacy
    refusal; only jsonldContext is scanned (by the @context fetch). The rule is that no identifier is ever
    stored, on every write path: 422 PersonalDataRefused naming the member, and nothing stored or changed."""
    client, _ = fresh
    if method == "POST":
        r = client.post(SUBSCRIPTIONS, json={**SUBSCRIPTION, **fragment})
    else:
        created = client.post(SUBSCRIPTIONS, json=SUBSCRIPTION)
        assert created.status_code == 201, created.text
        r = client.patch(created.headers["Location"], json=fragment)
    problem(r, 422, "PersonalDataRefused", member)
    stored = client.get(SUBSCRIPTIONS).json()
    assert EMAIL not in orjson.dumps(stored).decode() and "12 34 56 78" not in orjson.dumps(stored).decode()
    assert len(stored) == (0 if method == "POST" else 1)


# -- @context: a refused cyclic context is kept in the registry ----------------------------------------------


class ContextServer:
    """A local http.server on a free port of 127.0.0.1 serving JSON-LD documents by path."""

    def __init__(self, documents: dict[str, Any]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = orjson.dumps(documents.get(self.path, {"@context": {}}))
                self.send_response(200)
                self.send_header("Content-Type", "application/ld+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def context_server() -> Iterator[ContextServer]:
    documents: dict[str, Any] = {}
    server = ContextServer(documents)
    documents["/self.jsonld"] = {"@context": [server.url + "/self.jsonld", {"speed": "http://e.org/speed"}]}
    documents["/a.jsonld"] = {"@context": [server.url + "/b.jsonld"]}
    documents["/b.jsonld"] = {"@context": [server.url + "/a.jsonld"]}
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/self.jsonld", "/a.jsonld"], ids=["names-itself", "a-b-a"])
def test_a_cyclic_remote_context_is_refused_and_not_kept(
    fresh: tuple[TestClient, Platform], context_server: ContextServer, path: str
) -> None:
    """POST /ngsi-ld/v1/entities with Link: <http://127.0.0.1:PORT/self.jsonld>, a document whose @context
    names itself (or a -> b -> a): the request is rightly refused (400 "includes itself"), but
    ContextCache._remote saves each downloaded document as a Cached context (context.py:590, `self._save`)
    before its own remote references are applied, so the refused, unusable document stays in the registry:
    listed by GET /jsonldContexts, served by GET /jsonldContexts/{id}, and written to disk. A rejected
    request must write nothing: the 400, and the registry as empty as before."""
    client, platform = fresh
    url = context_server.url + path
    r = client.post(ENTITIES, json={"id": EID, "type": "V", "speed": 1}, headers=link(url))
    problem(r, 400, "BadRequestData", "includes itself")
    assert platform.store.entity_count("") == 0
    kept = client.get(CONTEXTS, params={"details": "true"}).json()
    assert kept == [], f"the refused context is kept in the registry: {kept}"


# -- @context: terms that expand to names the API refuses ----------------------------------------------------


@pytest.mark.parametrize("iri", ["a b", "urn:x:(y)", "http://e.org/<b>", 'http://e.org/a"b'])
def test_a_context_cannot_give_an_attribute_a_name_the_api_refuses(
    fresh: tuple[TestClient, Platform], iri: str
) -> None:
    """POST /ngsi-ld/v1/entities (application/ld+json) {"@context": {"x": "a b"}, "id": ..., "x": {...}} (or
    a registered context with the same term): 201, the attribute is stored under the name 'a b' (also
    'urn:x:(y)', 'http://e.org/<b>'), which GET /attributes lists and a q query can never name from the core
    context. Sent directly, the same name is refused (entity_codec._check_name: "must not contain whitespace
    or any of <>\\"'=;()"), but the check runs on the term as sent, never on what the context expands it to.
    The expanded name must pass the same rule: 400 BadRequestData naming the attribute, nothing stored."""
    client, platform = fresh
    body = {"@context": {"x": iri}, "id": EID, "type": "V", "x": {"type": "Property", "value": 1}}
    r = client.post(ENTITIES, content=orjson.dumps(body), headers={"Content-Type": "application/ld+json"})
    problem(r, 400, "BadRequestData", "x")
    assert platform.store.entity_count("") == 0


# -- names with a comma: stored, then unreachable by any type or attrs list ----------------------------------


@pytest.mark.parametrize(
    ("entity", "selector"),
    [
        pytest.param({"id": EID, "type": "V,W"}, {"type": "V,W"}, id="type-with-comma"),
        pytest.param({"id": EID, "type": "V", "a,b": 1}, {"type": "V", "attrs": "a,b"}, id="attribute-with-comma"),
    ],
)
def test_a_name_with_a_comma_is_refused(
    fresh: tuple[TestClient, Platform], entity: dict[str, Any], selector: dict[str, str]
) -> None:
    """POST /ngsi-ld/v1/entities {"id": ..., "type": "V,W"} (or an attribute named "a,b"): 201. The name
    rules (entity_codec: type names and attribute names refuse whitespace and <>\\"'=;() ) leave out the
    comma, which is the list separator of type=, attrs=, pick= and omit=: GET /entities?type=V,W answers
    the entities of type V or W and never this one, and attrs=a,b asks for 'a' and 'b'. A name no query can
    select must be refused as a name: 400 BadRequestData, nothing stored."""
    client, platform = fresh
    r = client.post(ENTITIES, json=entity)
    if r.status_code == 201:  # what is lost: the stored entity is not found by its own name
        found = client.get(ENTITIES, params=selector).json()
        assert any(e["id"] == EID and e.get("type") == entity["type"] for e in found), (
            f"stored with a name that {selector} cannot select: {found}"
        )
    problem(r, 400, "BadRequestData")
    assert platform.store.entity_count("") == 0


# -- merge-patch with the NGSI-LD null stores a malformed attribute ------------------------------------------


@pytest.mark.parametrize(
    "attribute",
    [
        pytest.param({"type": "LanguageProperty", "languageMap": NULL}, id="languageMap-null"),
        pytest.param({"type": "ListProperty", "valueList": NULL}, id="valueList-null"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", ""), ("POST", "/attrs"), ("PATCH", "/attrs")],
    ids=["merge-entity", "append-attrs", "update-attrs"],
)
def test_the_null_marker_as_a_language_map_or_value_list_stores_no_malformed_attribute(
    fresh: tuple[TestClient, Platform], method: str, path: str, attribute: dict[str, Any]
) -> None:
    """PATCH /ngsi-ld/v1/entities/{id} {"m": {"type": "LanguageProperty", "languageMap": "urn:ngsi-ld:null"}}
    (or "valueList": "urn:ngsi-ld:null"; also POST and PATCH .../attrs): 204 and the entity now holds a
    LanguageProperty whose languageMap is a string (a ListProperty whose valueList is a string), served as
    such by GET (and as `{"type": "Property", "value": null}` with ?lang=en). _Reader._value
    (entity_codec.py:327) returns the null marker as the member's value before the shape check that refuses
    the same attribute on create ("a languageMap must be an object"); nothing deletes it either. Per
    NGSI-LD merge semantics the marker deletes the attribute; if it is not taken as that, the body must be
    400 and the attribute left as it was. Never a malformed attribute stored."""
    client, _ = fresh
    assert (
        client.post(ENTITIES, json={"id": EID, "type": "V", "m": {"type": "Property", "value": 5}}).status_code == 201
    )
    r = client.request(method, f"{ENTITIES}/{EID}{path}", json={"m": attribute})
    stored = client.get(f"{ENTITIES}/{EID}").json()
    if r.status_code == 204:
        assert "m" not in stored, f"the null marker was stored as data: {stored['m']}"
    else:
        problem(r, 400, "BadRequestData", "m")
        assert stored["m"] == {"type": "Property", "value": 5}


# -- PUT of one attribute takes an attribute without its value -----------------------------------------------


@pytest.mark.parametrize("kind", ["Property", "Relationship", "GeoProperty", "LanguageProperty", "ListProperty"])
def test_replacing_an_attribute_with_one_that_has_no_value_is_400(
    fresh: tuple[TestClient, Platform], kind: str
) -> None:
    """PUT /ngsi-ld/v1/entities/{id}/attrs/m {"type": "Property"} (or Relationship, GeoProperty, ... with no
    value/object/languageMap/valueList): 204 and the entity holds `"m": {"type": "Property"}` (keyValues
    shows `"m": null`). replace_attr (entities.py:367) reads the body with expand_attribute_instance, which
    reads every body as a *partial* instance (entity_codec.py:270, `elif not partial`), so the check that
    makes create answer "a Property needs a 'value'" is skipped. A replacement is a whole attribute: 400
    BadRequestData naming the missing member, and the attribute left as it was."""
    client, _ = fresh
    assert (
        client.post(ENTITIES, json={"id": EID, "type": "V", "m": {"type": "Property", "value": 5}}).status_code == 201
    )
    r = client.put(f"{ENTITIES}/{EID}/attrs/m", json={"type": kind})
    problem(r, 400, "BadRequestData", "m")
    assert client.get(f"{ENTITIES}/{EID}").json()["m"] == {"type": "Property", "value": 5}


# -- PATCH of one attribute: a malformed datasetId is a 404 ---------------------------------------------------


@pytest.mark.parametrize("dataset_id", [5, "not a uri", ["urn:ds:a"]])
def test_a_malformed_dataset_id_in_an_attribute_patch_is_400(
    fresh: tuple[TestClient, Platform], dataset_id: Any
) -> None:
    """PATCH /ngsi-ld/v1/entities/{id}/attrs/n {"value": 9, "datasetId": 5} (or "not a uri", or an array):
    404 ResourceNotFound "entity ... has no attribute n with datasetId 5": the datasetId is used to look up
    the instance before it is validated (a null datasetId does get 400 "datasetId must be a URI"). A
    malformed member is bad request data, not a missing resource: 400 BadRequestData naming datasetId."""
    client, _ = fresh
    assert (
        client.post(ENTITIES, json={"id": EID, "type": "V", "n": {"type": "Property", "value": 1}}).status_code == 201
    )
    r = client.patch(f"{ENTITIES}/{EID}/attrs/n", json={"value": 9, "datasetId": dataset_id})
    problem(r, 400, "BadRequestData", "datasetId")
    assert client.get(f"{ENTITIES}/{EID}").json()["n"] == {"type": "Property", "value": 1}


# -- temporal: an instance id in another spelling names an instance -----------------------------------------


@pytest.mark.parametrize(
    "spelling", ["+1", "01", "0_1", "\u0661", "%201"], ids=["plus", "zero", "underscore", "arabic", "space"]
)
@pytest.mark.parametrize("method", ["DELETE", "PATCH"])
def test_a_temporal_instance_id_in_another_spelling_names_no_instance(
    fresh: tuple[TestClient, Platform], method: str, spelling: str
) -> None:
    """DELETE /ngsi-ld/v1/temporal/entities/{id}/attrs/n/urn:ngsi-ld:Instance:+1 (or ...:01, ...:0_1,
    ...:<Arabic-Indic one>, ...:%201): 204 and instance urn:ngsi-ld:Instance:1 is deleted (PATCH modifies
    it). The store reads the number with Python's int() (store/duckdb_.py:1444), which takes a sign, leading
    zeros, underscores, blanks and any Unicode digit, so ids the broker never issued alias a real one. An id
    that is not one the broker gave out names nothing: 404 ResourceNotFound (or 400), and the instance kept."""
    client, _ = fresh
    observed = {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"}
    assert client.post(TEMPORAL, json={"id": EID, "type": "V", "n": [observed]}).status_code == 201
    before = client.get(f"{TEMPORAL}/{EID}").json()["n"]
    assert [i["instanceId"] for i in before] == ["urn:ngsi-ld:Instance:1"], before
    path = f"{TEMPORAL}/{EID}/attrs/n/urn:ngsi-ld:Instance:{spelling}"
    r = client.delete(path) if method == "DELETE" else client.patch(path, json={"n": {**observed, "value": 2}})
    assert r.status_code in (400, 404), f"{r.status_code}: {spelling!r} was taken as instance 1"
    assert r.json()["type"] in (ERR + "ResourceNotFound", ERR + "BadRequestData")
    assert client.get(f"{TEMPORAL}/{EID}").json()["n"] == before


# -- GeoJSON: a non-geo attribute becomes the geometry ------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "options"),
    [
        pytest.param({"type": "Relationship", "object": "urn:ngsi-ld:Road:1"}, {}, id="relationship"),
        pytest.param({"type": "LanguageProperty", "languageMap": {"en": "north"}}, {}, id="language-property"),
        pytest.param({"type": "Property", "value": {"colour": "red"}}, {}, id="object-valued-property"),
        pytest.param({"type": "Relationship", "object": "urn:ngsi-ld:Road:1"}, {"format": "concise"}, id="concise"),
    ],
)
def test_geojson_geometry_is_never_a_non_geo_attribute(
    fresh: tuple[TestClient, Platform], attribute: dict[str, Any], options: dict[str, str]
) -> None:
    """GET /ngsi-ld/v1/entities/{id}?geometryProperty=road with Accept: application/geo+json, where road is a
    Relationship (or a LanguageProperty, or a Property whose value is a JSON object): 200 with
    `"geometry": {"type": "Relationship", "object": "urn:ngsi-ld:Road:1"}` (or `{"colour": "red"}`), which is
    not a GeoJSON geometry. ld_http._geojson (ld_http.py:289-300) takes any dict it finds there. The
    geometry must be a GeoJSON geometry of the named GeoProperty, else null (or the request 400)."""
    client, _ = fresh
    entity = {"id": EID, "type": "V", "road": attribute}
    assert client.post(ENTITIES, json=entity).status_code == 201
    geo = {"Accept": "application/geo+json"}
    for path in (f"{ENTITIES}/{EID}", ENTITIES):
        params = {"geometryProperty": "road", **options, **({"type": "V"} if path == ENTITIES else {})}
        r = client.get(path, params=params, headers=geo)
        if r.status_code == 400:
            continue
        assert r.status_code == 200, r.text
        body = r.json()
        feature = body["features"][0] if body["type"] == "FeatureCollection" else body
        assert feature["geometry"] is None, f"{path}: geometry {feature['geometry']} is not GeoJSON"


# -- content negotiation: q=0 is ignored ----------------------------------------------------------------------


def test_an_accept_header_refusing_geojson_with_q0_is_not_answered_in_geojson(
    fresh: tuple[TestClient, Platform],
) -> None:
    """GET /ngsi-ld/v1/entities?type=V with Accept: application/geo+json;q=0, application/json: the client
    says it does not accept GeoJSON (RFC 9110 §12.4.2: q=0 means not acceptable), and gets a GeoJSON
    FeatureCollection. accept_of (ld_http.py:209-225) drops every parameter, q included, and returns the
    first ld+json or geo+json it sees. Likewise `Accept: application/json;q=0` alone gets JSON rather than
    406. The answer must be application/json here, and 406 when nothing offered is acceptable."""
    client, _ = fresh
    assert client.post(ENTITIES, json={"id": EID, "type": "V", "n": 1}).status_code == 201
    r = client.get(ENTITIES, params={"type": "V"}, headers={"Accept": "application/geo+json;q=0, application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    assert isinstance(r.json(), list)
    r = client.get(ENTITIES, params={"type": "V"}, headers={"Accept": "application/json;q=0"})
    assert r.status_code == 406, r.text[:300]
