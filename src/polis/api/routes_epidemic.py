"""Epidemic endpoints: region risk, blended case forecasts with intervals, and what-if scenarios on
region-to-region movement. Region-level counts and flows only (see polis.epidemic.guard).

The routes only parse and serialise; the work is in polis.epidemic. Cases and flows are what the hub
holds for the request's tenant (regions' `newConfirmedCases` history and `OriginDestinationFlow`
entities, written by `polis ingest covid-europe-2020`; read back by `polis.epidemic.hub`), so a tenant
that has not ingested them gets a 404 problem saying so, and `GET /polis/v1/epidemic` lists what is held.
Data the models cannot take (a negative count in the hub; fewer days than the forecast needs) is a 422
problem saying what and where. Every answer's `asOf` is the last day of data it used: the last complete
day (`lastCompleteDay`; later days too few regions reported yet are in `incompleteDays`), or, for a
scenario, the request's `asOf`.

The forecast is the blend `polis bench epidemic` scores, learned model included (polis.epidemic.serving):
fitted once per tenant, country and data version in a background thread, kept in memory and in the model
registry under the data directory. A request that finds no finished fit waits up to READY_WAIT_S (enough
for a model restored from the registry) and otherwise answers 202 with `status: "fitting"`, its progress
and Retry-After; asking again gets the forecast once the fit is done.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from polis.api.ld_http import declared_query_only, plain_json_body, platform_of, tenant_of
from polis.domain.errors import BadRequestData, ResourceNotFound
from polis.epidemic.data import COUNTRIES, CountryData
from polis.epidemic.guard import refuse_person_fields
from polis.epidemic.hub import NAME, HubCountries, countries_in_store
from polis.epidemic.serving import READY_WAIT_S, Served, ServedForecasts, check_finite, check_forecastable
from polis.ngsi_ld.params import parse_day

router = APIRouter(tags=["epidemic"], dependencies=[Depends(declared_query_only)])

SCENARIO_FIELDS = {"regions", "reductionPercent", "start", "mode", "days", "asOf"}
RETRY_AFTER_S = 2  # what a 202 "fitting" answer tells the client to wait before asking again


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _state(request: Request, name: str, make: Callable[[], Any]) -> Any:
    """An object kept on the app for these routes (made on first use: one per app, nothing at import)."""
    state = request.app.state
    held = getattr(state, name, None)
    if held is None:
        held = make()
        setattr(state, name, held)
    return held


def _hub(request: Request) -> HubCountries:
    """The app's reader of countries from the hub (it caches what it read per tenant)."""
    hub: HubCountries = _state(request, "epidemic_countries", lambda: HubCountries(platform_of(request).store))
    return hub


async def _country(request: Request, country: str) -> CountryData:
    if country not in COUNTRIES:
        raise ResourceNotFound(f"no epidemic data for country {country!r}; known: {', '.join(COUNTRIES)}")
    tenant = tenant_of(request)
    data = await run_in_threadpool(_hub(request).get, tenant, country)
    if data is None:
        where = f"tenant '{tenant}'" if tenant else "the default tenant"
        raise ResourceNotFound(
            f"{country}'s regions and flows are not in {where} of this hub; load them with `polis ingest {NAME}`"
        )
    return data


@router.get("/polis/v1/epidemic", summary="Countries whose epidemic data this hub holds")
async def held(request: Request) -> Response:
    tenant = tenant_of(request)
    countries = await run_in_threadpool(countries_in_store, platform_of(request).store, tenant)
    return _json({"dataset": NAME, "countries": countries, "known": list(COUNTRIES)})


def _date(value: Any, field: str) -> date:
    """A day given as the string YYYY-MM-DD; a JSON number (20200513) or another ISO form is refused, not
    read as a date."""
    if isinstance(value, str):
        try:
            return parse_day(value, field)
        except ValueError:
            pass
    raise BadRequestData(f"{field}: not an ISO date string (\"YYYY-MM-DD\"): {value!r}", field=field)


def _completeness(data: CountryData) -> dict[str, Any]:
    """Which day the answer's data ends on, and the later days left out because too few regions have
    reported them yet (polis.epidemic.hub.country_from_store)."""
    return {
        "lastCompleteDay": data.dates[-1].isoformat(),
        "incompleteDays": [
            {"date": day.isoformat(), "regionsReported": count, "regions": data.n_regions}
            for day, count in data.incomplete_days
        ],
    }


def _rounded(values: Any) -> list[float]:
    return [round(float(v), 2) for v in values]


@router.get("/polis/v1/epidemic/{country}/risk", summary="Reproduction number and importation pressure per region")
async def risk(request: Request, country: str) -> Response:
    data = await _country(request, country)
    return _json(await run_in_threadpool(risk_body, data))


def risk_body(data: CountryData) -> dict[str, Any]:
    """The risk view as the API (and `polis epidemic risk --json`) gives it."""
    from polis.epidemic.risk import WINDOW, region_risk

    return {
        "country": data.country,
        "asOf": data.dates[-1].isoformat(),
        **_completeness(data),
        "windowDays": WINDOW,
        "regions": [
            {
                "region": r.region,
                "reproductionNumber": None
                if r.r_mean is None
                else {
                    "mean": round(r.r_mean, 3),
                    "lower95": round(r.r_lower or 0.0, 3),
                    "upper95": round(r.r_upper or 0.0, 3),
                },
                "casesLast7Days": r.cases_last_7_days,
                "importationPressure": round(r.importation_pressure, 3),
                "importedShare": round(r.imported_share, 4),
            }
            for r in region_risk(data)
        ],
    }


def _served(request: Request) -> ServedForecasts:
    """The app's served forecasts (the learned model's registry under the hub's data directory)."""
    served: ServedForecasts = _state(
        request, "epidemic_served", lambda: ServedForecasts(platform_of(request).settings.data_dir / "models")
    )
    return served


@router.get(
    "/polis/v1/epidemic/{country}/forecast",
    summary="Cases per region 1-14 days ahead with 80 % intervals (202 while the model is being fitted)",
)
async def forecast(request: Request, country: str, horizons: str = "14") -> Response:
    # a string, parsed strictly here: int() would take "١٤", " 14 " and 5,000 digits
    days = int(horizons) if re.fullmatch(r"[0-9]{1,2}", horizons) else 0
    if not 1 <= days <= 14:
        raise BadRequestData("horizons: must be an integer 1..14", field="horizons")
    data = await _country(request, country)
    check_forecastable(data)  # 422 saying how many days it needs, before any fit is started
    tenant, served = tenant_of(request), _served(request)
    version = await run_in_threadpool(served.version_of, tenant, country, data)
    job = served.request(tenant, country, data, version)
    try:  # a kept forecast is done already; a restored or small one finishes within the wait
        result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), READY_WAIT_S)
    except TimeoutError:
        state = served.fitting(tenant, country, version)
        return _json(
            {
                "country": country,
                "asOf": data.dates[-1].isoformat(),
                **_completeness(data),
                "status": "fitting",
                "stage": state.stage if state else "finishing",
                "progress": round(state.done, 3) if state else 1.0,
                "secondsSoFar": round(time.time() - state.since, 1) if state else None,
                "retryAfterSeconds": RETRY_AFTER_S,
            },
            status=202,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return _json(forecast_body(data, result, days))


def forecast_body(data: CountryData, served: Served, horizons: int = 14) -> dict[str, Any]:
    """The served forecast as the API (and `polis epidemic forecast --json`) gives it; never "ready" with a
    value that is not a number (NonFiniteForecast, a 500 naming the regions)."""
    from datetime import timedelta

    result = served.forecast
    check_finite(data, result, horizons)
    dates = [(data.dates[-1] + timedelta(days=h)).isoformat() for h in range(1, horizons + 1)]
    return {
        "country": data.country,
        "asOf": data.dates[-1].isoformat(),
        **_completeness(data),
        "status": "ready",
        "dates": dates,
        "interval": 0.8,
        "weights": {name: w[:horizons] for name, w in result.weights.items()},
        "blendSettings": [{"rule": b.rule, "power": b.power, "window": b.window} for b in result.settings[:horizons]],
        "model": {"registry": served.registry_path, "fits": served.fits, "seconds": round(served.seconds, 2)},
        "regions": [
            {
                "region": name,
                "cases": _rounded(result.point[:horizons, i]),
                "lower": _rounded(result.lower[:horizons, i]),
                "upper": _rounded(result.upper[:horizons, i]),
            }
            for i, name in enumerate(data.regions)
        ],
    }


@router.post("/polis/v1/epidemic/{country}/scenario", summary="Project cases with and without a movement cut")
async def scenario(request: Request, country: str) -> Response:
    from polis.epidemic.scenario import run_scenario, validate

    data = await _country(request, country)
    body = await plain_json_body(request)  # 413 over max_body_bytes, 415 for a type other than JSON
    if not isinstance(body, dict):
        raise BadRequestData("body must be a JSON object", field="body")
    refuse_person_fields(body.keys(), "scenario request")
    unknown = sorted(set(body) - SCENARIO_FIELDS)
    if unknown:
        raise BadRequestData(f"unknown field(s) {unknown}; allowed: {sorted(SCENARIO_FIELDS)}", field=unknown[0])
    for required in ("regions", "reductionPercent", "start"):
        if required not in body:
            raise BadRequestData(f"{required}: required", field=required)
    regions = body["regions"]
    if isinstance(regions, str):
        regions = [regions]
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise BadRequestData("regions: a list of region names", field="regions")
    percent = body["reductionPercent"]
    if not isinstance(percent, int | float) or isinstance(percent, bool):
        raise BadRequestData("reductionPercent: a number between 0 and 100", field="reductionPercent")
    days = body.get("days", 30)
    if not isinstance(days, int) or isinstance(days, bool):
        raise BadRequestData("days: an integer", field="days")
    mode = body.get("mode", "between")
    if not isinstance(mode, str):
        raise BadRequestData("mode: 'between', 'outOf' or 'cordon'", field="mode")
    as_of = _date(body["asOf"], "asOf") if "asOf" in body else None  # the last day of data used
    intervention = validate(data, regions, float(percent), _date(body["start"], "start"), mode, days, as_of)
    result = await run_in_threadpool(run_scenario, data, intervention, days, as_of)
    return _json(scenario_body(result))


def scenario_body(result: Any) -> dict[str, Any]:
    iv = result.intervention
    return {
        "country": result.country,
        "asOf": result.as_of.isoformat(),
        "intervention": {
            "regions": list(iv.regions),
            "reductionPercent": round(iv.reduction * 100, 3),
            "start": iv.start.isoformat(),
            "mode": iv.mode,
        },
        "dates": [d.isoformat() for d in result.dates],
        "interval": 0.8,
        "totals": {k: round(v, 1) for k, v in result.totals().items()},
        "regions": [
            {
                "region": name,
                "baseline": {
                    "expected": _rounded(result.baseline.median[:, i]),
                    "lower": _rounded(result.baseline.lower[:, i]),
                    "upper": _rounded(result.baseline.upper[:, i]),
                },
                "intervention": {
                    "expected": _rounded(result.restricted.median[:, i]),
                    "lower": _rounded(result.restricted.lower[:, i]),
                    "upper": _rounded(result.restricted.upper[:, i]),
                },
            }
            for i, name in enumerate(result.regions)
        ],
        "seconds": round(result.seconds, 3),
    }
