"""Translate a `q` expression (polis.ngsi_ld.q) into a DuckDB predicate over `attr_index`.

The predicate is about the entities table aliased `e` and uses only uncorrelated `e.ver [NOT] IN (...)`
sub-queries, which DuckDB runs as hash semi/anti joins (`ver`, the entity's current version: index rows of
an earlier version, not yet compacted away, match no entity, so they count for nothing either way):

- one condition `path op value` or `[!]path`: the rows of that path that pass the test, so the filter is
  pushed into the scan (the common case, and the one the 50 ms / 100k entities target is about);
- anything else: ONE scan of the rows of every path involved, grouped by entity, with one flag per
  condition (`bool_or(path = ? AND test)`) combined in HAVING. N separate sub-queries would cost N scans
  and N joins; this costs one of each however many conditions there are.

The semantics are those of `polis.ngsi_ld.q.matches`, condition for condition: a comparison holds when
some row of its path passes the test (any instance, any list element); `!=` and `!~=` when the path has
a row and none passes the positive test. Numbers test `num` (doubles), strings `txt`, booleans `"bool"`;
a row of another type never passes since its column for that type is NULL. `~=` is
`regexp_matches(txt, ?)` (RE2, a partial match like `re.search`).
"""

from __future__ import annotations

from collections.abc import Callable

from polis.ngsi_ld.q import NEGATED, And, Comparison, Exists, Or, QExpr, Range, Scalar
from polis.ngsi_ld.scope_q import ScopeAll, ScopeExpr, ScopeTerm
from polis.store.attr_index import encode_path

# The number `attr_paths` gives an encoded path (a negative one for a path never written: no row has it).
PathIds = Callable[[str], int]

_ROWS = "SELECT ver FROM attr_index WHERE tenant = ? AND path = ?"
_SQL_OPS = {"==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def q_to_sql(expr: QExpr, tenant: str, path_id: PathIds) -> tuple[str, list[object]]:
    """A boolean SQL predicate about `e` (columns e.tenant, e.ver) and its `?` parameters, in order."""
    if isinstance(expr, Exists):
        return f"e.ver {'NOT IN' if expr.negated else 'IN'} ({_ROWS})", [tenant, path_id(encode_path(expr.path))]
    if isinstance(expr, Comparison) and expr.op not in NEGATED:
        test, test_params = _test(expr)
        return f"e.ver IN ({_ROWS} AND {test})", [tenant, path_id(encode_path(expr.path)), *test_params]
    return _grouped(expr, tenant, path_id)


def _grouped(expr: QExpr, tenant: str, path_id: PathIds) -> tuple[str, list[object]]:
    """Several conditions in one scan: group the rows of the paths involved by entity, then decide.

    Each condition becomes a per-entity flag (`bool_or` over its rows); an entity without any of these
    rows is decided by what the expression says when every flag is false, hence IN or NOT IN.
    """
    having_params: list[object] = []
    having = _having(expr, having_params, path_id)
    paths = sorted({path_id(path) for path in _paths(expr)})
    scan = f"SELECT ver FROM attr_index WHERE tenant = ? AND path IN ({', '.join('?' * len(paths))}) GROUP BY ver"
    params: list[object] = [tenant, *paths]
    if _holds_without_rows(expr):
        return f"e.ver NOT IN ({scan} HAVING NOT {having})", params + having_params
    return f"e.ver IN ({scan} HAVING {having})", params + having_params


def _having(expr: QExpr, params: list[object], path_id: PathIds) -> str:
    if isinstance(expr, (And, Or)):
        joiner = " AND " if isinstance(expr, And) else " OR "
        parts = [_having(part, params, path_id) for part in expr.parts]  # in order: params follow the text
        return "(" + joiner.join(parts) + ")"
    path = path_id(encode_path(expr.path))
    if isinstance(expr, Exists):
        params.append(path)
        return f"{'NOT ' if expr.negated else ''}{_ANY_ROW}"
    test, test_params = _test(expr)
    if expr.op in NEGATED:
        params.extend((path, path, *test_params))
        return f"({_ANY_ROW} AND NOT coalesce(bool_or(path = ? AND {test}), false))"
    params.extend((path, *test_params))
    return f"coalesce(bool_or(path = ? AND {test}), false)"


_ANY_ROW = "bool_or(path = ?)"  # never NULL: path is NOT NULL


def _paths(expr: QExpr) -> set[str]:
    if isinstance(expr, (And, Or)):
        return set().union(*(_paths(part) for part in expr.parts))
    return {encode_path(expr.path)}


def _holds_without_rows(expr: QExpr) -> bool:
    """The expression's value for an entity that has none of the paths it mentions."""
    if isinstance(expr, And):
        return all(_holds_without_rows(part) for part in expr.parts)
    if isinstance(expr, Or):
        return any(_holds_without_rows(part) for part in expr.parts)
    return isinstance(expr, Exists) and expr.negated


def _test(cmp: Comparison) -> tuple[str, list[object]]:
    """The positive row test of a comparison (negated operators are applied by the caller)."""
    op = NEGATED.get(cmp.op, cmp.op)
    value = cmp.value
    if isinstance(value, Range):
        return f"{_column(value.low)} BETWEEN ? AND ?", [_param(value.low), _param(value.high)]
    if isinstance(value, tuple):
        by_column: dict[str, list[object]] = {}
        for item in value:
            by_column.setdefault(_column(item), []).append(_param(item))
        tests = [f"{column} IN ({', '.join('?' * len(items))})" for column, items in by_column.items()]
        return "(" + " OR ".join(tests) + ")", [p for items in by_column.values() for p in items]
    if op == "~=":
        return "regexp_matches(txt, ?)", [value]
    return f"{_column(value)} {_SQL_OPS[op]} ?", [_param(value)]


def _column(value: Scalar) -> str:
    if isinstance(value, bool):
        return '"bool"'
    return "txt" if isinstance(value, str) else "num"


def _param(value: Scalar) -> object:
    # Integers go in as doubles: `num` is DOUBLE and the Python evaluator compares as floats too.
    return value if isinstance(value, (bool, str)) else float(value)


# The entity's scopes are read from its document: scope queries are rare and always narrowed by a type or
# an id first, so an index of their own would cost every write for little.
_SCOPE_TEST = "len(list_filter(json_extract_string(e.doc, '$.scope[*]'), lambda s: regexp_full_match(s, ?))) > 0"


def scope_q_to_sql(expr: ScopeExpr) -> tuple[str, list[object]]:
    """A boolean SQL predicate about `e` (column e.doc) for a scope query (polis.ngsi_ld.scope_q)."""
    if isinstance(expr, ScopeTerm):
        return _SCOPE_TEST, [expr.regex]
    parts = [scope_q_to_sql(part) for part in expr.parts]
    joiner = " AND " if isinstance(expr, ScopeAll) else " OR "
    return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, params in parts for p in params]
