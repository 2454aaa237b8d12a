"""What access control costs per request: the same request with enforcement and without it.

The hub holds the demo city (Los-loop and Melbourne, real data). Each variant sends the same request
many times through the same in-process app (FastAPI's TestClient: no network, so the difference is
enforcement, not the socket), in interleaved rounds so that machine noise falls on every variant alike:

- retrieve one entity by id, admin key (verified once, then cached) vs the same app with the access
  dependency replaced by nothing (no key check, no grant check, no audit line);
- a query of all TrafficFlowObserved (limit 100): admin (no dataset filter, every dataset readable) vs a
  `transport` department that may read only Los-loop (the dataset filter runs in SQL);
- the first request with a key not yet verified (argon2id at the default cost) vs later ones.

Run: .venv/bin/python -m benchmarks.bench_access
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.testclient import TestClient

from benchmarks.common import GET_HEADERS, save, say
from polis.access.enforce import enforce
from polis.api.app import create_app
from polis.ingest.datasets import load_dataset
from polis.ngsi_ld.entities import utc_now
from polis.platform import Platform
from polis.settings import Settings

PAIRS = 3000
ENTITY = "/ngsi-ld/v1/entities/urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"
QUERY = "/ngsi-ld/v1/entities?type=TrafficFlowObserved&limit=100"


async def _no_enforcement(request: Request) -> None:
    return None


def _timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return elapsed * 1000


def _paired(a: Callable[[], Any], b: Callable[[], Any], n: int) -> dict[str, float]:
    """`a` and `b` alternately (order swapped every pair), so that machine noise falls on both alike; the
    median of the per-pair differences is the cost of what `a` does more."""
    times_a, times_b, diffs = [], [], []
    for i in range(n):
        if i % 2:
            ta, tb = _timed(a), _timed(b)
        else:
            tb, ta = _timed(b), _timed(a)
        times_a.append(ta)
        times_b.append(tb)
        diffs.append(ta - tb)
    return {
        "median_ms": round(statistics.median(times_a), 4),
        "baseline_median_ms": round(statistics.median(times_b), 4),
        "median_paired_difference_ms": round(statistics.median(diffs), 4),
    }


def _decision_us(platform: Platform, key: str, n: int = 20_000) -> dict[str, float]:
    """The enforcement work alone, without HTTP: a cached key check, and a decision with its audit line."""
    from polis.access.control import Principal

    control = platform.access
    control.authenticate(f"Bearer {key}")
    start = time.perf_counter()
    for _ in range(n):
        control.authenticate(f"Bearer {key}")
    cached_us = (time.perf_counter() - start) / n * 1e6
    who = Principal("admin", "bench")
    start = time.perf_counter()
    for _ in range(n):
        control.require_entities(who, ["urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"], "read", "GET bench")
    decide_us = (time.perf_counter() - start) / n * 1e6
    return {"cached_key_check_us": round(cached_us, 2), "decision_with_audit_line_us": round(decide_us, 2)}


def main(argv: list[str]) -> int:
    settings = Settings()
    platform = Platform.in_memory(api_key_hash_time_cost=3, api_key_hash_memory_kib=65536)  # production cost
    try:
        for name in ("los-loop", "melbourne-pedestrians"):  # the real sensors; their history is not needed here
            platform.store.write("", upserts=load_dataset(name, settings.datasets_dir, utc_now()).entities)
        admin_key = platform.access.admin_key()
        admin = {**GET_HEADERS, "Authorization": f"Bearer {admin_key}"}
        platform.access.create_department("transport")
        platform.access.grant("transport", "los-loop", "aggregate", "read")
        transport = {**GET_HEADERS, "Authorization": f"Bearer {platform.access.create_key('transport').secret_key}"}
        open_app = create_app(platform)
        open_app.dependency_overrides[enforce] = _no_enforcement
        with TestClient(create_app(platform)) as enforced, TestClient(open_app) as bare:
            first_ms = _timed(lambda: enforced.get(ENTITY, headers=transport))  # argon2 verification
            for _ in range(100):  # warm-up: caches, DuckDB, the verified-key cache
                enforced.get(ENTITY, headers=admin)
                bare.get(ENTITY, headers=GET_HEADERS)
                enforced.get(QUERY, headers=transport)
                enforced.get(QUERY, headers=admin)
            retrieve = _paired(
                lambda: enforced.get(ENTITY, headers=admin), lambda: bare.get(ENTITY, headers=GET_HEADERS), PAIRS
            )
            query = _paired(
                lambda: enforced.get(QUERY, headers=transport), lambda: enforced.get(QUERY, headers=admin), PAIRS // 3
            )
        work = _decision_us(platform, admin_key)
    finally:
        platform.close()
    result = {
        "retrieve_by_id_enforced_vs_unenforced": retrieve,
        "query_department_filter_vs_admin": query,
        "enforcement_work_alone": work,
        "first_request_with_new_key_ms": round(first_ms, 2),
        "command": "python -m benchmarks.bench_access",
    }
    say(f"retrieve by id, cached admin key vs no enforcement: {retrieve}")
    say(f"query, transport (SQL dataset filter) vs admin (no filter): {query}")
    say(f"enforcement work alone: {work}; first request with a new key (argon2): {first_ms:.1f} ms")
    save("access", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
