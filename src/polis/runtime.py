"""Process-wide tuning for the long-running hub processes (`polis serve`, the stand-alone ingest).

Library code never calls this: it changes the whole interpreter, so only a process's entry point may."""

from __future__ import annotations

import gc

# The ingest and API paths allocate many short-lived dicts per entity and per reading. With CPython's default
# thresholds (700 allocations) the collector runs thousands of times a second and rescans the long-lived
# state (the id directory, caches) on each older-generation pass: about a quarter of a gateway message's CPU
# time here (benchmarks/bench_mqtt.py, BENCHMARKS.md). Young collections stay cheap at 50,000.
GC_THRESHOLDS = (50_000, 20, 50)


def tune_for_service() -> None:
    """Move everything built at start-up out of the collector's sight (it lives as long as the process)
    and collect the young generation less often. Reference cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
