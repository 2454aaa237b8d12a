"""A key never gives less than no key (every department may do what `public` may, and reading a tier includes
the coarser tiers of the same dataset), the CAP links of the public feed work for the public, and a grant
that could never apply is refused with the tiers the dataset has, while a 403 names what would be needed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from polis.access.control import PUBLIC, AccessControl
from polis.access.datasets import SUBSCRIPTIONS, served_tiers
from polis.access.enforce import ROUTE_POLICIES, CapOrJson, Fixed, wants_cap
from polis.access.grants import Permissions, never_applies
from polis.alerts.cap import CAP_MEDIA_TYPE
from polis.alerts.entity import ALERT_CONTEXT
from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import LINK_SDM, THRESHOLD_RULE

LD = "/ngsi-ld/v1"
FEED = "/polis/v1/alerts/feed"
ATOM = "{http://www.w3.org/2005/Atom}"
SENSOR = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:corner"
CALL = "urn:ngsi-ld:EmergencyCall:montgomery-911:c1"
POLIS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "polis"


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform, dict[str, str]]]:
    """An anonymous client, its platform, and the admin's headers; one active alert with its CAP message."""
    platform = Platform.in_memory()
    admin = {"Authorization": f"Bearer {platform.access.admin_key()}"}
    try:
        with TestClient(create_app(platform), raise_server_exceptions=False) as client:
            assert client.post("/polis/v1/alerts/rules", json=THRESHOLD_RULE, headers=admin).status_code == 201
            sensor = {"id": SENSOR, "type": "CrowdFlowObserved",
                      "peopleCount": {"type": "Property", "value": 500, "observedAt": "2026-03-02T08:00:00Z"},
                      "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.96, -37.81]}}}
            assert client.post(f"{LD}/entities", json=sensor, headers={**admin, "Link": LINK_SDM}).status_code == 201
            assert platform.alerts.flush(10)
            yield client, platform, admin
    finally:
        platform.close()


def _key(platform: Platform, department: str, *grants: tuple[str, str, str]) -> dict[str, str]:
    platform.access.create_department(department)
    for grant in grants:
        platform.access.grant(department, *grant)
    return {"Authorization": f"Bearer {platform.access.create_key(department).secret_key}"}


def _alert_id(client: TestClient, admin: dict[str, str]) -> str:
    alerts = client.get("/polis/v1/alerts", headers=admin).json()
    assert len(alerts) == 1, alerts
    return str(alerts[0]["id"])


def _audit(platform: Platform) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in platform.settings.audit_log_path.read_bytes().splitlines()]


# -- a key never gives less than no key -----------------------------------------------------------------


def test_a_department_reads_whatever_the_public_may(hub: tuple[TestClient, Platform, dict[str, str]]) -> None:
    client, platform, admin = hub
    transport = _key(platform, "transport", ("los-loop", "aggregate", "read"))
    alert_entity = _alert_id(client, admin)  # the id of its Alert entity
    for path in (FEED, f"{LD}/jsonldContexts", f"{LD}/entities/{alert_entity}"):
        assert client.get(path).status_code == 200, path  # no key
        assert client.get(path, headers=transport).status_code == 200, path  # a key: not less
    link = f'<{ALERT_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    listed = client.get(f"{LD}/entities", params={"type": "Alert"}, headers={**transport, "Link": link})
    assert [e["id"] for e in listed.json()] == [alert_entity]
    # and the decision is audited as allowed through the public department's grant
    entry = _audit(platform)[-1]
    assert (entry["who"], entry["decision"], entry["dataset"]) == ("transport", "allow", "alerts,los-loop")
    feed = [e for e in _audit(platform) if e["who"] == "transport" and e["what"] == f"GET {FEED}"]
    assert feed[-1]["decision"] == "allow" and feed[-1]["reason"] == "grant read alerts/public of public"
    assert feed[-1]["key"]


def test_access_me_lists_what_a_department_holds_from_public(hub: tuple[TestClient, Platform, dict[str, str]]) -> None:
    client, platform, _ = hub
    transport = _key(platform, "transport", ("los-loop", "aggregate", "read"))
    me = client.get("/polis/v1/access/me", headers=transport).json()
    assert me["grants"] == [{"dataset": "los-loop", "tier": "aggregate", "action": "read"}]
    inherited = {(g["dataset"], g["tier"], g["action"]) for g in me["inheritedGrants"]}
    assert ("alerts", "public", "read") in inherited  # the CAP feed it can read, though never granted it
    platform.access.revoke_grant(PUBLIC, "alerts", "public", "read")
    me = client.get("/polis/v1/access/me", headers=transport).json()
    assert ("alerts", "public", "read") not in {(g["dataset"], g["tier"], g["action"]) for g in me["inheritedGrants"]}
    anonymous = client.get("/polis/v1/access/me").json()
    assert anonymous["department"] == PUBLIC and anonymous["inheritedGrants"] == []  # public's own are `grants`


def test_reading_a_tier_includes_the_coarser_tiers_of_that_dataset_only(
    hub: tuple[TestClient, Platform, dict[str, str]],
) -> None:
    client, platform, _ = hub
    mobility = "/polis/v1/mobility/citibike-jersey-city"
    flows = _key(platform, "transport", ("citibike-jersey-city", "aggregate", "read"))
    assert client.get(f"{mobility}/summary", headers=flows).status_code != 403  # public tier of the same trips
    assert client.get(f"{mobility}/trips", params={"day": "2018-01-30"}, headers=flows).status_code == 403
    summary = _key(platform, "health", ("citibike-jersey-city", "public", "read"))
    assert client.get(f"{mobility}/flows", params={"day": "2017-04-12"}, headers=summary).status_code == 403
    rules = _key(platform, "emergency", ("alerts", "aggregate", "administer"))  # only read carries over
    assert not platform.access.allows("emergency", "alerts", "public", "administer")
    assert client.get("/polis/v1/alerts", headers=rules).status_code == 403
    assert client.get(f"{mobility}/summary").status_code == 403  # and nothing opens to the public itself


def test_revoking_a_public_grant_takes_effect_for_every_department_at_once(
    hub: tuple[TestClient, Platform, dict[str, str]],
) -> None:
    client, platform, _ = hub
    transport = _key(platform, "transport", ("los-loop", "aggregate", "read"))
    assert client.get(FEED, headers=transport).status_code == 200  # remembered now
    platform.access.revoke_grant(PUBLIC, "alerts", "public", "read")
    assert client.get(FEED).status_code == 403
    assert client.get(FEED, headers=transport).status_code == 403
    other = AccessControl(platform.settings)  # `polis admin grant public ...` beside the running server
    try:
        other.grant(PUBLIC, "alerts", "public", "read")
        assert client.get(FEED, headers=transport).status_code == 200
        other.revoke_grant(PUBLIC, "alerts", "public", "read")
    finally:
        other.close()
    assert client.get(FEED, headers=transport).status_code == 403


def test_a_revocation_while_permissions_are_read_is_not_undone_by_the_cache(
    hub: tuple[TestClient, Platform, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, platform, _ = hub
    control = platform.access
    control.create_department("transport")
    read = control.departments.permissions
    raced: list[str] = []

    def racing(department: str) -> Permissions:
        perms = read(department)
        if department == PUBLIC and not raced:  # the revocation lands after the grants were read
            raced.append(department)
            control.revoke_grant(PUBLIC, "alerts", "public", "read")
        return perms

    monkeypatch.setattr(control.departments, "permissions", racing)
    assert control.allows("transport", "alerts", "public", "read")  # answered from what was read
    assert not control.allows("transport", "alerts", "public", "read")  # but not kept


# -- the feed's links work for the public ------------------------------------------------------------------


def test_every_cap_link_of_the_public_feed_opens_for_the_public(
    hub: tuple[TestClient, Platform, dict[str, str]],
) -> None:
    client, _, _ = hub
    feed = client.get(FEED)
    assert feed.status_code == 200
    links = etree.fromstring(feed.content).findall(f"{ATOM}entry/{ATOM}link")
    assert {link.get("rel") for link in links} == {"alternate", "related"}
    for link in links:
        path = link.get("href").split("://", 1)[1].split("/", 1)[1]
        cap = client.get(f"/{path}", headers={"Accept": CAP_MEDIA_TYPE})  # the README: CAP messages are public
        assert cap.status_code == 200, (link.get("rel"), cap.text)
        assert cap.headers["content-type"].startswith(CAP_MEDIA_TYPE) and b"<alert" in cap.content
    related = next(link for link in links if link.get("rel") == "related")
    assert related.get("type") == "application/json"
    as_json = client.get("/" + related.get("href").split("://", 1)[1].split("/", 1)[1])
    assert as_json.status_code == 403 and as_json.json()["tier"] == "aggregate"  # the JSON stays aggregate


@pytest.mark.parametrize("accept", [
    "", "*/*", "application/json", CAP_MEDIA_TYPE, f"{CAP_MEDIA_TYPE}, application/json;q=0.5",
    "application/xml", "application/xml, application/json", "text/html,application/xhtml+xml,application/xml;q=0.9",
])
def test_the_tier_checked_is_the_tier_served(hub: tuple[TestClient, Platform, dict[str, str]], accept: str) -> None:
    """The enforcement's reading of Accept (`wants_cap`) and the route's give the same answer."""
    client, _, admin = hub
    path = f"/polis/v1/alerts/{_alert_id(client, admin)}"
    served = client.get(path, headers={**admin, "Accept": accept})
    assert served.status_code == 200
    assert served.headers["content-type"].startswith(CAP_MEDIA_TYPE) == wants_cap(accept)
    anonymous = client.get(path, headers={"Accept": accept})
    assert anonymous.status_code == (200 if wants_cap(accept) else 403), anonymous.text


# -- grants that could never apply -------------------------------------------------------------------------


def _polis(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "250"}
    return subprocess.run([str(POLIS), *args, "--data-dir", str(data)], capture_output=True, text=True,
                          timeout=60, env=env)


def test_polis_admin_grant_refuses_a_tier_the_dataset_does_not_have(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    assert _polis(data, "admin", "department", "health").returncode == 0
    refused = _polis(data, "admin", "grant", "health", "montgomery-911", "aggregate", "read")
    assert refused.returncode == 2, refused.stdout
    assert "montgomery-911" in refused.stdout and "no tier 'aggregate'" in refused.stdout
    assert "its tiers: raw-pseudonymous" in refused.stdout
    unknown = _polis(data, "admin", "grant", "health", "paris-metro", "aggregate", "read")
    assert unknown.returncode == 2 and "no dataset 'paris-metro'" in unknown.stdout and "los-loop" in unknown.stdout
    assert _polis(data, "admin", "grant", "health", "montgomery-911", "raw-pseudonymous", "read").returncode == 0
    assert _polis(data, "admin", "grant", "health", "*", "public", "read").returncode == 0  # wildcards apply
    listed = _polis(data, "admin", "list").stdout
    assert "read montgomery-911/raw-pseudonymous" in listed and "montgomery-911/aggregate" not in listed


def _store_legacy_grant(settings: Settings, *grant: str) -> None:
    """A grant a hub stored before such grants were refused (written as another process would)."""
    with sqlite3.connect(settings.access_db_path) as con:
        con.execute("INSERT INTO grants VALUES (?, ?, ?, ?, '2026-01-01T00:00:00Z')", grant)
    con.close()


def test_a_403_names_the_dataset_and_tier_needed_and_not_whether_an_entity_exists(
    hub: tuple[TestClient, Platform, dict[str, str]],
) -> None:
    client, platform, admin = hub
    call = {"id": CALL, "type": "EmergencyCall", "status": {"type": "Property", "value": "open"}}
    assert client.post(f"{LD}/entities", json=call, headers=admin).status_code == 201
    health = _key(platform, "health")
    _store_legacy_grant(platform.settings, "health", "montgomery-911", "aggregate", "read")
    details = set()
    for entity_id in (CALL, CALL + "-never-made"):
        body = client.get(f"{LD}/entities/{entity_id}", headers=health).json()
        assert (body["status"], body["dataset"], body["tier"]) == (403, "montgomery-911", "raw-pseudonymous")
        details.add(body["detail"])
    assert len(details) == 1  # the same answer whether the call exists or not
    assert "at aggregate only" in details.pop()
    platform.access.revoke_grant(PUBLIC, "alerts", "public", "read")  # now health may read no entity at all
    query = client.get(f"{LD}/entities", params={"type": "EmergencyCall"}, headers=health)
    assert query.status_code == 403
    detail = query.json()["detail"]
    assert "montgomery-911/raw-pseudonymous" in detail and "read montgomery-911/aggregate" in detail
    assert "los-loop/aggregate" in detail  # every dataset's need, the same for every query


def test_polis_admin_list_marks_a_stored_grant_that_never_applies(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    assert _polis(data, "admin", "department", "health").returncode == 0
    _store_legacy_grant(Settings(data_dir=data), "health", "montgomery-911", "aggregate", "read")
    listed = _polis(data, "admin", "list")
    assert listed.returncode == 0, listed.stderr
    assert "read montgomery-911/aggregate (never applies" in listed.stdout
    assert "also do what 'public' may" in listed.stdout
    revoked = _polis(data, "admin", "revoke", "health", "montgomery-911", "aggregate", "read")
    assert revoked.returncode == 0, revoked.stdout  # and it can be taken back


def test_every_declared_need_is_a_tier_its_dataset_is_served_at() -> None:
    """datasets.py declares the tiers grants are checked against; every route's need must be among them."""
    needs = {(SUBSCRIPTIONS, "aggregate")}
    for policy in ROUTE_POLICIES.values():
        if isinstance(policy, Fixed):
            needs.add((policy.dataset, policy.tier))
        elif isinstance(policy, CapOrJson):
            needs |= {(policy.dataset, policy.cap_tier), (policy.dataset, policy.json_tier)}
    assert {(d, t) for d, t in needs if t not in served_tiers(d)} == set()
    platform = Platform.in_memory()  # and the bootstrap grants all apply
    try:
        store = platform.access.departments
        stored = [g for d, _ in store.departments() for g in store.permissions(d).grants]
        assert [str(g) for g in stored if never_applies(g)] == []
    finally:
        platform.close()
