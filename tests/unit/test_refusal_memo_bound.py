"""The refusal's memos are keyed by the senders' own strings (field names, types, times): a client sending
long distinct ones must not be able to fill the server's memory with them. Long keys are judged each time and
never kept; the verdicts stay the same."""

from __future__ import annotations

import sys

from polis.privacy import refusal


def _memo_bytes() -> int:
    memos = (refusal._date_time_memo, refusal._key_info_memo, refusal._name_memo, refusal._person_type_memo,
             refusal._feature_memo)
    return sum(sys.getsizeof(key) for memo in memos for key in memo)


def test_long_distinct_strings_are_not_kept() -> None:
    before = _memo_bytes()
    for n in range(200):
        filler = f"{n:06d}" + "x" * 20_000
        body = {
            "id": "urn:ngsi-ld:CrowdFlowObserved:memo",
            "type": "CrowdFlowObserved" + filler,
            "peopleCount" + filler: {"type": "Property", "value": 3, "observedAt": filler},
        }
        assert refusal.find_identifying(body) is None
    assert _memo_bytes() - before < 1_000_000  # 200 x 3 keys of 20 kB each would be 12 MB


def test_long_keys_are_still_judged() -> None:
    face = "faceEmbedding" + "X" * 300
    body = {"id": "urn:ngsi-ld:CrowdFlowObserved:a", face: {"type": "Property", "value": [0.1] * 128}}
    assert refusal.find_identifying(body) is not None
    timed = {"id": "urn:ngsi-ld:CrowdFlowObserved:b", "type": "CrowdFlowObserved",
             "c": {"type": "Property", "value": 1, "observedAt": "ann.smith@example.org " + "y" * 300}}
    found = refusal.find_identifying(timed)
    assert found is not None and found.rule == "e-mail"
