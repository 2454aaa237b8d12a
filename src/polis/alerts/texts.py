"""What an alert says: its headline, its description from the rule's message template, and the all-clear.

Numbers are rendered for people: a count of people or events in whole units, any other value with a whole
number shown whole and anything else with DECIMALS decimals, so a crowd reads "83 people", not the
82.99999999999997 that float arithmetic leaves. A template's own format spec (`{value:.1f}`) still rules.
"""

from __future__ import annotations

import math
from typing import Any

from polis.alerts.model import AlertRecord, Member, iso
from polis.alerts.rules import template_problem

DECIMALS = 2  # enough for a speed (52.35 mph) or a fraction (0.43); more would only show the sensor's noise
SIGNIFICANT = 9  # digits a reading is compared on: 82.99999999999997 is 83 (float noise lies ~15 digits down)


class Shown(float):
    """A value in a message: with an empty format spec (`{value}`) rendered as `shown` says, otherwise as the
    float it is."""

    count: bool = False

    def __format__(self, spec: str) -> str:
        return float.__format__(self, spec) if spec else shown(float(self), count=self.count)


class Count(Shown):
    """A count: whole units, and an integer format spec (`{count:d}`) works as it does on an int."""

    count = True

    def __format__(self, spec: str) -> str:
        if spec and spec[-1] in "bcdnoxX" and math.isfinite(self):
            return format(round(self), spec)
        return super().__format__(spec)


def shown(value: float, *, count: bool = False) -> str:
    """A number as a person reads it: counts in whole units; other values whole when they are whole numbers
    (to float noise), else with DECIMALS decimals."""
    if not math.isfinite(value):
        return str(value)
    if count:
        return str(round(value))
    if float(f"{value:.{SIGNIFICANT}g}").is_integer():
        return str(round(value))
    return f"{value:.{DECIMALS}f}"


def _counts_people(rule: dict[str, Any]) -> bool:
    """Whether a rule's value is a count: a crowd detector's people, a burst's events."""
    return rule.get("kind") == "burst" or rule.get("detector") == "crowd-gathering"


def alert_texts(record: AlertRecord, member: Member, suppression_k: int) -> tuple[str, str]:
    """(headline, description) of an alert as `member` last saw it."""
    rule = record.rule
    members = list(record.members.values())
    names = ", ".join(m.name for m in members[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
    headline = f"{rule.get('name')}: {names}"[:160]
    if isinstance(member.value, float) and math.isnan(member.value):  # a count below k: never published
        hidden = f"now under {suppression_k} events (smaller counts are unpublished)"
        return headline, f"{rule.get('name')}: {member.name}: {hidden}"
    details = member.details
    counts = _counts_people(rule)
    value_type = Count if counts else Shown
    # The crowd's expected count is people too; a burst's expected count is a rate (0.37 events): decimals.
    expected_type = Count if rule.get("detector") == "crowd-gathering" else Shown
    fields: dict[str, object] = {
        "rule": rule.get("name"),
        "entity": member.key,
        "entityName": member.name,
        "entities": len(members),
        "attribute": rule.get("attribute") or rule.get("groupBy") or "",
        "value": value_type(member.value),
        "threshold": Shown(member.threshold),
        "expected": expected_type(float(details.get("expected", math.nan))),
        "score": Shown(float(details.get("score", math.nan))),
        "count": Count(float(details.get("count", member.value))),
        "group": member.key,
        "observedAt": iso(member.observed_at),
        "crossingAt": str(details.get("crossingAt", "")),
    }
    message = str(rule.get("message", ""))
    try:
        if template_problem(message):  # a snapshot kept from before the template checks (huge widths)
            raise ValueError(message)
        description = message.format(**fields)
    except (ValueError, KeyError, IndexError):  # validated on submission; a bad value must not lose the alert
        description = f"{rule.get('name')}: {member.name} value {shown(member.value, count=counts)}"
    return headline, description


def cleared_text(record: AlertRecord, member: Member) -> str:
    """What an all-clear says: the condition ended, and the value it ended on (a count below k stays
    unpublished; the time is the message's effective time, coarse for people's events)."""
    name = record.rule.get("name")
    if isinstance(member.value, float) and math.isnan(member.value):
        return f"Ended: {name} no longer holds at {member.name}"
    attribute = record.rule.get("attribute") or record.rule.get("groupBy") or "value"
    now = shown(member.value, count=_counts_people(record.rule))
    return f"Ended: {name} no longer holds at {member.name} ({attribute} now {now})"
