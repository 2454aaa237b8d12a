"""A paused or expired subscription holds no delivery thread. Its worker used to sleep until the subscription
changed: a thread for every paused subscription that had a backlog (its endpoint down when it was paused, or
a backlog left by the last run), thousands of idle threads for thousands of them. The backlog waits in the
outbox instead, and resuming (or renewing) the subscription delivers it, in order, nothing lost."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from polis.platform import Platform
from polis.settings import Settings
from tests.integration.webhook import Receiver, wait_until

N = 20
CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, notify_retry_initial_s=0.05, notify_retry_max_s=0.2, **CHEAP)  # type: ignore[arg-type]


def _workers() -> int:
    """Delivery worker threads alive (the acknowledger is one thread for all, not counted)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("polis-notify-") and t.name != "polis-notify-acks")


def _subscribe(platform: Platform, receiver: Receiver, **extra: object) -> str:
    body = {"type": "Subscription", "entities": [{"type": "Bench"}],
            "notification": {"format": "keyValues", "endpoint": {"uri": receiver.url}}, **extra}
    return platform.subscriptions.create("", body, platform.contexts.core(), None).id


def _patch(platform: Platform, sub_id: str, **fragment: object) -> None:
    platform.subscriptions.update("", sub_id, fragment, platform.contexts.core(), None)


def _bench(platform: Platform, n: int) -> None:
    body = {"id": f"urn:ngsi-ld:Bench:{n}", "type": "Bench", "sitting": {"type": "Property", "value": n}}
    assert not platform.entities.batch("", "upsert", [body], lambda _item: platform.contexts.core()).errors


def _ids(receiver: Receiver) -> list[tuple[str, str]]:
    return [(body["subscriptionId"], e["id"]) for body in receiver.bodies() for e in body["data"]]


def test_paused_subscriptions_hold_no_thread_and_deliver_once_resumed(tmp_path: Path) -> None:
    receiver = Receiver()  # down: every subscription keeps a backlog
    platform = Platform(_settings(tmp_path))
    try:
        before = threading.active_count()
        subs = [_subscribe(platform, receiver) for _ in range(N)]
        _bench(platform, 1)
        wait_until(lambda: _workers() >= N or None, 10, f"{N} workers retrying the dead endpoint")
        for sub_id in subs:
            _patch(platform, sub_id, isActive=False)
        wait_until(lambda: _workers() == 0 or None, 5, f"no worker for {N} paused subscriptions; {_workers()} left")
        assert threading.active_count() <= before + 2, (before, threading.active_count())  # e.g. the acknowledger
        assert [platform.subscriptions.pending("", s) for s in subs] == [1] * N  # nothing dropped

        _bench(platform, 2)  # written while paused: not for these subscriptions
        receiver.start()
        _patch(platform, subs[0], isActive=True)
        receiver.wait_for(1)
        time.sleep(0.5)  # nothing more comes: the others are still paused
        assert _ids(receiver) == [(subs[0], "urn:ngsi-ld:Bench:1")]
        wait_until(lambda: platform.subscriptions.pending("", subs[0]) == 0 or None, 5, "the delivery acknowledged")
        assert _workers() <= 1
    finally:
        receiver.stop()
        platform.close()


def test_a_paused_backlog_left_by_the_last_run_starts_no_thread_and_arrives_in_order(tmp_path: Path) -> None:
    receiver = Receiver()
    platform = Platform(_settings(tmp_path))
    try:
        subs = [_subscribe(platform, receiver) for _ in range(N)]
        for n in range(3):
            _bench(platform, n)
        for sub_id in subs:
            _patch(platform, sub_id, isActive=False)
    finally:
        platform.close()
    receiver.start()
    before = threading.active_count()
    platform = Platform(_settings(tmp_path))
    try:
        time.sleep(0.5)  # the outbox has been handed to the workers
        assert _workers() == 0
        assert threading.active_count() <= before + 2, (before, threading.active_count())
        _patch(platform, subs[7], isActive=True)
        receiver.wait_for(3)
        time.sleep(0.3)
        assert _ids(receiver) == [(subs[7], f"urn:ngsi-ld:Bench:{n}") for n in range(3)]
    finally:
        receiver.stop()
        platform.close()


def test_an_expired_subscription_holds_no_thread_and_delivers_once_renewed(tmp_path: Path) -> None:
    receiver = Receiver()
    platform = Platform(_settings(tmp_path))
    try:
        soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat().replace("+00:00", "Z")
        sub_id = _subscribe(platform, receiver, expiresAt=soon)
        _bench(platform, 1)
        wait_until(lambda: _workers() == 1 or None, 5, "the worker retrying the dead endpoint")
        wait_until(lambda: _workers() == 0 or None, 5, "no worker once the subscription expired")
        receiver.start()
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        _patch(platform, sub_id, expiresAt=later)
        receiver.wait_for(1)
        assert _ids(receiver) == [(sub_id, "urn:ngsi-ld:Bench:1")]
    finally:
        receiver.stop()
        platform.close()
