"""NGSI-LD geo-queries (ETSI GS CIM 009 §4.10): parsing, GeoJSON validation and exact evaluation.

Semantics, and the approximations Polis makes (the same ones PostGIS `geometry` brokers such as Stellio make):

- `within`, `contains`, `intersects`, `equals`, `disjoint`, `overlaps` are the DE-9IM predicates of shapely
  (GEOS) on *planar* lon/lat geometries: edges are straight in degrees, not great circles, and nothing wraps
  at the antimeridian (RFC 7946 §3.1.9 asks producers to split geometries there). `within`: the stored
  geometry lies within the query geometry; `contains`: the stored geometry contains the query geometry.
  Invalid polygons (self-intersecting rings) are repaired with `make_valid` before the predicate runs.
- `near` measures metres on a sphere of radius 6371008.8 m (the WGS84 mean radius) between the query point
  and the nearest point of the stored geometry. For Point and MultiPoint that is the exact haversine
  distance (wrapping at the antimeridian, correct at the poles). For lines and polygons it is the planar
  distance in an equirectangular projection centred on the query point (x = Δlon·cos(lat₀)·k, y = Δlat·k,
  k = metres per degree), which is within a fraction of a percent for the city-scale distances geo-queries
  are for, and loses accuracy over hundreds of kilometres and near the poles. The geometry is tried as is
  and shifted by ±360° so that a shape just across the antimeridian is near.
- An entity matches when any instance (any datasetId) of the geoproperty matches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from polis.domain.entity import NGSI_LD
from polis.domain.errors import BadRequestData

GEORELS = ("near", "within", "contains", "intersects", "equals", "disjoint", "overlaps")
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
CORE_GEOPROPERTIES = frozenset({"location", "observationSpace", "operationSpace"})
DEFAULT_GEOPROPERTY = NGSI_LD + "location"

EARTH_RADIUS_M = 6371008.8
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180.0
DEG = math.pi / 180.0  # SQL uses the same constant, so SQL and Python distances agree to the last bit
TWO_R = 2.0 * EARTH_RADIUS_M

_DISTANCE_MODIFIER = re.compile(r"^(maxDistance|minDistance)==(.*)$")
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$|^\.[0-9]+([eE][+-]?[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class GeoQuery:
    georel: str  # near | within | contains | intersects | equals | disjoint | overlaps
    geometry: dict[str, Any]  # a GeoJSON geometry {"type": ..., "coordinates": ...}
    geoproperty: str = DEFAULT_GEOPROPERTY  # expanded IRI
    max_distance: float | None = None  # metres, for near
    min_distance: float | None = None


# -- parsing -------------------------------------------------------------------------------------


def parse_geoquery(
    georel: str | None,
    geometry: str | None,
    coordinates: str | list[Any] | None,
    geoproperty: str | None = None,
    expand: Callable[[str], str] = lambda t: t,
) -> GeoQuery | None:
    """The geo-query of a request, or None when it has none; BadRequestData when it is incomplete or malformed.

    `coordinates` is the URL text (`[-118.24,34.05]`) or the JSON the POST query and subscription forms carry.
    """
    given = {"georel": _present(georel), "geometry": _present(geometry), "coordinates": _present(coordinates)}
    if not any(given.values()):
        return None
    missing = [name for name, present in given.items() if not present]
    if missing:
        raise BadRequestData(
            f"a geo-query needs georel, geometry and coordinates together; missing: {', '.join(missing)}"
        )
    assert georel is not None and geometry is not None and coordinates is not None
    named = (("georel", georel), ("geometry", geometry), ("geoproperty", "" if geoproperty is None else geoproperty))
    for name, text in named:
        if not isinstance(text, str):  # the JSON forms could carry anything here
            raise BadRequestData(f"{name} must be a string; got {_show(text)}")
    relation, max_distance, min_distance = _parse_georel(georel)
    gtype = geometry.strip()
    if gtype not in GEOMETRY_TYPES:
        raise BadRequestData(f"geometry must be one of {', '.join(GEOMETRY_TYPES)}; got '{geometry}'")
    if relation == "near" and gtype != "Point":
        raise BadRequestData(f"georel 'near' needs geometry Point; got '{gtype}'")
    geojson = validate_geometry({"type": gtype, "coordinates": _parse_coordinates(coordinates)})
    return GeoQuery(relation, geojson, _geoproperty_iri(geoproperty, expand), max_distance, min_distance)


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _parse_georel(text: str) -> tuple[str, float | None, float | None]:
    relation, *modifiers = [part.strip() for part in text.strip().split(";")]
    if relation not in GEORELS:
        raise BadRequestData(f"georel must be one of {', '.join(GEORELS)}; got '{relation}'")
    if relation != "near":
        if modifiers:
            raise BadRequestData(f"georel '{relation}' takes no modifiers; got '{text.strip()}'")
        return relation, None, None
    distances: dict[str, float] = {}
    for modifier in modifiers:
        match = _DISTANCE_MODIFIER.match(modifier)
        if match is None:
            raise BadRequestData(
                f"georel 'near' modifiers are maxDistance==<metres> or minDistance==<metres>; got '{modifier}'"
            )
        name, raw = match.groups()
        if name in distances:
            raise BadRequestData(f"georel 'near' has {name} twice")
        distances[name] = _parse_distance(name, raw)
    if not distances:
        raise BadRequestData("georel 'near' needs maxDistance or minDistance, e.g. near;maxDistance==2000")
    low, high = distances.get("minDistance"), distances.get("maxDistance")
    if low is not None and high is not None and low > high:  # an empty ring: surely a mistake, not a query
        raise BadRequestData(f"georel 'near': minDistance {low:g} is more than maxDistance {high:g}")
    return relation, high, low


def _parse_distance(name: str, raw: str) -> float:
    text = raw.strip()
    if text.startswith("-"):
        raise BadRequestData(f"{name} must be a non-negative number of metres; got '{raw}'")
    value = float(text) if _NUMBER.match(text) else math.nan
    if not math.isfinite(value):
        raise BadRequestData(f"{name} must be a non-negative number of metres; got '{raw}'")
    return value


def _parse_coordinates(coordinates: str | list[Any]) -> Any:
    if not isinstance(coordinates, str):
        return coordinates
    text = unquote(coordinates) if "%" in coordinates else coordinates
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise BadRequestData(
            f"coordinates must be a JSON array of lon,lat positions, e.g. [-118.24,34.05]; got '{shown}'"
        ) from None


def _geoproperty_iri(geoproperty: str | None, expand: Callable[[str], str]) -> str:
    name = (geoproperty or "").strip()
    if not name:
        return DEFAULT_GEOPROPERTY
    if name in CORE_GEOPROPERTIES:
        return NGSI_LD + name
    return expand(name)


# -- GeoJSON validation --------------------------------------------------------------------------


def validate_geometry(geometry: Any) -> dict[str, Any]:
    """Check a GeoJSON geometry as a GeoProperty value holds it; BadRequestData names what is wrong."""
    if not isinstance(geometry, dict):
        raise BadRequestData(f"a GeoJSON geometry must be an object with type and coordinates; got {_show(geometry)}")
    gtype = geometry.get("type")
    if gtype not in GEOMETRY_TYPES:
        raise BadRequestData(f"GeoJSON geometry type must be one of {', '.join(GEOMETRY_TYPES)}; got {_show(gtype)}")
    if "coordinates" not in geometry:
        raise BadRequestData(f"GeoJSON {gtype} has no coordinates")
    coordinates = geometry["coordinates"]
    if gtype == "Point":
        _check_position(coordinates, gtype)
    elif gtype in ("MultiPoint", "LineString"):
        _check_line(coordinates, gtype, minimum=1 if gtype == "MultiPoint" else 2)
    elif gtype == "MultiLineString":
        for index, line in enumerate(_array(coordinates, gtype, "lines")):
            _check_line(line, f"{gtype} line {index}", minimum=2)
    elif gtype == "Polygon":
        _check_polygon(coordinates, gtype)
        _check_rings(len(coordinates), gtype)
    else:
        for index, polygon in enumerate(_array(coordinates, gtype, "polygons")):
            _check_polygon(polygon, f"{gtype} polygon {index}")
        _check_rings(sum(len(polygon) for polygon in coordinates), gtype)
    return geometry


# Repairing an invalid polygon (shapely.make_valid, before GEOS can relate it) takes time that grows with the
# square of its rings: 2,001 rings took ~10 s, under the entity write lock. 100 rings take ~15 ms; a city's
# park with its lakes needs far fewer.
MAX_RINGS = 100


def _check_rings(rings: int, where: str) -> None:
    if rings > MAX_RINGS:
        raise BadRequestData(f"GeoJSON {where} has {rings} linear rings; at most {MAX_RINGS} are accepted")


def _array(value: Any, where: str, what: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple) or not value:
        raise BadRequestData(f"GeoJSON {where} must be a non-empty array of {what}; got {_show(value)}")
    return value


def _check_line(value: Any, where: str, *, minimum: int) -> None:
    positions = _array(value, where, "positions")
    if len(positions) < minimum:
        raise BadRequestData(f"GeoJSON {where} needs at least {minimum} positions; got {len(positions)}")
    for position in positions:
        _check_position(position, where)


def _check_polygon(rings: Any, where: str) -> None:
    for index, ring in enumerate(_array(rings, where, "linear rings")):
        ring_where = f"{where} ring {index}"
        _check_line(ring, ring_where, minimum=4)
        if list(ring[0]) != list(ring[-1]):
            raise BadRequestData(
                f"GeoJSON {ring_where} is not closed: it starts at {_show(ring[0])} and ends at {_show(ring[-1])}"
            )


def _check_position(position: Any, where: str) -> None:
    if not isinstance(position, list | tuple) or len(position) not in (2, 3):
        raise BadRequestData(f"GeoJSON {where}: a position is [lon, lat] or [lon, lat, alt]; got {_show(position)}")
    for number in position:
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise BadRequestData(f"GeoJSON {where}: position {_show(position)} holds a non-number or non-finite value")
    lon, lat = position[0], position[1]
    if not -180.0 <= lon <= 180.0:
        raise BadRequestData(f"GeoJSON {where}: longitude {lon} in {_show(position)} is outside [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        raise BadRequestData(f"GeoJSON {where}: latitude {lat} in {_show(position)} is outside [-90, 90]")


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- evaluation ----------------------------------------------------------------------------------


def haversine_m(lon0: float, lat0: float, lon: float, lat: float) -> float:
    """Great-circle metres from (lon0, lat0) to (lon, lat); geo_index computes the same expression in SQL."""
    lat0_r = lat0 * DEG
    s_lat = math.sin((lat * DEG - lat0_r) / 2)
    s_lon = math.sin((lon * DEG - lon0 * DEG) / 2)
    a = s_lat * s_lat + math.cos(lat0_r) * math.cos(lat * DEG) * (s_lon * s_lon)
    return TWO_R * math.asin(math.sqrt(min(1.0, a)))


def matches(query: GeoQuery, geometry: dict[str, Any]) -> bool:
    """Whether one stored geometry satisfies the query; a malformed stored geometry never matches."""
    return matcher(query)(geometry)


Matcher = Callable[[dict[str, Any]], bool]
_MATCHERS: dict[int, tuple[GeoQuery, Matcher]] = {}
_MATCHER_CACHE_SIZE = 64


def matcher(query: GeoQuery) -> Matcher:
    """A predicate over stored geometries with the query's own geometry parsed once (the store calls
    `matches` for every candidate of one query, so the work is kept per query object)."""
    cached = _MATCHERS.get(id(query))
    if cached is not None and cached[0] is query:
        return cached[1]
    built = _near_matcher(query) if query.georel == "near" else _relation_matcher(query)
    if len(_MATCHERS) >= _MATCHER_CACHE_SIZE:
        _MATCHERS.clear()
    _MATCHERS[id(query)] = (query, built)
    return built


def _near_matcher(query: GeoQuery) -> Matcher:
    lon0, lat0 = float(query.geometry["coordinates"][0]), float(query.geometry["coordinates"][1])
    upper = math.inf if query.max_distance is None else query.max_distance
    lower = 0.0 if query.min_distance is None else query.min_distance

    def near(geometry: dict[str, Any]) -> bool:
        try:
            distance = _distance_m(lon0, lat0, geometry)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, ShapelyError):
            return False
        return lower <= distance <= upper

    return near


def _distance_m(lon0: float, lat0: float, geometry: dict[str, Any]) -> float:
    gtype, coordinates = geometry["type"], geometry["coordinates"]
    if gtype == "Point":
        return haversine_m(lon0, lat0, coordinates[0], coordinates[1])
    if gtype == "MultiPoint":
        return min(haversine_m(lon0, lat0, p[0], p[1]) for p in coordinates)
    return _projected_distance_m(lon0, lat0, geometry_shape(geometry))


def _projected_distance_m(lon0: float, lat0: float, stored: BaseGeometry) -> float:
    if stored.is_empty:  # a polygon that was nothing but a degenerate ring is nowhere, so never near
        return math.nan
    kx = METRES_PER_DEGREE * math.cos(lat0 * DEG)
    minx, _, maxx, _ = stored.bounds
    origin = Point(0.0, 0.0)
    best = math.inf
    for shift in (0.0, -360.0, 360.0):
        # Only a copy whose longitudes come within 180° of the query point can be the nearest one.
        if shift and (maxx + shift < lon0 - 180.0 or minx + shift > lon0 + 180.0):
            continue

        def project(xy: Any, shift: float = shift) -> Any:
            out = xy.copy()
            out[:, 0] = (xy[:, 0] + shift - lon0) * kx
            out[:, 1] = (xy[:, 1] - lat0) * METRES_PER_DEGREE
            return out

        best = min(best, shapely.transform(stored, project).distance(origin))
    return best


def _relation_matcher(query: GeoQuery) -> Matcher:
    target = geometry_shape(query.geometry)
    shapely.prepare(target)
    # Each georel is phrased with the (prepared) query geometry first: within(stored, q) == contains(q, stored).
    predicate: Callable[[BaseGeometry, BaseGeometry], Any] = {
        "within": shapely.contains,
        "contains": shapely.within,
        "intersects": shapely.intersects,
        "equals": shapely.equals,
        "disjoint": shapely.disjoint,
        "overlaps": shapely.overlaps,
    }[query.georel]

    def relate(geometry: dict[str, Any]) -> bool:
        try:
            return bool(predicate(target, geometry_shape(geometry)))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, ShapelyError):
            return False

    return relate


def geometry_shape(geometry: dict[str, Any]) -> BaseGeometry:
    """The shapely geometry of a GeoJSON one, 2-D, with invalid polygons repaired so GEOS can relate them."""
    try:
        built = shape({"type": geometry["type"], "coordinates": geometry["coordinates"]})
    except ValueError:  # positions of mixed dimension (some with altitude) make a ragged array
        built = shape({"type": geometry["type"], "coordinates": _planar(geometry["coordinates"])})
    if built.has_z:
        built = shapely.force_2d(built)
    if geometry["type"] in ("Polygon", "MultiPolygon") and not built.is_valid:
        built = shapely.make_valid(built)
    return built


def _planar(coordinates: Any) -> Any:
    if coordinates and not isinstance(coordinates[0], list | tuple):
        return list(coordinates[:2])
    return [_planar(part) for part in coordinates]
