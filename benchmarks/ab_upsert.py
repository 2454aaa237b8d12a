"""Batch upsert over HTTP, this tree against another one, taking turns: the comparison to trust on a shared
machine, whose speed drifts by 1.5x within minutes (one run of each, minutes apart, has put either side
ahead; BENCHMARKS.md §1, run 11).

    .venv/bin/python -m benchmarks.ab_upsert OTHER_SRC [--reps 6] [--clients 2] [--single]

OTHER_SRC is the `src` folder of the other version (e.g. `git worktree add /tmp/base COMMIT`, then
`/tmp/base/src`); its server runs with PYTHONPATH=OTHER_SRC. Each side first creates its own hub of
HUB_SIZE entities over HTTP (each version writes its own file format); then, REPS times in turn, each side
starts a fresh `polis serve` on a copy of its hub and runs one warm-up and ROUNDS timed rounds of UPDATED
updates (the bench_upsert_http workload), noting throughput and the server's CPU time per 1,000 updates.
With --single, each request upserts one entity (SINGLE_UPDATES per round): what a device or an agent that
writes entity by entity costs, where each write's fixed SQL statements decide.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.bench_upsert_http import (
    BATCH,
    HUB_SIZE,
    ROUNDS,
    UPDATED,
    WARMUP_ROUNDS,
    cpu_seconds,
    post_all,
    upsert_bodies,
)
from benchmarks.common import City, city, cleanup, fresh_dir, running_server, save, say

THIS_SRC = Path(__file__).resolve().parents[1] / "src"
SINGLE_UPDATES = 300  # per round with --single (~60 requests a second on a 100k hub)


@contextmanager
def _python_path(src: Path) -> Iterator[None]:
    """Servers started inside run the code under `src` (the environment is what they inherit)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def _one_side(hub: Path, c: City, threads: int, single: bool) -> tuple[float, float]:
    """(median updates/s, median server CPU ms per 1,000 updates) over the timed rounds on `hub`."""
    rates: list[float] = []
    cpu: list[float] = []
    updated, batch = (SINGLE_UPDATES, 1) if single else (UPDATED, BATCH)
    with running_server(hub) as server:
        for k in range(WARMUP_ROUNDS + ROUNDS):
            bodies = upsert_bodies(c, range(updated), 1 + k, batch)
            before = cpu_seconds(server.pid)
            seconds = post_all(server, bodies, threads)
            if k >= WARMUP_ROUNDS:
                rates.append(updated / seconds)
                cpu.append((cpu_seconds(server.pid) - before) * 1000 * 1000 / updated)
    return statistics.median(rates), statistics.median(cpu)


def run(other: Path, reps: int, threads: int, single: bool = False) -> dict[str, Any]:
    sides = {"this": THIS_SRC, "other": other.resolve()}
    what = "one entity per request" if single else f"batches of {BATCH}"
    say(f"ab_upsert: {THIS_SRC} against {sides['other']}, {reps} turns each, {threads} client thread(s), {what}")
    work = fresh_dir("ab_upsert")
    c = city(HUB_SIZE)
    results: dict[str, dict[str, list[float]]] = {name: {"per_s": [], "cpu_ms_per_1000": []} for name in sides}
    try:
        for name, src in sides.items():
            with _python_path(src), running_server(work / f"hub-{name}") as server:
                post_all(server, upsert_bodies(c, range(HUB_SIZE), 0, BATCH), 1)
        for turn in range(reps):
            for name, src in sides.items():
                copy = work / f"turn-{name}"
                shutil.copytree(work / f"hub-{name}", copy)
                with _python_path(src):
                    rate, cpu = _one_side(copy, c, threads, single)
                shutil.rmtree(copy)
                results[name]["per_s"].append(round(rate, 1))
                results[name]["cpu_ms_per_1000"].append(round(cpu, 1))
                say(f"  turn {turn + 1} {name}: {rate:,.0f} updates/s, server CPU {cpu:.1f} ms per 1,000")
    finally:
        cleanup(work)
    medians = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    ratio = medians["this"]["per_s"] / medians["other"]["per_s"]
    cpu_ratio = medians["this"]["cpu_ms_per_1000"] / medians["other"]["cpu_ms_per_1000"]
    say(f"  => this tree {medians['this']['per_s']:,.0f}/s against {medians['other']['per_s']:,.0f}/s "
        f"({ratio:.3f}x); server CPU per update {cpu_ratio:.3f}x")
    out = {"other_src": str(sides["other"]), "reps": reps, "client_threads": threads, "single": single,
           "turns": results,
           "medians": medians, "throughput_ratio": round(ratio, 3), "cpu_ratio": round(cpu_ratio, 3)}
    save("ab_upsert_single" if single else "ab_upsert", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other_src", type=Path, help="the other version's src folder")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--single", action="store_true", help="one entity per request instead of batches")
    args = parser.parse_args()
    run(args.other_src, args.reps, args.clients, args.single)


if __name__ == "__main__":
    main()
