"""The HTTP side of NGSI-LD (§6.3): bodies, media types, the @context from Link or body, tenants,
and responses with a Link header or an inline @context."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

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
from polis.ngsi_ld.context import CORE_CONTEXT_URL, TermMap
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
                found.append(m.group(1))
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


def accept_of(request: Request) -> str:
    """application/json (default), application/ld+json or application/geo+json; others are 406."""
    header = request.headers.get("accept")
    if not header:
        return "application/json"
    best = None
    for part in header.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("application/json", "*/*", "application/*"):
            best = best or "application/json"
        elif media in ("application/ld+json", "application/geo+json"):
            return media
    if best is None:
        raise NotAcceptable(
            f"cannot answer with '{header}'; use application/json, application/ld+json or application/geo+json"
        )
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
) -> Response:
    """An NGSI-LD answer: Link header with json, inline @context with ld+json, GeoJSON with geo+json."""
    accept = accept or accept_of(request)
    out_headers = dict(headers or {})
    context_value = _context_value(terms)
    if accept == "application/ld+json":
        if isinstance(body, list):
            body = [{**item, "@context": context_value} if isinstance(item, dict) else item for item in body]
        elif isinstance(body, dict):
            body = {**body, "@context": context_value}
    elif accept == "application/geo+json":
        body = _geojson(body, geometry_property or "location")
        _add_link(out_headers, _link_header(terms))
    else:
        _add_link(out_headers, _link_header(terms))
    _echo_tenant(request, out_headers)
    return Response(orjson.dumps(body), status_code=status, headers=out_headers, media_type=accept)


def empty_response(request: Request, status: int = 204, headers: dict[str, str] | None = None) -> Response:
    out = dict(headers or {})
    _echo_tenant(request, out)
    return Response(status_code=status, headers=out)


def _echo_tenant(request: Request, headers: dict[str, str]) -> None:
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


def _geojson(body: Any, geometry_property: str) -> Any:
    def feature(entity: dict[str, Any]) -> dict[str, Any]:
        geo = entity.get(geometry_property)
        if isinstance(geo, list):
            geo = geo[0] if geo else None
        if isinstance(geo, dict) and "value" in geo:
            geo = geo["value"]
        props = {k: v for k, v in entity.items() if k != "id"}
        return {
            "id": entity.get("id"),
            "type": "Feature",
            "geometry": geo if isinstance(geo, dict) else None,
            "properties": props,
        }

    if isinstance(body, list):
        return {"type": "FeatureCollection", "features": [feature(e) for e in body]}
    if isinstance(body, dict) and "id" in body:
        return feature(body)
    return body
