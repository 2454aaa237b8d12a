"""`/polis/v1/access`: who the caller is and what it was granted, and the audit chain's state."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.access.audit import verify
from polis.access.enforce import access_of
from polis.api.ld_http import declared_query_only, json_response, platform_of

router = APIRouter(prefix="/polis/v1/access", tags=["access"], dependencies=[Depends(declared_query_only)])


@router.get("/me", summary="The calling department and its grants")
async def me(request: Request) -> Response:
    access = access_of(request)
    perms = access.control.permissions(access.department)
    grants = [{"dataset": g.dataset, "tier": g.tier, "action": g.action} for g in sorted(perms.grants, key=str)]
    body = {"department": access.department, "keyId": access.principal.key_id, "grants": grants}
    return json_response(request, body, None, accept="application/json")


@router.get("/audit/verify", summary="Check the audit log's hash chain (administer on dataset 'audit')")
async def audit_verify(request: Request, head: str | None = None) -> Response:
    path = platform_of(request).settings.audit_log_path
    result = await run_in_threadpool(verify, path, head)
    body = {"ok": result.ok, "entries": result.entries, "head": result.head, "problem": result.problem}
    return json_response(request, body, None, accept="application/json")
