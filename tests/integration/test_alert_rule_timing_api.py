"""A rule whose updates come no more often than its messages expire, as a user meets it: the API answers 400
naming both values and keeps nothing, `polis alerts load` refuses the whole file, and a hub whose rules.json
holds such a rule from an earlier version still starts and runs it, and takes it back unchanged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.alerts.rules import parse_rule, rule_json
from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import THRESHOLD_RULE, admin_headers, problem

SLOW_UPDATES: dict[str, Any] = {**THRESHOLD_RULE, "updateIntervalS": 900, "validityS": 600}
CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}


def test_the_api_refuses_updates_slower_than_the_validity(client: TestClient) -> None:
    body = problem(client.post("/polis/v1/alerts/rules", json=SLOW_UPDATES), 400, "BadRequestData",
                   "updateIntervalS (900 s)", "validityS (600 s)")
    assert body["field"] == "updateIntervalS/validityS"
    put = client.put("/polis/v1/alerts/rules/busy-corner", json={**THRESHOLD_RULE, "updateIntervalS": 3600})
    problem(put, 400, "BadRequestData", "validityS (3600 s, the default)")
    assert client.get("/polis/v1/alerts/rules").json() == []  # nothing was kept
    fixed = {**SLOW_UPDATES, "validityS": 1800}
    assert client.put("/polis/v1/alerts/rules/busy-corner", json=fixed).status_code == 201


def test_polis_alerts_load_refuses_the_whole_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps({"rules": [{**THRESHOLD_RULE, "id": "fine"}, {**SLOW_UPDATES, "id": "slow"}]}))
    data_dir = tmp_path / "hub"
    done = subprocess.run(
        [sys.executable, "-m", "polis.cli", "alerts", "load", str(rules), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "rule #2: rule field 'updateIntervalS/validityS'" in done.stdout, done.stdout
    assert not (data_dir / "alerts" / "rules.json").exists()  # not even the good rule: no partial install


def test_a_hub_with_such_a_rule_saved_by_an_earlier_version_starts_and_runs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = rule_json(parse_rule(THRESHOLD_RULE)) | {"updateIntervalS": 3600.0, "validityS": 3600.0}
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "rules.json").write_bytes(orjson.dumps([{"tenant": "", "rule": old}]))
    with caplog.at_level(logging.WARNING, logger="polis.alerts.rulebook"):
        platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            listed = client.get("/polis/v1/alerts/rules").json()
            assert [(r["id"], r["updateIntervalS"], r["validityS"]) for r in listed] == [("busy-corner", 3600, 3600)]
            assert "busy-corner" in platform.alerts.index.by_tenant[""]  # installed: it raises alerts
            assert any("would be refused now" in r.getMessage() for r in caplog.records)
            # Put back unchanged (a GET put back, a tool re-applying its rule set), it stays the no-op it was;
            # changed, it meets today's check.
            assert client.put("/polis/v1/alerts/rules/busy-corner", json=listed[0]).status_code == 200
            changed = {**listed[0], "severity": "Severe"}
            problem(client.put("/polis/v1/alerts/rules/busy-corner", json=changed), 400, "BadRequestData",
                    "updateIntervalS (3600 s)")
    finally:
        platform.close()
