"""The web dashboard: its page at `/` (an open route, like `/docs`), its scripts and styles under
`/dashboard/`, and the neighbourhood base maps it draws under `/dashboard/maps/{city}.geojson`.

`/dashboard` is served outside FastAPI's routing, like the API docs' assets: the page, its code and the
public neighbourhood outlines hold no city data. Every reading, alert, forecast and flow the page shows comes
from the API with the department's key, so the access rules decide what each department sees.
Everything is served from the project itself (no CDN, no tile server): the dashboard works offline.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from polis.domain.errors import ResourceNotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAPS = {"los-angeles": "los-angeles.geojson", "melbourne": "melbourne.geojson"}  # files in DATASETS_DIR/maps
COORDINATE_DIGITS = 5  # ~1 m: finer than a screen pixel at city scale, and a third of the bytes


class BaseMaps:
    """The neighbourhood outlines, read once from the datasets dir and slimmed to geometry and name."""

    def __init__(self, datasets_dir: Path) -> None:
        self.folder = datasets_dir / "maps"
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, city: str) -> bytes:
        if city not in MAPS:
            raise ResourceNotFound(f"no base map for '{city}'; there are: {', '.join(sorted(MAPS))}")
        with self._lock:
            cached = self._cache.get(city)
            if cached is None:
                cached = self._cache[city] = slim_geojson(self._read(city))
            return cached

    def _read(self, city: str) -> Any:
        path = self.folder / MAPS[city]
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise ResourceNotFound(f"the base map {path} is missing (set POLIS_DATASETS_DIR)") from None


def slim_geojson(collection: Any) -> bytes:
    """Keep each feature's polygon geometry and name, with coordinates rounded."""
    features = []
    for feature in collection.get("features", []):
        geometry = feature.get("geometry") or {}
        if geometry.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        name = (feature.get("properties") or {}).get("name")
        features.append(
            {
                "type": "Feature",
                "properties": {"name": name if isinstance(name, str) else ""},
                "geometry": {"type": geometry["type"], "coordinates": _rounded(geometry["coordinates"])},
            }
        )
    return orjson.dumps({"type": "FeatureCollection", "features": features})


def _rounded(coordinates: Any) -> Any:
    if coordinates and isinstance(coordinates[0], int | float):
        return [round(float(c), COORDINATE_DIGITS) for c in coordinates]
    return [_rounded(c) for c in coordinates]


router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
async def index() -> Response:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Add the dashboard to an app made by `create_app` (whose state holds the platform)."""
    maps = BaseMaps(app.state.platform.settings.datasets_dir)

    async def base_map(request: Request) -> Response:
        body = maps.get(request.path_params["city"])
        return Response(body, media_type="application/geo+json", headers={"Cache-Control": "max-age=3600"})

    app.include_router(router)
    app.router.routes.append(
        Mount(
            "/dashboard",
            routes=[
                Route("/maps/{city}.geojson", base_map, methods=["GET"]),
                Mount("/", StaticFiles(directory=WEB_DIR), name="dashboard-assets"),
            ],
        )
    )
