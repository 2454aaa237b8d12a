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
