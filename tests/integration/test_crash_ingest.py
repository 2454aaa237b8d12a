"""`polis ingest` SIGKILLed part-way through, then run again until it finishes: the hub ends exactly as one
clean run leaves it (every entity once, every observation once), so an operator can always just rerun."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from polis.settings import Settings

LOS_LOOP_OBSERVATIONS = 417_312


def ingest(data_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    return subprocess.Popen([sys.executable, "-m", "polis.cli", "ingest", "los-loop", "--data-dir", str(data_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def counts(data_dir: Path) -> tuple[int, int, int]:
    """Entities, history rows, and distinct (entity, attribute, observedAt) among them."""
    con = duckdb.connect(str(data_dir / "polis.duckdb"), read_only=True)
    try:
        entities = con.execute("SELECT count(*) FROM entities").fetchall()[0][0]
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (eid, attr, observed_at)) FROM history"
        ).fetchall()[0]
        return int(entities), int(rows), int(distinct)
    finally:
        con.close()


def kill_during_writes(data_dir: Path, rng: random.Random) -> None:
    """Start an ingest and SIGKILL it a random moment after its write-ahead log grew by the entities' upsert
    (the log is not checkpointed at these sizes, so a rerun appends to what the killed run left)."""
    wal = data_dir / "polis.duckdb.wal"
    start = wal_size(wal)
    process = ingest(data_dir)
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if wal_size(wal) > start + 100_000:  # entities committed; history comes next
                time.sleep(rng.uniform(0.0, 0.4))
                break
            time.sleep(0.002)
    finally:
        process.kill()
        process.wait(timeout=15)
        assert process.stderr is not None
        process.stderr.close()


def wal_size(wal: Path) -> int:
    """The write-ahead log's size; 0 when there is none (a finished run checkpoints it away)."""
    try:
        return wal.stat().st_size
    except FileNotFoundError:
        return 0


def test_an_ingest_killed_part_way_and_rerun_stores_everything_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(5)
    data_dir = tmp_path / "hub"
    partial = []
    for _ in range(4):
        kill_during_writes(data_dir, rng)
        partial.append(counts(data_dir))
    for entities, rows, distinct in partial:
        assert rows == distinct  # nothing stored twice, even part-way
        assert entities in (0, 207)  # the entities go in one transaction: all or none
    assert any(entities and rows < LOS_LOOP_OBSERVATIONS for entities, rows, _ in partial), partial  # left part-way

    finished = ingest(data_dir)
    _, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err.decode()
    assert counts(data_dir) == (207, LOS_LOOP_OBSERVATIONS, LOS_LOOP_OBSERVATIONS)
