"""Bulk history ingest from files: observations per second for Los-loop + Melbourne pedestrians.

Target (2 cores): >= 500,000 observations/s.

Each round starts from an empty on-disk hub and does what `polis ingest los-loop melbourne-pedestrians`
does, in process: read and convert the published files (`load_dataset`), then write the entities and
the numeric history (`ingest`, which ends in `DuckDBStore.bulk_history`). Reported:
- end to end (files -> committed rows), the number held against the target;
- the two halves apart (file loading; store ingest), per dataset;
- a re-ingest of data already held (idempotent: adds nothing, but still has to check every row);
- the baseline: the same observations inserted by DuckDB from one Arrow table into a bare table with the
  history's columns (no entity writes, no de-duplication): the floor for this storage engine;
- the CLI itself once (`polis ingest ...` as a subprocess: interpreter start, imports and progress bars too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, cleanup, fresh_dir, save, say, throughput, verdict

TARGET_PER_S = 500_000.0
DATASETS = ("los-loop", "melbourne-pedestrians")
ROUNDS = 5
WARMUP_ROUNDS = 1


def _one_round(db_path: Path) -> dict[str, Any]:
    from polis.ingest.datasets import ingest, load_dataset
    from polis.ngsi_ld.entities import utc_now
    from polis.settings import Settings
    from polis.store.duckdb_ import DuckDBStore

    settings = Settings()
    start = time.perf_counter()
    store = DuckDBStore(db_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    parts: dict[str, dict[str, float]] = {}
    observations = 0
    try:
        for name in DATASETS:
            t0 = time.perf_counter()
            load = load_dataset(name, settings.datasets_dir, utc_now())
            t1 = time.perf_counter()
            summary = ingest(store, "", load)
            t2 = time.perf_counter()
            if summary.observations_added != len(load.history):
                raise RuntimeError(f"{name}: {summary.observations_added} of {len(load.history)} observations stored")
            observations += summary.observations_added
            parts[name] = {"observations": summary.observations_added, "load_s": t1 - t0, "ingest_s": t2 - t1}
        t3 = time.perf_counter()
        for name in DATASETS:  # the same files again: nothing new may be added
            again = ingest(store, "", load_dataset(name, settings.datasets_dir, utc_now()))
            if again.observations_added:
                raise RuntimeError(f"{name}: re-ingest added {again.observations_added} observations")
        reingest_s = time.perf_counter() - t3
    finally:
        store.close()
    first_pass_s = t3 - start
    return {"observations": observations, "seconds": first_pass_s, "parts": parts, "reingest_s": reingest_s}


def _arrow_floor(db_path: Path) -> tuple[int, list[float]]:
    """Seconds per round to insert the same observations from one Arrow table into a bare DuckDB table."""
    import duckdb
    import pyarrow as pa

    from polis.ingest.datasets import load_dataset
    from polis.ngsi_ld.entities import utc_now
    from polis.settings import Settings

    settings = Settings()
    columns = [load_dataset(name, settings.datasets_dir, utc_now()).history for name in DATASETS]
    table = pa.table({
        "eid": pa.array(np.concatenate([c.entity_id for c in columns]), pa.string()),
        "attr": pa.array(np.concatenate([c.attribute for c in columns]), pa.string()),
        "observed_at": pa.array(np.concatenate([c.observed_at for c in columns]).astype("datetime64[us]")),
        "num": pa.array(np.concatenate([c.value for c in columns]), pa.float64()),
    })
    seconds = []
    for k in range(WARMUP_ROUNDS + ROUNDS):
        path = db_path.with_name(f"floor-{k}.duckdb")
        con = duckdb.connect(str(path), config={"threads": settings.duckdb_threads,
                                                "memory_limit": settings.memory_limit})
        try:
            con.execute("CREATE TABLE history (tenant VARCHAR, eid VARCHAR, attr VARCHAR, observed_at TIMESTAMP, "
                        "instance_id BIGINT, num DOUBLE)")
            con.register("batch", table)
            start = time.perf_counter()
            con.execute("INSERT INTO history SELECT '', eid, attr, observed_at, row_number() OVER (), num FROM batch")
            con.execute("CHECKPOINT")
            seconds.append(time.perf_counter() - start)
        finally:
            con.close()
            path.unlink(missing_ok=True)
    return table.num_rows, seconds[WARMUP_ROUNDS:]


def _cli_once(data_dir: Path) -> float:
    from polis.settings import Settings

    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "polis.cli", "ingest", *DATASETS, "--data-dir", str(data_dir)],
                   env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 4)


def run() -> dict[str, Any]:
    say(f"bench_history_ingest: {' + '.join(DATASETS)} from the published files into an empty hub")
    work = fresh_dir("ingest")
    try:
        rounds = [_one_round(work / f"round-{k}" / "polis.duckdb") for k in range(WARMUP_ROUNDS + ROUNDS)]
        timed = rounds[WARMUP_ROUNDS:]
        observations = timed[0]["observations"]
        end_to_end = throughput(observations, [r["seconds"] for r in timed])
        store_only = throughput(observations, [sum(p["ingest_s"] for p in r["parts"].values()) for r in timed])
        reingest = throughput(observations, [r["reingest_s"] for r in timed])
        per_dataset = {
            name: {
                "observations": timed[0]["parts"][name]["observations"],
                "load_files_median_s": _median([r["parts"][name]["load_s"] for r in timed]),
                "store_ingest_median_s": _median([r["parts"][name]["ingest_s"] for r in timed]),
            }
            for name in DATASETS
        }
        floor_rows, floor_seconds = _arrow_floor(work / "floor.duckdb")
        floor = throughput(floor_rows, floor_seconds)
        cli_s = _cli_once(work / "cli-hub")
    finally:
        cleanup(work)
    headline = end_to_end["median_per_s"]
    say(f"  end to end (files -> hub): {headline:,.0f} obs/s; store ingest alone {store_only['median_per_s']:,.0f} "
        f"obs/s; re-ingest {reingest['median_per_s']:,.0f} obs/s checked")
    for name, part in per_dataset.items():
        say(f"    {name}: {part['observations']:,} obs, files {part['load_files_median_s']:.2f} s, "
            f"store {part['store_ingest_median_s']:.2f} s")
    say(f"  baseline, bare DuckDB insert from Arrow: {floor['median_per_s']:,.0f} obs/s; "
        f"`polis ingest` CLI once: {cli_s:.1f} s ({observations / cli_s:,.0f} obs/s)")
    result = {
        "target": f">= {TARGET_PER_S:,.0f} observations/s from files",
        "measured_per_s": headline,
        "verdict": verdict(headline, TARGET_PER_S, higher_is_better=True),
        "observations": observations,
        "end_to_end": end_to_end,
        "store_ingest_only": store_only,
        "reingest_nothing_new": reingest,
        "per_dataset": per_dataset,
        "baseline_bare_duckdb_arrow_insert": floor,
        "cli_once": {"seconds": round(cli_s, 2), "per_s": round(observations / cli_s, 1)},
        "ratios": {
            "end_to_end_vs_bare_insert": round(headline / floor["median_per_s"], 3),
            "store_ingest_vs_bare_insert": round(store_only["median_per_s"] / floor["median_per_s"], 3),
        },
    }
    save("history_ingest", result)
    say(f"  => {headline:,.0f} obs/s, target {TARGET_PER_S:,.0f}: {result['verdict']}")
    return result


if __name__ == "__main__":
    run()
