"""`/polis/v1/access`: who the caller is and what it was granted, and the audit chain's state."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.access.audit import verify
from polis.access.enforce import access_of
from polis.access.grants import Grant
from polis.api.ld_http import declared_query_only, json_response, platform_of

router = APIRouter(prefix="/polis/v1/access", tags=["access"], dependencies=[Depends(declared_query_only)])


@router.get("/me", summary="The calling department, its grants and those it holds from `public`")
async def me(request: Request) -> Response:
    access = access_of(request)
    perms = access.control.permissions(access.department)
    body = {
        "department": access.department,
        "keyId": access.principal.key_id,
        "grants": _listed(perms.grants),
        # What every department may do because anyone may (polis.access.grants.Permissions): without it a
        # department reading its own grants would not learn it can read the CAP feed.
        "inheritedGrants": _listed(perms.inherited),
    }
    return json_response(request, body, None, accept="application/json")


def _listed(grants: Iterable[Grant]) -> list[dict[str, str]]:
    return [{"dataset": g.dataset, "tier": g.tier, "action": g.action} for g in sorted(grants, key=str)]


@router.get("/audit/verify", summary="Check the audit log's hash chain (administer on dataset 'audit')")
async def audit_verify(request: Request, head: str | None = None) -> Response:
    path = platform_of(request).settings.audit_log_path
    result = await run_in_threadpool(verify, path, head)
    body = {"ok": result.ok, "entries": result.entries, "head": result.head, "problem": result.problem}
    return json_response(request, body, None, accept="application/json")
