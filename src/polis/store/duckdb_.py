"""The embedded default store: one DuckDB file holding current state, indexes and history.

Tables (all keyed by tenant; the default tenant is the empty string):
- `entities`: one row per entity, the whole expanded document as JSON text, its types, `seq`
  (creation order, which gives query results a stable order) and `ver` (a new number at every write).
- `entity_types`, `entity_attrs`: (entity, type) and (entity, attribute IRI, attribute kind), for `attrs=`
  filters and `/types`, `/attributes` (a type filter reads the entity's own `types` list).
- `attr_index`: the flattened attribute values that `q` is translated against (see attr_index.py), keyed
  by `ver`: a write adds the new version's rows and leaves the old ones, which match no entity any more,
  for `compact_index` to delete in bulk. Its paths are numbers, which `attr_paths` names.
- `geo_index`: every GeoProperty with its bounding box and H3 cells (see geo_index.py).
- The other index tables refer to an entity by its integer `seq`, not its id: a query first finds the page's
  `seq`s from the narrow tables (integer joins, no document read), then reads only those documents.
- `history`: every temporal instance; numeric Property instances keep only `num` (+ unit), others the
  instance JSON, so a week of one sensor reads without parsing JSON. Each row also carries `hkey`, an
  integer standing for its (tenant, entity id) in `history_keys`, assigned at an entity's first instance
  and never reused: reads filter on it because DuckDB's row-group min/max statistics keep only the first
  8 bytes of a string ("urn:ngsi"), so a filter on the id string can skip nothing, while the integer lets
  a read skip every row group that holds no instance of the entity (bulk loads are entity-major).

Writes go through Arrow tables in one transaction per call, because DuckDB is fast on columnar bulk
inserts and slow on row-at-a-time ones. One connection, one lock: DuckDB parallelises each statement
itself, and writes must be serialised anyway.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from polis.access.datasets import dataset_sql
from polis.domain.entity import ENTITY_MEMBERS, EXACT_INT_LIMIT, Entity, HistoryInstance, is_plain_number
from polis.ngsi_ld.events import Staged
from polis.ngsi_ld.geoquery import matches as geo_matches
from polis.store.attr_index import ATTR_INDEX_DDL, ATTR_PATHS_DDL, IndexColumns, attr_index_rows
from polis.store.base import (
    DEFAULT_TENANT,
    PLAIN_MEMBERS,
    AttributeInfo,
    DeadLetter,
    EntityQuery,
    HistoryColumns,
    QueryResult,
    TemporalAttribute,
    TemporalQuery,
    TypeInfo,
    TypeSelector,
    chunks,
    reading_value,
)
from polis.store.geo_index import GEO_INDEX_DDL, PointTable, geo_index_rows, geo_to_sql, geo_values
from polis.store.q_sql import q_to_sql, scope_q_to_sql

log = logging.getLogger(__name__)

INSTANCE_PREFIX = "urn:ngsi-ld:Instance:"

SCHEMA_VERSION = "6"
# `entity_attrs` holds a row per attribute instance (an attribute with datasetIds has several) once meta notes
# this; a file written before holds one per attribute, which `_count_instances_once` redoes when opened.
ATTR_ROWS_KEY = "entity_attrs_rows"
ATTR_ROWS = "instances"
_RECOUNT_CHUNK = 10_000  # entities whose documents are read at a time by `_count_instances_once`
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = datetime.min.replace(tzinfo=UTC)  # `newest_history` of an entity whose history is all gone
POINT_TABLE_REBUILD_S = 1.0  # a stale point table is rebuilt at most this often; meanwhile `near` runs in SQL
# How many recent commits `unchanged_since` remembers beyond the live entities (a prepared batch is seldom
# more than a few commits old; an older one is redone under the lock).
LAST_WRITES_KEPT = 10_000
# `attr_index` rows of replaced and deleted entities are left in place (they match no current version) and
# deleted together once they reach this share of the live rows, and at least COMPACT_MIN_ROWS: deleting an
# entity's old rows on every write was a scan of the whole index per batch (~12 ms of ~30 under the lock at
# 1.5M rows), one compaction is about one such scan for many batches.
COMPACT_SHARE = 0.5
COMPACT_MIN_ROWS = 50_000
# DuckDB folds its write-ahead log into the tables when the log reaches this size. The default (16 MB) means
# a checkpoint every few batch upserts, each rewriting whole row groups; a larger log amortises that.
CHECKPOINT_WAL = "256MB"
_HISTORY_DDL = """CREATE TABLE IF NOT EXISTS history (
    tenant VARCHAR NOT NULL, eid VARCHAR NOT NULL, attr VARCHAR NOT NULL, dataset_id VARCHAR,
    observed_at TIMESTAMP NOT NULL, instance_id BIGINT NOT NULL, num DOUBLE, doc VARCHAR, unit_code VARCHAR,
    hkey BIGINT NOT NULL)"""
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tenants (name VARCHAR PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS receipts (
        source VARCHAR NOT NULL, key VARCHAR NOT NULL, received_at TIMESTAMP NOT NULL, PRIMARY KEY (source, key))""",
    "CREATE SEQUENCE IF NOT EXISTS dead_letter_ids",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id BIGINT NOT NULL DEFAULT nextval('dead_letter_ids'), source VARCHAR NOT NULL, topic VARCHAR NOT NULL,
        payload VARCHAR NOT NULL, reason VARCHAR NOT NULL, received_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS entities (
        tenant VARCHAR NOT NULL, id VARCHAR NOT NULL, types VARCHAR[] NOT NULL, doc VARCHAR NOT NULL,
        seq BIGINT NOT NULL, ver BIGINT)""",
    """CREATE TABLE IF NOT EXISTS entity_types (
        tenant VARCHAR NOT NULL, seq BIGINT NOT NULL, type VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS entity_attrs (
        tenant VARCHAR NOT NULL, seq BIGINT NOT NULL, attr VARCHAR NOT NULL, kind VARCHAR NOT NULL)""",
    ATTR_INDEX_DDL,
    ATTR_PATHS_DDL,
    GEO_INDEX_DDL,
    _HISTORY_DDL,
    "CREATE TABLE IF NOT EXISTS history_keys (tenant VARCHAR NOT NULL, eid VARCHAR NOT NULL, hkey BIGINT NOT NULL)",
]
# Version 3 -> 4: history rows get their integer entity key; the table is rewritten ordered by it, which also
# clusters each entity's instances into as few row groups as possible.
_MIGRATE_3_TO_4 = [
    """CREATE TABLE history_keys AS SELECT tenant, eid, row_number() OVER (ORDER BY min(instance_id)) AS hkey
        FROM history GROUP BY tenant, eid""",
    "ALTER TABLE history RENAME TO history_v3",
    _HISTORY_DDL,
    """INSERT INTO history SELECT h.*, k.hkey FROM history_v3 h JOIN history_keys k USING (tenant, eid)
        ORDER BY k.hkey, h.attr, h.observed_at, h.instance_id""",
    "DROP TABLE history_v3",
    "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
]
# Version 4 -> 5: each write of an entity gets a version (`entities.ver`), and `attr_index` rows are keyed by
# it instead of the entity's `seq` (which stays: the creation order, and the key of the other index tables).
_MIGRATE_4_TO_5 = {  # table: its steps (a table the file lacks is created as new)
    "attr_index": ["ALTER TABLE attr_index RENAME COLUMN seq TO ver"],
    "entities": ["ALTER TABLE entities ADD COLUMN ver BIGINT", "UPDATE entities SET ver = seq"],
    "meta": ["UPDATE meta SET value = '5' WHERE key = 'schema_version'"],
}
# Version 5 -> 6: `attr_index.path` holds a number that `attr_paths` names instead of the path itself.
_MIGRATE_5_TO_6 = {
    "attr_index": [
        ATTR_PATHS_DDL,
        """INSERT INTO attr_paths SELECT CAST(row_number() OVER (ORDER BY path) AS INTEGER), path
            FROM (SELECT DISTINCT path FROM attr_index)""",
        "ALTER TABLE attr_index RENAME TO attr_index_v5",
        ATTR_INDEX_DDL,
        """INSERT INTO attr_index SELECT a.tenant, a.ver, p.id, a.num, a.txt, a."bool"
            FROM attr_index_v5 a JOIN attr_paths p USING (path) ORDER BY a.ver""",
        "DROP TABLE attr_index_v5",
    ],
    "meta": ["UPDATE meta SET value = '6' WHERE key = 'schema_version'"],
}

_ENTITY_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("types", pa.list_(pa.string())),
        ("doc", pa.string()),
        ("seq", pa.int64()),
        ("ver", pa.int64()),
    ]
)
# History rows as a write prepares them; `apply` appends `hkey`, the table's last column.
_HISTORY_ROW_SCHEMA = pa.schema(
    [
        ("eid", pa.string()),
        ("attr", pa.string()),
        ("dataset_id", pa.string()),
        ("observed_at", pa.timestamp("us")),
        ("instance_id", pa.int64()),
        ("num", pa.float64()),
        ("doc", pa.string()),
        ("unit_code", pa.string()),
    ]
)


@dataclass(slots=True)
class PreparedWrite:
    """A write's rows, built by `DuckDBStore.prepare`; `DuckDBStore.apply` stores them."""

    tenant: str
    upserts: Sequence[Entity]
    deletes: Sequence[str]
    seqs: dict[str, int] = field(default_factory=dict)
    vers: dict[str, int] = field(default_factory=dict)  # each upsert's new version (its attr_index key)
    created: list[str] = field(default_factory=list)  # upserts that were new when prepared
    shapes: dict[int, tuple[int, int]] = field(default_factory=dict)
    tables: dict[str, pa.Table] = field(default_factory=dict)  # none: nothing to write


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def _is_plain_number(instance: dict[str, Any]) -> bool:
    """A numeric Property with nothing but value/observedAt/unitCode/system members: stored as `num` only."""
    return is_plain_number(instance, PLAIN_MEMBERS)


class DuckDBStore:
    """`Store` on an embedded DuckDB database; `path=None` keeps everything in memory (tests)."""

    def __init__(
        self, path: Path | None = None, *, threads: int = 2, memory_limit: str = "512MB", read_only: bool = False
    ) -> None:
        """`read_only`: open an existing hub file to read it (a command line tool beside no server: DuckDB
        lets several read-only processes share a file, but none while a writer holds it)."""
        if path is not None and not read_only:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if read_only and (path is None or not path.is_file()):
            raise FileNotFoundError(f"no hub database at {path}")
        config: dict[str, str | bool | int | float | list[str]] = {"threads": threads, "memory_limit": memory_limit}
        if not read_only:
            config["checkpoint_threshold"] = CHECKPOINT_WAL
        new_hub = path is not None and not read_only and not path.exists()
        self._con = duckdb.connect(
            str(path) if path is not None else ":memory:",
            read_only=read_only,
            config=config,
        )
        if new_hub and path is not None:
            _make_private(path)  # before the schema: nothing but DuckDB's header is in the file yet
        self._lock = threading.RLock()  # the connection, and everything a commit changes
        self._numbers = threading.Lock()  # the next seq and instance id
        existing = {r[0] for r in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if not read_only:
            if "meta" in existing:  # without it: refused below, as written by a Polis before schema versions
                if "history" in existing and "history_keys" not in existing:
                    self._migrate(_MIGRATE_3_TO_4, "3")
                for migration, before in ((_MIGRATE_4_TO_5, "4"), (_MIGRATE_5_TO_6, "5")):
                    steps = [sql for table, sqls in migration.items() if table in existing for sql in sqls]
                    self._migrate(steps, before)
            for ddl in _SCHEMA:
                self._con.execute(ddl)
        if read_only and "meta" not in existing:
            self._con.close()
            raise RuntimeError(f"{path} is not a Polis hub (it has no schema version)")
        version = self._scalar("SELECT value FROM meta WHERE key = 'schema_version'")
        if version is None and "entities" in existing:
            self._con.close()
            raise RuntimeError(
                f"{path} was written by an older Polis (no schema version); move it aside and run `polis ingest` again"
            )
        if version not in (None, SCHEMA_VERSION):
            self._con.close()
            raise RuntimeError(f"{path} has schema version {version}; this Polis reads version {SCHEMA_VERSION}")
        if not read_only:
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
            self._con.execute("INSERT OR IGNORE INTO tenants VALUES (?)", [DEFAULT_TENANT])
            self._count_instances_once()
        # The id directory: (tenant, id) -> seq for every entity, in memory. It replaces a primary-key index,
        # whose upkeep made every DuckDB commit cost ~75 ms; 100,000 entities take ~15 MB here.
        self._directory: dict[tuple[str, str], int] = {
            (tenant, eid): seq
            for tenant, eid, seq in self._con.execute("SELECT tenant, id, seq FROM entities").fetchall()
        }
        self._next_seq = self._scalar("SELECT COALESCE(max(seq), 0) + 1 FROM entities")
        # Versions are never reused: a stale attr_index row may hold a higher one than any entity.
        self._next_ver = self._scalar(
            "SELECT COALESCE(greatest((SELECT max(ver) FROM entities), (SELECT max(ver) FROM attr_index)), 0) + 1"
        )
        # The number of every attr_index path (`attr_paths`); a path is numbered when a write is prepared and
        # stored in the first transaction that writes a row with it (`_stored_paths`: those already stored).
        self._path_ids: dict[str, int] = dict(self._con.execute("SELECT path, id FROM attr_paths").fetchall())
        self._path_names = {number: name for name, number in self._path_ids.items()}
        self._stored_paths = set(self._path_names)
        self._next_path = max(self._path_names, default=0) + 1
        # attr_index rows of current versions, and (an estimate of) those of replaced and deleted ones
        self._index_live, self._index_stale = self._index_counts()
        self._next_instance = self._scalar("SELECT COALESCE(max(instance_id), 0) + 1 FROM history")
        # (tenant, entity id) -> hkey of every entity with history, like the id directory above.
        self._hkeys: dict[tuple[str, str], int] = {
            (tenant, eid): hkey for tenant, eid, hkey in self._con.execute("SELECT * FROM history_keys").fetchall()
        }
        self._next_hkey = self._scalar("SELECT COALESCE(max(hkey), 0) + 1 FROM history_keys")
        # hkey -> an instant none of the entity's history is later than (`newest_history`), for the entities
        # ingest asked about: read once, then raised by every commit, so a stream of new readings is told
        # apart from repeats without a query. Deletions leave it high, which only costs a closer look.
        self._newest: dict[int, datetime] = {}
        # (tenant, seq) -> hashes of the entity's (types + attribute kinds) rows and of its GeoProperty values
        # (what its geo rows are made from), as last written by this process: an update that changes neither
        # (a new reading) leaves those index rows alone, which saves two DELETE scans and two INSERTs per table
        # and commit, and the geometry checks and H3 cells of an unmoved entity. Unknown (after a start):
        # rewritten, then known. ~150 bytes an entity; Python's 64-bit hash, so a changed shape could pass for
        # the old one with a chance of about 2^-64 per update.
        self._shapes: dict[tuple[str, int], tuple[int, int]] = {}
        self._tenants = {row[0] for row in self._con.execute("SELECT name FROM tenants").fetchall()}
        self._reader = self._con.cursor()  # for `get`: its own connection, its own lock
        self._read_lock = threading.Lock()
        # Commits of this process, and the last that upserted or deleted each entity (see `unchanged_since`).
        self._commits = 0
        self._last_write: dict[tuple[str, str], int] = {}
        self._forgotten_before = 0
        # (tenant, attribute) pairs that hold a non-Point geometry: `near` on the others is decided in SQL alone.
        # Only ever grows (a conservative answer stays correct after the shapes are deleted).
        self._shaped: set[tuple[str, str]] = set(
            self._con.execute("SELECT DISTINCT tenant, attr FROM geo_index WHERE gtype <> 'Point'").fetchall()
        )
        # `near` over Point rows, in memory (geo_index.PointTable); every change of a geo row bumps the version.
        self._points: dict[tuple[str, str], PointTable] = {}
        self._geo_version = 0

    def _migrate(self, steps: list[str], before: str) -> None:
        """Run one schema migration in a transaction, if the file is at version `before`."""
        if self._scalar("SELECT value FROM meta WHERE key = 'schema_version'") != before:
            return  # another version: newer, or older or unknown (refused below with its number)
        with self._transaction() as con:
            for sql in steps:
                con.execute(sql)

    def _count_instances_once(self) -> None:
        """Give a file written before `entity_attrs` held a row per attribute instance its rows per instance, so
        attributeCount counts each datasetId (not a schema version: both kinds of rows answer every other
        reader alike). Only an entity with a datasetId can hold two instances of an attribute: those few are
        found by their text and get their rows again from their documents, once, in one transaction."""
        if self._scalar("SELECT value FROM meta WHERE key = ?", [ATTR_ROWS_KEY]) == ATTR_ROWS:
            return
        found = self._con.execute(
            "SELECT tenant, seq FROM entities WHERE contains(doc, '\"datasetId\"') ORDER BY tenant, seq"
        ).fetchall()
        with self._transaction() as con:
            for part in chunks(found, _RECOUNT_CHUNK):
                keys = pa.table({"tenant": [t for t, _ in part], "seq": pa.array([q for _, q in part], pa.int64())})
                docs = _keyed_docs(con, keys)
                _with_rows(con, "DELETE FROM entity_attrs WHERE (tenant, seq) IN (SELECT * FROM polis_rows)", keys)
                rows = [(t, q, name, kind) for t, q, doc in docs for name, kind in _attribute_kinds(orjson.loads(doc))]
                cols = _columns(rows, 4)
                names = ["tenant", "seq", "attr", "kind"]
                types = [pa.string(), pa.int64(), pa.string(), pa.string()]
                table = pa.table({n: pa.array(c, t) for n, c, t in zip(names, cols, types, strict=True)})
                _with_rows(con, "INSERT INTO entity_attrs SELECT * FROM polis_rows", table)
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [ATTR_ROWS_KEY, ATTR_ROWS])

    def _history_keys(self, tenant: str, eids: Iterable[str], fresh: dict[str, int]) -> list[int]:
        """The hkey of each entity id; ids without one get the next numbers, collected in `fresh` (stored in
        the caller's transaction, and taken into `_hkeys` only once it commits)."""
        keys = self._hkeys
        out = []
        for eid in eids:
            key = keys.get((tenant, eid))
            if key is None:
                key = fresh.get(eid)
                if key is None:
                    key = fresh[eid] = self._next_hkey + len(fresh)
            out.append(key)
        return out

    def _keep_history_keys(self, tenant: str, fresh: dict[str, int]) -> None:
        """After the commit that stored `fresh`."""
        for eid, key in fresh.items():
            self._hkeys[(tenant, eid)] = key
        self._next_hkey += len(fresh)

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        # fetchall, not fetchone: DuckDB 2 keeps a half-read result open, which blocks the next register().
        rows = self._con.execute(sql, list(params)).fetchall()
        return rows[0][0] if rows else None

    # -- tenants ---------------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def has_tenant(self, tenant: str) -> bool:
        return tenant in self._tenants

    def ensure_tenant(self, tenant: str) -> None:
        if tenant not in self._tenants:
            with self._lock:
                self._con.execute("INSERT OR IGNORE INTO tenants VALUES (?)", [tenant])
                self._tenants.add(tenant)

    # -- current state ---------------------------------------------------------------------------

    def get(self, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        """The current documents (as last committed) of these entities; runs beside a write's SQL, on its own
        connection, so a batch prepared outside the service's lock reads while another one commits."""
        with self._read_lock:
            seqs = [seq for seq in (self._directory.get((tenant, i)) for i in ids) if seq is not None]
            if not seqs:
                return {}
            if len(seqs) == 1:
                rows = self._reader.execute(
                    "SELECT id, doc FROM entities WHERE tenant = ? AND seq = ?", [tenant, seqs[0]]
                ).fetchall()
            else:
                rows = self._reader.execute(
                    "SELECT id, doc FROM entities WHERE tenant = ? AND seq IN (SELECT unnest(?::BIGINT[]))",
                    [tenant, seqs],
                ).fetchall()
        return {eid: orjson.loads(doc) for eid, doc in rows}

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection inside BEGIN ... COMMIT, rolled back on any exception (the caller holds the lock)."""
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @contextmanager
    def _registered(self, **tables: pa.Table) -> Iterator[None]:
        """Arrow tables visible to SQL by name for the duration of the block."""
        for name, table in tables.items():
            self._con.register(name, table)
        try:
            yield
        finally:
            for name in tables:
                self._con.unregister(name)

    def existing_ids(self, tenant: str, ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {i for i in ids if (tenant, i) in self._directory}

    def write(
        self,
        tenant: str,
        upserts: Sequence[Entity] = (),
        deletes: Sequence[str] = (),
        history: Sequence[HistoryInstance] = (),
        receipts: Sequence[tuple[str, str]] = (),
        history_columns: HistoryColumns | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        staged: Sequence[Staged] = (),
        index_columns: IndexColumns | None = None,
    ) -> None:
        with self._lock:  # prepared and applied as one step: nothing it read can change in between
            prepared = self.prepare(
                tenant, upserts, deletes, history, receipts, history_columns, dead_letters, index_columns=index_columns
            )
            self.apply(prepared, staged)

    def commit_number(self) -> int:
        """How many writes this store has committed: `unchanged_since` takes it as a snapshot."""
        return self._commits

    def unchanged_since(self, tenant: str, ids: Iterable[str], snapshot: int) -> bool:
        """Whether no write committed after `commit_number()` was `snapshot` touched any of these entities
        (False, to be safe, for a snapshot older than what `_last_write` still remembers)."""
        if snapshot < self._forgotten_before:
            return False
        last = self._last_write
        return all(last.get((tenant, i), 0) <= snapshot for i in ids)

    def prepare(
        self,
        tenant: str,
        upserts: Sequence[Entity] = (),
        deletes: Sequence[str] = (),
        history: Sequence[HistoryInstance] = (),
        receipts: Sequence[tuple[str, str]] = (),
        history_columns: HistoryColumns | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        *,
        index_columns: IndexColumns | None = None,
    ) -> PreparedWrite:
        """The rows of a write, built in Python without holding the store (`apply` stores them). A caller may
        prepare outside its own lock if it checks `unchanged_since` under the lock before `apply`: what was
        read for the preparation (sequence numbers, shape hashes) then still holds."""
        kept_columns = int((~np.isnan(history_columns.value)).sum()) if history_columns is not None else 0
        columns = history_columns if kept_columns else None  # NaN readings are skipped: maybe all of them
        prepared = PreparedWrite(tenant, upserts, deletes)
        if not (upserts or deletes or history or receipts or columns or dead_letters):
            return prepared
        touched = [e["id"] for e in upserts] + list(deletes)
        with self._numbers:  # not the store's lock: a write's SQL may be running on it
            # Keep each entity's creation order across replacements; new ones go to the end.
            old_seqs = self._seqs(tenant, touched)
            seqs = dict(old_seqs)
            for entity in upserts:
                if entity["id"] not in seqs:
                    seqs[entity["id"]] = self._next_seq
                    self._next_seq += 1
                    prepared.created.append(entity["id"])
            first_instance = self._next_instance
            self._next_instance += len(history) + kept_columns
            vers = {entity["id"]: self._next_ver + k for k, entity in enumerate(upserts)}
            self._next_ver += len(upserts)
        prepared.seqs, prepared.vers = seqs, vers
        tables, prepared.shapes, retyped, moved = self._index_tables(tenant, upserts, seqs, vers, index_columns)
        gone = list(old_seqs.values())
        tables["gone"] = _seq_table(gone)
        # Entities deleted, or whose types and attributes (geo rows) are rewritten, lose their old rows there.
        tables["gone_shape"] = _seq_table([q for q in gone if q not in prepared.shapes or q in retyped])
        tables["gone_geo"] = _seq_table([q for q in gone if q not in prepared.shapes or q in moved])
        if history:
            tables["history_rows"] = _history_table(history, first_instance)
        if columns is not None:
            tables["history_cols"] = _history_columns_table(columns, first_instance + len(history))
        if dead_letters:
            tables["letter_rows"] = _letters_table(dead_letters)
        if receipts:
            tables["receipt_rows"] = pa.table(
                {
                    "source": pa.array([r[0] for r in receipts], pa.string()),
                    "key": pa.array([r[1] for r in receipts], pa.string()),
                }
            )
        prepared.tables = tables
        return prepared

    def apply(self, prepared: PreparedWrite, staged: Sequence[Staged] = ()) -> None:
        """Store a prepared write in one transaction, with the rows of staged listeners."""
        tenant, upserts, deletes, tables = prepared.tenant, prepared.upserts, prepared.deletes, prepared.tables
        if not tables:
            return
        history, columns = "history_rows" in tables, "history_cols" in tables
        dead_letters, receipts = "letter_rows" in tables, "receipt_rows" in tables
        shapes, seqs = prepared.shapes, prepared.seqs
        with self._lock:
            if any((tenant, eid) in self._directory for eid in prepared.created):
                raise RuntimeError(  # a caller's bug: it skipped `unchanged_since`; refuse rather than store twice
                    "this write was prepared before another one created some of its entities; prepare it again"
                )
            self.ensure_tenant(tenant)
            # History keys are handed out here, under the lock, in commit order (never twice for one entity).
            fresh: dict[str, int] = {}
            if history:
                eids = tables["history_rows"].column("eid").to_pylist()
                keys = self._history_keys(tenant, eids, fresh)
                tables["history_rows"] = tables["history_rows"].append_column("hkey", pa.array(keys, pa.int64()))
            if columns:
                eids_array = tables["history_cols"].column("eid").to_numpy(zero_copy_only=False)
                run_keys = _run_keys(eids_array, lambda ids: self._history_keys(tenant, ids, fresh))
                tables["history_cols"] = tables["history_cols"].append_column("hkey", pa.array(run_keys, pa.int64()))
            if fresh:
                tables["fresh_keys"] = _keys_table(fresh)
            if upserts:
                tables["path_rows"] = self._unstored_paths(tables["index_rows"])
            # One entity replaced (a single write): its row is updated in place, one statement instead of two.
            in_place = _replaces_one(tables["entity_rows"], tables["gone"]) and not deletes
            with self._transaction() as con:  # SQL reads no empty table
                if in_place:
                    row = tables["entity_rows"].to_pylist()[0]
                    updated = con.execute(
                        "UPDATE entities SET id = ?, types = ?, doc = ?, ver = ? WHERE tenant = ? AND seq = ?",
                        [row["id"], row["types"], row["doc"], row["ver"], tenant, row["seq"]],
                    ).fetchone()
                    if updated is None or updated[0] != 1:  # a caller's bug, as above: roll back
                        raise RuntimeError("the row this write replaces is gone; prepare it again")
                else:
                    if tables["gone"].num_rows:
                        _delete_seqs(con, "entities", tables["gone"], tenant)
                    if upserts:
                        _with_rows(con, "INSERT INTO entities SELECT ?, * FROM polis_rows", tables["entity_rows"],
                                   tenant)
                for table, gone_rows in (  # attr_index: its rows of the old versions are compacted later
                    ("entity_types", "gone_shape"),
                    ("entity_attrs", "gone_shape"),
                    ("geo_index", "gone_geo"),
                ):
                    if tables[gone_rows].num_rows:
                        _delete_seqs(con, table, tables[gone_rows], tenant)
                if upserts:
                    for table, name in (
                        ("entity_types", "type_rows"), ("entity_attrs", "attr_rows"), ("attr_index", "index_rows")
                    ):
                        if tables[name].num_rows:
                            _with_rows(con, f"INSERT INTO {table} SELECT ?, * FROM polis_rows", tables[name], tenant)
                    if tables["path_rows"].num_rows:
                        _with_rows(con, "INSERT INTO attr_paths SELECT * FROM polis_rows", tables["path_rows"])
                    if tables["geo_rows"].num_rows:
                        geo = tables["geo_rows"]
                        for attr, gtype in zip(
                            geo.column("attr").to_pylist(), geo.column("gtype").to_pylist(), strict=True
                        ):
                            if gtype != "Point":
                                self._shaped.add((tenant, attr))
                        _with_rows(con, "INSERT INTO geo_index SELECT ?, * FROM polis_rows", geo, tenant)
                if tables["gone_geo"].num_rows or (upserts and tables["geo_rows"].num_rows):
                    self._geo_version += 1  # the in-memory point tables (geo_index.PointTable) are rebuilt
                for name in ("history_rows", "history_cols"):
                    if name in tables:
                        _with_rows(con, "INSERT INTO history SELECT ?, * FROM polis_rows", tables[name], tenant)
                if fresh:
                    keys_sql = "INSERT INTO history_keys SELECT ?, * FROM polis_rows"
                    _with_rows(con, keys_sql, tables["fresh_keys"], tenant)
                if dead_letters:
                    _with_rows(con, _INSERT_LETTERS, tables["letter_rows"])
                if receipts:
                    receipt_sql = "INSERT INTO receipts SELECT source, key, now()::TIMESTAMP FROM polis_rows"
                    _with_rows(con, receipt_sql, tables["receipt_rows"])
                for rows in staged:
                    rows.write(con)
            self._keep_history_keys(tenant, fresh)
            self._raise_newest([tables[n] for n in ("history_rows", "history_cols") if n in tables], fresh)
            if upserts:
                self._stored_paths.update(tables["path_rows"].column("id").to_pylist())
            for rows in staged:
                try:
                    rows.committed()
                except Exception:  # what is committed stays committed; the rows are picked up again at start
                    log.exception("after-commit step of %r failed", rows)
            for eid in deletes:
                seq = self._directory.pop((tenant, eid), None)
                if seq is not None:
                    self._shapes.pop((tenant, seq), None)
            for entity in upserts:
                self._directory[(tenant, entity["id"])] = seqs[entity["id"]]
            for seq, shape in shapes.items():
                self._shapes[(tenant, seq)] = shape
            self._commits += 1
            for eid in seqs:  # every entity upserted or deleted
                self._last_write[(tenant, eid)] = self._commits
            if len(self._last_write) > 2 * len(self._directory) + LAST_WRITES_KEPT:
                self._forget_old_writes()
            self._count_index_rows(prepared)

    def _count_index_rows(self, prepared: PreparedWrite) -> None:
        """After a commit: what it made stale in `attr_index`, and the compaction once enough is. A replaced
        entity leaves about as many stale rows as it gets new ones, a deleted one its share (an estimate:
        entities that shrink leave more; every compaction counts both again exactly)."""
        upserts, deletes = prepared.upserts, prepared.deletes
        added, created = prepared.tables["index_rows"].num_rows, len(prepared.created)
        per_upsert = added / max(len(upserts), 1)
        per_entity = self._index_live / max(len(self._directory), 1)
        self._index_stale += per_upsert * (len(upserts) - created) + len(deletes) * per_entity
        self._index_live = max(self._index_live + per_upsert * created - len(deletes) * per_entity, 0.0)
        if self._index_stale > max(COMPACT_SHARE * self._index_live, COMPACT_MIN_ROWS):
            try:
                self.compact_index()
            except Exception:  # the write is committed: report it so; stale rows only cost read time
                log.exception("compacting attr_index failed; it is tried again after the next write")

    def compact_index(self) -> int:
        """Delete the `attr_index` rows of versions that are no longer any entity's (replaced or deleted);
        how many. Run by `apply` once they pile up (see COMPACT_SHARE), in a transaction of its own."""
        with self._lock:
            with self._transaction() as con:
                gone = con.execute(
                    "DELETE FROM attr_index WHERE ver NOT IN (SELECT ver FROM entities WHERE ver IS NOT NULL)"
                ).fetchall()[0][0]
                unused = con.execute(
                    "DELETE FROM attr_paths WHERE id NOT IN (SELECT DISTINCT path FROM attr_index) RETURNING id"
                ).fetchall()
            self._forget_paths([row[0] for row in unused])
            self._index_live, self._index_stale = self._index_counts()
            return int(gone)

    def _forget_paths(self, unused: list[int]) -> None:
        """After `compact_index` deleted the names of numbers no row uses any more (keys of dict values come
        and go: without this every key ever written would stay, in the file and in memory): forget them, and
        the numbers handed out but never stored. A write prepared before then may hold such a number, so every
        snapshot taken so far counts as stale (`unchanged_since`): such a write is prepared again."""
        with self._numbers:
            forget = set(unused) | (self._path_names.keys() - self._stored_paths)
            if not forget:
                return
            for number in forget:
                del self._path_ids[self._path_names.pop(number)]
            self._stored_paths -= forget
            self._forgotten_before = max(self._forgotten_before, self._commits + 1)

    def _index_counts(self) -> tuple[float, float]:
        """(live, stale) `attr_index` rows, counted."""
        live, stale = self._con.execute(
            "SELECT count(*) FILTER (WHERE ver IN (SELECT ver FROM entities)), count(*) FROM attr_index"
        ).fetchall()[0]
        return float(live), float(stale - live)

    def _forget_old_writes(self) -> None:
        """Bound `_last_write` (deleted entities would stay in it for ever): drop all but the last
        LAST_WRITES_KEPT commits' entries; a snapshot from before them is then never taken as unchanged."""
        horizon = self._commits - LAST_WRITES_KEPT
        self._last_write = {key: n for key, n in self._last_write.items() if n >= horizon}
        self._forgotten_before = max(self._forgotten_before, horizon)

    def _seqs(self, tenant: str, ids: list[str]) -> dict[str, int]:
        found = ((i, self._directory.get((tenant, i))) for i in ids)
        return {i: seq for i, seq in found if seq is not None}

    def _index_tables(
        self,
        tenant: str,
        upserts: Sequence[Entity],
        seqs: dict[str, int],
        vers: dict[str, int],
        prepared: IndexColumns | None = None,
    ) -> tuple[dict[str, pa.Table], dict[int, tuple[int, int]], set[int], set[int]]:
        """The rows to insert; each upserted entity's shape hashes; and the entities whose type and attribute
        rows, and whose geo rows, are among them. Those rows are left out where they equal what this process
        last wrote for the entity (the caller keeps the stored ones). The `attr_index` rows (keyed by the new
        version) of entities in `prepared` are taken from it."""
        planned = {} if prepared is None else dict(zip(map(id, prepared.entities), prepared.shapes, strict=True))
        ids: list[str] = []
        types: list[list[str]] = []
        docs: list[bytes] = []
        type_rows: list[tuple[int, str]] = []
        attr_rows: list[tuple[int, str, str]] = []
        index_rows: list[tuple[Any, ...]] = []
        geo_rows: list[tuple[Any, ...]] = []
        shapes: dict[int, tuple[int, int]] = {}
        retyped: set[int] = set()
        moved: set[int] = set()
        for entity in upserts:
            eid = entity["id"]
            seq = seqs[eid]
            ids.append(eid)
            types.append(entity["type"])
            docs.append(orjson.dumps(entity))  # bytes: Arrow checks the UTF-8 itself, faster than decode()
            plan = planned.get(id(entity))
            if plan is None:
                attrs = _attribute_kinds(entity)
                where = geo_values(entity)
            else:  # what the batch plan knows already: the same for every entity it expanded (one instance each)
                attrs = plan.kinds
                where = [(name, entity[name][0]["value"]) for name in plan.geo]
            shape = shapes[seq] = (hash((tuple(entity["type"]), attrs)), _geo_hash(where))
            old = self._shapes.get((tenant, seq))  # None when unknown: everything is written
            if old is None or shape[0] != old[0]:
                retyped.add(seq)
                type_rows.extend((seq, t) for t in entity["type"])
                attr_rows.extend((seq, name, kind) for name, kind in attrs)
            if old is None or shape[1] != old[1]:
                moved.add(seq)
                geo_rows.extend(geo_index_rows(entity, seq, where))
            if plan is None:
                index_rows.extend(attr_index_rows(entity, vers[eid]))
        entity_table = pa.table(
            [
                pa.array(ids, pa.string()),
                pa.array(types, pa.list_(pa.string())),
                pa.array(docs, pa.string()),
                pa.array([seqs[i] for i in ids], pa.int64()),
                pa.array([vers[i] for i in ids], pa.int64()),
            ],
            schema=_ENTITY_SCHEMA,
        )
        type_cols = _columns(type_rows, 2)
        types_table = pa.table({"seq": pa.array(type_cols[0], pa.int64()), "type": pa.array(type_cols[1], pa.string())})
        attr_cols = _columns(attr_rows, 3)
        attrs_table = pa.table(
            {
                "seq": pa.array(attr_cols[0], pa.int64()),
                "attr": pa.array(attr_cols[1], pa.string()),
                "kind": pa.array(attr_cols[2], pa.string()),
            }
        )
        index_cols = _columns(index_rows, 5)
        index_table = pa.table(
            {
                "ver": pa.array(index_cols[0], pa.int64()),
                "path": pa.array(index_cols[1], pa.string()),
                "num": pa.array(index_cols[2], pa.float64()),
                "txt": pa.array(index_cols[3], pa.string()),
                "bool": pa.array(index_cols[4], pa.bool_()),
            }
        )
        if prepared is not None:
            index_table = pa.concat_tables([index_table, _prepared_index(prepared, upserts, vers)])
        index_table = index_table.set_column(1, "path", self._numbered(index_table.column("path")))
        geo_cols = _columns(geo_rows, 12)
        geo_types = (
            [pa.int64(), pa.string(), pa.string()] + [pa.float64()] * 6 + [pa.uint64(), pa.uint64(), pa.string()]
        )
        geo_names = ["seq", "attr", "gtype", "lon", "lat", "minx", "miny", "maxx", "maxy", "h3", "h3_r6", "geojson"]
        geo_table = pa.table({n: pa.array(c, t) for n, c, t in zip(geo_names, geo_cols, geo_types, strict=True)})
        return (
            {
                "entity_rows": entity_table,
                "type_rows": types_table,
                "attr_rows": attrs_table,
                "index_rows": index_table,
                "geo_rows": geo_table,
            },
            shapes,
            retyped,
            moved,
        )

    def _numbered(self, paths: pa.ChunkedArray) -> pa.Array:
        """The `attr_paths` number of each path (numbering new ones: see `_path_ids`)."""
        encoded = paths.combine_chunks().dictionary_encode()
        numbers = []
        with self._numbers:
            for name in encoded.dictionary.to_pylist():
                number = self._path_ids.get(name)
                if number is None:
                    number = self._path_ids[name] = self._next_path
                    self._path_names[number] = name
                    self._next_path += 1
                numbers.append(number)
        return pa.array(np.asarray(numbers, dtype=np.int32)[encoded.indices.to_numpy(zero_copy_only=False)])

    def _path_id(self, path: str) -> int:
        """For a query: the path's number, or -1 (no row has it) for a path never written."""
        return self._path_ids.get(path, -1)

    def _unstored_paths(self, index_rows: pa.Table) -> pa.Table:
        """The `attr_paths` rows a write must add: its paths that no committed write has stored (call under
        the lock; `apply` marks them stored once its transaction commits)."""
        used = index_rows.column("path").unique().to_pylist() if index_rows.num_rows else []
        new = sorted(number for number in used if number not in self._stored_paths)
        return pa.table(
            {
                "id": pa.array(new, pa.int32()),
                "path": pa.array([self._path_names[number] for number in new], pa.string()),
            }
        )

    # -- queries ---------------------------------------------------------------------------------

    def _where(self, tenant: str, query: EntityQuery) -> tuple[str, list[Any], bool]:
        """The WHERE clause, its parameters, and whether SQL alone decides the answer (else a geometry check)."""
        clauses = ["e.tenant = ?"]
        exact = True
        params: list[Any] = [tenant]
        _selector_sql(query.ids, query.id_pattern, query.types, clauses, params)
        if query.selectors:
            alternatives = []
            for selector in query.selectors:
                own: list[str] = []
                _selector_sql(selector.ids, selector.id_pattern, selector.types, own, params)
                alternatives.append("(" + " AND ".join(own) + ")")
            clauses.append("(" + " OR ".join(alternatives) + ")")
        if query.datasets is not None:
            clauses.append(f"{dataset_sql('e.id')} IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(query.datasets))
        if query.attrs:
            clauses.append(
                "e.seq IN (SELECT seq FROM entity_attrs WHERE tenant = ? AND attr IN (SELECT unnest(?::VARCHAR[])))"
            )
            params.extend([tenant, list(query.attrs)])
        if query.q is not None:
            sql, q_params = q_to_sql(query.q, tenant, self._path_id)
            clauses.append(sql)
            params.extend(q_params)
        if query.scope_q is not None:
            sql, scope_params = scope_q_to_sql(query.scope_q)
            clauses.append(sql)
            params.extend(scope_params)
        if query.geo is not None:
            sql, geo_params, exact = self._geo_sql(tenant, query)
            clauses.append(sql)
            params.extend(geo_params)
        return " AND ".join(clauses), params, exact

    def _geo_sql(self, tenant: str, query: EntityQuery) -> tuple[str, list[Any], bool]:
        assert query.geo is not None
        points_only = (tenant, query.geo.geoproperty) not in self._shaped
        if points_only and query.geo.georel == "near" and query.geo.max_distance is not None:
            table = self._point_table(tenant, query.geo.geoproperty)
            if table is not None:
                seqs = table.near(query.geo)
                return ("e.seq IN (SELECT unnest(?::BIGINT[]))", [seqs], True) if seqs else ("FALSE", [], True)
        return geo_to_sql(query.geo, tenant, points_only=points_only)

    def _point_table(self, tenant: str, attr: str) -> PointTable | None:
        """The Point rows of (tenant, attr) in memory, current with the last write; None (the SQL path) when
        geo rows keep changing: rebuilt at most once a second, so moving things cost no more than before."""
        with self._lock:  # held by `query` already: the version cannot change before its SQL runs
            table = self._points.get((tenant, attr))
            if table is not None and table.version == self._geo_version:
                return table
            now = time.monotonic()
            if table is not None and now - table.built_at < POINT_TABLE_REBUILD_S:
                return None
            cols = self._con.execute(
                "SELECT seq, lon, lat FROM geo_index WHERE tenant = ? AND attr = ? AND gtype = 'Point'", [tenant, attr]
            ).fetchnumpy()
            table = PointTable(
                np.asarray(cols["seq"], dtype=np.int64), np.asarray(cols["lon"], dtype=np.float64),
                np.asarray(cols["lat"], dtype=np.float64), self._geo_version, now,
            )
            self._points[(tenant, attr)] = table
            return table

    def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        with self._lock:  # the clause too: a `near` on the point table must see the state the SQL below reads
            where, params, exact = self._where(tenant, query)
            if not exact:
                # Geometries the SQL prefilter cannot decide: check each candidate exactly, then paginate.
                rows = self._con.execute(
                    f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.seq", params
                ).fetchall()
            else:
                count = None
                if query.count:
                    count = int(self._scalar(f"SELECT count(*) FROM entities e WHERE {where}", params))
                if query.limit == 0:
                    return QueryResult([], count)
                # Two steps: the page's seqs from the narrow columns and index tables, then only those documents.
                page = " LIMIT ? OFFSET ?" if query.limit is not None else " OFFSET ?"
                page_params = [query.limit, query.offset] if query.limit is not None else [query.offset]
                seqs = [
                    r[0]
                    for r in self._con.execute(
                        f"SELECT e.seq FROM entities e WHERE {where} ORDER BY e.seq{page}", params + page_params
                    ).fetchall()
                ]
                if not seqs:
                    return QueryResult([], count)
                docs = self._con.execute(
                    "SELECT doc FROM entities WHERE tenant = ? AND seq BETWEEN ? AND ? "
                    "AND seq IN (SELECT unnest(?::BIGINT[])) ORDER BY seq",
                    [tenant, seqs[0], seqs[-1], seqs],
                ).fetchall()
                return QueryResult([orjson.loads(r[0]) for r in docs], count)
        assert query.geo is not None
        matched = [doc for doc in (orjson.loads(r[0]) for r in rows) if _geo_match(query, doc)]
        end = None if query.limit is None else query.offset + query.limit
        return QueryResult(matched[query.offset : end], len(matched) if query.count else None)

    # -- history ---------------------------------------------------------------------------------

    def temporal(
        self, tenant: str, ids: Sequence[str], query: TemporalQuery
    ) -> dict[str, dict[str, TemporalAttribute]]:
        with self._lock:
            names = {key: eid for eid, key in ((eid, self._hkeys.get((tenant, eid))) for eid in ids) if key is not None}
        keys = list(names)
        if not keys:
            return {}
        # Plain equality where there is one value: it lets DuckDB skip row groups by their min/max.
        clauses = ["tenant = ?", "hkey = ?" if len(keys) == 1 else "hkey IN (SELECT unnest(?::BIGINT[]))"]
        params: list[Any] = [tenant, keys[0] if len(keys) == 1 else keys]
        if query.attrs:
            clauses.append("attr = ?" if len(query.attrs) == 1 else "attr IN (SELECT unnest(?::VARCHAR[]))")
            params.append(query.attrs[0] if len(query.attrs) == 1 else list(query.attrs))
        if query.timerel == "before" and query.time_at is not None:
            clauses.append("observed_at < ?")
            params.append(_naive_utc(query.time_at))
        elif query.timerel == "after" and query.time_at is not None:
            clauses.append("observed_at > ?")
            params.append(_naive_utc(query.time_at))
        elif query.timerel == "between" and query.time_at is not None and query.end_time_at is not None:
            clauses.append("observed_at >= ? AND observed_at < ?")
            params.extend([_naive_utc(query.time_at), _naive_utc(query.end_time_at)])
        if query.dataset_ids is not None:
            named = [d for d in query.dataset_ids if d is not None]
            either = ["dataset_id IN (SELECT unnest(?::VARCHAR[]))"] if named else []
            either += ["dataset_id IS NULL"] if None in query.dataset_ids else []
            clauses.append("(" + " OR ".join(either) + ")")
            params.extend([named] if named else [])
        newest = ""
        if query.last_n is not None:
            # One more than the cap tells us whether the answer was truncated (206 Partial Content).
            keep = min(query.max_instances + 1, query.last_n)
            newest = (
                "QUALIFY row_number() OVER (PARTITION BY hkey, attr ORDER BY observed_at DESC, instance_id DESC) "
                f"<= {int(keep)} "
            )
        # Columns, not rows: timestamps, numbers and instance ids are converted a column at a time, and each
        # (entity, attribute) run of plain readings is built by one comprehension (a week is 2,016 of them).
        result: dict[str, dict[str, TemporalAttribute]] = {}
        where = f"WHERE {' AND '.join(clauses)} {newest}"
        if len(keys) == 1 and len(query.attrs) == 1:
            # One entity's one attribute (a sensor's history): no key columns, and the rows, usually stored in
            # time order already, are put in order here; DuckDB's sort of them took a fifth of the call.
            with self._lock:
                cols = self._con.execute(
                    f"SELECT observed_at, instance_id, num, doc, unit_code, dataset_id FROM history {where}", params
                ).fetchnumpy()
            if len(cols["instance_id"]):
                result[names[keys[0]]] = {query.attrs[0]: _temporal_attribute(_in_time_order(cols))}
        else:
            sql = (
                "SELECT hkey, attr, observed_at, instance_id, num, doc, unit_code, dataset_id FROM history "
                f"{where}ORDER BY hkey, attr, observed_at, instance_id"
            )
            with self._lock:
                cols = self._con.execute(sql, params).fetchnumpy()
            for start, end in _runs(cols["hkey"], cols["attr"]):
                attrs = result.setdefault(names[int(cols["hkey"][start])], {})
                attrs[cols["attr"][start]] = _temporal_attribute({k: v[start:end] for k, v in cols.items()})
        # Over the cap: keep the oldest instances, or with lastN the newest (rows are oldest first here; with
        # lastN one more than the cap was read). The nearest one left out says when the cut fell (`cut_at`).
        cap = query.max_instances
        for attrs in result.values():
            for slot in attrs.values():
                if len(slot.instances) > cap:
                    dropped = cap if query.last_n is None else len(slot.instances) - cap - 1
                    slot.cut_at = datetime.fromisoformat(slot.instances[dropped]["observedAt"])
                    if query.last_n is None:
                        del slot.instances[cap:]
                    else:
                        del slot.instances[: len(slot.instances) - cap]
                    slot.truncated = True
        return result

    def delete_history(
        self,
        tenant: str,
        entity_id: str,
        attribute: str | None = None,
        instance_id: str | None = None,
        *,
        dataset_ids: tuple[str | None, ...] | None = None,
    ) -> int:
        clauses = ["tenant = ?", "eid = ?"]
        params: list[Any] = [tenant, entity_id]
        if attribute is not None:
            clauses.append("attr = ?")
            params.append(attribute)
        if dataset_ids is not None:
            if not dataset_ids:
                return 0
            named = [d for d in dataset_ids if d is not None]
            either = ["dataset_id IN (SELECT unnest(?::VARCHAR[]))"] if named else []
            either += ["dataset_id IS NULL"] if None in dataset_ids else []
            clauses.append("(" + " OR ".join(either) + ")")
            params.extend([named] if named else [])
        if instance_id is not None:
            number = _instance_number(instance_id)
            if number is None:
                return 0
            clauses.append("instance_id = ?")
            params.append(number)
        with self._lock:
            row = self._con.execute(f"DELETE FROM history WHERE {' AND '.join(clauses)} RETURNING 1", params)
            return len(row.fetchall())

    def history_instance(self, tenant: str, entity_id: str, attribute: str, instance_id: str) -> dict[str, Any] | None:
        """One stored temporal instance as the temporal API shows it (with observedAt and instanceId)."""
        number = _instance_number(instance_id)
        if number is None:
            return None
        with self._lock:
            cols = self._con.execute(
                "SELECT observed_at, instance_id, num, doc, unit_code, dataset_id FROM history "
                "WHERE tenant = ? AND eid = ? AND attr = ? AND instance_id = ?",
                [tenant, entity_id, attribute, number],
            ).fetchnumpy()
        if not len(cols["instance_id"]):
            return None
        return _temporal_attribute(cols).instances[0]

    def replace_instance(
        self,
        tenant: str,
        entity_id: str,
        attribute: str,
        instance_id: str,
        instance: dict[str, Any],
        observed_at: datetime,
    ) -> bool:
        """Overwrite one stored temporal instance (§5.6.14); False when it does not exist."""
        number = _instance_number(instance_id)
        if number is None:
            return False
        plain = _is_plain_number(instance)
        value = instance.get("value")
        num = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        with self._lock:
            self._newest.clear()  # the instance may move later than what is known (rare: an API call)
            # The body is the whole instance (§5.6.14): its datasetId too, which a plain number keeps only in
            # this column (its doc is NULL), and which the datasetId filters read.
            rows = self._con.execute(
                "UPDATE history SET observed_at = ?, num = ?, doc = ?, unit_code = ?, dataset_id = ? "
                "WHERE tenant = ? AND eid = ? AND attr = ? AND instance_id = ? RETURNING 1",
                [
                    _naive_utc(observed_at),
                    num,
                    None if plain else orjson.dumps(instance).decode(),
                    instance.get("unitCode"),
                    instance.get("datasetId"),
                    tenant,
                    entity_id,
                    attribute,
                    number,
                ],
            ).fetchall()
        return bool(rows)

    def bulk_history(self, tenant: str, columns: HistoryColumns) -> int:
        keep = ~np.isnan(columns.value)
        n = int(keep.sum())
        if n == 0:
            return 0
        with self._lock:
            self.ensure_tenant(tenant)
            with self._numbers:  # handed out now: a rollback leaves a gap, never a number twice
                first = self._next_instance
                self._next_instance += n
            eids = columns.entity_id[keep]
            fresh: dict[str, int] = {}
            eids_with_keys: set[str] = set()

            def keys_of(ids: list[str]) -> list[int]:
                eids_with_keys.update(i for i in ids if (tenant, i) in self._hkeys)
                return self._history_keys(tenant, ids, fresh)

            batch = pa.table(
                {
                    "eid": pa.array(eids, pa.string()),
                    "attr": pa.array(columns.attribute[keep], pa.string()),
                    "observed_at": pa.array(columns.observed_at[keep].astype("datetime64[us]")),
                    "instance_id": pa.array(np.arange(first, first + n, dtype=np.int64)),
                    "num": pa.array(columns.value[keep], pa.float64()),
                    "hkey": pa.array(_run_keys(eids, keys_of), pa.int64()),
                }
            )
            with self._registered(batch=batch, fresh_keys=_keys_table(fresh)), self._transaction() as con:
                select = (
                    "SELECT ?, b.eid, b.attr, NULL, b.observed_at, b.instance_id, b.num, NULL, ?, b.hkey FROM batch b"
                )
                # Only entities that had a key before this batch can hold any of its rows already.
                held = sorted({self._hkeys[(tenant, eid)] for eid in eids_with_keys})
                if held:
                    # Idempotent re-ingest: skip observations already held with the same value (a bare number,
                    # as `reading_value` compares them; MQTT ingest applies the same rule, `held_readings`).
                    # Another value at that instant is a correction, added beside it.
                    select += (
                        " ANTI JOIN (SELECT hkey, attr, observed_at, num FROM history WHERE tenant = ? "
                        "AND hkey IN (SELECT unnest(?::BIGINT[])) AND dataset_id IS NULL AND doc IS NULL) h "
                        "ON b.hkey = h.hkey AND b.attr = h.attr AND b.observed_at = h.observed_at AND b.num = h.num"
                    )
                    inserted = con.execute(f"INSERT INTO history {select}", [tenant, columns.unit_code, tenant, held])
                else:
                    inserted = con.execute(f"INSERT INTO history {select}", [tenant, columns.unit_code])
                added = int(inserted.fetchall()[0][0])  # DuckDB answers an INSERT with its row count
                if fresh:
                    con.execute("INSERT INTO history_keys SELECT ?, * FROM fresh_keys", [tenant])
            self._keep_history_keys(tenant, fresh)
            for hkey in held:  # read again when next asked (a bulk load is rare; its newest is one query)
                self._newest.pop(hkey, None)
        return added

    def newest_history(self, tenant: str, entity_ids: Sequence[str]) -> dict[str, datetime]:
        with self._lock:
            keys = {eid: self._hkeys.get((tenant, eid)) for eid in entity_ids}
            unknown = sorted({k for k in keys.values() if k is not None and k not in self._newest})
            if unknown:
                rows = self._con.execute(
                    "SELECT hkey, max(observed_at) FROM history WHERE tenant = ? "
                    "AND hkey IN (SELECT unnest(?::BIGINT[])) GROUP BY hkey",
                    [tenant, unknown],
                ).fetchall()
                self._newest.update(dict.fromkeys(unknown, _NEVER))  # a key whose instances were all deleted
                self._newest.update((hkey, at.replace(tzinfo=UTC)) for hkey, at in rows)
            return {eid: self._newest[k] for eid, k in keys.items() if k is not None}

    def _raise_newest(self, written: list[pa.Table], fresh: dict[str, int]) -> None:
        """After a commit that stored these history rows: keep `_newest` an upper bound (new entities' exact)."""
        if not written or not (self._newest or fresh):
            return
        hkeys = np.concatenate([t.column("hkey").to_numpy() for t in written])
        stamps = np.concatenate([t.column("observed_at").to_numpy().astype("datetime64[us]") for t in written])
        order = np.argsort(hkeys, kind="stable")
        hkeys, stamps = hkeys[order], stamps[order].view(np.int64)
        starts = np.flatnonzero(np.concatenate(([True], hkeys[1:] != hkeys[:-1])))
        latest = np.maximum.reduceat(stamps, starts)
        new = set(fresh.values())
        for hkey, micros in zip(hkeys[starts].tolist(), latest.tolist(), strict=True):
            known = self._newest.get(hkey)
            if known is not None or hkey in new:  # any other key is read when first asked
                at = _EPOCH + timedelta(microseconds=micros)
                self._newest[hkey] = at if known is None or known < at else known

    def held_readings(self, tenant: str, readings: Sequence[HistoryInstance]) -> set[int]:
        with self._lock:
            keyed = {k: self._hkeys.get((tenant, r.entity_id)) for k, r in enumerate(readings)}
            hkeys = {k: key for k, key in keyed.items() if key is not None}  # no key: no history, nothing held
            if not hkeys:
                return set()
            rows = list(hkeys)
            probe = _history_table([readings[k] for k in rows], 0).select(
                ["attr", "dataset_id", "observed_at", "num", "doc"]
            )
            probe = probe.append_column("hkey", pa.array(list(hkeys.values()), pa.int64()))
            probe = probe.append_column("row", pa.array(rows, pa.int64()))
            bounds = pc.min_max(probe.column("observed_at"))
            params = [tenant, sorted(set(hkeys.values())), bounds["min"].as_py(), bounds["max"].as_py()]
            with self._registered(probe=probe):
                # Bare numbers (no `doc` on either side) are the same reading when equal, settled here; a bare
                # number and a document never are; two documents are compared below, as `reading_value` does.
                found = self._con.execute(
                    "SELECT p.row, h.doc FROM probe p JOIN history h ON h.hkey = p.hkey "
                    "AND h.attr = p.attr AND h.observed_at = p.observed_at AND h.dataset_id IS NOT DISTINCT FROM "
                    "p.dataset_id WHERE h.tenant = ? AND h.hkey IN (SELECT unnest(?::BIGINT[])) "
                    "AND h.observed_at BETWEEN ? AND ? AND (h.doc IS NULL AND p.doc IS NULL AND h.num = p.num "
                    "OR h.doc IS NOT NULL AND p.doc IS NOT NULL)",
                    params,
                ).fetchall()
        held = set()
        for row, doc in found:  # a document's members in any order
            if doc is None or reading_value(orjson.loads(doc)) == reading_value(readings[row].instance):
                held.add(row)
        return held

    def history_count(self, tenant: str) -> int:
        with self._lock:
            return int(self._scalar("SELECT count(*) FROM history WHERE tenant = ?", [tenant]))

    def entity_count(self, tenant: str) -> int:
        with self._lock:
            return int(self._scalar("SELECT count(*) FROM entities WHERE tenant = ?", [tenant]))

    # -- ingest receipts and dead letters ---------------------------------------------------------

    def seen(self, source: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        with self._lock, self._registered(wanted=pa.table({"key": pa.array(list(keys), pa.string())})):
            rows = self._con.execute(
                "SELECT r.key FROM receipts r JOIN wanted w ON r.key = w.key WHERE r.source = ?", [source]
            ).fetchall()
        return {r[0] for r in rows}

    def prune_receipts(self, source: str, before: datetime) -> int:
        """Forget receipts recorded before `before` (older than any redelivery can be)."""
        with self._lock:
            return len(
                self._con.execute(
                    "DELETE FROM receipts WHERE source = ? AND received_at < ? RETURNING 1",
                    [source, _naive_utc(before)],
                ).fetchall()
            )

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        with self._lock:
            _with_rows(self._con, _INSERT_LETTERS, _letters_table(letters))

    def dead_letters(self, source: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        where, params = ("WHERE source = ?", [source]) if source is not None else ("", [])
        with self._lock:
            rows = self._con.execute(
                f"SELECT id, source, topic, payload, reason, received_at FROM dead_letters {where} "
                "ORDER BY id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [
            DeadLetter(
                source=src,
                topic=topic,
                payload=payload,
                reason=reason,
                received_at=received.replace(tzinfo=UTC),
                id=ident,
            )
            for ident, src, topic, payload, reason, received in rows
        ]

    def dead_letter_count(self, source: str | None = None) -> int:
        where, params = ("WHERE source = ?", [source]) if source is not None else ("", [])
        with self._lock:
            return int(self._scalar(f"SELECT count(*) FROM dead_letters {where}", params))

    # -- discovery -------------------------------------------------------------------------------

    def _in_datasets(self, alias: str, tenant: str, datasets: Sequence[str] | None) -> tuple[str, list[Any]]:
        """A clause keeping the rows of `alias` whose entity belongs to `datasets` (none when None)."""
        if datasets is None:
            return "", []
        return (
            f" AND {alias}.seq IN (SELECT seq FROM entities WHERE tenant = ? "
            f"AND {dataset_sql('id')} IN (SELECT unnest(?::VARCHAR[])))",
            [tenant, list(datasets)],
        )

    def types(self, tenant: str, datasets: Sequence[str] | None = None) -> list[TypeInfo]:
        scope, scope_params = self._in_datasets("t", tenant, datasets)
        with self._lock:
            counts = self._con.execute(
                f"SELECT type, count(*) FROM entity_types t WHERE tenant = ?{scope} GROUP BY type ORDER BY type",
                [tenant, *scope_params],
            ).fetchall()
            details = self._con.execute(
                "SELECT t.type, a.attr, list(DISTINCT a.kind) FROM entity_types t "
                f"JOIN entity_attrs a ON a.seq = t.seq AND a.tenant = t.tenant WHERE t.tenant = ?{scope} "
                "GROUP BY t.type, a.attr",
                [tenant, *scope_params],
            ).fetchall()
        attrs: dict[str, dict[str, set[str]]] = {}
        for type_, attr, kinds in details:
            attrs.setdefault(type_, {})[attr] = set(kinds)
        return [TypeInfo(t, int(n), attrs.get(t, {})) for t, n in counts]

    def attributes(self, tenant: str, datasets: Sequence[str] | None = None) -> list[AttributeInfo]:
        scope, scope_params = self._in_datasets("a", tenant, datasets)
        with self._lock:
            # One entity_attrs row per instance (`_attribute_kinds`), counted by its rowid: the join repeats
            # each row once per type of a multi-typed entity, and two instances of one kind are equal rows.
            rows = self._con.execute(
                "SELECT a.attr, count(DISTINCT a.seq), count(DISTINCT a.rowid), list(DISTINCT a.kind), "
                "list(DISTINCT t.type) FROM entity_attrs a "
                "JOIN entity_types t ON t.seq = a.seq AND t.tenant = a.tenant "
                f"WHERE a.tenant = ?{scope} GROUP BY a.attr ORDER BY a.attr",
                [tenant, *scope_params],
            ).fetchall()
        return [
            AttributeInfo(attr, int(entities), int(instances), set(kinds), set(types))
            for attr, entities, instances, kinds, types in rows
        ]

    # -- archive ---------------------------------------------------------------------------------

    def archive(self, destination: Path) -> list[Path]:
        """All history as Parquet under `destination`, partitioned `tenant=NAME/day=YYYY-MM-DD`; the default
        tenant's partition is `ARCHIVE_DEFAULT_TENANT`."""
        destination.mkdir(parents=True, exist_ok=True)
        target = str(destination).replace("'", "''")
        with self._lock:
            self._con.execute(
                f"COPY (SELECT CASE WHEN tenant = '' THEN '{ARCHIVE_DEFAULT_TENANT}' ELSE tenant END AS tenant, "
                "eid AS entity_id, attr AS attribute, dataset_id, observed_at, instance_id, num AS value, "
                "doc AS instance, unit_code, "
                "CAST(observed_at AS DATE) AS day FROM history ORDER BY tenant, eid, attr, observed_at) "
                f"TO '{target}' (FORMAT PARQUET, PARTITION_BY (tenant, day), OVERWRITE_OR_IGNORE true)"
            )
        return sorted(destination.rglob("*.parquet"))

    def connection(self) -> duckdb.DuckDBPyConnection:
        """Another connection to this database, for a feature's own tables (the subscriptions' outbox): its
        transactions are its own, so its writes never wait on this store's lock. Close it before `close()`."""
        with self._lock:
            return self._con.cursor()

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._con.close()


# The default tenant ('') as an archive partition: `tenant=.default`. No tenant name holds a '.' (polis.domain.tenant),
# so no tenant's partition can be taken for the default's (`_default` once merged a tenant of that name into it);
# and DuckDB writes '.' as is in partition names, where it percent-encodes most other signs.
ARCHIVE_DEFAULT_TENANT = ".default"


def _make_private(path: Path) -> None:
    """A new hub's database holds raw pseudonymous trips and 911 records: its owner's only, like admin.key
    (0600; a read-only open by the same user still works). DuckDB makes its other files (the `.wal`, which it
    deletes and creates again at every checkpoint, and `.tmp/` spill files) with the process umask, so what
    keeps them private is the directory: 0700 when it holds nothing else yet (made for this hub, by the store
    or by the platform a moment before). A directory already holding other things is left as its owner set
    it: /tmp or a home directory are not the hub's to close."""
    try:
        path.chmod(0o600)
        directory = path.parent
        if all(p.name in (path.name, f"{path.name}.wal") for p in directory.iterdir()):
            directory.chmod(0o700)
    except OSError as error:  # a file system without modes: the hub still works, say so
        log.warning("could not make the new hub %s private to its owner: %s", path, error)


def _selector_sql(
    ids: Sequence[str],
    id_pattern: str | None,
    types: TypeSelector | None,
    clauses: list[str],
    params: list[Any],
) -> None:
    """The clauses (appended, ANDed by the caller) of one entity selector: ids or id pattern, and types."""
    if ids:
        clauses.append("e.id IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(ids))
    elif id_pattern:
        clauses.append("regexp_matches(e.id, ?)")
        params.append(id_pattern)
    if types is not None:
        # On the entity's own `types` list, not a semi-join on `entity_types`: that join hashed every entity of
        # a common type on each query (a `near` or `q` over 100k entities of one type: ~2-4 ms of ~7-20).
        groups = []
        for group in types.any_of:
            if len(group) == 1:
                groups.append("list_contains(e.types, ?)")
                params.append(group[0])
            else:  # every type of the group
                groups.append("list_has_all(e.types, ?::VARCHAR[])")
                params.append(list(group))
        clauses.append("(" + " OR ".join(groups) + ")")


def _geo_match(query: EntityQuery, doc: Entity) -> bool:
    assert query.geo is not None
    return any(
        instance.get("type") == "GeoProperty" and geo_matches(query.geo, instance["value"])
        for instance in doc.get(query.geo.geoproperty, ())
    )


_INSERT_LETTERS = (
    "INSERT INTO dead_letters (source, topic, payload, reason, received_at) "
    "SELECT source, topic, payload, reason, received_at FROM polis_rows"
)


def _replaces_one(entity_rows: pa.Table, gone: pa.Table) -> bool:
    """Whether a write's entity rows are one entity that replaces its own old row (same seq)."""
    return entity_rows.num_rows == 1 and gone.num_rows == 1 and entity_rows.column("seq")[0] == gone.column("seq")[0]


def _delete_seqs(con: duckdb.DuckDBPyConnection, table: str, gone: pa.Table, tenant: str) -> None:
    """Delete the rows of `table` whose seq is in `gone`. One entity (a single write) by `seq = ?`: 0.7 ms on
    a 100k hub against 1.7 ms for the semi-join, which builds a hash table and probes every row; from a few
    seqs on the semi-join is as fast as a literal IN list, and faster for many."""
    if gone.num_rows == 1:
        con.execute(f"DELETE FROM {table} WHERE tenant = ? AND seq = ?", [tenant, gone.column("seq")[0].as_py()])
    else:
        _with_rows(con, f"DELETE FROM {table} WHERE tenant = ? AND seq IN (SELECT seq FROM polis_rows)", gone, tenant)


def _with_rows(con: duckdb.DuckDBPyConnection, sql: str, polis_rows: pa.Table, *params: Any) -> None:
    """Run `sql`, in which the name `polis_rows` stands for this Arrow table: DuckDB finds the caller's local
    variable by its name (a replacement scan), which costs ~0.5 ms less per table than registering a view and
    dropping it again (~4 tables in each write). A real table of that name would win over the variable, hence
    a name no table here has."""
    con.execute(sql, list(params))


def _prepared_index(prepared: IndexColumns, upserts: Sequence[Entity], vers: dict[str, int]) -> pa.Table:
    """`prepared` as `index_rows` (keyed by each entity's new version), without the rows of entities that are
    not (or no longer) among the upserts."""
    written = {id(e) for e in upserts}
    owner_ver = np.array([vers[e["id"]] if id(e) in written else -1 for e in prepared.entities], dtype=np.int64)
    ver = owner_ver[np.asarray(prepared.owner, dtype=np.int64)] if prepared.owner else np.zeros(0, np.int64)
    table = pa.table(
        {
            "ver": pa.array(ver),
            "path": pa.array(prepared.path, pa.string()),
            "num": pa.array(prepared.num, pa.float64()),
            "txt": pa.array(prepared.txt, pa.string()),
            "bool": pa.array(prepared.bool, pa.bool_()),
        }
    )
    keep = ver >= 0
    return table if keep.all() else table.filter(pa.array(keep))


def _history_table(history: Sequence[HistoryInstance], first: int) -> pa.Table:
    """History rows of instances (no `hkey` yet: `apply` adds it), instance ids from `first` on."""
    n = len(history)
    nums: list[float | None] = []
    docs: list[str | None] = []
    for item in history:
        instance = item.instance
        if _is_plain_number(instance):
            nums.append(float(instance["value"]))
            docs.append(None)
        else:
            value = instance.get("value")
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            nums.append(float(value) if numeric and value is not None else None)
            docs.append(orjson.dumps(instance).decode())
    # Timestamps go to Arrow as they are (tz-aware) and are converted to naive UTC there, in one pass.
    observed = pa.array([item.observed_at for item in history], pa.timestamp("us", tz="UTC"))
    return pa.table(
        [
            pa.array([item.entity_id for item in history], pa.string()),
            pa.array([item.attribute for item in history], pa.string()),
            pa.array([item.dataset_id for item in history], pa.string()),
            observed.cast(pa.timestamp("us")),
            pa.array(np.arange(first, first + n, dtype=np.int64)),
            pa.array(nums, pa.float64()),
            pa.array(docs, pa.string()),
            pa.array([item.instance.get("unitCode") for item in history], pa.string()),
        ],
        schema=_HISTORY_ROW_SCHEMA,
    )


def _history_columns_table(columns: HistoryColumns, first: int) -> pa.Table:
    """Numeric observations straight from columns (no dict per row; NaN skipped), like `_history_table`."""
    keep = ~np.isnan(columns.value)
    n = int(keep.sum())
    units = (
        pa.array(columns.unit_codes[keep], pa.string())
        if columns.unit_codes is not None
        else pa.array([columns.unit_code] * n, pa.string())
    )
    return pa.table(
        [
            pa.array(columns.entity_id[keep], pa.string()),
            pa.array(columns.attribute[keep], pa.string()),
            pa.nulls(n, pa.string()),
            pa.array(columns.observed_at[keep].astype("datetime64[us]")),
            pa.array(np.arange(first, first + n, dtype=np.int64)),
            pa.array(columns.value[keep], pa.float64()),
            pa.nulls(n, pa.string()),
            units,
        ],
        schema=_HISTORY_ROW_SCHEMA,
    )


def _geo_hash(values: list[tuple[str, Any]]) -> int:
    if not values:
        return 0
    try:
        return hash(orjson.dumps(values))
    except TypeError:  # a value JSON cannot hold (an int over 64 bits): its repr is as telling
        return hash(repr(values))


def _seq_table(seqs: list[int]) -> pa.Table:
    return pa.table({"seq": pa.array(seqs, pa.int64())})


def _keys_table(fresh: dict[str, int]) -> pa.Table:
    return pa.table({"eid": pa.array(list(fresh), pa.string()), "hkey": pa.array(list(fresh.values()), pa.int64())})


def _run_keys(eids: np.ndarray, keys_of: Callable[[list[str]], list[int]]) -> np.ndarray:
    """Per-row keys of an id column, looked up once per run of equal ids (bulk loads are entity-major:
    417,000 Los-loop rows are 207 lookups)."""
    n = len(eids)
    if n == 0:
        return np.empty(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], eids[1:] != eids[:-1])))
    keys = np.asarray(keys_of(eids[starts].tolist()), dtype=np.int64)
    return np.repeat(keys, np.diff(np.append(starts, n)))


def _letters_table(letters: Sequence[DeadLetter]) -> pa.Table:
    return pa.table(
        {
            "source": pa.array([d.source for d in letters], pa.string()),
            "topic": pa.array([d.topic for d in letters], pa.string()),
            "payload": pa.array([d.payload for d in letters], pa.string()),
            "reason": pa.array([d.reason for d in letters], pa.string()),
            "received_at": pa.array([_naive_utc(d.received_at) for d in letters], pa.timestamp("us")),
        }
    )


def _keyed_docs(con: duckdb.DuckDBPyConnection, polis_rows: pa.Table) -> list[tuple[str, int, str]]:
    """(tenant, seq, doc) of the entities whose (tenant, seq) `polis_rows` holds (found by name, see `_with_rows`)."""
    return con.execute(
        "SELECT e.tenant, e.seq, e.doc FROM entities e JOIN polis_rows k ON k.tenant = e.tenant AND k.seq = e.seq"
    ).fetchall()


def _attribute_kinds(entity: Entity) -> tuple[tuple[str, str], ...]:
    """The entity's `entity_attrs` rows: (attribute IRI, kind) of every instance, so an attribute with several
    datasetIds has a row for each (`attributes` counts them for attributeCount, §5.2.28) and a change in how
    many instances it has changes the shape hash, which rewrites the rows."""
    return tuple(
        [
            (name, instance.get("type", "Property"))
            for name, instances in entity.items()
            if name not in ENTITY_MEMBERS
            for instance in instances
        ]
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


def _number(value: float) -> int | float:
    """Integers went in as integers (counts); give them back without a trailing .0."""
    return int(value) if value.is_integer() and abs(value) <= EXACT_INT_LIMIT else value


def _runs(hkeys: np.ndarray, attrs: np.ndarray) -> list[tuple[int, int]]:
    """The [start, end) row ranges of each (entity, attribute) in rows sorted by them."""
    if len(hkeys) == 0:
        return []
    change = (hkeys[1:] != hkeys[:-1]) | (attrs[1:] != attrs[:-1])
    bounds = [0, *(np.flatnonzero(change) + 1).tolist(), len(hkeys)]
    return list(itertools.pairwise(bounds))


def _in_time_order(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One attribute's rows by observedAt, then instance id (the order of its instances)."""
    at, number = cols["observed_at"], cols["instance_id"]
    if ((at[1:] > at[:-1]) | ((at[1:] == at[:-1]) & (number[1:] > number[:-1]))).all():
        return cols
    order = np.lexsort((number, at))
    return {k: v[order] for k, v in cols.items()}


def _temporal_attribute(cols: dict[str, np.ndarray]) -> TemporalAttribute:
    """One attribute's instances, oldest first, from its history rows as columns."""
    stamps = _stamps(cols["observed_at"])
    instance_ids = [f"{INSTANCE_PREFIX}{n}" for n in cols["instance_id"].tolist()]
    docs = cols["doc"].tolist()
    units = cols["unit_code"].tolist()
    datasets = cols["dataset_id"].tolist()
    if all(d is None for d in docs) and all(d is None for d in datasets) and None not in units:
        # The common case, readings with a unit: one comprehension, ~3x faster than the general loop.
        values = _numbers(cols["num"])
        return TemporalAttribute(
            [
                {"type": "Property", "value": v, "unitCode": u, "observedAt": s, "instanceId": i}
                for v, u, s, i in zip(values, units, stamps, instance_ids, strict=True)
            ],
            plain=True,
        )
    slot = TemporalAttribute([], plain=True)
    nums = cols["num"].tolist()
    for num, doc, unit_code, dataset_id, observed_at, instance_id in zip(
        nums, docs, units, datasets, stamps, instance_ids, strict=True
    ):
        if doc is None:
            instance: dict[str, Any] = {"type": "Property", "value": _number(num)}
            if unit_code is not None:
                instance["unitCode"] = unit_code
            if dataset_id is not None:
                instance["datasetId"] = dataset_id
        else:
            instance = orjson.loads(doc)
            slot.plain = False
        instance["observedAt"] = observed_at
        instance["instanceId"] = instance_id
        slot.instances.append(instance)
    return slot


def _stamps(observed_at: np.ndarray) -> list[str]:
    """ISO 8601 UTC: whole seconds as 2012-03-01T08:00:00Z, others with their microseconds."""
    seconds = observed_at.astype("datetime64[s]")
    whole = seconds == observed_at
    if whole.all():
        return [f"{s}Z" for s in np.datetime_as_string(seconds, unit="s").tolist()]
    short = np.datetime_as_string(seconds, unit="s").tolist()
    micro = np.datetime_as_string(observed_at, unit="us").tolist()
    return [f"{s}Z" if w else f"{m}Z" for w, s, m in zip(whole.tolist(), short, micro, strict=True)]


def _numbers(num: np.ndarray) -> list[int | float]:
    """`_number` over a column of readings (none of them null)."""
    integral = (num == np.floor(num)) & (np.abs(num) <= EXACT_INT_LIMIT)
    if not integral.any():
        return list(num.tolist())
    values = num.astype(object)
    values[integral] = num[integral].astype(np.int64).astype(object)
    return list(values.tolist())


# The number of an instance id exactly as _temporal_attribute writes it (f"{INSTANCE_PREFIX}{n}", n a BIGINT
# from 1 up): ASCII digits, no sign, no leading zero, no blank or underscore. int() would also read "+1", "01",
# "0_1", " 1" or a non-ASCII digit, ids the broker never gave out that would alias a real instance.
_INSTANCE_NUMBER = re.compile(r"[1-9][0-9]{0,18}")
_MAX_INSTANCE_NUMBER = 2**63 - 1  # BIGINT: a larger number names no instance (and must not reach DuckDB)


def _instance_number(instance_id: str) -> int | None:
    """The history row number an instance id names; None (no instance) for any other spelling."""
    if not instance_id.startswith(INSTANCE_PREFIX):
        return None
    digits = instance_id[len(INSTANCE_PREFIX) :]
    if _INSTANCE_NUMBER.fullmatch(digits) is None:
        return None
    number = int(digits)
    return number if number <= _MAX_INSTANCE_NUMBER else None
