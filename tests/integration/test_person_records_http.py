"""Person records through the API's less-travelled doors (found in a review on 2026-11-29; each test failed
before its fix): a batch whose plan a counting sensor taught took a person's record in its later items, and a
refused person's id stayed, word for word, in the audit log's request path (PRIVACY.md §3: a refusal keeps
nothing of what it refused)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.domain.entity import HistoryInstance
from polis.platform import Platform
from polis.privacy.refusal import redacted
from tests.conftest import LINK_SDM, hub_client, problem

GATE = {"id": "urn:ngsi-ld:CrowdFlowObserved:gate-1", "type": "CrowdFlowObserved",
        "peopleCount": {"type": "Property", "value": 5}}
SDM = "https://smartdatamodels.org/dataModel.Transportation/"
WITHHELD = "[withheld by privacy rule 'person-record']"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


@pytest.mark.parametrize("op", ["create", "upsert"])
def test_a_batch_refuses_a_person_id_after_a_counting_sensor_of_the_same_shape(
    hub: tuple[TestClient, Platform], op: str
) -> None:
    client, _ = hub
    link = {"Link": LINK_SDM}
    assert client.post("/ngsi-ld/v1/entityOperations/create", json=[GATE], headers=link).status_code == 201
    items = [dict(GATE, id="urn:ngsi-ld:CrowdFlowObserved:gate-2"), dict(GATE, id="urn:ngsi-ld:PersonTrace:bob")]
    r = client.post(f"/ngsi-ld/v1/entityOperations/{op}", json=items, headers=link)
    problem(r, 422, "PersonalDataRefused", "person-record")
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:PersonTrace:bob").status_code == 404
    gate_2 = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:gate-2")
    assert gate_2.status_code == 404  # no partial write


def test_the_audit_log_keeps_no_refused_persons_id(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    body = {"peopleCount": {"type": "Property", "value": 1}}
    assert client.post("/ngsi-ld/v1/entities/urn:ngsi-ld:Person:alice/attrs", json=body).status_code == 404
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:gate-9").status_code == 404
    platform.access.close()  # the audit log is flushed
    log = platform.settings.data_dir / "audit" / "audit.jsonl"
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    paths = [e["what"] for e in entries]
    assert any(WITHHELD in p for p in paths), paths
    assert not any("alice" in orjson.dumps(e).decode() for e in entries), entries
    assert any("urn:ngsi-ld:CrowdFlowObserved:gate-9" in p for p in paths), paths  # other ids are kept as sent


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("polis/default/CrowdFlowObserved/urn:ngsi-ld:Person:alice", f"polis/default/CrowdFlowObserved/{WITHHELD}"),
        ("GET /ngsi-ld/v1/entities?id=URN:NGSI-LD:Patient:3,urn:ngsi-ld:Sensor:b",
         f"GET /ngsi-ld/v1/entities?id={WITHHELD},urn:ngsi-ld:Sensor:b"),
        ("polis/default/CrowdFlowObserved/urn:ngsi-ld:CrowdFlowObserved:gate-1", None),
        ("PATCH /ngsi-ld/v1/entities/urn:ngsi-ld:PeopleCount:square/attrs", None),
    ],
)
def test_redacted_withholds_only_a_persons_id(text: str, kept: str | None) -> None:
    assert redacted(text) == (text if kept is None else kept)


def test_a_temporal_instance_of_a_stored_person_record_takes_nothing_more(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    eid, now = "urn:ngsi-ld:Person:zed", "2026-01-01T00:00:00Z"
    reading = {"type": "Property", "value": 1, "observedAt": now}
    platform.store.write(  # as an older Polis stored it, before the gate refused person records
        "",
        upserts=[{"id": eid, "type": [SDM + "CrowdFlowObserved"], "createdAt": now, "modifiedAt": now,
                  SDM + "peopleCount": [dict(reading, createdAt=now, modifiedAt=now)]}],
        history=[HistoryInstance(eid, SDM + "peopleCount", datetime(2026, 1, 1, tzinfo=UTC), reading)],
    )
    link = {"Link": LINK_SDM}
    found = client.get(f"/ngsi-ld/v1/temporal/entities/{eid}", headers=link).json()["peopleCount"]
    instance_id = found[0]["instanceId"]
    body = dict(reading, value=99, location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}})
    r = client.patch(f"/ngsi-ld/v1/temporal/entities/{eid}/attrs/peopleCount/{instance_id}", json=body, headers=link)
    problem(r, 422, "PersonalDataRefused", "person-record")
    after = client.get(f"/ngsi-ld/v1/temporal/entities/{eid}", headers=link).json()["peopleCount"]
    assert [i["value"] for i in after] == [1] and "location" not in after[0]
