"""Message receipts commit with the writes they came from; dead letters are kept with their reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from polis.store.base import DeadLetter
from polis.store.duckdb_ import DuckDBStore

ENTITY = {"id": "urn:ngsi-ld:Sensor:1", "type": ["https://example.org/Sensor"],
          "https://example.org/level": [{"type": "Property", "value": 3}]}


def test_receipts_are_committed_with_the_write() -> None:
    store = DuckDBStore(None)
    store.write("", upserts=[ENTITY], receipts=[("mqtt", "k1"), ("mqtt", "k2")])
    assert store.seen("mqtt", ["k1", "k2", "k3"]) == {"k1", "k2"}
    assert store.seen("other", ["k1"]) == set()


def test_a_failed_write_records_no_receipt() -> None:
    store = DuckDBStore(None)
    store.write("", receipts=[("mqtt", "k1")])
    with pytest.raises(Exception, match=r"(?i)constraint|duplicate"):
        # the same receipt twice violates the key: the whole transaction, entity included, rolls back
        store.write("", upserts=[ENTITY], receipts=[("mqtt", "k1")])
    assert store.get("", [ENTITY["id"]]) == {}


def test_dead_letters_keep_topic_payload_and_reason() -> None:
    store = DuckDBStore(None)
    when = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    store.add_dead_letters([DeadLetter("mqtt", "polis/x", "{bad", "not JSON", when),
                            DeadLetter("mqtt", "polis/y", "[]", "empty batch", when)])
    letters = store.dead_letters("mqtt")
    assert [(d.topic, d.reason) for d in letters] == [("polis/x", "not JSON"), ("polis/y", "empty batch")]
    assert letters[0].received_at == when and letters[0].id is not None
    assert store.dead_letter_count("mqtt") == 2 and store.dead_letter_count("other") == 0


def test_a_count_does_not_block_the_next_multi_entity_read() -> None:
    # Regression: a half-read result from a scalar query made the next Arrow registration fail (500s over HTTP).
    store = DuckDBStore(None)
    store.write("", upserts=[ENTITY])
    assert store.entity_count("") == 1
    assert set(store.get("", [ENTITY["id"], "urn:ngsi-ld:Sensor:2"])) == {ENTITY["id"]}


def test_old_receipts_are_pruned_and_new_ones_kept() -> None:
    store = DuckDBStore(None)
    store.write("", receipts=[("mqtt", "k1")])
    assert store.prune_receipts("mqtt", datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert store.prune_receipts("mqtt", datetime(2999, 1, 1, tzinfo=UTC)) == 1
    assert store.seen("mqtt", ["k1"]) == set()
