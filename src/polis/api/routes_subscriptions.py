"""`/subscriptions` (§5.8): translate HTTP to `SubscriptionService` calls and back, plus the
server-sent-events stream of `urn:polis:sse` subscriptions (what the dashboard listens to)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from polis.access.enforce import access_of, body_ids
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
from polis.ngsi_ld.params import check_known, parse_options, parse_page
from polis.subscriptions.model import department_id_prefix, render

router = APIRouter(prefix="/ngsi-ld/v1", tags=["subscriptions"])

# A subscription has no GeoJSON form: Accept is weighed over these two only, so a header that also accepts
# JSON (`application/geo+json, application/json`) gets JSON, and only one that accepts nothing else gets 406.
SUBSCRIPTION_TYPES = NOT_GEO
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream


def _location(sub_id: str) -> str:
    return "/ngsi-ld/v1/subscriptions/" + quote(sub_id, safe=":")


def _without_context(data: Any) -> Any:
    if isinstance(data, dict) and "@context" in data:
        return {k: v for k, v in data.items() if k != "@context"}
    return data


@router.post("/subscriptions", status_code=201, summary="Create subscription (§5.8.1)")
async def create_subscription(request: Request) -> Response:
    platform = platform_of(request)
    check_known(dict(request.query_params), set())
    tenant = tenant_of(request, write=True)
    body = await json_body(request)
    _require_named_entities(request, body.data)
    terms = await resolve(request, body.context)
    department = access_of(request).department
    id_prefix = None if _manager(request) else department_id_prefix(department)
    sub = await run_in_threadpool(
        lambda: platform.subscriptions.create(
            tenant, _without_context(body.data), terms, body.context, department=department, id_prefix=id_prefix
        )
    )
    if tenant:
        platform.store.ensure_tenant(tenant)  # a subscription, like an entity, brings its tenant into being
    return empty_response(request, 201, {"Location": _location(sub.id)})


@router.get("/subscriptions", summary="Query subscriptions (§5.8.4)")
async def list_subscriptions(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"limit", "offset", "count", "options"})
    accept = accept_of(request, SUBSCRIPTION_TYPES)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    options = parse_options(params, allowed={"sysAttrs"})
    settings = platform.settings
    page = parse_page(params, default_limit=settings.default_limit, max_limit=settings.max_limit)
    # a department lists its own subscriptions, unless it administers them all
    owner = None if _manager(request) else access_of(request).department
    found, total = platform.subscriptions.list(tenant, page.offset, page.limit, department=owner)
    body = [render(sub, status, terms, sys_attrs=options.sys_attrs) for sub, status in found]
    headers = pagination_headers(
        request, offset=page.offset, limit=page.limit, returned=len(body), total=total, count=page.count
    )
    return json_response(request, body, terms, headers=headers, accept=accept)


@router.get("/subscriptions/{subscription_id:path}/stream", summary="Notifications as server-sent events")
async def stream_subscription(subscription_id: str, request: Request) -> Response:
    """The notifications of a subscription whose `notification.endpoint.uri` is `urn:polis:sse`, as a
    `text/event-stream`: one `notification` event per notification (`id` = the notification id, `data` =
    the Notification JSON). Pending notifications arrive first, in order."""
    platform = platform_of(request)
    check_known(dict(request.query_params), set())
    tenant = tenant_of(request)
    service = platform.subscriptions
    client = service.open_stream(tenant, subscription_id, asyncio.get_running_loop())

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": stream open\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                client.taken()
                if event is None:
                    return
                yield event
        finally:
            service.close_stream(tenant, subscription_id, client)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/subscriptions/{subscription_id:path}", summary="Retrieve subscription (§5.8.3)")
async def retrieve_subscription(subscription_id: str, request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"options"})
    accept = accept_of(request, SUBSCRIPTION_TYPES)
    tenant = tenant_of(request)
    terms = await request_terms(request)
    options = parse_options(params, allowed={"sysAttrs"})
    sub, status = platform.subscriptions.get(tenant, subscription_id)
    body = render(sub, status, terms, sys_attrs=options.sys_attrs)
    return json_response(request, body, terms, accept=accept)


@router.patch("/subscriptions/{subscription_id:path}", status_code=204, summary="Update subscription (§5.8.2)")
async def update_subscription(subscription_id: str, request: Request) -> Response:
    platform = platform_of(request)
    check_known(dict(request.query_params), set())
    tenant = tenant_of(request)
    body = await json_body(request)
    _require_named_entities(request, body.data)
    terms = await resolve(request, body.context)
    await run_in_threadpool(
        platform.subscriptions.update, tenant, subscription_id, _without_context(body.data), terms, body.context
    )
    return empty_response(request)


@router.delete("/subscriptions/{subscription_id:path}", status_code=204, summary="Delete subscription (§5.8.5)")
async def delete_subscription(subscription_id: str, request: Request) -> Response:
    platform = platform_of(request)
    check_known(dict(request.query_params), set())
    tenant = tenant_of(request)
    await run_in_threadpool(platform.subscriptions.delete, tenant, subscription_id)
    return empty_response(request)


def _manager(request: Request) -> bool:
    """Whether the department administers `subscriptions`: it sees them all and chooses any id."""
    access = access_of(request)
    return access.control.allows(access.department, "subscriptions", "aggregate", "administer")


def _require_named_entities(request: Request, data: Any) -> None:
    """Entity ids a subscription names must be in datasets its department may subscribe to (polis.access);
    what a type selects is narrowed at notification time instead."""
    selectors = data.get("entities") if isinstance(data, dict) else None
    access_of(request).require_entities(body_ids(selectors if isinstance(selectors, list) else []), "subscribe")
