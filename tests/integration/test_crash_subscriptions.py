"""SIGKILL the real server while it owes a slow webhook a backlog of notifications: after the restarts
every acknowledged write's notification arrives, in write order, and nothing arrives that no write made.
Delivery is at least once: the outbox records deliveries every ACK_EVERY_S, so after a kill the
notifications delivered in that last window (and one cut off mid-delivery) are sent again, and only they."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest

from polis.subscriptions.delivery import ACK_EVERY_S
from tests.conftest import Server, start_server, stop_server
from tests.integration.test_subscriptions_delivery import FAST_RETRY, status, subscribe
from tests.integration.webhook import Receiver, wait_until

pytestmark = pytest.mark.server

KILLS = 3
DELAY_S = 0.3  # each notification takes the webhook this long to answer: a backlog builds up even when
# writes are slow (a loaded machine: ~0.1 s each, and 0.1 s here left nothing owed at some kills)
WRITES_PER_LIFE = 12
UPSERT = "/ngsi-ld/v1/entityOperations/upsert"


def write(server: Server, n: int) -> bool:
    """Entity 1 gets count `n`; whether the server acknowledged it (False: cut off by a kill)."""
    try:
        r = httpx.post(server.url + UPSERT, headers=server.headers, timeout=10,
                       json=[{"id": "urn:ngsi-ld:Tally:1", "type": "Tally", "count": {"type": "Property", "value": n}}])
    except httpx.TransportError:
        return False
    assert r.status_code in (201, 204), r.text
    return True


def test_sigkill_with_notifications_owed_loses_none_and_keeps_their_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    rng = random.Random(11)
    receiver = Receiver(delay_s=DELAY_S).start()
    server = start_server(data_dir, env=FAST_RETRY)
    acked: list[int] = []
    n = 0
    try:
        location = subscribe(server, "Tally", receiver.url)
        for _ in range(KILLS):
            for _ in range(WRITES_PER_LIFE):
                if write(server, n):
                    acked.append(n)
                n += 1
            time.sleep(rng.uniform(0.02, 0.3))  # some delivered, some still owed
            owed = len(set(acked) - set(receiver.values("count")))
            server.process.kill()
            server.process.wait(timeout=15)
            assert owed > 0, "the kill should land with notifications still owed"
            server = start_server(data_dir, env=FAST_RETRY)
        for _ in range(WRITES_PER_LIFE):
            assert write(server, n)
            acked.append(n)
            n += 1
        wait_until(lambda: set(acked) <= set(receiver.values("count")) or None, 90, "every acknowledged write")
        time.sleep(0.3)
        values = receiver.values("count")
        assert acked == list(range(n))  # with no request in flight at a kill, every write was acknowledged
        assert list(dict.fromkeys(values)) == acked  # in write order, each at least once
        # Runs of consecutive writes; a new run starts only after a kill, going back at most over what the
        # last unrecorded window delivered (and the one cut off), never skipping ahead.
        starts = [k for k in range(1, len(values)) if values[k] != values[k - 1] + 1]
        assert len(starts) <= KILLS, values
        window = round(ACK_EVERY_S / DELAY_S) + 3  # the cut-off one, and slack for an acker held up by load
        assert all(values[k - 1] - window < values[k] <= values[k - 1] for k in starts), values
        after = status(server, location)
        assert after["status"] == "ok"
    finally:
        receiver.stop()
        stop_server(server.process)
