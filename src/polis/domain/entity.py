"""The hub's internal entity shape: NGSI-LD normalized form with expanded names.

An `Entity` is a plain dict, kept plain on purpose (it is parsed from and written to JSON on every
request, and typed wrappers cost more than they give on the hot path):

    {"id": "urn:ngsi-ld:TrafficFlowObserved:la-773869",
     "type": ["https://smartdatamodels.org/dataModel.Transportation/TrafficFlowObserved"],
     "createdAt": "2026-11-26T10:00:00.000000Z", "modifiedAt": "...",        # system attributes
     "scope": ["/LA/Hollywood"],                                              # optional
     "https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed": [   # attribute IRI
         {"type": "Property", "value": 61.3, "observedAt": "2012-03-01T00:00:00Z",
          "unitCode": "KMH", "createdAt": "...", "modifiedAt": "...",
          "https://smartdatamodels.org/accuracy": {"type": "Property", "value": 0.9}}   # sub-attribute
     ]}

- Entity member names (`id`, `type`, `scope`, `createdAt`, `modifiedAt`) and attribute member names
  (`RESERVED_ATTRIBUTE_MEMBERS`) are the core context's protected terms and stay short.
- Every other key of the entity is an attribute's expanded IRI and holds a *list* of instances, one per
  `datasetId` (the default instance has no `datasetId`).
- Inside an instance, every key not in `RESERVED_ATTRIBUTE_MEMBERS` is a sub-attribute's expanded IRI and
  holds one instance dict (sub-attributes are not multi-instance here).
- `type` is always a list of expanded type IRIs.
- Timestamps are ISO 8601 strings in UTC with a `Z` suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

Entity = dict[str, Any]
Instance = dict[str, Any]

ENTITY_MEMBERS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "@context"})
SYSTEM_MEMBERS = frozenset({"createdAt", "modifiedAt", "deletedAt"})
RESERVED_ATTRIBUTE_MEMBERS = frozenset(
    {
        "type",
        "value",
        "object",
        "objectType",
        "languageMap",
        "vocab",
        "json",
        "valueList",
        "objectList",
        "observedAt",
        "unitCode",
        "datasetId",
        "createdAt",
        "modifiedAt",
        "deletedAt",
        "instanceId",
        "lang",
        "previousValue",
        "previousObject",
        "previousLanguageMap",
    }
)

# The attribute kinds and the member that carries each kind's value.
VALUE_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
}
ATTRIBUTE_KINDS = frozenset(VALUE_MEMBER)

NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
LOCATION = NGSI_LD + "location"
OBSERVATION_SPACE = NGSI_LD + "observationSpace"
OPERATION_SPACE = NGSI_LD + "operationSpace"


def attribute_names(entity: Entity) -> list[str]:
    """The expanded names of an entity's attributes, in document order."""
    return [k for k in entity if k not in ENTITY_MEMBERS]


def sub_attribute_names(instance: Instance) -> list[str]:
    return [k for k in instance if k not in RESERVED_ATTRIBUTE_MEMBERS]


# Integers a double holds exactly: a store keeps a reading as a double only within this range, so 2**53 + 1
# comes back as written (beyond it as a document), not rounded.
EXACT_INT_LIMIT = 2**53


def is_plain_number(instance: Instance, members: frozenset[str]) -> bool:
    """A numeric Property (a float, or an int a double holds exactly; not a bool) with no members but
    `members`: a reading that a store can keep as a number instead of a document."""
    value: Any = instance.get("value")
    kind = type(value)
    if kind is not float and (kind is not int or not -EXACT_INT_LIMIT <= value <= EXACT_INT_LIMIT):
        return False
    return instance.get("type", "Property") == "Property" and instance.keys() <= members


def instance_value(instance: Instance) -> Any:
    """The value an attribute instance carries, whatever its kind."""
    return instance.get(VALUE_MEMBER.get(instance.get("type", "Property"), "value"))


def same_instances(a: Any, b: Any) -> bool:
    """Whether two attributes hold equal instances, apart from their createdAt and modifiedAt (a write that
    repeats a reading changes nothing else). Runs once per attribute on every update, so both sides get the
    two timestamps blanked in a shallow copy and C compares the rest."""
    if type(a) is not list or type(b) is not list:
        return bool(a == b)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if type(x) is dict and type(y) is dict:
            # A new reading differs in its value: say so before copying anything.
            if x.get("value") != y.get("value") or {**x, **_BLANK} != {**y, **_BLANK}:
                return False
        elif x != y:
            return False
    return True


_BLANK = {"createdAt": None, "modifiedAt": None}


@dataclass(frozen=True, slots=True)
class HistoryInstance:
    """One temporal instance of one attribute: what `/temporal/entities` returns and stores."""

    entity_id: str
    attribute: str  # expanded IRI
    observed_at: datetime  # tz-aware UTC
    instance: Instance  # the whole instance as written (expanded sub-attribute names)
    dataset_id: str | None = None
