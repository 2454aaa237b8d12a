"""Forecasting accuracy against the published models and the issue's goals, full-size models.

`python -m benchmarks.bench_forecast [DATASET[:PROTOCOL] ...]` runs protocol tgcn and fair on los-loop and sz-taxi and
the melbourne protocol, prints every row, measures the 207-sensor x 12-step forecast latency, and writes
benchmarks/out/forecast.json with the verdicts. POLIS_FORECAST_QUICK=1 uses the quick models instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from benchmarks.common import OUT_DIR, machine_info, say
from polis.forecast.bench import forecast_latency_ms, run_benchmark
from polis.forecast.data import load_panel
from polis.settings import Settings

RUNS = [("los-loop", "tgcn"), ("los-loop", "fair"), ("sz-taxi", "tgcn"), ("sz-taxi", "fair"),
        ("melbourne-pedestrians", "tgcn")]


def _row(rows: list[dict[str, Any]], model: str, minutes: int, averaged: bool = True) -> dict[str, Any]:
    return next(r for r in rows if r["model"] == model and r["horizon_minutes"] == minutes
                and r["averaged"] == averaged)


def goals(dataset: str, protocol: str, rows: list[dict[str, Any]], best: str) -> list[dict[str, Any]]:
    out = []

    def check(label: str, ok: bool, measured: str) -> None:
        out.append({"goal": label, "met": bool(ok), "measured": measured})

    if (dataset, protocol) == ("los-loop", "tgcn"):
        r15, r60 = _row(rows, best, 15), _row(rows, best, 60)
        check("Los-loop 15 min MAE <= 2.50, RMSE <= 4.60", r15["mae"] <= 2.50 and r15["rmse"] <= 4.60,
              f"{r15['mae']:.2f} / {r15['rmse']:.2f}")
        check("Los-loop 60 min MAE <= 3.30, RMSE <= 6.50", r60["mae"] <= 3.30 and r60["rmse"] <= 6.50,
              f"{r60['mae']:.2f} / {r60['rmse']:.2f}")
    if (dataset, protocol) == ("sz-taxi", "tgcn"):
        for minutes, (mae, rmse) in ((15, (2.71, 3.92)), (60, (2.79, 4.01))):
            r = _row(rows, best, minutes)
            check(f"SZ-taxi {minutes} min MAE <= {0.95 * mae:.3f} (5 % below T-GCN), RMSE < {rmse}",
                  r["mae"] <= 0.95 * mae and r["rmse"] < rmse, f"{r['mae']:.3f} / {r['rmse']:.3f}")
    if dataset == "melbourne-pedestrians":
        r, naive = _row(rows, best, 60, False), _row(rows, "seasonal-naive", 60, False)
        check("Melbourne 1 h MAE <= 0.6 x same hour last week", r["mae"] <= 0.6 * naive["mae"],
              f"{r['mae']:.1f} vs {naive['mae']:.1f} (ratio {r['mae'] / naive['mae']:.2f})")
    for r in rows:
        if r["model"] == best and r["coverage_80"] is not None:
            check(f"80 % interval coverage in 75-85 % ({r['horizon_minutes']} min)",
                  0.75 <= r["coverage_80"] <= 0.85, f"{r['coverage_80']:.3f}")
    return out


def main(argv: list[str]) -> int:
    quick = os.environ.get("POLIS_FORECAST_QUICK") == "1"
    chosen = [r for r in RUNS if not argv or r[0] in argv or f"{r[0]}:{r[1]}" in argv]
    settings = Settings()
    results: dict[str, Any] = {"machine": machine_info(), "quick": quick, "runs": []}
    for dataset, protocol in chosen:
        started = time.perf_counter()
        rows, fitted = run_benchmark(dataset, protocol, settings.datasets_dir, quick=quick)
        plain = [r.to_json() for r in rows]
        learned = [r for r in plain if r["model"] in ("lightgbm", "mlp")]
        first = min(r["horizon_minutes"] for r in learned)
        best = min(("lightgbm", "mlp"), key=lambda m: _row(plain, m, first, learned[0]["averaged"])["mae"])
        run: dict[str, Any] = {"dataset": dataset, "protocol": protocol, "best": best, "rows": plain,
                               "seconds": round(time.perf_counter() - started, 1),
                               "goals": goals(dataset, protocol, plain, best)}
        if dataset == "los-loop":
            panel = load_panel(dataset, settings.datasets_dir)
            run["latency_ms"] = {k: round(forecast_latency_ms(m, panel), 1) for k, m in fitted.items()}
        results["runs"].append(run)
        say(f"\n{dataset} / {protocol} (best learned model: {best}, {run['seconds']} s)")
        for r in plain:
            kind = "published" if r["published"] else ("mean up to" if r["averaged"] else "at step")
            say(f"  {r['model']:<34} {kind:<10} {r['horizon_minutes']:>5} min  MAE {r['mae']:.3f}  RMSE "
                f"{r['rmse'] if r['rmse'] is None else round(r['rmse'], 3)}  MAPE {r['mape']}  "
                f"cov80 {r['coverage_80']}  train {r['train_seconds']} s")
        for g in run["goals"]:
            say(f"  {'MET   ' if g['met'] else 'MISSED'} {g['goal']}: {g['measured']}")
        if "latency_ms" in run:
            say(f"  forecast latency, 207 sensors x 12 steps (median ms): {run['latency_ms']}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    name = "forecast" if not argv else "forecast-" + "-".join(a.replace(":", "_") for a in argv)
    (OUT_DIR / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
