"""An alert rule watches only what the department declaring it may read (the reviewer's leak).

A rule publishes what it watches (entity ids, names, values, times, places) to every alerts reader and, as CAP, to
anyone. Department `traffic` may read Los-loop only, yet declared a rule over a Melbourne counter (or over 911 calls,
or over every TrafficFlowObserved, Shenzhen's included) and read the values back, as did `press` and the public feed.
Now ids in a rule's scope need read on their datasets (403, audited) and the engine skips entities of datasets the
declaring department may not read; what it may read is recorded with the rule, survives a restart and is no field
of the rule a client could send. Also here: the refusal of a rule over people's records names the dataset, never a
record's id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import LINK_SDM, problem

RULES = "/polis/v1/alerts/rules"
COUNTER = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:secret-counter"
LOOP = "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"
TAXI = "urn:ngsi-ld:TrafficFlowObserved:sz-taxi:road-7"
CALL = "urn:ngsi-ld:EmergencyCall:montgomery-911:call-42"
PEEK: dict[str, Any] = {  # every reading of the counter would be an alert
    "id": "peek",
    "kind": "threshold",
    "name": "peek",
    "scope": {"type": "CrowdFlowObserved", "ids": [COUNTER]},
    "attribute": "peopleCount",
    "above": -1,
    "minDurationS": 0,
}
ROADS: dict[str, Any] = {  # TrafficFlowObserved: Los-loop's and Shenzhen's sensors alike
    "id": "slow-roads",
    "kind": "threshold",
    "name": "Slow roads",
    "scope": {"type": "TrafficFlowObserved"},
    "attribute": "averageVehicleSpeed",
    "below": 1000,
    "minDurationS": 0,
}
BURST: dict[str, Any] = {  # ten calls in one township are a burst on a fresh hub (test_alert_place_privacy)
    "id": "call-burst",
    "kind": "burst",
    "name": "Burst of calls",
    "scope": {"type": "EmergencyCall"},
    "groupBy": "township",
    "minHistoryDays": 0,
}


class Hub:
    def __init__(self, settings: Settings, *, on_disk: bool = False) -> None:
        """`on_disk`: the hub's DuckDB file too (a restart keeps the entities), not only its other files."""
        self.settings = settings
        store = None if on_disk else DuckDBStore(None, threads=settings.duckdb_threads)
        self.platform = Platform(settings, store=store)
        self.client = TestClient(create_app(self.platform), raise_server_exceptions=False)
        self.client.__enter__()
        self.admin = {"Authorization": f"Bearer {self.platform.access.admin_key()}"}

    def key(self, department: str, *grants: tuple[str, str, str]) -> dict[str, str]:
        access = self.platform.access
        if not access.departments.has_department(department):
            access.create_department(department)
        for grant in grants:
            access.grant(department, *grant)
        return {"Authorization": f"Bearer {access.create_key(department).secret_key}"}

    def write(self, entity_id: str, entity_type: str, attribute: str, value: float, minute: int) -> None:
        """An entity (created, or its attribute updated) with a reading at 08:<minute>, as the admin writes it."""
        observed = f"2026-03-02T08:{minute:02d}:00Z"
        reading = {"type": "Property", "value": value, "observedAt": observed}
        headers = {**self.admin, "Link": LINK_SDM}
        if self.client.get(f"/ngsi-ld/v1/entities/{entity_id}", headers=self.admin).status_code == 404:
            entity = {
                "id": entity_id, "type": entity_type, "name": {"type": "Property", "value": f"name of {entity_id}"},
                attribute: reading,
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.96, -37.81]}},
            }
            r = self.client.post("/ngsi-ld/v1/entities", json=entity, headers=headers)
        else:
            r = self.client.post(f"/ngsi-ld/v1/entities/{entity_id}/attrs", json={attribute: reading}, headers=headers)
        assert r.status_code in (201, 204), r.text
        assert self.platform.alerts.flush(10)

    def alerts(self, headers: dict[str, str]) -> list[dict[str, Any]]:
        r = self.client.get("/polis/v1/alerts", params={"status": "all"}, headers=headers)
        assert r.status_code == 200, r.text
        return list(r.json())

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.platform.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "hub", api_key_hash_time_cost=1, api_key_hash_memory_kib=64)


@pytest.fixture
def hub(settings: Settings) -> Iterator[Hub]:
    h = Hub(settings)
    yield h
    h.close()


def traffic(hub: Hub) -> dict[str, str]:
    """The reviewer's department: reads Los-loop, reads and administers alerts."""
    grants = [("los-loop", "aggregate", "read"), ("alerts", "aggregate", "administer"), ("alerts", "aggregate", "read")]
    return hub.key("traffic", *grants)


def audit(hub: Hub) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in hub.settings.audit_log_path.read_bytes().splitlines()]


def leaked(hub: Hub, *entity_ids: str) -> list[str]:
    """Which of these entities any alert names: in the alerts JSON (as the admin sees it) or the public feed."""
    named = {e["id"] for a in hub.alerts(hub.admin) for e in a["entities"]}
    feed = hub.client.get("/polis/v1/alerts/feed").text
    return [i for i in entity_ids if i in named or i in feed]


def test_a_scope_naming_an_entity_the_department_may_not_read_is_refused(hub: Hub) -> None:
    traffic_key = traffic(hub)
    hub.write(COUNTER, "CrowdFlowObserved", "peopleCount", 50, 0)
    assert hub.client.get(f"/ngsi-ld/v1/entities/{COUNTER}", headers=traffic_key).status_code == 403
    r = hub.client.post(RULES, json=PEEK, headers=traffic_key)
    problem(r, 403, None, "traffic", "melbourne-pedestrians")
    r = hub.client.put(f"{RULES}/peek", json=PEEK, headers=traffic_key)
    problem(r, 403, None, "traffic", "melbourne-pedestrians")
    assert hub.client.get(RULES, headers=hub.admin).json() == []
    denied = [e for e in audit(hub) if e["decision"] == "deny" and e["who"] == "traffic"]
    assert [(e["dataset"], e["action"]) for e in denied[-2:]] == [("melbourne-pedestrians", "read")] * 2
    hub.write(COUNTER, "CrowdFlowObserved", "peopleCount", 4321, 5)
    assert leaked(hub, COUNTER) == []
    # the admin may read it: the same rule is accepted and alerts (the rule itself works)
    assert hub.client.post(RULES, json=PEEK, headers=hub.admin).status_code == 201
    hub.write(COUNTER, "CrowdFlowObserved", "peopleCount", 1234, 10)
    assert leaked(hub, COUNTER) == [COUNTER]


def test_a_rule_watches_only_the_datasets_its_department_may_read(hub: Hub) -> None:
    traffic_key = traffic(hub)
    press = hub.key("press", ("alerts", "aggregate", "read"))
    assert hub.client.post(RULES, json=ROADS, headers=traffic_key).status_code == 201
    hub.write(TAXI, "TrafficFlowObserved", "averageVehicleSpeed", 12.5, 0)
    hub.write(LOOP, "TrafficFlowObserved", "averageVehicleSpeed", 33.0, 0)
    hub.write(COUNTER, "CrowdFlowObserved", "peopleCount", 77, 0)
    # Los-loop, which traffic reads, alerts; Shenzhen, which it may not, reaches no one
    assert leaked(hub, LOOP, TAXI) == [LOOP]
    assert {e["id"] for a in hub.alerts(press) for e in a["entities"]} == {LOOP}
    assert "12.5" not in hub.client.get("/polis/v1/alerts/feed").text
    # a rule over a type of a dataset it may not read watches nothing of it (queries are narrowed the same way)
    counters = {**PEEK, "id": "counters", "scope": {"type": "CrowdFlowObserved"}}
    assert hub.client.post(RULES, json=counters, headers=traffic_key).status_code == 201
    hub.write(COUNTER, "CrowdFlowObserved", "peopleCount", 4321, 5)
    assert leaked(hub, COUNTER) == []


def test_a_burst_rule_counts_only_events_its_department_may_read(hub: Hub) -> None:
    traffic_key = traffic(hub)
    assert hub.client.post(RULES, json=BURST, headers=traffic_key).status_code == 201
    for n in range(12):
        emergency_call(hub, n)
    assert hub.alerts(hub.admin) == []
    # the same rule, the admin's: the calls are a burst (so the one above was narrowed, not just quiet)
    assert hub.client.put(f"{RULES}/call-burst", json=BURST, headers=hub.admin).status_code == 200
    emergency_call(hub, 30)
    assert [a["entities"][0]["id"] for a in hub.alerts(hub.admin)] == ["ABINGTON"]


def test_after_a_restart_a_burst_rule_still_counts_only_what_its_department_may_read(settings: Settings) -> None:
    """Review of 2026-11-29: at start a burst rule primed its counts from stored events before access control
    existed, so events of a dataset whose grant had been revoked (stored after the revocation, too) were counted
    and published once another event arrived."""
    hub = Hub(settings, on_disk=True)
    try:
        key = hub.key("traffic", ("montgomery-911", "raw-pseudonymous", "read"), ("other", "aggregate", "read"),
                      ("alerts", "aggregate", "administer"), ("alerts", "aggregate", "read"))
        assert hub.client.post(RULES, json=BURST, headers=key).status_code == 201
        hub.platform.access.revoke_grant("traffic", "montgomery-911", "raw-pseudonymous", "read")
        for n in range(12):  # 911 calls after the revocation: traffic may not read them
            emergency_call(hub, n)
    finally:
        hub.close()
    hub = Hub(settings, on_disk=True)
    try:
        emergency_call(hub, 20, "urn:ngsi-ld:EmergencyCall:town-desk:c99")  # dataset `other`: traffic reads it
        assert hub.alerts(hub.admin) == []
        assert "ABINGTON" not in hub.client.get("/polis/v1/alerts/feed").text
    finally:
        hub.close()


def emergency_call(hub: Hub, minute: int, entity_id: str | None = None) -> None:
    """A 911 call in Abington at 08:<minute>, as the admin writes it."""
    at = f"2026-03-02T08:{minute:02d}:00Z"
    call = {"id": entity_id or f"{CALL}-{minute}", "type": "EmergencyCall",
            "township": {"type": "Property", "value": "ABINGTON"},
            "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": at}}}
    r = hub.client.post("/ngsi-ld/v1/entities", json=call, headers={**hub.admin, "Link": LINK_SDM})
    assert r.status_code == 201, r.text
    assert hub.platform.alerts.flush(10)


def test_a_revoked_grant_stops_the_rule_watching_that_dataset(hub: Hub) -> None:
    traffic_key = traffic(hub)
    assert hub.client.post(RULES, json=ROADS, headers=traffic_key).status_code == 201
    hub.platform.access.revoke_grant("traffic", "los-loop", "aggregate", "read")
    hub.write(LOOP, "TrafficFlowObserved", "averageVehicleSpeed", 33.0, 0)
    assert leaked(hub, LOOP) == []


def test_the_owner_is_recorded_by_the_hub_kept_over_a_restart_and_not_set_by_the_client(settings: Settings) -> None:
    first = Hub(settings)
    try:
        traffic_key = traffic(first)
        sent = {**ROADS, "owner": {"department": None, "datasets": None}}
        problem(first.client.post(RULES, json=sent, headers=traffic_key), 400, "BadRequestData", "owner")
        assert first.client.post(RULES, json=ROADS, headers=traffic_key).status_code == 201
        assert "owner" not in first.client.get(f"{RULES}/slow-roads", headers=traffic_key).json()
    finally:
        first.close()
    [item] = orjson.loads((settings.data_dir / "alerts" / "rules.json").read_bytes())
    assert item["owner"] == {"department": "traffic", "datasets": ["alerts", "los-loop"]}
    again = Hub(settings)  # the same data directory: rules.json, the access database
    try:
        again.write(TAXI, "TrafficFlowObserved", "averageVehicleSpeed", 12.5, 0)
        again.write(LOOP, "TrafficFlowObserved", "averageVehicleSpeed", 33.0, 0)
        assert leaked(again, LOOP, TAXI) == [LOOP]
    finally:
        again.close()


def _legacy_rule_book(settings: Settings) -> None:
    """rules.json as an older Polis wrote it: no owner."""
    folder = settings.data_dir / "alerts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.json").write_bytes(orjson.dumps([{"tenant": "", "rule": ROADS}]))


def test_a_rule_saved_by_an_older_polis_keeps_every_dataset_where_only_the_operator_declares_rules(
    settings: Settings,
) -> None:
    Hub(settings).close()  # the access database, bootstrapped: only admin administers alerts
    _legacy_rule_book(settings)
    hub = Hub(settings)
    try:
        hub.write(TAXI, "TrafficFlowObserved", "averageVehicleSpeed", 12.5, 0)
        assert leaked(hub, TAXI) == [TAXI]
    finally:
        hub.close()
    [item] = orjson.loads((settings.data_dir / "alerts" / "rules.json").read_bytes())
    assert item["owner"] == {"department": None, "datasets": None}


def test_a_rule_saved_by_an_older_polis_watches_only_what_every_possible_author_may_read(settings: Settings) -> None:
    first = Hub(settings)
    traffic(first)  # another department may declare rules: it could have saved this one
    first.close()
    _legacy_rule_book(settings)
    hub = Hub(settings)
    try:
        hub.write(TAXI, "TrafficFlowObserved", "averageVehicleSpeed", 12.5, 0)
        hub.write(LOOP, "TrafficFlowObserved", "averageVehicleSpeed", 33.0, 0)
        assert leaked(hub, LOOP, TAXI) == [LOOP]
        # the admin puts it back: the operator's now, over every dataset
        assert hub.client.put(f"{RULES}/slow-roads", json=ROADS, headers=hub.admin).status_code == 200
        hub.write(TAXI, "TrafficFlowObserved", "averageVehicleSpeed", 11.0, 5)
        assert TAXI in leaked(hub, TAXI)
    finally:
        hub.close()


def test_the_refusal_of_a_rule_over_peoples_records_names_the_dataset_not_a_record(hub: Hub) -> None:
    call = {"id": CALL, "type": "EmergencyCall",
            "name": {"type": "Property", "value": "CARDIAC ARREST at 12 Elm St (caller J. Doe)"},
            "priority": {"type": "Property", "value": 999, "observedAt": "2026-01-01T00:00:00Z"}}
    assert hub.client.post("/ngsi-ld/v1/entities", json=call, headers=hub.admin).status_code == 201
    rule = {"id": "peek", "kind": "threshold", "name": "peek", "scope": {"type": "EmergencyCall"},
            "attribute": "priority", "above": 1}
    r = hub.client.post(RULES, json=rule, headers=hub.admin)
    body = problem(r, 400, "BadRequestData", "people's records", "montgomery-911")
    assert "call-42" not in r.text and "EmergencyCall:" not in body["detail"]
    # the scope's idPattern is honoured: no record of the type matches it, so nothing is refused
    narrow = {**rule, "scope": {"type": "EmergencyCall", "idPattern": "^urn:ngsi-ld:EmergencyCall:other:.*"}}
    assert hub.client.post(RULES, json=narrow, headers=hub.admin).status_code == 201
    # a department that may not read the calls cannot watch them at all: nothing to refuse, nothing said
    traffic_key = traffic(hub)
    assert hub.client.post(RULES, json={**rule, "id": "peek-2"}, headers=traffic_key).status_code == 201
