"""`make bench`: every hub-core benchmark, each in its own interpreter (so one's memory and caches never
colour the next), then a summary against the targets. `python -m benchmarks.run_all queries memory` runs
only those. Results: stdout, benchmarks/out/<name>.json and benchmarks/out/summary.json.

The exit status is 0 when every benchmark ran, whether or not it met its target: a missed target is a
finding to report, not a crash (the summary says MISSED).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import OUT_DIR, ROOT, machine_info, say

# name -> (module, JSON file written by it)
BENCHMARKS = {
    "memory": ("benchmarks.bench_memory", "memory"),
    "ingest": ("benchmarks.bench_history_ingest", "history_ingest"),
    "queries": ("benchmarks.bench_queries", "queries"),
    "upsert": ("benchmarks.bench_upsert_http", "upsert_http"),
    "mqtt": ("benchmarks.bench_mqtt", "mqtt"),
    "notify": ("benchmarks.bench_notify", "notify"),
    "gate": ("benchmarks.bench_gate", "gate"),
    "epidemic": ("benchmarks.bench_epidemic", "epidemic"),
    "forecast": ("benchmarks.bench_forecast", "forecast"),
}


def _rows(name: str, result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, target, measured, verdict) lines for the summary table."""
    if name == "upsert":
        return [("batch upsert over HTTP", result["target"],
                 f"{result['measured_per_s']:,.0f}/s ({result['measured_with_client_threads']} client threads)",
                 result["verdict"])]
    if name == "ingest":
        return [("history ingest from files", result["target"], f"{result['measured_per_s']:,.0f}/s",
                 result["verdict"])]
    if name == "memory":
        return [("server memory, demo city", result["target"],
                 f"RSS {result['measured_rss_mib']:.0f} MiB, peak {result['measured_peak_rss_mib']:.0f} MiB",
                 result["verdict"])]
    if name == "mqtt":
        single, batch, crash = result["single"], result["batch"], result["crash"]
        return [
            ("MQTT single-reading messages", single["target"], f"{single['measured_per_s']:,.0f} msg/s "
             f"(bare paho {single['bare_paho_per_s']:,.0f})", single["verdict"]),
            ("MQTT gateway batches", batch["target"], f"{batch['measured_readings_per_s']:,.0f} readings/s",
             batch["verdict"]),
            ("MQTT crash safety", str(crash.get("target", "0 lost, 0 duplicates")),
             f"lost {crash.get('lost')}, duplicates {crash.get('duplicates')}", crash["verdict"]),
        ]
    if name == "gate":
        return [("privacy gate (pseudonymise + aggregate)", result["target"],
                 f"{result['measured_per_s']:,.0f} trips/s (pseudonyms {result['ratio_to_baseline']}x per-record HMAC)",
                 result["verdict"])]
    if name == "epidemic":
        target = "blend -15/-10/-10 % vs better baseline; coverage 70-90 %; scenario <= 2 s"
        return [(f"epidemic {country}", target,
                 " ".join(f"{g['horizon_days']}d {g['reduction']:+.0%}" for g in c["goals"])
                 + f", coverage {c['coverage_80']:.0%}, scenario {c['scenario_30d_seconds_median']:.2f} s",
                 "MET" if all(g["met"] for g in c["goals"]) and 0.7 <= c["coverage_80"] <= 0.9
                 and c["scenario_30d_seconds_median"] <= 2 else "MISSED")
                for country, c in result["countries"].items()]
    if name == "forecast":  # one row per goal of each dataset/protocol run
        return [(f"{run['dataset']}/{run['protocol']}: {g['goal']}", "see BENCHMARKS.md", g["measured"],
                 "MET" if g["met"] else "MISSED") for run in result["runs"] for g in run["goals"]]
    if name == "notify":
        return [("commit -> webhook notification at 5,000 obs/s", result["target"],
                 f"p50 {result['measured_p50_ms']:.0f} ms, p99 {result['measured_p99_ms']:.0f} ms", result["verdict"])]
    rows = []
    for kind, s in result["summary"].items():
        rows.append((f"{kind} query (HTTP)", f"p95 <= {s['target_p95_ms']:.0f} ms",
                     f"median {s['http_median_ms']:.1f} ms, p95 {s['http_p95_ms']:.1f} ms", s["verdict"]))
    return rows


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        say(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
        return 2
    info = machine_info()
    say(f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM, Python {info['python']}, "
        f"DuckDB {info['duckdb']}, commit {info['git_commit']}, load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: list[tuple[str, str, str, str]] = []
    timings: dict[str, float] = {}
    failed: list[str] = []
    for name in chosen:
        module, out_name = BENCHMARKS[name]
        started = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", module], cwd=ROOT).returncode
        timings[name] = round(time.perf_counter() - started, 1)
        if code != 0:
            failed.append(name)
            rows.append((name, "-", f"benchmark failed (exit {code})", "ERROR"))
            continue
        rows.extend(_rows(name, json.loads((OUT_DIR / f"{out_name}.json").read_text())))
    width = max(len(r[0]) for r in rows)
    say("\nsummary")
    for label, target, measured, outcome in rows:
        say(f"  {label:<{width}}  {outcome:<7} {measured}  (target {target})")
    say(f"  seconds per benchmark: {timings}; load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "summary.json").write_text(json.dumps(
        {"machine": info, "seconds": timings,
         "rows": [dict(zip(("benchmark", "target", "measured", "verdict"), r, strict=True)) for r in rows]},
        indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
