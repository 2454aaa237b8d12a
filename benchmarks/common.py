"""What every benchmark shares: the machine description, timing and statistics, a real `polis serve`
process, the city data the load is made of, and the JSON results under benchmarks/out/.

The load is real where the data exists: the 207 Los-loop (METR-LA) sensors give the locations (each
benchmark entity sits within ~20 km of one of them) and the speeds (row r of `los_speed.csv` is round r's
`averageVehicleSpeed`). `intensity` has no public source here and is drawn from a seeded generator.
"""

from __future__ import annotations

import json
import math
import os
import platform as py_platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from polis.domain.entity import Entity, HistoryInstance
from polis.localserver import Server, start_server, stop_server
from polis.settings import Settings

if TYPE_CHECKING:
    from polis.ngsi_ld.context import TermMap

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = Path(__file__).resolve().parent / "out"

SDM_TRANSPORT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
LINK_SDM = f'<{SDM_TRANSPORT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
# Readiness and connection warm-up use a path that never touches the store, so they cannot change what
# is measured (and /health's count query would leave DuckDB with an open result; see BENCHMARKS.md).
READY_PATH = "/openapi.json"
JSON_HEADERS = {"Content-Type": "application/json", "Link": LINK_SDM}
GET_HEADERS = {"Link": LINK_SDM, "Accept": "application/json"}

# Los-loop row 0 is 2012-03-01T00:00 America/Los_Angeles (see polis.ingest.datasets.load_los_loop).
LOS_LOOP_START = datetime(2012, 3, 1, 8, 0, tzinfo=UTC)
LOS_LOOP_STEP = timedelta(minutes=5)
JITTER_RADIUS_M = 20_000.0
EARTH_RADIUS_M = 6371008.8


# ---------------------------------------------------------------------------------------------- machine


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import duckdb

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "ram_gib": round(ram_gib, 1),
        "python": py_platform.python_version(),
        "duckdb": duckdb.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        # Other work on the machine shows up here; the numbers are only as quiet as the machine was.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------- statistics


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """Milliseconds: median, p95, p99, mean, min, max over the samples (linear-interpolated percentiles)."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {
        "n": int(ms.size),
        "median_ms": round(float(np.median(ms)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def time_each(fn: Callable[[int], object], n: int, warmup: int) -> list[float]:
    """Seconds per call of fn(i) for i in range(n), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(i)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return samples


def throughput(items_per_round: int, round_seconds: Sequence[float]) -> dict[str, Any]:
    """Items per second: the median round, and the slowest and fastest rounds."""
    rates = sorted(items_per_round / s for s in round_seconds)
    return {
        "rounds": len(rates),
        "items_per_round": items_per_round,
        "median_per_s": round(float(np.median(rates)), 1),
        "min_per_s": round(rates[0], 1),
        "max_per_s": round(rates[-1], 1),
        "round_seconds": [round(s, 4) for s in round_seconds],
    }


# ---------------------------------------------------------------------------------------------- server


@contextmanager
def running_server(data_dir: Path) -> Iterator[Server]:
    """`polis serve` (one uvicorn process, the shipped defaults) on a free loopback port, ready when its
    OpenAPI document answers (every route is mounted)."""
    server = start_server(data_dir, timeout=60.0, ready_path=READY_PATH)
    try:
        yield server
    except BaseException:
        say(f"server log ({server.log_path}), last lines:\n{server.log_tail()}")
        raise
    finally:
        stop_server(server.process)


def check(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                           f"{response.text[:500]}")
    return response


# ---------------------------------------------------------------------------------------------- city data


@dataclass(frozen=True, slots=True)
class LosLoop:
    sensor_ids: list[str]  # METR-LA ids, in file order
    entity_ids: list[str]  # their hub entity ids (what `polis ingest los-loop` creates)
    lon: np.ndarray
    lat: np.ndarray
    speeds: np.ndarray  # (2016 rows of 5 minutes, 207 sensors), mph


def los_loop(datasets_dir: Path | None = None) -> LosLoop:
    folder = (datasets_dir or Settings().datasets_dir) / "traffic" / "los-loop"
    with (folder / "los_speed.csv").open(encoding="utf-8") as handle:
        sensor_ids = handle.readline().strip().split(",")
    located: dict[str, tuple[float, float]] = {}
    for line in (folder / "sensor_locations.csv").read_text(encoding="utf-8").splitlines()[1:]:
        _, sid, lat, lon = line.split(",")
        located[sid] = (float(lon), float(lat))
    speeds = np.loadtxt(folder / "los_speed.csv", delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    return LosLoop(
        sensor_ids=sensor_ids,
        entity_ids=[f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}" for s in sensor_ids],
        lon=np.array([located[s][0] for s in sensor_ids]),
        lat=np.array([located[s][1] for s in sensor_ids]),
        speeds=speeds,
    )


@dataclass(frozen=True, slots=True)
class City:
    """n benchmark entities, each near one real Los-loop sensor: ids, positions, and the sensor it follows."""

    ids: list[str]
    lon: np.ndarray
    lat: np.ndarray
    sensor: np.ndarray  # index into LosLoop.sensor_ids
    intensity: np.ndarray  # (rounds, n) vehicles per 5 minutes, synthetic
    loop: LosLoop


def city(n: int, *, rounds: int = 16, seed: int = 20120301) -> City:
    """Entity i follows sensor i mod 207 and sits uniformly within JITTER_RADIUS_M of it (seeded)."""
    loop = los_loop()
    rng = np.random.default_rng(seed)
    sensor = np.arange(n) % len(loop.sensor_ids)
    distance = JITTER_RADIUS_M * np.sqrt(rng.random(n))  # uniform over the disc
    bearing = rng.random(n) * 2 * math.pi
    lat0 = loop.lat[sensor]
    dlat = np.degrees(distance * np.cos(bearing) / EARTH_RADIUS_M)
    dlon = np.degrees(distance * np.sin(bearing) / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
    ids = [f"urn:ngsi-ld:TrafficFlowObserved:bench-{i:06d}" for i in range(n)]
    intensity = rng.integers(0, 180, size=(rounds, n))
    return City(ids, np.round(loop.lon[sensor] + dlon, 6), np.round(lat0 + dlat, 6), sensor, intensity, loop)


def observed_at(round_: int) -> str:
    return (LOS_LOOP_START + round_ * LOS_LOOP_STEP).strftime("%Y-%m-%dT%H:%M:%SZ")


def traffic_payload(c: City, i: int, round_: int) -> dict[str, Any]:
    """One TrafficFlowObserved in normalized NGSI-LD, short names (the Smart Data Models context in Link)."""
    when = observed_at(round_)
    speed = float(c.loop.speeds[round_ % c.loop.speeds.shape[0], c.sensor[i]])
    return {
        "id": c.ids[i],
        "type": "TrafficFlowObserved",
        "averageVehicleSpeed": {"type": "Property", "value": speed, "observedAt": when, "unitCode": "HM"},
        "intensity": {"type": "Property", "value": int(c.intensity[round_ % c.intensity.shape[0], i]),
                      "observedAt": when},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [float(c.lon[i]),
                                                                                        float(c.lat[i])]}},
    }


def batches(c: City, indices: Sequence[int], round_: int, size: int) -> list[list[dict[str, Any]]]:
    payloads = [traffic_payload(c, i, round_) for i in indices]
    return [payloads[k : k + size] for k in range(0, len(payloads), size)]


@lru_cache(maxsize=1)
def sdm_terms() -> TermMap:
    """The Smart Data Models Transportation context, resolved from the shipped copy (no network)."""
    from polis.ngsi_ld.context import ContextCache

    settings = Settings()
    # Nothing is fetched or cached for a shipped context, so the cache folder is never created.
    return ContextCache(settings.datasets_dir, OUT_DIR / "context-cache").resolve(SDM_TRANSPORT)


def expanded(payloads: Sequence[dict[str, Any]], now: str) -> tuple[list[Entity], list[HistoryInstance]]:
    """The internal documents and history instances the hub writes for these payloads (as a new upsert)."""
    from polis.ngsi_ld.entities import history_of
    from polis.ngsi_ld.entity_codec import expand_entity

    terms = sdm_terms()
    entities = [expand_entity(p, terms, now) for p in payloads]
    return entities, [h for e in entities for h in history_of(e)]


def seed_store(db_path: Path, c: City, *, round_: int = 0, chunk: int = 5_000) -> float:
    """Write every City entity (and its first observations) straight into a hub database; seconds taken."""
    from polis.ngsi_ld.entities import utc_now
    from polis.store.duckdb_ import DuckDBStore

    start = time.perf_counter()
    settings = Settings()
    store = DuckDBStore(db_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    try:
        now = utc_now()
        for k in range(0, len(c.ids), chunk):
            entities, history = expanded([traffic_payload(c, i, round_) for i in range(k, min(k + chunk,
                                                                                                len(c.ids)))], now)
            store.write("", upserts=entities, history=history)
    finally:
        store.close()
    return time.perf_counter() - start


def ingest_datasets(db_path: Path, names: Sequence[str]) -> None:
    from polis.ingest.datasets import ingest, load_dataset
    from polis.ngsi_ld.entities import utc_now
    from polis.store.duckdb_ import DuckDBStore

    settings = Settings()
    store = DuckDBStore(db_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    try:
        for name in names:
            ingest(store, "", load_dataset(name, settings.datasets_dir, utc_now()))
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------- results


def fresh_dir(name: str) -> Path:
    """An empty scratch directory under the system temp dir (removed by `cleanup`)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"polis-bench-{name}-"))


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def verdict(value: float, target: float, *, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "MET" if ok else "MISSED"


def save(name: str, result: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine_info(), **result}, indent=2) + "\n")
    return path


def say(text: str) -> None:
    print(text, flush=True)
