"""POLIS_ALERT_RULES_FILE as an operator meets a mistake in it: `polis serve` does not start, and says in one
line which setting, which file and what is wrong (exit 2, no traceback); the data directory is left unlocked
for the next try. A good file starts the hub with its rules."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import THRESHOLD_RULE

CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}


def _serve(rules: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`polis serve` on port 9 (never reached: the hub must refuse to start before it listens)."""
    env = {**os.environ, "COLUMNS": "400", "POLIS_ALERT_RULES_FILE": str(rules)}
    return subprocess.run(
        [sys.executable, "-m", "polis.cli", "serve", "--host", "127.0.0.1", "--port", "9", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, env=env,
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (orjson.dumps([{"id": "x", "kind": "threshold"}]), "rule #1: rule field 'attribute'"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe[]", "cannot be read"),
        (None, "cannot be read: No such file or directory"),
    ],
    ids=["refused-rule", "not-json", "not-utf8", "missing"],
)
def test_serve_refuses_a_bad_rules_file_in_one_line(tmp_path: Path, content: bytes | None, says: str) -> None:
    rules = tmp_path / "rules.json"
    if content is not None:
        rules.write_bytes(content)
    done = _serve(rules, tmp_path / "hub")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output and "╭" not in output, output  # no Python or rich traceback
    line = next(ln for ln in output.splitlines() if "POLIS_ALERT_RULES_FILE" in ln)
    assert str(rules) in line and says in line, output
    # The database was closed again: a corrected file starts the hub on the same directory.
    rules.write_bytes(orjson.dumps([{**THRESHOLD_RULE, "id": "fixed"}]))
    platform = Platform(Settings(data_dir=tmp_path / "hub", alert_rules_file=rules, **CHEAP))
    try:
        assert "fixed" in platform.alerts.index.by_tenant[""]
    finally:
        platform.close()


def test_a_rule_a_newer_check_refuses_still_runs_from_the_operators_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of 2026-11-29: the file is read at every start, so a check added since it was written (the
    updateIntervalS floor, a field combination) must not keep yesterday's hub from starting: the rule runs with
    a warning, as a rule saved in rules.json does."""
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps([{**THRESHOLD_RULE, "id": "chatty", "updateIntervalS": 30}]))
    with caplog.at_level(logging.WARNING, logger="polis.alerts.engine"):
        platform = Platform(Settings(data_dir=tmp_path / "hub", alert_rules_file=rules, **CHEAP))
    try:
        assert "chatty" in platform.alerts.index.by_tenant[""]
        assert any("chatty" in r.getMessage() and "updateIntervalS" in r.getMessage() for r in caplog.records)
    finally:
        platform.close()
