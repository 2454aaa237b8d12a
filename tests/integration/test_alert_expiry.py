"""An alert whose sensor goes quiet: once past its CAP `expires` time (its last message's effective time plus the
rule's validityS) it is no longer served as active, the same in the JSON listing, the CAP feed and the
NGSI-LD Alert entity, and the sensor coming back raises a new alert rather than reviving the lapsed one.

Past it by whose clock: by the rule's own readings (its other sensors' times, as every lifecycle time here),
and when every sensor of the rule has gone quiet, by the wall clock since the alert's last message."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from lxml import etree

from polis.platform import Platform
from tests.conftest import LINK_SDM
from tests.integration.test_alerts_api import LINK_ALERT, RULE, SENSOR, at, make_sensor, observe

RULE_10_MIN = {**RULE, "minDurationS": 0, "validityS": 600}  # each message valid for 10 minutes
OTHER = SENSOR + "-across-town"


def _other_sensor(client: TestClient) -> None:
    entity = {
        "id": OTHER,
        "type": "CrowdFlowObserved",
        "peopleCount": {"type": "Property", "value": 20, "observedAt": at(0)},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.99, -37.85]}},
    }
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM}).status_code == 201


def _other_reads(client: TestClient, platform: Platform, minutes: float, count: int) -> None:
    body = {"peopleCount": {"type": "Property", "value": count, "observedAt": at(minutes)}}
    response = client.post(f"/ngsi-ld/v1/entities/{OTHER}/attrs", json=body, headers={"Link": LINK_SDM})
    assert response.status_code == 204, response.text
    assert platform.alerts.flush(10)


def _entity(client: TestClient, alert_id: str) -> dict[str, Any]:
    response = client.get(f"/ngsi-ld/v1/entities/{alert_id}", params={"options": "keyValues"},
                          headers={"Link": LINK_ALERT})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _feed_entries(client: TestClient) -> list[Any]:
    feed = client.get("/polis/v1/alerts/feed")
    assert feed.status_code == 200
    return list(etree.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry"))


def test_an_alert_past_expires_is_no_longer_active(client: TestClient, platform: Platform) -> None:
    assert client.post("/polis/v1/alerts/rules", json=RULE_10_MIN).status_code == 201
    make_sensor(client)
    _other_sensor(client)
    observe(client, platform, 0, 500)  # raised at minute 0: expires at minute 10
    [alert] = client.get("/polis/v1/alerts").json()
    assert alert["expires"] == at(10) and len(_feed_entries(client)) == 1
    _other_reads(client, platform, 5, 20)  # the city's other sensor goes on reporting; this one falls silent
    assert len(client.get("/polis/v1/alerts").json()) == 1  # minute 5: still within its validity
    _other_reads(client, platform, 20, 25)  # minute 20: past expires

    assert client.get("/polis/v1/alerts").json() == []  # not listed as active
    [lapsed] = client.get("/polis/v1/alerts", params={"status": "all"}).json()
    assert lapsed["id"] == alert["id"] and lapsed["status"] == "expired"
    assert client.get(f"/polis/v1/alerts/{alert['id']}").json()["status"] == "expired"
    assert _feed_entries(client) == []  # the CAP feed of active alerts
    entity = _entity(client, alert["id"])
    assert entity["data"]["status"] == "expired" and entity["validTo"]["@value"] == at(10)

    observe(client, platform, 25, 500)  # the sensor comes back with a crowd: a new alert, not the lapsed one
    [new] = client.get("/polis/v1/alerts").json()
    assert new["id"] != alert["id"] and new["onset"] == at(25) and new["msgType"] == "Alert"
    assert client.get(f"/polis/v1/alerts/{alert['id']}").json()["messages"] == lapsed["messages"]


def test_a_rule_gone_quiet_expires_its_alerts_by_the_wall_clock(client: TestClient, platform: Platform) -> None:
    engine = platform.alerts
    engine.sweep_s = 0.05  # the worker looks for lapsed alerts this often (the default is slower)
    assert client.post("/polis/v1/alerts/rules", json=RULE_10_MIN).status_code == 201
    make_sensor(client)
    observe(client, platform, 0, 500)
    [alert] = client.get("/polis/v1/alerts").json()
    assert _entity(client, alert["id"])["data"]["status"] == "active"
    sent = datetime.fromisoformat(alert["messages"][-1]["sent"])
    engine.clock = lambda: sent + timedelta(minutes=11)  # every sensor silent for 11 minutes of real time

    deadline = time.monotonic() + 10
    while _entity(client, alert["id"])["data"]["status"] != "expired":  # the entity, without asking the alerts API
        assert time.monotonic() < deadline, "the Alert entity was never marked expired"
        time.sleep(0.05)
    assert client.get("/polis/v1/alerts").json() == []
    assert client.get("/polis/v1/alerts", params={"status": "all"}).json()[0]["status"] == "expired"
    assert _feed_entries(client) == []


def test_an_alert_updated_in_time_stays_active(client: TestClient, platform: Platform) -> None:
    """The sensor reporting on keeps it alive: each Update moves `expires` on."""
    assert client.post("/polis/v1/alerts/rules", json={**RULE_10_MIN, "updateIntervalS": 300}).status_code == 201
    make_sensor(client)
    for minute in (0, 5, 10, 15, 20):
        observe(client, platform, minute, 500)
    [alert] = client.get("/polis/v1/alerts").json()
    assert alert["status"] == "active" and alert["expires"] == at(30)
