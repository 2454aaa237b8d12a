"""The holder of an API key must never be locked out by someone guessing secrets for its key id (found in a second
review; each test failed before its fix): the server knew the holder's key only once it had verified it itself,
in memory, so after a restart anyone sending wrong secrets faster than the throttle refills (2 a second) kept the
holder at 429 for as long as they liked. The store now keeps a digest of each key, also for keys created by an
older Polis (from their first verification on)."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from polis.access.control import AccessControl
from polis.settings import Settings
from tests.conftest import Server, start_server, stop_server

ENV = {"POLIS_API_KEY_HASH_TIME_COST": "1", "POLIS_API_KEY_HASH_MEMORY_KIB": "64"}
CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}

# access.sqlite3 as Polis wrote it before key digests were kept
OLD_SCHEMA = [
    "CREATE TABLE departments (name TEXT PRIMARY KEY, description TEXT NOT NULL, created_at TEXT NOT NULL)",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, department TEXT NOT NULL REFERENCES departments(name), hash TEXT NOT NULL,
        created_at TEXT NOT NULL, revoked_at TEXT)""",
    """CREATE TABLE grants (
        department TEXT NOT NULL REFERENCES departments(name), dataset TEXT NOT NULL, tier TEXT NOT NULL,
        action TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (department, dataset, tier, action))""",
]


def _me(server: Server, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/polis/v1/access/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)


@contextmanager
def _guessing(server: Server, key: str) -> Iterator[list[int]]:
    """Wrong secrets for the key's id, sent as fast as the server answers (someone who saw the id in audit
    output) so that its checks are held back all along; the statuses they got."""
    key_id, stop = key.split(".", 1)[0], threading.Event()
    statuses: list[int] = []

    def guess() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                wrong = {"Authorization": f"Bearer {key_id}.{secrets.token_urlsafe(32)}"}
                statuses.append(client.get("/polis/v1/access/me", headers=wrong).status_code)

    guesser = threading.Thread(target=guess)
    guesser.start()
    try:
        deadline = time.monotonic() + 10
        while 429 not in statuses and time.monotonic() < deadline:  # the key id's checks are used up
            time.sleep(0.01)
        yield statuses
    finally:
        stop.set()
        guesser.join(10)
    assert statuses.count(401) <= 5 + 2 * 10 and 429 in statuses, statuses  # a burst of 5, then 2 a second


def _admin(data_dir: Path) -> AccessControl:
    """What `polis admin` (or a hub before its restart) opens beside the server."""
    return AccessControl(Settings(data_dir=data_dir, **CHEAP))  # type: ignore[arg-type]


@pytest.mark.server
def test_a_keys_holder_is_not_locked_out_by_guesses_after_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    before = _admin(data_dir)  # the hub before its restart, where `polis admin key` made the keys
    try:
        before.create_department("police")
        used = before.create_key("police").secret_key
        unused = before.create_key("police").secret_key
        assert before.authenticate(f"Bearer {used}").department == "police"  # verified before the restart
    finally:
        before.close()
    server = start_server(data_dir, env=ENV)
    try:
        for key in (used, unused):  # neither verified by this process yet
            with _guessing(server, key):
                answer = _me(server, key)
            assert answer.status_code == 200 and answer.json()["department"] == "police", answer.text
    finally:
        stop_server(server.process)


@pytest.mark.server
def test_keys_in_an_access_file_from_before_key_digests_keep_working(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    key_id, secret = "oldkey000001", secrets.token_urlsafe(32)
    key = f"polis_{key_id}.{secret}"
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(data_dir / "access.sqlite3") as con:
        for ddl in OLD_SCHEMA:
            con.execute(ddl)
        con.execute("INSERT INTO departments VALUES ('police', '', ?)", (now,))
        hashed = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(secret)
        con.execute("INSERT INTO api_keys VALUES (?, 'police', ?, ?, NULL)", (key_id, hashed, now))
    con.close()
    upgraded = _admin(data_dir)  # the hub's first start after the upgrade
    try:
        assert upgraded.authenticate(f"Bearer {key}").department == "police"  # the old key works ...
    finally:
        upgraded.close()
    server = start_server(data_dir, env=ENV)  # ... and is known as the holder's after a restart
    try:
        with _guessing(server, key):
            answer = _me(server, key)
        assert answer.status_code == 200 and answer.json()["department"] == "police", answer.text
        admin = _admin(data_dir)
        try:
            admin.revoke_key(key_id)
        finally:
            admin.close()
        assert _me(server, key).status_code == 401  # revoked: refused at once
    finally:
        stop_server(server.process)
