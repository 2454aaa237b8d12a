"""Merge-patch (§5.6.17, batch §5.6.20) follows RFC 7396 below the attribute too: a LanguageProperty's
languageMap merges language by language (§4.5.18), and a sub-attribute sent onto a stored one merges member
by member, its own value key by key; urn:ngsi-ld:null still removes what it names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import hub_client

E = "/ngsi-ld/v1/entities"
OPS = "/ngsi-ld/v1/entityOperations"
NULL = "urn:ngsi-ld:null"
ID = "urn:ngsi-ld:Road:1"
ROAD = {
    "id": ID,
    "type": "Road",
    "name": {"type": "LanguageProperty", "languageMap": {"en": "Hollywood Fwy", "es": "Autopista", "fr": "Autoroute"}},
    "speed": {
        "type": "Property",
        "value": 61.5,
        "unitCode": "HM",
        "accuracy": {"type": "Property", "value": {"low": 0.9, "high": 1.1}, "unitCode": "P1"},
        "source": {"type": "Property", "value": "loop"},
    },
}


@pytest.fixture
def client() -> Iterator[TestClient]:
    for c, _platform in hub_client():
        assert c.post(E, json=ROAD).status_code == 201
        yield c


def _road(client: TestClient) -> dict[str, Any]:
    r = client.get(f"{E}/{ID}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_language_map_merges_language_by_language(client: TestClient) -> None:
    r = client.patch(f"{E}/{ID}", json={"name": {"type": "LanguageProperty", "languageMap": {"es": "Autovía",
                                                                                              "fr": NULL}}})
    assert r.status_code == 204, r.text
    assert _road(client)["name"]["languageMap"] == {"en": "Hollywood Fwy", "es": "Autovía"}


def test_a_sub_attribute_merges_member_by_member(client: TestClient) -> None:
    r = client.patch(f"{E}/{ID}", json={"speed": {"type": "Property", "value": 58.0,
                                                  "accuracy": {"type": "Property", "value": {"high": 1.2}}}})
    assert r.status_code == 204, r.text
    speed = _road(client)["speed"]
    assert speed["value"] == 58.0 and speed["unitCode"] == "HM"  # members not sent survive
    assert speed["accuracy"] == {"type": "Property", "value": {"low": 0.9, "high": 1.2}, "unitCode": "P1"}
    assert speed["source"] == {"type": "Property", "value": "loop"}  # a sub-attribute not sent survives


def test_a_null_sub_attribute_is_removed_and_another_kind_replaces(client: TestClient) -> None:
    item = {"id": ID, "type": "Road", "speed": {
        "type": "Property", "value": 57.0,
        "source": {"type": "Property", "value": NULL},
        "accuracy": {"type": "Relationship", "object": "urn:ngsi-ld:Calibration:7"},
    }}
    r = client.post(f"{OPS}/merge", json=[item])
    assert r.status_code == 204, r.text
    speed = _road(client)["speed"]
    assert "source" not in speed
    assert speed["accuracy"] == {"type": "Relationship", "object": "urn:ngsi-ld:Calibration:7"}  # no unitCode left
