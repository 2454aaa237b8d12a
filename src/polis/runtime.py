"""Process-wide tuning for the long-running hub processes (`polis serve`, the stand-alone ingest).

Library code never calls this: it changes the whole interpreter, so only a process's entry point may."""

from __future__ import annotations

import gc
import signal
import sys
from types import FrameType

# The ingest and API paths allocate many short-lived dicts per entity and per reading. With CPython's default
# thresholds (700 allocations) the collector runs thousands of times a second and rescans the long-lived
# state (the id directory, caches) on each older-generation pass: about a quarter of a gateway message's CPU
# time here (benchmarks/bench_mqtt.py, BENCHMARKS.md). Young collections stay cheap at 50,000.
GC_THRESHOLDS = (50_000, 20, 50)
# A request thread that hands a statement to DuckDB gives up the GIL; when the statement is done it waits for
# the GIL again, by default up to 5 ms while another request's Python runs. A write issues ~10 statements, so
# that wait ruled two concurrent batch upserts: 1 ms took them from ~11,400 to ~13,000-15,000 updates/s in
# process (benchmarks/bench_upsert_http.py, BENCHMARKS.md).
SWITCH_INTERVAL_S = 0.001


def tune_for_service() -> None:
    """Move everything built at start-up out of the collector's sight (it lives as long as the process)
    and collect the young generation less often (reference cycles are still collected); let a thread back
    from DuckDB have the GIL sooner."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def exit_on_sigterm() -> None:
    """Make SIGTERM (a service manager's stop, `kill`) end the process through Python's own exit, so that
    `finally` blocks run: uvicorn stops gracefully on SIGTERM and then raises it again for the handler it
    found, and with the default one the process died right there, before the hub closed (MQTT sources
    acknowledging what they hold, the store checkpointed, a model still training in a child stopped).
    Exit status 143, as a shell reports a process ended by SIGTERM. Call from the main thread."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
