"""Joint suppression of a day's mobility products on the real Jersey City data: how long a day takes and
what it costs in suppressed entries, against suppressing each table on its own (the old release, which an
attacker who writes the equations between the tables could solve).

For each configuration (cell-hour flows with a daily OD matrix, the default; station-hour flows with
8-hour OD matrices, the most linked one) and each sampled day: the time of `MobilityProducts.day_tables`
(departures, arrivals, OD, suppressed together, nothing cached), the time of a second call (cached, what
the API pays after the first request of a day), the hidden entries jointly and table by table, and how many
entries of the table-by-table release the joint check (`joint_derivable`) finds pinned.

    .venv/bin/python -m benchmarks.bench_suppression
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date

import numpy as np

from benchmarks.common import cleanup, fresh_dir, save, say
from polis.mobility.citibike import DATASET, ZONE
from polis.mobility.products import MobilityProducts, Unit
from polis.mobility.store import MobilityStore
from polis.privacy.dp import BudgetLedger
from polis.privacy.suppression import joint_derivable, suppression_mask
from polis.store.duckdb_ import DuckDBStore

DAYS = [
    date(2017, 2, 1),
    date(2017, 4, 12),
    date(2017, 12, 13),
    date(2017, 11, 5),
    date(2018, 1, 17),
    date(2018, 1, 30),
]
CONFIGS = [(Unit.CELL, 24), (Unit.STATION, 8)]


def main() -> None:
    scratch = fresh_dir("suppression")
    try:
        env = {**os.environ, "POLIS_PSEUDONYM_SECRET_FILE": str(scratch / "secret" / "key")}
        polis = os.path.join(os.path.dirname(sys.executable), "polis")
        subprocess.run(
            [polis, "ingest", DATASET, "--data-dir", str(scratch / "hub")], env=env, check=True, capture_output=True
        )
        store = DuckDBStore(scratch / "hub" / "polis.duckdb")
        mobility = MobilityStore(store)
        results: dict[str, object] = {}
        for unit, window_hours in CONFIGS:
            rows = []
            for day in DAYS:
                products = MobilityProducts(
                    mobility, BudgetLedger(store, 10.0), k=10, zone=ZONE, flows_unit=unit, od_window_hours=window_hours
                )
                started = time.perf_counter()
                tables = products.day_tables(DATASET, day)
                first = time.perf_counter() - started
                started = time.perf_counter()
                products.day_tables(DATASET, day)
                cached = time.perf_counter() - started
                alone = [suppression_mask(full, 10) for full in tables.fulls]
                rows.append(
                    {
                        "day": day.isoformat(),
                        "seconds": round(first, 3),
                        "cached_seconds": round(cached, 4),
                        "entries": int(sum(f.size for f in tables.fulls)),
                        "links": len(tables.links),
                        "hidden_joint": int(sum(m.sum() for m in tables.masks)),
                        "hidden_table_by_table": int(sum(m.sum() for m in alone)),
                        "table_by_table_pinned_jointly": len(joint_derivable(tables.fulls, alone, tables.links)),
                    }
                )
                say(f"{unit.value}/{window_hours}h {rows[-1]}")
            name = f"{unit.value}_{window_hours}h"
            results[name] = {"days": rows, "median_seconds": float(np.median([r["seconds"] for r in rows]))}
            say(f"{name}: median {results[name]['median_seconds']:.2f} s per day")  # type: ignore[index]
        store.close()
    finally:
        cleanup(scratch)
    results["load_average_end"] = os.getloadavg()[0]
    save("suppression", results)


if __name__ == "__main__":
    main()
