"""Another department's subscription must be indistinguishable from an id nobody uses (found in a review on
2026-11-29; the test failed before its fix): it was 403 where an unused id was 404, so any department could
learn which ids the others chose (`urn:ngsi-ld:Subscription:police:raids`), on every route that takes one.
The operator still sees the attempt in the audit log, with the real reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from polis.access.control import AccessControl
from polis.settings import Settings
from tests.conftest import ERR, Server, key_headers, start_server, stop_server

LD = "/ngsi-ld/v1"
CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
TAKEN = "urn:ngsi-ld:Subscription:police:raids"  # police's, chosen by police
UNUSED = "urn:ngsi-ld:Subscription:police:rests"  # nobody's
# Whatever a response says beyond these (the date, a length that follows the id) may differ.
VARYING_HEADERS = {"date", "content-length"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, dict[str, str]]]]:
    """A real `polis serve`; keys made beside it, as `polis admin` does: police owns TAKEN, parks may
    subscribe too (but not administer), library may not subscribe at all."""
    env = {"POLIS_API_KEY_HASH_TIME_COST": "1", "POLIS_API_KEY_HASH_MEMORY_KIB": "64"}
    server = start_server(tmp_path_factory.mktemp("probing") / "hub", env=env)
    try:
        control = AccessControl(Settings(data_dir=server.data_dir, **CHEAP))  # type: ignore[arg-type]
        try:
            keys = {"admin": key_headers(server.data_dir)}
            for department in ("police", "parks", "library"):
                control.create_department(department)
                if department != "library":
                    control.grant(department, "los-loop", "aggregate", "subscribe")
                keys[department] = {"Authorization": f"Bearer {control.create_key(department).secret_key}"}
        finally:
            control.close()
        body = {"id": TAKEN, "type": "Subscription", "entities": [{"type": "TrafficFlowObserved"}],
                "notification": {"endpoint": {"uri": "urn:polis:sse"}}}
        created = httpx.post(f"{server.url}{LD}/subscriptions", json=body, headers=keys["police"], timeout=10)
        assert created.status_code == 201, created.text
        yield server, keys
    finally:
        stop_server(server.process)


def _send(server: Server, headers: dict[str, str], method: str, sub_id: str, suffix: str = "",
          **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{server.url}{LD}/subscriptions/{sub_id}{suffix}", headers=headers,
                         timeout=10, **kwargs)


def _seen(r: httpx.Response, sub_id: str) -> tuple[int, dict[str, str], str]:
    """What a client learns from a response, with the id it asked about written out of it."""
    headers = {k: v for k, v in r.headers.items() if k not in VARYING_HEADERS}
    return r.status_code, headers, r.text.replace(sub_id, "<id>")


# Every route that takes a subscription id, asked well and asked badly: a bad query parameter, an Accept
# the route cannot serve, a body that is not JSON or that names an entity out of the department's grants.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "", {}),
    ("GET", "", {"params": {"nonsense": "1"}}),
    ("GET", "", {"headers": {"Accept": "text/csv"}}),
    ("GET", "/stream", {}),
    ("GET", "/stream", {"params": {"nonsense": "1"}}),
    ("PATCH", "", {"json": {"description": "watched"}}),
    ("PATCH", "", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("PATCH", "", {"json": {"entities": [{"type": "T", "id": "urn:ngsi-ld:T:montgomery-911:1"}]}}),
    ("DELETE", "", {}),
    ("DELETE", "", {"params": {"nonsense": "1"}}),
]


@pytest.mark.server
@pytest.mark.parametrize(("method", "suffix", "kwargs"), REQUESTS)
def test_another_departments_subscription_answers_as_an_unused_id(
    hub: tuple[Server, dict[str, dict[str, str]]], method: str, suffix: str, kwargs: dict[str, Any]
) -> None:
    server, keys = hub
    for department in ("parks", "library"):
        extra = dict(kwargs)
        headers = {**keys[department], **extra.pop("headers", {})}
        taken = _send(server, headers, method, TAKEN, suffix, **extra)
        unused = _send(server, headers, method, UNUSED, suffix, **extra)
        assert _seen(taken, TAKEN) == _seen(unused, UNUSED), (department, taken.text, unused.text)
        assert taken.status_code == (404 if department == "parks" else 403), taken.text
        assert taken.json()["type"] == ERR + ("ResourceNotFound" if department == "parks" else "Forbidden")
    # none of it touched police's subscription, which its owner and the operator still reach
    assert _send(server, keys["police"], "GET", TAKEN).json()["id"] == TAKEN
    assert _send(server, keys["admin"], "GET", TAKEN).json().get("description") != "watched"


@pytest.mark.server
def test_the_probe_is_in_the_audit_log_with_its_real_reason(hub: tuple[Server, dict[str, dict[str, str]]]) -> None:
    server, keys = hub
    assert _send(server, keys["parks"], "DELETE", TAKEN).status_code == 404
    assert _send(server, keys["parks"], "GET", UNUSED).status_code == 404
    lines = (server.data_dir / "audit" / "audit.jsonl").read_bytes().splitlines()
    entries = [orjson.loads(line) for line in lines]
    probe = [e for e in entries if e["who"] == "parks" and e["what"] == f"DELETE {LD}/subscriptions/{TAKEN}"][-1]
    assert probe["decision"] == "deny" and "department 'police'" in probe["reason"], probe
    assert probe["action"] == "administer" and probe["dataset"] == "subscriptions"
    unused = [e for e in entries if e["who"] == "parks" and e["what"] == f"GET {LD}/subscriptions/{UNUSED}"][-1]
    assert unused["decision"] == "deny" and "police" not in unused["reason"], unused


@pytest.mark.server
def test_owners_and_administrators_keep_their_answers(hub: tuple[Server, dict[str, dict[str, str]]]) -> None:
    server, keys = hub
    assert _send(server, keys["police"], "GET", TAKEN).status_code == 200
    assert _send(server, keys["police"], "GET", TAKEN, params={"nonsense": "1"}).status_code == 400  # its own: told
    assert _send(server, keys["admin"], "GET", TAKEN).status_code == 200
    assert _send(server, keys["admin"], "PATCH", TAKEN, json={"description": "seen"}).status_code == 204
    assert _send(server, keys["admin"], "GET", UNUSED).status_code == 404  # the route's own 404
    assert _send(server, keys["admin"], "GET", UNUSED, params={"nonsense": "1"}).status_code == 400
    nowhere = _send(server, {**keys["parks"], "NGSILD-Tenant": "nowhere"}, "GET", UNUSED)
    assert nowhere.status_code == 404 and nowhere.json()["type"] == ERR + "NonexistentTenant"


@pytest.mark.server
def test_guessing_at_a_key_id_is_held_back_and_its_holder_is_not(hub: tuple[Server, dict[str, dict[str, str]]]) -> None:
    """Secrets guessed for a key id seen in audit output: a handful are checked, then 429 with Retry-After
    (no argon2 check) while the key's holder goes on as before."""
    server, keys = hub
    key_id = keys["police"]["Authorization"].removeprefix("Bearer polis_").split(".", 1)[0]
    me = f"{server.url}/polis/v1/access/me"
    answers = [httpx.get(me, headers={"Authorization": f"Bearer polis_{key_id}.{'A' * 42}{n % 10}"}, timeout=10)
               for n in range(10)]
    assert {r.status_code for r in answers[:5]} == {401}
    held = answers[-1]
    assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1, held.text
    assert held.json()["type"] == ERR + "TooManyRequests" and key_id in held.json()["detail"]
    assert httpx.get(me, headers=keys["police"], timeout=10).json()["department"] == "police"
    lines = (server.data_dir / "audit" / "audit.jsonl").read_bytes().splitlines()
    assert any(b"too many wrong secrets" in line and b'"deny"' in line for line in lines)
