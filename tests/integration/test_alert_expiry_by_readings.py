"""An alert lapses when its sensors go quiet, not when messages stop: Updates go out at most every
updateIntervalS, and only on a reading: with readings far enough apart an Update comes after the validity
(the demo's crowd rule once had both at an hour), and a sensor still reporting over the threshold kept having
its alert expired and raised again (review, 2026-11-29)."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.integration.test_alert_expiry import _other_reads, _other_sensor
from tests.integration.test_alerts_api import RULE, at, make_sensor, observe

# Messages valid 8m20s, Updates at most every 8m10s, readings every 2 minutes: Updates go out every 10
# minutes, so the CAP `expires` passes between two Updates.
RARE_UPDATES = {**RULE, "minDurationS": 0, "validityS": 500, "updateIntervalS": 490}


def test_a_sensor_still_over_the_threshold_keeps_one_alert(client: TestClient, platform: Platform) -> None:
    assert client.post("/polis/v1/alerts/rules", json=RARE_UPDATES).status_code == 201
    make_sensor(client)
    _other_sensor(client)
    for minute in range(0, 42, 2):  # a crowd for 40 minutes, a reading every 2 minutes
        observe(client, platform, minute, 500)
        _other_reads(client, platform, minute + 1, 20)  # the rule's clock moves on with the other sensor too
    found = client.get("/polis/v1/alerts", params={"status": "all"}).json()
    assert [a["status"] for a in found] == ["active"], [(a["onset"], a["status"]) for a in found]
    assert found[0]["onset"] == at(0)
    _other_reads(client, platform, 60, 20)  # now the sensor is quiet for 20 minutes: past its validity
    assert [a["status"] for a in client.get("/polis/v1/alerts", params={"status": "all"}).json()] == ["expired"]


def test_the_wall_clock_sweep_also_counts_from_the_last_reading(client: TestClient, platform: Platform) -> None:
    engine = platform.alerts
    engine.sweep_s = 0.05
    assert client.post("/polis/v1/alerts/rules", json=RARE_UPDATES).status_code == 201
    make_sensor(client)
    started = engine.clock()
    for k, minute in enumerate(range(0, 20, 2)):  # readings 2 minutes apart in real time, no Update between
        engine.clock = lambda k=k: started + timedelta(minutes=2 * k)
        observe(client, platform, minute, 500)
    engine.clock = lambda: started + timedelta(minutes=2 * 9 + 5)  # 23 minutes after the Alert, 5 after a reading
    time.sleep(0.5)  # several sweeps
    assert [a["status"] for a in client.get("/polis/v1/alerts", params={"status": "all"}).json()] == ["active"]
    engine.clock = lambda: started + timedelta(minutes=2 * 9 + 11)  # 11 minutes after the last reading
    deadline = time.monotonic() + 10
    while client.get("/polis/v1/alerts", params={"status": "all"}).json()[0]["status"] != "expired":
        assert time.monotonic() < deadline, "never expired"
        time.sleep(0.05)
