"""`polis serve` with a datasets folder that lacks the NGSI-LD core context (or holds a broken one) does not
start: every request resolves its @context over that file, so it would answer each one 500. It exits 2 with
one line naming the file and POLIS_DATASETS_DIR, and creates no hub; `polis doctor` still runs and reports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

CORE = Path("ngsi-ld") / "ngsi-ld-core-context-v1.9.jsonld"


def polis(datasets: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLIS_DATASETS_DIR": str(datasets), "COLUMNS": "400"}
    # A server that starts anyway would run until killed: the timeout turns that into a failure.
    return subprocess.run([sys.executable, "-m", "polis.cli", *args], capture_output=True, text=True, timeout=30,
                          env=env)


@pytest.mark.parametrize("core", [None, b'{"not": "a context"}', b"[1"], ids=["missing", "no-context", "not-json"])
def test_serve_refuses_to_start_and_names_the_file_and_the_setting(tmp_path: Path, core: bytes | None) -> None:
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    if core is not None:
        (datasets / CORE).parent.mkdir()
        (datasets / CORE).write_bytes(core)
    hub = tmp_path / "hub"
    done = polis(datasets, "serve", "--data-dir", str(hub), "--port", str(free_port()))
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert str(datasets / CORE) in line and "POLIS_DATASETS_DIR" in line, line
    assert not hub.exists()  # refused before the hub's files were opened


def test_doctor_still_reports_the_missing_core_context(tmp_path: Path) -> None:
    done = polis(tmp_path, "doctor", "--data-dir", str(tmp_path / "hub"))
    assert done.returncode == 0, done.stderr
    core = next(line for line in done.stdout.splitlines() if "core @context v1.9" in line)
    assert "missing" in core
