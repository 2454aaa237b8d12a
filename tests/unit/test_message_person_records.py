"""MQTT's parser refuses person records (PRIVACY.md §3, rule `person-record`) as the API does: by the entity id
in the topic, by an id in a gateway batch after a counting sensor's layout was learnt (the fast path that skips
the payload's scan), and by a person type, whatever types the parser was given. No stricter than the API
either: ids and types the API takes, the parser takes."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.ingest.messages import MessageParser, MessageRejected
from polis.ingest.mqtt import parser_for
from polis.platform import Platform
from tests.conftest import LINK_SDM, admin_headers

NOW = "2026-11-29T00:00:00Z"
T = "polis/default/CrowdFlowObserved/"
POINT = {"type": "Point", "coordinates": [-74.03, 40.72]}

# Ids the API refuses as person records, and ids it takes (a count, a device whose name starts like a person).
PERSON_IDS = [
    "urn:ngsi-ld:Person:alice",
    "urn:ngsi-ld:PersonTrace:bob",
    "urn:ngsi-ld:UserProfile:carol",
    "urn:ngsi-ld:Pedestrian:17",
    "urn:ngsi-ld:PassengerTrajectory:9",
    "URN:NGSI-LD:Patient:3",
]
NEUTRAL_IDS = [
    "urn:ngsi-ld:CrowdFlowObserved:gate-1",
    "urn:ngsi-ld:PeopleCounter:door-2",
    "urn:ngsi-ld:Device:personnel-door-3",
    "urn:ngsi-ld:PedestrianFlowObserved:bridge",
    "urn:ngsi-ld:PeopleCount:square",
    "https://example.org/Person/alice",  # not a urn:ngsi-ld: id: the API reads no type from it
]


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[Platform, MessageParser]]:
    platform = Platform.in_memory()
    yield platform, parser_for(platform)
    platform.close()


def parse(parser: MessageParser, topic: str, body: object) -> list[str]:
    return [r.entity_id for r in parser.parse(topic, orjson.dumps(body), NOW)]


def reading(k: int, **extra: object) -> dict[str, object]:
    return {"peopleCount": 1, "dateObserved": f"2026-11-29T08:{k:02d}:00Z", **extra}


def test_a_person_id_in_the_topic_is_refused_as_a_person_record(hub: tuple[Platform, MessageParser]) -> None:
    _, parser = hub
    for k in range(2):  # the topic's verdict is remembered: the second message is refused too
        with pytest.raises(MessageRejected, match=r"^privacy: the entity id in the topic .*'person-record'"):
            parse(parser, T + "urn:ngsi-ld:Person:alice", reading(k, location={"type": "GeoProperty", "value": POINT}))
    with pytest.raises(MessageRejected) as refused:
        parse(parser, T + "urn:ngsi-ld:Person:alice", reading(3))
    assert "alice" not in refused.value.reason  # the reason names the rule, never the value


def test_a_person_id_after_a_learnt_layout_is_refused(hub: tuple[Platform, MessageParser]) -> None:
    _, parser = hub
    gate = {"id": "urn:ngsi-ld:CrowdFlowObserved:gate-1", **reading(0)}
    assert parse(parser, T + "_batch", [gate, gate | {"id": "urn:ngsi-ld:CrowdFlowObserved:gate-2"}]) == [
        "urn:ngsi-ld:CrowdFlowObserved:gate-1",
        "urn:ngsi-ld:CrowdFlowObserved:gate-2",
    ]  # the layout is learnt: its next items take the fast path
    with pytest.raises(MessageRejected, match=r"^item 1: privacy: the entity id in the payload .*'person-record'"):
        parse(parser, T + "_batch", [gate, {"id": "urn:ngsi-ld:PersonTrace:bob", **reading(0)}])
    with pytest.raises(MessageRejected, match=r"^privacy: the entity id in the payload .*'person-record'"):
        parse(parser, T + "_batch", [{"id": "urn:ngsi-ld:UserProfile:carol", **reading(1)}])
    assert parse(parser, T + "_batch", [gate]) == ["urn:ngsi-ld:CrowdFlowObserved:gate-1"]  # still taken


def test_a_person_type_is_refused_as_a_person_record_whatever_types_the_parser_takes(
    hub: tuple[Platform, MessageParser],
) -> None:
    _, hub_parser = hub
    # A parser told to take Person (a deployment's own types) still refuses it, as the API does.
    parser = MessageParser(hub_parser.terms, ["CrowdFlowObserved", "Person", "Visitor"])
    for parsing in (hub_parser, parser):
        with pytest.raises(MessageRejected, match=r"^privacy: the entity type in the topic .*'person-record'"):
            parse(parsing, "polis/default/Person/urn:ngsi-ld:Device:7", reading(0))
        with pytest.raises(MessageRejected, match=r"^item 1: privacy: the entity type in the payload .*person-record"):
            parse(
                parsing,
                T + "_batch",
                [
                    {"id": "urn:ngsi-ld:CrowdFlowObserved:gate-1", **reading(0)},
                    {"id": "urn:ngsi-ld:Device:8", "type": "Visitor", **reading(0)},
                ],
            )
    assert parse(parser, T + "urn:ngsi-ld:CrowdFlowObserved:gate-1", reading(0)) == [
        "urn:ngsi-ld:CrowdFlowObserved:gate-1"
    ]


@pytest.mark.parametrize("entity_id", PERSON_IDS + NEUTRAL_IDS)
def test_mqtt_and_the_api_agree_on_which_ids_are_person_records(
    hub: tuple[Platform, MessageParser], entity_id: str
) -> None:
    platform, parser = hub
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        r = client.post(
            "/ngsi-ld/v1/entities",
            json={"id": entity_id, "type": "CrowdFlowObserved", "peopleCount": {"type": "Property", "value": 1}},
            headers={"Link": LINK_SDM},
        )
    api_refuses = r.status_code == 422 and r.json()["type"].endswith("PersonalDataRefused")
    assert r.status_code in (201, 422), r.text
    # In the topic (an id with a '/' cannot be one) and in a gateway batch after a counting sensor.
    gate = {"id": "urn:ngsi-ld:CrowdFlowObserved:gate-1", **reading(0)}
    ways: list[tuple[str, object]] = [(T + "_batch", [gate, {"id": entity_id, **reading(0)}])]
    if "/" not in entity_id:
        ways.append((T + entity_id, reading(0)))
    for topic, body in ways:
        try:
            mqtt_refuses = not parse(parser, topic, body)
        except MessageRejected as why:
            assert "'person-record'" in why.reason, why.reason  # refused for nothing else
            mqtt_refuses = True
        assert (api_refuses, mqtt_refuses) == (entity_id in PERSON_IDS,) * 2, topic


def test_an_epidemic_case_record_is_refused_after_another_entity_taught_its_shape(
    hub: tuple[Platform, MessageParser],
) -> None:
    """The epidemic dataset holds only its module's shapes (regions' counts, flows) on every write path: over MQTT
    a layout another dataset's entity taught does not let a case record's fields through (a review suspected it
    would; the parser's own checks hold)."""
    _, parser = hub
    area = "polis/default/OriginDestinationFlow/"
    fields = {"flowCount": 1, "age": 71, "dateObserved": "2026-11-29T08:00:00Z"}
    survey = {"id": "urn:ngsi-ld:OriginDestinationFlow:other:survey-1", **fields}  # an age alone names nobody there
    case = {"id": "urn:ngsi-ld:OriginDestinationFlow:epidemic:covid-europe-2020:Italy:case-1", **fields}
    assert parse(parser, area + "_batch", [survey]) == [survey["id"]]
    with pytest.raises(MessageRejected, match="person-record"):
        parse(parser, area + "_batch", [survey, case])
    with pytest.raises(MessageRejected, match="person-record"):  # the id in the topic, the payload without one
        parse(parser, area + str(case["id"]), fields)
