"""`POST /temporal/entityOperations/query` (§5.7.4, OAS operation temporalQueryBatch): the temporal query of
`GET /temporal/entities` with its selection in a Query body (§5.2.23), for selections too long for a URL.

The body holds what the GET takes as id/idPattern/type, attrs, q, the geo-query and scopeQ (read as
POST /entityOperations/query reads them), and `temporalQ` (§5.2.21) holds timerel, timeAt, endTimeAt and
timeproperty; lastN, options, aggrMethods, aggrPeriodDuration, limit/offset/count, pick/omit, datasetId and
local stay in the URL. The answer is the GET's for the same selection."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from polis.api.ld_http import NOT_GEO, accept_of, json_body, platform_of, resolve, tenant_of
from polis.api.routes_entities import query_from_body
from polis.api.routes_temporal import answer_temporal_query
from polis.domain.errors import BadRequestData
from polis.ngsi_ld.params import check_known, parse_bool
from polis.ngsi_ld.temporal import parse_temporal_query

router = APIRouter(prefix="/ngsi-ld/v1/temporal", tags=["temporal"])

# What GET /temporal/entities takes in its URL besides the selection, which moves into the body.
URL_PARAMS = {
    "limit", "offset", "count", "options", "format", "pick", "omit", "datasetId", "local",
    "lastN", "aggrMethods", "aggrPeriodDuration",
}  # fmt: skip
TEMPORAL_Q_MEMBERS = ("timerel", "timeAt", "endTimeAt", "timeproperty")


@router.post("/entityOperations/query", summary="Query temporal evolution of entities by POST (§5.7.4)")
async def post_temporal_query(request: Request) -> Response:
    """The entities are paged as on the GET: Link rel="next"/"prev" (§6.3.10) name this URL with `offset`
    moved, and the client POSTs the same body to it (the selection is in the body, so a GET there is 405);
    the instances are cut by 206 + Content-Range, as on the GET."""
    platform = platform_of(request)
    params = dict(request.query_params)
    check_known(params, URL_PARAMS)
    parse_bool(params, "local")  # every entity here is local (no federation): the same answer either way
    accept = accept_of(request, NOT_GEO)  # a temporal evolution has no GeoJSON form
    tenant_of(request)  # 404 NonexistentTenant before reading the body
    body = await json_body(request)
    terms = await resolve(request, body.context)
    settings = platform.settings
    query, attrs = query_from_body(body.data, params, terms, settings)
    temporal = parse_temporal_query(_temporal_params(body.data, params), attrs, settings.max_temporal_instances)
    return await answer_temporal_query(request, query, attrs, temporal, terms, params, accept)


def _temporal_params(data: dict[str, Any], params: dict[str, str]) -> dict[str, str]:
    """`temporalQ` as the GET's URL parameters, so that both are read (and refused) by the same code; lastN
    and datasetId come from the URL, as on the GET."""
    temporal_q = data.get("temporalQ")
    if not isinstance(temporal_q, dict):
        raise BadRequestData("the Query needs a temporalQ object (timerel, timeAt, endTimeAt, timeproperty)")
    # A misspelt member (timeRel) left out would widen the query to the whole history without a word.
    unknown = sorted(set(temporal_q) - set(TEMPORAL_Q_MEMBERS))
    if unknown:
        raise BadRequestData(f"temporalQ takes {', '.join(TEMPORAL_Q_MEMBERS)}; not {', '.join(unknown)}")
    for name, value in temporal_q.items():
        if not isinstance(value, str):
            raise BadRequestData(f"temporalQ.{name} must be a string")
    return {**temporal_q, **{name: params[name] for name in ("lastN", "datasetId") if name in params}}
