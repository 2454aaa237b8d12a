"""Operator-facing CLI output found wrong by a walkthrough: a refused setting is one line naming the variable,
not a pydantic traceback; dead letters are shown as the text they are, whatever markup-like text a sensor sent."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from polis.settings import Settings
from polis.store.base import DeadLetter
from polis.store.duckdb_ import DuckDBStore


def _polis(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polis.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", **env})


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("POLIS_SUPPRESSION_K", "0", "greater than or equal to 1"),
    ("POLIS_FLOWS_UNIT", "bogus", "'cell' or 'station'"),
    ("POLIS_OD_WINDOW_HOURS", "12", "24"),
])
def test_a_refused_setting_is_one_line_naming_it(tmp_path: Path, variable: str, value: str, said: str) -> None:
    done = _polis("admin", "list", "--data-dir", str(tmp_path / "hub"), **{variable: value})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "ValidationError" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"invalid setting {variable}" in lines[0] and said in lines[0], done.stderr


def test_dead_letters_are_shown_as_sent_even_when_they_look_like_markup(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "hub")
    settings.data_dir.mkdir()
    store = DuckDBStore(settings.database_path)
    now = datetime.now(UTC)
    try:
        store.write("", dead_letters=[
            DeadLetter("mqtt", "polis/x", "oops [/bold] not json", "not JSON", now),
            DeadLetter("mqtt", "[withheld]", "[withheld: 98 bytes refused for privacy]", "privacy rule 'e-mail'", now),
        ])
    finally:
        store.close()
    done = _polis("deadletters", "--data-dir", str(settings.data_dir))
    assert done.returncode == 0, done.stderr
    assert "oops [/bold] not json" in done.stdout
    assert "[withheld: 98 bytes refused for privacy]" in done.stdout and "[withheld]" in done.stdout


def test_a_refused_pseudonym_secret_leaves_no_new_hub_behind(tmp_path: Path) -> None:
    data = tmp_path / "new-hub"
    done = _polis("ingest", "citibike-jersey-city", "--data-dir", str(data),
                  POLIS_PSEUDONYM_SECRET="short", POLIS_DATASETS_DIR=str(Settings().datasets_dir))
    assert done.returncode == 1 and "at least 32" in done.stderr and "Traceback" not in done.stderr
    assert not data.exists()


def test_doctor_says_how_to_point_at_missing_datasets(tmp_path: Path) -> None:
    done = _polis("doctor", "--data-dir", str(tmp_path / "hub"), POLIS_DATASETS_DIR=str(tmp_path / "nowhere"))
    said = " ".join(done.stdout.split())
    assert "missing: point POLIS_DATASETS_DIR or --datasets-dir at the folder holding the public datasets" in said
