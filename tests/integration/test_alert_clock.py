"""Time as a sensor's readings tell it, against a broken clock: one reading dated in the year 2099 froze the
sensor's alerts until the hub restarted (every real reading after it looked late) and raised an alert dated
2099; and a grouped alert's CAP `effective` time went backwards when a neighbour's earlier reading joined it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from lxml import etree

from polis.alerts.cap import CAP_NS
from polis.platform import Platform
from tests.conftest import LINK_SDM
from tests.integration.test_alerts_api import RULE, SENSOR, at, make_sensor, observe

CAP = {"cap": CAP_NS}


def _send(client: TestClient, platform: Platform, sensor: str, when: datetime, count: int) -> None:
    body = {"peopleCount": {"type": "Property", "value": count, "observedAt": when.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    response = client.post(f"/ngsi-ld/v1/entities/{sensor}/attrs", json=body, headers={"Link": LINK_SDM})
    assert response.status_code == 204, response.text
    assert platform.alerts.flush(10)


def test_a_reading_from_2099_is_refused_and_the_sensor_keeps_alerting(client: TestClient, platform: Platform) -> None:
    assert client.post("/polis/v1/alerts/rules", json={**RULE, "minDurationS": 0}).status_code == 201
    make_sensor(client)
    now = datetime.now(UTC).replace(microsecond=0)
    _send(client, platform, SENSOR, now - timedelta(minutes=10), 50)
    _send(client, platform, SENSOR, datetime(2099, 1, 1, tzinfo=UTC), 500)  # a gateway with a broken clock
    assert client.get("/polis/v1/alerts", params={"status": "all"}).json() == []  # no alert dated 2099
    assert platform.alerts.readings_ahead == 1  # counted, for the operator to find the broken clock

    _send(client, platform, SENSOR, now - timedelta(minutes=5), 500)  # the real crowd, after the bad reading
    [alert] = client.get("/polis/v1/alerts").json()
    assert alert["onset"] == (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _send(client, platform, SENSOR, now - timedelta(minutes=1), 20)  # and it still ends
    assert client.get("/polis/v1/alerts").json() == []


def test_a_reading_a_little_ahead_of_the_clock_still_counts(client: TestClient, platform: Platform) -> None:
    """A sensor whose clock runs a minute fast is still a sensor: its readings are taken."""
    assert client.post("/polis/v1/alerts/rules", json={**RULE, "minDurationS": 0}).status_code == 201
    make_sensor(client)
    _send(client, platform, SENSOR, datetime.now(UTC) + timedelta(minutes=1), 500)
    assert len(client.get("/polis/v1/alerts").json()) == 1
    assert platform.alerts.readings_ahead == 0


def test_a_grouped_alerts_effective_time_never_goes_back(client: TestClient, platform: Platform) -> None:
    rule = {**RULE, "minDurationS": 0, "groupWithinM": 500, "updateIntervalS": 60}
    assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    make_sensor(client)
    neighbour = SENSOR + "-next-door"
    entity = {
        "id": neighbour,
        "type": "CrowdFlowObserved",
        "peopleCount": {"type": "Property", "value": 50, "observedAt": at(0)},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.9640, -37.8136]}},
    }
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM}).status_code == 201
    observe(client, platform, 10, 500)  # the first sensor raises the alert at minute 10 ...
    observe(client, platform, 20, 510)  # ... and updates it at minute 20
    t0 = datetime.fromisoformat(at(0).replace("Z", "+00:00"))
    _send(client, platform, neighbour, t0 + timedelta(minutes=15), 400)  # its neighbour's minute-15 reading, late
    [alert] = client.get("/polis/v1/alerts").json()
    assert len(alert["entities"]) == 2
    effective = [
        etree.fromstring(xml).findtext("cap:info/cap:effective", namespaces=CAP)
        for xml in platform.alerts.cap_messages("", alert["id"])
    ]
    assert len(effective) == 3 and effective == sorted(effective)
    assert alert["effective"] == at(20)
    expires = [etree.fromstring(x).findtext("cap:info/cap:expires", namespaces=CAP)
               for x in platform.alerts.cap_messages("", alert["id"])]
    assert expires == sorted(expires)  # an update never shortens the alert's life
