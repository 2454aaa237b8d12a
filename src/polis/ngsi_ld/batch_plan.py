"""Batch items that share a shape, expanded by a plan made once per shape.

A sensor gateway's batch is a thousand entities of one shape: one type, the same attributes, each a
Property with a number and `observedAt`, a Point `location`. The generic reader (`entity_codec`) walks every
item key by key and the store then walks every document again for its `attr_index` rows: at 20,000 entity
updates a second there is no time for either. For items of a shape this module knows (`signature`), a
`BatchPlan` is made once per (shape, context); it expands each item with a few lookups and builds the
`attr_index` rows of the whole group as columns (`IndexColumns`), which the store inserts as they are.

The shapes are narrow on purpose: an entity with `id`, one `type` string, optionally `@context`, and
attributes in normalized form:
- a Property whose `value` is a number, a string or a boolean;
- a Relationship whose `object` is one URI;
- a GeoProperty whose `value` is a GeoJSON Point;
each with any of `observedAt`, `unitCode` (not on a Relationship) and `datasetId`. Anything else, and
any item whose values fail a check, goes through the generic reader, which also writes the error message.
So does an item holding the null marker (urn:ngsi-ld:null) as a value or object: what it means depends on
the operation (left out, or deleting), which the generic reader leaves to the caller (`BatchExpansion.nulls`).

The answer is the generic path's: every plan checks itself against it on the first item it is made
from (and is dropped if they differ), and tests/unit/test_batch_plan.py compares the two on many bodies.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from polis.domain.entity import ENTITY_MEMBERS, Entity, Instance
from polis.domain.errors import BadRequestData, NgsiError, PersonalDataRefused
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entity_codec import (
    MAX_ID_LENGTH,
    NULL_MARKER,
    check_attribute_name,
    expand_entity,
    expand_types,
    is_null,
    is_uri,
    normalize_datetime,
)
from polis.privacy.refusal import (
    find_identifying,
    held_to_stored_shapes,
    names_a_person,
    rule_for_field_value,
    rule_for_value,
)
from polis.store.attr_index import KEY_SEP, MEMBER_SEP, IndexColumns, PlanShape, attr_index_rows

log = logging.getLogger(__name__)

Signature = tuple[Any, ...]

# The members each kind may carry here (raw order is kept); anything else means the generic reader.
_MEMBERS = {
    "Property": frozenset({"type", "value", "observedAt", "unitCode", "datasetId"}),
    "GeoProperty": frozenset({"type", "value", "observedAt", "unitCode", "datasetId"}),
    "Relationship": frozenset({"type", "object", "observedAt", "datasetId"}),
}
_VALUE_KEY = {"Property": "value", "GeoProperty": "value", "Relationship": "object"}
_PROPERTY_VALUES = frozenset({str, int, float, bool})
_FINITE_INT = 2**1000  # what attr_index takes as a plain number (see attr_index._scalar_row)
_PLANS_PER_CONTEXT = 256
_UNKNOWN = object()


def signature(item: Any) -> Signature | None:
    """The item's shape when a plan can expand it: its keys in order and, per attribute, its kind, member
    keys and value type (the entity type's name too, which the plan expands once); else None."""
    if type(item) is not dict:
        return None
    parts: list[Any] = []
    for key, raw in item.items():
        if key == "id" or key == "@context":
            parts.append(key)
        elif key == "type":
            if type(raw) is not str:
                return None
            parts.append(("@type", raw))
        elif key in ENTITY_MEMBERS or type(raw) is not dict:
            return None
        else:
            kind = raw.get("type")
            if kind == "Property":
                parts.append((key, kind, tuple(raw), type(raw.get("value"))))
            elif kind == "Relationship":
                parts.append((key, kind, tuple(raw), type(raw.get("object"))))
            elif kind == "GeoProperty":
                point = raw.get("value")
                if type(point) is not dict or len(point) != 2 or point.get("type") != "Point":
                    return None
                coordinates = point.get("coordinates")
                if type(coordinates) is not list:
                    return None
                parts.append((key, kind, tuple(raw), len(coordinates)))
            else:
                return None
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class _Attribute:
    name: str  # as sent
    iri: str
    kind: str  # Property | Relationship | GeoProperty
    members: tuple[str, ...]  # observedAt / unitCode / datasetId, in the order sent
    value_type: type | None  # Property: the value's Python type
    positions: int  # GeoProperty: 2 or 3 coordinates


class BatchPlan:
    """How to expand, and index, items of one signature under one context."""

    def __init__(self, sig: Signature, terms: TermMap) -> None:
        """Raises BadRequestData (or ValueError) where the shape is one the generic reader must judge."""
        if "id" not in sig:
            raise ValueError("no id")
        types: list[str] | None = None
        attributes: list[_Attribute] = []
        seen: set[str] = set()
        for part in sig:
            if part == "id" or part == "@context":
                continue
            if part[0] == "@type":
                types = expand_types(part[1], terms)
                continue
            name, kind, keys, detail = part
            check_attribute_name(name)
            iri = terms.expand(name)
            if iri in seen or iri in ENTITY_MEMBERS:
                raise ValueError("duplicate attribute")
            seen.add(iri)
            if not set(keys) <= _MEMBERS[kind] or _VALUE_KEY[kind] not in keys:
                raise ValueError("members the plan does not cover")
            if kind == "Property" and detail not in _PROPERTY_VALUES:
                raise ValueError("a value the plan does not cover")
            if kind == "Relationship" and detail is not str:
                raise ValueError("an object the plan does not cover")
            if kind == "GeoProperty" and detail not in (2, 3):
                raise ValueError("not a position")
            members = tuple(k for k in keys if k not in ("type", "value", "object"))
            value_type = detail if kind == "Property" else None
            positions = detail if kind == "GeoProperty" else 0
            attributes.append(_Attribute(name, iri, kind, members, value_type, positions))
        if types is None:
            raise ValueError("no type")
        self.types = types
        self.attributes = tuple(attributes)
        self.shape = PlanShape(
            tuple((a.iri, a.kind) for a in attributes), tuple(a.iri for a in attributes if a.kind == "GeoProperty")
        )

    # -- one item ---------------------------------------------------------------------------------

    def expand(self, item: dict[str, Any], now: str) -> Entity | None:
        """The item as the generic reader expands it, or None where a check fails (the reader then says why)."""
        eid = item["id"]
        if type(eid) is not str or len(eid) > MAX_ID_LENGTH or not is_uri(eid):
            return None
        entity: Entity = {"id": eid, "type": list(self.types), "createdAt": now, "modifiedAt": now}
        for attribute in self.attributes:
            instance = _instance(attribute, item[attribute.name], now)
            if instance is None:
                return None
            entity[attribute.iri] = [instance]
        return entity

    def identifying(self, item: dict[str, Any]) -> bool:
        """Whether a string the privacy gate reads (id, string values, datasetId, unitCode, object) may identify
        someone; the field names and the type were checked when the plan was made."""
        if rule_for_value(item["id"]) is not None or names_a_person(item["id"]):  # a person record's id too
            return True
        if held_to_stored_shapes(item["id"]):  # an epidemic entity: only its module's shapes (the full check)
            return True
        for attribute in self.attributes:
            raw = item[attribute.name]
            value = raw.get("object" if attribute.kind == "Relationship" else "value")
            # by its field too: an embedding packed into base64 is refused only under an identity-feature name
            if type(value) is str and rule_for_field_value(attribute.iri, value) is not None:
                return True
            dataset = raw.get("datasetId")
            if dataset is not None and rule_for_value(dataset) is not None:
                return True
            unit = raw.get("unitCode")
            if unit is not None and rule_for_value(unit) is not None:
                return True
        return False

    # -- a group of items -------------------------------------------------------------------------

    def index_columns(self, entities: Sequence[Entity], now: str) -> IndexColumns:
        """The `attr_index` rows of entities this plan expanded (same rows as `attr_index_rows`, by column)."""
        n = len(entities)
        out = IndexColumns(list(entities), [self.shape] * n)
        everyone = list(range(n))
        for attribute in self.attributes:
            iri = attribute.iri
            instances = [e[iri][0] for e in entities]
            if attribute.kind == "GeoProperty":
                out.add(everyone, iri, nums=[None] * n)  # the geometry itself compares with nothing
                out.add(everyone, iri + KEY_SEP + "type", txts=["Point"] * n)
                for k in range(attribute.positions):
                    positions = [float(i["value"]["coordinates"][k]) for i in instances]
                    out.add(everyone, iri + KEY_SEP + "coordinates", nums=positions)
            elif attribute.kind == "Relationship":
                out.add(everyone, iri, txts=[i["object"] for i in instances])
            elif attribute.value_type is str:
                out.add(everyone, iri, txts=[i["value"] for i in instances])
            elif attribute.value_type is bool:
                out.add(everyone, iri, bools=[i["value"] for i in instances])
            elif attribute.value_type is int:  # as doubles, like the index column (Arrow refuses ints over 2^53)
                out.add(everyone, iri, nums=[float(i["value"]) for i in instances])
            else:
                out.add(everyone, iri, nums=[i["value"] for i in instances])
            for member in attribute.members:
                out.add(everyone, iri + MEMBER_SEP + member, txts=[i[member] for i in instances])
            out.add(everyone, iri + MEMBER_SEP + "createdAt", txts=[now] * n)
            out.add(everyone, iri + MEMBER_SEP + "modifiedAt", txts=[now] * n)
        return out

    def agrees(self, item: dict[str, Any], terms: TermMap, now: str) -> bool | None:
        """Whether this plan expands and indexes `item` exactly as the generic path does; None when the item
        cannot tell (the generic reader refuses it)."""
        try:
            generic = expand_entity(item, terms, now, keep_nulls=True)
        except NgsiError:
            return None
        if _holds_null(generic):
            return None  # `expand` passes such an item to the generic path: an item without the marker must decide
        if find_identifying(generic) is not None:
            return None  # the gate objects to this item (by a name or a value): a harmless one must decide
        mine = self.expand(item, now)
        if mine is None or mine != generic:
            return False
        rows = sorted(attr_index_rows(generic, 0), key=_row_key)
        return rows == sorted(self.index_columns([mine], now).rows(), key=_row_key)


def _row_key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(repr(v) for v in row)


def _holds_null(entity: Entity) -> bool:
    """Whether an entity expanded with `keep_nulls` has an instance that is the null marker."""
    return any(is_null(i) for k, v in entity.items() if k not in ENTITY_MEMBERS for i in v)


def _instance(attribute: _Attribute, raw: dict[str, Any], now: str) -> Instance | None:
    kind = attribute.kind
    if kind == "Relationship":
        target = raw["object"]
        if target == NULL_MARKER or not is_uri(target):  # the marker is a URI: the generic path's (see above)
            return None
        instance: Instance = {"type": kind, "object": target}
    else:
        value = raw["value"]
        if kind == "GeoProperty":
            if not _is_position(value.get("coordinates"), attribute.positions):
                return None
        elif not _plain(value, attribute.value_type):
            return None
        instance = {"type": kind, "value": value}
    for member in attribute.members:
        given = raw[member]
        if member == "observedAt":
            try:
                instance[member] = normalize_datetime(given, "observedAt")
            except BadRequestData:
                return None
        elif member == "unitCode":
            if type(given) is not str or not given:
                return None
            instance[member] = given
        else:  # datasetId
            if not is_uri(given):
                return None
            instance[member] = given
    instance["createdAt"] = now
    instance["modifiedAt"] = now
    return instance


def _plain(value: Any, expected: type | None) -> bool:
    """A Property value of the plan's type that attr_index stores as it is (a finite number, not a huge int)."""
    kind = type(value)
    if kind is not expected:
        return False
    if kind is float:
        return value - value == 0.0  # inf - inf and nan - nan are nan (JSON has neither, but still)
    if kind is int:
        return -_FINITE_INT < value < _FINITE_INT
    return value != NULL_MARKER  # a str or a bool; the marker is the generic path's (see the module's notes)


def _is_position(position: Any, size: int) -> bool:
    """What geoquery.validate_geometry accepts as a Point's coordinates."""
    if type(position) is not list or len(position) != size:
        return False
    for number in position:
        kind = type(number)
        if not (kind is float or kind is int) or not math.isfinite(number):
            return False
    return -180.0 <= position[0] <= 180.0 and -90.0 <= position[1] <= 90.0


# -- the batch ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchExpansion:
    """Per item, its entity or the error that refused it; the plans' index rows; and the entities the
    privacy gate has already cleared (the generic gate still reads every other one)."""

    entities: list[Entity | NgsiError] = field(default_factory=list)
    index: IndexColumns | None = None
    cleared: set[int] = field(default_factory=set)  # id() of cleared entities
    nulls: set[int] = field(default_factory=set)  # id() of entities holding null instances (generic path only)


def expand_batch(items: Sequence[Any], terms_for: Callable[[Any], TermMap], now: str) -> BatchExpansion:
    """Expand a batch's items: by plan where one fits, else by the generic reader."""
    out = BatchExpansion()
    entities = out.entities
    cleared = out.cleared
    groups: dict[int, tuple[BatchPlan, list[Entity]]] = {}
    for item in items:
        try:
            terms = terms_for(item)
        except NgsiError as error:
            entities.append(error)
            continue
        plan = _plan(item, terms, now)
        entity = plan.expand(item, now) if plan is not None else None
        if plan is None or entity is None:
            try:
                entity = expand_entity(item, terms, now, keep_nulls=True)
            except NgsiError as error:
                entities.append(error)
                continue
            if _holds_null(entity):
                out.nulls.add(id(entity))
            entities.append(entity)
            continue
        if not plan.identifying(item):
            group = groups.get(id(plan))
            if group is None:
                group = groups[id(plan)] = (plan, [])
            group[1].append(entity)
            cleared.add(id(entity))
        entities.append(entity)
    for plan, expanded in groups.values():
        columns = plan.index_columns(expanded, now)
        out.index = columns if out.index is None else out.index.extend(columns)
    return out


def _plan(item: Any, terms: TermMap, now: str) -> BatchPlan | None:
    sig = signature(item)
    if sig is None:
        return None
    plans = terms.plans
    known = plans.get(sig, _UNKNOWN)  # one lookup: another request may clear the dict meanwhile
    if known is not _UNKNOWN:
        return known  # type: ignore[no-any-return]
    plan: BatchPlan | None
    try:
        plan = BatchPlan(sig, terms)
    except (BadRequestData, PersonalDataRefused, ValueError):  # the generic reader names the item's error
        plan = None
    if plan is not None:
        verdict = plan.agrees(item, terms, now)
        if verdict is None:
            return None  # this item is refused anyway; the next one of its shape decides
        if not verdict:
            log.warning("a batch plan disagreed with the generic reader on an item of shape %r; not used", sig)
            plan = None
    if len(plans) >= _PLANS_PER_CONTEXT:
        plans.clear()
    plans[sig] = plan
    return plan
