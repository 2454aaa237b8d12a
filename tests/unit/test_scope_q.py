"""The scope query language (§4.19): parsing, and matching as the store's SQL does it."""

from __future__ import annotations

import duckdb
import orjson
import pytest

from polis.domain.errors import BadRequestData
from polis.ngsi_ld.scope_q import matches, parse_scope_q
from polis.store.q_sql import scope_q_to_sql

SCOPES = {
    "madrid": ["/Madrid"],
    "gardens": ["/Madrid/Gardens"],
    "east": ["/Madrid/Gardens/East"],
    "parks": ["/Madrid/Centro/Parks", "/Company/Parks"],
    "paris": ["/Paris"],
    "none": [],
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("/Madrid", {"madrid"}),
        ("/Madrid/#", {"madrid", "gardens", "east", "parks"}),
        ("/Madrid/+", {"gardens"}),
        ("/Madrid/+/Parks", {"parks"}),
        ("/#", {"madrid", "gardens", "east", "parks", "paris"}),
        ("/Paris,/Madrid", {"paris", "madrid"}),
        ("/Paris|/Madrid/Gardens", {"paris", "gardens"}),
        ("/Madrid/+/Parks;/Company/#", {"parks"}),
        ("/Madrid/+/Parks;/Paris", set()),
        ("(/Paris , /Madrid/#);/Madrid/+/#", {"gardens", "east", "parks"}),
        ("/Mad", set()),  # levels are whole: no prefix matching
        ("/Madrid.x", set()),  # a dot is a literal, not "any character"
    ],
)
def test_a_scope_query_selects_the_entities_whose_scopes_match(query: str, expected: set[str]) -> None:
    expr = parse_scope_q(query)
    assert {name for name, scopes in SCOPES.items() if matches(expr, scopes)} == expected
    # the store's SQL agrees with the Python matcher on every entity
    sql, params = scope_q_to_sql(expr)
    con = duckdb.connect()
    con.execute("CREATE TABLE e (name VARCHAR, doc VARCHAR)")
    con.executemany(
        "INSERT INTO e VALUES (?, ?)",
        [[name, orjson.dumps({"id": name, **({"scope": s} if s else {})}).decode()] for name, s in SCOPES.items()],
    )
    assert {r[0] for r in con.execute(f"SELECT name FROM e WHERE {sql}", params).fetchall()} == expected


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("(", "scope path or '('"),
        ("/a;(/b", "unclosed"),
        ("/a)", "unexpected ')'"),
        ("Madrid", "must start with '/'"),
        ("/a/#/b", "'#' may only be the last level"),
        ("/a//b", "level '' is not a scope level"),
        ("/a;", "ends where"),
        (",/a", "',' where"),
        ("   ", "empty"),
        ("(" * 40 + "/a" + ")" * 40, "more than 32 deep"),
        ("/a" * 1_500, "longer than 2000"),
    ],
)
def test_a_malformed_scope_query_is_refused_with_what_is_wrong(query: str, fragment: str) -> None:
    with pytest.raises(BadRequestData, match="scopeQ") as refused:
        parse_scope_q(query)
    assert fragment in str(refused.value)
