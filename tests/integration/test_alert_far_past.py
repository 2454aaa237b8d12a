"""A reading dated in the year 0001 (a sensor's unset clock) raised an alert dated then: its CAP message failed the
CAP schema (strftime writes the year 1 as "1", not "0001") and no Alert entity was written. Such readings are
refused as future ones are, and times are written with four-digit years."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from polis.alerts.cap import atom_time, cap_time, validate_cap
from polis.alerts.model import iso
from polis.platform import Platform
from tests.conftest import LINK_SDM
from tests.integration.test_alerts_api import RULE, SENSOR


def _send(client: TestClient, platform: Platform, when: str, count: int) -> None:
    body = {"peopleCount": {"type": "Property", "value": count, "observedAt": when}}
    response = client.post(f"/ngsi-ld/v1/entities/{SENSOR}/attrs", json=body, headers={"Link": LINK_SDM})
    assert response.status_code == 204, response.text
    assert platform.alerts.flush(10)


def test_a_reading_from_the_year_one_raises_nothing(client: TestClient, platform: Platform) -> None:
    assert client.post("/polis/v1/alerts/rules", json={**RULE, "minDurationS": 0}).status_code == 201
    entity = {  # a new counter whose first reading carries its unset clock
        "id": SENSOR,
        "type": "CrowdFlowObserved",
        "peopleCount": {"type": "Property", "value": 500, "observedAt": "0001-01-01T00:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.9631, -37.8136]}},
    }
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM}).status_code == 201
    assert platform.alerts.flush(10)
    assert client.get("/polis/v1/alerts", params={"status": "all"}).json() == []

    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    _send(client, platform, now.strftime("%Y-%m-%dT%H:%M:%SZ"), 500)  # a real crowd is still raised
    [alert] = client.get("/polis/v1/alerts").json()
    assert alert["onset"] == now.strftime("%Y-%m-%dT%H:%M:%SZ")  # not an alert open since the year 1
    for xml in platform.alerts.cap_messages("", alert["id"]):
        validate_cap(xml)


def test_times_are_written_with_four_digit_years() -> None:
    early = datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert cap_time(early) == "0999-03-04T05:06:07-00:00"
    assert atom_time(early) == iso(early) == "0999-03-04T05:06:07Z"
    assert cap_time(datetime(2026, 3, 2, 8, 0, tzinfo=UTC)) == "2026-03-02T08:00:00-00:00"
