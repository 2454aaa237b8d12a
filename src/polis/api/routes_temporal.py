"""`/temporal/entities`: the history of attributes (§5.6.11–5.6.16, §5.7.3–5.7.4)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.access.enforce import access_of, body_ids, readable_scope
from polis.api.ld_http import (
    NOT_GEO,
    accept_of,
    empty_response,
    json_body,
    json_response,
    pagination_headers,
    platform_of,
    request_terms,
    resolve,
    tenant_of,
)
from polis.api.routes_entities import QUERY_PARAMS, build_entity_query
from polis.domain.errors import BadRequestData
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.params import (
    check_known,
    narrow_pick,
    parse_bool,
    parse_dataset_ids,
    parse_names,
    parse_options,
    parse_projection,
)
from polis.ngsi_ld.temporal import (
    Aggregation,
    Window,
    content_range,
    cut_to_window,
    keep_whole_periods,
    parse_aggregation,
    parse_temporal_query,
    render_temporal_entity,
)
from polis.store.base import EntityQuery, TemporalAttribute, TemporalQuery

router = APIRouter(prefix="/ngsi-ld/v1/temporal", tags=["temporal"])

# Not sysAttrs: history keeps no createdAt/modifiedAt of its instances, so it is refused rather than ignored.
TEMPORAL_OPTIONS = {"normalized", "temporalValues", "aggregatedValues"}
TEMPORAL_PARAMS = {"timerel", "timeAt", "endTimeAt", "timeproperty", "lastN", "aggrMethods", "aggrPeriodDuration"}
# The query parameters of each write route (the OAS's): any other, `options=noOverwrite` included, is refused
# rather than silently ignored. `local` changes nothing here (every entity is local: no federation).
WRITE_PARAMS = {"local"}
DELETE_ATTR_PARAMS = {"datasetId", "deleteAll", "local"}


def _check_write_params(request: Request, known: set[str] = WRITE_PARAMS) -> dict[str, str]:
    params = dict(request.query_params)
    check_known(params, known)
    parse_bool(params, "local")
    return params


def _format(params: dict[str, str]) -> tuple[str, Any]:
    options = parse_options(params, allowed=TEMPORAL_OPTIONS)
    fmt = options.temporal or "normalized"
    aggregation = parse_aggregation(params) if fmt == "aggregatedValues" else None
    return fmt, aggregation


def _cut(
    history: dict[str, dict[str, TemporalAttribute]], temporal: TemporalQuery, aggregation: Aggregation | None
) -> Window | None:
    """Over the cap: every series trimmed to one range (and, aggregated, to whole periods), so that paging
    by the Content-Range reaches each instance once (polis.ngsi_ld.temporal.content_range)."""
    window = cut_to_window(history, temporal.last_n)
    if window is not None and aggregation is not None:
        keep_whole_periods(history, window, aggregation, temporal)
    return window


def _status_and_headers(
    history: dict[str, Any], window: Window | None, extra: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    headers = dict(extra or {})
    span = content_range(history, window)
    if span is None:
        return 200, headers
    headers["Content-Range"] = span
    return 206, headers


@router.post("/entities", summary="Create or add temporal instances (§5.6.11)")
async def create_temporal(request: Request) -> Response:
    _check_write_params(request)
    platform = platform_of(request)
    tenant = tenant_of(request, write=True)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    data = body.data
    access_of(request).require_entities(body_ids(data), "write")
    if isinstance(data, dict) and "@context" in data:
        data = {k: v for k, v in data.items() if k != "@context"}
    created = await run_in_threadpool(platform.temporal.create_or_add, tenant, data, terms)
    if created:
        location = "/ngsi-ld/v1/temporal/entities/" + quote(str(data["id"]), safe=":")
        return empty_response(request, 201, {"Location": location})
    return empty_response(request, 204)


@router.get("/entities", summary="Query temporal evolution of entities (§5.7.4)")
async def query_temporal(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, QUERY_PARAMS | TEMPORAL_PARAMS)
    accept = accept_of(request, NOT_GEO)  # a temporal evolution has no GeoJSON form
    tenant_of(request)  # 404 NonexistentTenant before any work
    terms = await request_terms(request)
    settings = platform.settings
    query, attrs = build_entity_query(params, terms, default_limit=settings.default_limit, max_limit=settings.max_limit)
    temporal = parse_temporal_query(params, attrs, settings.max_temporal_instances)
    return await answer_temporal_query(request, query, attrs, temporal, terms, params, accept)


async def answer_temporal_query(
    request: Request,
    query: EntityQuery,
    attrs: tuple[str, ...],
    temporal: TemporalQuery,
    terms: TermMap,
    params: dict[str, str],
    accept: str,
) -> Response:
    """The answer to a temporal query whose selection is read, from this URL or from a Query body
    (POST /temporal/entityOperations/query, polis.api.routes_temporal_query): one code, so one answer.
    `params`: the URL's (options, aggregation, pick/omit)."""
    platform = platform_of(request)
    tenant = tenant_of(request)
    fmt, aggregation = _format(params)
    query = dataclasses.replace(query, datasets=readable_scope(request))
    pick = narrow_pick(parse_projection(params.get("pick"), terms, "pick"), attrs)
    omit = parse_projection(params.get("omit"), terms, "omit")
    entities, count, history = await run_in_threadpool(platform.temporal.query, tenant, query, temporal)
    window = _cut(history, temporal, aggregation)
    body = [
        render_temporal_entity(
            e,
            history.get(e["id"], {}),
            terms,
            fmt=fmt,
            aggregation=aggregation,
            temporal=temporal,
            pick=pick,
            omit=omit,
            window=window,
        )
        for e in entities
    ]
    # The entities are paged as /entities pages them (§5.7.4 takes its limit/offset/count); the instances, by
    # Content-Range (206).
    page = pagination_headers(
        request, offset=query.offset, limit=query.limit, returned=len(body), total=count, count=query.count
    )
    status, headers = _status_and_headers(history, window, page)
    return json_response(request, body, terms, status=status, headers=headers, accept=accept)


@router.get("/entities/{entity_id:path}", summary="Retrieve temporal evolution of an entity (§5.7.3)")
async def retrieve_temporal(entity_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    known = {"attrs", "options", "format", "lang", "type", "datasetId", "pick", "omit", "local"}
    check_known(params, TEMPORAL_PARAMS | known)
    parse_bool(params, "local")  # every entity here is local (no federation): the same answer either way
    accept = accept_of(request, NOT_GEO)  # a temporal evolution has no GeoJSON form
    tenant = tenant_of(request)
    terms = await request_terms(request)
    attrs = parse_names(params.get("attrs"), terms, "attrs")
    temporal = parse_temporal_query(params, attrs, platform.settings.max_temporal_instances)
    fmt, aggregation = _format(params)
    pick = narrow_pick(parse_projection(params.get("pick"), terms, "pick"), attrs)  # as the query takes them
    omit = parse_projection(params.get("omit"), terms, "omit")
    entity, history = await run_in_threadpool(platform.temporal.retrieve, tenant, entity_id, temporal)
    window = _cut({entity_id: history}, temporal, aggregation)
    body = render_temporal_entity(
        entity,
        history,
        terms,
        fmt=fmt,
        aggregation=aggregation,
        temporal=temporal,
        pick=pick,
        omit=omit,
        window=window,
    )
    status, headers = _status_and_headers({entity_id: history}, window)
    return json_response(request, body, terms, status=status, headers=headers, accept=accept)


@router.post("/entities/{entity_id:path}/attrs", status_code=204, summary="Add temporal attributes (§5.6.12)")
async def add_temporal_attrs(entity_id: str, request: Request) -> Response:
    _check_write_params(request)
    platform = platform_of(request)
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    data = body.data
    if not isinstance(data, dict):
        raise BadRequestData("the request body must be a JSON object of attributes")
    data = {k: v for k, v in data.items() if k != "@context"}
    add = functools.partial(platform.temporal.create_or_add, must_exist=True)  # 404 under the write lock
    await run_in_threadpool(add, tenant, {**data, "id": entity_id}, terms)
    return empty_response(request)


@router.patch(
    "/entities/{entity_id:path}/attrs/{attr_id}/{instance_id}",
    status_code=204,
    summary="Modify one temporal instance (§5.6.14)",
)
async def modify_instance(entity_id: str, attr_id: str, instance_id: str, request: Request) -> Response:
    _check_write_params(request)
    platform = platform_of(request)
    tenant = tenant_of(request)
    body = await json_body(request)
    terms = await resolve(request, body.context)
    await run_in_threadpool(
        platform.temporal.modify_instance, tenant, entity_id, terms.expand(attr_id), instance_id, body.data, terms
    )
    return empty_response(request)


@router.delete(
    "/entities/{entity_id:path}/attrs/{attr_id}/{instance_id}",
    status_code=204,
    summary="Delete one temporal instance (§5.6.15)",
)
async def delete_instance(entity_id: str, attr_id: str, instance_id: str, request: Request) -> Response:
    _check_write_params(request)
    platform = platform_of(request)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    await run_in_threadpool(platform.temporal.delete_instance, tenant, entity_id, terms.expand(attr_id), instance_id)
    return empty_response(request)


@router.delete(
    "/entities/{entity_id:path}/attrs/{attr_id}", status_code=204, summary="Delete a temporal attribute (§5.6.13)"
)
async def delete_temporal_attr(entity_id: str, attr_id: str, request: Request) -> Response:
    params = _check_write_params(request, DELETE_ATTR_PARAMS)
    delete_all = parse_bool(params, "deleteAll")
    # Without datasetId, the default instances only (those without one): not every dataset's (deleteAll).
    dataset_ids = parse_dataset_ids(params.get("datasetId")) or (None,)
    platform = platform_of(request)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    delete = functools.partial(platform.temporal.delete_attribute, dataset_ids=dataset_ids, delete_all=delete_all)
    await run_in_threadpool(delete, tenant, entity_id, terms.expand(attr_id), terms)
    return empty_response(request)


@router.delete("/entities/{entity_id:path}", status_code=204, summary="Delete a temporal entity (§5.6.16)")
async def delete_temporal(entity_id: str, request: Request) -> Response:
    _check_write_params(request)
    platform = platform_of(request)
    tenant = tenant_of(request)
    await run_in_threadpool(platform.temporal.delete, tenant, entity_id)
    return empty_response(request)
