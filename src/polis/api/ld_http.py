"""The HTTP side of NGSI-LD (§6.3): bodies, media types, the @context from Link or body, tenants,
and responses with a Link header or an inline @context."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.domain.entity import ATTRIBUTE_KINDS, Entity
from polis.domain.errors import (
    BadRequestData,
    InvalidRequest,
    NonexistentTenant,
    NotAcceptable,
    PayloadTooLarge,
    PersonalDataRefused,
    UnsupportedMediaType,
)
from polis.domain.json_depth import MAX_DEPTH, nests_deeper_than
from polis.domain.tenant import tenant_problem
from polis.ngsi_ld.context import CORE_CONTEXT_URL, TermMap, lower_scheme
from polis.ngsi_ld.entity_codec import GEOMETRY_TYPES
from polis.ngsi_ld.params import check_known
from polis.platform import Platform

JSONLD_REL = "http://www.w3.org/ns/json-ld#context"
TENANT_HEADER = "NGSILD-Tenant"
_LINK = re.compile(r"^\s*<([^>]*)>\s*(;.*)?$")


def platform_of(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def tenant_of(request: Request, *, write: bool = False) -> str:
    """The request's tenant; reading from one that does not exist is 404 NonexistentTenant, writing to one
    creates it (when the write commits)."""
    raw = request.headers.get(TENANT_HEADER)
    if raw is None or raw == "":
        return ""
    problem = tenant_problem(raw)
    if problem is not None and problem[1] is None:
        raise BadRequestData(f"{TENANT_HEADER} {problem[0]}, got '{raw[:80]}'")
    exists = platform_of(request).store.has_tenant(raw)
    if problem is not None and not exists:  # no new tenant so named; one made before the rule stays reachable
        raise PersonalDataRefused(
            f"{TENANT_HEADER} {problem[0]}; nothing was stored", field=TENANT_HEADER, rule=problem[1]
        )
    # A write names its tenant and the store creates it with the first committed write: a rejected request
    # must not leave an empty tenant behind.
    if not write and not exists:
        raise NonexistentTenant(f"tenant '{raw}' does not exist")
    return raw


def link_context(request: Request) -> str | None:
    """The context URL of the JSON-LD Link header, if any; a malformed or repeated one is 400."""
    values = request.headers.getlist("link")
    found: list[str] = []
    for value in values:
        for part in _split_links(value):
            m = _LINK.match(part)
            if not m:
                raise BadRequestData(f"malformed Link header: '{part}'")
            params = m.group(2) or ""
            if JSONLD_REL in params:
                found.append(lower_scheme(m.group(1)))
    if len(found) > 1:
        raise BadRequestData("only one JSON-LD context Link header is allowed")
    return found[0] if found else None


def _split_links(value: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(value):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for p in parts if p.strip()]


async def read_body(request: Request) -> bytes:
    limit = platform_of(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: InvalidRequest where it is not JSON, BadRequestData where it nests deeper than
    anything Polis stores (polis.domain.json_depth)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    if nests_deeper_than(data, raw=raw):
        raise BadRequestData(f"the request body nests arrays and objects more than {MAX_DEPTH} levels deep")
    return data


@dataclass(slots=True)
class LdBody:
    data: Any
    context: Any  # what to resolve: a URL, an inline context, a list, or None for the core
    ld: bool  # application/ld+json: the context comes from the body (per item in batches)


async def json_body(request: Request, *, context_document: bool = False) -> LdBody:
    """Parse the body by §6.3.5: json + Link, or ld+json with @context in the body; anything else 415.
    `context_document`: the body is itself an @context document (POST /jsonldContexts), not data."""
    raw = await read_body(request)
    media = _media_type(request)
    if media not in ("application/json", "application/ld+json", "application/merge-patch+json"):
        raise UnsupportedMediaType(
            f"Content-Type '{media or '(none)'}' is not supported; use application/json or application/ld+json"
        )
    if not raw.strip():
        raise InvalidRequest("the request body is empty; a JSON document is expected")
    data = parse_json(raw)
    link = link_context(request)
    if media == "application/ld+json":
        if link is not None:
            raise BadRequestData("with Content-Type application/ld+json the @context goes in the body, not in Link")
        if isinstance(data, dict):
            if "@context" not in data:
                raise BadRequestData("an application/ld+json body needs an @context member")
            return LdBody(data, data["@context"], True)
        if isinstance(data, list):
            for item in data:
                if isinstance(item, dict) and "@context" not in item:
                    raise BadRequestData("each entity of an application/ld+json batch needs an @context member")
            return LdBody(data, None, True)
        raise BadRequestData("the request body must be a JSON object or array")
    if context_document:
        return LdBody(data, None, False)
    if isinstance(data, dict) and "@context" in data:
        raise BadRequestData("with Content-Type application/json the @context goes in a Link header, not the body")
    if isinstance(data, list) and any(isinstance(i, dict) and "@context" in i for i in data):
        raise BadRequestData("with Content-Type application/json the @context goes in a Link header, not the body")
    return LdBody(data, link, False)


async def plain_json_body(request: Request) -> Any:
    """The body of a /polis/v1 route: plain JSON, no JSON-LD. Over max_body_bytes is 413, a declared
    Content-Type other than application/json 415, an empty, malformed or too deep body 400. A body without
    a Content-Type is read as JSON: scripts posting bare JSON to these routes always could."""
    raw = await read_body(request)
    media = _media_type(request)
    if media and media != "application/json":
        raise UnsupportedMediaType(f"Content-Type '{media}' is not supported; use application/json")
    if not raw.strip():
        raise InvalidRequest("the request body is empty; a JSON document is expected")
    return parse_json(raw)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def declared_query_only(request: Request) -> None:
    """A router dependency for /polis/v1 routes that declare their query parameters the FastAPI way: a name
    the route does not declare is 400, not ignored (a misspelt `window_minute` must not silently give the
    default answer)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    check_known(request.query_params, _query_names(dependant) if dependant is not None else set())


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a FastAPI route and its sub-dependencies declare (by alias, as sent)."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def resolve(request: Request, context: Any) -> TermMap:
    """Resolution may fetch a remote context: never on the event loop."""
    contexts = platform_of(request).contexts
    key = context if isinstance(context, str) or context is None else None
    if key is not None:
        cached = contexts.cached(key)
        if cached is not None:
            return cached
    return await run_in_threadpool(contexts.resolve, context)


async def request_terms(request: Request) -> TermMap:
    """For GET and DELETE: the context from the Link header, or the core."""
    return await resolve(request, link_context(request))


# The media types an NGSI-LD answer can take, the default first (what */* and application/* get).
_OFFERED = ("application/json", "application/ld+json", "application/geo+json")
# What an answer that is not entities can be (types, attributes, temporal evolutions, subscriptions): it has no
# GeoJSON form, so `application/geo+json, application/json` gets JSON, and geo+json alone is 406.
NOT_GEO = ("application/json", "application/ld+json")
# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def accept_of(request: Request, offered: tuple[str, ...] = _OFFERED) -> str:
    """application/json (default), application/ld+json or application/geo+json, as the Accept header weighs
    them (RFC 9110 §12.5.1); 406 NotAcceptable when the header accepts none of them. `offered`: the types this
    answer can take, the default first (a subscription has no GeoJSON form): only they are weighed, so
    `application/geo+json, application/json` gets JSON there rather than 406.

    Each offered type takes the weight of the most specific range that matches it (type/subtype over type/*
    over */*; the first such range when one is listed twice); q=0 means not acceptable. The highest weight
    wins; on a tie, the more specific range, then a type named outright other than plain JSON (as before
    weights were read: `application/json, application/ld+json` is ld+json), then the range listed first,
    then application/json. Parameters other than q are ignored, as before.

    A q that is not a qvalue (q=abc, q=2, q=.5) is refused with 400 BadRequestData rather than ignored: guessing
    a weight could answer in a type the client ruled out, and a malformed request gets a specific 4xx."""
    header = request.headers.get("accept")
    if not header or not header.strip():
        return offered[0]
    ranges: list[tuple[str, float]] = []
    for part in header.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if not media:
            continue  # an empty list element (RFC 9110 §5.6.1)
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() != "q":
                continue
            value = value.strip()
            if _QVALUE.fullmatch(value) is None:
                raise BadRequestData(
                    f"Accept: q must be a number from 0 to 1 with at most three decimals, got '{value[:40]}' "
                    f"in '{media[:80]}'"
                )
            weight = float(value)
        ranges.append((media.lower(), weight))
    if not ranges:
        return offered[0]  # only empty elements: as with no Accept header

    def rank(media_type: str) -> tuple[float, int, bool, int]:
        main = media_type.split("/")[0] + "/*"
        found: tuple[float, int, int] | None = None  # weight, specificity, position
        for position, (media, weight) in enumerate(ranges):
            specificity = 2 if media == media_type else 1 if media == main else 0 if media == "*/*" else -1
            if specificity >= 0 and (found is None or specificity > found[1]):
                found = (weight, specificity, position)
        if found is None:
            return (0.0, -1, False, 0)
        weight, specificity, position = found
        return (weight, specificity, specificity == 2 and media_type != offered[0], -position)

    ranked = [(rank(media_type), media_type) for media_type in offered]
    best_rank, best = max(ranked, key=lambda item: item[0])  # max keeps the first of equals: json first
    if best_rank[0] <= 0:
        choices = ", ".join(offered[:-1]) + " or " + offered[-1] if len(offered) > 1 else offered[0]
        raise NotAcceptable(f"cannot answer with '{header[:200]}'; use {choices}")
    return best


def json_response(
    request: Request,
    body: Any,
    terms: TermMap | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    accept: str | None = None,
    geometry_property: str | None = None,
    geometries: dict[str, list[Any]] | None = None,
) -> Response:
    """An NGSI-LD answer: Link header with json, inline @context with ld+json, GeoJSON with geo+json.

    `geometries` (GeoJSON of a keyValues body): entity id -> the values its GeoProperty named by the geometry
    property holds (`geo_values` of the stored documents); without them no keyValues geometry is trusted."""
    accept = accept or accept_of(request)
    out_headers = dict(headers or {})
    context_value = _context_value(terms)
    if accept == "application/ld+json":
        if isinstance(body, list):
            body = [{**item, "@context": context_value} if isinstance(item, dict) else item for item in body]
        elif isinstance(body, dict):
            body = {**body, "@context": context_value}
    elif accept == "application/geo+json":
        name = geometry_property or "location"
        confirmed = (geometries or {}) if simplified(request) else None
        body = _geojson(body, name, confirmed)
        _add_link(out_headers, _link_header(terms))
    else:
        _add_link(out_headers, _link_header(terms))
    echo_tenant(request, out_headers)
    return Response(orjson.dumps(body), status_code=status, headers=out_headers, media_type=accept)


def pagination_headers(
    request: Request, *, offset: int, limit: int | None, returned: int, total: int | None, count: bool
) -> dict[str, str]:
    """The headers of one page of a query that takes limit/offset (entities, temporal entities, subscriptions):
    `NGSILD-Results-Count` when the client asked for it with count=true (§6.3.13), and Link rel="next"/"prev"
    (§5.5.9, §6.3.10) to this URL with the offset moved by one page (none without a limit, or with limit=0,
    which asks for the count alone). `total`, when known, tells a full last page from one with more after it.
    `json_response` adds the context link to the same Link header."""
    headers: dict[str, str] = {}
    if count and total is not None:
        headers["NGSILD-Results-Count"] = str(total)
    if not limit:
        return headers
    links = []
    base = dict(request.query_params)
    if returned == limit and (total is None or offset + limit < total):
        following = {**base, "offset": offset + limit, "limit": limit}
        links.append(f'<{request.url.path}?{urlencode(following)}>; rel="next"')
    if offset > 0:
        previous = {**base, "offset": max(0, offset - limit), "limit": limit}
        links.append(f'<{request.url.path}?{urlencode(previous)}>; rel="prev"')
    if links:
        headers["Link"] = ", ".join(links)
    return headers


def empty_response(request: Request, status: int = 204, headers: dict[str, str] | None = None) -> Response:
    out = dict(headers or {})
    echo_tenant(request, out)
    return Response(status_code=status, headers=out)


def echo_tenant(request: Request, headers: dict[str, str]) -> None:
    """An answer names the request's tenant (§6.3.14), but only a name a tenant may have or one the hub holds
    from before the rule: routes outside NGSI-LD (access, metrics) never check the header, and a header
    that names a device must not come back in the answer (and its logs) as if it were a tenant."""
    tenant = request.headers.get(TENANT_HEADER)
    if tenant and (tenant_problem(tenant) is None or platform_of(request).store.has_tenant(tenant)):
        headers[TENANT_HEADER] = tenant


def _add_link(headers: dict[str, str], link: str) -> None:
    """The context Link joins any pagination links already there (one Link header, comma-separated)."""
    headers["Link"] = f"{headers['Link']}, {link}" if headers.get("Link") else link


def _context_value(terms: TermMap | None) -> Any:
    urls = list(terms.urls) if terms is not None else []
    if CORE_CONTEXT_URL not in urls:
        urls.append(CORE_CONTEXT_URL)
    return urls[0] if len(urls) == 1 else urls


def _link_header(terms: TermMap | None) -> str:
    urls = [u for u in (terms.urls if terms is not None else ()) if u != CORE_CONTEXT_URL]
    url = urls[0] if urls else CORE_CONTEXT_URL
    return f'<{url}>; rel="{JSONLD_REL}"; type="application/ld+json"'


def simplified(request: Request) -> bool:
    """Whether the answer is keyValues (options=keyValues or simplified, or format=): the one representation
    that drops the attribute's type. The route has validated these parameters already."""
    words = set(request.query_params.get("options", "").split(","))
    words.add(request.query_params.get("format", ""))
    return bool(words & {"keyValues", "simplified"})


def geo_values(entities: Iterable[Entity], iri: str) -> dict[str, list[Any]]:
    """Entity id -> the values of its GeoProperty instances of attribute `iri`, from stored (normalized) documents.

    keyValues shows a GeoProperty's geometry and a Property holding a GeoJSON-shaped object alike, so the body
    cannot say which it is: a route answering GeoJSON in keyValues passes these, and a geometry is kept only when
    it equals one of them (a Property's value never becomes a Feature's geometry)."""
    return {
        entity["id"]: [
            instance.get("value")
            for instance in entity.get(iri) or ()
            if isinstance(instance, dict) and instance.get("type") == "GeoProperty"
        ]
        for entity in entities
    }


def _geojson(body: Any, geometry_property: str, confirmed: dict[str, list[Any]] | None = None) -> Any:
    """`confirmed` (keyValues): the geometries each entity's GeoProperty holds; any other is not one."""

    def feature(entity: dict[str, Any]) -> dict[str, Any]:
        props = {k: v for k, v in entity.items() if k != "id"}
        entity_id = entity.get("id")
        geometry = _geometry(entity.get(geometry_property))
        if confirmed is not None and geometry not in confirmed.get(entity_id if isinstance(entity_id, str) else "", []):
            geometry = None
        return {"id": entity_id, "type": "Feature", "geometry": geometry, "properties": props}

    if isinstance(body, list):
        return {"type": "FeatureCollection", "features": [feature(e) for e in body]}
    if isinstance(body, dict) and "id" in body:
        return feature(body)
    return body


def _geometry(attribute: Any) -> dict[str, Any] | None:
    """The GeoJSON geometry of the GeoProperty `attribute` as the entity was rendered, else None (the
    feature's geometry is null when the entity has no such GeoProperty, §6.3.15 / RFC 7946 §3.2).

    normalized: {"type": "GeoProperty", "value": geometry, ...}; any other "type" (Property, Relationship,
    LanguageProperty, ...) is not a GeoProperty. concise: the bare geometry, or {"value": geometry, ...} with
    sub-attributes (a Property whose value looks like a geometry keeps "type": "Property" there). keyValues:
    the bare value, which cannot tell a GeoProperty from a Property holding a GeoJSON object: `_geojson`
    confirms it against the stored entity. Several instances (datasetIds): the first."""
    if isinstance(attribute, list):
        attribute = attribute[0] if attribute else None
    if not isinstance(attribute, dict):
        return None
    kind = attribute.get("type")
    if kind == "GeoProperty" or (kind is None and "value" in attribute):
        attribute = attribute.get("value")
    elif kind in ATTRIBUTE_KINDS:
        return None
    return attribute if _is_geojson_geometry(attribute) else None


def _is_geojson_geometry(value: Any) -> bool:
    """A GeoJSON geometry object (RFC 7946 §3.1): a geometry type with its coordinates, or a collection."""
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if kind == "GeometryCollection":
        parts = value.get("geometries")
        return isinstance(parts, list) and all(_is_geojson_geometry(p) for p in parts)
    return isinstance(kind, str) and kind in GEOMETRY_TYPES and isinstance(value.get("coordinates"), list)
