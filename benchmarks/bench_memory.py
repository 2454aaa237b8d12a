"""Server memory with the demo city loaded: Los-loop and Melbourne pedestrians.

Target: <= 1 GiB resident (RSS) for the server process.

The hub is filled the user's way (`polis ingest los-loop melbourne-pedestrians` as a subprocess), then
`polis serve` runs on it and answers a realistic mix: near and q queries, a week of history for a dozen
Los-loop sensors, a year of one Melbourne counter (capped at the per-request instance limit), aggregated
values, type/attribute discovery and every entity page by page. VmRSS (now) and VmHWM (peak) are read from
/proc/<pid>/status after start and after the queries. Baseline: the same server and queries on an empty hub,
which is what the interpreter, FastAPI and DuckDB cost before any data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    GET_HEADERS,
    READY_PATH,
    ROOT,
    cleanup,
    fresh_dir,
    los_loop,
    running_server,
    save,
    say,
    verdict,
)

TARGET_MIB = 1024.0
DATASETS = ("los-loop", "melbourne-pedestrians")
MELBOURNE_SENSOR = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:"


def _cli_ingest(data_dir: Path) -> None:
    from polis.settings import Settings

    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    subprocess.run([sys.executable, "-m", "polis.cli", "ingest", *DATASETS, "--data-dir", str(data_dir)],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)


def _workload(client: httpx.Client, loaded: bool) -> int:
    """The query mix; returns how many requests succeeded with 200/206 (404s on the empty hub are fine)."""
    loop = los_loop()
    entities = "/ngsi-ld/v1/entities"
    week = {"attrs": "averageVehicleSpeed", "timerel": "between", "timeAt": "2012-03-01T08:00:00Z",
            "endTimeAt": "2012-03-08T08:00:00Z"}
    hourly = {**week, "options": "aggregatedValues", "aggrMethods": "avg,max", "aggrPeriodDuration": "PT1H"}
    requests: list[tuple[str, dict[str, str]]] = []
    for k in range(0, 207, 20):
        requests.append((entities, {"type": "TrafficFlowObserved", "georel": "near;maxDistance==1000",
                                    "geometry": "Point", "coordinates": f"[{loop.lon[k]},{loop.lat[k]}]"}))
        requests.append((f"/ngsi-ld/v1/temporal/entities/{loop.entity_ids[k]}", week))
        requests.append((f"/ngsi-ld/v1/temporal/entities/{loop.entity_ids[k]}", hourly))
    requests.append((entities, {"type": "TrafficFlowObserved", "q": "averageVehicleSpeed>50", "limit": "1000"}))
    requests.append((entities, {"type": "CrowdFlowObserved", "q": "peopleCount>100", "limit": "1000"}))
    for type_ in ("TrafficFlowObserved", "CrowdFlowObserved"):
        for offset in range(0, 300, 100):
            requests.append((entities, {"type": type_, "limit": "100", "offset": str(offset)}))
    requests.append(("/ngsi-ld/v1/types", {"details": "true"}))
    requests.append(("/ngsi-ld/v1/attributes", {"details": "true"}))
    melbourne = _first_melbourne_id(client) if loaded else f"{MELBOURNE_SENSOR}1"
    requests.append((f"/ngsi-ld/v1/temporal/entities/{melbourne}", {"attrs": "peopleCount"}))
    ok = 0
    for path, params in requests:
        response = client.get(path, params=params, headers=GET_HEADERS)
        if response.status_code in (200, 206):
            response.json()
            ok += 1
        elif loaded or response.status_code != 404:
            raise RuntimeError(f"GET {path} -> {response.status_code}: {response.text[:300]}")
    return ok


def _first_melbourne_id(client: httpx.Client) -> str:
    response = client.get("/ngsi-ld/v1/entities", params={"type": "CrowdFlowObserved", "limit": "1"},
                          headers=GET_HEADERS)
    return str(response.json()[0]["id"])


def _measure(data_dir: Path, loaded: bool) -> dict[str, Any]:
    with (
        running_server(data_dir) as server,
        httpx.Client(base_url=server.url, timeout=120.0, headers=server.headers) as client,
    ):
        client.get(READY_PATH)
        after_start = server.memory_mib()
        ok = _workload(client, loaded)
        ok += _workload(client, loaded)  # twice: caches that grow would show
        after = server.memory_mib()
    return {"after_start": after_start, "after_queries": after, "requests_answered": ok}


def _disk_mib(data_dir: Path) -> float:
    return round(sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) / 2**20, 1)


def run() -> dict[str, Any]:
    say(f"bench_memory: server RSS with {' + '.join(DATASETS)} loaded")
    work = fresh_dir("memory")
    try:
        hub = work / "hub"
        _cli_ingest(hub)
        disk = _disk_mib(hub)
        loaded = _measure(hub, loaded=True)
        empty = _measure(work / "empty", loaded=False)
    finally:
        cleanup(work)
    rss = loaded["after_queries"]["VmRSS"]
    peak = loaded["after_queries"]["VmHWM"]
    result = {
        "target": f"<= {TARGET_MIB:,.0f} MiB RSS",
        "measured_rss_mib": rss,
        "measured_peak_rss_mib": peak,
        "verdict": verdict(max(rss, peak), TARGET_MIB, higher_is_better=False),
        "loaded_hub": loaded,
        "baseline_empty_hub": empty,
        "database_on_disk_mib": disk,
        "ratios": {"rss_loaded_over_empty": round(rss / empty["after_queries"]["VmRSS"], 2),
                   "rss_over_target": round(rss / TARGET_MIB, 3)},
    }
    save("memory", result)
    say(f"  loaded hub: RSS {loaded['after_start']['VmRSS']:.0f} MiB after start, {rss:.0f} MiB after "
        f"{loaded['requests_answered']} requests, peak {peak:.0f} MiB; empty hub: "
        f"{empty['after_queries']['VmRSS']:.0f} MiB (peak {empty['after_queries']['VmHWM']:.0f}); "
        f"database {disk:.0f} MiB on disk")
    say(f"  => peak {peak:.0f} MiB, target {TARGET_MIB:.0f} MiB: {result['verdict']}")
    return result


if __name__ == "__main__":
    run()
