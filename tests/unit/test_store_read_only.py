"""A hub file opened read-only (what `polis epidemic` does beside no server) is read as it is, never changed."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from polis.store.duckdb_ import DuckDBStore

NOW = "2026-11-27T08:00:00Z"


def test_a_read_only_store_reads_the_hub_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "polis.duckdb"
    store = DuckDBStore(path)
    store.write("", upserts=[{"id": "urn:a:1", "type": ["T"], "createdAt": NOW, "modifiedAt": NOW}])
    store.close()
    reader = DuckDBStore(path, read_only=True)
    try:
        assert list(reader.get("", ["urn:a:1"])) == ["urn:a:1"]
        with pytest.raises(duckdb.Error):  # DuckDB's own refusal: the file is opened read-only
            reader.write("", upserts=[{"id": "urn:a:2", "type": ["T"], "createdAt": NOW, "modifiedAt": NOW}])
    finally:
        reader.close()


def test_read_only_never_creates_a_hub(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DuckDBStore(tmp_path / "nothing" / "polis.duckdb", read_only=True)
    assert not (tmp_path / "nothing").exists()
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(RuntimeError, match="not a Polis hub"):
        DuckDBStore(other, read_only=True)
