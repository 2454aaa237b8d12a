"""Alerts over HTTP (polis.alerts does the work; this module only parses and serialises).

Rules (declare, list, read, replace, delete):
  POST   /polis/v1/alerts/rules              201 + Location; 400 names the bad field and why; 409 if the id exists
  GET    /polis/v1/alerts/rules
  GET    /polis/v1/alerts/rules/{ruleId}
  PUT    /polis/v1/alerts/rules/{ruleId}     201 created / 200 replaced (open alerts of the old rule are cancelled)
  DELETE /polis/v1/alerts/rules/{ruleId}     204 (its open alerts are cancelled)
Alerts (read only; the engine raises them):
  GET /polis/v1/alerts                        JSON list, newest first (?status=active|all, ?ruleId=); an alert
                                              unconfirmed for its validity is "expired", not active
  GET /polis/v1/alerts/feed                   Atom feed of the active alerts, each entry's content a CAP 1.2 alert
  GET /polis/v1/alerts/{alertId}              JSON; with Accept: application/cap+xml the latest CAP message
  GET /polis/v1/alerts/{alertId}/cap          the latest CAP 1.2 message (?message=N: the N-th, from 1, while kept:
                                              the first and the latest ones are, polis.alerts.model.KEPT_MESSAGES)
Every route honours NGSILD-Tenant.

A rule publishes what it watches (values, names, places) to every alerts reader and the public CAP feed, so it
watches only what the department declaring it may read: ids in its scope need read on their datasets (403), and
the engine skips entities of any other dataset (polis.alerts.rules.RuleOwner, recorded here, never by the client).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.access.datasets import DATASETS
from polis.access.enforce import access_of, wants_cap
from polis.alerts.cap import ATOM_MEDIA_TYPE, CAP_MEDIA_TYPE, atom_feed
from polis.alerts.model import AlertRecord, iso
from polis.alerts.rules import AnyRule, RuleOwner, parse_rule, rule_json
from polis.api.ld_http import declared_query_only, plain_json_body, platform_of, tenant_of
from polis.domain.errors import AlreadyExists, ResourceNotFound

router = APIRouter(prefix="/polis/v1/alerts", tags=["alerts"], dependencies=[Depends(declared_query_only)])


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def alert_json(record: AlertRecord) -> dict[str, Any]:
    base = f"/polis/v1/alerts/{record.id}"
    circle = record.circle()
    return {
        "id": record.id,
        "ruleId": record.rule_id,
        "status": record.status,  # active | cancelled | expired
        "msgType": record.msg_type,
        "event": record.rule.get("name"),
        "severity": record.rule.get("severity"),
        "urgency": record.rule.get("urgency"),
        "certainty": record.rule.get("certainty"),
        "headline": record.headline,
        "description": record.description,
        "onset": iso(record.onset),
        "effective": iso(record.effective),
        "expires": iso(record.expires),
        "area": None if circle is None else {"circle": {"center": list(circle[0]), "radiusM": round(circle[1], 1)}},
        "entities": [
            {
                "id": m.key,
                "name": m.name,
                "value": m.value,
                "threshold": m.threshold,
                "observedAt": iso(m.observed_at),
                "location": list(m.point) if m.point else None,
                **{k: v for k, v in m.details.items() if isinstance(v, str | int | float)},
            }
            for m in record.members.values()
        ],
        # the first and the latest (polis.alerts.model.KEPT_MESSAGES); messageCount: how many were ever sent
        "messages": [{"identifier": m.identifier, "msgType": m.msg_type, "sent": m.sent} for m in record.messages],
        "messageCount": record.sent_count,
        "cap": f"{base}/cap",
        "rule": record.rule,
    }


# -- rules -----------------------------------------------------------------------------------------------


def _declared_by(request: Request, rule: AnyRule) -> RuleOwner:
    """The department saving `rule` and the datasets it may read (the rule may watch no others). Ids its scope names
    need read on their datasets: 403 (audited) rather than a rule quietly watching nothing."""
    access = access_of(request)
    if rule.scope.ids:
        access.require_entities(rule.scope.ids, "read")
    readable = frozenset(access.readable())  # audited; 403 when it may read no dataset at all
    return RuleOwner(access.department, None if readable >= frozenset(DATASETS) else readable)


@router.post("/rules", status_code=201, summary="Declare an alert rule")
async def create_rule(request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request, write=True)
    body = await plain_json_body(request)
    rule = parse_rule(body)
    owner = await run_in_threadpool(_declared_by, request, rule)
    if rule.id is not None and platform.alerts.book.get(tenant, rule.id) is not None:
        raise AlreadyExists(f"alert rule {rule.id} already exists (PUT /polis/v1/alerts/rules/{rule.id} replaces it)")
    created, _ = await run_in_threadpool(platform.alerts.put_rule, tenant, body, None, owner)
    return _json(rule_json(created), 201, {"Location": f"/polis/v1/alerts/rules/{created.id}"})


@router.get("/rules", summary="List alert rules")
async def list_rules(request: Request) -> Response:
    platform = platform_of(request)
    return _json([rule_json(r) for r in platform.alerts.rules(tenant_of(request))])


@router.get("/rules/{rule_id}", summary="Read an alert rule")
async def get_rule(rule_id: str, request: Request) -> Response:
    platform = platform_of(request)
    return _json(rule_json(platform.alerts.rule(tenant_of(request), rule_id)))


@router.put("/rules/{rule_id}", summary="Declare or replace an alert rule")
async def put_rule(rule_id: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request, write=True)
    body = await plain_json_body(request)
    owner = await run_in_threadpool(_declared_by, request, parse_rule(body, rule_id=rule_id, stored=True))
    rule, created = await run_in_threadpool(platform.alerts.put_rule, tenant, body, rule_id, owner)
    return _json(rule_json(rule), 201 if created else 200, {"Location": f"/polis/v1/alerts/rules/{rule.id}"})


@router.delete("/rules/{rule_id}", status_code=204, summary="Delete an alert rule (its open alerts are cancelled)")
async def delete_rule(rule_id: str, request: Request) -> Response:
    platform = platform_of(request)
    await run_in_threadpool(platform.alerts.delete_rule, tenant_of(request), rule_id)
    return Response(status_code=204)


# -- alerts ---------------------------------------------------------------------------------------------------


@router.get("", summary="Alerts as JSON, newest first")
async def list_alerts(
    request: Request,
    status: str = Query("active", pattern="^(active|all)$", description="active (default) or all"),
    rule_id: str | None = Query(None, alias="ruleId"),
) -> Response:
    platform = platform_of(request)
    records = platform.alerts.alerts(tenant_of(request), active_only=status == "active", rule_id=rule_id)
    return _json([alert_json(r) for r in records])


@router.get("/feed", summary="Active alerts as an Atom feed of CAP 1.2 messages")
async def feed(request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    records = platform.alerts.alerts(tenant)
    entries = [(r, platform.alerts.caps[r.id][-1]) for r in records if platform.alerts.caps.get(r.id)]
    body = atom_feed(entries, str(request.base_url).rstrip("/"), tenant)
    return Response(body, media_type=ATOM_MEDIA_TYPE)


@router.get("/{alert_id}", summary="One alert as JSON (or CAP XML with Accept: application/cap+xml)")
async def get_alert(alert_id: str, request: Request) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    record = platform.alerts.alert(tenant, alert_id)
    accept = request.headers.get("accept", "")
    if wants_cap(accept):  # the same rule enforce.py checks the tier by
        latest = _latest_cap(platform.alerts.cap_messages(tenant, alert_id), alert_id)
        return Response(latest, media_type=CAP_MEDIA_TYPE)
    return _json(alert_json(record))


def _latest_cap(messages: list[bytes], alert_id: str) -> bytes:
    if not messages:  # kept for its record, but its message could not be built (the log says why)
        raise ResourceNotFound(f"alert {alert_id} has no CAP message")
    return messages[-1]


@router.get("/{alert_id}/cap", summary="One alert's latest (or N-th) CAP 1.2 message")
async def get_cap(alert_id: str, request: Request, message: int | None = Query(None, ge=1)) -> Response:
    platform = platform_of(request)
    tenant = tenant_of(request)
    if message is None:
        latest = _latest_cap(platform.alerts.cap_messages(tenant, alert_id), alert_id)
        return Response(latest, media_type=CAP_MEDIA_TYPE)
    return Response(platform.alerts.cap_message(tenant, alert_id, message), media_type=CAP_MEDIA_TYPE)
