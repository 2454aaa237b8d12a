"""`/entities` and `/entityOperations`: translate HTTP to `EntityService` calls and back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.access.enforce import access_of, body_ids, readable_scope
from polis.api.ld_http import (
    accept_of,
    empty_response,
    geo_values,
    json_body,
    json_response,
    pagination_headers,
    platform_of,
    request_terms,
    resolve,
    simplified,
    tenant_of,
)
from polis.domain.entity import Entity
from polis.domain.errors import BadRequestData
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entity_codec import compact_entity, validate_entity_id
from polis.ngsi_ld.geoquery import parse_geoquery
from polis.ngsi_ld.params import (
    check_known,
    narrow_pick,
    parse_bool,
    parse_dataset_ids,
    parse_geo_params,
    parse_names,
    parse_options,
    parse_page,
    parse_projection,
    parse_q_param,
    parse_scope_q_param,
    parse_type_selector,
)
from polis.ngsi_ld.q import parse_q, pattern_problem
from polis.settings import Settings
from polis.store.base import EntityQuery, EntitySelector, TypeSelector

router = APIRouter(prefix="/ngsi-ld/v1", tags=["entities"])

REPRESENTATION_OPTIONS = {"normalized", "concise", "keyValues", "simplified", "sysAttrs"}
QUERY_PARAMS = {
    "id",
    "idPattern",
    "type",
    "attrs",
    "pick",
    "omit",
    "q",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "geometryProperty",
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "lang",
    "local",
    "scopeQ",
    "csf",
    "datasetId",
}
RETRIEVE_PARAMS = {
    "attrs", "pick", "omit", "options", "format", "lang", "type", "geometryProperty", "datasetId", "local",
}  # fmt: skip


def _entity_path(entity_id: str) -> str:
    return "/ngsi-ld/v1/entities/" + quote(entity_id, safe=":")


def build_entity_query(
    params: dict[str, str], terms: TermMap, *, default_limit: int, max_limit: int, require_filter: bool = True
) -> tuple[EntityQuery, tuple[str, ...]]:
    """The entity-selection part shared by `/entities` and `/temporal/entities`; returns the query
    and the expanded `attrs` (which also project the output)."""
    page = parse_page(params, default_limit=default_limit, max_limit=max_limit)
    ids = tuple(i.strip() for i in params["id"].split(",")) if "id" in params else ()
    for eid in ids:
        validate_entity_id(eid)
    attrs = parse_names(params.get("attrs"), terms, "attrs")
    types = parse_type_selector(params.get("type"), terms) if params.get("type") != "*" else None
    q = parse_q_param(params.get("q"), terms)
    geo = parse_geo_params(params, terms)
    scope_q = parse_scope_q_param(params.get("scopeQ"))
    parse_bool(params, "local")  # every entity here is local (no federation): the same answer either way
    id_pattern = params.get("idPattern")
    if id_pattern is not None:
        _check_regex(id_pattern)
    narrowed = ids or id_pattern or types or attrs or q or geo or scope_q or params.get("type") == "*"
    if require_filter and not narrowed:
        raise BadRequestData("a query needs at least one of type, id, idPattern, attrs, q, scopeQ or a geo-query")
    query = EntityQuery(
        ids=ids,
        id_pattern=id_pattern,
        types=types,
        attrs=attrs,
        q=q,
        geo=geo,
        scope_q=scope_q,
        limit=page.limit,
        offset=page.offset,
        count=page.count,
    )
    return query, attrs


def _check_regex(pattern: str) -> None:
    problem = pattern_problem(pattern)
    if problem:
        raise BadRequestData(f"idPattern {problem}")


@router.post("/entities", status_code=201, summary="Create entity (§5.6.1)")
async def create_entity(request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request, write=True)
    body = await json_body(request)
    access_of(request).require_entities(body_ids(body.data), "write")
    terms = await resolve(request, body.context)
    entity_id = await run_in_threadpool(platform.entities.create, tenant, body.data, terms)
    return empty_response(request, 201, {"Location": _entity_path(entity_id)})


@router.get("/entities", summary="Query entities (§5.7.2)")
async def query_entities(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, QUERY_PARAMS)
    accept = accept_of(request)
    tenant_of(request)  # 404 NonexistentTenant before any work
    terms = await request_terms(request)
    options = parse_options(params, allowed=REPRESENTATION_OPTIONS)
    settings = platform.settings
    query, attrs = build_entity_query(params, terms, default_limit=settings.default_limit, max_limit=settings.max_limit)
    return await _answer_query(request, query, attrs, terms, options.fmt, options.sys_attrs, accept)


async def _answer_query(
    request: Request, query: EntityQuery, attrs: tuple[str, ...], terms: TermMap, fmt: str, sys_attrs: bool, accept: str
) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    tenant = tenant_of(request)
    pick = parse_projection(params.get("pick"), terms, "pick")
    omit = parse_projection(params.get("omit"), terms, "omit")
    pick = narrow_pick(pick, attrs)
    lang = params.get("lang")
    dataset_ids = parse_dataset_ids(params.get("datasetId"))
    query = dataclasses.replace(query, datasets=readable_scope(request))
    result = await run_in_threadpool(platform.entities.query, tenant, query)
    body = [
        compact_entity(e, terms, fmt=fmt, sys_attrs=sys_attrs, pick=pick, omit=omit, lang=lang, dataset_ids=dataset_ids)
        for e in result.entities
    ]
    headers = pagination_headers(
        request, offset=query.offset, limit=query.limit, returned=len(body), total=result.count, count=query.count
    )
    if query.limit == 0:
        body = []
    geometry = params.get("geometryProperty")
    geometries = _keyvalue_geometries(request, accept, result.entities, geometry, terms)
    return json_response(
        request, body, terms, headers=headers, accept=accept, geometry_property=geometry, geometries=geometries
    )


def _keyvalue_geometries(
    request: Request, accept: str, stored: Iterable[Entity], geometry: str | None, terms: TermMap
) -> dict[str, list[Any]] | None:
    """For GeoJSON in keyValues: what the stored entities' GeoProperty holds (see ld_http.geo_values)."""
    if accept != "application/geo+json" or not simplified(request):
        return None
    return geo_values(stored, terms.expand(geometry or "location"))


@router.get("/entities/{entity_id:path}/attrs", include_in_schema=False)
async def attrs_collection_get(entity_id: str, request: Request) -> Response:
    raise BadRequestData("GET is not defined on an entity's attrs collection; retrieve the entity instead")


@router.get("/entities/{entity_id:path}", summary="Retrieve entity (§5.7.1)")
async def retrieve_entity(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, RETRIEVE_PARAMS)
    parse_bool(params, "local")  # every entity here is local (no federation): the same answer either way
    accept = accept_of(request)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    options = parse_options(params, allowed=REPRESENTATION_OPTIONS)
    attrs = parse_names(params.get("attrs"), terms, "attrs")
    type_iris = _type_iris(params, terms)
    dataset_ids = parse_dataset_ids(params.get("datasetId"))
    body = await run_in_threadpool(
        lambda: platform.entities.retrieve(
            tenant,
            entity_id,
            terms,
            attrs=attrs,
            type_iris=type_iris,
            fmt=options.fmt,
            sys_attrs=options.sys_attrs,
            pick=parse_projection(params.get("pick"), terms, "pick"),
            omit=parse_projection(params.get("omit"), terms, "omit"),
            lang=params.get("lang"),
            dataset_ids=dataset_ids,
        )
    )
    geometry = params.get("geometryProperty")
    geometries = None
    if accept == "application/geo+json" and simplified(request):  # the stored document tells a GeoProperty
        stored = await run_in_threadpool(platform.store.get, tenant, [entity_id])
        geometries = _keyvalue_geometries(request, accept, stored.values(), geometry, terms)
    return json_response(
        request, body, terms, accept=accept, geometry_property=geometry, geometries=geometries
    )


@router.patch(
    "/entities/{entity_id:path}/attrs/{attr_id:path}", status_code=204, summary="Partial attribute update (§5.6.4)"
)
async def patch_attribute(entity_id: str, attr_id: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    await run_in_threadpool(
        platform.entities.patch_attr, tenant, entity_id, terms.expand(attr_id), _without_context(body.data), terms
    )
    return empty_response(request)


@router.put("/entities/{entity_id:path}/attrs/{attr_id:path}", status_code=204, summary="Replace attribute (§5.6.19)")
async def replace_attribute(entity_id: str, attr_id: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    await run_in_threadpool(
        platform.entities.replace_attr, tenant, entity_id, terms.expand(attr_id), _without_context(body.data), terms
    )
    return empty_response(request)


@router.put("/entities/{entity_id:path}", status_code=204, summary="Replace entity (§5.6.18)")
async def replace_entity(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    await run_in_threadpool(platform.entities.replace, tenant, entity_id, body.data, terms)
    return empty_response(request)


@router.delete("/entities/{entity_id:path}/attrs/{attr_id:path}", status_code=204, summary="Delete attribute (§5.6.5)")
async def delete_attribute(entity_id: str, attr_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"datasetId", "deleteAll"})
    tenant = tenant_of(request)
    terms = await request_terms(request)
    await run_in_threadpool(
        lambda: platform.entities.delete_attr(
            tenant,
            entity_id,
            terms.expand(attr_id),
            terms,
            dataset_id=params.get("datasetId"),
            delete_all=parse_bool(params, "deleteAll"),
        )
    )
    return empty_response(request)


@router.post("/entities/{entity_id:path}/attrs", summary="Append attributes (§5.6.3)")
async def append_attributes(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"options"})
    options = parse_options(params, allowed={"noOverwrite"})
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    result = await run_in_threadpool(
        lambda: platform.entities.append_attrs(
            tenant, entity_id, _without_context(body.data), terms, no_overwrite=options.no_overwrite
        )
    )
    if result.not_updated:
        return json_response(request, result.body(terms), terms, status=207, accept="application/json")
    return empty_response(request)


@router.patch("/entities/{entity_id:path}/attrs", summary="Update attributes (§5.6.2)")
async def update_attributes(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    result = await run_in_threadpool(
        platform.entities.update_attrs, tenant, entity_id, _without_context(body.data), terms
    )
    if result.not_updated:
        return json_response(request, result.body(terms), terms, status=207, accept="application/json")
    return empty_response(request)


@router.patch("/entities/{entity_id:path}", status_code=204, summary="Merge entity (§5.6.17)")
async def merge_entity(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"observedAt", "options", "format", "type", "local"})
    parse_bool(params, "local")
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    type_iris = _type_iris(params, terms)
    observed_at = params.get("observedAt")
    if observed_at is not None:
        from polis.ngsi_ld.params import parse_datetime

        observed_at = parse_datetime(observed_at, "observedAt").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await run_in_threadpool(
        lambda: platform.entities.merge(
            tenant, entity_id, _without_context(body.data), terms, observed_at=observed_at, type_iris=type_iris
        )
    )
    return empty_response(request)


@router.delete("/entities/{entity_id:path}", status_code=204, summary="Delete entity (§5.6.6)")
async def delete_entity(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"type", "local"})
    parse_bool(params, "local")
    tenant = tenant_of(request)
    terms = await request_terms(request)
    type_iris = _type_iris(params, terms)  # a client's safety catch: an entity of another type is not deleted
    await run_in_threadpool(lambda: platform.entities.delete(tenant, entity_id, type_iris=type_iris, terms=terms))
    return empty_response(request)


def _type_iris(params: dict[str, str], terms: TermMap) -> tuple[str, ...]:
    """The expanded types a `type` parameter names (any of them will do), as retrieve reads it."""
    types = parse_type_selector(params.get("type"), terms)
    return tuple(t for group in types.any_of for t in group) if types else ()


def _without_context(data: Any) -> Any:
    if isinstance(data, dict) and "@context" in data:
        return {k: v for k, v in data.items() if k != "@context"}
    return data


# -- batch operations -------------------------------------------------------------------------


def _within_batch_limit(items: Any, limit: int, what: str) -> None:
    """A request array over the limit is refused whole: the body size alone let 100,000 failing items through,
    each answered with its own error object."""
    if isinstance(items, list) and len(items) > limit:
        raise BadRequestData(
            f"{what} holds {len(items):,} entities, more than the {limit:,} this hub takes in one request "
            "(POLIS_MAX_BATCH_ENTITIES); send them in several requests"
        )


async def _batch(request: Request, op: str) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"options", "local"})
    parse_bool(params, "local")  # every entity here is local (no federation): the same answer either way
    allowed = {"upsert": {"replace", "update"}, "update": {"noOverwrite"}}.get(op, set())
    options = parse_options(params, allowed=allowed)
    if options.replace and options.update:
        raise BadRequestData("options=replace and options=update exclude each other")
    tenant = tenant_of(request, write=True)
    body = await json_body(request)
    _within_batch_limit(body.data, platform.settings.max_batch_entities, "a batch operation")
    access_of(request).require_entities(body_ids(body.data), "write")  # all or nothing: no partial batch
    shared_terms = await resolve(request, body.context) if not body.ld else None
    contexts = platform.contexts

    def terms_for(item: Any) -> TermMap:
        if shared_terms is not None:
            return shared_terms
        return contexts.resolve(item.get("@context") if isinstance(item, dict) else None)

    result = await run_in_threadpool(
        lambda: platform.entities.batch(
            tenant, op, body.data, terms_for, replace=not options.update, no_overwrite=options.no_overwrite
        )
    )
    if result.errors:
        return json_response(request, result.body(), None, status=207, accept="application/json")
    if op == "create":
        return json_response(request, result.success, None, status=201, accept="application/json")
    if op == "upsert" and result.created:
        return json_response(request, result.created, None, status=201, accept="application/json")
    return empty_response(request)


@router.post("/entityOperations/create", summary="Batch create (§5.6.7)")
async def batch_create(request: Request) -> Response:
    return await _batch(request, "create")


@router.post("/entityOperations/upsert", summary="Batch upsert (§5.6.8)")
async def batch_upsert(request: Request) -> Response:
    return await _batch(request, "upsert")


@router.post("/entityOperations/update", summary="Batch update (§5.6.9)")
async def batch_update(request: Request) -> Response:
    return await _batch(request, "update")


@router.post("/entityOperations/merge", summary="Batch merge (§5.6.20)")
async def batch_merge(request: Request) -> Response:
    return await _batch(request, "merge")


@router.post("/entityOperations/delete", summary="Batch delete (§5.6.10)")
async def batch_delete(request: Request) -> Response:
    return await _batch(request, "delete")


@router.post("/entityOperations/query", summary="Query entities by POST (§5.7.2)")
async def post_query(request: Request) -> Response:
    """The Query body (§5.2.23): entities, attrs, q, geoQ, scopeQ; pagination and options stay in the URL.

    The next/prev pages (Link rel="next"/"prev", §6.3.10) are this URL with `offset` moved: POST the same body
    to it (the selection travels in the body, not in the URL, so a GET there is 405)."""
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"limit", "offset", "count", "options", "format", "lang", "pick", "omit", "local"})
    parse_bool(params, "local")  # every entity here is local (no federation): the same answer either way
    accept = accept_of(request)
    tenant_of(request)  # 404 NonexistentTenant before any work
    body = await json_body(request)
    terms = await resolve(request, body.context)
    query, attrs = query_from_body(body.data, params, terms, platform.settings)
    options = parse_options(params, allowed=REPRESENTATION_OPTIONS)
    return await _answer_query(request, query, attrs, terms, options.fmt, options.sys_attrs, accept)


def query_from_body(
    data: Any, params: dict[str, str], terms: TermMap, settings: Settings
) -> tuple[EntityQuery, tuple[str, ...]]:
    """A Query body (§5.2.23) as the entity query it asks for, paged by `limit`/`offset`/`count` from the URL,
    and its expanded `attrs`: shared by POST /entityOperations/query and POST /temporal/entityOperations/query
    (whose body adds `temporalQ`, read by that route)."""
    if not isinstance(data, dict) or data.get("type") != "Query":
        raise BadRequestData('the body must be a Query object with "type": "Query"')
    page_query, _ = build_entity_query(
        {k: v for k, v in params.items() if k in ("limit", "offset", "count")},
        terms,
        default_limit=settings.default_limit,
        max_limit=settings.max_limit,
        require_filter=False,
    )
    selectors = data.get("entities") or []
    if not isinstance(selectors, list):
        raise BadRequestData("Query.entities must be an array")
    _within_batch_limit(selectors, settings.max_batch_entities, "Query.entities")
    parsed: list[EntitySelector] = []
    for selector in selectors:
        if not isinstance(selector, dict) or not isinstance(selector.get("type"), str):
            raise BadRequestData("each Query.entities item needs a type")
        if "idPattern" in selector and not isinstance(selector["idPattern"], str):
            raise BadRequestData("Query.entities idPattern must be a string")
        types = parse_type_selector(selector["type"], terms)
        assert types is not None  # a string type always gives a selector
        pattern = selector.get("idPattern")
        if pattern is not None:
            _check_regex(pattern)
        ids: tuple[str, ...] = (validate_entity_id(selector["id"]),) if "id" in selector else ()
        parsed.append(EntitySelector(types, ids, None if ids else pattern))
    # One selector narrows as the GET query's id/idPattern/type do; several match any one of them, each with
    # its own ids and pattern (§5.2.23).
    one = parsed[0] if len(parsed) == 1 else None
    groups = list(one.types.any_of) if one is not None else []
    ids = one.ids if one is not None else ()
    id_pattern = one.id_pattern if one is not None else None
    attrs_raw = data.get("attrs")
    if attrs_raw is not None and (not isinstance(attrs_raw, list) or not all(isinstance(a, str) for a in attrs_raw)):
        raise BadRequestData("Query.attrs must be an array of attribute names")
    attrs = tuple(terms.expand(a) for a in attrs_raw or ())
    q_text = data.get("q")
    if q_text is not None and not isinstance(q_text, str):
        raise BadRequestData("Query.q must be a string")
    geo_body = data.get("geoQ")
    geo = None
    if geo_body is not None:
        if not isinstance(geo_body, dict):
            raise BadRequestData("Query.geoQ must be an object")
        geo = parse_geoquery(
            geo_body.get("georel"),
            geo_body.get("geometry"),
            geo_body.get("coordinates"),
            geo_body.get("geoproperty"),
            terms.expand,
        )
    scope_text = data.get("scopeQ")
    if scope_text is not None and not isinstance(scope_text, str):
        raise BadRequestData("Query.scopeQ must be a string")
    scope_q = parse_scope_q_param(scope_text)
    if not (parsed or attrs or q_text or geo or scope_q):
        raise BadRequestData("a Query needs at least one of entities, attrs, q, scopeQ or geoQ")
    query = EntityQuery(
        ids=ids,
        id_pattern=id_pattern,
        types=TypeSelector(tuple(groups)) if groups else None,
        selectors=tuple(parsed) if len(parsed) > 1 else (),
        attrs=attrs,
        q=parse_q(q_text, terms.expand) if q_text else None,
        geo=geo,
        scope_q=scope_q,
        limit=page_query.limit,
        offset=page_query.offset,
        count=page_query.count,
    )
    return query, attrs
