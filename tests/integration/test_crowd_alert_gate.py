"""The crowd-gathering rule as an operator reads its alerts, on a small synthetic city (the five counters of
`test_crowd_alert_count`) fed hour by hour through the API:

- a city-wide lull (rain: every other counter at a third of its usual count) with one corner at 90 % of its
  usual count: the corrections for the lull lift that corner's score over the level, and the hub raised "a
  gathering" of fewer people than the corner expects. An alert must name more people than expected;
- a real gathering (three times the usual count) is still raised;
- the counts in the texts are whole people (they read "1007.9999999999995 people"), other values a fixed
  number of decimals.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from polis.alerts.cap import CAP_NS
from polis.alerts.demo import DEMO_RULES
from polis.api.app import create_app
from polis.crowd.gathering import CrowdParams
from polis.ingest.datasets import SensorSeries, Vocab, _sensor_load, ingest
from polis.platform import Platform
from tests.conftest import admin_headers
from tests.integration.test_crowd_alert_count import LIVE_START, SENSORS, _counts, _upsert

CAP = {"cap": CAP_NS}
LIVE_HOURS = 40
LULL_HOUR = 36  # the second day at noon, local
CORNER = 0  # a-west: 90 % of its usual count while the others fall to 35 %
GATHERING = (3, 20, 2)  # d-far: three times its usual count for two hours from 20:00 local on the first day
MESSAGE = "{entityName}: {value} people this hour ({count} counted), about {expected} expected; score {score}"
TEXT = re.compile(r"(?P<name>\S+): (?P<value>\S+) people this hour \((?P<count>\S+) counted\), "
                  r"about (?P<expected>\S+) expected; score (?P<score>\S+)")


def _hour(i: int) -> datetime:
    return (LIVE_START + timedelta(hours=i)).astimezone(UTC)


@pytest.fixture(scope="module")
def city() -> Iterator[tuple[list[dict[str, Any]], Platform]]:
    p = CrowdParams()
    history = p.history_hours + 48
    first = LIVE_START.astimezone(UTC) - timedelta(hours=history)
    counts = _counts(history + LIVE_HOURS, first)
    lull = history + LULL_HOUR
    counts[lull] *= 0.35
    counts[lull, CORNER] *= 0.9 / 0.35
    sensor, start, hours = GATHERING
    counts[history + start : history + start + hours, sensor] *= 3
    counts = np.round(counts)
    platform = Platform.in_memory()
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        times = np.array(
            [np.datetime64((first + timedelta(hours=i)).replace(tzinfo=None), "us") for i in range(history)]
        )
        series = SensorSeries(
            "synthetic-crowd", "CrowdFlowObserved", "peopleCount", "C62", "test", SENSORS, times, counts[:history], True
        )
        vocab = Vocab.load(platform.settings.datasets_dir)
        ingest(platform.store, "", _sensor_load(series, vocab, "2026-11-27T00:00:00Z"))
        rule = copy.deepcopy(next(r for r in DEMO_RULES if r["id"] == "demo-melbourne-crowding"))
        del rule["backfill"]
        rule["message"] = MESSAGE
        assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
        for i in range(LIVE_HOURS):
            items = [
                {
                    "id": s.entity_id,
                    "type": "CrowdFlowObserved",
                    "peopleCount": {
                        "type": "Property",
                        "value": int(counts[history + i, k]),
                        "observedAt": _hour(i).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                }
                for k, s in enumerate(SENSORS)
            ]
            _upsert(client, platform, items)
        found = client.get("/polis/v1/alerts", params={"status": "all"}).json()
    try:
        yield found, platform
    finally:
        platform.close()


def _raised(platform: Platform, alert: dict[str, Any]) -> re.Match[str]:
    """The text of the alert as first sent (its CAP "Alert" message)."""
    first = etree.fromstring(platform.alerts.cap_messages("", alert["id"])[0])
    description = first.findtext("cap:info/cap:description", namespaces=CAP) or ""
    match = TEXT.fullmatch(description)
    assert match is not None, description
    return match


def test_no_gathering_is_raised_on_fewer_people_than_expected(city: tuple[list[dict[str, Any]], Platform]) -> None:
    found, platform = city
    lull = _hour(LULL_HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [a for a in found if a["onset"] == lull] == []  # the corner that stayed near normal in the rain
    for alert in found:
        raised = _raised(platform, alert)
        assert float(raised["value"]) > float(raised["expected"]), raised.group(0)


def test_a_real_gathering_is_still_raised(city: tuple[list[dict[str, Any]], Platform]) -> None:
    found, _ = city
    sensor, start, _hours = GATHERING
    onsets = {(a["onset"], a["entities"][0]["id"]) for a in found}
    assert (_hour(start).strftime("%Y-%m-%dT%H:%M:%SZ"), SENSORS[sensor].entity_id) in onsets


def test_crowd_counts_read_as_whole_people(city: tuple[list[dict[str, Any]], Platform]) -> None:
    found, platform = city
    assert found
    for alert in found:
        raised = _raised(platform, alert)
        assert re.fullmatch(r"\d+", raised["value"]), raised.group(0)  # 1008, not 1007.9999999999995
        assert raised["count"] == raised["value"]  # and the count is the same number, not truncated to 1007
        assert re.fullmatch(r"\d+", raised["expected"]), raised.group(0)  # expected people: whole too
        assert re.fullmatch(r"-?\d+\.\d\d", raised["score"]), raised.group(0)  # a score: two decimals
        for message in platform.alerts.cap_messages("", alert["id"]):
            description = etree.fromstring(message).findtext("cap:info/cap:description", namespaces=CAP) or ""
            assert not re.search(r"\d\.\d{5,}", description), description
        assert all(float(e["value"]).is_integer() for e in alert["entities"])  # the JSON view: whole people too
