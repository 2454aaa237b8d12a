"""Batch upsert over HTTP: entity updates per second into a hub that holds 100,000 entities.

Target (2 cores, load generator included): >= 20,000 entity updates/s.

Phases, all on the same hub state:
1. create: HUB_SIZE TrafficFlowObserved entities POSTed to /entityOperations/upsert in batches of BATCH
   (new entities; reported, not the target);
2. the database is copied twice, so the in-process levels start from the very same state;
3. HTTP updates: ROUNDS timed rounds (after WARMUP_ROUNDS) each upserting UPDATED entities with the next
   5-minute Los-loop reading (new speed, intensity and observedAt, so every update also adds 2 history
   instances), by CLIENT_THREADS client threads with keep-alive httpx clients and pre-encoded bodies;
4. the same rounds in process: the service (orjson.loads + EntityService.batch, what the route calls; from
   1 and 2 threads) and the store (DuckDBStore.write of already-expanded documents, without the service);
5. the naive client: one entity per upsert request, NAIVE entities per round.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from tests.threads import errors_from_threads

from benchmarks.common import (
    JSON_HEADERS,
    READY_PATH,
    City,
    Server,
    batches,
    check,
    city,
    cleanup,
    expanded,
    fresh_dir,
    running_server,
    save,
    say,
    sdm_terms,
    throughput,
    verdict,
)

TARGET_PER_S = 20_000.0
HUB_SIZE = 100_000
UPDATED = 10_000  # entities per timed round
BATCH = 1_000
ROUNDS = 5
WARMUP_ROUNDS = 1
CLIENT_THREADS = (1, 2)
NAIVE = 50  # one request each; ~90 ms apiece on a 100k hub, so few
UPSERT = "/ngsi-ld/v1/entityOperations/upsert"


def upsert_bodies(c: City, indices: Sequence[int], round_: int, size: int) -> list[bytes]:
    return [orjson.dumps(batch) for batch in batches(c, indices, round_, size)]


def post_all(server: Server, bodies: Sequence[bytes], threads: int) -> float:
    """Seconds to POST every body, split over `threads` clients (each a keep-alive connection)."""
    clients = [httpx.Client(base_url=server.url, timeout=120.0, headers=server.headers) for _ in range(threads)]

    def work(k: int) -> None:
        for body in bodies[k::threads]:
            check(clients[k].post(UPSERT, content=body, headers=JSON_HEADERS), 201, 204)

    try:
        for client in clients:  # open the connections before the clock starts
            client.get(READY_PATH)
        return _timed_threads(work, threads)
    finally:
        for client in clients:
            client.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed_threads(work: Callable[[int], None], threads: int) -> float:
    """Seconds for `threads` threads to run work(0) .. work(threads - 1); the first error is raised after."""
    start = time.perf_counter()
    errors = errors_from_threads(work, threads)
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def _rounds(run_round: Callable[[int], float], first_round: int) -> list[float]:
    """Seconds of each timed round; rounds are numbered so each one carries new observations."""
    for k in range(WARMUP_ROUNDS):
        run_round(first_round + k)
    return [run_round(first_round + WARMUP_ROUNDS + k) for k in range(ROUNDS)]


def _http_phase(hub: Path, c: City, first_round: int) -> dict[str, Any]:
    updated = range(UPDATED)
    out: dict[str, Any] = {}
    with running_server(hub) as server:
        round_ = first_round
        for threads in CLIENT_THREADS:
            cpu: dict[str, list[float]] = {"server": [], "client": []}

            def one(r: int, threads: int = threads, cpu: dict[str, list[float]] = cpu) -> float:
                bodies = upsert_bodies(c, updated, r, BATCH)
                server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
                seconds = post_all(server, bodies, threads)
                cpu["server"].append(cpu_seconds(server.pid) - server_cpu)
                cpu["client"].append(time.process_time() - client_cpu)
                return seconds

            seconds = _rounds(one, round_)
            round_ += WARMUP_ROUNDS + ROUNDS
            key = f"http_{threads}_clients"
            out[key] = throughput(UPDATED, seconds)
            # CPU time per 1,000 updates (timed rounds only): steadier than throughput on a shared machine,
            # so a change's cost shows even when the machine's speed drifts between runs.
            out[key]["cpu_ms_per_1000"] = {
                side: round(statistics.median(values[WARMUP_ROUNDS:]) * 1000 * 1000 / UPDATED, 1)
                for side, values in cpu.items()
            }
            say(f"  HTTP batch upsert, {threads} client thread(s): {out[key]['median_per_s']:,.0f} updates/s "
                f"(CPU per 1,000: server {out[key]['cpu_ms_per_1000']['server']} ms, "
                f"client {out[key]['cpu_ms_per_1000']['client']} ms)")

        def naive(r: int) -> float:
            return post_all(server, upsert_bodies(c, range(NAIVE), r, 1), 1)

        out["http_naive_single_entity"] = throughput(NAIVE, _rounds(naive, round_))
        say(f"  HTTP one entity per request: {out['http_naive_single_entity']['median_per_s']:,.0f} updates/s")
        out["server_memory_mib"] = server.memory_mib()
    return out


def _service_phase(hub: Path, c: City, first_round: int) -> dict[str, Any]:
    """What the route calls, in process: orjson.loads + EntityService.batch, from 1 and from 2 threads (two
    requests at once: one's SQL runs while the other's Python does)."""
    from polis.platform import Platform
    from polis.runtime import tune_for_service
    from polis.settings import Settings

    platform = Platform(Settings(data_dir=hub))
    tune_for_service()  # as `polis serve` does
    terms = sdm_terms()
    out: dict[str, Any] = {}
    try:
        def send(bodies: Sequence[bytes]) -> None:
            for body in bodies:
                result = platform.entities.batch("", "upsert", orjson.loads(body), lambda _item: terms)
                if result.errors:
                    raise RuntimeError(f"service upsert failed: {result.body()}")

        round_ = first_round
        for threads in CLIENT_THREADS:
            def one(r: int, threads: int = threads) -> float:
                bodies = upsert_bodies(c, range(UPDATED), r, BATCH)
                return _timed_threads(lambda k: send(bodies[k::threads]), threads)

            out[f"{threads}_threads"] = throughput(UPDATED, _rounds(one, round_))
            round_ += WARMUP_ROUNDS + ROUNDS
        return out
    finally:
        platform.close()


def _store_phase(hub: Path, c: City, first_round: int) -> dict[str, Any]:
    from polis.ngsi_ld.entities import utc_now
    from polis.settings import Settings
    from polis.store.duckdb_ import DuckDBStore

    settings = Settings(data_dir=hub)
    store = DuckDBStore(settings.database_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    try:
        def one(r: int) -> float:
            prepared = [expanded(batch, utc_now()) for batch in batches(c, range(UPDATED), r, BATCH)]
            start = time.perf_counter()
            for entities, history in prepared:
                store.write("", upserts=entities, history=history)
            return time.perf_counter() - start

        return throughput(UPDATED, _rounds(one, first_round))
    finally:
        store.close()


def run() -> dict[str, Any]:
    say(f"bench_upsert_http: hub of {HUB_SIZE:,} entities, rounds of {UPDATED:,} updates in batches of {BATCH}")
    work = fresh_dir("upsert")
    try:
        c = city(HUB_SIZE)
        hub = work / "hub"
        with running_server(hub) as server:
            create_s = post_all(server, upsert_bodies(c, range(HUB_SIZE), 0, BATCH), 1)
        say(f"  created {HUB_SIZE:,} entities over HTTP in {create_s:.1f} s ({HUB_SIZE / create_s:,.0f}/s)")
        shutil.copytree(hub, work / "service")
        shutil.copytree(hub, work / "store")
        first = 1  # round 0 was the create
        http = _http_phase(hub, c, first)
        service = _service_phase(work / "service", c, first)
        for threads in CLIENT_THREADS:
            say(f"  in process, EntityService.batch, {threads} thread(s): "
                f"{service[f'{threads}_threads']['median_per_s']:,.0f} updates/s")
        store = _store_phase(work / "store", c, first)
        say(f"  in process, DuckDBStore.write of generic documents: {store['median_per_s']:,.0f} updates/s")
    finally:
        cleanup(work)
    best_threads = max(CLIENT_THREADS, key=lambda t: http[f"http_{t}_clients"]["median_per_s"])
    headline = http[f"http_{best_threads}_clients"]["median_per_s"]
    result = {
        "target": f">= {TARGET_PER_S:,.0f} entity updates/s over HTTP",
        "measured_per_s": headline,
        "measured_with_client_threads": best_threads,
        "verdict": verdict(headline, TARGET_PER_S, higher_is_better=True),
        "setup": {"hub_entities": HUB_SIZE, "updates_per_round": UPDATED, "batch_size": BATCH,
                  "rounds": ROUNDS, "warmup_rounds": WARMUP_ROUNDS, "history_instances_per_update": 2,
                  "server": "polis serve: 1 uvicorn process, DuckDB threads=2",
                  "load_generator": "httpx.Client per thread, keep-alive, bodies encoded before the clock starts"},
        "create_over_http": {"entities": HUB_SIZE, "seconds": round(create_s, 2),
                             "per_s": round(HUB_SIZE / create_s, 1)},
        **http,
        "service_in_process": service,
        "store_in_process": store,
        "ratios": {
            "http_vs_store_generic": round(headline / store["median_per_s"], 3),
            "http_vs_service": round(headline / service[f"{best_threads}_threads"]["median_per_s"], 3),
            "batch_vs_single_entity_requests": round(headline / http["http_naive_single_entity"]["median_per_s"], 2),
        },
    }
    save("upsert_http", result)
    say(f"  => {headline:,.0f} updates/s ({best_threads} client threads), target {TARGET_PER_S:,.0f}: "
        f"{result['verdict']}")
    return result


if __name__ == "__main__":
    run()
