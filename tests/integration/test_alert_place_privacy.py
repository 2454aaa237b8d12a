"""A burst alert's published place must not give any one 911 call's place away (the reviewer's attack).

Ten calls in one township raise a burst alert; an eleventh arrives from a secret point. Were the alert placed at
the mean of its calls, the place published after the eleventh (n = 11) and the one before it (n = 10) would solve
for the secret call exactly: 11·m11 − 10·m10. Through the real API, read as anyone without a key reads it (the
NGSI-LD Alert entity, the alert JSON, every CAP message, the Atom feed), the place is one H3 cell's centre, the same
before and after, the same in every form, and its circle covers the cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from polis.alerts.cap import CAP_NS, validate_cap
from polis.alerts.model import AlertRecord, Member, distance_m
from polis.alerts.place import PERSON_TIME_STEP_S, PLACE_H3_RESOLUTION
from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import LINK_SDM, THRESHOLD_RULE, hub_client, problem

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CROWD = (-75.20, 40.20)  # (longitude, latitude) of the ten calls
SECRET = (-75.4567, 40.3456)  # the eleventh call's place: what the attack solves for
ALERT_TYPE = "https://smartdatamodels.org/dataModel.Alert/Alert"
ATOM = "{http://www.w3.org/2005/Atom}"
CAP = {"cap": CAP_NS}
BURST_RULE: dict[str, Any] = {
    "id": "call-burst",
    "kind": "burst",
    "name": "Burst of calls",
    "scope": {"type": "EmergencyCall"},
    "groupBy": "township",
    "minHistoryDays": 0,  # a fresh hub: the expected rate is the prior's, so ten calls are a burst
}
Place = tuple[float, float]
ALERT_TYPE = "https://smartdatamodels.org/dataModel.Alert/Alert"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def call(client: TestClient, platform: Platform, number: int, minutes: float, point: Place, **attrs: Any) -> None:
    entity = {
        "id": f"urn:ngsi-ld:EmergencyCall:montgomery-911:place-test-{number}",
        "type": "EmergencyCall",
        "township": {"type": "Property", "value": "ABINGTON"},
        "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": at(minutes)}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(point)}},
        **{k: {"type": "Property", "value": v, "observedAt": at(minutes)} for k, v in attrs.items()},
    }
    response = client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM})
    assert response.status_code == 201, response.text
    assert platform.alerts.flush(10)


def circle_of(cap: bytes) -> tuple[Place, float]:
    """A CAP message's circle: ((longitude, latitude), radius in metres)."""
    validate_cap(cap)
    text = etree.fromstring(cap).findtext("cap:info/cap:area/cap:circle", namespaces=CAP)
    assert text is not None
    where, radius_km = text.split(" ")
    lat, lon = (float(v) for v in where.split(","))
    return (lon, lat), float(radius_km) * 1000


def cap_count(cap: bytes) -> str:
    """The count a CAP message publishes (its `value <group>` parameter)."""
    for parameter in etree.fromstring(cap).findall("cap:info/cap:parameter", namespaces=CAP):
        if (parameter.findtext("cap:valueName", namespaces=CAP) or "").startswith("value "):
            return str(parameter.findtext("cap:value", namespaces=CAP))
    raise AssertionError("no count in the CAP message")


def published(anonymous: TestClient, keyed: TestClient) -> dict[str, Any]:
    """Everything published about the one alert: what anyone without a key reads (the Alert entity, the CAP
    messages, the feed) and the alert JSON (for any key that reads aggregates)."""
    entities = anonymous.get("/ngsi-ld/v1/entities", params={"type": ALERT_TYPE, "attrs": "location"})
    assert entities.status_code == 200, entities.text
    [entity] = entities.json()
    listed = keyed.get("/polis/v1/alerts", params={"status": "all"})
    assert listed.status_code == 200, listed.text
    [alert] = listed.json()
    caps = []
    for number in range(1, len(alert["messages"]) + 1):
        response = anonymous.get(f"/polis/v1/alerts/{alert['id']}/cap", params={"message": number})
        assert response.status_code == 200, response.text
        caps.append(response.content)
    feed = anonymous.get("/polis/v1/alerts/feed")
    assert feed.status_code == 200, feed.text
    inline = etree.fromstring(feed.content).findall(f"{ATOM}entry/{ATOM}content/cap:alert", namespaces=CAP)
    return {
        "entity": tuple(entity["location"]["value"]["coordinates"]),
        "alert": alert,
        "caps": caps,
        "feed": [etree.tostring(c) for c in inline],
    }


def places(seen: dict[str, Any]) -> list[Place]:
    """Every place the alert publishes, from every form (CAP circles carry 6 decimals)."""
    alert = seen["alert"]
    found = [seen["entity"], tuple(alert["area"]["circle"]["center"])]
    found += [tuple(member["location"]) for member in alert["entities"]]
    found += [circle_of(cap)[0] for cap in seen["caps"] + seen["feed"]]
    return found


def assert_cell_centre(place: Place) -> str:
    """`place` is the centre of an H3 cell at the documented resolution; that cell."""
    lon, lat = place
    cell = h3.latlng_to_cell(lat, lon, PLACE_H3_RESOLUTION)
    clat, clon = h3.cell_to_latlng(cell)
    assert math.isclose(clat, lat, abs_tol=1e-9) and math.isclose(clon, lon, abs_tol=1e-9), (place, (clon, clat))
    return str(cell)


def circumradius_m(cell: str) -> float:
    clat, clon = h3.cell_to_latlng(cell)
    return max(distance_m((clon, clat), (vlon, vlat)) for vlat, vlon in h3.cell_to_boundary(cell))


def same_place(a: Place, b: Place) -> bool:
    return math.isclose(a[0], b[0], abs_tol=1e-6) and math.isclose(a[1], b[1], abs_tol=1e-6)


def test_the_eleventh_call_cannot_be_solved_for_from_any_published_form(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    assert client.post("/polis/v1/alerts/rules", json=BURST_RULE).status_code == 201
    for number in range(10):
        call(client, platform, number, number, CROWD)
    with TestClient(create_app(platform), raise_server_exceptions=False) as anonymous:  # no key: public
        before = published(anonymous, client)
        assert [m["msgType"] for m in before["alert"]["messages"]] == ["Alert"]
        assert before["alert"]["entities"][0]["count"] == 10

        call(client, platform, 10, 30, SECRET)  # the secret call, after the update interval: an Update goes out
        after = published(anonymous, client)
        assert [m["msgType"] for m in after["alert"]["messages"]] == ["Alert", "Update"]
        assert after["alert"]["entities"][0]["count"] == 11
        # The reviewer's attack on every pair of published places, before and after: nothing near the call.
        for old in places(before):
            for new in places(after):
                solved = (11 * new[0] - 10 * old[0], 11 * new[1] - 10 * old[1])
                assert distance_m(solved, SECRET) > 10_000, solved
        # ... because the place never moved, in any form, and every form says the same;
        raised = before["entity"]
        assert all(same_place(p, raised) for p in places(before) + places(after))
        # and it is a cell's centre, not the calls' mean: the cell the ten calls' mean falls in, whose whole area
        # the circle covers (and the rule's 500 m beyond it).
        cell = assert_cell_centre(raised)
        assert cell == h3.latlng_to_cell(CROWD[1], CROWD[0], PLACE_H3_RESOLUTION)
        assert not same_place(raised, CROWD)
        assert before["alert"]["area"]["circle"]["radiusM"] >= circumradius_m(cell) + 500 - 0.05  # rounded to 0.1 m
        for cap in after["caps"] + after["feed"]:
            assert circle_of(cap)[1] >= circumradius_m(cell)
        # Published times are on the 5-minute grid, not the exact time of the newest call.
        alert = after["alert"]
        for name in ("onset", "effective"):
            stamp = datetime.fromisoformat(alert[name].replace("Z", "+00:00"))
            assert stamp.timestamp() % PERSON_TIME_STEP_S == 0, alert[name]
        assert alert["entities"][0]["observedAt"] == at(30)

        # A call inside the update interval is not published anywhere until the next message: the JSON view
        # anyone can poll says what the latest CAP message and the Alert entity say.
        call(client, platform, 11, 31, SECRET)
        latest = published(anonymous, client)
        assert len(latest["alert"]["messages"]) == 2
        assert latest["alert"]["entities"][0]["count"] == 11 and cap_count(latest["caps"][-1]) == "11"
        assert latest["alert"]["entities"][0]["observedAt"] == at(30)
        assert all(same_place(p, raised) for p in places(latest))
    assert platform.alerts.invalid_cap == 0


def test_a_rule_on_single_records_never_watches_a_persons_record(hub: tuple[TestClient, Platform]) -> None:
    """A threshold rule on entities of a raw-tier dataset (one record per call) would publish one call's id and
    value in every alert: it is refused while such records are stored, and never fires on one stored later."""
    client, platform = hub
    rule = {**THRESHOLD_RULE, "id": "urgent-call", "scope": {"type": "EmergencyCall"}, "attribute": "priority"}
    rule["above"] = 2
    assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201  # no call stored yet
    call(client, platform, 1, 0, SECRET, priority=3)
    assert client.get("/polis/v1/alerts?status=all").json() == []  # the call was not watched
    assert client.get("/ngsi-ld/v1/entities", params={"type": ALERT_TYPE}).json() == []
    again = {**rule, "id": "urgent-call-2"}
    r = client.post("/polis/v1/alerts/rules", json=again)
    problem(r, 400, "BadRequestData", "people's records", "montgomery-911",
            "burst rule")
    named = {**rule, "id": "one-call", "scope": {"type": "TrafficFlowObserved",
                                                 "ids": ["urn:ngsi-ld:EmergencyCall:montgomery-911:x"]}}
    problem(client.post("/polis/v1/alerts/rules", json=named), 400, "BadRequestData", "montgomery-911:x")


@pytest.mark.parametrize("message", ["{location}", "{entity.location}", "{entity[0]}", "{lat},{lon}"])
def test_a_message_template_cannot_print_a_place(hub: tuple[TestClient, Platform], message: str) -> None:
    client, _ = hub
    problem(client.post("/polis/v1/alerts/rules", json={**BURST_RULE, "message": message}), 400, None, "message")


def test_a_cell_place_survives_the_message_log() -> None:
    """The cell's radius is kept with the place, so an alert reloaded after a restart keeps both fixed."""
    member = Member("g", "g", (-75.2, 40.2), 11.0, 10.0, T0, {}, 1400.0)
    record = AlertRecord("urn:ngsi-ld:Alert:polis:r:1", "", "r", {"kind": "burst"}, T0, T0, T0, {"g": member})
    again = AlertRecord.from_json(record.to_json())
    assert again.members["g"].cell_m == 1400.0 and again.circle() == record.circle()


def test_a_burst_rule_updates_at_most_every_five_minutes(hub: tuple[TestClient, Platform]) -> None:
    """An update per call would publish each call's time and township as the count steps up by one."""
    client, _ = hub
    r = client.post("/polis/v1/alerts/rules", json={**BURST_RULE, "updateIntervalS": 0})
    assert problem(r, 400, "BadRequestData", "updateIntervalS", "300")["field"] == "updateIntervalS"
    assert client.post("/polis/v1/alerts/rules", json={**BURST_RULE, "updateIntervalS": 300}).status_code == 201
