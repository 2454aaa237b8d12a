"""Query latency over a hub of 100,000 TrafficFlowObserved entities plus the Los-loop history.

Targets (2 cores): `near` (1 km) p95 <= 20 ms; `q` on a numeric attribute p95 <= 50 ms; one sensor's week
of history (2,016 instances) p95 <= 20 ms.

The hub: HUB_SIZE entities written straight into the store (each within ~20 km of a real Los-loop sensor,
with that sensor's first speed reading), then `ingest(los-loop)`: 207 more entities with 2,016 readings each.

Each query kind is measured at three levels, one after the other on the same database file:
- baselines without the indexes the store maintains: a Python scan of all entity documents (parsed in
  memory beforehand, so only the filtering is timed) and plain SQL without the index tables (near: haversine
  over every geo_index row, no lon/lat window, no H3 cells; q: the value read out of each document's JSON);
  for the history, a raw SQL fetch of the same two columns filtered on the entity id string, as the
  store did before history rows carried their integer `hkey` (which lets DuckDB skip row groups);
- the store in process (`DuckDBStore.query` / `.temporal` with the EntityQuery the route builds);
- HTTP against `polis serve`, one keep-alive client, sequential requests, the full answer read.
Every level runs WARMUP untimed queries, then N timed ones (fewer for the slow Python scans, see `n`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks.common import (
    GET_HEADERS,
    LOS_LOOP_START,
    READY_PATH,
    City,
    check,
    city,
    cleanup,
    fresh_dir,
    ingest_datasets,
    latency_stats,
    running_server,
    save,
    say,
    sdm_terms,
    seed_store,
    time_each,
    verdict,
)

HUB_SIZE = 100_000
N = 200
N_SCAN = 30  # the Python full-scan baselines take a few hundred ms each
WARMUP = 20
LIMIT = 100
NEAR_M = 1_000
TARGET_NEAR_P95_MS = 20.0
TARGET_Q_P95_MS = 50.0
TARGET_TEMPORAL_P95_MS = 20.0
WEEK_INSTANCES = 2_016
TYPE = "TrafficFlowObserved"
SPEED = "https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"
TYPE_IRI = "https://smartdatamodels.org/dataModel.Transportation/TrafficFlowObserved"
LOCATION = "https://uri.etsi.org/ngsi-ld/location"
WEEK_START = LOS_LOOP_START.strftime("%Y-%m-%dT%H:%M:%SZ")
WEEK_END = "2012-03-08T08:00:00Z"


# ---------------------------------------------------------------------------------------------- the queries


def near_params(c: City, i: int) -> dict[str, str]:
    """Around the position of a seeded-random benchmark entity: a populated spot, like a map click."""
    k = int(np.random.default_rng(i).integers(0, len(c.ids)))
    return {"type": TYPE, "georel": f"near;maxDistance=={NEAR_M}", "geometry": "Point",
            "coordinates": f"[{c.lon[k]},{c.lat[k]}]", "limit": str(LIMIT)}


def q_params(i: int) -> dict[str, str]:
    """`speed>50`-like, the threshold stepping through 50..59 mph so no two consecutive queries are equal."""
    return {"type": TYPE, "q": f"averageVehicleSpeed>{50 + i % 10}", "limit": str(LIMIT)}


def temporal_params() -> dict[str, str]:
    return {"attrs": "averageVehicleSpeed", "timerel": "between", "timeAt": WEEK_START, "endTimeAt": WEEK_END}


def _entity_query(params: dict[str, str]) -> Any:
    from polis.api.routes_entities import build_entity_query

    query, _ = build_entity_query(params, sdm_terms(), default_limit=20, max_limit=1000)
    return query


# ---------------------------------------------------------------------------------------------- baselines


_HAVERSINE = ("2 * 6371008.8 * asin(sqrt(pow(sin(radians(lat - ?) / 2), 2) + "
              "cos(radians(?)) * cos(radians(lat)) * pow(sin(radians(lon - ?) / 2), 2)))")


def _sql_baselines(db_path: Path, c: City) -> dict[str, Any]:
    """The same answers from plain SQL that ignores the H3/window prefilter and the attr_index table."""
    import duckdb

    from polis.settings import Settings

    settings = Settings()
    con = duckdb.connect(str(db_path), config={"threads": settings.duckdb_threads,
                                               "memory_limit": settings.memory_limit})
    try:
        near_sql = (f"SELECT e.doc FROM entities e WHERE e.tenant = '' AND list_has_all(e.types, [?]) AND e.seq IN "
                    f"(SELECT seq FROM geo_index WHERE tenant = '' AND attr = ? AND {_HAVERSINE} <= ?) "
                    f"ORDER BY e.seq LIMIT {LIMIT}")
        q_sql = ("SELECT e.doc FROM entities e WHERE e.tenant = '' AND list_has_all(e.types, [?]) AND "
                 f"TRY_CAST(json_extract_string(e.doc, ?) AS DOUBLE) > ? ORDER BY e.seq LIMIT {LIMIT}")
        speed_path = f'$."{SPEED}"[0].value'

        def near(i: int) -> None:
            p = near_params(c, i)
            lon, lat = orjson.loads(p["coordinates"])
            rows = con.execute(near_sql, [TYPE_IRI, LOCATION, lat, lat, lon, NEAR_M]).fetchall()
            [orjson.loads(r[0]) for r in rows]

        def q(i: int) -> None:
            rows = con.execute(q_sql, [TYPE_IRI, speed_path, float(50 + i % 10)]).fetchall()
            [orjson.loads(r[0]) for r in rows]

        loop_ids = [f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}" for s in c.loop.sensor_ids]
        start, end = datetime.fromisoformat(WEEK_START[:-1]), datetime.fromisoformat(WEEK_END[:-1])

        def week(i: int) -> None:
            rows = con.execute(
                "SELECT observed_at, num FROM history WHERE tenant = '' AND eid = ? AND attr = ? "
                "AND observed_at >= ? AND observed_at < ? ORDER BY observed_at",
                [loop_ids[i % len(loop_ids)], SPEED, start, end]).fetchall()
            if len(rows) != WEEK_INSTANCES:
                raise RuntimeError(f"raw history fetch returned {len(rows)} rows")

        return {
            "near_sql_without_h3_prefilter": latency_stats(time_each(near, N_SCAN, 3)),
            "q_sql_without_attr_index": latency_stats(time_each(q, N_SCAN, 3)),
            "temporal_raw_sql_by_id_string": latency_stats(time_each(week, N, WARMUP)),
        }
    finally:
        con.close()


def _python_scan_baselines(docs: list[dict[str, Any]], c: City) -> dict[str, Any]:
    """Filter every entity document in Python (documents already parsed, in creation order)."""
    from polis.ngsi_ld.geoquery import matches as geo_matches
    from polis.ngsi_ld.q import matches as q_matches

    def first_page(test: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        page: list[dict[str, Any]] = []
        for doc in docs:  # the whole list is scanned: a count or a later page would need it
            if test(doc) and len(page) < LIMIT:
                page.append(doc)
        return page

    def near(i: int) -> None:
        query = _entity_query(near_params(c, i))
        first_page(lambda d: TYPE_IRI in d["type"] and any(
            geo_matches(query.geo, inst["value"]) for inst in d.get(LOCATION, ()) if inst.get("type") == "GeoProperty"))

    def q(i: int) -> None:
        query = _entity_query(q_params(i))
        first_page(lambda d: TYPE_IRI in d["type"] and q_matches(query.q, d))

    return {"near_python_full_scan": latency_stats(time_each(near, N_SCAN, 2)),
            "q_python_full_scan": latency_stats(time_each(q, N_SCAN, 2))}


def _load_docs(db_path: Path) -> list[dict[str, Any]]:
    import duckdb

    con = duckdb.connect(str(db_path))
    try:
        return [orjson.loads(r[0]) for r in con.execute("SELECT doc FROM entities ORDER BY seq").fetchall()]
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------- store and HTTP


def _store_level(db_path: Path, c: City) -> tuple[dict[str, Any], dict[str, float]]:
    from polis.settings import Settings
    from polis.store.base import TemporalQuery
    from polis.store.duckdb_ import DuckDBStore

    settings = Settings()
    store = DuckDBStore(db_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    sizes: dict[str, list[int]] = {"near": [], "q": []}
    loop_ids = [f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}" for s in c.loop.sensor_ids]
    week = TemporalQuery(attrs=(SPEED,), timerel="between", time_at=datetime.fromisoformat(WEEK_START),
                         end_time_at=datetime.fromisoformat(WEEK_END), max_instances=settings.max_temporal_instances)
    try:
        def near(i: int) -> None:
            sizes["near"].append(len(store.query("", _entity_query(near_params(c, i))).entities))

        def q(i: int) -> None:
            sizes["q"].append(len(store.query("", _entity_query(q_params(i))).entities))

        def temporal(i: int) -> None:
            eid = loop_ids[i % len(loop_ids)]
            got = len(store.temporal("", [eid], week)[eid][SPEED].instances)
            if got != WEEK_INSTANCES:
                raise RuntimeError(f"{eid}: {got} instances, expected {WEEK_INSTANCES}")

        stats = {"near_store": latency_stats(time_each(near, N, WARMUP)),
                 "q_store": latency_stats(time_each(q, N, WARMUP)),
                 "temporal_store": latency_stats(time_each(temporal, N, WARMUP))}
    finally:
        store.close()
    return stats, {k: round(float(np.mean(v)), 1) for k, v in sizes.items()}


def _http_level(hub: Path, c: City) -> dict[str, Any]:
    loop_ids = [f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}" for s in c.loop.sensor_ids]
    entities = "/ngsi-ld/v1/entities"
    with (
        running_server(hub) as server,
        httpx.Client(base_url=server.url, timeout=60.0, headers=server.headers) as client,
    ):
        client.get(READY_PATH)

        def get(path: str, params: dict[str, str], status: int = 200) -> httpx.Response:
            return check(client.get(path, params=params, headers=GET_HEADERS), status)

        def near(i: int) -> None:
            get(entities, near_params(c, i)).json()

        def q(i: int) -> None:
            get(entities, q_params(i)).json()

        def temporal(fmt: str | None) -> Callable[[int], None]:
            params = temporal_params() | ({"options": fmt} if fmt else {})

            def one(i: int) -> None:
                body = get(f"/ngsi-ld/v1/temporal/entities/{loop_ids[i % len(loop_ids)]}", params).json()
                speed = body["averageVehicleSpeed"]
                got = len(speed["values"]) if fmt == "temporalValues" else len(speed)
                if got != WEEK_INSTANCES:
                    raise RuntimeError(f"temporal answer has {got} instances, expected {WEEK_INSTANCES}")
            return one

        def floor(i: int) -> None:
            check(client.get("/not-a-route", headers=GET_HEADERS), 404)

        stats = {"http_round_trip_floor_404": latency_stats(time_each(floor, N, WARMUP)),
                 "near_http": latency_stats(time_each(near, N, WARMUP)),
                 "q_http": latency_stats(time_each(q, N, WARMUP)),
                 "temporal_http": latency_stats(time_each(temporal(None), N, WARMUP)),
                 "temporal_http_temporalValues": latency_stats(time_each(temporal("temporalValues"), N, WARMUP))}
        stats["server_memory_mib"] = server.memory_mib()  # type: ignore[assignment]
    return stats


# ---------------------------------------------------------------------------------------------- run


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str = "p95_ms") -> float:
    return round(a[key] / b[key], 2) if b[key] else float("nan")


def run() -> dict[str, Any]:
    say(f"bench_queries: {HUB_SIZE:,} entities + Los-loop history; {N} timed queries per level after {WARMUP}")
    work = fresh_dir("queries")
    try:
        c = city(HUB_SIZE)
        hub = work / "hub"
        seed_s = seed_store(hub / "polis.duckdb", c)
        ingest_datasets(hub / "polis.duckdb", ["los-loop"])
        say(f"  seeded the hub in {seed_s:.1f} s")
        # The store and HTTP levels run before 100k documents are parsed into this process for the scans.
        baselines = _sql_baselines(hub / "polis.duckdb", c)
        store, sizes = _store_level(hub / "polis.duckdb", c)
        http = _http_level(hub, c)
        baselines.update(_python_scan_baselines(_load_docs(hub / "polis.duckdb"), c))
    finally:
        cleanup(work)
    kinds = {
        "near": ("near_http", TARGET_NEAR_P95_MS, ("near_store", "near_sql_without_h3_prefilter",
                                                   "near_python_full_scan")),
        "q": ("q_http", TARGET_Q_P95_MS, ("q_store", "q_sql_without_attr_index", "q_python_full_scan")),
        "temporal": ("temporal_http", TARGET_TEMPORAL_P95_MS, ("temporal_store", "temporal_raw_sql_by_id_string")),
    }
    levels = {**baselines, **store, **http}
    summary: dict[str, Any] = {}
    for kind, (headline, target, others) in kinds.items():
        measured = levels[headline]
        summary[kind] = {
            "target_p95_ms": target,
            "http_median_ms": measured["median_ms"],
            "http_p95_ms": measured["p95_ms"],
            "verdict": verdict(measured["p95_ms"], target, higher_is_better=False),
            "p95_ratio_http_over": {other: _ratio(measured, levels[other]) for other in others},
        }
        say(f"  {kind}: HTTP median {measured['median_ms']:.1f} ms, p95 {measured['p95_ms']:.1f} ms "
            f"(target p95 <= {target:.0f} ms: {summary[kind]['verdict']})")
        for other in others:
            say(f"    {other}: median {levels[other]['median_ms']:.1f} ms, p95 {levels[other]['p95_ms']:.1f} ms "
                f"(n={levels[other]['n']})")
    say(f"  mean entities returned: near {sizes['near']}, q {sizes['q']} (limit {LIMIT}); "
        f"HTTP floor (404) median {levels['http_round_trip_floor_404']['median_ms']:.2f} ms")
    result = {
        "setup": {"hub_entities": HUB_SIZE + 207, "history_rows_los_loop": 207 * WEEK_INSTANCES,
                  "seeded_entities_seconds": round(seed_s, 1), "limit": LIMIT, "near_max_distance_m": NEAR_M,
                  "timed_queries": N, "warmup_queries": WARMUP, "python_scan_queries": N_SCAN,
                  "mean_entities_returned": sizes,
                  "client": "one httpx.Client, keep-alive, sequential; latency measured by the client"},
        "summary": summary,
        "levels": levels,
    }
    save("queries", result)
    return result


if __name__ == "__main__":
    run()
