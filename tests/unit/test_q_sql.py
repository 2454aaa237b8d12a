"""`q` in SQL: the attr_index rows, the translation, and agreement with the Python evaluator in DuckDB."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.ngsi_ld.q import MEMBERS, And, Comparison, Exists, Or, Path, QExpr, Range, matches, parse_q
from polis.store.attr_index import ATTR_INDEX_DDL, attr_index_rows, encode_path
from polis.store.q_sql import q_to_sql

NS = "http://ex.org/"


def expand(term: str) -> str:
    return term if term.startswith(("http://", "https://", "urn:")) else NS + term


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE entities (tenant VARCHAR, id VARCHAR, ver BIGINT)")
    con.execute(ATTR_INDEX_DDL)
    return con


# Paths are stored as numbers (as a store's `attr_paths` gives them); one numbering for every test here.
PATH_IDS: dict[str, int] = {}


def path_id(path: str) -> int:
    return PATH_IDS.get(path, -1)


def load(con: duckdb.DuckDBPyConnection, tenant: str, entities: Iterable[dict[str, Any]]) -> None:
    entities = list(entities)
    insert(con, "entities", [(tenant, ent["id"], seq) for seq, ent in enumerate(entities)])
    rows = [row for seq, ent in enumerate(entities) for row in attr_index_rows(ent, seq)]
    numbered = [(tenant, ver, PATH_IDS.setdefault(path, len(PATH_IDS) + 1), *rest) for ver, path, *rest in rows]
    insert(con, "attr_index", numbered)


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple[Any, ...]]) -> None:
    # one statement: executemany costs a round trip per row
    if rows:
        tuples = ", ".join(["(" + ", ".join("?" * len(rows[0])) + ")"] * len(rows))
        con.execute(f"INSERT INTO {table} VALUES {tuples}", [v for row in rows for v in row])


def sql_ids(con: duckdb.DuckDBPyConnection, tenant: str, expr: QExpr) -> list[str]:
    where, params = q_to_sql(expr, tenant, path_id)
    assert where.count("?") == len(params)
    rows = con.execute(f"SELECT e.id FROM entities e WHERE e.tenant = ? AND ({where}) ORDER BY e.id", [tenant, *params])
    return [r[0] for r in rows.fetchall()]


def python_ids(entities: Iterable[dict[str, Any]], expr: QExpr) -> list[str]:
    return sorted(e["id"] for e in entities if matches(expr, e))


def prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


# -- rows ---------------------------------------------------------------------------------------------


def test_rows_hold_one_typed_value_each() -> None:
    ent = {
        "id": "urn:e:1",
        "type": [NS + "T"],
        "createdAt": "2020",
        "scope": ["/a"],
        NS + "n": [prop(2, observedAt="2021-01-01T00:00:00Z", **{NS + "acc": prop(0.5)})],
        NS + "l": [prop([1, "x", True, None])],
        NS + "d": [prop({"k": {"j": "deep"}})],
        NS + "r": [{"type": "Relationship", "object": "urn:r:1"}],
    }
    rows = {(path, num, txt, b) for _, path, num, txt, b in attr_index_rows(ent, 1)}
    assert rows == {
        (NS + "n", 2.0, None, None),
        (encode_path(Path(NS + "n", member="observedAt")), None, "2021-01-01T00:00:00Z", None),
        (encode_path(Path(NS + "n", (NS + "acc",))), 0.5, None, None),
        (NS + "l", 1.0, None, None),
        (NS + "l", None, "x", None),
        (NS + "l", None, None, True),
        (NS + "d", None, None, None),  # exists, compares with nothing
        (encode_path(Path(NS + "d", keys=("k",))), None, None, None),
        (encode_path(Path(NS + "d", keys=("k", "j"))), None, "deep", None),
        (NS + "r", None, "urn:r:1", None),
    }
    assert all(row[0] == 7 for row in attr_index_rows(ent, 7))


def test_paths_do_not_collide() -> None:
    paths = [
        Path("a"),
        Path("a", ("b",)),
        Path("a", member="observedAt"),
        Path("a", keys=("b",)),
        Path("a", ("b",), "observedAt"),
        Path("a", keys=("b", "c")),
        Path("a", ("b", "c")),
        Path("a", ("b",), keys=("c",)),
        Path("a", ("observedAt",)),
        Path("a", keys=("observedAt",)),
    ]
    assert len({encode_path(p) for p in paths}) == len(paths)


def test_ddl_is_idempotent() -> None:
    con = connect()
    con.execute(ATTR_INDEX_DDL)
    columns = [c[0] for c in con.execute("DESCRIBE attr_index").fetchall()]
    assert columns == ["tenant", "ver", "path", "num", "txt", "bool"]


# -- translation ----------------------------------------------------------------------------------

ENTITIES = [
    {"id": "urn:e:1", "type": [NS + "T"], NS + "speed": [prop(61.3, unitCode="KMH")], NS + "name": [prop("Holly")]},
    {"id": "urn:e:2", "type": [NS + "T"], NS + "speed": [prop(12)], NS + "congested": [prop(True)]},
    {
        "id": "urn:e:3",
        "type": [NS + "T"],
        NS + "speed": [prop(90), prop(5, datasetId="urn:ds:b")],
        NS + "address": [prop({"locality": "Melbourne"})],
    },
    {"id": "urn:e:4", "type": [NS + "T"], NS + "name": [prop("Wood")]},
]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("speed>50", ["urn:e:1", "urn:e:3"]),
        ("speed<10", ["urn:e:3"]),
        ("speed==12", ["urn:e:2"]),
        ("speed!=12", ["urn:e:1", "urn:e:3"]),
        ("speed==10..70", ["urn:e:1", "urn:e:2"]),
        ("speed==12,90", ["urn:e:2", "urn:e:3"]),
        ("speed", ["urn:e:1", "urn:e:2", "urn:e:3"]),
        ("!speed", ["urn:e:4"]),
        ('name~="^Hol"', ["urn:e:1"]),
        ('name!~="^Hol"', ["urn:e:4"]),
        ("congested==true|speed>80", ["urn:e:2", "urn:e:3"]),
        ("speed>1;!congested", ["urn:e:1", "urn:e:3"]),
        ('speed.unitCode=="KMH"', ["urn:e:1"]),
        ('address[locality]=="Melbourne";speed<10', ["urn:e:3"]),
        ("!name|speed>80", ["urn:e:2", "urn:e:3"]),
        ("(!name;!address)|congested", ["urn:e:2"]),
    ],
)
def test_translation_selects_the_right_entities(q: str, expected: list[str]) -> None:
    con = connect()
    load(con, "t", ENTITIES)
    expr = parse_q(q, expand)
    assert sql_ids(con, "t", expr) == expected
    assert python_ids(ENTITIES, expr) == expected


def test_tenants_are_isolated() -> None:
    con = connect()
    load(con, "t", ENTITIES)
    load(con, "u", [{"id": "urn:e:4", "type": [NS + "T"], NS + "speed": [prop(100)]}])
    # urn:e:4 has a speed of 100 in u and a name in t only
    assert sql_ids(con, "t", parse_q("speed>95", expand)) == []
    assert sql_ids(con, "t", parse_q("!speed", expand)) == ["urn:e:4"]
    assert sql_ids(con, "u", parse_q("speed>95", expand)) == ["urn:e:4"]
    assert sql_ids(con, "u", parse_q("!name;speed!=1", expand)) == ["urn:e:4"]
    assert sql_ids(con, "t", parse_q("!name;speed!=1", expand)) == ["urn:e:2", "urn:e:3"]


def test_values_q_cannot_reach_are_neither_compared_nor_confused() -> None:
    # NaN would be "greater than everything" in DuckDB; a key holding the index's separator would pose
    # as the key path k.m. Both must compare with nothing, in SQL as in Python.
    ents = [
        {"id": "urn:e:1", NS + "n": [prop(float("nan"))], NS + "i": [prop(float("inf"))]},
        {"id": "urn:e:2", NS + "d": [prop({"k\x1em": 1, "k.m": 2})]},
    ]
    con = connect()
    load(con, "t", ents)
    cases = [("n>0|n<0|n==0|i>0", []), ("n;i", ["urn:e:1"]), ("d[k.m]", []), ("d[k]", []), ("d", ["urn:e:2"])]
    for q, expected in cases:
        expr = parse_q(q, expand)
        assert sql_ids(con, "t", expr) == python_ids(ents, expr) == expected, q


@pytest.mark.parametrize(
    "pattern", ["^x$", "(?i)abc", "(?P<n>x)", "[+]+", "[]a]", "a{2,3}", "\\d\\w\\s\\.", "x(?:y)", "(?s:a.c)", "\\bb"]
)
def test_accepted_regexes_run_alike_in_duckdb(pattern: str) -> None:
    texts = ["x", "ABC", "aabc", "+", "]", "aaa", "1_ \t.", "xy", "a\nc", "b", "a b", "٣_ x.", "é"]
    ents = [{"id": f"urn:e:{i}", NS + "s": [prop(text)]} for i, text in enumerate(texts)]
    con = connect()
    load(con, "t", ents)
    expr = Comparison(Path(NS + "s"), "~=", pattern)
    assert parse_q('s~="' + pattern.replace("\\", "\\\\") + '"', expand) == expr
    assert sql_ids(con, "t", expr) == python_ids(ents, expr)


def test_single_condition_pushes_its_test_into_the_scan() -> None:
    sql, params = q_to_sql(parse_q("speed>50", expand), "t", {NS + "speed": 3}.__getitem__)
    assert sql == "e.ver IN (SELECT ver FROM attr_index WHERE tenant = ? AND path = ? AND num > ?)"
    assert params == ["t", 3, 50.0]


def test_a_path_never_written_matches_nothing_and_its_negation_everything() -> None:
    con = connect()
    load(con, "t", [{"id": "urn:x:1", NS + "speed": [prop(10)]}, {"id": "urn:x:2", NS + "speed": [prop(70)]}])
    assert sql_ids(con, "t", parse_q("unheardOf>5", expand)) == []
    assert sql_ids(con, "t", parse_q("unheardOf", expand)) == []
    assert sql_ids(con, "t", parse_q("!unheardOf", expand)) == ["urn:x:1", "urn:x:2"]
    assert sql_ids(con, "t", parse_q("unheardOf>5|speed>50", expand)) == ["urn:x:2"]


# -- Property: SQL over attr_index agrees with the Python evaluator ----------------------------------

ATTRS = ["a", "b", "c"]
SUBS = ["s"]
KEYS = ["k", "m"]
STRINGS = ["", "x", "xy", "X", "y", "é", "٣", "2021-01-01T00:00:00Z", "2022-06-01T12:00:00Z", "x y"]
NUMBERS: list[Any] = [0, 1, -1, 2.5, -0.0, 10, 2**53, 2**53 + 1, 1e300]
REGEXES = ["^x", "y$", "x.", "^$", "[xy]+", "\\d", "\\bx", "^20", "x|y", "(?i)^x", "^(x|y)y?$", "[^x]", "é"]
DATES = ["2021-01-01T00:00:00Z", "2022-06-01T12:00:00Z"]

scalars = st.one_of(st.sampled_from(STRINGS), st.sampled_from(NUMBERS), st.booleans())
weird: st.SearchStrategy[Any] = st.sampled_from(
    [None, float("nan"), 10**400, [], {}, {"@type": "DateTime", "@value": DATES[0]}]
)
leaf_values = st.one_of(scalars, scalars, weird)
dict_keys = st.sampled_from([*KEYS, "k.m", "k\x1em"])  # unreachable keys must not collide with reachable ones
values = st.one_of(
    leaf_values,
    st.lists(leaf_values, max_size=3),
    st.dictionaries(
        dict_keys,
        st.one_of(leaf_values, st.lists(scalars, max_size=2), st.dictionaries(dict_keys, leaf_values)),
        max_size=2,
    ),
)
KIND_MEMBERS = [
    ("Property", "value"),
    ("GeoProperty", "value"),
    ("Relationship", "object"),
    ("LanguageProperty", "languageMap"),
    ("VocabProperty", "vocab"),
    ("JsonProperty", "json"),
    ("ListProperty", "valueList"),
    ("ListRelationship", "objectList"),
]


@st.composite
def instances(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kind, member = draw(st.sampled_from(KIND_MEMBERS))
    if kind == "LanguageProperty":
        texts = st.one_of(scalars, st.lists(scalars))
        value: Any = draw(st.dictionaries(st.sampled_from(["en", "k"]), texts, max_size=2))
    elif kind == "ListRelationship":
        objects = st.sampled_from(STRINGS)
        value = draw(st.lists(st.one_of(objects, objects.map(lambda o: {"object": o}))))
    else:
        value = draw(values)
    inst: dict[str, Any] = {"type": kind, member: value}
    for name in draw(st.lists(st.sampled_from(sorted(MEMBERS)), max_size=2, unique=True)):
        inst[name] = draw(st.sampled_from([*DATES, "KMH", "urn:ds:1"]))
    if depth == 0 and draw(st.booleans()):
        inst[NS + "s"] = draw(instances(depth=1))
    return inst


@st.composite
def entity_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        ent: dict[str, Any] = {"id": f"urn:e:{i}", "type": [NS + "T"], "createdAt": DATES[0]}
        for attr in draw(st.lists(st.sampled_from(ATTRS), max_size=3, unique=True)):
            ent[NS + attr] = draw(st.lists(instances(), min_size=1, max_size=2))
        out.append(ent)
    return out


@st.composite
def paths(draw: st.DrawFn) -> Path:
    attribute = NS + draw(st.sampled_from([*ATTRS, "z"]))
    sub = tuple(NS + s for s in draw(st.lists(st.sampled_from(SUBS), max_size=1)))
    member = draw(st.sampled_from([None, None, None, *sorted(MEMBERS)]))
    keys = () if member else tuple(draw(st.lists(st.sampled_from(KEYS), max_size=2)))
    return Path(attribute, sub, member, keys)


ordered_values = st.one_of(st.sampled_from(STRINGS), st.sampled_from(NUMBERS))
equality_values = st.one_of(
    scalars,
    st.lists(scalars, min_size=2, max_size=3).map(tuple),
    st.tuples(st.sampled_from(NUMBERS), st.sampled_from(NUMBERS)).map(lambda t: Range(*sorted(t))),
    st.tuples(st.sampled_from(STRINGS), st.sampled_from(STRINGS)).map(lambda t: Range(*t)),
)
conditions = st.one_of(
    st.builds(Comparison, paths(), st.sampled_from([">", ">=", "<", "<="]), ordered_values),
    st.builds(Comparison, paths(), st.sampled_from(["==", "!="]), equality_values),
    st.builds(Comparison, paths(), st.sampled_from(["~=", "!~="]), st.sampled_from(REGEXES)),
    st.builds(Exists, paths(), st.booleans()),
)
expressions: st.SearchStrategy[QExpr] = st.recursive(
    conditions,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=6,
)


_shared: list[duckdb.DuckDBPyConnection] = []
_examples = itertools.count()


def shared_connection() -> duckdb.DuckDBPyConnection:
    # One database for all examples (a connection costs more than an example); each example gets fresh
    # tenants, and the older tenants' rows, with the same entity ids, test isolation for free.
    if not _shared:
        _shared.append(connect())
    return _shared[0]


@settings(deadline=None, max_examples=150)
@given(entity_sets(), entity_sets(), st.lists(expressions, min_size=1, max_size=4))
def test_sql_and_python_agree(mine: list[dict[str, Any]], theirs: list[dict[str, Any]], queries: list[QExpr]) -> None:
    con = shared_connection()
    n = next(_examples)
    load(con, f"t{n}", mine)
    load(con, f"u{n}", theirs)  # same ids, other tenant: must not leak into t's answers
    for expr in queries:
        assert sql_ids(con, f"t{n}", expr) == python_ids(mine, expr), expr
        assert sql_ids(con, f"u{n}", expr) == python_ids(theirs, expr), expr
