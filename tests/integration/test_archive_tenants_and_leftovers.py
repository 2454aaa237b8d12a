"""`polis archive`: the default tenant's partition is one no tenant can have (a tenant named `_default` once
shared it, its rows mixed with the default tenant's), and what a killed run leaves beside the destination (its
staging folder, the previous archive moved aside) is cleared by the next run, which holds a lock meanwhile."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import duckdb

from polis.domain.tenant import tenant_problem
from polis.ngsi_ld.entities import utc_now
from polis.settings import Settings
from polis.store.duckdb_ import ARCHIVE_DEFAULT_TENANT, DuckDBStore
from tests.integration.test_cli import polis

SENSOR = "urn:ngsi-ld:Counter:archive-1"


def _hub(data_dir: Path, tenants: dict[str, int]) -> None:
    """One sensor's reading per tenant (the same id everywhere), written through the store as the API does."""
    from polis.ngsi_ld.context import ContextCache
    from polis.ngsi_ld.entities import history_of
    from polis.ngsi_ld.entity_codec import expand_entity

    settings = Settings(data_dir=data_dir)
    data_dir.mkdir(parents=True)
    terms = ContextCache(settings.datasets_dir, data_dir / "contexts").resolve(None)
    store = DuckDBStore(settings.database_path)
    try:
        for tenant, value in tenants.items():
            reading = {"type": "Property", "value": value, "observedAt": "2026-01-01T00:00:00Z"}
            entity = expand_entity({"id": SENSOR, "type": "Counter", "count": reading}, terms, utc_now())
            store.write(tenant, upserts=[entity], history=history_of(entity))
    finally:
        store.close()


def test_the_default_tenant_and_a_tenant_named_default_stay_apart(tmp_path: Path) -> None:
    assert tenant_problem("_default") is None  # a valid tenant name, so the archive must not claim it
    assert tenant_problem(ARCHIVE_DEFAULT_TENANT) is not None  # the default's partition: no tenant can be so named
    _hub(tmp_path / "hub", {"": 1, "_default": 2})
    done = polis("archive", "--data-dir", str(tmp_path / "hub"), "--out", str(tmp_path / "archive"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == [
        f"tenant={ARCHIVE_DEFAULT_TENANT}", "tenant=_default"]
    rows = duckdb.connect().execute(f"SELECT tenant, value FROM read_parquet('{tmp_path}/archive/*/*/*.parquet', "
                                    "hive_partitioning = true) ORDER BY value").fetchall()
    assert rows == [(ARCHIVE_DEFAULT_TENANT, 1.0), ("_default", 2.0)]


def test_a_killed_runs_leftovers_are_cleared_and_only_they(tmp_path: Path) -> None:
    _hub(tmp_path / "hub", {"": 1})
    destination = tmp_path / "out" / "archive"
    destination.mkdir(parents=True)
    leftovers = [tmp_path / "out" / ".archive.partial-41", tmp_path / "out" / ".archive.old-42"]
    lookalikes = [tmp_path / "out" / name for name in (".archive.partial-41.keep", ".archive.old-x", ".other.old-1",
                                                        "archive.partial-43")]
    for folder in leftovers + lookalikes:
        (folder / "tenant=t" / "day=2026-01-01").mkdir(parents=True)
        (folder / "tenant=t" / "day=2026-01-01" / "data_0.parquet").write_bytes(b"half")
    done = polis("archive", "--data-dir", str(tmp_path / "hub"), "--out", str(destination))
    assert done.returncode == 0, done.stderr
    assert not any(folder.exists() for folder in leftovers)
    assert all(folder.is_dir() for folder in lookalikes)
    assert not (tmp_path / "out" / ".archive.lock").exists()  # its holder removes it
    assert sorted(p.name for p in destination.iterdir()) == [f"tenant={ARCHIVE_DEFAULT_TENANT}"]


def test_a_previous_archive_moved_aside_by_a_killed_run_goes_back(tmp_path: Path) -> None:
    _hub(tmp_path / "hub", {"": 1})
    destination = tmp_path / "out" / "archive"
    moved = tmp_path / "out" / ".archive.old-42"  # killed between moving the old archive aside and the swap
    (moved / "tenant=t").mkdir(parents=True)
    (tmp_path / "out" / ".archive.partial-42" / "tenant=t").mkdir(parents=True)
    holder = duckdb.connect(str(tmp_path / "hub" / "polis.duckdb"))  # this run fails: another process holds the hub
    try:
        done = polis("archive", "--data-dir", str(tmp_path / "hub"), "--out", str(destination))
    finally:
        holder.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["archive"]
    assert (destination / "tenant=t").is_dir()  # the previous archive, back in place


def test_a_second_run_beside_one_in_progress_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    _hub(tmp_path / "hub", {"": 1})
    destination = tmp_path / "out" / "archive"
    (tmp_path / "out").mkdir()
    staging = tmp_path / "out" / ".archive.partial-41"  # the running one's
    staging.mkdir()
    descriptor = os.open(tmp_path / "out" / ".archive.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run in progress holds it
        done = polis("archive", "--data-dir", str(tmp_path / "hub"), "--out", str(destination))
    finally:
        os.close(descriptor)
    assert done.returncode == 1
    assert "another `polis archive` is writing" in done.stderr and "Traceback" not in done.stderr
    assert staging.is_dir() and not destination.exists()
