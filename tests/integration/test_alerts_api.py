"""Alert rules through the real API, with real NGSI-LD writes driving them: the lifecycle (raise once,
update, hysteresis, minimum duration, cancel, cooldown), the CAP messages and feed, the Alert entities,
and bad rules answered 400 with the field named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from polis.alerts.cap import CAP_NS, validate_cap
from polis.alerts.entity import ALERT_CONTEXT
from polis.platform import Platform
from tests.conftest import LINK_SDM

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SENSOR = "urn:ngsi-ld:CrowdFlowObserved:alerts-test-1"
LINK_ALERT = f'<{ALERT_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
CAP = {"cap": CAP_NS}

RULE: dict[str, Any] = {
    "id": "busy-corner",
    "kind": "threshold",
    "name": "Busy corner",
    "scope": {"type": "CrowdFlowObserved"},
    "attribute": "peopleCount",
    "above": 100,
    "hysteresis": 20,
    "minDurationS": 600,
    "cooldownS": 1800,
    "updateIntervalS": 300,
    "severity": "Moderate",
    "urgency": "Immediate",
    "certainty": "Observed",
    "capCategory": "Safety",
    "alertCategory": "security",
    "subCategory": "crowdRisk",
    "message": "{entityName}: {value:.0f} people, above {threshold:.0f}",
    "instruction": "Keep the crossing clear",
}


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def observe(client: TestClient, platform: Platform, minutes: float, count: int) -> None:
    body = {"peopleCount": {"type": "Property", "value": count, "observedAt": at(minutes)}}
    response = client.post(f"/ngsi-ld/v1/entities/{SENSOR}/attrs", json=body, headers={"Link": LINK_SDM})
    assert response.status_code == 204, response.text
    assert platform.alerts.flush(10)


def alerts(client: TestClient, status: str = "all") -> list[dict[str, Any]]:
    response = client.get("/polis/v1/alerts", params={"status": status})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()))  # oldest first


def make_sensor(client: TestClient) -> None:
    entity = {
        "id": SENSOR,
        "type": "CrowdFlowObserved",
        "name": {"type": "Property", "value": "Test corner"},
        "peopleCount": {"type": "Property", "value": 50, "observedAt": at(0)},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.9631, -37.8136]}},
    }
    response = client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM})
    assert response.status_code == 201, response.text


def test_threshold_lifecycle_through_the_api(client: TestClient, platform: Platform) -> None:
    created = client.post("/polis/v1/alerts/rules", json=RULE)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == "/polis/v1/alerts/rules/busy-corner"
    make_sensor(client)

    observe(client, platform, 5, 150)  # above, but not yet for 10 minutes
    observe(client, platform, 10, 160)
    assert alerts(client) == []
    observe(client, platform, 15, 170)  # 10 minutes above: raised
    [alert] = alerts(client)
    assert alert["status"] == "active" and [m["msgType"] for m in alert["messages"]] == ["Alert"]
    assert alert["description"] == "Test corner: 170 people, above 100"
    assert alert["onset"] == at(5)  # the condition started holding at 5 minutes, not when the alert was raised

    observe(client, platform, 17, 180)  # still above, within the update interval: no message
    assert len(alerts(client)[0]["messages"]) == 1
    observe(client, platform, 20, 175)  # 5 minutes after the Alert: one Update
    observe(client, platform, 22, 90)  # below 100 but inside the 20-wide hysteresis band: still active
    [alert] = alerts(client)
    assert alert["status"] == "active" and [m["msgType"] for m in alert["messages"]] == ["Alert", "Update"]

    observe(client, platform, 24, 70)  # cleared beyond the band: cancelled
    [alert] = alerts(client)
    assert alert["status"] == "cancelled" and alert["messages"][-1]["msgType"] == "Cancel"
    assert alerts(client, "active") == []

    observe(client, platform, 35, 200)  # flaps back within the 30-minute cooldown: nothing new
    observe(client, platform, 50, 210)
    assert len(alerts(client)) == 1
    observe(client, platform, 55, 220)  # cooldown over (cancelled at 24): pending again ...
    observe(client, platform, 65, 230)  # ... and 10 minutes later a second alert
    first, second = alerts(client)
    assert second["id"] != first["id"] and second["status"] == "active"
    assert second["id"].endswith(":2") and first["id"].endswith(":1")

    # Every message is valid CAP 1.2; Update and Cancel reference every earlier message of the incident.
    caps = platform.alerts.cap_messages("", first["id"])
    assert len(caps) == 3
    sent = []
    for number, xml in enumerate(caps, start=1):
        validate_cap(xml)
        doc = etree.fromstring(xml)
        assert doc.findtext("cap:msgType", namespaces=CAP) == ["Alert", "Update", "Cancel"][number - 1]
        references = doc.findtext("cap:references", namespaces=CAP)
        assert (references or "").split() == sent
        sent.append(",".join(doc.findtext(f"cap:{n}", namespaces=CAP) or "" for n in ("sender", "identifier", "sent")))
        circle = doc.findtext("cap:info/cap:area/cap:circle", namespaces=CAP)
        assert circle is not None and circle.startswith("-37.813600,144.963100 ")
    assert etree.fromstring(caps[-1]).findtext("cap:info/cap:responseType", namespaces=CAP) == "AllClear"
    # the all-clear says it ended, not the alarm's text again ("170 people, above 100"), and gives no instruction
    assert first["description"] == "Ended: Busy corner no longer holds at Test corner (peopleCount now 70)"
    cancel = etree.fromstring(caps[-1])
    assert cancel.findtext("cap:info/cap:description", namespaces=CAP) == first["description"]
    assert cancel.find("cap:info/cap:instruction", namespaces=CAP) is None
    assert etree.fromstring(caps[0]).findtext("cap:info/cap:instruction", namespaces=CAP) == "Keep the crossing clear"

    # Over HTTP: the latest CAP message, an earlier one, content negotiation and the feed of active alerts.
    latest = client.get(f"/polis/v1/alerts/{first['id']}/cap")
    assert latest.headers["content-type"].startswith("application/cap+xml") and latest.content == caps[-1]
    assert client.get(f"/polis/v1/alerts/{first['id']}/cap", params={"message": 1}).content == caps[0]
    negotiated = client.get(f"/polis/v1/alerts/{second['id']}", headers={"Accept": "application/cap+xml"})
    validate_cap(negotiated.content)
    feed = client.get("/polis/v1/alerts/feed")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    entries = etree.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")
    assert len(entries) == 1  # only the active alert
    inline = entries[0].find("{http://www.w3.org/2005/Atom}content/cap:alert", namespaces=CAP)
    assert inline is not None
    validate_cap(etree.tostring(inline))

    # The incident is an NGSI-LD Alert entity (Smart Data Models), and writing it raised nothing new.
    entity = client.get(
        f"/ngsi-ld/v1/entities/{first['id']}", params={"options": "keyValues"}, headers={"Link": LINK_ALERT}
    )
    assert entity.status_code == 200, entity.text
    body = entity.json()
    assert body["type"] == "Alert" and body["category"] == "security" and body["subCategory"] == "crowdRisk"
    assert body["severity"] == "medium" and body["alertSource"] == SENSOR
    assert body["validFrom"]["@value"] == at(5) and body["validTo"]["@value"] == at(24)  # onset .. end
    assert body["data"]["capMsgType"] == "Cancel" and body["location"]["coordinates"] == [144.9631, -37.8136]
    assert len(alerts(client)) == 2


def test_replacing_or_deleting_a_rule_cancels_its_open_alerts(client: TestClient, platform: Platform) -> None:
    assert client.put("/polis/v1/alerts/rules/busy-corner", json={**RULE, "minDurationS": 0}).status_code == 201
    make_sensor(client)
    observe(client, platform, 5, 150)
    assert len(alerts(client, "active")) == 1
    replaced = client.put("/polis/v1/alerts/rules/busy-corner", json={**RULE, "minDurationS": 0, "above": 500})
    assert replaced.status_code == 200 and replaced.json()["above"] == 500
    assert alerts(client, "active") == []
    assert alerts(client)[0]["messages"][-1]["msgType"] == "Cancel"
    observe(client, platform, 10, 600)
    assert len(alerts(client, "active")) == 1
    assert client.delete("/polis/v1/alerts/rules/busy-corner").status_code == 204
    assert alerts(client, "active") == []
    assert client.get("/polis/v1/alerts/rules/busy-corner").status_code == 404
    assert client.get("/polis/v1/alerts/rules").json() == []


def test_rules_survive_a_restart(tmp_path: Any) -> None:
    from polis.settings import Settings

    cheap = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}  # test hubs need no costly key hashing
    first = Platform(Settings(data_dir=tmp_path, **cheap))
    try:
        first.alerts.put_rule("", RULE)
    finally:
        first.close()
    second = Platform(Settings(data_dir=tmp_path, **cheap))
    try:
        assert [r.id for r in second.alerts.rules("")] == ["busy-corner"]
        assert second.alerts.index.watched  # installed, not only listed
    finally:
        second.close()


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"kind": "sometimes"}, "kind", "must be one of"),
        ({"above": None}, "above/below", "exactly one of"),
        ({"above": "lots"}, "above", "valid number"),
        ({"hysteresis": -1}, "hysteresis", "greater than or equal to 0"),
        ({"minDurationS": "ten"}, "minDurationS", "valid number"),
        ({"severity": "Catastrophic"}, "severity", "Extreme"),
        ({"scope": {"type": "Alert"}}, "scope.type", "cannot watch Alert"),
        ({"scope": {"type": "CrowdFlowObserved", "idPattern": "("}}, "scope.idPattern", "regular expression"),
        ({"scope": {"type": "X", "area": {"type": "Point", "coordinates": [1, 2]}}}, "scope.area", "radiusM"),
        ({"message": "{value} at {where}"}, "message", "unknown placeholder {where}"),
        ({"message": "{value:.1q}"}, "message", "format code"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"id": "has space"}, "id", "letters, digits"),
        ({"relativeTo": "freeFlow", "above": 30}, "relativeTo", "fraction"),
    ],
)
def test_bad_rules_get_400_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str, reason: str
) -> None:
    response = client.post("/polis/v1/alerts/rules", json={**RULE, **change})
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"].endswith("BadRequestData")
    assert problem["field"] == field and reason in problem["reason"], problem
    assert f"'{field}'" in problem["detail"]
    assert client.get("/polis/v1/alerts/rules").json() == []  # nothing stored


def test_other_rule_errors(client: TestClient) -> None:
    assert client.post("/polis/v1/alerts/rules", content=b"{not json").status_code == 400
    assert client.post("/polis/v1/alerts/rules", json=[RULE]).status_code == 400
    assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
    duplicate = client.post("/polis/v1/alerts/rules", json=RULE)
    assert duplicate.status_code == 409 and duplicate.json()["type"].endswith("AlreadyExists")
    mismatch = client.put("/polis/v1/alerts/rules/other", json=RULE)
    assert mismatch.status_code == 400 and mismatch.json()["field"] == "id"
    assert client.get("/polis/v1/alerts/urn:ngsi-ld:Alert:polis:none:1").status_code == 404
    assert client.delete("/polis/v1/alerts/rules/none").status_code == 404
    without_id = client.post("/polis/v1/alerts/rules", json={k: v for k, v in RULE.items() if k != "id"})
    assert without_id.status_code == 201 and without_id.json()["id"].startswith("rule-")


def test_cli_loads_a_rules_file_and_refuses_a_bad_one(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from polis.cli import app

    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"rules": [RULE]}))
    runner = CliRunner()
    done = runner.invoke(app, ["alerts", "load", str(good), "--data-dir", str(tmp_path / "hub")])
    assert done.exit_code == 0, done.output
    assert "loaded 1 alert rules" in done.output
    listed = runner.invoke(app, ["alerts", "rules", "--data-dir", str(tmp_path / "hub")])
    assert "busy-corner" in listed.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**RULE, "hysteresis": -1}]))
    refused = runner.invoke(app, ["alerts", "load", str(bad), "--data-dir", str(tmp_path / "hub")])
    assert refused.exit_code == 2 and "rule field 'hysteresis'" in " ".join(refused.output.split())
    for tenant, why in (("a/b", "must be 1-64"), ("00-1A-2B-3C-4D-5E", "device-identifier")):
        refused = runner.invoke(app, ["alerts", "load", str(good), "--data-dir", str(tmp_path / "hub"),
                                      "--tenant", tenant])
        assert refused.exit_code == 2 and why in refused.output, refused.output


def test_yaml_rules_and_area_scopes(client: TestClient, platform: Platform, tmp_path: Any) -> None:
    from polis.alerts.rules import load_rules_file

    here = {"type": "Point", "coordinates": [144.9631, -37.8136], "radiusM": 200}
    far = {"type": "Polygon", "coordinates": [[[145.5, -38.0], [145.6, -38.0], [145.6, -37.9], [145.5, -38.0]]]}
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - {id: near, kind: threshold, name: Near, attribute: peopleCount, above: 100,\n"
        f"     scope: {{type: CrowdFlowObserved, area: {here}}}}}\n"
        "  - {id: far, kind: threshold, name: Far, attribute: peopleCount, above: 100,\n"
        f"     scope: {{type: CrowdFlowObserved, area: {far}}}}}\n".replace("'", '"')
    )
    rules = load_rules_file(tmp_path / "rules.yaml")
    assert [r.id for r in rules] == ["near", "far"]
    for rule in rules:
        platform.alerts.put_rule("", rule.model_dump(by_alias=True, exclude_none=True, mode="json"))
    make_sensor(client)
    observe(client, platform, 5, 500)
    assert [a["ruleId"] for a in alerts(client)] == ["near"]  # the sensor is inside one area only
    [alert] = alerts(client)
    xml = platform.alerts.cap_messages("", alert["id"])[0]
    circle = etree.fromstring(xml).findtext("cap:info/cap:area/cap:circle", namespaces=CAP)
    assert circle == "-37.813600,144.963100 0.500"  # the sensor, with the rule's default 500 m radius


def test_backfill_runs_once_per_rule_definition(tmp_path: Any) -> None:
    from polis.settings import Settings
    from tests.conftest import SDM_TRANSPORT

    cheap = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
    rule = {**RULE, "minDurationS": 0, "backfill": {"from": at(0), "to": at(60)}}
    history = {
        "id": SENSOR,
        "type": "CrowdFlowObserved",
        "peopleCount": [
            {"type": "Property", "value": v, "observedAt": at(m)} for m, v in ((5, 50), (10, 150), (15, 160), (20, 40))
        ],
    }
    first = Platform(Settings(data_dir=tmp_path, **cheap))
    try:
        first.temporal.create_or_add("", history, first.contexts.resolve(SDM_TRANSPORT))
        first.alerts.put_rule("", rule)
        assert first.alerts.flush(30)
        [alert] = first.alerts.alerts("", active_only=False)
        assert [m.msg_type for m in alert.messages] == ["Alert", "Update", "Cancel"] and alert.onset.minute == 10
    finally:
        first.close()
    second = Platform(Settings(data_dir=tmp_path, **cheap))
    try:
        assert second.alerts.flush(30)
        assert len(second.alerts.alerts("", active_only=False)) == 1  # not raised again by the restart
        second.alerts.put_rule("", {**rule, "above": 140})  # a new definition runs its backfill again
        assert second.alerts.flush(30)
        assert len(second.alerts.alerts("", active_only=False)) == 2
    finally:
        second.close()
