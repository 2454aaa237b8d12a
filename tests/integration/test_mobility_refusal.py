"""Refusal at the door, on the real paths: every identifying kind sent to a real server (entity create,
append, update, replace, batch, temporal) gets 422 naming the field and the rule and stores nothing; sent
over a real Mosquitto it becomes a dead letter with the reason and without the payload. Counts from
cameras and microphones pass both ways."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import Broker
from polis.platform import Platform
from tests.conftest import Server, start_server, stop_server
from tests.integration.test_mqtt import wait_until
from tests.unit.test_privacy_refusal import IDENTIFYING

LD = "/ngsi-ld/v1"
JSON = {"Content-Type": "application/json"}
AT = "2024-05-01T08:00:00Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `polis serve` for the module (starting one takes seconds)."""
    srv = start_server(tmp_path_factory.mktemp("refusal") / "hub")
    yield srv
    stop_server(srv.process)


def _entity(n: int, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:CrowdFlowObserved:door-{n}", "type": "CrowdFlowObserved", **attrs}


def _assert_refused(answer: httpx.Response, field: str, rule: str) -> None:
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert (problem["field"], problem["rule"]) == (field, rule), problem
    assert problem["title"] == "Personal data refused" and field in problem["detail"]


def test_every_identifying_kind_is_refused_by_the_api_and_nothing_is_stored(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={**server.headers, **JSON}, timeout=30) as http:
        legit = _entity(0, {"peopleCount": {"type": "Property", "value": 7, "observedAt": AT}, "faceCount": 2})
        assert http.post(f"{LD}/entities", json=legit).status_code == 201
        existing = legit["id"]
        for n, (kind, body, field, rule) in enumerate(IDENTIFYING, start=1):
            _assert_refused(http.post(f"{LD}/entities", json=_entity(n, body)), field, rule)
            assert http.get(f"{LD}/entities/{_entity(n, {})['id']}").status_code == 404, kind
            # Into an existing entity, through every write path.
            _assert_refused(http.post(f"{LD}/entities/{existing}/attrs", json=body), field, rule)
            _assert_refused(http.patch(f"{LD}/entities/{existing}", json=body), field, rule)
            _assert_refused(
                http.put(f"{LD}/entities/{existing}", json={"type": "CrowdFlowObserved", **body}), field, rule
            )
            _assert_refused(http.post(f"{LD}/entityOperations/upsert", json=[_entity(n, body)]), field, rule)
        # The existing entity is untouched; its camera counts were never refused.
        stored = http.get(f"{LD}/entities/{existing}", params={"options": "keyValues"}).json()
        assert set(stored) == {"id", "type", "peopleCount", "faceCount"}
        assert (
            http.get(f"{LD}/entities", params={"type": "CrowdFlowObserved", "count": "true"}).headers[
                "NGSILD-Results-Count"
            ]
            == "1"
        )


def test_update_and_temporal_writes_are_refused_too(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={**server.headers, **JSON}, timeout=30) as http:
        eid = "urn:ngsi-ld:CrowdFlowObserved:door-t"
        assert (
            http.post(f"{LD}/entities", json={"id": eid, "type": "CrowdFlowObserved", "note": "x"}).status_code == 201
        )
        email = {"note": {"type": "Property", "value": "ann.smith@example.org"}}
        _assert_refused(http.patch(f"{LD}/entities/{eid}/attrs", json=email), "note.value", "e-mail")
        _assert_refused(http.patch(f"{LD}/entities/{eid}/attrs/note", json=email["note"]), "note.value", "e-mail")
        plate = {
            "id": eid,
            "type": "CrowdFlowObserved",
            "licensePlate": [{"type": "Property", "value": "X", "observedAt": AT}],
        }
        _assert_refused(http.post(f"{LD}/temporal/entities", json=plate), "licensePlate", "licence-plate")
        voice = {"audioSample": [{"type": "Property", "value": "data:audio/ogg;base64,T2dnUw==", "observedAt": AT}]}
        _assert_refused(http.post(f"{LD}/temporal/entities/{eid}/attrs", json=voice), "audioSample", "voice-audio")
        count = {
            "id": eid,
            "type": "CrowdFlowObserved",
            "peopleCount": [{"type": "Property", "value": 4, "observedAt": AT}],
        }
        assert http.post(f"{LD}/temporal/entities", json=count).status_code in (201, 204)
        assert http.get(f"{LD}/entities/{eid}", params={"options": "keyValues"}).json()["note"] == "x"



def test_every_identifying_kind_over_mqtt_is_a_dead_letter_without_its_payload(broker: Broker) -> None:
    platform = Platform.in_memory()
    try:
        ingestor = platform.start_mqtt(broker.url, wait_s=10)
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="refusal-test")
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        topic = "polis/default/CrowdFlowObserved/urn:ngsi-ld:CrowdFlowObserved:cam-{}"
        sent = []
        for n, (_kind, body, field, rule) in enumerate(IDENTIFYING):
            payload = json.dumps({**body, "dateObserved": AT})
            sent.append((payload, field, rule))
            publisher.publish(topic.format(n), payload, qos=1).wait_for_publish(10)
        publisher.publish(topic.format("ok"), json.dumps({"peopleCount": 9, "faceCount": 1, "dateObserved": AT}), qos=1)
        wait_until(
            lambda: ingestor.metrics()["dead_lettered"] >= len(IDENTIFYING) and ingestor.metrics()["committed"] >= 1
        )
        publisher.loop_stop()
        publisher.disconnect()
        letters = sorted(platform.store.dead_letters("mqtt", limit=1000), key=lambda d: int(d.topic.rsplit("-", 1)[1]))
        assert len(letters) == len(IDENTIFYING)
        for letter, (payload, field, _rule) in zip(letters, sent, strict=True):
            assert letter.reason.startswith("privacy:") and f"'{field.split('.')[0]}" in letter.reason, letter.reason
            assert letter.payload == f"[withheld: {len(payload.encode())} bytes refused for privacy]"
        # Nothing of the refused messages anywhere in the store; the counts arrived.
        assert platform.store.entity_count("") == 1
        assert platform.store.get("", ["urn:ngsi-ld:CrowdFlowObserved:cam-ok"])
    finally:
        platform.close()
