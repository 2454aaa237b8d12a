"""Operator endpoints outside NGSI-LD: ingest metrics (Prometheus text) and the dead-letter table."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from polis.api.ld_http import json_response, platform_of
from polis.ngsi_ld.params import check_known, parse_int

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=PlainTextResponse, summary="Ingest metrics, Prometheus text format")
async def metrics(request: Request) -> PlainTextResponse:
    check_known(dict(request.query_params), set())
    platform = platform_of(request)
    lines = [
        "# HELP polis_entities Entities held in the default tenant.",
        "# TYPE polis_entities gauge",
        f"polis_entities {await run_in_threadpool(platform.store.entity_count, '')}",
        "# HELP polis_dead_letters Messages kept in the dead-letter table.",
        "# TYPE polis_dead_letters gauge",
        f"polis_dead_letters {await run_in_threadpool(platform.store.dead_letter_count, None)}",
        "# HELP polis_alert_readings_ahead Readings alert rules refused as dated over 5 minutes ahead of the clock.",
        "# TYPE polis_alert_readings_ahead counter",
        f"polis_alert_readings_ahead {platform.alerts.readings_ahead}",
    ]
    for name, source in platform.sources.items():
        for key, value in source.metrics().items():
            number = _number(value)
            if number is not None:
                lines.append(f'polis_ingest_{key}{{source="{name}"}} {number}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


@router.get("/polis/v1/deadletters", summary="Messages an ingest source refused, with the reason")
async def dead_letters(request: Request) -> Response:
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, {"source", "limit", "offset"})
    limit = parse_int(params, "limit", minimum=1) or 100
    offset = parse_int(params, "offset") or 0
    letters = await run_in_threadpool(
        lambda: platform.store.dead_letters(params.get("source"), min(limit, 1000), offset)
    )
    body = [
        {
            "id": d.id,
            "source": d.source,
            "topic": d.topic,
            "reason": d.reason,
            "receivedAt": d.received_at.isoformat().replace("+00:00", "Z"),
            "payload": d.payload,
        }
        for d in letters
    ]
    total = await run_in_threadpool(platform.store.dead_letter_count, params.get("source"))
    return json_response(request, body, None, headers={"Total-Count": str(total)}, accept="application/json")
