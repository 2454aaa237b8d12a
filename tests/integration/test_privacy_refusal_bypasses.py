"""Bypasses of the refusal at the door found by the privacy review of 2026-11-29, sent to a real `polis serve`:
a per-person record (a Person with a name and a location trace), identifying values under members named like
NGSI-LD machinery, images and embeddings in other encodings, an IMSI after its scheme. Each is answered 422
PersonalDataRefused on every write path and nothing of it is stored; real machinery and counts still pass."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ERR, Server, start_server, stop_server

LD = "/ngsi-ld/v1"
EMAIL, MAC = "ann.smith@example.org", "a4:5e:60:12:9b:01"
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + bytes(range(256)) * 2
JPEG_B64 = base64.b64encode(JPEG).decode()
EMBEDDING = [0.1 * i + 0.013 for i in range(128)]
PACKED_EMBEDDING = base64.b64encode(struct.pack("128f", *EMBEDDING)).decode()
TRACE = [
    (-74.0431, 40.7178, "2024-05-01T07:58:00Z"),
    (-74.0380, 40.7210, "2024-05-01T08:05:00Z"),
    (-74.0330, 40.7270, "2024-05-01T08:12:00Z"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("privacy-review") / "hub")
    yield srv
    stop_server(srv.process)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        yield client


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


def _crowd(name: str, **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:CrowdFlowObserved:{name}", "type": "CrowdFlowObserved", **attrs}


def _refused(answer: httpx.Response, rule: str | None = None) -> None:
    assert answer.status_code == 422, f"{answer.status_code}: {answer.text[:300]}"
    problem = answer.json()
    assert problem["type"] == ERR + "PersonalDataRefused", problem
    assert rule is None or problem["rule"] == rule, problem


def _absent(http: httpx.Client, entity_id: str) -> None:
    assert http.get(f"{LD}/entities/{entity_id}").status_code == 404, "the refused entity was stored"


# -- a per-person record: a Person, named, with a location trace --------------------------------------------


def test_a_person_record_is_refused_on_every_path_that_creates_an_entity(http: httpx.Client) -> None:
    entity_id = "urn:ngsi-ld:Person:commuter-17"
    at = TRACE[0][2]
    trace = {
        "id": entity_id,
        "type": "Person",
        "name": [{**_prop("Alice Smith"), "observedAt": at}],
        "location": [
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [x, y]}, "observedAt": t}
            for x, y, t in TRACE
        ],
    }
    _refused(http.post(f"{LD}/temporal/entities", json=trace), "person-record")
    plain = {"id": entity_id, "type": "Person", "name": _prop("Alice Smith")}
    _refused(http.post(f"{LD}/entities", json=plain), "person-record")
    _refused(http.post(f"{LD}/entityOperations/upsert", json=[plain]), "person-record")
    _refused(http.post(f"{LD}/entityOperations/create", json=[plain]), "person-record")
    # Another type, but the id says what it is; and a person type expanded by its IRI.
    _refused(http.post(f"{LD}/entities", json={**plain, "type": "Thing"}), "person-record")
    schema = {"id": "urn:x:patient-4", "type": "https://schema.org/Patient", "age": _prop(37)}
    _refused(http.post(f"{LD}/entities", json=schema), "person-record")
    _absent(http, entity_id)
    _absent(http, "urn:x:patient-4")
    assert http.get(f"{LD}/temporal/entities/{entity_id}").status_code == 404


def test_a_person_type_renamed_by_the_context_is_refused(http: httpx.Client) -> None:
    """The stored document keeps only the IRI the @context maps a type to: `Person` sent as
    https://example.org/t1 is judged by the name it was sent under, on the single and the batch path."""
    context = {"Person": "https://example.org/t1", "name": "https://example.org/a1"}
    body = {"id": "urn:ngsi-ld:Thing:renamed-1", "type": "Person", "name": _prop("Alice Smith"), "@context": context}
    _refused(http.post(f"{LD}/entities", json=body, headers={"Content-Type": "application/ld+json"}), "person-record")
    _absent(http, body["id"])
    items = [{**body, "id": f"urn:ngsi-ld:Thing:renamed-{n}"} for n in range(2, 5)]
    answer = http.post(f"{LD}/entityOperations/upsert", json=items, headers={"Content-Type": "application/ld+json"})
    assert answer.status_code == 207, answer.text  # every item failed, each on its own
    errors = answer.json()["errors"]
    assert [e["error"]["type"] for e in errors] == [ERR + "PersonalDataRefused"] * 3, errors
    for item in items:
        _absent(http, item["id"])
    other = {**body, "id": "urn:ngsi-ld:Thing:renamed-5", "type": "Thing", "@context": {"Thing": "https://example.org/t2"}}
    del other["name"]
    created = http.post(f"{LD}/entities", json=other, headers={"Content-Type": "application/ld+json"})
    assert created.status_code == 201, created.text


def test_an_existing_entity_cannot_be_replaced_by_a_person_record(http: httpx.Client) -> None:
    entity_id = "urn:ngsi-ld:Thing:gate-4"
    assert http.post(f"{LD}/entities", json={"id": entity_id, "type": "Thing", "count": _prop(3)}).status_code == 201
    _refused(http.post(f"{LD}/entityOperations/upsert", json=[{"id": entity_id, "type": "Visitor"}]), "person-record")
    stored = http.get(f"{LD}/entities/{entity_id}", params={"options": "keyValues"}).json()
    assert stored == {"id": entity_id, "type": "Thing", "count": 3}


def test_counting_types_pass(http: httpx.Client) -> None:
    for kind in ("PeopleCount", "PedestrianFlowObserved"):
        body = {"id": f"urn:ngsi-ld:{kind}:gate-1", "type": kind, "peopleCount": _prop(12)}
        assert http.post(f"{LD}/entities", json=body).status_code == 201, kind


# -- identifying values under member names the scan treats as NGSI-LD machinery, at any depth ---------------

MACHINERY_NAMES: list[tuple[str, dict[str, Any]]] = [
    ("json.coordinates e-mail", {"contact": {"type": "JsonProperty", "json": {"coordinates": EMAIL}}}),
    ("json.observedAt MAC", {"seen": {"type": "JsonProperty", "json": {"observedAt": MAC}}}),
    ("value.coordinates JPEG", {"blob": _prop({"coordinates": JPEG_B64})}),
    ("value.createdAt driver name", {"x": _prop({"createdAt": {"driverName": "Ann Smith"}})}),
    ("value.modifiedAt face embedding", {"x": _prop({"modifiedAt": {"faceEmbedding": EMBEDDING}})}),
    ("json.@context embedding", {"x": {"type": "JsonProperty", "json": {"@context": {"faceEmbedding": [0.5] * 16}}}}),
]


@pytest.mark.parametrize(("kind", "attrs"), MACHINERY_NAMES, ids=[k for k, _ in MACHINERY_NAMES])
def test_identifying_values_under_machinery_names_are_refused(
    http: httpx.Client, kind: str, attrs: dict[str, Any]
) -> None:
    body = _crowd(f"machinery-{MACHINERY_NAMES.index((kind, attrs))}", **attrs)
    _refused(http.post(f"{LD}/entities", json=body))
    _absent(http, body["id"])


def test_machinery_holding_machinery_still_passes(http: httpx.Client) -> None:
    ring = [[-74.05, 40.71], [-74.03, 40.71], [-74.03, 40.73], [-74.05, 40.71]]
    body = _crowd(
        "machinery-ok",
        peopleCount={"type": "Property", "value": 7, "observedAt": "2024-05-01T08:00:00Z"},
        location={"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [ring]}},
    )
    assert http.post(f"{LD}/entities", json=body).status_code == 201


# -- media and embeddings that a check of base64 openings does not see --------------------------------------

HIDDEN_MEDIA: list[tuple[str, Any]] = [
    ("octet-stream data URI holding a JPEG", "data:application/octet-stream;base64," + JPEG_B64),
    ("JPEG as hex", JPEG.hex()),
    ("JPEG base64 in 48-character list items", [JPEG_B64[i : i + 48] for i in range(0, len(JPEG_B64), 48)]),
]


@pytest.mark.parametrize(("kind", "value"), HIDDEN_MEDIA, ids=[k for k, _ in HIDDEN_MEDIA])
def test_images_in_other_encodings_are_refused(http: httpx.Client, kind: str, value: Any) -> None:
    body = _crowd(f"media-{[k for k, _ in HIDDEN_MEDIA].index(kind)}", blob=_prop(value))
    _refused(http.post(f"{LD}/entities", json=body), "image")
    _absent(http, body["id"])


def test_an_embedding_packed_as_base64_floats_is_refused(http: httpx.Client) -> None:
    """128 float32 under `descriptor`: refused as a JSON list, and now as the same bytes in base64."""
    body = _crowd("embedding-b64", descriptor=_prop(PACKED_EMBEDDING))
    _refused(http.post(f"{LD}/entities", json=body), "biometric")
    _absent(http, body["id"])


def test_an_embedding_packed_as_base64_floats_is_refused_in_a_batch_of_one_shape(http: httpx.Client) -> None:
    """A gateway's batch of one shape takes the planned path (polis.ngsi_ld.batch_plan), which judges only the
    values of items after the first: a packed embedding in a later item must be seen there too."""
    harmless = [_crowd(f"descriptor-{n}", descriptor=_prop(f"cam-{n}")) for n in range(3)]
    assert http.post(f"{LD}/entityOperations/upsert", json=harmless).status_code in (201, 204)
    packed = [*harmless, _crowd("descriptor-packed", descriptor=_prop(PACKED_EMBEDDING))]
    _refused(http.post(f"{LD}/entityOperations/upsert", json=packed), "biometric")
    _absent(http, "urn:ngsi-ld:CrowdFlowObserved:descriptor-packed")


# -- an IMSI after its scheme, as an IMEI after `imei:` ------------------------------------------------------


def test_an_imsi_after_its_scheme_is_refused(http: httpx.Client) -> None:
    body = _crowd("imsi", sim={"type": "Relationship", "object": "urn:imsi:310150123456789"})
    _refused(http.post(f"{LD}/entities", json=body), "device-identifier")
    _absent(http, body["id"])
