"""The `attr_index` table: every value `q` can compare, one row per (entity, path, value).

Path encoding (`encode_path` builds it for a q `Path`, `attr_index_rows` for an entity; both must agree):

    attrIRI                         the attribute's value(s)
    attrIRI \\x1f subIRI              a sub-attribute's value(s) (repeat for deeper sub-attributes)
    ... \\x1f @observedAt             a member: observedAt, createdAt, modifiedAt, unitCode, datasetId
    ... \\x1e k1 \\x1e k2              keys inside a compound value: value["k1"]["k2"]

The separators are control characters, which neither IRIs nor q keys can hold, so no two paths collide
(names or dict keys that contain them are left out of the index; q cannot name them anyway).

Each row holds one compared value, typed: `num` (finite numbers as doubles), `txt` (strings) or `bool`.
A path that exists but has nothing comparable (a dict, null, an empty list) still gets one all-NULL row,
so "attribute exists" is a plain lookup on `path`. What counts as a compared value is defined once in
polis.ngsi_ld.q (`compared_values`, `plain_values`, `classify`) and shared with the Python evaluator.
Dict values are indexed MAX_KEYS keys deep, as deep as q lets a key path go.

The table stores each encoded path as a small integer, numbered in `attr_paths` (a store keeps the
numbering in memory and turns a q path into its number before the query; a path never written has none
and matches no row). No secondary index is declared: a `path = ?` filter is a scan of integers (a numeric
q over 100k entities, about 2.2M rows: ~25 ms p95 on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polis.domain.entity import ENTITY_MEMBERS, RESERVED_ATTRIBUTE_MEMBERS, Entity, Instance
from polis.ngsi_ld.q import MAX_KEYS, MEMBERS, Path, classify, compared_values, instances, plain_values, value_member

# `ver` is the entity version the row was written for (`entities.ver`): a row whose version is no longer
# an entity's current one is stale, matches nothing, and is compacted away later (see DuckDBStore.apply).
# `path` is the number `attr_paths` gives the encoded path: ~15 rows an entity each carrying a ~60-character
# IRI made every write's log ~40 % larger (and its insert and commit ~5 ms slower per 1,000 entities) than
# an integer does, and an integer compares faster in a `q` scan.
ATTR_INDEX_DDL = """CREATE TABLE IF NOT EXISTS attr_index (
    tenant VARCHAR NOT NULL, ver BIGINT NOT NULL, path INTEGER NOT NULL,
    num DOUBLE, txt VARCHAR, "bool" BOOLEAN)"""
ATTR_PATHS_DDL = "CREATE TABLE IF NOT EXISTS attr_paths (id INTEGER PRIMARY KEY, path VARCHAR NOT NULL UNIQUE)"

SUB_SEP = "\x1f"
MEMBER_SEP = "\x1f@"
KEY_SEP = "\x1e"

IndexRow = tuple[int, str, float | None, str | None, bool | None]


@dataclass(frozen=True, slots=True)
class PlanShape:
    """What a batch plan knows of each entity it expands, so a store need not read it from the document:
    its attributes' (IRI, kind) in document order, and those that are GeoProperties (one instance each)."""

    kinds: tuple[tuple[str, str], ...]
    geo: tuple[str, ...]


@dataclass(slots=True)
class IndexColumns:
    """`attr_index` rows of some entities built column-wise (by polis.ngsi_ld.batch_plan): row k belongs to
    `entities[owner[k]]`; numbers are floats, as the store's column holds them. A store uses them for
    those very entity objects (matched by identity, so a document replaced or rebuilt since is indexed
    afresh), which must not have changed since: only the entity-level createdAt/modifiedAt may, as they are
    not indexed. `shapes[k]` is what the plan knows of `entities[k]` (see `PlanShape`)."""

    entities: list[Entity]
    shapes: list[PlanShape] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    num: list[float | None] = field(default_factory=list)
    txt: list[str | None] = field(default_factory=list)
    bool: list[bool | None] = field(default_factory=list)

    def add(
        self,
        owners: list[int],
        path: str,
        *,
        nums: list[Any] | None = None,
        txts: list[Any] | None = None,
        bools: list[Any] | None = None,
    ) -> None:
        """One row per owner under `path`, its value from whichever column is given (none: an all-NULL row)."""
        n = len(owners)
        self.owner.extend(owners)
        self.path.extend([path] * n)
        self.num.extend(nums if nums is not None else [None] * n)
        self.txt.extend(txts if txts is not None else [None] * n)
        self.bool.extend(bools if bools is not None else [None] * n)

    def extend(self, other: IndexColumns) -> IndexColumns:
        shift = len(self.entities)
        self.entities.extend(other.entities)
        self.shapes.extend(other.shapes)
        self.owner.extend(k + shift for k in other.owner)
        self.path.extend(other.path)
        self.num.extend(other.num)
        self.txt.extend(other.txt)
        self.bool.extend(other.bool)
        return self

    def rows(self) -> list[IndexRow]:
        """As `attr_index_rows` gives them, with the owner's position for its key."""
        return [
            (k, p, None if n is None else float(n), t, b)
            for k, p, n, t, b in zip(self.owner, self.path, self.num, self.txt, self.bool, strict=True)
        ]


def encode_path(path: Path) -> str:
    """The `attr_index.path` under which a q path's values are stored."""
    out = path.attribute
    for sub in path.sub:
        out += SUB_SEP + sub
    if path.member is not None:
        out += MEMBER_SEP + path.member
    for key in path.keys:
        out += KEY_SEP + key
    return out


def attr_index_rows(entity: Entity, key: int) -> list[IndexRow]:
    """(key, path, num, txt, bool) rows for every comparable value of the entity; `key` is the integer
    version the store gives this write of the entity (`ver`; joins on integers are several times faster
    than on id strings); the store adds the tenant."""
    eid = key
    rows: list[IndexRow] = []
    for name, raw in entity.items():
        if name in ENTITY_MEMBERS or name.startswith("@") or _unsafe(name):
            continue
        for node in instances(raw):
            _node_rows(eid, name, node, rows)
    return rows


def _unsafe(name: str) -> bool:
    return SUB_SEP in name or KEY_SEP in name


def _node_rows(eid: int, base: str, node: Instance, rows: list[IndexRow]) -> None:
    """Rows of one attribute (or sub-attribute) instance: its values, keys, members and sub-attributes."""
    member = value_member(node)
    raw = node.get(member)
    if member in _MULTI_MEMBERS or not _scalar_row(eid, base, raw, rows):
        _value_rows(eid, base, compared_values(node), rows)
        if isinstance(raw, dict):
            _key_rows(eid, base, raw, 1, rows)
    for key, value in node.items():
        if key in RESERVED_ATTRIBUTE_MEMBERS:
            if key in MEMBERS and value is not None and not _scalar_row(eid, base + MEMBER_SEP + key, value, rows):
                _value_rows(eid, base + MEMBER_SEP + key, plain_values(value), rows)
        elif not key.startswith("@") and not _unsafe(key):
            for sub in instances(value):
                _node_rows(eid, base + SUB_SEP + key, sub, rows)


# Members whose plain string is not itself the compared value (compared_values says what is).
_MULTI_MEMBERS = frozenset({"languageMap", "objectList"})
_FINITE_INT = 2**1000  # any int below this converts to a finite double


def _scalar_row(eid: int, path: str, value: Any, rows: list[IndexRow]) -> bool:
    """The common case, a plain string or number, without the general machinery: same rows as
    `_value_rows(.., plain_values(value), ..)` would add. False when the value needs the general path."""
    kind = type(value)
    if kind is str:
        rows.append((eid, path, None, value, None))
    elif kind is float and value - value == 0.0:  # finite: inf - inf and nan - nan are nan
        rows.append((eid, path, value, None, None))
    elif kind is int and -_FINITE_INT < value < _FINITE_INT:
        rows.append((eid, path, float(value), None, None))
    else:
        return False
    return True


def _key_rows(eid: int, base: str, compound: dict[str, Any], depth: int, rows: list[IndexRow]) -> None:
    for key, value in compound.items():
        if not isinstance(key, str) or _unsafe(key):
            continue
        path = base + KEY_SEP + key
        _value_rows(eid, path, plain_values(value), rows)
        if depth < MAX_KEYS and isinstance(value, dict):
            _key_rows(eid, path, value, depth + 1, rows)


def _value_rows(eid: int, path: str, values: list[Any], rows: list[IndexRow]) -> None:
    before = len(rows)
    append = rows.append
    for value in values:
        typed = classify(value)
        if typed is None:
            continue
        kind, v = typed
        if kind == "n":
            append((eid, path, v, None, None))  # type: ignore[arg-type]
        elif kind == "s":
            append((eid, path, None, v, None))  # type: ignore[arg-type]
        else:
            append((eid, path, None, None, v))  # type: ignore[arg-type]
    if len(rows) == before:
        append((eid, path, None, None, None))
