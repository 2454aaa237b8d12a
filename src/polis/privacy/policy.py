"""The declared quasi-identifier policy: what the gate does with each field of a person-level record.

Declared as data (so PRIVACY.md, the tests and the gate read the same table): identifiers are replaced
by daily pseudonyms, quasi-identifiers (birth year, gender, user type) are dropped, exact timestamps are
generalised to the hour, places are kept as stations (public infrastructure) and H3 cells. Anything a
source sends that the policy does not name is dropped: a new column in a feed cannot slip through.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    PSEUDONYMISE = "pseudonymise"
    DROP = "drop"
    GENERALISE = "generalise"
    KEEP = "keep"


@dataclass(frozen=True, slots=True)
class FieldRule:
    field: str
    action: Action
    why: str


TRIP_POLICY: tuple[FieldRule, ...] = (
    FieldRule("bike_id", Action.PSEUDONYMISE, "HMAC-SHA256 under a daily key: unlinkable across days"),
    FieldRule("device_id", Action.PSEUDONYMISE, "HMAC-SHA256 under a daily key: unlinkable across days"),
    FieldRule("card_id", Action.PSEUDONYMISE, "HMAC-SHA256 under a daily key: unlinkable across days"),
    FieldRule("person_id", Action.PSEUDONYMISE, "HMAC-SHA256 under a daily key: unlinkable across days"),
    FieldRule("birth_year", Action.DROP, "with gender and a home station, singles out most riders"),
    FieldRule("gender", Action.DROP, "quasi-identifier"),
    FieldRule("user_type", Action.DROP, "quasi-identifier (subscriber or day pass); no product needs it"),
    FieldRule("trip_duration", Action.DROP, "exact seconds fingerprint a trip; start and end hours remain"),
    FieldRule("start_time", Action.GENERALISE, "to the hour"),
    FieldRule("end_time", Action.GENERALISE, "to the hour"),
    FieldRule("ping_time", Action.GENERALISE, "to the hour"),
    FieldRule("start_station", Action.KEEP, "public docking station (infrastructure, not a person)"),
    FieldRule("end_station", Action.KEEP, "public docking station (infrastructure, not a person)"),
    FieldRule("start_place", Action.GENERALISE, "to an H3 cell (resolution setting, default 8)"),
    FieldRule("end_place", Action.GENERALISE, "to an H3 cell (resolution setting, default 8)"),
    FieldRule("ping_place", Action.GENERALISE, "to an H3 cell (resolution setting, default 8)"),
)

RULES_BY_FIELD = {rule.field: rule for rule in TRIP_POLICY}


def action_for(field: str) -> Action:
    """What the policy does with `field`; a field it does not name is dropped."""
    rule = RULES_BY_FIELD.get(field)
    return rule.action if rule is not None else Action.DROP
