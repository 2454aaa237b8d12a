"""Alert rules across restarts and edits, as an operator found them: a backfill cut short by a restart goes on
from the last day it finished (it started over, raising every historical alert a second time), a rule put back
unchanged leaves its alerts alone (it cancelled them with an "all clear" and raised them again), and alerts ended
by deleting or replacing their rule say so instead of claiming the condition cleared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.alerts.engine import AlertEngine, Backfill
from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import SDM_TRANSPORT, admin_headers
from tests.integration.test_alerts_api import RULE, SENSOR, at

CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
DAY = 24 * 60


def _three_days_of_crowds(platform: Platform) -> None:
    """Each of three days, 10 minutes above the rule's threshold: one alert a day."""
    readings = [(d * DAY + m, v) for d in range(3) for m, v in ((5, 50), (10, 150), (15, 160), (20, 40))]
    history = {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": [
        {"type": "Property", "value": v, "observedAt": at(m)} for m, v in readings]}
    platform.temporal.create_or_add("", history, platform.contexts.resolve(SDM_TRANSPORT))


def test_a_backfill_cut_short_goes_on_from_the_last_day_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {**RULE, "minDurationS": 0, "backfill": {"from": at(0), "to": at(3 * DAY)}}
    real_enqueue = AlertEngine._enqueue
    days_done: list[Backfill] = []

    def stop_after_the_first_day(self: AlertEngine, item: Any) -> None:  # the server killed after one day
        if isinstance(item, Backfill):
            days_done.append(item)
            if len(days_done) > 1:
                return
        real_enqueue(self, item)

    monkeypatch.setattr(AlertEngine, "_enqueue", stop_after_the_first_day)
    first = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        _three_days_of_crowds(first)
        first.alerts.put_rule("", rule)
        assert first.alerts.flush(30)
        assert [a.onset.day for a in first.alerts.alerts("", active_only=False)] == [T0_DAY]
    finally:
        first.close()
    monkeypatch.setattr(AlertEngine, "_enqueue", real_enqueue)
    second = Platform(Settings(data_dir=tmp_path, **CHEAP))  # the restart
    try:
        assert second.alerts.flush(30)
        onsets = sorted(a.onset.day for a in second.alerts.alerts("", active_only=False))
        assert onsets == [T0_DAY, T0_DAY + 1, T0_DAY + 2]  # each day's alert once
    finally:
        second.close()
    third = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        assert third.alerts.flush(30)
        assert len(third.alerts.alerts("", active_only=False)) == 3  # done: nothing runs again
    finally:
        third.close()


T0_DAY = int(at(0)[8:10])


def test_putting_a_rule_back_unchanged_leaves_its_alerts_alone_and_deleting_it_says_so(tmp_path: Path) -> None:
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            rule = {**RULE, "minDurationS": 0}
            assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
            entity = {"id": SENSOR, "type": "CrowdFlowObserved",
                      "name": {"type": "Property", "value": "Test corner"},
                      "peopleCount": {"type": "Property", "value": 500, "observedAt": at(0)}}
            sdm = {"Link": f'<{SDM_TRANSPORT}>; rel="http://www.w3.org/ns/json-ld#context"'}
            assert client.post("/ngsi-ld/v1/entities", json=entity, headers=sdm).status_code == 201
            assert platform.alerts.flush(10)
            held = client.get("/polis/v1/alerts/rules/busy-corner").json()
            put_back = client.put("/polis/v1/alerts/rules/busy-corner", json=held)
            assert put_back.status_code in (200, 204), put_back.text
            assert platform.alerts.flush(10)
            [alert] = client.get("/polis/v1/alerts", params={"status": "all"}).json()
            assert alert["status"] == "active" and [m["msgType"] for m in alert["messages"]] == ["Alert"]
            assert client.delete("/polis/v1/alerts/rules/busy-corner").status_code == 204
            [alert] = client.get("/polis/v1/alerts", params={"status": "all"}).json()
            assert alert["messages"][-1]["msgType"] == "Cancel"
            assert alert["description"] == "Withdrawn: Busy corner at Test corner: the rule was deleted"
    finally:
        platform.close()


@pytest.mark.parametrize(("change", "field"), [
    ({"hysteresis": 1e308}, "hysteresis"),  # would never clear
    ({"above": 1e308}, "above"),  # would never be crossed
    ({"above": None, "below": -1e308}, "below"),
    ({"above": 0.5, "relativeTo": "freeFlow", "hysteresis": 5}, "relativeTo"),
])
def test_rules_that_could_never_fire_or_clear_are_refused(change: dict[str, Any], field: str) -> None:
    from polis.alerts.rules import parse_rule
    from polis.domain.errors import BadRequestData

    with pytest.raises(BadRequestData) as refused:
        parse_rule({**RULE, **change})
    assert f"rule field '{field}'" in refused.value.detail


def test_alerts_load_into_the_files_of_a_running_hub_is_refused(tmp_path: Path) -> None:
    """The server keeps its own copy of the rules and writes it back at the next change through the API: a rule
    written into its files beside it vanished. Told to use --url instead; the file is untouched."""
    import json
    import os
    import subprocess
    import sys

    from polis.localserver import start_server, stop_server

    data = tmp_path / "hub"
    server = start_server(data)
    try:
        rules_file = tmp_path / "rules.json"
        rules_file.write_text(json.dumps([{**RULE, "id": "from-cli"}]))
        before = (data / "alerts" / "rules.json").read_bytes() if (data / "alerts" / "rules.json").exists() else None
        command = [sys.executable, "-m", "polis.cli", "alerts", "load", str(rules_file), "--data-dir", str(data)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 1, done.stdout + done.stderr
        assert "locked" in done.stderr and "--url" in done.stderr and "Traceback" not in done.stderr
        after = (data / "alerts" / "rules.json").read_bytes() if (data / "alerts" / "rules.json").exists() else None
        assert after == before
    finally:
        stop_server(server.process)


def test_a_rule_replaced_during_its_backfill_evaluates_each_day_once(tmp_path: Path) -> None:
    """The first definition's backfill, still queued when the rule is replaced, must not run its days through
    the new definition beside the new definition's own backfill (each day twice: every alert raised twice)."""
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        _three_days_of_crowds(platform)
        rule = {**RULE, "minDurationS": 0, "backfill": {"from": at(0), "to": at(3 * DAY)}}
        with platform.alerts._lock:  # the worker waits here: both definitions' backfills are queued first
            platform.alerts.put_rule("", rule)
            platform.alerts.put_rule("", {**rule, "above": 140})
        assert platform.alerts.flush(30)
        current = [a for a in platform.alerts.alerts("", active_only=False) if a.rule.get("above") == 140]
        assert sorted(a.onset.day for a in current) == [T0_DAY, T0_DAY + 1, T0_DAY + 2]
    finally:
        platform.close()
