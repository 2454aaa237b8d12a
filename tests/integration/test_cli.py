"""The `polis` command as a user runs it: ingest twice, archive, doctor, and the demo city served."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

from polis.cli import ingestible
from polis.settings import Settings
from tests.conftest import free_port, key_headers, start_server, stop_server


def polis(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "polis.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_ingest_is_idempotent_and_archive_partitions_by_day(tmp_path: Path) -> None:
    first = polis("ingest", "los-loop", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "417,312" in first.stdout  # observations seen and added
    second = polis("ingest", "los-loop", "--data-dir", str(tmp_path))
    assert second.returncode == 0, second.stderr
    con = duckdb.connect(str(tmp_path / "polis.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM history").fetchone() == (417_312,)
    assert con.execute("SELECT count(*) FROM entities").fetchone() == (207,)
    con.close()

    archived = polis("archive", "--data-dir", str(tmp_path))
    assert archived.returncode == 0, archived.stderr
    days = sorted(p.name for p in (tmp_path / "archive" / "tenant=.default").iterdir())
    assert days[0] == "day=2012-03-01" and len(days) == 8  # 1-7 March LA time spans eight UTC days
    total = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/archive/**/*.parquet')").fetchone()
    assert total == (417_312,)


def test_unknown_dataset_is_refused_with_the_known_names(tmp_path: Path) -> None:
    done = polis("ingest", "paris-metro", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "unknown dataset 'paris-metro'" in done.stdout and "los-loop" in done.stdout


def test_doctor_reports_versions_and_paths(tmp_path: Path) -> None:
    done = polis("doctor", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "duckdb" in done.stdout and "core @context v1.9" in done.stdout and "missing" not in done.stdout
    for name in ingestible():  # every dataset `polis ingest` takes, the gated citibike one too
        assert f"dataset {name}" in done.stdout, name


def test_demo_loads_the_city_and_serves_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "polis.cli", "demo", "--port", str(port), "--data-dir", str(tmp_path)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "demo exited early"
            assert time.monotonic() < deadline, "demo did not start serving in 90 s"
            try:
                types = httpx.get(f"http://127.0.0.1:{port}/ngsi-ld/v1/types", timeout=2, headers=key_headers(tmp_path))
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        names = {t.rsplit("/", 1)[-1] for t in types.json()["typeList"]}
        assert {"TrafficFlowObserved", "CrowdFlowObserved"} <= names
        assert httpx.get(f"http://127.0.0.1:{port}/docs", timeout=5).status_code == 200
    finally:
        stop_server(process)


def test_sigterm_closes_the_hub_before_the_server_exits(tmp_path: Path) -> None:
    """A service manager stops `polis serve` with SIGTERM: the hub closes as on Ctrl-C (its store
    checkpointed, so no write-ahead log is left; sources and forecasts stopped) and the exit status says
    SIGTERM (143). uvicorn raises the signal again after its graceful stop, which used to kill the process
    before the close."""
    server = start_server(tmp_path / "hub")
    response = httpx.post(f"{server.url}/ngsi-ld/v1/entities", headers=server.headers, timeout=10,
                          json={"id": "urn:ngsi-ld:Vehicle:term", "type": "Vehicle", "speed": 3})
    assert response.status_code == 201, response.text
    assert (tmp_path / "hub" / "polis.duckdb.wal").is_file()  # the write is in the log until a checkpoint
    server.process.terminate()
    assert server.process.wait(timeout=30) == 143, server.log_tail(2000)
    stop_server(server.process)  # closes its pipes
    assert not (tmp_path / "hub" / "polis.duckdb.wal").exists()
    con = duckdb.connect(str(tmp_path / "hub" / "polis.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM entities").fetchone() == (1,)
    finally:
        con.close()
