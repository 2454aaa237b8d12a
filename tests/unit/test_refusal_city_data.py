"""Ordinary city data the refusal once took for personal data (review of 2026-11-29, a corpus of Smart Data
Models entities): each passes now, while the identifying forms beside it are still refused."""

from __future__ import annotations

from typing import Any

import pytest

from polis.privacy.refusal import find_identifying, rule_for_value


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


SPECTRUM = [round(0.01 * i + 0.137, 3) for i in range(32)]

CITY_DATA = {
    "a plant's rated power": {"type": "PhotovoltaicMeasurement", "nameplateCapacity": _prop(250.0)},
    "a bus's GPS tracker": {"type": "Vehicle", "gpsTrackerId": _prop("TRK-0042")},
    "a count of people": {"type": "People", "count": _prop(3)},
    "a spectrometer's reading": {"type": "WaterQualityObserved", "spectralSignature": _prop(SPECTRUM)},
    "a LoRaWAN DevEUI with colons": {"type": "Device", "devEUI": _prop("00:04:a3:0b:00:1c:2d:3e")},
    "a LoRaWAN DevEUI with dashes": {"type": "Device", "devEUI": _prop("00-04-A3-0B-00-1C-2D-3E")},
    "a gateway's IPv4 address": {"type": "Device", "ipAddress": _prop(["192.168.100.200", "172.16.254.1"])},
    "coordinates as text": {"type": "Device", "latitude": _prop("52.3702157"), "longitude": _prop("151.2092955")},
    "a meter reading as text": {"type": "EnergyMeter", "reading": _prop("123456.789")},
    "an epoch as text": {"type": "Device", "lastSeen": _prop("1705314600.123")},
}


@pytest.mark.parametrize("body", CITY_DATA.values(), ids=CITY_DATA.keys())
def test_city_data_passes(body: dict[str, Any]) -> None:
    assert find_identifying({"id": "urn:ngsi-ld:Thing:1", **body}) is None


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("a4:5e:60:12:9b:01", "device-identifier"),  # a phone's MAC: six pairs, alone
        ("urn:ngsi-ld:Device:a4:5e:60:12:9b:01", "device-identifier"),
        ("+1 201 555 0143", "phone-number"),
        ("201-555-0143", "phone-number"),
        ("0201 5550143", "phone-number"),
    ],
)
def test_identifying_values_beside_them_are_still_refused(value: str, rule: str) -> None:
    assert rule_for_value(value) == rule


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"type": "Person"}, "person-record"),
        ({"type": "CrowdFlowObserved", "trackId": _prop("t-77")}, "person-identifier"),
        ({"type": "CrowdFlowObserved", "faceSignature": _prop([0.1] * 128)}, "face"),
        ({"type": "Vehicle", "licensePlate": _prop("4832 KLM")}, "licence-plate"),
    ],
)
def test_what_identifies_still_does(body: dict[str, Any], rule: str) -> None:
    found = find_identifying({"id": "urn:ngsi-ld:Thing:1", **body})
    assert found is not None and found.rule == rule, found
