"""Bad input, one class per test: the NGSI-LD problem type, the status, a specific detail, and nothing
written. Ends with Hypothesis throwing random bodies and query strings at the API (never a 500)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import LINK_SDM, admin_headers

BASE = "/ngsi-ld/v1"
ENTITIES = BASE + "/entities"
TEMPORAL = BASE + "/temporal/entities"
OPS = BASE + "/entityOperations"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
JSONLD_REL = "http://www.w3.org/ns/json-ld#context"
SDM_HDR = {"Link": LINK_SDM}
EID = "urn:ngsi-ld:Vehicle:seed"
SEED = {"id": EID, "type": "Vehicle",
        "speed": {"type": "Property", "value": 50, "observedAt": "2026-01-01T00:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}}


def problem(r: Any, status: int, name: str, *fragments: str) -> dict[str, Any]:
    """The response is an NGSI-LD problem of this type whose detail names every fragment."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/")
    body = r.json()
    assert body["type"] == ERR + name, body
    assert body["status"] == status
    detail = body["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    for fragment in fragments:
        assert fragment.lower() in detail.lower(), (fragment, detail)
    return body  # type: ignore[no-any-return]


class Snapshot:
    """What the store holds for the default tenant; `unchanged()` checks that a bad request wrote nothing."""

    def __init__(self, client: TestClient, platform: Platform) -> None:
        self.client = client
        self.platform = platform
        self.count = platform.store.entity_count("")
        self.history = platform.store.history_count("")
        self.tenants = sorted(platform.store.tenants())
        self.seed = self._seed()

    def _seed(self) -> Any:
        r = self.client.get(f"{ENTITIES}/{EID}", params={"options": "sysAttrs"})
        return r.json() if r.status_code == 200 else None

    def unchanged(self) -> None:
        assert self.platform.store.entity_count("") == self.count
        assert self.platform.store.history_count("") == self.history
        assert sorted(self.platform.store.tenants()) == self.tenants
        assert self._seed() == self.seed


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[TestClient, Platform]]:
    """One hub for the module (a fresh one per test costs more than the tests); `Snapshot` is per test."""
    platform = Platform.in_memory()
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        assert client.post(ENTITIES, json=SEED).status_code == 201
        yield client, platform
    platform.close()


@pytest.fixture
def client(shared: tuple[TestClient, Platform]) -> TestClient:
    return shared[0]


@pytest.fixture
def platform(shared: tuple[TestClient, Platform]) -> Platform:
    return shared[1]


@pytest.fixture
def seeded(client: TestClient, platform: Platform) -> Snapshot:
    return Snapshot(client, platform)


def post_raw(client: TestClient, path: str, raw: bytes, content_type: str = "application/json",
             method: str = "POST", **headers: str) -> Any:
    return client.request(method, path, content=raw, headers={"Content-Type": content_type, **headers})


# -- bodies ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("POST", ENTITIES), ("PATCH", f"{ENTITIES}/{EID}/attrs"), ("POST", f"{ENTITIES}/{EID}/attrs"),
    ("PATCH", f"{ENTITIES}/{EID}"), ("PUT", f"{ENTITIES}/{EID}"), ("POST", f"{OPS}/upsert"),
    ("POST", TEMPORAL), ("POST", f"{OPS}/query"),
])
def test_malformed_json_is_invalid_request(client: TestClient, seeded: Snapshot, method: str, path: str) -> None:
    r = post_raw(client, path, b'{"id": "urn:ngsi-ld:Vehicle:1", "type": ', method=method)
    problem(r, 400, "InvalidRequest", "not valid JSON")
    seeded.unchanged()


def test_empty_body_is_invalid_request(client: TestClient, seeded: Snapshot) -> None:
    problem(post_raw(client, ENTITIES, b""), 400, "InvalidRequest", "empty")
    problem(post_raw(client, f"{ENTITIES}/{EID}/attrs", b"  ", method="PATCH"), 400, "InvalidRequest", "empty")
    seeded.unchanged()


@pytest.mark.parametrize("raw", [b'[{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}]', b'"entity"', b"5",
                                 b"null", b"true"])
def test_entity_body_that_is_not_an_object(client: TestClient, seeded: Snapshot, raw: bytes) -> None:
    problem(post_raw(client, ENTITIES, raw), 400, "BadRequestData", "JSON object")
    problem(post_raw(client, f"{ENTITIES}/{EID}/attrs", raw, method="PATCH"), 400, "BadRequestData", "object")
    problem(post_raw(client, f"{ENTITIES}/{EID}", raw, method="PUT"), 400, "BadRequestData", "object")
    seeded.unchanged()


@pytest.mark.parametrize("raw", [b'{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}', b'"x"', b"5", b"null"])
def test_batch_body_that_is_not_an_array(client: TestClient, seeded: Snapshot, raw: bytes) -> None:
    for op in ("create", "upsert", "update", "merge", "delete"):
        problem(post_raw(client, f"{OPS}/{op}", raw), 400, "BadRequestData", "array")
    seeded.unchanged()


BAD_ENTITIES = [
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": 5}, "type", id="type-number"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": []}, "type", id="type-empty-array"),
    pytest.param({"id": "urn:ngsi-ld:V:1"}, "'type'", id="type-missing"),
    pytest.param({"type": "V"}, "'id'", id="id-missing"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "speed": {"type": "Property"}}, "'value'",
                 id="property-without-value"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "speed": {"type": "Property", "value": None}}, "null",
                 id="property-value-null"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "speed": {"type": "Propertee", "value": 1}},
                 "Propertee", id="unknown-attribute-type"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "owner": {"type": "Relationship", "object": "bob"}},
                 "'bob'", id="relationship-object-not-uri"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "owner": {"type": "Relationship", "object": 7}},
                 "owner", id="relationship-object-number"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "owner": {"type": "Relationship"}}, "'object'",
                 id="relationship-without-object"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1]}}},
                 "location", id="geojson-short-point"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [200, 1]}}},
                 "longitude", id="geojson-longitude"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "location": {"type": "GeoProperty", "value": {"type": "Circle", "coordinates": [1, 2]}}},
                 "Circle", id="geojson-unknown-type"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "location": {"type": "GeoProperty", "value": {
                      "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}},
                 "location", id="geojson-open-ring"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "location": {"type": "GeoProperty", "value": "here"}},
                 "location", id="geojson-string"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "speed": {"type": "Property", "value": 1, "observedAt": "yesterday"}}, "observedAt",
                 id="observed-at-text"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "speed": {"type": "Property", "value": 1, "observedAt": 1700000000}}, "observedAt",
                 id="observed-at-number"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "speed": {"type": "Property", "value": 1, "datasetId": "radar one"}}, "datasetId",
                 id="dataset-id-not-uri"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V",
                  "name": {"type": "LanguageProperty", "languageMap": "Main St"}}, "languageMap",
                 id="language-map-not-object"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "speed": None}, "speed", id="attribute-null"),
    pytest.param({"id": "urn:ngsi-ld:V:1", "type": "V", "bad name": 1}, "bad name", id="attribute-name-space"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_ENTITIES)
def test_wrong_types_on_create(client: TestClient, seeded: Snapshot, body: dict[str, Any], fragment: str) -> None:
    problem(client.post(ENTITIES, json=body), 400, "BadRequestData", fragment)
    seeded.unchanged()
    assert client.get(f"{ENTITIES}/urn:ngsi-ld:V:1").status_code == 404


@pytest.mark.parametrize(("body", "fragment"), [p for p in BAD_ENTITIES if p.id not in (
    "type-number", "type-empty-array", "type-missing", "id-missing")])
def test_wrong_types_on_update_write_nothing(client: TestClient, seeded: Snapshot, body: dict[str, Any],
                                            fragment: str) -> None:
    attrs = {k: v for k, v in body.items() if k not in ("id", "type")}
    problem(client.post(f"{ENTITIES}/{EID}/attrs", json=attrs), 400, "BadRequestData", fragment)
    problem(client.patch(f"{ENTITIES}/{EID}", json=attrs), 400, "BadRequestData", fragment)
    problem(client.put(f"{ENTITIES}/{EID}", json=attrs), 400, "BadRequestData", fragment)
    seeded.unchanged()


def test_wrong_types_in_one_of_many_attributes_write_none(client: TestClient, seeded: Snapshot) -> None:
    body = {"speed": {"type": "Property", "value": 99, "observedAt": "2026-02-01T00:00:00Z"},
            "fuel": {"type": "Property", "value": 1, "observedAt": "not a time"}}
    problem(client.patch(f"{ENTITIES}/{EID}/attrs", json=body), 400, "BadRequestData", "fuel", "observedAt")
    problem(client.patch(f"{ENTITIES}/{EID}/attrs/speed", json={"value": 1, "observedAt": "soon"}),
            400, "BadRequestData", "observedAt")
    seeded.unchanged()


@pytest.mark.parametrize("bad_id", ["vehicle-1", "urn ngsi-ld:V:1", "", "a" * 600, 42])
def test_entity_id_not_a_uri_in_the_body(client: TestClient, seeded: Snapshot, bad_id: Any) -> None:
    r = client.post(ENTITIES, json={"id": bad_id, "type": "Vehicle"})
    body = problem(r, 400, "BadRequestData", "id")
    if isinstance(bad_id, str) and 0 < len(bad_id) < 80:
        assert bad_id in body["detail"]
    seeded.unchanged()


@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"{ENTITIES}/vehicle-1"), ("DELETE", f"{ENTITIES}/vehicle-1"), ("PATCH", f"{ENTITIES}/vehicle-1"),
    ("PUT", f"{ENTITIES}/vehicle-1"), ("POST", f"{ENTITIES}/vehicle-1/attrs"),
    ("PATCH", f"{ENTITIES}/vehicle-1/attrs"), ("PATCH", f"{ENTITIES}/vehicle-1/attrs/speed"),
    ("DELETE", f"{ENTITIES}/vehicle-1/attrs/speed"), ("GET", f"{TEMPORAL}/vehicle-1"),
    ("DELETE", f"{TEMPORAL}/vehicle-1"), ("GET", ENTITIES + "?id=vehicle-1"),
])
def test_entity_id_not_a_uri_in_the_path(client: TestClient, seeded: Snapshot, method: str, path: str) -> None:
    body: Any = {"speed": {"type": "Property", "value": 1}} if method in ("PUT", "PATCH", "POST") else None
    if path.endswith("/attrs/speed") and method == "PATCH":
        body = {"value": 1}
    r = client.request(method, path, json=body)
    problem(r, 400, "BadRequestData", "'vehicle-1'", "URI")
    seeded.unchanged()


# -- contexts and media types ------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unknown_context_url_is_503_fast_and_writes_nothing(client: TestClient, seeded: Snapshot) -> None:
    url = f"http://127.0.0.1:{closed_port()}/ctx.jsonld"
    link = {"Link": f'<{url}>; rel="{JSONLD_REL}"; type="application/ld+json"'}
    started = time.monotonic()
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "speed": 1}, headers=link)
    assert time.monotonic() - started < 2.0
    problem(r, 503, "LdContextNotAvailable", url)
    problem(client.get(ENTITIES, params={"type": "Vehicle"}, headers=link), 503, "LdContextNotAvailable", url)
    problem(client.patch(f"{ENTITIES}/{EID}/attrs", json={"speed": 1}, headers=link), 503,
            "LdContextNotAvailable", url)
    ld = {"id": "urn:ngsi-ld:Vehicle:2", "type": "Vehicle", "@context": [url, CORE]}
    problem(client.post(ENTITIES, json=ld, headers={"Content-Type": "application/ld+json"}), 503,
            "LdContextNotAvailable", url)
    seeded.unchanged()


def test_malformed_or_repeated_link_header_is_400(client: TestClient, seeded: Snapshot) -> None:
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
                    headers={"Link": "https://example.org/ctx.jsonld"})
    problem(r, 400, "BadRequestData", "Link")
    two = f'{LINK_SDM}, <{CORE}>; rel="{JSONLD_REL}"; type="application/ld+json"'
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}, headers={"Link": two})
    problem(r, 400, "BadRequestData", "one")
    seeded.unchanged()


@pytest.fixture
def small() -> Iterator[tuple[TestClient, Platform]]:
    platform = Platform.in_memory(max_body_bytes=256)
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        yield client, platform
    platform.close()


def test_oversize_body_is_413(small: tuple[TestClient, Platform]) -> None:
    client, platform = small
    body = {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "note": "x" * 400}
    problem(client.post(ENTITIES, json=body), 413, "BadRequestData", "256")
    problem(client.post(f"{OPS}/upsert", json=[body]), 413, "BadRequestData", "256")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield b'{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "note": "'
        for _ in range(10):
            yield b"y" * 64
        yield b'"}'

    r = client.post(ENTITIES, content=chunks(), headers={"Content-Type": "application/json"})
    problem(r, 413, "BadRequestData", "256")
    assert platform.store.entity_count("") == 0
    assert client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}).status_code == 201


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "multipart/form-data"])
def test_unsupported_content_type_is_415(client: TestClient, seeded: Snapshot, content_type: str) -> None:
    raw = b'{"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}'
    r = post_raw(client, ENTITIES, raw, content_type)
    assert r.status_code == 415
    assert "Content-Type" in r.json()["detail"]
    assert r.json()["type"].startswith(ERR)
    r = post_raw(client, f"{OPS}/create", b"[" + raw + b"]", content_type)
    assert r.status_code == 415
    seeded.unchanged()


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/csv, image/png"])
def test_unsupported_accept_is_406(client: TestClient, seeded: Snapshot, accept: str) -> None:
    for path, params in ((f"{ENTITIES}/{EID}", {}), (ENTITIES, {"type": "Vehicle"}), (f"{TEMPORAL}/{EID}", {})):
        r = client.get(path, params=params, headers={"Accept": accept})
        assert r.status_code == 406, (path, r.text)
        assert accept.split(",")[0] in r.json()["detail"]


def test_ld_json_with_a_link_header_is_400(client: TestClient, seeded: Snapshot) -> None:
    body = {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "@context": CORE}
    r = client.post(ENTITIES, json=body, headers={**SDM_HDR, "Content-Type": "application/ld+json"})
    problem(r, 400, "BadRequestData", "Link")
    seeded.unchanged()


def test_ld_json_without_at_context_is_400(client: TestClient, seeded: Snapshot) -> None:
    body = {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"}
    problem(client.post(ENTITIES, json=body, headers={"Content-Type": "application/ld+json"}),
            400, "BadRequestData", "@context")
    problem(client.post(f"{OPS}/create", json=[body], headers={"Content-Type": "application/ld+json"}),
            400, "BadRequestData", "@context")
    seeded.unchanged()


def test_json_with_at_context_in_the_body_is_400(client: TestClient, seeded: Snapshot) -> None:
    body = {"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle", "@context": CORE}
    problem(client.post(ENTITIES, json=body), 400, "BadRequestData", "@context")
    problem(client.post(f"{OPS}/upsert", json=[body]), 400, "BadRequestData", "@context")
    problem(client.patch(f"{ENTITIES}/{EID}/attrs", json={"speed": 1, "@context": CORE}), 400,
            "BadRequestData", "@context")
    seeded.unchanged()


# -- query syntax ------------------------------------------------------------------------------------------


BAD_QUERIES = [
    pytest.param({"type": "Vehicle", "q": "speed>"}, "q", id="q-no-value"),
    pytest.param({"type": "Vehicle", "q": "(speed==1"}, "')'", id="q-open-paren"),
    pytest.param({"type": "Vehicle", "q": "speed==1)"}, "')'", id="q-close-paren"),
    pytest.param({"type": "Vehicle", "q": "speed=1"}, "operator", id="q-single-equals"),
    pytest.param({"type": "Vehicle", "q": 'name=="abc'}, "'\"'", id="q-unclosed-string"),
    pytest.param({"type": "Vehicle", "q": 'name~="(["'}, "regular expression", id="q-bad-regex"),
    pytest.param({"type": "Vehicle", "q": ""}, "empty", id="q-empty"),
    pytest.param({"georel": "nearby", "geometry": "Point", "coordinates": "[1,2]"}, "nearby", id="georel-unknown"),
    pytest.param({"georel": "near", "geometry": "Point", "coordinates": "[1,2]"}, "maxDistance", id="near-no-dist"),
    pytest.param({"georel": "near;maxDistance==-5", "geometry": "Point", "coordinates": "[1,2]"}, "-5",
                 id="near-negative"),
    pytest.param({"georel": "near;maxDistance==10", "geometry": "Polygon", "coordinates": "[1,2]"}, "Point",
                 id="near-polygon"),
    pytest.param({"georel": "within", "geometry": "Circle", "coordinates": "[1,2]"}, "Circle",
                 id="geometry-unknown"),
    pytest.param({"georel": "within", "geometry": "Polygon"}, "coordinates", id="geo-incomplete"),
    pytest.param({"georel": "within", "geometry": "Point", "coordinates": "[1,2"}, "[1,2", id="coordinates-json"),
    pytest.param({"georel": "within", "geometry": "Point", "coordinates": "[1000,2]"}, "longitude",
                 id="coordinates-range"),
    pytest.param({"georel": "within", "geometry": "Polygon", "coordinates": "[[[0,0],[1,0],[0,0]]]"}, "Polygon",
                 id="coordinates-short-ring"),
    pytest.param({"type": "A;;B"}, "';'", id="type-double-semicolon"),
    pytest.param({"type": "(A,B"}, "')'", id="type-open-paren"),
    pytest.param({"type": ""}, "type", id="type-empty"),
    pytest.param({"idPattern": "urn:(["}, "idPattern", id="id-pattern-regex"),
    pytest.param({"idPattern": "(" * 600 + ")" * 600}, "does not compile", id="id-pattern-too-deep"),
    # Patterns Python compiles but the store's RE2 engine refuses: refused up front, as q does for ~=.
    pytest.param({"idPattern": "(?<=a)b"}, "idPattern", id="id-pattern-lookbehind"),
    pytest.param({"idPattern": r"(a)\1"}, "idPattern", id="id-pattern-backreference"),
    pytest.param({"idPattern": r"seed\Z"}, "idPattern", id="id-pattern-end-anchor"),
    pytest.param({"type": "Vehicle", "q": 'speed~="(?<=a)b"'}, "not supported", id="q-regex-lookbehind"),
    pytest.param({"type": "Vehicle", "q": r'speed~="(a)\1"'}, "not supported", id="q-regex-backreference"),
    pytest.param({"type": "Vehicle", "limit": "abc"}, "limit", id="limit-text"),
    pytest.param({"type": "Vehicle", "limit": "-1"}, "limit", id="limit-negative"),
    pytest.param({"type": "Vehicle", "limit": "0"}, "count", id="limit-zero"),
    pytest.param({"type": "Vehicle", "offset": "x"}, "offset", id="offset-text"),
    pytest.param({"type": "Vehicle", "count": "yes"}, "count", id="count-not-bool"),
    pytest.param({"type": "Vehicle", "attrs": "speed,,fuel"}, "attrs", id="attrs-empty-name"),
    pytest.param({}, "type", id="no-filter"),
]


@pytest.mark.parametrize(("params", "fragment"), BAD_QUERIES)
def test_invalid_query_syntax_is_bad_request_data(client: TestClient, seeded: Snapshot, params: dict[str, str],
                                                  fragment: str) -> None:
    problem(client.get(ENTITIES, params=params), 400, "BadRequestData", fragment)


def test_post_query_with_an_unusable_id_pattern_is_400(client: TestClient, seeded: Snapshot) -> None:
    body = {"type": "Query", "entities": [{"type": "Vehicle", "idPattern": "(?<=a)b"}]}
    problem(client.post(f"{OPS}/query", json=body), 400, "BadRequestData", "idPattern")


def test_limit_above_the_maximum_is_403_too_many_results(client: TestClient, platform: Platform) -> None:
    too_many = platform.settings.max_limit + 1
    r = client.get(ENTITIES, params={"type": "Vehicle", "limit": str(too_many)})
    problem(r, 403, "TooManyResults", str(too_many), str(platform.settings.max_limit))


BAD_TEMPORAL = [
    pytest.param({"timerel": "after"}, "timeAt", id="timerel-without-timeAt"),
    pytest.param({"timerel": "between", "timeAt": "2026-01-01T00:00:00Z"}, "endTimeAt", id="between-no-end"),
    pytest.param({"timerel": "during", "timeAt": "2026-01-01T00:00:00Z"}, "during", id="timerel-unknown"),
    pytest.param({"timerel": "after", "timeAt": "noon"}, "noon", id="timeAt-text"),
    pytest.param({"timeAt": "2026-01-01T00:00:00Z"}, "timerel", id="timeAt-without-timerel"),
    pytest.param({"timerel": "between", "timeAt": "2026-01-02T00:00:00Z", "endTimeAt": "2026-01-01T00:00:00Z"},
                 "endTimeAt", id="between-reversed"),
    pytest.param({"lastN": "0"}, "lastN", id="lastN-zero"),
    pytest.param({"lastN": "many"}, "lastN", id="lastN-text"),
    pytest.param({"options": "aggregatedValues"}, "aggrMethods", id="aggr-no-methods"),
    pytest.param({"options": "aggregatedValues", "aggrMethods": "median"}, "median", id="aggr-unknown-method"),
    pytest.param({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1 hour"},
                 "aggrPeriodDuration", id="aggr-bad-duration"),
    # Well-formed but out of Python's datetime/timedelta range: still the client's mistake, never a 500.
    pytest.param({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "P99999999999Y"},
                 "aggrPeriodDuration", id="aggr-huge-duration"),
    pytest.param({"timerel": "before", "timeAt": "9999-12-31T23:59:59-14:00"}, "timeAt", id="timeAt-overflow"),
    pytest.param({"timerel": "after", "timeAt": "0001-01-01T00:00:00+14:00"}, "timeAt", id="timeAt-underflow"),
]


@pytest.mark.parametrize(("params", "fragment"), BAD_TEMPORAL)
def test_invalid_temporal_parameters(client: TestClient, seeded: Snapshot, params: dict[str, str],
                                     fragment: str) -> None:
    problem(client.get(TEMPORAL, params={"type": "Vehicle", **params}), 400, "BadRequestData", fragment)
    problem(client.get(f"{TEMPORAL}/{EID}", params=params), 400, "BadRequestData", fragment)


def test_merge_observed_at_parameter_out_of_range_is_400(client: TestClient, seeded: Snapshot) -> None:
    r = client.patch(f"{ENTITIES}/{EID}", params={"observedAt": "9999-12-31T23:59:59-14:00"}, json={"fuel": 1})
    problem(r, 400, "BadRequestData", "observedAt")
    problem(client.patch(f"{ENTITIES}/{EID}", params={"observedAt": "later"}, json={"fuel": 1}),
            400, "BadRequestData", "observedAt")
    seeded.unchanged()


@pytest.mark.parametrize(("method", "path", "params"), [
    ("GET", ENTITIES, {"type": "Vehicle", "colour": "red"}),
    ("GET", f"{ENTITIES}/{EID}", {"colour": "red"}),
    ("GET", TEMPORAL, {"type": "Vehicle", "colour": "red"}),
    ("GET", f"{TEMPORAL}/{EID}", {"colour": "red"}),
    ("POST", f"{ENTITIES}/{EID}/attrs", {"colour": "red"}),
    ("DELETE", f"{ENTITIES}/{EID}/attrs/speed", {"colour": "red"}),
    ("POST", f"{OPS}/upsert", {"colour": "red"}),
])
def test_unknown_query_parameter_is_invalid_request(client: TestClient, seeded: Snapshot, method: str, path: str,
                                                    params: dict[str, str]) -> None:
    body: Any = None
    if method == "POST":
        body = [SEED] if path.endswith("upsert") else {"fuel": 1}
    problem(client.request(method, path, params=params, json=body), 400, "InvalidRequest", "colour")
    seeded.unchanged()


@pytest.mark.parametrize(("path", "params"), [
    (ENTITIES, {"type": "Vehicle", "options": "pretty"}),
    (f"{ENTITIES}/{EID}", {"options": "keyValues,concise"}),
    (f"{ENTITIES}/{EID}", {"format": "csv"}),
])
def test_unsupported_options_are_invalid_request(client: TestClient, seeded: Snapshot, path: str,
                                                 params: dict[str, str]) -> None:
    problem(client.get(path, params=params), 400, "InvalidRequest", "options")


def test_invalid_tenant_name_is_400(client: TestClient, seeded: Snapshot) -> None:
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
                    headers={"NGSILD-Tenant": "no/slashes"})
    problem(r, 400, "BadRequestData", "NGSILD-Tenant")
    seeded.unchanged()


@pytest.mark.parametrize("tenant", ["00-1A-2B-3C-4D-5E", "imei-490154203237518"])
def test_a_tenant_named_by_a_device_identifier_is_refused(client: TestClient, seeded: Snapshot, tenant: str) -> None:
    """A tenant name is shown to operators (metrics, audit log, headers): a new one that names a device is
    personal data, refused like any other value, on writes (nothing is created) and reads."""
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
                    headers={"NGSILD-Tenant": tenant})
    problem(r, 422, "PersonalDataRefused", "device-identifier")
    problem(client.get(ENTITIES, params={"type": "Vehicle"}, headers={"NGSILD-Tenant": tenant}), 422,
            "PersonalDataRefused", "NGSILD-Tenant")
    seeded.unchanged()


@pytest.mark.parametrize("tenant", ["traffic-dept_2", "20261127-2150", "100-200-300", "city_2024-01-15"])
def test_dated_and_numbered_tenant_names_are_not_device_identifiers(client: TestClient, tenant: str) -> None:
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:1", "type": "Vehicle"},
                    headers={"NGSILD-Tenant": tenant})
    assert r.status_code == 201, r.text
    assert client.delete(f"{ENTITIES}/urn:ngsi-ld:Vehicle:1", headers={"NGSILD-Tenant": tenant}).status_code == 204


@pytest.mark.parametrize("path", ["/polis/v1/access/me", "/polis/v1/deadletters"])
def test_routes_outside_ngsi_ld_echo_only_a_usable_tenant_name(client: TestClient, path: str) -> None:
    """These routes do not read the tenant header, so nothing refused it: a device identifier or a malformed
    name must not come back as the answer's tenant; a usable name does (§6.3.14)."""
    for bad in ("imei-490154203237518", "no/slashes"):
        r = client.get(path, headers={"NGSILD-Tenant": bad})
        assert r.status_code == 200, r.text
        assert "NGSILD-Tenant" not in r.headers
    r = client.get(path, headers={"NGSILD-Tenant": "traffic-dept_2"})
    assert r.status_code == 200 and r.headers["NGSILD-Tenant"] == "traffic-dept_2"


def test_a_tenant_made_before_the_rule_stays_reachable(client: TestClient, platform: Platform) -> None:
    """A hub may hold a tenant so named from before: its data can still be read, and removed."""
    platform.store.ensure_tenant("AB-CD-EF-01-23-45")
    headers = {"NGSILD-Tenant": "AB-CD-EF-01-23-45"}
    r = client.post(ENTITIES, json={"id": "urn:ngsi-ld:Vehicle:old", "type": "Vehicle"}, headers=headers)
    assert r.status_code == 201, r.text
    got = client.get(f"{ENTITIES}/urn:ngsi-ld:Vehicle:old", headers=headers)
    assert got.status_code == 200 and got.headers["NGSILD-Tenant"] == "AB-CD-EF-01-23-45"  # its own name, echoed
    assert client.delete(f"{ENTITIES}/urn:ngsi-ld:Vehicle:old", headers=headers).status_code == 204


# -- conflicts, missing things, wrong methods ------------------------------------------------------------


def test_conflicting_batch_items_are_reported_per_item(client: TestClient, seeded: Snapshot) -> None:
    item = {"id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle", "speed": 1}
    r = client.post(f"{OPS}/create", json=[item, {**item, "speed": 2}, SEED])
    assert r.status_code == 207
    errors = r.json()["errors"]
    assert [e["entityId"] for e in errors] == ["urn:ngsi-ld:Vehicle:9", EID]
    assert errors[0]["error"]["type"] == ERR + "BadRequestData" and "more than once" in errors[0]["error"]["detail"]
    assert errors[1]["error"]["type"] == ERR + "AlreadyExists"
    got = client.get(f"{ENTITIES}/urn:ngsi-ld:Vehicle:9", params={"options": "keyValues"}).json()
    assert got["speed"] == 1


def test_create_existing_is_409(client: TestClient, seeded: Snapshot) -> None:
    problem(client.post(ENTITIES, json={**SEED, "speed": 1}), 409, "AlreadyExists", EID)
    seeded.unchanged()


@pytest.mark.parametrize(("method", "path", "body", "fragment"), [
    ("GET", f"{ENTITIES}/urn:ngsi-ld:Vehicle:none", None, "urn:ngsi-ld:Vehicle:none"),
    ("DELETE", f"{ENTITIES}/urn:ngsi-ld:Vehicle:none", None, "urn:ngsi-ld:Vehicle:none"),
    ("PUT", f"{ENTITIES}/urn:ngsi-ld:Vehicle:none", {"speed": 1}, "urn:ngsi-ld:Vehicle:none"),
    ("PATCH", f"{ENTITIES}/urn:ngsi-ld:Vehicle:none", {"speed": 1}, "urn:ngsi-ld:Vehicle:none"),
    ("POST", f"{ENTITIES}/urn:ngsi-ld:Vehicle:none/attrs", {"speed": 1}, "urn:ngsi-ld:Vehicle:none"),
    ("PATCH", f"{ENTITIES}/urn:ngsi-ld:Vehicle:none/attrs", {"speed": 1}, "urn:ngsi-ld:Vehicle:none"),
    ("PATCH", f"{ENTITIES}/{EID}/attrs/fuel", {"value": 1}, "attribute fuel"),
    ("PUT", f"{ENTITIES}/{EID}/attrs/fuel", {"type": "Property", "value": 1}, "attribute fuel"),
    ("DELETE", f"{ENTITIES}/{EID}/attrs/fuel", None, "attribute fuel"),
    ("GET", f"{TEMPORAL}/urn:ngsi-ld:Vehicle:none", None, "urn:ngsi-ld:Vehicle:none"),
    ("DELETE", f"{TEMPORAL}/{EID}/attrs/fuel", None, "attribute fuel"),
])
def test_unknown_entity_or_attribute_is_404(client: TestClient, seeded: Snapshot, method: str, path: str,
                                            body: Any, fragment: str) -> None:
    problem(client.request(method, path, json=body), 404, "ResourceNotFound", fragment)
    seeded.unchanged()


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", ENTITIES, {"GET", "POST"}),
    ("PUT", ENTITIES, {"GET", "POST"}),
    ("POST", f"{ENTITIES}/{EID}", {"GET", "PUT", "PATCH", "DELETE"}),
    ("GET", f"{OPS}/create", {"POST"}),
    ("DELETE", BASE + "/types", {"GET"}),
])
def test_wrong_method_is_405(client: TestClient, seeded: Snapshot, method: str, path: str,
                             allowed: set[str]) -> None:
    r = client.request(method, path, json={} if method in ("PUT", "POST") else None)
    assert r.status_code == 405, r.text
    assert method in r.json()["detail"] and r.json()["type"].startswith(ERR)
    assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}
    seeded.unchanged()


def test_unknown_path_is_404_problem(client: TestClient) -> None:
    problem(client.get(BASE + "/nothing-here"), 404, "ResourceNotFound", "/nothing-here")


# -- never a 500 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[TestClient]:
    platform = Platform.in_memory()
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        assert client.post(ENTITIES, json=SEED).status_code == 201
        yield client
    platform.close()


KEYS = st.sampled_from(["id", "type", "value", "object", "observedAt", "location", "coordinates", "datasetId",
                        "languageMap", "unitCode", "speed", "vocab", "json", "valueList", "objectList", "scope",
                        "@type", "@value", "createdAt", "geometries"])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["urn:ngsi-ld:Vehicle:seed", "Property", "Relationship", "GeoProperty", "Point",
                              "Polygon", "LanguageProperty", "2026-01-01T00:00:00Z", "urn:ngsi-ld:null",
                              "DateTime", "9999-12-31T23:59:59-14:00", "ListProperty"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=5), max_leaves=20)
TARGETS = st.sampled_from([
    ("POST", ENTITIES), ("POST", f"{ENTITIES}/{EID}/attrs"), ("PATCH", f"{ENTITIES}/{EID}/attrs"),
    ("PATCH", f"{ENTITIES}/{EID}"), ("PUT", f"{ENTITIES}/{EID}"), ("PATCH", f"{ENTITIES}/{EID}/attrs/speed"),
    ("POST", f"{OPS}/upsert"), ("POST", f"{OPS}/update"), ("POST", f"{OPS}/merge"), ("POST", f"{OPS}/delete"),
    ("POST", f"{OPS}/query"), ("POST", TEMPORAL),
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, body=JSON | st.dictionaries(KEYS, JSON, max_size=6) | st.lists(JSON, max_size=3))
def test_random_bodies_never_cause_a_500(fuzz_client: TestClient, target: tuple[str, str], body: Any) -> None:
    method, path = target
    r = fuzz_client.request(method, path, json=body)
    assert r.status_code < 500, (method, path, body, r.text)
    if r.status_code >= 400:
        assert r.json()["type"].startswith(ERR)


PARAM_NAMES = st.sampled_from(["type", "id", "idPattern", "attrs", "q", "georel", "geometry", "coordinates",
                               "geoproperty", "limit", "offset", "count", "options", "pick", "omit", "lang",
                               "timerel", "timeAt", "endTimeAt", "lastN", "aggrMethods", "aggrPeriodDuration",
                               "format", "datasetId"])
PARAM_VALUES = st.text(max_size=20) | st.sampled_from([
    "Vehicle", "speed>1", "speed==1..5", "(speed>1|fuel<2);x", "near;maxDistance==10", "near;minDistance==1e9",
    "within", "Point", "Polygon", "[1,2]", "[[[0,0],[1,0],[1,1],[0,0]]]", "[1e308,1e308]", "1000000",
    "-1", "0", "true", "keyValues", "aggregatedValues", "temporalValues", "avg,max", "PT1H", "P1000000000D",
    "between", "after", "2026-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "urn:ngsi-ld:Vehicle:seed",
    "speed[a.b]==1", "speed.observedAt>\"2026\"", "!speed", "name~=\"(?i)x\"", "*"])
PARAMS = st.dictionaries(PARAM_NAMES, PARAM_VALUES, min_size=1, max_size=5)
QUERY_PATHS = st.sampled_from([ENTITIES, f"{ENTITIES}/{EID}", TEMPORAL, f"{TEMPORAL}/{EID}"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=QUERY_PATHS, params=PARAMS)
def test_random_query_strings_never_cause_a_500(fuzz_client: TestClient, path: str, params: dict[str, str]) -> None:
    r = fuzz_client.get(path, params=params)
    assert r.status_code < 500, (path, params, r.text)
    if r.status_code >= 400:
        assert r.json()["type"].startswith(ERR)
