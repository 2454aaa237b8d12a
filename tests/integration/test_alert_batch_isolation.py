"""One odd reading in a batch took the batch away from every rule: a crowd-gathering rule read a row it had just
pruned (a new counter whose first reading is 200 days old) and raised, and the threshold rule after it never saw
the 500 people at another counter. Each rule now fails alone, and the crowd rule does not fail on such a batch."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import LINK_SDM

BASE = {"severity": "Moderate", "urgency": "Immediate", "certainty": "Observed"}
CROWD = {
    "id": "crowd", "kind": "anomaly", "name": "crowd", "scope": {"type": "CrowdFlowObserved"},
    "attribute": "peopleCount", "detector": "crowd-gathering", "level": 2.75, **BASE,
}
THRESHOLD = {
    "id": "thr", "kind": "threshold", "name": "thr", "scope": {"type": "CrowdFlowObserved"},
    "attribute": "peopleCount", "above": 100, **BASE,
}


def _reading(name: str, value: float, at: datetime) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:CrowdFlowObserved:batch:{name}",
        "type": "CrowdFlowObserved",
        "peopleCount": {"type": "Property", "value": value, "observedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.96, -37.81]}},
    }


def _upsert(client: TestClient, platform: Platform, items: list[dict[str, Any]]) -> None:
    response = client.post(
        "/ngsi-ld/v1/entityOperations/upsert", params={"options": "update"}, json=items, headers={"Link": LINK_SDM}
    )
    assert response.status_code in (201, 204), response.text
    assert platform.alerts.flush(30)


def _threshold_alerts_on(client: TestClient, name: str) -> list[dict[str, Any]]:
    found = client.get("/polis/v1/alerts", params={"status": "all", "ruleId": "thr"}).json()
    return [a for a in found if any(e["id"].endswith(f":batch:{name}") for e in a.get("entities", []))]


def test_a_new_counters_months_old_first_reading_spoils_no_rule(
    client: TestClient, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    for rule in (CROWD, THRESHOLD):  # the crowd rule first: it is evaluated before the threshold rule
        assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    _upsert(client, platform, [_reading(n, 50, now - timedelta(minutes=45)) for n in ("X", "V")])
    caplog.set_level(logging.ERROR)

    # one batch: a known counter now, a new counter whose first reading is 200 days old, and 500 people at V
    _upsert(
        client,
        platform,
        [_reading("X", 56, now), _reading("W", 60, now - timedelta(days=200)), _reading("V", 500, now)],
    )
    assert len(_threshold_alerts_on(client, "V")) == 1  # 500 > 100: raised
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # no rule failed

    _upsert(client, platform, [_reading("W", 70, now)])  # the new counter's next reading is taken as usual
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_failing_rule_leaves_the_others_their_batch(
    client: TestClient, platform: Platform, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong in one rule (here its detector raises), the rules after it still see the batch."""
    for rule in (CROWD, THRESHOLD):
        assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    compiled = platform.alerts.index.by_tenant[""]["crowd"]

    def broken(*_: object) -> list[object]:
        raise RuntimeError("a detector's bug")

    monkeypatch.setattr(compiled, "_crowd", broken)
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    _upsert(client, platform, [_reading("V", 500, now)])
    assert len(_threshold_alerts_on(client, "V")) == 1
    [failed] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "crowd" in failed.getMessage()  # the log names the rule that failed


def test_a_new_counters_earlier_reading_loses_no_reading_of_the_batch(
    client: TestClient, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """The panel was reloaded at the new counter's (earlier) time mid-batch, losing the known counter's reading
    added just before it: its count read back as NaN and the rule failed."""
    for rule in (CROWD, THRESHOLD):
        assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    hour = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    _upsert(client, platform, [_reading(n, 50, hour - timedelta(minutes=30)) for n in ("X", "Z")])  # the hour before
    caplog.set_level(logging.ERROR)
    batch = [
        _reading("X", 55, hour + timedelta(minutes=40)),
        _reading("Y", 60, hour + timedelta(minutes=20)),
        _reading("Z", 500, hour + timedelta(minutes=41)),
    ]
    _upsert(client, platform, batch)
    assert len(_threshold_alerts_on(client, "Z")) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
