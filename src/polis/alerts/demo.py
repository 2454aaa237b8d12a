"""The demo city's alert rules: congestion, incidents and forecast jams on the Los-loop freeways (live
as the recording replays) and crowd gatherings on the Melbourne counters (the stored summer of
2021-22 run through the detector at start: New Year's Eve, Moomba, the Grand Prix)."""

from __future__ import annotations

from typing import Any

from polis.alerts.rulebook import RuleBook
from polis.alerts.rules import parse_rule
from polis.settings import Settings

LOS_LOOP = {"type": "TrafficFlowObserved", "idPattern": "^urn:ngsi-ld:TrafficFlowObserved:los-loop:"}

DEMO_RULES: list[dict[str, Any]] = [
    {
        "id": "demo-los-congestion",
        "kind": "threshold",
        "name": "Freeway congestion",
        "scope": LOS_LOOP,
        "attribute": "averageVehicleSpeed",
        "below": 0.5,
        "relativeTo": "freeFlow",
        "hysteresis": 0.15,
        "minDurationS": 600,
        "cooldownS": 1800,
        "updateIntervalS": 900,
        "groupWithinM": 1500,
        "severity": "Minor",
        "urgency": "Immediate",
        "certainty": "Observed",
        "capCategory": "Transport",
        "alertCategory": "traffic",
        "subCategory": "trafficJam",
        "message": "{entityName}: {value:.0f} mph, under half its free-flow {expected:.0f} mph ({entities} sensors)",
        "instruction": "Expect delays; use alternative routes.",
    },
    {
        "id": "demo-los-incident",
        "kind": "anomaly",
        "name": "Sudden speed drop (possible incident)",
        "scope": LOS_LOOP,
        "attribute": "averageVehicleSpeed",
        "detector": "speed-drop",
        "level": 0.4,
        "hysteresis": 0.2,
        "cooldownS": 1800,
        "severity": "Moderate",
        "urgency": "Immediate",
        "certainty": "Possible",
        "capCategory": "Transport",
        "alertCategory": "traffic",
        "subCategory": "carAccident",
        "message": "{entityName}: speed fell to {value:.0f} mph while its neighbours kept moving",
    },
    {
        "id": "demo-los-jam-forecast",
        "kind": "forecast",
        "name": "Congestion forecast",
        "scope": LOS_LOOP,
        "attribute": "averageVehicleSpeed",
        "below": 0.5,
        "relativeTo": "freeFlow",
        "hysteresis": 0.1,
        "withinMinutes": 30,
        "cooldownS": 1800,
        "severity": "Minor",
        "urgency": "Expected",
        "certainty": "Likely",
        "capCategory": "Transport",
        "alertCategory": "traffic",
        "subCategory": "trafficJam",
        "message": "{entityName}: {value:.0f} mph forecast at {crossingAt}",
    },
    {
        "id": "demo-melbourne-crowding",
        "kind": "anomaly",
        "name": "Crowd gathering",
        "scope": {"type": "CrowdFlowObserved", "idPattern": "^urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:"},
        "attribute": "peopleCount",
        "detector": "crowd-gathering",
        # the floor of the adaptive level (city-wide, 1.5 alarm hours per observed sensor-week over the previous
        # 8 weeks): the lowest floor with <= 1 alert raised (neighbours grouped) per sensor-week in 2021; 2022:
        # 90.8 % of 2x-for-2h gatherings, 0.67 alerts raised, 0.85 per-sensor alarms per sensor-week, raised only
        # above the expected count (BENCHMARKS.md, 2026-11-29)
        "level": 2.75,
        "hysteresis": 1,
        "timezone": "Australia/Melbourne",
        "groupWithinM": 400,
        "cooldownS": 7200,
        "updateIntervalS": 3600,
        "validityS": 7200,  # hourly counts, an Update at most hourly: each message holds until the one after next
        "severity": "Moderate",
        "urgency": "Immediate",
        "certainty": "Observed",
        "capCategory": "Safety",
        "alertCategory": "security",
        "subCategory": "crowdRisk",
        "message": "{entityName}: {value:.0f} people this hour, about {expected:.0f} expected ({entities} counters)",
        # The demo's Melbourne counts are history: New Year's Eve 2021 to the Grand Prix (10 April 2022).
        "backfill": {"from": "2021-12-30T13:00:00Z", "to": "2022-04-11T14:00:00Z"},
    },
]


def install_demo_rules(settings: Settings, tenant: str = "") -> list[str]:
    """Write the demo rules into the hub's rule book (replacing same-id rules); the hub installs them when
    it starts. Idempotent. Returns the rule ids."""
    book = RuleBook(settings.data_dir / "alerts" / "rules.json")
    return [str(book.put(tenant, parse_rule(rule)).id) for rule in DEMO_RULES]
