"""One alert updated many times stays the same size (the reviewer's quadratic growth).

Each Update's CAP `references` listed every earlier message of the incident, the engine kept every CAP message in
memory, and every line of alerts/messages.jsonl held the record with all its messages: message N was O(N) bytes and
an incident O(N²) (1,500 updates: a 116 kB message, a 209 MB log). Now a message refers to the first and the latest
before it, an alert keeps its first message and the latest ones (older ones answer 404 saying so), each log line
is bounded, and updateIntervalS has a floor (rules saved before it still run, with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from polis.alerts.cap import CAP_NS, validate_cap
from polis.alerts.model import KEPT_MESSAGES
from polis.alerts.rules import MIN_UPDATE_INTERVAL_S
from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import LINK_SDM, THRESHOLD_RULE, problem

SENSOR = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:growth-1"
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
UPDATES = 300
RULE: dict[str, Any] = {**THRESHOLD_RULE, "above": 0, "minDurationS": 0, "updateIntervalS": MIN_UPDATE_INTERVAL_S}
CAP = {"cap": CAP_NS}
MAX_CAP_BYTES = 4_000  # one message of this alert, whatever its number (the first is about 2 kB)
MAX_LOG_LINE_BYTES = 12_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "hub", api_key_hash_time_cost=1, api_key_hash_memory_kib=64)


def open_hub(settings: Settings) -> tuple[TestClient, Platform]:
    platform = Platform(settings, store=DuckDBStore(None, threads=settings.duckdb_threads))
    client = TestClient(create_app(platform), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {platform.access.admin_key()}"
    return client, platform


@pytest.fixture
def hub(settings: Settings) -> Iterator[tuple[TestClient, Platform]]:
    client, platform = open_hub(settings)
    yield client, platform
    platform.close()


def reading(minute: int) -> dict[str, Any]:
    at = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "Property", "value": 10 + minute % 7, "observedAt": at}


def updated_alert(client: TestClient, platform: Platform, updates: int) -> dict[str, Any]:
    """A sensor above the threshold every minute: its alert and `updates` Updates, one a minute."""
    assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
    entity = {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": reading(0),
              "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.96, -37.81]}}}
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM}).status_code == 201
    for minute in range(1, updates + 1):
        r = client.post(f"/ngsi-ld/v1/entities/{SENSOR}/attrs", json={"peopleCount": reading(minute)},
                        headers={"Link": LINK_SDM})
        assert r.status_code == 204, r.text
    assert platform.alerts.flush(30)
    [alert] = client.get("/polis/v1/alerts").json()
    return dict(alert)


def references(cap: bytes) -> list[str]:
    text = etree.fromstring(cap).findtext("cap:references", namespaces=CAP)
    return [] if text is None else text.split()


def test_three_hundred_updates_keep_each_message_and_log_line_bounded(
    hub: tuple[TestClient, Platform], settings: Settings
) -> None:
    client, platform = hub
    alert = updated_alert(client, platform, UPDATES)
    total = UPDATES + 1
    latest = client.get(alert["cap"])
    assert latest.status_code == 200
    validate_cap(latest.content)
    assert len(latest.content) < MAX_CAP_BYTES, len(latest.content)
    # it refers to the Alert that opened the incident and to the message just before it
    first_id, previous_id = (r.split(",")[1] for r in references(latest.content))
    assert first_id.endswith(":msg1") and previous_id.endswith(f":msg{total - 1}")
    identifier = etree.fromstring(latest.content).findtext("cap:identifier", namespaces=CAP)
    assert identifier is not None and identifier.endswith(f":msg{total}")
    # the log: one line per message, each of a bounded size, the last holding the kept messages only
    lines = (settings.data_dir / "alerts" / "messages.jsonl").read_bytes().splitlines()
    assert len(lines) == total
    assert max(len(line) for line in lines) < MAX_LOG_LINE_BYTES, max(len(line) for line in lines)
    assert len(orjson.loads(lines[-1])["record"]["messages"]) == KEPT_MESSAGES
    # in memory and in the JSON view: the first message and the latest ones
    assert len(platform.alerts.caps[alert["id"]]) == KEPT_MESSAGES
    assert [m["identifier"].rsplit(":", 1)[1] for m in alert["messages"]] == [
        "msg1", *(f"msg{n}" for n in range(total - KEPT_MESSAGES + 2, total + 1))
    ]


def test_the_first_and_the_latest_messages_are_served_and_an_older_one_says_it_is_gone(settings: Settings) -> None:
    client, platform = open_hub(settings)
    try:
        alert = updated_alert(client, platform, 40)
        total = 41
        first = client.get(alert["cap"], params={"message": 1})
        assert first.status_code == 200
        assert etree.fromstring(first.content).findtext("cap:msgType", namespaces=CAP) == "Alert"
        newest = client.get(alert["cap"], params={"message": total})
        assert newest.content == client.get(alert["cap"]).content
        oldest_kept = total - KEPT_MESSAGES + 2
        kept = client.get(alert["cap"], params={"message": oldest_kept})
        assert kept.status_code == 200
        identifier = etree.fromstring(kept.content).findtext("cap:identifier", namespaces=CAP)
        assert identifier is not None and identifier.endswith(f":msg{oldest_kept}")
        problem(client.get(alert["cap"], params={"message": oldest_kept - 1}), 404, "ResourceNotFound",
                "no longer kept", f"{oldest_kept} to {total}")
        problem(client.get(alert["cap"], params={"message": total + 1}), 404, "ResourceNotFound",
                f"has {total} messages")
    finally:
        platform.close()
    # after a restart, the same from alerts/messages.jsonl
    again, restarted = open_hub(settings)
    try:
        assert len(restarted.alerts.caps[alert["id"]]) == KEPT_MESSAGES
        assert again.get(alert["cap"], params={"message": total}).content == newest.content
        assert again.get(alert["cap"], params={"message": 1}).content == first.content
        assert again.get(alert["cap"], params={"message": oldest_kept - 1}).status_code == 404
    finally:
        restarted.close()


def test_an_update_interval_below_the_floor_is_refused(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.post("/polis/v1/alerts/rules", json={**RULE, "updateIntervalS": 0})
    assert problem(r, 400, "BadRequestData", "updateIntervalS", "60")["field"] == "updateIntervalS"


def test_a_saved_rule_below_the_floor_still_runs_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    folder = settings.data_dir / "alerts"
    folder.mkdir(parents=True)
    (folder / "rules.json").write_bytes(orjson.dumps([{"tenant": "", "rule": {**RULE, "updateIntervalS": 0}}]))
    with caplog.at_level(logging.WARNING, logger="polis.alerts.rulebook"):
        client, platform = open_hub(settings)
    try:
        assert any("updateIntervalS" in r.getMessage() and "runs" in r.getMessage() for r in caplog.records)
        alert = updated_alert_from_saved_rule(client, platform)
        assert len(alert["messages"]) == 3  # each reading an Update, as the rule says
    finally:
        platform.close()


def updated_alert_from_saved_rule(client: TestClient, platform: Platform) -> dict[str, Any]:
    entity = {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": reading(0)}
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM}).status_code == 201
    for second in (10, 20):
        at = (T0 + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"peopleCount": {"type": "Property", "value": 50 + second, "observedAt": at}}
        r = client.post(f"/ngsi-ld/v1/entities/{SENSOR}/attrs", json=body, headers={"Link": LINK_SDM})
        assert r.status_code == 204, r.text
    assert platform.alerts.flush(10)
    [alert] = client.get("/polis/v1/alerts").json()
    return dict(alert)
