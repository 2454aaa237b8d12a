"""Forecast endpoints: the latest forecast of one entity, of every entity of a type, the kept history,
and live accuracy per model. `?format=ngsi-ld` answers with NGSI-LD entities (see README)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request

from polis.access.datasets import dataset_of
from polis.access.enforce import access_of
from polis.api.ld_http import declared_query_only, platform_of, tenant_of
from polis.domain.errors import BadRequestData, ResourceNotFound
from polis.forecast.path import ForecastPath
from polis.ngsi_ld.params import parse_int

router = APIRouter(prefix="/polis/v1", tags=["forecasts"], dependencies=[Depends(declared_query_only)])


def _plain(path: ForecastPath) -> dict[str, Any]:
    return {
        "entityId": path.entity_id, "attribute": path.attribute, "model": path.model,
        "issuedAt": _iso(path.issued_at),
        "points": [{"validAt": _iso(p.valid_at), "horizonMinutes": int((p.valid_at - path.issued_at).total_seconds()
                                                                        // 60),
                    "value": p.value, "lower80": p.lower, "upper80": p.upper} for p in path.points],
    }


def _ngsi_ld(path: ForecastPath) -> dict[str, Any]:
    """One `Forecast` entity per forecast path: the forecast values as a ListProperty-like JSON value,
    the source entity as a Relationship."""
    suffix = path.entity_id.split(":", 2)[-1]
    short = path.attribute.rstrip("/").rsplit("/", 1)[-1]
    return {
        "id": f"urn:ngsi-ld:Forecast:{suffix}:{short}",
        "type": "Forecast",
        "refEntity": {"type": "Relationship", "object": path.entity_id},
        "forecastedAttribute": {"type": "Property", "value": path.attribute},
        "model": {"type": "Property", "value": path.model},
        "issuedAt": {"type": "Property", "value": {"@type": "DateTime", "@value": _iso(path.issued_at)}},
        "forecast": {"type": "JsonProperty", "json": _plain(path)["points"]},
        "@context": ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"],
    }


def _iso(instant: Any) -> str:
    return str(instant.isoformat().replace("+00:00", "Z"))


def _check_format(fmt: str | None) -> None:
    """Before any data is read: a bad format is refused whether or not anything would be rendered."""
    if fmt not in (None, "", "plain", "ngsi-ld"):
        raise BadRequestData(f"format must be plain or ngsi-ld, got '{fmt}'")


def _render(path: ForecastPath, fmt: str | None) -> dict[str, Any]:
    return _ngsi_ld(path) if fmt == "ngsi-ld" else _plain(path)


@router.get("/forecasts", summary="Latest forecasts of every entity of a type")
def forecasts_of_type(request: Request, type: str, format: str | None = None) -> list[dict[str, Any]]:
    _check_format(format)
    platform = platform_of(request)
    tenant = tenant_of(request)
    readable = set(access_of(request).readable())  # only forecasts of entities the department may read
    paths = platform.forecasts.latest_for_type(type, tenant)
    return [_render(p, format) for p in paths if dataset_of(p.entity_id) in readable]


@router.get("/forecasts/{entity_id}", summary="Latest forecast of one entity's attribute")
def forecast_of_entity(request: Request, entity_id: str, attr: str, format: str | None = None) -> dict[str, Any]:
    _check_format(format)
    path = platform_of(request).forecasts.latest(entity_id, attr, tenant_of(request))
    if path is None:
        raise _no_forecast(request, entity_id, attr)
    return _render(path, format)


@router.get("/forecasts/{entity_id}/history", summary="Forecasts issued for one entity's attribute")
def forecast_history(request: Request, entity_id: str, attr: str) -> list[dict[str, Any]]:
    # A series gets its history and its latest forecast together, so an empty history is the same 404 as
    # the latest forecast's: a misspelt id or attribute is not an entity without forecasts yet.
    paths = platform_of(request).forecasts.history(entity_id, attr, tenant_of(request))
    if not paths:
        raise _no_forecast(request, entity_id, attr)
    return [_plain(p) for p in paths]


def _no_forecast(request: Request, entity_id: str, attr: str) -> ResourceNotFound:
    # a dataset whose model did not load says so (the operator's log names the file), not "no readings yet"
    dataset = dataset_of(entity_id)
    why = platform_of(request).forecasts.unavailable.get(dataset)
    if why is not None:
        return ResourceNotFound(f"no forecast of {attr} for {entity_id}: {dataset} has no live forecasts, {why} "
                                "(the hub's log says why)")
    return ResourceNotFound(f"no forecast of {attr} for {entity_id} (not watched, or no readings yet)")


MAX_WINDOW_MINUTES = 10 * 366 * 24 * 60


@router.get("/forecast-accuracy", summary="Rolling live MAE per model and step")
def forecast_accuracy(request: Request, window_minutes: str | None = None) -> list[dict[str, Any]]:
    # Declared as a string (for OpenAPI and declared_query_only), parsed as every integer parameter of the hub
    # is: ASCII digits only, where FastAPI's int would take "1_0" and "+5".
    minutes = parse_int(request.query_params, "window_minutes")
    if minutes is not None and not 0 < minutes <= MAX_WINDOW_MINUTES:
        raise BadRequestData(f"window_minutes must be between 1 and {MAX_WINDOW_MINUTES} (ten years)")
    window = timedelta(minutes=minutes) if minutes else None
    return platform_of(request).forecasts.accuracy(window, tenant_of(request))
