"""The subscriptions' outbox is written in the same transaction as the entity change it reports: a write
that is acknowledged always has its notifications stored (they survive a crash right after the answer),
and a write whose notifications cannot be stored is not stored either."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import free_port

CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}  # test hubs need no costly key hashing
NOWHERE_PORT = free_port()  # nothing listens: every delivery attempt fails, so rows stay in the outbox


def _entity(n: int) -> dict[str, object]:
    return {"id": f"urn:ngsi-ld:Meter:{n}", "type": "Meter", "count": {"type": "Property", "value": n}}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    terms = platform.contexts.core()
    body = {"type": "Subscription", "entities": [{"type": "Meter"}],
            "notification": {"endpoint": {"uri": f"http://127.0.0.1:{NOWHERE_PORT}/notify"}}}
    platform.subscriptions.create("", body, terms, None)
    try:
        yield platform
    finally:
        platform.close()


def _outbox(platform: Platform) -> list[tuple[str, str]]:
    con = platform.store.connection()
    try:
        return [(sid, changes) for sid, changes in con.execute(
            "SELECT subscription_id, changes FROM notification_outbox ORDER BY seq").fetchall()]
    finally:
        con.close()


def test_a_write_whose_notification_cannot_be_stored_is_not_stored(hub: Platform) -> None:
    terms = hub.contexts.core()
    con = hub.store.connection()
    try:
        con.execute("ALTER TABLE notification_outbox RENAME TO outbox_gone")  # a real fault, in the database
        with pytest.raises(duckdb.Error):
            hub.entities.create("", _entity(1), terms)
        assert hub.store.get("", ["urn:ngsi-ld:Meter:1"]) == {}  # rolled back with the failed outbox insert
        con.execute("ALTER TABLE outbox_gone RENAME TO notification_outbox")
    finally:
        con.close()
    hub.entities.create("", _entity(2), terms)
    assert hub.store.get("", ["urn:ngsi-ld:Meter:2"])
    rows = _outbox(hub)
    assert len(rows) == 1 and "urn:ngsi-ld:Meter:2" in rows[0][1] and "urn:ngsi-ld:Meter:1" not in rows[0][1]


def test_an_acknowledged_write_has_its_notification_stored_before_the_answer(tmp_path: Path) -> None:
    first = Platform(Settings(data_dir=tmp_path, **CHEAP))
    terms = first.contexts.core()
    try:
        body = {"type": "Subscription", "entities": [{"type": "Meter"}],
                "notification": {"endpoint": {"uri": f"http://127.0.0.1:{NOWHERE_PORT}/notify"}}}
        first.subscriptions.create("", body, terms, None)
        for n in range(3):
            first.entities.create("", _entity(n), terms)
            # the moment create returns, its notification is in the outbox, committed with the entity
            assert len(_outbox(first)) == n + 1
    finally:
        first.close()
    second = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        pending = second.subscriptions.repo.pending()
        assert [item.changes[0].entity["id"] for item in pending if item.changes[0].entity] == [  # in order
            f"urn:ngsi-ld:Meter:{n}" for n in range(3)
        ]
    finally:
        second.close()
