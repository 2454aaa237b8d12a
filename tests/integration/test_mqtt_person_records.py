"""Person records over MQTT, against a real Mosquitto: refused as the API refuses them (rule `person-record`),
kept only as dead letters that name the rule, and never served; counting sensors published beside them are
stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.ingest.broker import Broker
from polis.ingest.mqtt import MqttIngestor
from polis.platform import Platform
from tests.conftest import admin_headers
from tests.integration.test_mqtt import PEOPLE, Publisher, history, wait_until

POINT = {"type": "Point", "coordinates": [-74.03, 40.72]}
GATE = "urn:ngsi-ld:CrowdFlowObserved:gate-1"


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def hub(broker: Broker, tenant: str) -> Iterator[tuple[Platform, MqttIngestor, TestClient]]:
    platform = Platform.in_memory()
    ingestor = MqttIngestor(
        platform, broker.url, client_id=f"ingest-{tenant}", topic=f"polis/{tenant}/#", batch_wait_s=0.01
    )
    ingestor.start(wait_s=10)
    headers = {**admin_headers(platform), "NGSILD-Tenant": tenant}
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=headers) as client:
        yield platform, ingestor, client
    ingestor.stop()
    platform.close()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(broker)
    yield pub
    pub.close()


def reading(minute: int, **extra: object) -> dict[str, object]:
    return {"peopleCount": 1, "dateObserved": f"2026-11-29T08:{minute:02d}:00Z", **extra}


def test_person_records_are_dead_letters_and_counting_sensors_beside_them_are_stored(
    hub: tuple[Platform, MqttIngestor, TestClient], publisher: Publisher, tenant: str
) -> None:
    platform, ingestor, client = hub
    crowd = f"polis/{tenant}/CrowdFlowObserved/"
    trace = [  # one person's places, the person's id in the topic only
        (crowd + "urn:ngsi-ld:Person:alice", json.dumps(reading(k, location=POINT))) for k in range(3)
    ]
    good = [(crowd + "_batch", json.dumps([{"id": GATE, **reading(k)}])) for k in range(2)]
    person_batches = [
        # the counting sensor's layout is learnt by then (the fast path that skips the payload's scan)
        (
            crowd + "_batch",
            json.dumps([{"id": GATE, **reading(5)}, {"id": "urn:ngsi-ld:PersonTrace:bob", **reading(5)}]),
        ),
        (crowd + "_batch", json.dumps([{"id": "urn:ngsi-ld:UserProfile:carol", **reading(6)}])),
        # a person type in the topic, with a neutral id
        (f"polis/{tenant}/Person/urn:ngsi-ld:Device:7", json.dumps(reading(7))),
    ]
    publisher.send_all(good[:1])
    wait_until(lambda: ingestor.metrics()["committed"] == 1, what="the counting sensor's first reading")
    publisher.send_all([*trace, *person_batches, *good[1:]])  # one burst: the ingest batches them together
    wait_until(lambda: ingestor.metrics()["committed"] + ingestor.metrics()["dead_lettered"] == 8)

    letters = platform.store.dead_letters("mqtt")
    assert len(letters) == 6 == ingestor.metrics()["dead_lettered"], [d.reason for d in letters]
    for letter in letters:
        assert "privacy:" in letter.reason and "'person-record'" in letter.reason, letter.reason
        assert letter.payload.startswith("[withheld"), letter.payload  # nothing of the record is kept
        assert "alice" not in letter.topic, letter.topic  # not even the person's id from the topic
    # alice's three messages, and the id after the topic's Person type (a person's, whatever it looks like)
    assert sum(d.topic.endswith("/[withheld by privacy rule 'person-record']") for d in letters) == 4
    for entity_id in ["urn:ngsi-ld:Person:alice", "urn:ngsi-ld:PersonTrace:bob", "urn:ngsi-ld:UserProfile:carol"]:
        assert client.get(f"/ngsi-ld/v1/entities/{entity_id}").status_code == 404
        assert client.get(f"/ngsi-ld/v1/temporal/entities/{entity_id}").status_code == 404
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:7").status_code == 404
    # Everything acknowledged from the counting sensor's own messages is stored; the refused batch's gate-1
    # reading (08:05) went with its message, which is dead-lettered whole, as an API batch is refused whole.
    assert [t for t, _ in history(platform, tenant, GATE, PEOPLE)] == ["2026-11-29T08:00:00Z", "2026-11-29T08:01:00Z"]
    assert client.get(f"/ngsi-ld/v1/entities/{GATE}").status_code == 200


def test_the_id_after_a_persons_type_in_the_topic_is_not_kept_whatever_it_looks_like(
    hub: tuple[Platform, MqttIngestor, TestClient], publisher: Publisher, tenant: str
) -> None:
    """Review of 2026-11-29: `polis/<tenant>/Person/urn:uuid:...` was refused, but its dead letter kept the
    person's id, which no id pattern marks as a person's: the type in the topic does."""
    platform, ingestor, _ = hub
    pid = "urn:uuid:0b6f2c1e-1111-4222-8333-444455556666"
    publisher.send_all([(f"polis/{tenant}/Person/{pid}", json.dumps({"peopleCount": 1}))])
    wait_until(lambda: ingestor.metrics()["dead_lettered"] == 1)
    letters = platform.store.dead_letters("mqtt")
    assert [d.topic for d in letters] == [f"polis/{tenant}/Person/[withheld by privacy rule 'person-record']"]
    assert "person-record" in letters[0].reason and pid not in letters[0].reason
