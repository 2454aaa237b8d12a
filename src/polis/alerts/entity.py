"""An alert as an NGSI-LD `Alert` entity (Smart Data Models dataModel.Alert), in its short (compacted)
form with the Alert @context: what subscribers receive.

The schema's dates (dataModel.Alert 0.0.3, `Common-Alert`): `dateIssued`, "the date and time the item was
issued", is when the hub sent the alert (its first CAP message); `validFrom` / `validTo` bound its validity,
from the onset (the schema has no onset attribute of its own) to the CAP `expires` (or the all-clear).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from polis.alerts.model import AlertRecord, iso

ALERT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld"
ALERT_TYPE_IRI = "https://smartdatamodels.org/dataModel.Alert/Alert"
ALERT_ID_PREFIX = "urn:ngsi-ld:Alert:polis:"

# CAP severity -> Smart Data Models severity
SEVERITY = {"Extreme": "critical", "Severe": "high", "Moderate": "medium", "Minor": "low", "Unknown": "informational"}
# CAP category -> Smart Data Models category, where a rule does not name one
CATEGORY = {
    "Transport": "traffic",
    "Health": "health",
    "Env": "environment",
    "Met": "weather",
    "Geo": "naturalDisaster",
    "CBRNE": "security",
}


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


def _date(at: Any) -> dict[str, Any]:
    return _prop({"@type": "DateTime", "@value": iso(at)})


def issued(record: AlertRecord) -> datetime:
    """When the alert was first sent (wall clock: its first CAP message); the onset before any was sent."""
    return datetime.fromisoformat(record.messages[0].sent) if record.messages else record.onset


def alert_entity(record: AlertRecord, cap_url: str) -> dict[str, Any]:
    rule = record.rule
    last = record.messages[-1] if record.messages else None
    first_member = next(iter(record.members.values()), None)
    entity: dict[str, Any] = {
        "id": record.id,
        "type": "Alert",
        "name": _prop(str(rule.get("name", record.rule_id))),
        "alertSource": _prop(first_member.key if first_member else f"urn:polis:rule:{record.rule_id}"),
        "category": _prop(rule.get("alertCategory") or CATEGORY.get(str(rule.get("capCategory")), "security")),
        "severity": _prop(SEVERITY.get(str(rule.get("severity")), "informational")),
        "dateIssued": _date(issued(record)),
        "validFrom": _date(record.onset),
        "validTo": _date(record.effective if record.status == "cancelled" else record.expires),
        "description": _prop(record.description),
        "data": _prop(
            {
                "status": record.status,
                "ruleId": record.rule_id,
                "ruleKind": rule.get("kind"),
                "capMsgType": last.msg_type if last else "Alert",
                "capIdentifier": last.identifier if last else None,
                "capUrl": cap_url,
                "urgency": rule.get("urgency"),
                "certainty": rule.get("certainty"),
                "capSeverity": rule.get("severity"),
                "entities": sorted(record.members),
            }
        ),
    }
    if rule.get("subCategory"):
        entity["subCategory"] = _prop(rule["subCategory"])
    center = record.center()
    if center is not None:
        entity["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(center)}}
    return entity
