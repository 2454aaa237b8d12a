"""The benchmark's count of alerts raised (`polis.crowd.gathering.alerts_raised`) against the live engine:
a small synthetic city of five counters (three in a row 220 m apart, two far away) fed hour by hour to
the demo crowd rule, with gatherings that overlap at neighbours, at counters too far apart to group, one
that starts in the hour its neighbour's ends, and a missing reading. Every CAP "Alert" the hub sends must
be one the offline count has, and no more."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from polis.alerts.demo import DEMO_RULES
from polis.crowd.gathering import (
    CrowdParams,
    alarm_levels,
    alert_life,
    alerts_raised,
    crowd_scores,
    local_hour,
    nearest,
    within,
)
from polis.crowd.melbourne import ZONE
from polis.ingest.datasets import Sensor, SensorSeries, Vocab, _sensor_load, ingest
from polis.platform import Platform
from tests.conftest import LINK_SDM

PREFIX = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:"
SENSORS = [  # sorted by id: the live panel's column order, and the order each hour's readings are sent in
    Sensor(f"{PREFIX}a-west", "a-west", (144.9600, -37.8100)),
    Sensor(f"{PREFIX}b-middle", "b-middle", (144.9625, -37.8100)),  # 220 m from a and from c
    Sensor(f"{PREFIX}c-east", "c-east", (144.9650, -37.8100)),  # 440 m from a: too far to group with it
    Sensor(f"{PREFIX}d-far", "d-far", (144.9900, -37.8100)),
    Sensor(f"{PREFIX}e-far", "e-far", (144.9600, -37.8400)),
]
LIVE_START = datetime(2022, 9, 5, 0, tzinfo=ZONE)  # a Monday; no clock change in the 20 weeks before it
LIVE_HOURS = 96
# (sensor, first live hour, hours) multiplied by 3
GATHERINGS = [
    (0, 10, 3),  # a: a new alert
    (1, 11, 3),  # b joins a's
    (2, 12, 4),  # c joins through b, and holds the alert open after a and b leave
    (3, 12, 2),  # d, far away: an alert of its own
    (0, 34, 2),  # a and c together, 440 m apart: two alerts
    (2, 34, 2),
    (1, 35, 2),  # b joins one of them
    (0, 39, 2),  # a alone
    (1, 41, 2),  # b starts in the hour a's alert ends: a leaves first (column order), so b raises a new one
    (4, 58, 1),  # e, then again inside its cooldown, then after it
    (4, 60, 1),
    (4, 64, 2),
    (3, 82, 3),  # d and a far apart, then b next to a
    (0, 83, 2),
    (1, 84, 1),
]
MISSING = [(3, 83)]  # d has no reading in its gathering's second hour: the live rule is not called for it


def _counts(rows: int, first: datetime) -> np.ndarray:
    """(rows, 5) hourly counts: a daily and weekly rhythm, each counter its own size, lognormal noise."""
    rng = np.random.default_rng(11)
    hours = np.array([(first + timedelta(hours=i)).astimezone(ZONE).hour for i in range(rows)])
    days = np.array([(first + timedelta(hours=i)).astimezone(ZONE).weekday() for i in range(rows)])
    daily = 60 + 1400 * np.clip(np.sin((hours - 6) / 15 * np.pi), 0, None)  # quiet nights, busy afternoons
    weekly = np.where(days >= 5, 0.7, 1.0)
    size = np.array([1.0, 1.6, 0.8, 1.2, 0.6])
    return daily[:, None] * weekly[:, None] * size[None, :] * np.exp(rng.normal(0, 0.12, (rows, len(SENSORS))))


def _upsert(client: TestClient, platform: Platform, items: list[dict[str, Any]]) -> None:
    response = client.post(
        "/ngsi-ld/v1/entityOperations/upsert", params={"options": "update"}, json=items, headers={"Link": LINK_SDM}
    )
    assert response.status_code in (201, 204), response.text
    assert platform.alerts.flush(60)


def test_alerts_raised_offline_equal_the_live_engine(client: TestClient, platform: Platform) -> None:
    p = CrowdParams()
    history = p.history_hours + 48
    first = LIVE_START.astimezone(UTC) - timedelta(hours=history)
    counts = _counts(history + LIVE_HOURS, first)
    for s, start, hours in GATHERINGS:
        counts[history + start : history + start + hours, s] *= 3
    for s, hour in MISSING:
        counts[history + hour, s] = np.nan
    counts = np.round(counts)
    times = np.array([np.datetime64((first + timedelta(hours=i)).replace(tzinfo=None), "us") for i in range(history)])
    series = SensorSeries(
        "synthetic-crowd", "CrowdFlowObserved", "peopleCount", "C62", "test", SENSORS, times, counts[:history], True
    )
    ingest(platform.store, "", _sensor_load(series, Vocab.load(platform.settings.datasets_dir), "2026-11-27T00:00:00Z"))

    rule = copy.deepcopy(next(r for r in DEMO_RULES if r["id"] == "demo-melbourne-crowding"))
    del rule["backfill"]
    assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    for i in range(LIVE_HOURS):
        observed = (LIVE_START + timedelta(hours=i)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [
            {
                "id": sensor.entity_id,
                "type": "CrowdFlowObserved",
                "peopleCount": {"type": "Property", "value": int(counts[history + i, s]), "observedAt": observed},
            }
            for s, sensor in enumerate(SENSORS)
            if not np.isnan(counts[history + i, s])
        ]
        _upsert(client, platform, items)
    records = [r for r in platform.alerts.records.values() if r.rule_id == rule["id"]]
    live = sum(m.msg_type == "Alert" for r in records for m in r.messages)
    assert live == len(records)

    # Offline: the whole series scored at once, the rule's adaptive level over its floor, its hysteresis,
    # cooldown and grouping radius; only the live hours go through the rule.
    points = [sensor.lon_lat for sensor in SENSORS]
    first_hour = local_hour(first, ZONE)
    logc = np.log1p(counts)
    scores = crowd_scores(logc, first_hour, p, nearest(points, p.neighbours))
    score, above = scores.score, scores.above(logc)  # raised only with more people than expected, as live
    levels = alarm_levels(score, ~np.isnan(logc), first_hour, float(rule["level"]), p)
    tail = slice(history, None)
    starts, ends = alert_life(
        score[tail], levels[tail], float(rule["hysteresis"]), int(rule["cooldownS"]) // 3600, ~np.isnan(logc[tail]),
        above[tail],
    )
    offline = alerts_raised(starts, ends, within(points, float(rule["groupWithinM"])))
    assert live == int(offline.sum())
    # ... at the same hours, and the case is not trivial: grouping merged several sensors' starts
    onsets = sorted(r.onset for r in records)
    assert onsets == [(LIVE_START + timedelta(hours=int(t))).astimezone(UTC) for t, _ in np.argwhere(offline)]
    assert int(offline.sum()) >= 8 and int(starts.sum()) >= int(offline.sum()) + 4
