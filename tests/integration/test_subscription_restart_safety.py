"""What a restart must not do to notifications waiting in the outbox (found by the review of 2026-11-29):

- a subscription that exists but cannot be compiled after the restart (its @context unreachable for now) keeps
  its backlog: it was deleted from the outbox, unsent, though acknowledged writes had queued it;
- the backlog resumes only once the access check is in place: a notification queued before a grant was revoked
  went out unchecked when the hub's other parts took a while to start (the gate was set after delivery began).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from polis.alerts import engine
from polis.domain.errors import LdContextNotAvailable
from polis.platform import Platform
from polis.settings import Settings
from polis.subscriptions.service import SubscriptionService
from tests.integration.webhook import Receiver, wait_until

CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
MEL = "melbourne-pedestrians"


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, notify_retry_initial_s=0.05, notify_retry_max_s=0.2, **CHEAP)  # type: ignore[arg-type]


def _subscribe(platform: Platform, receiver: Receiver, department: str | None = None) -> str:
    body = {"type": "Subscription", "entities": [{"type": "Bench"}],
            "notification": {"format": "keyValues", "endpoint": {"uri": receiver.url}}}
    return platform.subscriptions.create("", body, platform.contexts.core(), None, department=department).id


def _bench(platform: Platform, entity_id: str, value: int) -> None:
    body = {"id": entity_id, "type": "Bench", "sitting": {"type": "Property", "value": value}}
    result = platform.entities.batch("", "upsert", [body], lambda _item: platform.contexts.core())
    assert not result.errors


def test_a_subscription_unusable_after_a_restart_keeps_its_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()  # down: the notifications wait in the outbox
    platform = Platform(_settings(tmp_path))
    try:
        sub_id = _subscribe(platform, receiver)
        for n in range(10):
            _bench(platform, f"urn:ngsi-ld:Bench:{n}", n)
        assert platform.subscriptions.repo.count_pending("", sub_id) == 10
    finally:
        platform.close()

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise LdContextNotAvailable("https://example.org/gone.jsonld could not be fetched")

    with monkeypatch.context() as patched:
        patched.setattr(SubscriptionService, "_compile", unreachable)
        platform = Platform(_settings(tmp_path))
        try:
            time.sleep(1.0)  # its worker has looked at the backlog
            assert platform.subscriptions.repo.count_pending("", sub_id) == 10
        finally:
            platform.close()

    receiver.start()
    platform = Platform(_settings(tmp_path))  # usable again: everything goes out
    try:
        receiver.wait_for(10, timeout=30)
        assert sorted(e["id"] for body in receiver.bodies() for e in body["data"]) == sorted(
            f"urn:ngsi-ld:Bench:{n}" for n in range(10))
    finally:
        receiver.stop()
        platform.close()


def test_a_grant_revoked_before_a_restart_stops_the_backlog_even_on_a_slow_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()  # down
    platform = Platform(_settings(tmp_path))
    try:
        platform.access.create_department("parks")
        for dataset in (MEL, "los-loop"):
            platform.access.grant("parks", dataset, "aggregate", "read")
            platform.access.grant("parks", dataset, "aggregate", "subscribe")
        sub_id = _subscribe(platform, receiver, "parks")
        _bench(platform, f"urn:ngsi-ld:Bench:{MEL}:b1", 7)
        assert platform.subscriptions.repo.count_pending("", sub_id) == 1
        platform.access.revoke_grant("parks", MEL, "aggregate", "read")  # the operator takes the dataset back
    finally:
        platform.close()

    original = engine.AlertEngine.__init__

    def slow(self: engine.AlertEngine, *args: Any, **kwargs: Any) -> None:
        time.sleep(1.0)  # a long alert history to read: the hub's later parts start a while after delivery
        original(self, *args, **kwargs)

    monkeypatch.setattr(engine.AlertEngine, "__init__", slow)
    receiver.start()
    platform = Platform(_settings(tmp_path))
    try:
        _bench(platform, "urn:ngsi-ld:Bench:los-loop:b1", 1)
        wait_until(lambda: receiver.bodies() or None, 10, "the los-loop notification")
        time.sleep(0.5)
        assert [e["id"] for body in receiver.bodies() for e in body["data"]] == ["urn:ngsi-ld:Bench:los-loop:b1"]
    finally:
        receiver.stop()
        platform.close()
