"""Refusal rules: every identifying kind is caught by its name or its value; legitimate city data passes."""

from __future__ import annotations

import base64
import gzip
import struct
from typing import Any

import pytest

from polis.domain.errors import PersonalDataRefused
from polis.privacy.refusal import RULES, find_identifying, kept_payload, kept_reason, redacted, refuse_personal_data

JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDA"
EMBEDDING = [0.0132, -0.2231, 0.5012, 0.0044] * 32
# A JPEG's first bytes and enough after them to be long; encoded the ways a sender can hide it from a check of
# base64 openings (privacy review, 2026-11-29).
JPEG_BYTES = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + bytes(range(256)) * 2
JPEG_B64 = base64.b64encode(JPEG_BYTES).decode()
PACKED_EMBEDDING = base64.b64encode(struct.pack(f"{len(EMBEDDING)}f", *EMBEDDING)).decode()


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


IDENTIFYING: list[tuple[str, dict[str, Any], str, str]] = [
    # (kind, body, field named in the refusal, rule)
    ("face image by name", {"faceImage": {"type": "Property", "value": "https://cam/1.png"}}, "faceImage", "face"),
    ("face embedding", {"faceEmbedding": {"type": "Property", "value": EMBEDDING}}, "faceEmbedding", "face"),
    (
        "embedding on a neutral name",
        {"descriptor": {"type": "Property", "value": EMBEDDING}},
        "descriptor.value",
        "biometric",
    ),
    (
        "image data URI",
        {"snapshot2": {"type": "Property", "value": "data:image/png;base64,iVBORw0KGgo="}},
        "snapshot2",
        "image",
    ),
    ("raw JPEG base64", {"frame": {"type": "Property", "value": JPEG}}, "frame.value", "image"),
    ("video", {"videoClip": {"type": "Property", "value": "rtsp://x"}}, "videoClip", "image"),
    ("voice print", {"voicePrint": {"type": "Property", "value": "abc"}}, "voicePrint", "voice-audio"),
    (
        "audio data URI",
        {"clip": {"type": "Property", "value": "data:audio/wav;base64,UklGRiQAAABXQVZF"}},
        "clip.value",
        "voice-audio",
    ),
    (
        "audio recording",
        {"audioRecording": {"type": "Property", "value": "s3://b/r.wav"}},
        "audioRecording",
        "voice-audio",
    ),
    ("person name", {"driverName": {"type": "Property", "value": "Ann Smith"}}, "driverName", "person-name"),
    ("surname", {"surname": {"type": "Property", "value": "Smith"}}, "surname", "person-name"),
    ("phone by name", {"phoneNumber": {"type": "Property", "value": "x"}}, "phoneNumber", "phone-number"),
    ("phone by value", {"contact": {"type": "Property", "value": "+1 201-555-0143"}}, "contact.value", "phone-number"),
    ("e-mail by name", {"email": {"type": "Property", "value": "x"}}, "email", "e-mail"),
    (
        "e-mail by value",
        {"note": {"type": "Property", "value": "write to ann.smith@example.org"}},
        "note.value",
        "e-mail",
    ),
    ("licence plate", {"licensePlate": {"type": "Property", "value": "NJ X12-ABC"}}, "licensePlate", "licence-plate"),
    ("vehicle identification number", {"vehicleIdentificationNumber": {"type": "Property", "value": "1HGCM8263"}},
     "vehicleIdentificationNumber", "licence-plate"),
    ("VIN", {"vin": "1HGCM82633A004352"}, "vin", "licence-plate"),
    (
        "SDM plate identifier",
        {"vehiclePlateIdentifier": {"type": "Property", "value": "X12"}},
        "vehiclePlateIdentifier",
        "licence-plate",
    ),
    (
        "home address",
        {"homeAddress": {"type": "Property", "value": {"streetAddress": "1 Grove St"}}},
        "homeAddress",
        "home-address",
    ),
    (
        "nested identifier",
        {"owner": {"type": "Property", "value": {"contact": {"email": "x"}}}},
        "owner.value.contact.email",
        "e-mail",
    ),
    (
        "MAC address",
        {"seenDevice": {"type": "Property", "value": "a4:5e:60:12:9b:01"}},
        "seenDevice.value",
        "device-identifier",
    ),
    ("IMEI", {"imei": {"type": "Property", "value": "356938035643809"}}, "imei", "device-identifier"),
    ("a patient's id", {"patientId": {"type": "Property", "value": 4711}}, "patientId", "person-identifier"),
    ("a birth year", {"birthYear": {"type": "Property", "value": 1957}}, "birthYear", "birth-date"),
    # Found by a red-team pass (2026-11-27): identifiers inside ids, texts, unit codes, type names, names.
    ("phone inside a text", {"note": {"type": "Property", "value": "call +1 201-555-0143 now"}}, "note.value",
     "phone-number"),
    ("MAC inside a text", {"note": {"type": "Property", "value": "device aa:bb:cc:dd:ee:ff at gate 3"}}, "note.value",
     "device-identifier"),
    ("e-mail as a unitCode", {"speed": {"type": "Property", "value": 3, "unitCode": "ann@example.org"}},
     "speed.unitCode", "e-mail"),
    ("phone as an attribute name", {"https://example.org/+12015550143": [{"type": "Property", "value": 1}]},
     "(body)", "phone-number"),
    # A second red-team pass: the same identifiers escaped, folded or split to dodge the patterns.
    ("percent-escaped e-mail", {"note": {"type": "Property", "value": "ann.smith%2540example.org"}}, "note.value",
     "e-mail"),
    ("full-width at sign", {"note": {"type": "Property", "value": "ann.smith\uff20example.org"}}, "note.value",
     "e-mail"),
    ("zero-width space in an e-mail", {"note": {"type": "Property", "value": "ann\u200b@example.org"}}, "note.value",
     "e-mail"),
    ("non-breaking hyphens in a phone number",
     {"note": {"type": "Property", "value": "+1\u2011201\u2011555\u20110143"}}, "note.value", "phone-number"),
    ("upper-case tel: scheme", {"note": {"type": "Property", "value": "TEL:+12015550143"}}, "note.value",
     "phone-number"),
    ("dotted MAC", {"note": {"type": "Property", "value": "seen a45e.6012.9b01"}}, "note.value", "device-identifier"),
    ("underscored MAC", {"note": {"type": "Property", "value": "a4_5e_60_12_9b_01"}}, "note.value",
     "device-identifier"),
    ("IMEI by value", {"note": {"type": "Property", "value": "imei:490154203237518"}}, "note.value",
     "device-identifier"),
    ("a name ending in a slash", {"https://example.org/licensePlate/": [{"type": "Property", "value": "x"}]},
     "licensePlate", "licence-plate"),
    ("a full-width name", {"\uff4c\uff49\uff43\uff45\uff4e\uff53\uff45\uff30\uff4c\uff41\uff54\uff45": "x"},
     "\uff4c\uff49\uff43\uff45\uff4e\uff53\uff45\uff30\uff4c\uff41\uff54\uff45", "licence-plate"),
    ("expanded IRI", {"https://example.org/ns/faceImage": [{"type": "Property", "value": "x"}]}, "faceImage", "face"),
    # The privacy review of 2026-11-29: media by other encodings, members named like NGSI-LD machinery, an IMSI.
    ("JPEG as hex", {"blob": _prop(JPEG_BYTES.hex())}, "blob.value", "image"),
    ("JPEG in a data URI of another type", {"blob": _prop("data:application/octet-stream;base64," + JPEG_B64)},
     "blob.value", "image"),
    ("base64 JPEG cut into list items", {"blob": _prop([JPEG_B64[i : i + 48] for i in range(0, len(JPEG_B64), 48)])},
     "blob.value", "image"),
    ("gzip-compressed base64 JPEG", {"blob": _prop(base64.b64encode(gzip.compress(JPEG_BYTES)).decode())},
     "blob.value", "image"),
    ("embedding packed as base64 float32", {"descriptor": _prop(PACKED_EMBEDDING)}, "descriptor.value", "biometric"),
    ("embedding on a short name", {"vec": _prop(EMBEDDING)}, "vec.value", "biometric"),
    ("IMSI after its scheme", {"sim": {"type": "Relationship", "object": "urn:imsi:310150123456789"}}, "sim.object",
     "device-identifier"),
    ("e-mail with its at spelled out", {"note": _prop("write to ann(at)example.org")}, "note.value", "e-mail"),
    ("e-mail under a JsonProperty's coordinates",
     {"contact": {"type": "JsonProperty", "json": {"coordinates": "ann.smith@example.org"}}},
     "contact.json.coordinates", "e-mail"),
    ("MAC under a JsonProperty's observedAt",
     {"seen": {"type": "JsonProperty", "json": {"observedAt": "a4:5e:60:12:9b:01"}}}, "seen.json.observedAt",
     "device-identifier"),
    ("a name under a value's createdAt", {"x": _prop({"createdAt": {"driverName": "Ann Smith"}})},
     "x.value.createdAt.driverName", "person-name"),
    ("embedding under a nested @context",
     {"x": {"type": "JsonProperty", "json": {"@context": {"faceEmbedding": EMBEDDING}}}},
     "x.json.@context.faceEmbedding", "face"),
    ("a visitor's id", {"visitorId": _prop("v-1234")}, "visitorId", "person-identifier"),
    ("a tracker's id", {"trackId": _prop("t-77")}, "trackId", "person-identifier"),
    ("a person id in capitals", {"PERSONID": _prop("p-1234")}, "PERSONID", "person-identifier"),
    ("a card number as a JSON number", {"cardNumber": _prop(4111111111111111)}, "cardNumber", "person-identifier"),
    ("a credit card", {"creditCard": _prop("4111 1111 1111 1111")}, "creditCard", "person-identifier"),
    ("a Bluetooth address by name", {"btAddr": _prop("x")}, "btAddr", "device-identifier"),
    ("a BSSID by name", {"bssid": _prop("x")}, "bssid", "device-identifier"),
    ("a registration number", {"regNumber": _prop("ABC1234")}, "regNumber", "licence-plate"),
    ("a vehicle's registration", {"vehicleRegistration": _prop("ABC1234")}, "vehicleRegistration", "licence-plate"),
    ("a plate in German", {"kennzeichen": _prop("B-AB 1234")}, "kennzeichen", "licence-plate"),
    ("voice features", {"mfcc": _prop(EMBEDDING)}, "mfcc", "voice-audio"),
    ("an utterance", {"utterance": _prop("hello it's me")}, "utterance", "voice-audio"),
]

# Whole entities (their id or type identifies): the API tests send IDENTIFYING into existing entities too.
IDENTIFYING_ENTITIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("MAC inside an id", {"id": "urn:ngsi-ld:Device:a4:5e:60:12:9b:01", "type": "Device"}, "id", "device-identifier"),
    ("phone as an id", {"id": "tel:+12015550143", "type": "Device"}, "id", "phone-number"),
    ("percent-escaped e-mail in an id", {"id": "urn:ngsi-ld:Person:ann.smith%40example.org", "type": "P"}, "id",
     "e-mail"),
    ("e-mail in a type name", {"id": "urn:ngsi-ld:X:1", "type": "https://example.org/ann@example.org"}, "type",
     "e-mail"),
    # A person record: what the entity stands for, whatever its fields are called (privacy review, 2026-11-29).
    ("a Person", {"id": "urn:ngsi-ld:Person:commuter-17", "type": "Person", "name": _prop("Alice Smith")}, "type",
     "person-record"),
    ("a person type, expanded", {"id": "urn:x:1", "type": ["https://schema.org/Patient"]}, "type", "person-record"),
    ("a person type, JSON-LD", {"@id": "urn:x:1", "@type": "schema:Person"}, "@type", "person-record"),
    ("a person type in the id", {"id": "urn:ngsi-ld:Pedestrian:alice", "type": "Thing"}, "id", "person-record"),
    ("a person's trajectory", {"id": "urn:x:2", "type": "PassengerTrajectory"}, "type", "person-record"),
]

LEGITIMATE: list[dict[str, Any]] = [
    {"peopleCount": {"type": "Property", "value": 12, "observedAt": "2024-05-01T08:00:00Z"}},
    {"faceCount": 3, "numberOfFaces": 3, "voicesDetected": 2},  # cameras and microphones may send counts
    {"audioLevel": {"type": "Property", "value": 61.5, "unitCode": "2N"}, "noiseLevel": 55},
    {"name": {"type": "Property", "value": "Grove St PATH"}, "stationName": "Hamilton Park"},
    {"address": {"type": "Property", "value": {"streetAddress": "30 Montgomery St", "postalCode": "07302"}}},
    {"id": "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869", "type": "TrafficFlowObserved"},
    {"dateObserved": "2017-02-01 00:06:33", "refDevice": "urn:ngsi-ld:Device:201-555", "code": "2017-11-05"},
    {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-74.0431, 40.7196]}}},
    {"intensity": 1234567890, "serial": "SN-4471-220", "speeds": [52.1, 48.3, 50.0] * 10},
    {"description": "Bike lane closed between Grove St and Newark Ave, 8 am to 5 pm"},
    {"occupancy": 0.42, "congested": False},
    {"tz": "UTC+10", "version": "1.2.3+build.5", "observedAt": "2024-05-01T08:00:00+02:00", "unitCode": "KMH"},
    {"id": "urn:ngsi-ld:Thing:123e4567-e89b-12d3-a456-426614174000", "gateway": "fe80::1ff:fe23:4567:890a"},
    {"share": "100%", "version": "v1.2.3", "street": "Straße 5", "stop": "Zürich Hauptbahnhof", "q": "a%20b"},
    # Found by a review of the widened patterns: dates, routes and places that look like MACs or phones.
    {"id": "urn:ngsi-ld:WeatherObserved:Madrid-2024-01-15-10-30-00", "run": "obs_2024_01_15_10_30_00",
     "route": "urn:ngsi-ld:Route:10-20-30-40-50-60", "schedule": "shifts 08-09-10-11-12-13",
     "position": "+40.6892-074.0445/", "build": "1.2.3+20240115123", "quads": "aaaa.bbbb.cccc.dddd"},
    # The privacy review's additions keep these passing: counting types, a breakdown of counts by category,
    # machinery holding machinery, hashes and signatures that are no media nor features, what is said about a
    # registration, a railway track by relationship or number.
    {"id": "urn:ngsi-ld:PeopleCount:gate-3", "type": "PeopleCount"},
    {"id": "urn:ngsi-ld:PedestrianFlowObserved:1", "type": ["https://example.org/PedestrianFlowObserved"]},
    {"counts": {"type": "JsonProperty", "json": [{"type": "pedestrian", "count": 120}, {"type": "bike", "count": 30}]}},
    {"location": _prop({"type": "Polygon", "coordinates": [[[0, 0], [1, 0.5], [1, 1], [0, 0]]]}),
     "peopleCount": {"type": "Property", "value": 7, "observedAt": "2024-05-01T08:00:00Z"}, "modifiedAt": "2024-05-01"},
    {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" * 2,
     "signature": base64.b64encode(bytes(range(7, 256, 3))).decode(), "labels": ["north", "gate", "3"]},
    {"registrationDate": "2024-01-01", "deviceRegistration": "2024-01-01", "trackNumber": 3,
     "refTrack": "urn:ngsi-ld:RailwayTrack:7", "userType": "commuter",
     "openingHours": ["Mo-Fr 10:00-19:00", "Sa 10:00-14:00"]},
    {"description": "Open (at) 8am; the Grove St entrance (north side) [closed] on Sundays"},
]


@pytest.mark.parametrize(
    ("kind", "body", "field", "rule"),
    IDENTIFYING + IDENTIFYING_ENTITIES,
    ids=[c[0] for c in IDENTIFYING + IDENTIFYING_ENTITIES],
)
def test_each_identifying_kind_is_refused_naming_field_and_rule(kind: str, body: Any, field: str, rule: str) -> None:
    found = find_identifying(body)
    assert found is not None, kind
    assert (found.field, found.rule) == (field, rule)
    with pytest.raises(PersonalDataRefused) as refused:
        refuse_personal_data(body)
    problem = refused.value.problem()
    assert problem["status"] == 422 and problem["field"] == field and problem["rule"] == rule


def test_every_rule_is_exercised() -> None:
    # A person record is a whole entity: the API tests send IDENTIFYING into an existing one, whose type stays.
    assert {rule for *_, rule in IDENTIFYING} == set(RULES) - {"person-record"}
    assert {rule for *_, rule in IDENTIFYING + IDENTIFYING_ENTITIES} == set(RULES)


@pytest.mark.parametrize("body", LEGITIMATE)
def test_legitimate_city_data_passes(body: dict[str, Any]) -> None:
    assert find_identifying(body) is None


def test_the_refusal_never_repeats_the_value() -> None:
    with pytest.raises(PersonalDataRefused) as refused:
        refuse_personal_data({"contact": {"type": "Property", "value": "ann.smith@example.org"}})
    assert "ann.smith" not in str(refused.value.problem())
    assert "ann.smith" not in kept_payload(b'{"contact": "ann.smith@example.org"}', "privacy: field 'contact' ...")


def test_dead_letters_keep_nothing_the_rules_refuse_whatever_failed_first() -> None:
    # The message failed for another reason (an unknown type, invalid JSON) before the privacy scan ran.
    assert kept_payload(b'{"note": "bob@example.org", "peopleCount": 1}', "unknown type").startswith("[withheld")
    assert kept_payload(b"not json carol@example.org", "invalid JSON").startswith("[withheld")
    assert kept_payload(b'{"seen": "aa:bb:cc:dd:ee:ff"}', "no time").startswith("[withheld")
    assert "peopleCount" in kept_payload(b'{"peopleCount": 1}', "no time")  # harmless payloads are kept to debug
    assert redacted("polis/default/CrowdFlowObserved/urn:ngsi-ld:CrowdFlowObserved:gina@example.org").startswith(
        "[withheld"
    )
    assert redacted("polis/default/CrowdFlowObserved/urn:x:1") == "polis/default/CrowdFlowObserved/urn:x:1"
    assert "dan@example.org" not in kept_reason("unknown type 'dan@example.org'")
    assert kept_reason("no time in item 1") == "no time in item 1"
    # An MQTT array naming a person record, dead-lettered for its unknown type first, keeps nothing either.
    person = b'[{"peopleCount": 1}, {"id": "urn:ngsi-ld:Visitor:17", "type": "Visitor", "name": "Ann"}]'
    assert kept_payload(person, "item 1: unknown entity type 'Visitor'").startswith("[withheld")
