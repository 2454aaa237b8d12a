"""`/types`, `/attributes` (§5.7.5–5.7.10) and `/jsonldContexts` (§5.13): what the hub holds and how
to read it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.access.enforce import readable_scope
from polis.api.ld_http import (
    NOT_GEO,
    accept_of,
    empty_response,
    json_body,
    json_response,
    platform_of,
    request_terms,
    tenant_of,
)
from polis.domain.errors import BadRequestData, ResourceNotFound
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.params import check_known, parse_bool
from polis.store.base import AttributeInfo

router = APIRouter(prefix="/ngsi-ld/v1", tags=["discovery"])


@router.get("/types", summary="Available entity types (§5.7.5, §5.7.6)")
async def list_types(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"details", "local"})
    tenant = tenant_of(request)
    terms = await request_terms(request)
    types = await run_in_threadpool(platform.store.types, tenant, readable_scope(request))
    if parse_bool(params, "details"):
        body: Any = [
            {
                "id": t.type,
                "type": "EntityType",
                "typeName": terms.compact(t.type),
                "attributeNames": sorted(terms.compact(a) for a in t.attributes),
            }
            for t in types
        ]
    else:
        body = {
            "id": f"urn:ngsi-ld:EntityTypeList:{uuid.uuid4()}",
            "type": "EntityTypeList",
            "typeList": [terms.compact(t.type) for t in types],
        }
    return json_response(request, body, terms, accept=accept_of(request, NOT_GEO))


@router.get("/types/{type_name:path}", summary="Details of one entity type (§5.7.7)")
async def type_info(type_name: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    iri = terms.expand_type(type_name)
    types = await run_in_threadpool(platform.store.types, tenant, readable_scope(request))
    found = next((t for t in types if t.type == iri), None)
    if found is None:
        raise ResourceNotFound(f"no entity of type {type_name} exists")
    body = {
        "id": found.type,
        "type": "EntityTypeInfo",
        "typeName": terms.compact(found.type),
        "entityCount": found.entity_count,
        "attributeDetails": [
            {"id": attr, "type": "Attribute", "attributeName": terms.compact(attr), "attributeTypes": sorted(kinds)}
            for attr, kinds in sorted(found.attributes.items())
        ],
    }
    return json_response(request, body, terms, accept=accept_of(request, NOT_GEO))


def _attribute_body(info: AttributeInfo, terms: TermMap) -> dict[str, Any]:
    """An Attribute (§5.2.28): its attributeCount is the number of its instances (one per datasetId of each
    entity that holds it), not of the entities, which the type's EntityTypeInfo counts."""
    return {
        "id": info.attribute,
        "type": "Attribute",
        "attributeName": terms.compact(info.attribute),
        "attributeCount": info.attribute_count,
        "attributeTypes": sorted(info.kinds),
        "typeNames": sorted(terms.compact(t) for t in info.types),
    }


@router.get("/attributes", summary="Available attributes (§5.7.8, §5.7.9)")
async def list_attributes(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"details", "local"})
    tenant = tenant_of(request)
    terms = await request_terms(request)
    attrs = await run_in_threadpool(platform.store.attributes, tenant, readable_scope(request))
    if parse_bool(params, "details"):
        body: Any = [_attribute_body(a, terms) for a in attrs]
    else:
        body = {
            "id": f"urn:ngsi-ld:AttributeList:{uuid.uuid4()}",
            "type": "AttributeList",
            "attributeList": [terms.compact(a.attribute) for a in attrs],
        }
    return json_response(request, body, terms, accept=accept_of(request, NOT_GEO))


@router.get("/attributes/{attr_name:path}", summary="Details of one attribute (§5.7.10)")
async def attribute_info(attr_name: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    iri = terms.expand(attr_name)
    attrs = await run_in_threadpool(platform.store.attributes, tenant, readable_scope(request))
    found = next((a for a in attrs if a.attribute == iri), None)
    if found is None:
        raise ResourceNotFound(f"no entity holds the attribute {attr_name}")
    return json_response(request, _attribute_body(found, terms), terms, accept=accept_of(request, NOT_GEO))


@router.post("/jsonldContexts", status_code=201, summary="Register a @context (§5.13.2)")
async def add_context(request: Request) -> Response:
    platform = platform_of(request)
    body = await json_body(request, context_document=True)
    if not isinstance(body.data, dict) or "@context" not in body.data:
        raise BadRequestData("the body must be a JSON object with an @context member")
    context_id = await run_in_threadpool(platform.contexts.register, body.data)
    return empty_response(request, 201, {"Location": platform.contexts.hosted_url(context_id)})


@router.get("/jsonldContexts", summary="List @contexts (§5.13.3)")
async def list_contexts(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"details", "kind"})
    items = platform.contexts.registered()
    if "kind" in params:
        items = [i for i in items if i.get("kind") == params["kind"]]
    body = items if parse_bool(params, "details") else [i["url"] for i in items]
    return json_response(request, body, None, accept="application/json")


@router.get("/jsonldContexts/{context_id:path}", summary="Serve a @context (§5.13.4)")
async def get_context(context_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"details"})
    document = platform.contexts.get_registered(context_id)  # 404 when unknown
    if parse_bool(params, "details"):
        info = next(i for i in platform.contexts.registered() if i["id"] == context_id)
        return json_response(request, info, None, accept="application/json")
    return Response(content=_dumps(document), media_type="application/ld+json")


@router.delete("/jsonldContexts/{context_id:path}", status_code=204, summary="Delete a @context (§5.13.5)")
async def delete_context(context_id: str, request: Request) -> Response:
    platform_of(request).contexts.delete_registered(context_id)
    return empty_response(request)


def _dumps(document: Any) -> bytes:
    import orjson

    return orjson.dumps(document)
