"""Access control and audit as an attacker meets them, found in a review on 2026-11-29 (each test failed before
its fix):

- one anonymous request with a long path broke the audit chain for good: an entry longer than the 64 KiB the
  log re-read to find its last entry made the next process (a restart, `polis admin`) start over at seq 1;
- an anonymous client grew the audit log by one entry (up to 65 KB) per request, as fast as it could send;
- creating and listing subscriptions was not audited at all (no decision was recorded for them);
- a key revoked while a request was checking it was remembered as good afterwards, for `api_key_cache_s`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.access.audit import verify
from polis.access.control import AccessControl
from polis.api.app import create_app
from polis.domain.errors import Unauthorized
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import Server, start_server, stop_server

LD = "/ngsi-ld/v1"
CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}


def _entries(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _raw_get(server: Server, path: str) -> bytes:
    """A GET sent as raw bytes (httpx refuses URLs over 64 KiB; uvicorn takes them), no key: anyone can."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.server
def test_an_anonymous_long_path_cannot_break_the_audit_chain(tmp_path: Path) -> None:
    server = start_server(tmp_path / "hub")
    try:
        status = _raw_get(server, f"{LD}/entities/urn:ngsi-ld:X:" + "a" * 65_400)
        assert b" 403 " in status, status  # anonymous, refused, audited
        path = server.data_dir / "audit" / "audit.jsonl"
        longest = max(len(line) for line in path.read_bytes().splitlines())
        assert longest < 4096, f"an entry of {longest} bytes, from one anonymous request"
        # another process appends next (as `polis admin` does beside a running server): it must chain on
        control = AccessControl(Settings(data_dir=server.data_dir, **CHEAP))  # type: ignore[arg-type]
        try:
            control.create_department("parks")
        finally:
            control.close()
        result = verify(path)
        assert result.ok, result.problem
    finally:
        stop_server(server.process)


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    platform = Platform.in_memory()
    try:
        with TestClient(create_app(platform), raise_server_exceptions=False) as client:
            yield client, platform
    finally:
        platform.close()


def test_an_anonymous_flood_grows_the_audit_log_at_a_bounded_rate_and_is_still_counted(
    hub: tuple[TestClient, Platform],
) -> None:
    client, platform = hub
    path = platform.settings.audit_log_path
    before = len(_entries(path))
    flood = 1500
    for n in range(flood):
        assert client.get(f"{LD}/entities/urn:ngsi-ld:X:{n}").status_code == 403  # each path its own
    admin = {"Authorization": f"Bearer {platform.access.admin_key()}"}
    assert client.get("/polis/v1/access/me", headers=admin).status_code == 200  # an entry after the flood
    entries = _entries(path)[before:]
    anonymous = [e for e in entries if e["who"] == "public" and e["key"] is None]
    assert len(anonymous) <= 600, f"{len(anonymous)} entries for {flood} anonymous requests"
    assert sum(int(e.get("repeated", 1)) for e in anonymous) == flood  # none goes uncounted
    assert all(e["decision"] == "deny" for e in anonymous)
    assert verify(path).ok


def test_creating_and_listing_subscriptions_is_audited(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    platform.access.create_department("transport")
    platform.access.grant("transport", "los-loop", "aggregate", "subscribe")
    key = {"Authorization": f"Bearer {platform.access.create_key('transport').secret_key}"}
    path = platform.settings.audit_log_path
    body = {"type": "Subscription", "entities": [{"type": "TrafficFlowObserved"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
    for method, call in (("POST", lambda: client.post(f"{LD}/subscriptions", json=body, headers=key)),
                         ("GET", lambda: client.get(f"{LD}/subscriptions", headers=key))):
        before = len(_entries(path))
        assert call().status_code in (200, 201)
        found = [e for e in _entries(path)[before:] if e["what"] == f"{method} {LD}/subscriptions"]
        assert found and all(e["who"] == "transport" and e["key"] and e["decision"] == "allow" for e in found), found


def test_a_key_revoked_while_it_is_being_checked_is_not_remembered_as_good(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    control = platform.access
    control.create_department("transport")
    control.grant("transport", "los-loop", "aggregate", "read")
    new = control.create_key("transport")
    secret = new.secret_key.split(".", 1)[1]
    admin = f"Bearer {control.admin_key()}"

    checking, release = threading.Event(), threading.Event()
    real = control.keys._hasher

    class SlowHasher:
        """argon2 as it is, but the check of this one key waits (argon2 takes tens of ms anyway)."""

        def verify(self, stored: str, presented: str) -> bool:
            if presented == secret:
                checking.set()
                assert release.wait(10)
            return bool(real.verify(stored, presented))

    control.keys._hasher = SlowHasher()  # type: ignore[assignment]
    first: list[object] = []
    thread = threading.Thread(target=lambda: first.append(control.authenticate(f"Bearer {new.secret_key}")))
    thread.start()
    try:
        assert checking.wait(10)  # the request has read the key as live and is checking its secret
        other = AccessControl(Settings(data_dir=platform.settings.data_dir, **CHEAP))  # type: ignore[arg-type]
        try:
            other.revoke_key(new.key_id)  # `polis admin revoke-key`, another process
        finally:
            other.close()
        control.authenticate(admin)  # any request now notices the change
    finally:
        release.set()
        thread.join(10)
    assert first  # the request that began before the revocation went through
    with pytest.raises(Unauthorized):
        control.authenticate(f"Bearer {new.secret_key}")
    r = client.get("/polis/v1/access/me", headers={"Authorization": f"Bearer {new.secret_key}"})
    assert r.status_code == 401, r.text
