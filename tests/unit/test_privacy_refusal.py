"""Refusal rules: every identifying kind is caught by its name or its value; legitimate city data passes."""

from __future__ import annotations

from typing import Any

import pytest

from polis.domain.errors import PersonalDataRefused
from polis.privacy.refusal import RULES, find_identifying, kept_payload, kept_reason, redacted, refuse_personal_data

JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDA"
EMBEDDING = [0.0132, -0.2231, 0.5012, 0.0044] * 32

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
]

# Whole entities (their id or type identifies): the API tests send IDENTIFYING into existing entities too.
IDENTIFYING_ENTITIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("MAC inside an id", {"id": "urn:ngsi-ld:Device:a4:5e:60:12:9b:01", "type": "Device"}, "id", "device-identifier"),
    ("phone as an id", {"id": "tel:+12015550143", "type": "Device"}, "id", "phone-number"),
    ("percent-escaped e-mail in an id", {"id": "urn:ngsi-ld:Person:ann.smith%40example.org", "type": "P"}, "id",
     "e-mail"),
    ("e-mail in a type name", {"id": "urn:ngsi-ld:X:1", "type": "https://example.org/ann@example.org"}, "type",
     "e-mail"),
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
    assert {rule for *_, rule in IDENTIFYING} == set(RULES)


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
