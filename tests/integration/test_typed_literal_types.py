"""A value member {"@type": X, "@value": ...} whose @type is not a string (a list, an object) was a 500
(a dict lookup with an unhashable key); found by test_bad_input's random bodies in a clean-clone run."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("kind", [[], {"a": 1}, ["Date"]])
def test_a_value_whose_type_is_not_a_string_is_no_500(client: TestClient, kind: Any) -> None:
    eid = "urn:ngsi-ld:Vehicle:typed"
    assert client.post("/ngsi-ld/v1/entities", json={"id": eid, "type": "Vehicle"}).status_code == 201
    answer = client.post(f"/ngsi-ld/v1/entities/{eid}/attrs", json={"value": {"@type": kind, "@value": None}})
    assert answer.status_code < 500, answer.text
