"""`polis archive` writes what the hub holds now, privately: a day whose history was deleted since the last
run is not left in the archive, the count it prints is what it wrote, every file and folder is its owner's
only (the mobility counts hold values below k), and a folder that is not an archive is never replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb

from polis.ngsi_ld.entities import utc_now
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.integration.test_cli import polis

SENSOR = "urn:ngsi-ld:Counter:arch-1"


def _reading(day: str, value: int) -> dict[str, object]:
    return {"type": "Property", "value": value, "observedAt": f"{day}T08:00:00Z"}


def _hub(data_dir: Path) -> None:
    """Two tenants' history on two days, through the store (as the API writes it)."""
    from polis.ngsi_ld.context import ContextCache
    from polis.ngsi_ld.entities import history_of
    from polis.ngsi_ld.entity_codec import expand_entity

    settings = Settings(data_dir=data_dir)
    data_dir.mkdir(parents=True)
    terms = ContextCache(settings.datasets_dir, data_dir / "contexts").resolve(None)
    store = DuckDBStore(settings.database_path)
    try:
        for tenant, day in (("", "2026-11-20"), ("t1", "2026-11-21")):
            entity = expand_entity({"id": SENSOR, "type": "Counter", "count": _reading(day, 3)}, terms, utc_now())
            store.write(tenant, upserts=[entity], history=history_of(entity))
    finally:
        store.close()


def _delete_tenant_entity(data_dir: Path, tenant: str) -> None:
    """What DELETE /temporal/entities/{id} does: the entity and its whole history."""
    store = DuckDBStore(Settings(data_dir=data_dir).database_path)
    try:
        store.write(tenant, deletes=[SENSOR])
        store.delete_history(tenant, SENSOR)
    finally:
        store.close()


def _private(root: Path) -> list[str]:
    """Paths under root (root included) that anyone but the owner can read or enter."""
    return [str(p) for p in [root, *root.rglob("*")] if stat.S_IMODE(p.stat().st_mode) & 0o077]


def test_an_archive_is_a_private_snapshot_of_the_history_held_now(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    _hub(data)
    out = tmp_path / "shared-folder" / "arch"
    out.parent.mkdir(mode=0o755)
    first = polis("archive", "--data-dir", str(data), "--out", str(out))
    assert first.returncode == 0, first.stderr
    files = sorted(out.rglob("*.parquet"))
    assert f"wrote {len(files)} Parquet files" in first.stdout
    assert {p.parent.parent.name for p in files} == {"tenant=.default", "tenant=t1"}
    assert _private(out) == []

    _delete_tenant_entity(data, "t1")
    second = polis("archive", "--data-dir", str(data), "--out", str(out))
    assert second.returncode == 0, second.stderr
    files = sorted(out.rglob("*.parquet"))
    assert {p.parent.parent.name for p in files} == {"tenant=.default"}  # the deleted tenant's day is gone
    assert f"wrote {len(files)} Parquet files" in second.stdout
    rows = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{out}/**/*.parquet')").fetchone()
    assert rows == (1,)
    assert _private(out) == []
    assert [p.name for p in out.parent.iterdir()] == ["arch"]  # no staging or old folder left behind


def test_a_folder_that_is_not_an_archive_is_not_replaced(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    _hub(data)
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    done = polis("archive", "--data-dir", str(data), "--out", str(home))
    assert done.returncode == 1
    assert "not a Polis archive" in done.stdout + done.stderr
    assert [p.name for p in home.iterdir()] == ["notes.txt"]


def test_an_archive_folder_that_is_a_link_to_another_disk_is_written_there(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    _hub(data)
    big_disk = tmp_path / "big-disk" / "polis-archive"
    big_disk.mkdir(parents=True)
    (data / "archive").symlink_to(big_disk)
    for _ in range(2):
        done = polis("archive", "--data-dir", str(data))
        assert done.returncode == 0, done.stderr
    assert (data / "archive").is_symlink() and (data / "archive").resolve() == big_disk.resolve()
    assert sorted(p.name for p in big_disk.iterdir()) == ["tenant=.default", "tenant=t1"]
    assert [p.name for p in data.iterdir() if p.name.startswith(".archive")] == []  # nothing left beside the link
    assert [p.name for p in big_disk.parent.iterdir()] == ["polis-archive"]
    assert _private(big_disk) == []
