"""How deeply a client's JSON may nest.

orjson parses up to 1,024 nested arrays and objects but serialises at most 254 (and Python code that walks a
document recursively gives out somewhere in between), while every document Polis keeps is written with
orjson, a few levels deeper than the client sent it (expansion wraps values in instance lists). A body nested
250 levels deep therefore parsed, passed every check, and failed when it was stored: a 500. Bodies are
refused at MAX_DEPTH instead, far above anything NGSI-LD needs (a GeoJSON MultiPolygon is 4 arrays deep).

STORED_DEPTH, orjson's own writing limit, is therefore the deepest any document Polis keeps can be (a client's
MAX_DEPTH levels plus what expansion adds). It is the one bound of the privacy scans (polis.privacy.refusal,
polis.ingest.messages): they look at every level of anything that can be stored, and refuse what nests deeper
rather than pass it unseen. (They once stopped at 32 and 16 levels while bodies of 100 were accepted, and a
licence plate 40 levels down was stored.)
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 100
STORED_DEPTH = 254  # the most nested arrays and objects orjson.dumps writes (test_hostile_input.py checks it)


def nests_deeper_than(data: Any, limit: int = MAX_DEPTH, raw: bytes | None = None) -> bool:
    """Whether `data` (parsed from `raw`, when given) holds more than `limit` arrays and objects inside one
    another.

    `raw` with no more than `limit` opening brackets cannot (a sensor's message: 0.1 µs instead of 7). Else
    orjson answers in C: wrapped in enough lists that `limit` levels of its own fill orjson's depth exactly,
    `data` serialises only if it nests no deeper (~0.5 ms for a 370 KB batch; a Python walk took 1.6 ms)."""
    if limit >= STORED_DEPTH:
        raise ValueError(f"a limit must be under {STORED_DEPTH}")
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    wrapped = data
    for _ in range(STORED_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return True
    return False
