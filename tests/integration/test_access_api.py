"""Enforcement as clients meet it: 401 and 403 problem details, hostile headers, no route without a policy,
subscriptions that carry only what their department may read, MQTT ingest writing as `sensors`, and the
`polis admin` / `polis audit` commands beside a running server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from polis.access.audit import verify
from polis.access.enforce import ROUTE_POLICIES, UNENFORCED_PATHS, Fixed, app_routes
from polis.api.app import create_app
from polis.ingest.broker import start_broker
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import start_server, stop_server
from tests.integration.webhook import Receiver

LD = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
LOS = "urn:ngsi-ld:TrafficFlowObserved:los-loop:a1"
SZ = "urn:ngsi-ld:TrafficFlowObserved:sz-taxi:a1"


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TestClient, Platform]]:
    platform = Platform.in_memory(notify_retry_initial_s=0.05, notify_retry_max_s=0.2)
    with TestClient(create_app(platform), raise_server_exceptions=False) as client:
        admin = {"Authorization": f"Bearer {platform.access.admin_key()}"}
        for eid in (LOS, SZ):
            body = {"id": eid, "type": "TrafficFlowObserved", "speed": {"type": "Property", "value": 50}}
            assert client.post(f"{LD}/entities", json=body, headers=admin).status_code == 201
        yield client, platform
    platform.close()


def _key(platform: Platform, department: str, *grants: tuple[str, str, str]) -> dict[str, str]:
    if not platform.access.departments.has_department(department):
        platform.access.create_department(department)
    for grant in grants:
        platform.access.grant(department, *grant)
    return {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}


def _problem(r: httpx.Response, status: int, name: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, object] = r.json()
    assert body["type"] == ERR + name and body["status"] == status and body["detail"]
    return body


# -- 401 / 403 --------------------------------------------------------------------------------------------


def test_an_anonymous_request_is_the_public_department_and_gets_403(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    body = _problem(client.get(f"{LD}/entities/{LOS}"), 403, "Forbidden")
    assert "'public'" in str(body["detail"]) and body["dataset"] == "los-loop" and body["action"] == "read"
    narrowed = client.get(f"{LD}/entities", params={"type": "TrafficFlowObserved"})  # public reads alerts only
    assert narrowed.status_code == 200 and narrowed.json() == []
    health = client.get("/health")  # open routes stay open, and the open liveness check names no data
    assert health.status_code == 200 and set(health.json()) == {"status", "version"}
    assert client.get("/polis/v1/alerts/feed").status_code != 403  # the CAP feed is granted to public


@pytest.mark.parametrize("path", [f"{LD}/entities/{LOS}", "/metrics", "/health", f"{LD}/types"])
def test_a_bad_key_is_401_with_a_challenge_even_where_public_may_go(hub: tuple[TestClient, Platform],
                                                                    path: str) -> None:
    client, _ = hub
    r = client.get(path, headers={"Authorization": "Bearer polis_aaaaaaaaaaaa." + "A" * 43})
    _problem(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")


HOSTILE = [
    "Bearer " + "x" * 100_000,
    "Bearer polis_",
    "Bearer polis_aaaaaaaaaaaa.",
    "Bearer polis_AAAAAAAAAAAA." + "a" * 43,
    "Bearer polis_aaaaaaaaaaaa." + "a" * 43 + "\t",
    "Bearer ../../etc/passwd",
    "Bearer ' OR 1=1 --",
    "Bearer polis_aaaaaaaaaaaa.aaa\u00e9aaa",
    "bearer",
    "Basic YWRtaW46YWRtaW4=",
    "Bearer a b c",
    "   ",
    "\u00ff\u00fe",
    "Digest username=admin",
]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_authorization_headers_are_401_never_500(hub: tuple[TestClient, Platform], value: str) -> None:
    client, platform = hub
    r = client.get(f"{LD}/entities/{LOS}", headers={"Authorization": value.encode("latin-1")})  # raw bytes
    _problem(r, 401, "Unauthorized")
    assert verify(platform.settings.audit_log_path).ok  # the refusal is audited, the chain still holds


def test_repeated_authorization_headers_do_not_smuggle_a_key(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    good = f"Bearer {platform.access.admin_key()}"
    r = client.get(f"{LD}/entities/{LOS}", headers=[("Authorization", "Bearer bad"), ("Authorization", good)])
    assert r.status_code == 401


def test_a_known_key_with_a_wrong_secret_is_401_and_costs_argon2_once(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    key_id = platform.access.admin_key().split(".")[0]
    forged = {"Authorization": f"Bearer {key_id}." + "B" * 43}
    for _ in range(3):
        _problem(client.get(f"{LD}/types", headers=forged), 401, "Unauthorized")
    found, verified = platform.access.keys.cached(forged["Authorization"].split(" ", 1)[1])
    assert found and verified is None  # remembered as bad: the next tries skip argon2


# -- no route without a policy ------------------------------------------------------------------------------


def test_every_route_the_app_serves_has_a_declared_policy(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    undeclared = []
    for method, path, route in app_routes(client.app):  # type: ignore[arg-type]
        if method in ("HEAD", "*") or path in UNENFORCED_PATHS:
            continue
        if (method, path) not in ROUTE_POLICIES:
            undeclared.append(f"{method} {path} ({type(route).__name__})")
    assert undeclared == []
    plain = {path for method, path, route in app_routes(client.app) if not hasattr(route, "dependant")}  # type: ignore[arg-type]
    assert plain <= UNENFORCED_PATHS  # nothing served outside FastAPI's routing, where the dependency would not run


def test_a_route_without_a_policy_is_denied_even_to_admin() -> None:
    platform = Platform.in_memory()
    app = create_app(platform)
    router = APIRouter()

    @router.get("/polis/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    app.include_router(router)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            admin = {"Authorization": f"Bearer {platform.access.admin_key()}"}
            body = _problem(client.get("/polis/v1/forgotten", headers=admin), 403, "Forbidden")
            assert "no access policy" in str(body["detail"])
    finally:
        platform.close()


def test_the_mobility_routes_policies_match_what_the_mobility_module_declares() -> None:
    from polis.api.routes_mobility import MOBILITY_ROUTES

    for key, (dataset, tier, action) in MOBILITY_ROUTES.items():
        assert ROUTE_POLICIES.get(key) == Fixed(dataset, tier, action), key


# -- subscriptions ----------------------------------------------------------------------------------------


def test_notifications_carry_only_entities_the_department_may_read(hub: tuple[TestClient, Platform]) -> None:
    """A subscription to a type spanning two datasets notifies only the one the department may read."""
    client, platform = hub
    transport = _key(platform, "transport-sub", ("los-loop", "aggregate", "read"),
                     ("los-loop", "aggregate", "subscribe"), ("sz-taxi", "aggregate", "subscribe"))
    admin = {"Authorization": f"Bearer {platform.access.admin_key()}"}
    receiver = Receiver().start()
    try:
        body = {"type": "Subscription", "entities": [{"type": "TrafficFlowObserved"}],
                "notification": {"endpoint": {"uri": receiver.url}, "format": "keyValues"}}
        r = client.post(f"{LD}/subscriptions", json=body, headers=transport)
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        for eid, speed in ((SZ, 11), (LOS, 22)):  # sz-taxi: subscribe granted, read not
            assert client.patch(f"{LD}/entities/{eid}/attrs", json={"speed": {"type": "Property", "value": speed}},
                                headers=admin).status_code == 204
        got = receiver.wait_for(1)
        time.sleep(0.3)  # a wrongly sent sz-taxi notification would have arrived by now
        ids = [e["id"] for b in receiver.bodies() for e in b["data"]]
        assert ids == [LOS] and got[0]["data"][0]["speed"] == 22
        # someone else's subscription answers as an unknown id (404); the owner and admin see it
        health = _key(platform, "health-sub", ("melbourne-pedestrians", "aggregate", "subscribe"))
        _problem(client.get(location, headers=health), 404, "ResourceNotFound")
        _problem(client.delete(location, headers=health), 404, "ResourceNotFound")
        assert client.get(location, headers=transport).status_code == 200
        assert client.get(location, headers=admin).status_code == 200
        mine = client.get(f"{LD}/subscriptions", headers=health)
        assert mine.status_code == 200 and location.rsplit("/", 1)[1] not in [x["id"] for x in mine.json()]
        everyone = client.get(f"{LD}/subscriptions", headers=admin).json()
        assert location.rsplit("/", 1)[1] in [x["id"] for x in everyone]
        # naming an entity of a dataset without a subscribe grant is refused outright
        named = {**body, "entities": [{"type": "TrafficFlowObserved", "id": LOS}]}
        _problem(client.post(f"{LD}/subscriptions", json=named, headers=health), 403, "Forbidden")
        mel = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:1"
        own = {**body, "entities": [{"type": "CrowdFlowObserved", "id": mel}]}
        created = client.post(f"{LD}/subscriptions", json=own, headers=health)
        assert created.status_code == 201, created.text
        retarget = {"entities": [{"type": "TrafficFlowObserved", "id": LOS}]}  # nor by changing it afterwards
        _problem(client.patch(created.headers["location"], json=retarget, headers=health), 403, "Forbidden")
        assert client.delete(location, headers=transport).status_code == 204
    finally:
        receiver.stop()


# -- MQTT ingest writes as the sensors department ----------------------------------------------------------


def test_mqtt_ingest_writes_only_the_datasets_granted_to_sensors(tmp_path: Path) -> None:
    from polis.ingest.mqtt import MqttIngestor

    broker = start_broker(tmp_path / "broker")
    platform = Platform.in_memory()
    try:
        platform.access.revoke_grant("sensors", "melbourne-pedestrians", "aggregate", "write")
        ingestor = MqttIngestor(platform, broker.url, client_id="ingest-access", topic="polis/#", batch_wait_s=0.01)
        ingestor.start(wait_s=10)
        try:
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensor-access")
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            crowd = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:9"
            loop = "urn:ngsi-ld:TrafficFlowObserved:los-loop:9"
            for topic_type, eid in (("CrowdFlowObserved", crowd), ("TrafficFlowObserved", loop)):
                payload = orjson.dumps({"peopleCount": {"type": "Property", "value": 5,
                                                        "observedAt": "2026-11-26T08:00:00Z"}})
                pub.publish(f"polis/default/{topic_type}/{eid}", payload, qos=1).wait_for_publish(10)
            pub.loop_stop()
            pub.disconnect()
            deadline = time.monotonic() + 15
            while platform.store.dead_letter_count(None) < 1 or not platform.store.get("", [loop]):
                assert time.monotonic() < deadline, "ingest did not settle"
                time.sleep(0.05)
            assert platform.store.get("", [crowd]) == {}
            letters = platform.store.dead_letters(None)
            refused = "the sensors department may not write dataset 'melbourne-pedestrians'"
            assert [d.reason for d in letters] == [refused]
        finally:
            ingestor.stop()
    finally:
        platform.close()
        broker.stop()
    audit = [orjson.loads(x) for x in platform.settings.audit_log_path.read_bytes().splitlines()]
    assert {(e["who"], e["dataset"], e["decision"]) for e in audit if e["what"].startswith("MQTT")} >= {
        ("sensors", "melbourne-pedestrians", "deny"), ("sensors", "los-loop", "allow")}


# -- the admin and audit commands beside a running server --------------------------------------------------


def _polis(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "polis.cli", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_admin_commands_take_effect_on_a_running_server_and_audit_verify_finds_tampering(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    server = start_server(data)  # the verified-key cache is on (60 s): revocation must still be immediate
    try:
        d = ["--data-dir", str(data)]
        assert _polis("admin", "department", "transport", *d).returncode == 0
        created = _polis("admin", "key", "transport", *d)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("polis_")
        headers = {"Authorization": f"Bearer {key}"}
        url = f"{server.url}/metrics"
        assert httpx.get(url, headers=headers, timeout=10).status_code == 403
        assert _polis("admin", "grant", "transport", "operations", "aggregate", "read", *d).returncode == 0
        assert httpx.get(url, headers=headers, timeout=10).status_code == 200  # no restart needed
        me = httpx.get(f"{server.url}/polis/v1/access/me", headers=headers, timeout=10).json()
        assert me["department"] == "transport" and me["grants"] == [
            {"dataset": "operations", "tier": "aggregate", "action": "read"}]
        listed = _polis("admin", "list", *d)
        assert "transport" in listed.stdout and "read operations/aggregate" in listed.stdout
        assert key.split(".")[1] not in listed.stdout  # keys are never shown again
        assert _polis("admin", "revoke-key", key.split(".")[0].removeprefix("polis_"), *d).returncode == 0
        assert httpx.get(url, headers=headers, timeout=10).status_code == 401
        ok = _polis("audit", "verify", *d)
        assert ok.returncode == 0 and "intact" in ok.stdout, ok.stdout
    finally:
        stop_server(server.process)
    log = data / "audit" / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    denied = max(i for i, line in enumerate(lines) if orjson.loads(line)["decision"] == "deny")
    entry = orjson.loads(lines[denied])
    entry["decision"] = "allow"  # cover up a denial
    lines[denied] = orjson.dumps(entry) + b"\n"
    log.write_bytes(b"".join(lines))
    broken = _polis("audit", "verify", "--data-dir", str(data))
    assert broken.returncode == 1 and "broken" in broken.stdout and f"line {denied + 1}:" in broken.stdout
