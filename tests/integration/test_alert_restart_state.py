"""A hub restarted in the middle of an incident, as an operator meets it: the sensors' gateway resends what it
had buffered (the same readings, the same times) and the hub must not raise the incident a second time; an alert
that just ended keeps its cooldown across the restart instead of flapping straight back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import admin_headers
from tests.integration.test_alerts_api import RULE, alerts, make_sensor, observe

CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
# RULE: above 100 for 10 minutes raises, under 80 cancels, then 30 minutes of cooldown
INCIDENT = [(5, 150), (10, 160), (15, 170), (24, 70)]  # raised at 15, cancelled at 24


@contextmanager
def hub(data_dir: Path) -> Iterator[tuple[TestClient, Platform]]:
    platform = Platform(Settings(data_dir=data_dir, **CHEAP))
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            yield client, platform
    finally:
        platform.close()


def messages(found: list[dict[str, Any]]) -> list[list[str]]:
    return [[m["msgType"] for m in alert["messages"]] for alert in found]


def test_readings_resent_after_a_restart_raise_nothing_new(tmp_path: Path) -> None:
    with hub(tmp_path) as (client, platform):
        assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
        make_sensor(client)
        for minute, count in INCIDENT:
            observe(client, platform, minute, count)
        assert messages(alerts(client)) == [["Alert", "Cancel"]]
    with hub(tmp_path) as (client, platform):  # the restart; the gateway resends its buffer
        for minute, count in INCIDENT:
            observe(client, platform, minute, count)
        assert messages(alerts(client)) == [["Alert", "Cancel"]]  # the same one incident, nothing raised again
        assert platform.alerts.flush(10)
        assert len(platform.alerts.caps) == 1


def test_an_active_alert_resent_after_a_restart_is_not_raised_again(tmp_path: Path) -> None:
    with hub(tmp_path) as (client, platform):
        assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
        make_sensor(client)
        for minute, count in INCIDENT[:3]:
            observe(client, platform, minute, count)
        assert messages(alerts(client, "active")) == [["Alert"]]
    with hub(tmp_path) as (client, platform):
        for minute, count in INCIDENT[:3]:
            observe(client, platform, minute, count)
        assert messages(alerts(client)) == [["Alert"]]
        observe(client, platform, 24, 70)  # the live readings go on: the one open alert ends
        assert messages(alerts(client)) == [["Alert", "Cancel"]]


def test_a_cooldown_survives_a_restart(tmp_path: Path) -> None:
    with hub(tmp_path) as (client, platform):
        assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
        make_sensor(client)
        for minute, count in INCIDENT:
            observe(client, platform, minute, count)
    with hub(tmp_path) as (client, platform):
        observe(client, platform, 35, 200)  # back above within the 30-minute cooldown (cancelled at 24) ...
        observe(client, platform, 50, 210)  # ... for 15 minutes: still nothing, as without the restart
        assert messages(alerts(client)) == [["Alert", "Cancel"]]
        observe(client, platform, 55, 220)  # the cooldown is over: pending again, raised 10 minutes on
        observe(client, platform, 65, 230)
        assert messages(alerts(client)) == [["Alert", "Cancel"], ["Alert"]]

