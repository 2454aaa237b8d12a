"""API keys are shown once and stored only as argon2 hashes; grants deny by default; the verified-key cache
makes a known key cheap and a revoked one stop working."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from polis.access.control import ADMIN, PUBLIC, SENSORS, AccessControl, client_headers
from polis.access.departments import AccessError
from polis.access.grants import ACTIONS, TIERS
from polis.domain.errors import Unauthorized
from polis.settings import Settings


@pytest.fixture
def control(tmp_path: Path) -> Iterator[AccessControl]:
    c = AccessControl(Settings(data_dir=tmp_path, api_key_hash_time_cost=1, api_key_hash_memory_kib=1024))
    yield c
    c.close()


def test_first_start_creates_admin_public_and_sensors_with_a_private_admin_key(control: AccessControl) -> None:
    names = [n for n, _ in control.departments.departments()]
    assert names == [ADMIN, PUBLIC, SENSORS]
    key_file = control.settings.admin_key_path
    assert key_file.stat().st_mode & 0o077 == 0
    assert control.authenticate(f"Bearer {control.admin_key()}").department == ADMIN
    assert control.settings.access_db_path.stat().st_mode & 0o077 == 0


def test_keys_are_stored_hashed_nowhere_in_clear(control: AccessControl, tmp_path: Path) -> None:
    control.create_department("transport")
    key = control.create_key("transport")
    secret = key.secret_key.split(".", 1)[1]
    admin_secret = control.admin_key().split(".", 1)[1]
    control.close()
    found = []
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != control.settings.admin_key_path:
            data = path.read_bytes()
            found += [path.name for s in (secret, admin_secret) if s.encode() in data]
    assert found == []
    with control.settings.access_db_path.open("rb") as f:
        assert b"$argon2id$" in f.read()


def test_a_new_key_works_and_wrong_ones_do_not(control: AccessControl) -> None:
    control.create_department("health")
    key = control.create_key("health").secret_key
    assert control.authenticate(f"Bearer {key}").department == "health"
    key_id, secret = key.removeprefix("polis_").split(".")
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for bad in (f"polis_{key_id}.{flipped}", "polis_zzzzzzzzzzzz." + secret, "nonsense", key + "x", key.upper()):
        with pytest.raises(Unauthorized):
            control.authenticate(f"Bearer {bad}")
    for header in ("Basic abc", "Bearer", "Bearer   ", key):
        with pytest.raises(Unauthorized):
            control.authenticate(header)


def test_no_key_is_the_public_department(control: AccessControl) -> None:
    assert control.authenticate(None).department == PUBLIC


def test_a_revoked_key_stops_working(control: AccessControl) -> None:
    control.create_department("health")
    key = control.create_key("health")
    assert control.authenticate(f"Bearer {key.secret_key}").department == "health"
    control.revoke_key(key.key_id)
    with pytest.raises(Unauthorized):
        control.authenticate(f"Bearer {key.secret_key}")


def test_a_cached_key_skips_argon2(tmp_path: Path) -> None:
    """With the default (production) argon2 cost, the first check is slow and the next ones are not."""
    control = AccessControl(Settings(data_dir=tmp_path))
    try:
        key = f"Bearer {control.admin_key()}"
        start = time.perf_counter()
        control.authenticate(key)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(100):
            control.authenticate(key)
        cached = (time.perf_counter() - start) / 100
        assert first > 0.01 and cached < first / 20, (first, cached)
    finally:
        control.close()


def test_grants_deny_by_default_and_allow_exactly_what_is_granted(control: AccessControl) -> None:
    control.create_department("transport")
    datasets = ["los-loop", "sz-taxi", "citibike-jersey-city", "montgomery-911"]
    granted = {("los-loop", "aggregate", "read"), ("citibike-jersey-city", "raw-pseudonymous", "subscribe")}
    for g in granted:
        control.grant("transport", *g)
    for dataset in datasets:
        for tier in TIERS:
            for action in ACTIONS:
                assert control.allows("transport", dataset, tier, action) == ((dataset, tier, action) in granted)
    control.revoke_grant("transport", "los-loop", "aggregate", "read")
    assert not control.allows("transport", "los-loop", "aggregate", "read")


def test_another_process_changing_grants_is_seen_at_once(control: AccessControl) -> None:
    control.create_department("transport")
    assert not control.allows("transport", "los-loop", "aggregate", "read")
    other = AccessControl(control.settings)  # what `polis admin grant` does beside a running server
    try:
        other.grant("transport", "los-loop", "aggregate", "read")
    finally:
        other.close()
    assert control.allows("transport", "los-loop", "aggregate", "read")


def test_bad_admin_requests_are_clear_errors(control: AccessControl) -> None:
    with pytest.raises(AccessError, match="unknown tier"):
        control.grant(ADMIN, "los-loop", "raw", "read")
    with pytest.raises(AccessError, match="unknown action"):
        control.grant(ADMIN, "los-loop", "public", "delete")
    with pytest.raises(AccessError, match="no department"):
        control.grant("nobody", "los-loop", "public", "read")
    with pytest.raises(AccessError, match="already exists"):
        control.create_department(PUBLIC)
    with pytest.raises(AccessError, match="department name"):
        control.create_department("Transport Dept")
    with pytest.raises(AccessError, match="no live key"):
        control.revoke_key("nope")


def test_the_cli_sends_the_configured_key_or_the_admin_key_file(control: AccessControl) -> None:
    assert client_headers(control.settings) == {"Authorization": f"Bearer {control.admin_key()}"}
    settings = control.settings.model_copy(update={"api_key": "polis_x.y"})
    assert client_headers(settings) == {"Authorization": "Bearer polis_x.y"}
