"""Mobility products over HTTP (adapter only: `polis.mobility.products` does the work).

Each route serves one dataset at one tier, named in its path and in `MOBILITY_ROUTES`, so access
control can grant it exactly:

    GET /polis/v1/mobility/citibike-jersey-city/summary   public            (days held, stations and flow areas: places)
    GET /polis/v1/mobility/citibike-jersey-city/flows     aggregate         (hourly flows, suppressed below k)
    GET /polis/v1/mobility/citibike-jersey-city/od        aggregate         (daily / 8-hour OD matrix, suppressed)
    GET /polis/v1/mobility/citibike-jersey-city/trips     raw-pseudonymous  (gated trips still within retention)
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from polis.api.ld_http import platform_of
from polis.domain.errors import BadRequestData
from polis.mobility.citibike import DATASET as CITIBIKE
from polis.mobility.products import Direction, DpRequest, Unit, parse_epsilon
from polis.ngsi_ld.params import check_known, parse_day
from polis.privacy.dp import Mechanism

router = APIRouter(tags=["mobility"])

_BASE = f"/polis/v1/mobility/{CITIBIKE}"
PUBLIC, AGGREGATE, RAW = "public", "aggregate", "raw-pseudonymous"
RECENT_DAYS = 60  # the days /summary lists (a dashboard's day picker); a day not held is a 404 on /flows

# (method, path) -> (dataset, tier, action): what a department needs to be granted for each route.
MOBILITY_ROUTES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("GET", f"{_BASE}/summary"): (CITIBIKE, PUBLIC, "read"),
    ("GET", f"{_BASE}/flows"): (CITIBIKE, AGGREGATE, "read"),
    ("GET", f"{_BASE}/od"): (CITIBIKE, AGGREGATE, "read"),
    ("GET", f"{_BASE}/trips"): (CITIBIKE, RAW, "read"),
}


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _day(params: Any) -> date:
    text = params.get("day")
    if text is None:
        raise BadRequestData("the query parameter 'day' (YYYY-MM-DD, local date) is required")
    try:
        return parse_day(text)
    except ValueError as error:
        raise BadRequestData(str(error)) from None


def _choice(params: Any, name: str, default: str, choices: list[str]) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise BadRequestData(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _dp(request: Request) -> DpRequest | None:
    params = request.query_params
    if "epsilon" not in params:
        if "mechanism" in params:
            raise BadRequestData("mechanism needs epsilon: the differential-privacy budget this release spends")
        return None
    try:
        epsilon = parse_epsilon(params["epsilon"])
    except ValueError as error:
        raise BadRequestData(str(error)) from None
    mechanism = Mechanism(_choice(params, "mechanism", "laplace", [m.value for m in Mechanism]))
    return DpRequest(epsilon, mechanism, platform_of(request).settings.dp_delta)


@router.get(f"{_BASE}/summary", summary="Citi Bike Jersey City: days held and stations (public tier)")
async def summary(request: Request) -> Response:
    check_known(request.query_params, set())
    privacy = platform_of(request).privacy

    def work() -> dict[str, Any]:
        # What /flows releases: the unit (and k) pinned by the dataset's first release, else the settings'.
        configuration = privacy.release_configuration(CITIBIKE)
        unit = configuration.flows_unit
        days = privacy.mobility.days(CITIBIKE)
        stations = privacy.mobility.areas(CITIBIKE, "station")
        # The rows /flows releases, where they are: the stations, or the H3 cells holding stations (centres).
        # Places only, as public as the stations themselves; a client draws the flows with them.
        flow_areas = stations if unit == "station" else privacy.mobility.areas(CITIBIKE, unit)
        return {
            "dataset": CITIBIKE,
            "tier": PUBLIC,
            "firstDay": days[0].isoformat() if days else None,
            "lastDay": days[-1].isoformat() if days else None,
            "days": len(days),
            "recentDays": [d.isoformat() for d in days[-RECENT_DAYS:]],  # days held, newest last: what /flows takes
            "k": configuration.k,
            "epsilonBudget": privacy.ledger.budget(CITIBIKE),
            "epsilonSpent": privacy.ledger.spent(CITIBIKE),
            "stations": [{"id": s.area, "name": s.name, "lat": s.lat, "lon": s.lon} for s in stations],
            "flowsUnit": unit,
            "flowAreas": [{"id": a.area, "name": a.name, "lat": a.lat, "lon": a.lon} for a in flow_areas],
        }

    return _json(await run_in_threadpool(work))


@router.get(f"{_BASE}/flows", summary="Hourly departures or arrivals per station or H3 cell (aggregate tier)")
async def flows(request: Request) -> Response:
    params = request.query_params
    check_known(params, {"day", "by", "direction", "epsilon", "mechanism"})
    day = _day(params)
    unit = Unit(_choice(params, "by", platform_of(request).settings.flows_unit, [u.value for u in Unit]))
    direction = Direction(_choice(params, "direction", "departures", [d.value for d in Direction]))
    dp = _dp(request)
    products = platform_of(request).privacy.products(CITIBIKE)
    release = await run_in_threadpool(products.hourly_flows, CITIBIKE, day, unit, direction, dp)
    return _json(release.body())


@router.get(f"{_BASE}/od", summary="Origin-destination matrix per day or 8-hour window (aggregate tier)")
async def od(request: Request) -> Response:
    params = request.query_params
    check_known(params, {"day", "window", "epsilon", "mechanism"})
    day = _day(params)
    default = "day" if platform_of(request).settings.od_window_hours == 24 else "00-08"
    window = _choice(params, "window", default, ["day", "00-08", "08-16", "16-24"])
    dp = _dp(request)
    products = platform_of(request).privacy.products(CITIBIKE)
    release = await run_in_threadpool(products.od_matrix, CITIBIKE, day, window, dp)
    return _json(release.body())


@router.get(f"{_BASE}/trips", summary="Gated trips of one day within retention (raw-pseudonymous tier)")
async def trips(request: Request) -> Response:
    params = request.query_params
    check_known(params, {"day"})
    day = _day(params)
    rows = await run_in_threadpool(platform_of(request).privacy.raw_trips, CITIBIKE, day)
    for row in rows:
        for key in ("start_hour", "end_hour"):
            row[key] = f"{row[key].isoformat()}Z"
    return _json({"dataset": CITIBIKE, "tier": RAW, "day": day.isoformat(), "trips": rows})
