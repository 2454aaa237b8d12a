"""`attr_index` rows are keyed by the entity's version: a write adds the new version's rows and leaves the
old ones in place (no scan of the whole index per write); the old rows match no entity, so no `q` ever sees
them, and they are compacted away once they pile up. Files of the previous schema are migrated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

import polis.store.duckdb_ as duckdb_store
from polis.ngsi_ld.q import parse_q
from polis.store.base import EntityQuery
from polis.store.duckdb_ import SCHEMA_VERSION, DuckDBStore

NS = "https://example.org/"
TYPE = NS + "Counter"


def _entity(n: int, **values: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": f"urn:ngsi-ld:Counter:{n}", "type": [TYPE]}
    for name, value in values.items():
        doc[NS + name] = [{"type": "Property", "value": value}]
    return doc


def _ids(store: DuckDBStore, q: str) -> list[str]:
    query = EntityQuery(q=parse_q(q, lambda term: NS + term), limit=None)
    return sorted(e["id"] for e in store.query("", query).entities)


# attr_index as schema version 5 wrote it: each row carries its path itself.
_V5_ATTR_INDEX = """CREATE TABLE attr_index (tenant VARCHAR NOT NULL, ver BIGINT NOT NULL, path VARCHAR NOT NULL,
    num DOUBLE, txt VARCHAR, "bool" BOOLEAN)"""


def _rows(store: DuckDBStore) -> int:
    return int(store._scalar("SELECT count(*) FROM attr_index"))


def test_old_versions_are_never_seen_by_q(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "hub.duckdb")
    try:
        store.write("", upserts=[_entity(1, speed=10, note="slow"), _entity(2, speed=70)])
        store.write("", upserts=[_entity(1, speed=50)])  # replaced: its speed changes, `note` goes
        assert _rows(store) > 3  # the old rows are still there...
        assert _ids(store, "speed<20") == []  # ... but match nothing
        assert _ids(store, "speed==50") == ["urn:ngsi-ld:Counter:1"]
        assert _ids(store, "speed!=10") == ["urn:ngsi-ld:Counter:1", "urn:ngsi-ld:Counter:2"]
        assert _ids(store, "note") == []
        assert _ids(store, "!note") == ["urn:ngsi-ld:Counter:1", "urn:ngsi-ld:Counter:2"]
        assert _ids(store, "speed>40;!note") == ["urn:ngsi-ld:Counter:1", "urn:ngsi-ld:Counter:2"]  # grouped scan
        store.write("", deletes=["urn:ngsi-ld:Counter:2"])
        assert _ids(store, "speed>0") == ["urn:ngsi-ld:Counter:1"]
    finally:
        store.close()


def test_stale_rows_are_compacted_once_they_pile_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duckdb_store, "COMPACT_MIN_ROWS", 20)
    store = DuckDBStore(tmp_path / "hub.duckdb")
    try:
        store.write("", upserts=[_entity(n, speed=n, lanes=2) for n in range(10)])
        live = _rows(store)  # 2 rows an entity
        after = []
        for round_ in range(1, 8):
            store.write("", upserts=[_entity(n, speed=100 * round_ + n, lanes=2) for n in range(10)])
            after.append(_rows(store))
            assert _ids(store, f"speed>={100 * round_}") == [f"urn:ngsi-ld:Counter:{n}" for n in range(10)]
            assert _ids(store, f"speed<{100 * round_}") == []
        # each round leaves `live` stale rows; more than 20 (the slack here) are compacted in the same write
        assert after[:3] == [2 * live, live, 2 * live]
        assert max(after) == 2 * live
        assert store.compact_index() == after[-1] - live  # by hand: whatever is stale now
        assert _rows(store) == live
        assert _ids(store, "speed>=700") == [f"urn:ngsi-ld:Counter:{n}" for n in range(10)]
    finally:
        store.close()


def test_versions_continue_after_a_restart_past_stale_rows(tmp_path: Path) -> None:
    path = tmp_path / "hub.duckdb"
    store = DuckDBStore(path)
    store.write("", upserts=[_entity(1, speed=1)])
    store.write("", upserts=[_entity(2, speed=99)])
    store.write("", deletes=["urn:ngsi-ld:Counter:2"])  # the highest version is now only in stale rows
    store.close()
    store = DuckDBStore(path)
    try:
        highest = store._scalar("SELECT max(ver) FROM attr_index")
        assert highest > store._scalar("SELECT max(ver) FROM entities")
        store.write("", upserts=[_entity(3, speed=5)])  # must not take the deleted entity's version
        assert store._scalar("SELECT ver FROM entities WHERE id = 'urn:ngsi-ld:Counter:3'") > highest
        assert _ids(store, "speed>50") == []
        assert _ids(store, "speed<10") == ["urn:ngsi-ld:Counter:1", "urn:ngsi-ld:Counter:3"]
    finally:
        store.close()


def test_a_version_4_file_is_migrated_and_queried_as_before(tmp_path: Path) -> None:
    path = tmp_path / "hub.duckdb"
    store = DuckDBStore(path)
    store.write("", upserts=[_entity(1, speed=10), _entity(2, speed=70)])
    store.close()
    con = duckdb.connect(str(path))  # back to version 4: index rows keyed by seq and their path, no versions
    con.execute("DROP TABLE attr_index")
    con.execute("DROP TABLE attr_paths")
    con.execute(_V5_ATTR_INDEX.replace("ver BIGINT", "seq BIGINT"))
    con.execute(
        "INSERT INTO attr_index SELECT e.tenant, e.seq, ?, (e.seq - 1) * 60.0 + 10, NULL, NULL FROM entities e",
        [NS + "speed"],
    )
    con.execute("ALTER TABLE entities DROP COLUMN ver")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.close()
    store = DuckDBStore(path)
    try:
        assert store._scalar("SELECT value FROM meta WHERE key = 'schema_version'") == SCHEMA_VERSION == "6"
        assert _ids(store, "speed>50") == ["urn:ngsi-ld:Counter:2"]
        store.write("", upserts=[_entity(2, speed=5)])
        assert _ids(store, "speed>50") == []
        assert _ids(store, "speed<20") == ["urn:ngsi-ld:Counter:1", "urn:ngsi-ld:Counter:2"]
    finally:
        store.close()


def test_a_version_5_file_gets_numbered_paths_and_is_queried_as_before(tmp_path: Path) -> None:
    path = tmp_path / "hub.duckdb"
    store = DuckDBStore(path)
    store.write("", upserts=[_entity(1, speed=10, flow=3), _entity(2, speed=70)])
    store.close()
    con = duckdb.connect(str(path))  # back to version 5: each index row holds its path
    con.execute("ALTER TABLE attr_index RENAME TO numbered")
    con.execute(_V5_ATTR_INDEX)
    con.execute(
        "INSERT INTO attr_index SELECT n.tenant, n.ver, p.path, n.num, n.txt, n.bool FROM numbered n "
        "JOIN attr_paths p ON p.id = n.path"
    )
    rows = con.execute("SELECT count(*) FROM attr_index").fetchall()[0][0]
    con.execute("DROP TABLE numbered")
    con.execute("DROP TABLE attr_paths")
    con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    store = DuckDBStore(path)
    try:
        assert store._scalar("SELECT value FROM meta WHERE key = 'schema_version'") == "6"
        assert _rows(store) == rows
        assert _ids(store, "speed>50") == ["urn:ngsi-ld:Counter:2"]
        assert _ids(store, "flow==3") == ["urn:ngsi-ld:Counter:1"]
        store.write("", upserts=[_entity(3, speed=90, lanes=2)])  # a path the file has not seen yet
        assert _ids(store, "speed>50") == ["urn:ngsi-ld:Counter:2", "urn:ngsi-ld:Counter:3"]
        assert _ids(store, "lanes==2") == ["urn:ngsi-ld:Counter:3"]
    finally:
        store.close()
    reopened = DuckDBStore(path)  # the numbering, new paths included, is read back from the file
    try:
        assert _ids(reopened, "lanes==2") == ["urn:ngsi-ld:Counter:3"]
        assert _ids(reopened, "flow==3") == ["urn:ngsi-ld:Counter:1"]
    finally:
        reopened.close()


def test_a_path_numbered_by_a_write_never_applied_is_stored_by_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "hub.duckdb"
    store = DuckDBStore(path)
    try:
        store.prepare("", upserts=[_entity(1, width=4)])  # prepared, then dropped (another write came first)
        store.write("", upserts=[_entity(2, width=7)])
        assert _ids(store, "width==7") == ["urn:ngsi-ld:Counter:2"]
    finally:
        store.close()
    reopened = DuckDBStore(path)
    try:
        assert _ids(reopened, "width==7") == ["urn:ngsi-ld:Counter:2"]
        assert reopened._scalar("SELECT count(*) FROM attr_paths WHERE path = ?", [NS + "width"]) == 1
    finally:
        reopened.close()


def test_paths_no_row_uses_any_more_are_forgotten_at_compaction(tmp_path: Path) -> None:
    # Keys of a dict value are paths of their own: a value whose keys change at every write must not leave
    # one numbered path per key behind for ever, in the file or in memory.
    path = tmp_path / "hub.duckdb"
    store = DuckDBStore(path)
    try:
        for k in range(30):
            store.write("", upserts=[_entity(1, speed=k, reading={f"k{k}": k})])
        assert _ids(store, "reading[k29]==29") == ["urn:ngsi-ld:Counter:1"]
        assert store._scalar("SELECT count(*) FROM attr_paths") >= 30
        store.compact_index()
        names = [row[0] for row in store.connection().execute("SELECT path FROM attr_paths").fetchall()]
        assert sorted(names) == sorted({NS + "speed", NS + "reading", NS + "reading\x1ek29"})
        assert len(store._path_ids) == len(store._path_names) == 3
        assert _ids(store, "reading[k29]==29") == ["urn:ngsi-ld:Counter:1"]
        assert _ids(store, "reading[k3]==3") == []
        store.write("", upserts=[_entity(2, reading={"k3": 3})])  # a forgotten key, numbered afresh
        assert _ids(store, "reading[k3]==3") == ["urn:ngsi-ld:Counter:2"]
    finally:
        store.close()
    reopened = DuckDBStore(path)
    try:
        assert _ids(reopened, "reading[k3]==3") == ["urn:ngsi-ld:Counter:2"]
        assert _ids(reopened, "reading[k29]==29") == ["urn:ngsi-ld:Counter:1"]
    finally:
        reopened.close()


def test_a_write_prepared_before_paths_were_forgotten_is_prepared_again(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "hub.duckdb")
    try:
        store.write("", upserts=[_entity(1, reading={"a": 1})])
        store.write("", upserts=[_entity(1, reading={"b": 2})])  # the path of key "a" is no row's any more
        snapshot = store.commit_number()
        store.prepare("", upserts=[_entity(2, reading={"a": 5})])  # numbered with the soon-forgotten number
        assert store.unchanged_since("", ["urn:ngsi-ld:Counter:2"], snapshot)
        store.compact_index()
        assert not store.unchanged_since("", ["urn:ngsi-ld:Counter:2"], snapshot)  # so the caller redoes it
        store.write("", upserts=[_entity(2, reading={"a": 5})])
        assert _ids(store, "reading[a]==5") == ["urn:ngsi-ld:Counter:2"]
    finally:
        store.close()


def test_a_replacement_applied_after_its_entity_was_deleted_writes_nothing() -> None:
    """One entity's replacement updates its row in place; if the row went away between `prepare` and `apply`
    (a caller that skipped `unchanged_since`), the write is refused and rolled back, as a create would be,
    instead of leaving the id directory naming a row that is not there."""
    store = DuckDBStore()
    try:
        store.write("", upserts=[_entity(1, count=1)])
        stale = store.prepare("", upserts=[_entity(1, count=2)])
        store.write("", deletes=["urn:ngsi-ld:Counter:1"])
        with pytest.raises(RuntimeError, match="prepare it again"):
            store.apply(stale)
        assert store.get("", ["urn:ngsi-ld:Counter:1"]) == {}
        assert store.existing_ids("", ["urn:ngsi-ld:Counter:1"]) == set()
        assert _ids(store, "count>=0") == []
    finally:
        store.close()
