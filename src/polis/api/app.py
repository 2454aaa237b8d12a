"""The FastAPI adapter: `create_app(platform)` wires routers and turns every error into NGSI-LD
problem details. No work at import time."""

from __future__ import annotations

import logging
from pathlib import Path

import fastapi_offline
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from polis import __version__
from polis.access.enforce import enforce
from polis.api import (
    routes_access,
    routes_alerts,
    routes_dashboard,
    routes_discovery,
    routes_entities,
    routes_epidemic,
    routes_forecasts,
    routes_mobility,
    routes_operations,
    routes_subscriptions,
    routes_temporal,
    routes_temporal_query,
)
from polis.api.ld_http import echo_tenant
from polis.api.security_headers import SecurityHeaders, headers_for
from polis.domain.errors import ERROR_TYPE_BASE, BadRequestData, NgsiError
from polis.platform import Platform

log = logging.getLogger(__name__)
_SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"

_HTTP_PROBLEMS = {
    404: ("ResourceNotFound", "Resource not found"),
    405: ("InvalidRequest", "Method not allowed"),
    406: ("InvalidRequest", "Not acceptable"),
    413: ("BadRequestData", "Payload too large"),
    415: ("InvalidRequest", "Unsupported media type"),
}


def problem_response(
    status: int, name: str, title: str, detail: str, headers: dict[str, str] | None = None, **extra: object
) -> Response:
    body = {"type": ERROR_TYPE_BASE + name, "title": title, "status": status, "detail": detail, **extra}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette reports only the first route's)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def single_valued_query(request: Request) -> None:
    """A query parameter given twice is 400: every parameter of this API takes one value (lists are written
    comma-separated, as NGSI-LD does), and Starlette would silently keep only the last one, so
    `?status=all&status=active` answered for `active` alone."""
    seen: set[str] = set()
    for name, _value in request.query_params.multi_items():
        if name in seen:
            raise BadRequestData(
                f"query parameter '{name}' is given more than once; give it once (a list is comma-separated)"
            )
        seen.add(name)


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        docs_url=None,  # served below from the Swagger UI files fastapi-offline installs: offline, no CDN
        redoc_url=None,
        title="Polis",
        version=__version__,
        description="Open city data hub: NGSI-LD entities, history and queries. It counts, it never watches.",
        # Every route: API key -> department -> grants, audited (polis.access); then no parameter twice.
        dependencies=[Depends(enforce), Depends(single_valued_query)],
    )
    app.state.platform = platform
    app.add_middleware(SecurityHeaders)  # nosniff everywhere; CSP and no framing on the pages

    @app.exception_handler(NgsiError)
    async def ngsi_error(request: Request, error: NgsiError) -> Response:
        headers = dict(getattr(error, "headers", None) or {})  # e.g. WWW-Authenticate on 401
        echo_tenant(request, headers)  # errors name the tenant too (the OpenAPI file's error responses declare it)
        return problem_response(error.status, error.name, error.title, error.detail, headers=headers, **error.extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        name, title = _HTTP_PROBLEMS.get(error.status_code, ("InvalidRequest", "Invalid request"))
        detail = error.detail if isinstance(error.detail, str) else title
        if error.status_code == 404:
            detail = f"no such resource: {request.method} {request.url.path}"
        headers = getattr(error, "headers", None)
        if error.status_code == 405:
            allowed = _allowed_methods(app, request)
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
            headers = {"Allow": ", ".join(allowed)}
        return problem_response(error.status_code, name, title, detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return problem_response(400, "BadRequestData", "Bad request data", _validation_detail(error))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "InternalError", "Internal error", f"{type(error).__name__}: the server failed",
            headers=headers_for(request.url.path),  # answered outside SecurityHeaders, so added here
        )

    app.include_router(routes_entities.router)
    app.include_router(routes_temporal.router)
    app.include_router(routes_temporal_query.router)  # the same temporal query, its selection in a body
    app.include_router(routes_discovery.router)
    app.include_router(routes_operations.router)
    app.include_router(routes_access.router)
    app.include_router(routes_subscriptions.router)
    app.include_router(routes_mobility.router)  # polis.mobility: flows and OD (privacy gate)
    app.include_router(routes_epidemic.router)  # polis.epidemic: risk, forecasts, scenarios
    app.include_router(routes_forecasts.router)  # polis.forecast: live forecasts and their accuracy
    app.include_router(routes_alerts.router)  # polis.alerts: rules, alerts as JSON, CAP 1.2 and the Atom feed

    # Swagger UI 5 (fastapi-offline's copy): FastAPI writes OpenAPI 3.1, which Swagger UI 4 cannot render at all
    app.mount("/docs-assets", StaticFiles(directory=_SWAGGER_UI), name="docs-assets")
    routes_dashboard.install(app)  # the web dashboard at / (page and assets; its data comes from the API)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Polis API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/health", tags=["operations"], summary="Liveness (open to anyone, so it tells nothing about the data)")
    async def health() -> dict[str, object]:
        # What the hub holds (tenants, counts) is in /metrics, which needs the `operations` grant.
        return {"status": "ok", "version": __version__}

    return app


def _validation_detail(error: RequestValidationError) -> str:
    """FastAPI's checks of declared parameters, as sentences naming each parameter (not pydantic's repr, and
    without echoing the value sent)."""
    sentences = []
    for problem in error.errors():
        where, *path = [str(part) for part in problem.get("loc", ())] or ["request"]
        name = ".".join(path) or where
        sentences.append(f"{where} parameter '{name}': {problem.get('msg', 'is not valid')}")
    return "; ".join(sentences)
