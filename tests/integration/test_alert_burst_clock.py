"""A 911 call dated far in the future (a typo: 2099) must not move a burst rule's window: it would push out
every real call and expire the open burst alert. It is refused as a reading too far ahead of the clock is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client
from tests.integration.test_alert_place_privacy import BURST_RULE, CROWD, call


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def test_a_call_dated_2099_leaves_the_burst_alert_open(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    assert client.post("/polis/v1/alerts/rules", json=BURST_RULE).status_code == 201
    for number in range(10):
        call(client, platform, number, number, CROWD)
    [alert] = client.get("/polis/v1/alerts").json()
    compiled = platform.alerts.index.by_tenant[""][BURST_RULE["id"]]
    call(client, platform, 99, 73 * 365 * 24 * 60, CROWD)  # 2026 + 73 years: 2099
    assert compiled.ahead == 1  # refused, and counted where an operator looks
    assert "polis_alert_readings_ahead 1\n" in client.get("/metrics").text
    assert [a["id"] for a in client.get("/polis/v1/alerts").json()] == [alert["id"]]  # still open
    assert compiled.bursts is not None and compiled.bursts.watermark is not None
    assert compiled.bursts.watermark.year == 2026
