"""The line: the epidemic module takes region-level counts and region-to-region flows, nothing else.

A record that describes a person (an id of a person, device, card or vehicle; a birth year, gender or
name; a single trip with its own start and end) is refused here, at the door, with an error that names
the offending field. Aggregates pass: a count of cases in a region on a day, a count of movements from
one region to another on a day. Nothing is stored or logged from a refused record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from polis.domain.errors import BadRequestData

# Field names that only a person-level record carries. Matched on a normalised name (lower case,
# separators removed) so "Bike ID", "bike_id" and "bikeId" are one thing.
_PERSON_FIELDS = re.compile(
    r"(person|people|user|device|bike|card|phone|imei|imsi|msisdn|mac|subscriber|patient|passenger|rider|"
    r"customer|vehicle|plate|traveller|traveler|account)(id|identifier|number|no|hash|name)?$"
    r"|^(birthyear|birthdate|dateofbirth|dob|age|gender|sex|firstname|lastname|fullname|email|address|"
    r"usertype|tripid|tripduration|starttime|stoptime|endtime|startstationid|endstationid|latitude|longitude|"
    r"lat|lon|lng|location|trajectory|ping|pings)$"
)

COUNT_FIELDS = frozenset({"region", "date", "cases"})
FLOW_FIELDS = frozenset({"origin", "destination", "date", "count"})


class PersonLevelDataRefused(BadRequestData):
    """A person-level record was offered to a module that takes only region-level aggregates."""


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def person_field(name: str) -> bool:
    """Whether a field name belongs to a record about one person (or one device, card, vehicle)."""
    return bool(_PERSON_FIELDS.search(_normalise(name)))


def refuse_person_fields(fields: Iterable[str], where: str) -> None:
    offending = [f for f in fields if person_field(f)]
    if offending:
        raise PersonLevelDataRefused(
            f"{where}: person-level field(s) {offending} refused; the epidemic module takes region-level "
            "counts (region, date, cases) and region-to-region flows (origin, destination, date, count) only",
            field=offending[0],
        )


def check_labels_header(header: Sequence[str], path: Path) -> None:
    """A labels file: a `name` column, one column per day, and at most bare index columns ('' or 'id')."""
    refuse_person_fields([h for h in header if h not in ("", "id", "name")], str(path))
    if "name" not in header:
        raise ValueError(f"{path}: no 'name' column")
    odd = [h for h in header if h not in ("", "id", "name") and not _is_iso_date(h)]
    if odd:
        raise ValueError(f"{path}: columns {odd[:5]} are neither the region name nor days")


def check_flow_header(first_row: Sequence[str], path: Path) -> None:
    """Flow files have no header: three fields, the last a count. A header naming a person is refused."""
    refuse_person_fields(first_row, str(path))
    if len(first_row) != 3:
        raise ValueError(f"{path}: expected src,dst,count rows, got {len(first_row)} fields")


def check_records(records: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    """Region-level records of `kind` "counts" or "flows", checked field by field; anything else refused."""
    allowed = {"counts": COUNT_FIELDS, "flows": FLOW_FIELDS}.get(kind)
    if allowed is None:
        raise ValueError(f"unknown record kind {kind!r}; use 'counts' or 'flows'")
    checked = []
    for n, record in enumerate(records):
        where = f"{kind} record {n}"
        refuse_person_fields(record.keys(), where)
        extra = sorted(set(record) - allowed)
        missing = sorted(allowed - set(record))
        if extra or missing:
            raise BadRequestData(
                f"{where}: fields must be exactly {sorted(allowed)}; unexpected {extra}, missing {missing}",
                field=(extra or missing)[0],
            )
        value = record["cases" if kind == "counts" else "count"]
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise BadRequestData(f"{where}: the count must be a non-negative number", field="count")
        checked.append(record)
    return checked


def _is_iso_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# -- what an entity of the `epidemic` dataset may be, whatever path writes it ------------------------

# The shapes `polis ingest covid-europe-2020` writes (polis.epidemic.hub), by the type named in the id:
# a region with its daily case counts, a region-to-region flow with its daily counts. An entity of the
# dataset (polis.access.datasets: `urn:ngsi-ld:<Type>:epidemic:...`) that is anything else, or carries
# any other attribute, could be one person's record (a case with an age, a sex, an onset, a place), so
# every write of one is refused (polis.privacy.refusal calls `unstored_shape` on every write path).
STORED_SHAPES: dict[str, frozenset[str]] = {
    "AdministrativeArea": frozenset({"name", "countryCode", "newConfirmedCases", "dateObserved", "dataProvider"}),
    "OriginDestinationFlow": frozenset(
        {
            "originLocationName", "originLocationCode", "destinationLocationName", "destinationLocationCode",
            "countryCode", "aggregationDateType", "flowCount", "dateObserved", "source",
        }
    ),
}  # fmt: skip
_ENTITY_MEMBERS = frozenset({"id", "@id", "type", "@type", "@context", "createdAt", "modifiedAt", "deletedAt", "scope"})
# An attribute instance's own members (compact or expanded): anything else is a sub-attribute, which the
# module never writes and a person's details could hide in.
_INSTANCE_MEMBERS = frozenset(
    {"type", "@type", "value", "@value", "observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "instanceId"}
)
_CORE = "https://uri.etsi.org/ngsi-ld/"
_SCALARS = (str, int, float, bool)


def _term(name: str) -> str:
    """The term an IRI ends with (`https://smartdatamodels.org/.../flowCount` -> flowCount), as
    polis.epidemic.hub reads attributes back: the IRI depends on the @context, the term does not."""
    return name.rstrip("/#").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def unstored_shape(entity: Mapping[str, Any], entity_id: str) -> tuple[str, str] | None:
    """(field, why) when `entity` (compact, expanded, or a part of one: its id alone, id and type, or the
    entity after an append) is not a shape the module stores for `entity_id`, an id of the epidemic
    dataset; None when it is one. The field is named by its term, whatever @context expanded it."""
    kind = entity_id.split(":", 3)[2]
    allowed = STORED_SHAPES.get(kind)
    what = "region-level counts (AdministrativeArea) and region-to-region flows (OriginDestinationFlow)"
    if allowed is None:
        return "id", f"the epidemic dataset holds {what} only, not {kind!r} entities"
    types = entity.get("type", entity.get("@type", ()))
    for name in [types] if isinstance(types, str) else types if isinstance(types, list) else [types]:
        if not isinstance(name, str) or _term(name) != kind:
            return "type", f"an entity of the epidemic dataset named {kind} in its id must be of type {kind} only"
    attributes = [k for k in entity if k not in _ENTITY_MEMBERS]
    person = [a for a in attributes if person_field(_term(a))]
    if person:
        return _term(person[0]), f"person-level field {_term(person[0])!r}: the epidemic dataset holds {what} only"
    for name in attributes:
        term = _term(name)
        if term not in allowed:
            return term, f"the epidemic dataset's {kind} entities hold {sorted(allowed)} only, not {term!r}"
        if not _plain_instances(entity[name]):
            return term, "the epidemic dataset's attributes hold one plain value per instance, no sub-attributes"
    return None


def _plain_instances(value: Any) -> bool:
    """An attribute as a plain value (keyValues), or its instances with a plain value and only the members
    NGSI-LD gives an instance (a typed date `{"@type": "DateTime", "@value": ...}` is plain)."""
    for instance in value if isinstance(value, list) else [value]:
        if isinstance(instance, _SCALARS):
            continue
        if not isinstance(instance, dict):
            return False
        for key, member in instance.items():
            # a core term expanded (`https://uri.etsi.org/ngsi-ld/hasValue`), not the default vocabulary's
            # (`.../ngsi-ld/default-context/age`): those are the sender's own names
            if key not in _INSTANCE_MEMBERS and not (key.startswith(_CORE) and key[len(_CORE) :].isalpha()):
                return False
            plain = isinstance(member, _SCALARS) or (isinstance(member, dict | list) and _typed(member))
            if key in ("value", "@value", _CORE + "hasValue") and not plain:
                return False
    return True


def _typed(member: Any) -> bool:
    """A typed literal (`{"@type": "DateTime", "@value": "..."}`), or a list of one, as JSON-LD expands it."""
    items = member if isinstance(member, list) else [member]
    return all(
        isinstance(i, dict) and set(i) <= {"@type", "@value"} and isinstance(i.get("@value"), _SCALARS) for i in items
    )
