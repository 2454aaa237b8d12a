"""The NGSI-LD `q` language: parsing (§4.9 grammar, errors) and the Python evaluator's semantics."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.domain.errors import BadRequestData
from polis.ngsi_ld.q import (
    MAX_DEPTH,
    MAX_Q_LENGTH,
    MAX_TERMS,
    And,
    Comparison,
    Exists,
    Or,
    Path,
    QExpr,
    Range,
    attribute_iris,
    matches,
    parse_q,
)
from tests.threads import errors_from_threads

NS = "http://ex.org/"


def expand(term: str) -> str:
    return term if term.startswith(("http://", "https://", "urn:")) else NS + term


def p(name: str, *sub: str, member: str | None = None, keys: tuple[str, ...] = ()) -> Path:
    return Path(NS + name, tuple(NS + s for s in sub), member, keys)


def cmp(name: str, op: str, value: Any) -> Comparison:
    return Comparison(p(name), op, value)


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intensity>100", cmp("intensity", ">", 100)),
        ("congested==true;intensity>=50", And((cmp("congested", "==", True), cmp("intensity", ">=", 50)))),
        ("peopleCount==0..20|peopleCount>5000",
         Or((cmp("peopleCount", "==", Range(0, 20)), cmp("peopleCount", ">", 5000)))),
        ('category=="traffic";severity!="informational"',
         And((cmp("category", "==", "traffic"), cmp("severity", "!=", "informational")))),
        ('refRoadSegment=="urn:ngsi-ld:RoadSegment:1"', cmp("refRoadSegment", "==", "urn:ngsi-ld:RoadSegment:1")),
        ('name~="^Holly"', cmp("name", "~=", "^Holly")),
        ('dateObserved>="2021-01-01T00:00:00Z"', cmp("dateObserved", ">=", "2021-01-01T00:00:00Z")),
        ("(a>1|b<2);c==true", And((Or((cmp("a", ">", 1), cmp("b", "<", 2))), cmp("c", "==", True)))),
        ('address[addressLocality]=="Melbourne"',
         Comparison(p("address", keys=("addressLocality",)), "==", "Melbourne")),
    ],
)
def test_spec_examples_parse(text: str, expected: QExpr) -> None:
    assert parse_q(text, expand) == expected


def test_and_binds_tighter_than_or() -> None:
    a, b, c = (Exists(p(n)) for n in "abc")
    assert parse_q("a|b;c", expand) == Or((a, And((b, c))))
    assert parse_q("a;b|c", expand) == Or((And((a, b)), c))
    assert parse_q("a;(b|c)", expand) == And((a, Or((b, c))))


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("0", 0), ("-7", -7), ("2.5", 2.5), ("-0.25", -0.25), ("1e3", 1000.0), ("-1.5E-2", -0.015),
        ("true", True), ("false", False),
        ('""', ""), ('"say \\"hi\\""', 'say "hi"'), ('"a\\\\b"', "a\\b"), ('"^\\d+$"', "^\\d+$"),
        ('"a;b|c)"', "a;b|c)"),
        ("2021-01-01T00:00:00Z", "2021-01-01T00:00:00Z"),  # unquoted date-times are strings, as in the ABNF
        ("2021-01-01T00:00:00.123+02:00", "2021-01-01T00:00:00.123+02:00"),
        ("2021-01-01", "2021-01-01"), ("12:30:00Z", "12:30:00Z"),
    ],
)
def test_values(literal: str, value: Any) -> None:
    parsed = parse_q(f"a=={literal}", expand)
    assert isinstance(parsed, Comparison)
    assert parsed.value == value and type(parsed.value) is type(value)


def test_lists_and_ranges() -> None:
    assert parse_q('a==1,"x",true', expand) == cmp("a", "==", (1, "x", True))
    assert parse_q("a!=1,2", expand) == cmp("a", "!=", (1, 2))
    assert parse_q("a==-5..2.5", expand) == cmp("a", "==", Range(-5, 2.5))
    assert parse_q('a!="2020"..2021-06-01', expand) == cmp("a", "!=", Range("2020", "2021-06-01"))


def test_paths() -> None:
    assert parse_q("a.s==1", expand) == Comparison(p("a", "s"), "==", 1)
    assert parse_q("a.s.t==1", expand) == Comparison(p("a", "s", "t"), "==", 1)
    assert parse_q("a[k1.k2]==1", expand) == Comparison(p("a", keys=("k1", "k2")), "==", 1)
    assert parse_q("a.s[k]==1", expand) == Comparison(p("a", "s", keys=("k",)), "==", 1)
    for member in ("observedAt", "createdAt", "modifiedAt", "unitCode", "datasetId"):
        assert parse_q(f'a.{member}=="x"', expand) == Comparison(p("a", member=member), "==", "x")
    assert parse_q('a.s.observedAt>"x"', expand) == Comparison(p("a", "s", member="observedAt"), ">", "x")


def test_expand_applies_to_attribute_and_sub_attribute_names_only() -> None:
    seen: list[str] = []

    def record(term: str) -> str:
        seen.append(term)
        return "iri:" + term

    assert parse_q("a.s[k.j]>1;b.unitCode==\"KMH\"", record) == And((
        Comparison(Path("iri:a", ("iri:s",), None, ("k", "j")), ">", 1),
        Comparison(Path("iri:b", (), "unitCode"), "==", "KMH"),
    ))
    assert seen == ["a", "s", "b"]


def test_full_iris_keep_their_dots() -> None:
    iri = "https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"
    assert parse_q(f"{iri}>50", expand) == Comparison(Path(iri), ">", 50)
    assert parse_q(f"({iri}[a.b]==1|urn:x:y.z)", expand) == Or(
        (Comparison(Path(iri, keys=("a", "b")), "==", 1), Exists(Path("urn:x:y.z")))
    )
    assert parse_q(f"!{iri}", expand) == Exists(Path(iri), negated=True)
    assert parse_q(f'{iri}~="x"', expand) == Comparison(Path(iri), "~=", "x")


def test_existence() -> None:
    assert parse_q("a", expand) == Exists(p("a"))
    assert parse_q("!a;b.s", expand) == And((Exists(p("a"), negated=True), Exists(p("b", "s"))))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("speed>", "expected a value after '>'"),
        ("speed>", "at position 7 in 'speed>'"),
        ("", "must not be empty"),
        ("a==", "expected a value after '=='"),
        ("a=1", "expected an operator"),
        ("a==abc", "double-quoted string"),
        ("a==1x", "position 5"),
        ('a=="open', "closing '\"'"),
        ("(a==1", "expected ')'"),
        ("((a==1)", "expected ')'"),
        ("a==1)", "unbalanced ')'"),
        ("()", "expected an attribute name"),
        ("a;;b", "expected an attribute name"),
        ("a|", "expected an attribute name"),
        (";a", "expected an attribute name"),
        ("a>1,2", "only allowed with == and !="),
        ("a<1..2", "only allowed with == and !="),
        ('a~="x","y"', "only allowed with == and !="),
        ("a>true", "not true/false"),
        ("a==1..\"b\"", "two numbers or two strings"),
        ("a==true..false", "two numbers or two strings"),
        ("a==1,2..3", "cannot also be a range"),
        ("a==1..2..3", "after a range"),
        ("a~=5", "double-quoted string"),
        ('a~="("', "does not compile"),
        ('a~="' + "(" * 600 + ")" * 600 + '"', "does not compile"),  # too deep for re's parser
        ('a~="(?=x)"', "not supported"),
        ('a~="(?<!x)y"', "not supported"),
        ('a~="(x)\\1"', "not supported"),
        ('a~="x++"', "not supported"),
        ('a~="[[:alpha:]]"', "not supported"),
        ('a~="x\\Z"', "not supported"),
        ('a~="x{2000}"', "not supported"),
        ("!a==1", "takes no operator"),
        ("a.observedAt.b==1", "can only end a path"),
        ("a.observedAt[k]==1", "has no [keys]"),
        ("a[]==1", "a key name"),
        ("a[k==1", "'.' or ']'"),
        ("a==1e999", "out of range"),
        ("a == 1", "expected an operator"),
    ],
)
def test_malformed_queries_are_bad_request_data(text: str, fragment: str) -> None:
    with pytest.raises(BadRequestData) as caught:
        parse_q(text, expand)
    assert fragment in caught.value.detail
    assert caught.value.detail.startswith("q: ")


def test_limits_are_bad_request_data_not_crashes() -> None:
    with pytest.raises(BadRequestData, match="characters long"):
        parse_q("a" * (MAX_Q_LENGTH + 1))
    with pytest.raises(BadRequestData, match="nested deeper"):
        parse_q("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(BadRequestData, match="nested deeper"):
        parse_q("(" * 4000)  # would be a RecursionError in a naive descent parser
    with pytest.raises(BadRequestData, match="too many conditions"):
        parse_q(";".join(["a"] * (MAX_TERMS + 1)))
    deep = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse_q(deep) == Exists(Path("a"))


def test_accepted_regexes() -> None:
    for pattern in ("^x$", "(?i)abc", "(?P<n>x)", "[+]+", "[]a]", "a{2,3}", "\\d\\w\\s\\.", "x(?:y)", "(?s:.)"):
        rendered = pattern.replace("\\", "\\\\")
        assert parse_q(f'a~="{rendered}"') == Comparison(Path("a"), "~=", pattern)


def test_attribute_iris() -> None:
    expr = parse_q("a>1;(b.s==2|!c)|d[k]", expand)
    assert attribute_iris(expr) == {NS + n for n in "abcd"}


# -- Round trip: any AST, written out as q text, parses back to itself ------------------------------

_NAMES = st.sampled_from(["a", "speed", "x-y_z", "ns:attr", "#h"])
_SCALARS = st.one_of(
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(st.characters(codec="utf-8"), max_size=6),
)


@st.composite
def _paths(draw: st.DrawFn) -> Path:
    sub = tuple(draw(st.lists(_NAMES, max_size=2)))
    member = draw(st.sampled_from([None, "observedAt", "unitCode", "datasetId"]))
    keys = () if member else tuple(draw(st.lists(st.sampled_from(["k", "a b", "x-1"]), max_size=2)))
    return Path(draw(_NAMES), sub, member, keys)


def _comparisons() -> st.SearchStrategy[Comparison]:
    ordered = st.one_of(st.integers(-99, 99), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3))
    equality = st.one_of(
        _SCALARS,
        st.lists(_SCALARS, min_size=2, max_size=3).map(tuple),
        st.tuples(st.integers(-9, 9), st.integers(-9, 9)).map(lambda t: Range(*t)),
        st.tuples(st.text(max_size=2), st.text(max_size=2)).map(lambda t: Range(*t)),
    )
    return st.one_of(
        st.builds(Comparison, _paths(), st.sampled_from([">", ">=", "<", "<="]), ordered),
        st.builds(Comparison, _paths(), st.sampled_from(["==", "!="]), equality),
        st.builds(Comparison, _paths(), st.sampled_from(["~=", "!~="]), st.sampled_from(["^x", "a|b", "\\d+", '"'])),
    )


_EXPRS: st.SearchStrategy[QExpr] = st.recursive(
    st.one_of(_comparisons(), st.builds(Exists, _paths(), st.booleans())),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=8,
)


def render(expr: QExpr) -> str:
    """q text for an AST: what a client would send."""
    if isinstance(expr, (And, Or)):
        sep = ";" if isinstance(expr, And) else "|"
        return sep.join(f"({render(part)})" if isinstance(part, (And, Or)) else render(part) for part in expr.parts)
    path = expr.path
    text = ".".join((path.attribute, *path.sub, *([path.member] if path.member else [])))
    if path.keys:
        text += "[" + ".".join(path.keys) + "]"
    if isinstance(expr, Exists):
        return ("!" if expr.negated else "") + text
    value = expr.value
    if isinstance(value, Range):
        rendered = f"{render_scalar(value.low)}..{render_scalar(value.high)}"
    elif isinstance(value, tuple):
        rendered = ",".join(render_scalar(v) for v in value)
    else:
        rendered = render_scalar(value)
    return f"{text}{expr.op}{rendered}"


def render_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


@settings(deadline=None, max_examples=200)
@given(_EXPRS)
def test_rendered_ast_parses_back_to_itself(expr: QExpr) -> None:
    # repr, not ==: dataclass equality says 1 == True == 1.0, the parser must keep the types apart
    assert repr(parse_q(render(expr))) == repr(expr)


# -- Python evaluation ------------------------------------------------------------------------------


def entity(**attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "urn:e:1", "type": [NS + "T"], "createdAt": "2020-01-01T00:00:00Z"}
    for name, instances in attrs.items():
        body[NS + name] = instances if isinstance(instances, list) else [instances]
    return body


def prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def holds(q: str, ent: dict[str, Any]) -> bool:
    return matches(parse_q(q, expand), ent)


def test_numbers_strings_and_booleans_compare_only_with_their_own_kind() -> None:
    ent = entity(n=prop(5), f=prop(2.5), s=prop("5"), b=prop(True), one=prop(1))
    assert holds("n==5;n==5.0;n>4;n<=5;n!=6;f>2;f<2.6", ent)
    assert not holds('n=="5"', ent) and not holds("s==5", ent) and not holds("s>4", ent)
    assert holds('s=="5";s>"4";s<"6"', ent)
    assert holds("b==true;b!=false", ent) and not holds("b==1", ent)
    assert not holds("one==true", ent), "a bool is not a number"


def test_numbers_compare_as_doubles() -> None:
    assert holds(f"n=={2**53}", entity(n=prop(2**53 + 1)))  # as in DuckDB's DOUBLE column
    assert not holds("n>0;n<0|n==0", entity(n=prop(float("nan"))))


def test_any_instance_and_any_element_satisfies() -> None:
    ent = entity(t=[prop(10), prop(30, datasetId="urn:ds:2")], l=prop([1, "x", 7]))
    assert holds("t>20", ent) and holds("t<20", ent) and holds("t==10..10", ent)
    assert holds("l==7;l==\"x\";l>6", ent) and not holds("l>7", ent)


def test_negated_operators_need_the_attribute() -> None:
    ent = entity(t=prop(10), s=prop("abc"), l=prop([1, 2]))
    assert holds("t!=11", ent) and not holds("t!=10", ent)
    assert not holds("missing!=1", ent) and not holds('missing!~="x"', ent)
    assert holds('s!~="^x"', ent) and not holds('s!~="^a"', ent)
    assert holds('t!~="x"', ent), "no string of t matches"
    assert not holds("l!=2", ent) and holds("l!=3,4", ent) and not holds("l!=2..5", ent) and holds("l!=5..9", ent)


def test_ranges_and_lists() -> None:
    ent = entity(t=prop(15), d=prop("2021-05-01T00:00:00Z"))
    assert holds("t==10..20;t==15..15", ent) and not holds("t==16..20", ent) and not holds("t==20..10", ent)
    assert holds("t==1,15,\"x\"", ent) and not holds("t==1,\"15\"", ent)
    assert holds("d==2021-01-01T00:00:00Z..2021-12-31T00:00:00Z;d>=\"2021\"", ent)


def test_regex_is_a_search_with_ascii_classes() -> None:
    ent = entity(s=prop("Hollywood Fwy"), d=prop("٣"))
    assert holds('s~="^Holly";s~="wood";s~="(?i)fwy$"', ent) and not holds('s~="^wood"', ent)
    assert not holds('d~="\\d"', ent), "\\d is ASCII only, as in RE2"


def test_each_kind_compares_its_own_value() -> None:
    ent = entity(
        rel={"type": "Relationship", "object": "urn:r:1"},
        lang={"type": "LanguageProperty", "languageMap": {"en": "Main Street", "es": ["Calle", "Mayor"]}},
        lst={"type": "ListProperty", "valueList": [3, 4]},
        lrel={"type": "ListRelationship", "objectList": [{"object": "urn:r:2"}, "urn:r:3"]},
        voc={"type": "VocabProperty", "vocab": ["http://v/a", "http://v/b"]},
        js={"type": "JsonProperty", "json": {"k": 1}},
        geo={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.5, 2.5]}},
        dt=prop({"@type": "DateTime", "@value": "2021-01-01T00:00:00Z"}),
    )
    assert holds('rel=="urn:r:1";lang=="Calle";lang~="^Main";lang[en]=="Main Street";lang[es]=="Mayor"', ent)
    assert holds('lst==4;lrel=="urn:r:2";lrel=="urn:r:3";voc=="http://v/b";js[k]==1', ent)
    assert holds('geo[type]=="Point";geo[coordinates]==2.5;dt>"2020";dt=="2021-01-01T00:00:00Z"', ent)
    assert not holds("js==1", ent) and holds("js", ent), "a compound value compares with nothing but exists"


def test_sub_attributes_members_and_keys() -> None:
    ent = entity(
        speed=prop(61.3, observedAt="2012-03-01T00:00:00Z", unitCode="KMH", datasetId="urn:ds:1",
                   **{NS + "accuracy": prop(0.9, **{NS + "source": prop("gps")})}),
        address=prop({"locality": "Melbourne", "geo": {"zip": 3000}}),
    )
    assert holds('speed.observedAt>="2012";speed.unitCode=="KMH";speed.datasetId=="urn:ds:1"', ent)
    assert holds('speed.accuracy>0.5;speed.accuracy.source=="gps";speed.accuracy', ent)
    assert not holds("speed.createdAt", ent) and holds("!speed.createdAt", ent)
    assert holds('address[locality]=="Melbourne";address[geo.zip]==3000;address[geo]', ent)
    assert not holds("address[geo.zip.x]", ent) and not holds("address[nope]", ent)
    assert not holds("speed.value", ent), "reserved members are not sub-attributes"


def test_entity_members_are_not_attributes() -> None:
    ent = entity(t=prop(1))
    assert not holds('createdAt>"2000"', {**ent, NS + "createdAt": "2020"}), "not a list of instances"
    assert not matches(Comparison(Path("createdAt"), ">", "2000"), ent)
    assert not matches(Exists(Path("type")), ent) and not matches(Exists(Path("id")), ent)


def test_boolean_structure() -> None:
    ent = entity(a=prop(1), b=prop(2))
    assert holds("a==1;b==2", ent) and not holds("a==1;b==3", ent)
    assert holds("a==9|b==2", ent) and not holds("a==9|b==9", ent)
    assert holds("(a==9|b==2);!c", ent) and not holds("(a==9|b==2);c", ent)


def test_a_pattern_python_warns_about_compiles_quietly_from_many_threads() -> None:
    # "[[a]" makes `re` warn of a possible nested set (pytest turns a warning into an error, in any thread);
    # the pattern is valid and matches what it says. The hush is shared by every validator and the threads
    # must not undo each other's.
    from polis.ngsi_ld.q import compile_quietly

    def check(k: int) -> None:
        for n in range(30):
            assert compile_quietly(f"[[a]{k}-{n}").search(f"[{k}-{n}") is not None
            assert holds('s~="[[a]"', entity(s=prop("x[y")))

    assert errors_from_threads(check, 4) == []
