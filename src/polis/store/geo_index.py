"""The spatial index behind geo-queries: one `geo_index` row per GeoProperty instance, and the SQL that
narrows a geo-query to candidate entities.

DuckDB has no spatial index that helps here, so the prefilter is plain columns a vectorised scan
filters fast: the bounding box of every geometry and, for points, the H3 cell at resolution 6 (the parent
of the resolution-9 cell). What the SQL decides:

- `near` over Point rows is exact in SQL: an H3 ring and a lon/lat window narrow the rows, then the
  haversine distance is computed with the same expression `geoquery.haversine_m` uses, so SQL and Python agree.
- Everything else (near over other shapes, and every other georel) is a bounding-box prefilter; the caller
  checks the candidates with `geoquery.matches`. `disjoint` cannot be prefiltered: its candidates are every
  entity that has the geoproperty.

Limits: bounding boxes are planar lon/lat, like the predicates they prefilter, so geometries are not
split at the antimeridian. The `near` window does wrap at the antimeridian and drops the longitude bound when
the circle reaches a pole, so `near` stays correct everywhere; rows with an empty (fully degenerate)
geometry have NULL boxes and are only ever candidates for `disjoint`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import h3
import numpy as np
import orjson
from shapely.errors import ShapelyError

from polis.domain.entity import Entity, attribute_names
from polis.domain.errors import BadRequestData
from polis.ngsi_ld.geoquery import (
    DEG,
    EARTH_RADIUS_M,
    TWO_R,
    GeoQuery,
    geometry_shape,
    haversine_m,
    validate_geometry,
)

GEO_INDEX_DDL = """CREATE TABLE IF NOT EXISTS geo_index (
    tenant VARCHAR NOT NULL, seq BIGINT NOT NULL, attr VARCHAR NOT NULL,
    gtype VARCHAR NOT NULL, lon DOUBLE, lat DOUBLE,
    minx DOUBLE, miny DOUBLE, maxx DOUBLE, maxy DOUBLE,
    h3 UBIGINT, h3_r6 UBIGINT,
    geojson VARCHAR NOT NULL)"""

H3_RESOLUTION = 9
H3_COARSE_RESOLUTION = 6
MAX_RING_CELLS = 500
_EPS_DEG = 1e-9  # widens every box a little, so rounding can only add candidates, never lose one
_BOX = ("minx", "miny", "maxx", "maxy")

GeoRow = tuple[
    int,
    str,
    str,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    int | None,
    int | None,
    str,
]


# -- rows ----------------------------------------------------------------------------------------


def geo_values(entity: Entity) -> list[tuple[str, Any]]:
    """(attribute, value) of every GeoProperty instance: all that its geo rows are made from."""
    out = []
    for attr in attribute_names(entity):
        instances = entity[attr]
        if not isinstance(instances, list):
            continue
        for instance in instances:
            if isinstance(instance, dict) and instance.get("type") == "GeoProperty":
                out.append((attr, instance.get("value")))
    return out


def geo_index_rows(entity: Entity, key: int, values: list[tuple[str, Any]] | None = None) -> list[GeoRow]:
    """(key, attr, gtype, lon, lat, minx, miny, maxx, maxy, h3, h3_r6, geojson) for every GeoProperty
    instance (`values`: its `geo_values`, if known); lon/lat are the point itself or the centroid of other
    shapes. Malformed values are skipped: they can match no geo-query. `key` is the entity's integer `seq`
    in the store."""
    rows: list[GeoRow] = []
    for attr, value in geo_values(entity) if values is None else values:
        row = _row(key, attr, value)
        if row is not None:
            rows.append(row)
    return rows


def _row(eid: int, attr: str, geometry: Any) -> GeoRow | None:
    try:
        validate_geometry(geometry)
    except BadRequestData:
        return None
    gtype, coordinates = geometry["type"], geometry["coordinates"]
    text = orjson.dumps({"type": gtype, "coordinates": coordinates}).decode()
    if gtype == "Point":
        lon, lat = float(coordinates[0]), float(coordinates[1])
        cell, coarse = _cells(lon, lat)
        return eid, attr, gtype, lon, lat, lon, lat, lon, lat, cell, coarse, text
    # The box of the repaired shape, the one `matches` evaluates, so the prefilter agrees with it.
    try:
        shaped = geometry_shape(geometry)
    except (ValueError, ShapelyError):  # what GEOS cannot build, `matches` cannot match either
        return None
    if shaped.is_empty:
        return eid, attr, gtype, None, None, None, None, None, None, None, None, text
    minx, miny, maxx, maxy = shaped.bounds
    centroid = shaped.centroid
    if centroid.is_empty or not (math.isfinite(centroid.x) and math.isfinite(centroid.y)):
        lon, lat = (minx + maxx) / 2, (miny + maxy) / 2
    else:
        lon, lat = centroid.x, centroid.y
    cell, coarse = _cells(lon, lat)
    return eid, attr, gtype, lon, lat, minx, miny, maxx, maxy, cell, coarse, text


def _cells(lon: float, lat: float) -> tuple[int, int]:
    cell = h3.latlng_to_cell(lat, lon, H3_RESOLUTION)
    return h3.str_to_int(cell), h3.str_to_int(h3.cell_to_parent(cell, H3_COARSE_RESOLUTION))


# -- SQL -----------------------------------------------------------------------------------------


def geo_to_sql(query: GeoQuery, tenant: str, *, points_only: bool = False) -> tuple[str, list[object], bool]:
    """A predicate on the entities table `e` (its `seq` column), its parameters, and whether it is the exact answer.

    When `exact` is False the predicate selects a superset and the caller must keep only the entities with
    an instance that `matches`. `points_only=True` says the caller knows every stored value of this
    geoproperty is a Point; then `near` is answered by SQL alone.
    """
    if query.georel == "near":
        condition, params, exact = _near_sql(query, points_only)
    else:
        condition, params, exact = _relation_sql(query)
    sql = f"e.seq IN (SELECT seq FROM geo_index WHERE tenant = ? AND attr = ? AND ({condition}))"
    return sql, [tenant, query.geoproperty, *params], exact


@dataclass(frozen=True, slots=True)
class NearWindow:
    """Lon/lat bounds of every point within a distance of a centre, by haversine and by the local
    equirectangular projection alike; `lon_ranges` None means any longitude (the circle reaches a pole)."""

    lat_lo: float
    lat_hi: float
    lon_ranges: tuple[tuple[float, float], ...] | None


def near_window(lon0: float, lat0: float, distance_m: float) -> NearWindow:
    r = distance_m / EARTH_RADIUS_M  # radians of arc
    r_deg = r / DEG
    lat_lo, lat_hi = lat0 - r_deg - _EPS_DEG, lat0 + r_deg + _EPS_DEG
    if lat_hi >= 90.0 or lat_lo <= -90.0:
        return NearWindow(lat_lo, lat_hi, None)
    cos_lat = math.cos(lat0 * DEG)
    # The spherical cap's exact half-width, and the projection's (r/cos), whichever is wider.
    spherical = math.asin(min(1.0, math.sin(r) / cos_lat)) / DEG
    half_width = max(spherical, r_deg / cos_lat) * (1 + 1e-9) + _EPS_DEG
    if half_width >= 180.0:
        return NearWindow(lat_lo, lat_hi, None)
    ranges = tuple(
        (lon0 - half_width + shift, lon0 + half_width + shift)
        for shift in (0.0, -360.0, 360.0)
        if lon0 - half_width + shift <= 180.0 and lon0 + half_width + shift >= -180.0
    )
    return NearWindow(lat_lo, lat_hi, ranges)


def covering_cells(lon0: float, lat0: float, distance_m: float) -> list[int] | None:
    """The resolution-6 cells (as integers) that every stored `h3_r6` within `distance_m` of the point
    belongs to, or None when more than MAX_RING_CELLS would be needed.

    The cells containing the circle lie in grid_disk(origin, k) once no cell of the next ring comes within
    reach of the centre: the circle is connected, so leaving the disk means crossing that ring. A row's
    `h3_r6` is the *parent* of its resolution-9 cell, which can be a neighbour of the resolution-6 cell
    holding the point (H3 children do not nest exactly), hence one more ring.
    """
    origin = h3.latlng_to_cell(lat0, lon0, H3_COARSE_RESOLUTION)
    edge = h3.average_hexagon_edge_length(H3_COARSE_RESOLUTION, unit="m")
    k = max(0, int(distance_m / (2.5 * edge)))  # a lower estimate; the loop below proves or grows it
    reach = distance_m * (1 + 1e-9) + 1.0
    while _disk_size(k + 1) <= MAX_RING_CELLS:
        inner = set(h3.grid_disk(origin, k))
        ring = [cell for cell in h3.grid_disk(origin, k + 1) if cell not in inner]
        if all(_beyond(lon0, lat0, cell, reach) for cell in ring):
            # The circle lies in the cells of disk(k); the parents of its points' cells in disk(k + 1).
            return sorted(h3.str_to_int(cell) for cell in inner.union(ring))
        k += 1
    return None


def _disk_size(k: int) -> int:
    return 3 * k * (k + 1) + 1


def _beyond(lon0: float, lat0: float, cell: str, reach: float) -> bool:
    """Whether no point of the cell is within `reach` metres (centre distance minus circumradius)."""
    clat, clon = h3.cell_to_latlng(cell)
    circumradius = max(haversine_m(clon, clat, vlon, vlat) for vlat, vlon in h3.cell_to_boundary(cell))
    return haversine_m(lon0, lat0, clon, clat) - circumradius > reach


def _haversine_sql(lon0: float, lat0: float) -> tuple[str, list[object]]:
    """`geoquery.haversine_m` from (lon0, lat0) to the row's (lon, lat), term for term."""
    lat0_r, lon0_r = lat0 * DEG, lon0 * DEG
    s_lat = "sin((lat * ? - ?) / 2)"
    s_lon = "sin((lon * ? - ?) / 2)"
    sql = f"(? * asin(sqrt(least(1.0, {s_lat} * {s_lat} + ? * cos(lat * ?) * ({s_lon} * {s_lon})))))"
    params: list[object] = [TWO_R, DEG, lat0_r, DEG, lat0_r, math.cos(lat0_r), DEG, DEG, lon0_r, DEG, lon0_r]
    return sql, params


def _near_sql(query: GeoQuery, points_only: bool) -> tuple[str, list[object], bool]:
    lon0, lat0 = float(query.geometry["coordinates"][0]), float(query.geometry["coordinates"][1])
    distance_sql, distance_params = _haversine_sql(lon0, lat0)
    # The window test stays outside any OR so DuckDB pushes it into the scan; on Point rows the box
    # columns equal lon/lat, so one test serves both kinds of row.
    common: list[str] = []
    common_params: list[object] = []
    exact_tests: list[str] = []  # decide Point rows
    exact_params: list[object] = []
    if query.max_distance is not None:
        window = near_window(lon0, lat0, query.max_distance)
        sql, params = _window_sql(window, *(("lon", "lat", "lon", "lat") if points_only else _BOX))
        common.append(sql)
        common_params.extend(params)
        cells = covering_cells(lon0, lat0, query.max_distance)
        if cells is not None:  # integers from h3, safe to inline; the BETWEEN lets zone maps skip row groups
            exact_tests.append(f"h3_r6 BETWEEN {cells[0]} AND {cells[-1]} AND h3_r6 IN ({', '.join(map(str, cells))})")
        exact_tests.append(f"{distance_sql} <= ?")
        exact_params.extend([*distance_params, query.max_distance])
    if query.min_distance is not None:
        exact_tests.append(f"{distance_sql} >= ?")
        exact_params.extend([*distance_params, query.min_distance])
    if points_only:
        return " AND ".join(["gtype = 'Point'", *common, *exact_tests]), [*common_params, *exact_params], True
    either = f"(gtype <> 'Point' OR ({' AND '.join(exact_tests)}))"
    return " AND ".join([*common, either]), [*common_params, *exact_params], False


def _window_sql(window: NearWindow, minx: str, miny: str, maxx: str, maxy: str) -> tuple[str, list[object]]:
    """Rows whose box [minx, maxx] x [miny, maxy] meets the window (for points both ends are lon/lat)."""
    sql = f"{maxy} >= ? AND {miny} <= ?"
    params: list[object] = [window.lat_lo, window.lat_hi]
    if window.lon_ranges is not None:
        sql += " AND (" + " OR ".join(f"({maxx} >= ? AND {minx} <= ?)" for _ in window.lon_ranges) + ")"
        for lo, hi in window.lon_ranges:
            params.extend([lo, hi])
    return sql, params


def _relation_sql(query: GeoQuery) -> tuple[str, list[object], bool]:
    if query.georel == "disjoint":
        return "TRUE", [], False
    x0, y0, x1, y1 = geometry_shape(query.geometry).bounds
    e = _EPS_DEG
    if query.georel == "within":  # the stored box inside the query box
        return "minx >= ? AND miny >= ? AND maxx <= ? AND maxy <= ?", [x0 - e, y0 - e, x1 + e, y1 + e], False
    if query.georel == "contains":  # the stored box around the query box
        return "minx <= ? AND miny <= ? AND maxx >= ? AND maxy >= ?", [x0 + e, y0 + e, x1 - e, y1 - e], False
    if query.georel == "equals":
        sql = " AND ".join(f"{column} BETWEEN ? AND ?" for column in ("minx", "miny", "maxx", "maxy"))
        return sql, [x for b in (x0, y0, x1, y1) for x in (b - e, b + e)], False
    # intersects, overlaps: the boxes meet
    return "minx <= ? AND miny <= ? AND maxx >= ? AND maxy >= ?", [x1 + e, y1 + e, x0 - e, y0 - e], False


@dataclass(slots=True)
class PointTable:
    """The Point rows of one (tenant, geoproperty) of `geo_index`, as arrays: `near` over them is a numpy
    pass (~0.3 ms for 100,000 points) instead of a scan of the table (~6-7 ms). Built from the table, and
    rebuilt when a write changed any geo row since (`version`)."""

    seq: np.ndarray  # int64
    lon: np.ndarray  # float64
    lat: np.ndarray
    version: int
    built_at: float

    def near(self, query: GeoQuery) -> list[int]:
        """The seqs `_near_sql(query, points_only=True)` selects, by the same window and haversine, term for
        term (`geoquery.haversine_m`); the H3 cells there only skip rows, so they are not needed here."""
        assert query.max_distance is not None
        lon0, lat0 = float(query.geometry["coordinates"][0]), float(query.geometry["coordinates"][1])
        window = near_window(lon0, lat0, query.max_distance)
        keep = (self.lat >= window.lat_lo) & (self.lat <= window.lat_hi)
        if window.lon_ranges is not None:
            keep &= np.logical_or.reduce([(self.lon >= lo) & (self.lon <= hi) for lo, hi in window.lon_ranges])
        lon, lat, seq = self.lon[keep], self.lat[keep], self.seq[keep]
        lat0_r, lon0_r = lat0 * DEG, lon0 * DEG
        s_lat = np.sin((lat * DEG - lat0_r) / 2)
        s_lon = np.sin((lon * DEG - lon0_r) / 2)
        inner = np.minimum(1.0, s_lat * s_lat + math.cos(lat0_r) * np.cos(lat * DEG) * (s_lon * s_lon))
        distance = TWO_R * np.arcsin(np.sqrt(inner))
        match = distance <= query.max_distance
        if query.min_distance is not None:
            match &= distance >= query.min_distance
        return list(seq[match].tolist())  # Python ints, as SQL parameters
