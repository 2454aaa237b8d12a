"""Parsing of the URI parameters NGSI-LD queries share (§6.3, §5.7.2), independent of any web framework.

Every function takes the raw text a client sent and either returns a typed value or raises
`InvalidRequest` / `BadRequestData` with a detail that names the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from polis.domain.errors import BadRequestData, InvalidRequest, TooManyResults
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entity_codec import is_uri
from polis.ngsi_ld.geoquery import GeoQuery, parse_geoquery
from polis.ngsi_ld.q import QExpr, parse_q
from polis.ngsi_ld.scope_q import ScopeExpr, parse_scope_q
from polis.store.base import TypeSelector

REPRESENTATIONS = {"normalized", "concise", "keyValues", "simplified"}
TEMPORAL_FORMATS = {"temporalValues", "aggregatedValues"}


@dataclass(frozen=True, slots=True)
class Options:
    """What `options=` and `format=` asked for."""

    fmt: str = "normalized"  # normalized | concise | keyValues
    sys_attrs: bool = False
    no_overwrite: bool = False
    replace: bool = False
    update: bool = False
    temporal: str | None = None  # temporalValues | aggregatedValues


def parse_options(params: Mapping[str, str], *, allowed: set[str]) -> Options:
    """`options` is a comma list; `format` (1.8) picks the representation. Unknown values are InvalidRequest."""
    words = [w for w in params.get("options", "").split(",") if w]
    if "format" in params:
        words.append(params["format"])
    fmt = "normalized"
    temporal = None
    flags = set()
    for word in words:
        if word not in allowed:
            raise InvalidRequest(
                f"unsupported options/format value '{word}'; allowed here: {', '.join(sorted(allowed))}"
            )
        if word in REPRESENTATIONS:
            candidate = "keyValues" if word == "simplified" else word
            if fmt != "normalized" and candidate != fmt:
                raise InvalidRequest(f"options ask for two representations: '{fmt}' and '{candidate}'")
            fmt = candidate
        elif word in TEMPORAL_FORMATS:
            if temporal is not None and temporal != word:  # the last one silently won
                raise InvalidRequest(f"options ask for two temporal representations: '{temporal}' and '{word}'")
            temporal = word
        else:
            flags.add(word)
    return Options(
        fmt=fmt,
        sys_attrs="sysAttrs" in flags,
        no_overwrite="noOverwrite" in flags,
        replace="replace" in flags,
        update="update" in flags,
        temporal=temporal,
    )


def parse_int(params: Mapping[str, str], name: str, *, minimum: int = 0) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"-?[0-9]{1,12}", raw):  # \d would take other scripts' digits (Arabic, Devanagari)
        raise BadRequestData(f"{name} must be an integer, got '{raw}'")
    value = int(raw)
    if value < minimum:
        raise BadRequestData(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int
    count: bool


def parse_page(params: Mapping[str, str], *, default_limit: int, max_limit: int) -> Page:
    count = parse_bool(params, "count")
    limit = parse_int(params, "limit", minimum=0)
    offset = parse_int(params, "offset", minimum=0) or 0
    if limit is None:
        limit = default_limit
    elif limit == 0 and not count:
        raise BadRequestData("limit=0 is only allowed together with count=true")
    if limit > max_limit:
        raise TooManyResults(f"limit {limit} is above this broker's maximum of {max_limit}", maximum=max_limit)
    return Page(limit, offset, count)


def parse_bool(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise BadRequestData(f"{name} must be true or false, got '{raw}'")
    return raw == "true"


def parse_names(raw: str | None, terms: TermMap, what: str) -> tuple[str, ...]:
    """A comma list of attribute names, expanded; empty members are an error."""
    if raw is None:
        return ()
    names = raw.split(",")
    if any(not n.strip() for n in names):
        raise BadRequestData(f"{what} has an empty name: '{raw}'")
    return tuple(dict.fromkeys(terms.expand(n.strip()) for n in names))


def parse_projection(raw: str | None, terms: TermMap, what: str) -> set[str] | None:
    """`pick`/`omit`: like attrs, but `id` and `type` stay as they are."""
    if raw is None:
        return None
    names = raw.split(",")
    if any(not n.strip() for n in names):
        raise BadRequestData(f"{what} has an empty name: '{raw}'")
    return {n if n in ("id", "type") else terms.expand(n) for n in (n.strip() for n in names)}


def parse_dataset_ids(raw: str | None) -> tuple[str | None, ...] | None:
    """`datasetId=urn:a,@none`: the attribute instances wanted, None standing for the default instance (the
    one without a datasetId); None when the parameter is absent (every instance)."""
    if raw is None:
        return None
    wanted: list[str | None] = []
    for part in (p.strip() for p in raw.split(",")):
        if part == "@none":
            wanted.append(None)
        elif is_uri(part):
            wanted.append(part)
        else:
            raise BadRequestData(f"datasetId '{part}' is not a URI (or @none for the default instance)")
    return tuple(dict.fromkeys(wanted))


def parse_scope_q_param(raw: str | None) -> ScopeExpr | None:
    return None if raw is None else parse_scope_q(raw)


def narrow_pick(pick: set[str] | None, attrs: tuple[str, ...]) -> set[str] | None:
    """`attrs` (deprecated in 1.8) projects like `pick`: id, type and those attributes, within any pick given."""
    if not attrs:
        return pick
    wanted = {"id", "type", *attrs}
    return wanted if pick is None else pick & wanted


_TYPE_TOKEN = re.compile(r"\s*([(),;|])\s*|([^(),;|\s]+)")


def parse_type_selector(raw: str | None, terms: TermMap) -> TypeSelector | None:
    """§4.17: `A,B` or `A|B` = either, `A;B` = both, parentheses group; result in disjunctive normal form."""
    if raw is None:
        return None
    if not raw.strip():
        raise BadRequestData("type must not be empty")
    tokens: list[str] = []
    pos = 0
    while pos < len(raw):
        m = _TYPE_TOKEN.match(raw, pos)
        if not m or m.end() == pos:
            raise BadRequestData(f"type: unexpected character at position {pos} in '{raw}'")
        tokens.append(m.group(1) or terms.expand_type(m.group(2)))
        pos = m.end()

    # Recursive descent over: expr := term (('|'|',') term)* ; term := factor (';' factor)* ; factor := name | (expr)
    index = 0

    def expr(depth: int) -> list[tuple[str, ...]]:
        nonlocal index
        if depth > 32:
            raise BadRequestData("type: too deeply nested")
        groups = term(depth)
        while index < len(tokens) and tokens[index] in ("|", ","):
            index += 1
            groups = groups + term(depth)
        return groups

    def term(depth: int) -> list[tuple[str, ...]]:
        nonlocal index
        groups = factor(depth)
        while index < len(tokens) and tokens[index] == ";":
            index += 1
            right = factor(depth)
            groups = [tuple(dict.fromkeys(a + b)) for a in groups for b in right]
            if len(groups) > 256:
                raise BadRequestData("type: expression too complex")
        return groups

    def factor(depth: int) -> list[tuple[str, ...]]:
        nonlocal index
        if index >= len(tokens):
            raise BadRequestData(f"type: expected a type name at the end of '{raw}'")
        token = tokens[index]
        if token == "(":
            index += 1
            groups = expr(depth + 1)
            if index >= len(tokens) or tokens[index] != ")":
                raise BadRequestData(f"type: missing ')' in '{raw}'")
            index += 1
            return groups
        if token in (")", ",", ";", "|"):
            raise BadRequestData(f"type: unexpected '{token}' in '{raw}'")
        index += 1
        return [(token,)]

    groups = expr(0)
    if index != len(tokens):
        raise BadRequestData(f"type: unexpected '{tokens[index]}' in '{raw}'")
    return TypeSelector(tuple(groups))


def parse_q_param(raw: str | None, terms: TermMap) -> QExpr | None:
    return None if raw is None else parse_q(raw, terms.expand)


def parse_geo_params(params: Mapping[str, str], terms: TermMap) -> GeoQuery | None:
    return parse_geoquery(
        params.get("georel"),
        params.get("geometry"),
        params.get("coordinates"),
        params.get("geoproperty"),
        terms.expand,
    )


def parse_datetime(raw: str, name: str) -> datetime:
    text = raw.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        if "T" not in text.upper() or not text.isascii():  # a date alone is not a moment; digits are 0-9
            raise ValueError(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        example = "2024-05-01T10:00:00Z"
        raise BadRequestData(f"{name} must be an ISO 8601 date-time such as {example}, got '{raw}'") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # NGSI-LD times without an offset are UTC
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise BadRequestData(f"{name} '{raw}' is outside the representable years 1-9999 in UTC") from None


def check_known(params: Mapping[str, str], known: set[str]) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        accepted = f"accepts: {', '.join(sorted(known))}" if known else "accepts no query parameters"
        raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}; this endpoint {accepted}")


def parse_day(text: str, name: str = "day") -> date:
    """A local day written YYYY-MM-DD, and only so (`date.fromisoformat` also takes 20170201 and 2017-W05-3);
    a ValueError naming `name` otherwise."""
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ValueError(f"{name} must be a date YYYY-MM-DD, got {text!r}")
