"""Temporal evolution of entities (§5.6.11–5.6.16, §5.7.3–5.7.4, §4.5.8–4.5.19).

The history lives in the store; this module parses temporal parameters, writes instances, and shapes
answers as normalized instance arrays, `temporalValues` or `aggregatedValues`.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from polis.domain.entity import ENTITY_MEMBERS, Entity, HistoryInstance, Instance
from polis.domain.errors import BadRequestData, ResourceNotFound, TooManyResults
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entities import EntityService, parse_observed_at
from polis.ngsi_ld.entity_codec import (
    NULL_MARKER,
    compact_instance,
    expand_entity,
    expand_fragment,
    is_null,
    validate_entity_id,
)
from polis.ngsi_ld.events import EntityChange
from polis.ngsi_ld.params import parse_dataset_ids, parse_datetime, parse_int
from polis.privacy.refusal import refuse_personal_data
from polis.store.base import EntityQuery, TemporalAttribute, TemporalQuery

AGGREGATION_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
VALUES_MEMBER = {
    "Relationship": ("objects", "object"),
    "LanguageProperty": ("languageMaps", "languageMap"),
    "VocabProperty": ("vocabs", "vocab"),
    "JsonProperty": ("jsons", "json"),
    "ListProperty": ("valueLists", "valueList"),
    "ListRelationship": ("objectLists", "objectList"),
}


def parse_temporal_query(params: Mapping[str, str], attrs: tuple[str, ...], max_instances: int) -> TemporalQuery:
    timerel = params.get("timerel")
    time_at = params.get("timeAt")
    end = params.get("endTimeAt")
    if params.get("timeproperty", "observedAt") != "observedAt":
        raise BadRequestData("timeproperty: only observedAt is kept in the history")
    if timerel is None:
        if time_at is not None or end is not None:
            raise BadRequestData("timeAt and endTimeAt need timerel")
    elif timerel not in ("before", "after", "between"):
        raise BadRequestData(f"timerel must be before, after or between, got '{timerel}'")
    elif time_at is None:
        raise BadRequestData(f"timerel={timerel} needs timeAt")
    elif timerel == "between" and end is None:
        raise BadRequestData("timerel=between needs endTimeAt")
    start = parse_datetime(time_at, "timeAt") if time_at is not None else None
    stop = parse_datetime(end, "endTimeAt") if end is not None and timerel == "between" else None
    if start is not None and stop is not None and stop <= start:
        raise BadRequestData("endTimeAt must be after timeAt")
    last_n = parse_int(params, "lastN", minimum=1)
    return TemporalQuery(
        attrs=attrs,
        timerel=cast(Literal["before", "after", "between"] | None, timerel),
        time_at=start,
        end_time_at=stop,  # type: ignore[arg-type]
        last_n=last_n,
        max_instances=max_instances,
        dataset_ids=parse_dataset_ids(params.get("datasetId")),
    )


_DURATION = re.compile(
    r"P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.ASCII,  # digits 0-9 only, not other scripts'
)


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations; years and months are taken as 365 and 30 days (buckets need a fixed width)."""
    m = _DURATION.fullmatch(text)
    if not m or text in ("P", "PT") or text.endswith("T"):
        raise BadRequestData(f"aggrPeriodDuration must be an ISO 8601 duration such as PT1H, got '{text}'")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    days = g["y"] * 365 + g["mo"] * 30 + g["w"] * 7 + g["d"] + (g["h"] * 3600 + g["mi"] * 60 + g["s"]) / 86400
    if days > 3_650_000:  # ten thousand years: longer than any history, and timedelta's own limit is near
        raise BadRequestData(f"aggrPeriodDuration '{text}' is longer than any history")
    period = timedelta(days=days)
    if days > 0 and period <= timedelta(0):  # would round to zero, which means "the whole range"
        raise BadRequestData(f"aggrPeriodDuration '{text}' is shorter than a microsecond, the finest time held")
    return period


@dataclass(frozen=True, slots=True)
class Aggregation:
    methods: tuple[str, ...]
    period: timedelta  # zero = one bucket over the whole range


def parse_aggregation(params: Mapping[str, str]) -> Aggregation:
    raw = params.get("aggrMethods")
    if not raw:
        raise BadRequestData("aggregatedValues needs aggrMethods, e.g. aggrMethods=avg,max")
    methods = tuple(m.strip() for m in raw.split(","))
    for method in methods:
        if method not in AGGREGATION_METHODS:
            raise BadRequestData(f"unknown aggrMethods value '{method}'; known: {', '.join(AGGREGATION_METHODS)}")
    return Aggregation(methods, parse_duration(params.get("aggrPeriodDuration", "PT0S")))


class TemporalService:
    def __init__(self, entities: EntityService) -> None:
        self.entities = entities
        self.store = entities.store

    def create_or_add(self, tenant: str, body: Any, terms: TermMap, *, must_exist: bool = False) -> bool:
        """`must_exist`: only add to an entity that exists (POST .../attrs), checked under the write lock, so an
        entity deleted meanwhile gives a 404 (it was a 400, or re-created the entity when the body had a type)."""
        with self.entities.write_lock:
            return self._create_or_add(tenant, body, terms, must_exist)

    def _create_or_add(self, tenant: str, body: Any, terms: TermMap, must_exist: bool = False) -> bool:
        """§5.6.11; True when the entity was created. The entity's current state follows the newest
        instance of each attribute, so the entity API and the temporal API tell the same story."""
        now = self.entities.clock()
        if not isinstance(body, dict):
            raise BadRequestData("the request body must be a JSON object")
        entity_id = validate_entity_id(body.get("id"))
        for name, value in body.items():
            if name in ENTITY_MEMBERS:
                continue
            for instance in value if isinstance(value, list) else [value]:
                if isinstance(instance, dict) and "observedAt" not in instance:
                    raise BadRequestData(f"attribute '{name}': every temporal instance needs observedAt")
        old = self.store.get(tenant, [entity_id]).get(entity_id)
        if old is None and must_exist:
            raise ResourceNotFound(f"entity {entity_id} was not found")
        if old is None:
            entity = expand_entity(body, terms, now, keep_nulls=True)
        else:
            rest = {k: v for k, v in body.items() if k not in ("id", "type", "@context")}
            entity = {"id": entity_id, "type": old["type"], **expand_fragment(rest, terms, now)}
        for name in (k for k in entity if k not in ENTITY_MEMBERS):
            _refuse_null(entity[name], name, terms)
        refuse_personal_data(entity)  # 422 naming the field and rule before anything is stored (polis.privacy)
        history = _instances_of(entity)
        if not history:
            raise BadRequestData("a temporal entity needs at least one attribute instance with observedAt")
        current = dict(old) if old is not None else {k: v for k, v in entity.items() if k in ENTITY_MEMBERS}
        for name in (k for k in entity if k not in ENTITY_MEMBERS):
            newest: dict[str | None, Instance] = {i.get("datasetId"): i for i in current.get(name, ())}
            for instance in sorted(entity[name], key=_instant):
                key = instance.get("datasetId")
                held = newest.get(key)
                if held is None or _instant(instance) >= _instant(held):
                    newest[key] = instance
            current[name] = list(newest.values())
        current["modifiedAt"] = now
        current.setdefault("createdAt", now)
        self._commit_current(tenant, current, old, history)
        return old is None

    def _commit_current(
        self, tenant: str, current: Entity, old: Entity | None, history: Sequence[HistoryInstance] = ()
    ) -> None:
        """Write the entity's new current state (and instances), staged and published as every write is."""
        changes = [EntityChange(tenant, "temporal", current["id"], current, old)]
        self.entities.bus.commit(
            changes, lambda staged: self.store.write(tenant, upserts=[current], history=history, staged=staged)
        )

    def _follow_history(
        self, tenant: str, entity_id: str, attr: str, datasets: Set[str | None], added: Set[str | None] = frozenset()
    ) -> None:
        """After instances of `attr` in `datasets` changed: the current instance of each of those datasets
        becomes the newest instance history still holds, or goes when none is left (the rule of
        `_create_or_add`). Under the write lock. A current instance without observedAt has no history (a static
        attribute) and is left alone; a dataset the entity does not show is left out unless in `added` (the
        dataset a PATCH moved an instance to), so a deletion does not bring back what the entity API deleted."""
        old = self.store.get(tenant, [entity_id]).get(entity_id)
        if old is None:
            return  # history outlives DELETE /entities: no current state to follow
        now = self.entities.clock()
        held: dict[str | None, Instance] = {i.get("datasetId"): i for i in old.get(attr, ())}
        shown = dict(held)
        for dataset in datasets:
            before = held.get(dataset)
            if (before is None and dataset not in added) or (before is not None and "observedAt" not in before):
                continue
            newest = self._newest_instance(tenant, entity_id, attr, dataset)
            if newest is None:
                shown.pop(dataset, None)
            elif before is None or not _same_instance(before, newest):
                created = before.get("createdAt", now) if before is not None else now
                shown[dataset] = {**newest, "createdAt": created, "modifiedAt": now}
        if shown == held:
            return
        current = dict(old)
        if shown:
            current[attr] = list(shown.values())
        else:
            current.pop(attr, None)
        current["modifiedAt"] = now
        self._commit_current(tenant, current, old)

    def _newest_instance(self, tenant: str, entity_id: str, attr: str, dataset: str | None) -> Instance | None:
        """The newest instance of `attr` in `dataset` history holds, without its instanceId."""
        wanted = TemporalQuery(attrs=(attr,), last_n=1, dataset_ids=(dataset,))
        slot = self.store.temporal(tenant, [entity_id], wanted).get(entity_id, {}).get(attr)
        if slot is None or not slot.instances:
            return None
        return {k: v for k, v in slot.instances[-1].items() if k != "instanceId"}

    def query(
        self, tenant: str, query: EntityQuery, temporal: TemporalQuery
    ) -> tuple[list[Entity], int | None, dict[str, dict[str, TemporalAttribute]]]:
        found = self.store.query(tenant, query)
        ids = [e["id"] for e in found.entities]
        return found.entities, found.count, self.store.temporal(tenant, ids, temporal)

    def retrieve(
        self, tenant: str, entity_id: str, temporal: TemporalQuery
    ) -> tuple[Entity, dict[str, TemporalAttribute]]:
        validate_entity_id(entity_id)
        found = self.store.get(tenant, [entity_id]).get(entity_id)
        if found is None:
            raise ResourceNotFound(f"entity {entity_id} was not found")
        return found, self.store.temporal(tenant, [entity_id], temporal).get(entity_id, {})

    def delete(self, tenant: str, entity_id: str) -> None:
        """§5.6.16: the entity and its history. DELETE /entities keeps the history, so this deletes it also
        when the entity is gone (else it could never go, and would show under the id's next entity): 404 only
        when there is neither."""
        validate_entity_id(entity_id)
        with self.entities.write_lock:
            exists = bool(self.store.get(tenant, [entity_id]))
            if exists:
                self.entities.delete(tenant, entity_id)
            if not self.store.delete_history(tenant, entity_id) and not exists:
                raise ResourceNotFound(f"entity {entity_id} was not found")

    def delete_attribute(
        self,
        tenant: str,
        entity_id: str,
        attr: str,
        terms: TermMap,
        *,
        dataset_ids: tuple[str | None, ...] = (None,),
        delete_all: bool = False,
    ) -> None:
        """§5.6.13: the instances of `dataset_ids` (None: the default ones, without a datasetId), or with
        `delete_all` of every dataset; the current entity then follows what is left."""
        validate_entity_id(entity_id)
        with self.entities.write_lock:
            wanted = None if delete_all else dataset_ids
            if not self.store.delete_history(tenant, entity_id, attr, dataset_ids=wanted):
                which = "" if delete_all else " with datasetId " + ", ".join(d or "@none" for d in dataset_ids)
                raise ResourceNotFound(f"entity {entity_id} has no history for attribute {terms.compact(attr)}{which}")
            if delete_all:
                old = self.store.get(tenant, [entity_id]).get(entity_id) or {}
                self._follow_history(tenant, entity_id, attr, {i.get("datasetId") for i in old.get(attr, ())})
            else:
                self._follow_history(tenant, entity_id, attr, set(dataset_ids))

    def delete_instance(self, tenant: str, entity_id: str, attr: str, instance_id: str) -> None:
        validate_entity_id(entity_id)
        with self.entities.write_lock:
            before = self.store.history_instance(tenant, entity_id, attr, instance_id)
            if before is None or not self.store.delete_history(tenant, entity_id, attr, instance_id):
                raise ResourceNotFound(f"no instance {instance_id} of that attribute of {entity_id}")
            self._follow_history(tenant, entity_id, attr, {before.get("datasetId")})

    def modify_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str, body: Any, terms: TermMap
    ) -> None:
        """§5.6.14: the body is the whole instance (its datasetId too); the attribute keeps its kind."""
        validate_entity_id(entity_id)
        instance = self._single_instance(attr, body, terms)
        observed = instance.get("observedAt")
        if observed is None:
            raise BadRequestData("the instance needs observedAt")
        stored = {k: v for k, v in instance.items() if k not in ("createdAt", "modifiedAt")}
        with self.entities.write_lock:
            # A person's record takes nothing more (PRIVACY.md §3), as every other write to it is refused.
            current = self.store.get(tenant, [entity_id]).get(entity_id)
            refuse_personal_data({"id": entity_id, "type": current["type"]} if current else {"id": entity_id})
            before = self.store.history_instance(tenant, entity_id, attr, instance_id)
            if before is None:
                raise ResourceNotFound(f"no instance {instance_id} of that attribute of {entity_id}")
            # One series has one kind: a Relationship among Properties would have no place in temporalValues.
            kind, new_kind = before.get("type", "Property"), stored.get("type", "Property")
            if new_kind != kind:
                raise BadRequestData(
                    f"instance {instance_id} of {terms.compact(attr)} is a {kind}; the body's type {new_kind} "
                    "would change the attribute's kind (delete the attribute's history to change it)"
                )
            self.store.replace_instance(tenant, entity_id, attr, instance_id, stored, parse_observed_at(observed))
            moved_to = stored.get("datasetId")
            self._follow_history(tenant, entity_id, attr, {before.get("datasetId"), moved_to}, added={moved_to})

    def _single_instance(self, attr: str, body: Any, terms: TermMap) -> Instance:
        if not isinstance(body, dict):
            raise BadRequestData("the request body must be a JSON object")
        fragment = expand_fragment(
            {terms.compact(attr): body} if "type" in body or "value" in body else body, terms, self.entities.clock()
        )
        refuse_personal_data(fragment)
        instances = fragment.get(attr)
        if not instances or len(instances) != 1:
            raise BadRequestData(f"the body must hold exactly one instance of {terms.compact(attr)}")
        _refuse_null(instances, attr, terms)
        return instances[0]


def _refuse_null(instances: Sequence[Instance], attr: str, terms: TermMap) -> None:
    """A history instance is a value observed at a time: the null marker (which deletes an attribute from the
    current state) cannot be one. 400 before anything is written. (A null sub-attribute is just left out.)"""
    if any(is_null(i) for i in instances):
        raise BadRequestData(
            f"attribute '{terms.compact(attr)}': a temporal instance cannot be '{NULL_MARKER}' (the NGSI-LD null); "
            "to delete the attribute use the entity API, or DELETE its instances"
        )


def _same_instance(a: Instance, b: Instance) -> bool:
    """The same observation, system members aside (observedAt compared as a time: its text forms differ)."""
    skip = ("createdAt", "modifiedAt", "instanceId", "observedAt")
    return _instant(a) == _instant(b) and {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def _instant(instance: Instance) -> datetime:
    """When an instance was observed, as a time: the text forms differ ('…00Z' vs '…00.500000Z')."""
    observed = instance.get("observedAt")
    return parse_observed_at(observed) if observed else datetime.min.replace(tzinfo=UTC)


def _instances_of(entity: Entity) -> list[HistoryInstance]:
    items = []
    for name, instances in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        for instance in instances:
            observed = instance.get("observedAt")
            if observed is None:
                raise BadRequestData("every temporal instance needs observedAt")
            stored = {k: v for k, v in instance.items() if k not in ("createdAt", "modifiedAt")}
            items.append(
                HistoryInstance(entity["id"], name, parse_observed_at(observed), stored, instance.get("datasetId"))
            )
    return items


# -- representation ---------------------------------------------------------------------------


def render_temporal_entity(
    entity: Entity,
    history: dict[str, TemporalAttribute],
    terms: TermMap,
    *,
    fmt: str = "normalized",
    aggregation: Aggregation | None = None,
    temporal: TemporalQuery | None = None,
    pick: set[str] | None = None,
    omit: set[str] | None = None,
    window: Window | None = None,
) -> dict[str, Any]:
    """`pick`/`omit` project as they do on /entities: attribute IRIs and the members "id" and "type".
    `window`: of an answer cut at the cap, as `_aggregated` takes it."""

    def wanted(key: str) -> bool:
        return (pick is None or key in pick) and (omit is None or key not in omit)

    out: dict[str, Any] = {}
    if wanted("id"):
        out["id"] = entity["id"]
    if wanted("type"):
        types = [terms.compact(t) for t in entity["type"]]
        out["type"] = types[0] if len(types) == 1 else types
    for attr, slot in history.items():
        if not wanted(attr):
            continue
        name = terms.compact(attr)
        if fmt == "temporalValues":
            out[name] = _per_dataset(slot.instances, functools.partial(_temporal_values, terms=terms))
        elif fmt == "aggregatedValues" and aggregation is not None:
            shape = functools.partial(_aggregated, aggregation=aggregation, temporal=temporal, window=window)
            out[name] = _per_dataset(slot.instances, shape)
        elif slot.plain:
            out[name] = slot.instances  # plain readings are already in their output shape
        else:
            out[name] = [_render_instance(i, terms) for i in slot.instances]
    return out


_PLAIN_MEMBERS = frozenset({"type", "value", "object", "observedAt", "unitCode", "datasetId", "instanceId"})
_PLAIN_KINDS = frozenset({"Property", "GeoProperty", "Relationship"})


def _render_instance(instance: Instance, terms: TermMap) -> dict[str, Any]:
    # Most history is plain readings already in their output shape: nothing to compact (a week is 2,016 of them).
    if instance.get("type") in _PLAIN_KINDS and _PLAIN_MEMBERS.issuperset(instance):
        return instance
    rendered = compact_instance(instance, terms, fmt="normalized", sys_attrs=False)
    rendered["observedAt"] = instance["observedAt"]
    rendered["instanceId"] = instance["instanceId"]
    return rendered


def _per_dataset(
    instances: Sequence[Instance], shape: Callable[[Sequence[Instance]], dict[str, Any]]
) -> dict[str, Any] | list[dict[str, Any]]:
    """The simplified temporal representations hold one series per datasetId (one object each, with its
    datasetId; the default instances' first): the readings of two sources are not one series."""
    groups: dict[str | None, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.get("datasetId"), []).append(instance)
    if len(groups) <= 1:
        only = next(iter(groups), None)
        return shape(instances) | ({"datasetId": only} if only is not None else {})
    return [
        shape(groups[dataset]) | ({"datasetId": dataset} if dataset is not None else {})
        for dataset in sorted(groups, key=lambda d: (d is not None, d or ""))
    ]


def _temporal_values(instances: Sequence[Instance], terms: TermMap) -> dict[str, Any]:
    kind = instances[0].get("type", "Property") if instances else "Property"
    plural, member = VALUES_MEMBER.get(kind, ("values", "value"))
    return {"type": kind, plural: [[i.get(member), i["observedAt"]] for i in instances]}


def _aggregated(
    instances: Sequence[Instance],
    aggregation: Aggregation,
    temporal: TemporalQuery | None,
    window: Window | None = None,
) -> dict[str, Any]:
    """`window`: the answer was cut (`cut_to_window`, then `keep_whole_periods`)."""
    kind = instances[0].get("type", "Property") if instances else "Property"
    out: dict[str, Any] = {"type": kind}
    if not instances:
        return out
    times = [parse_observed_at(i["observedAt"]) for i in instances]
    buckets = _periods(times, aggregation, temporal, window)
    for method in aggregation.methods:
        series = []
        for lo, hi, members in buckets:
            values = [instances[m].get("value", instances[m].get("object")) for m in members]
            series.append([_aggregate(method, values), _iso(lo), _iso(hi)])
        out[method] = series
    return out


Period = tuple[datetime, datetime, list[int]]  # [start, end) and the indices of the instances in it


def _periods(
    times: Sequence[datetime], aggregation: Aggregation, temporal: TemporalQuery | None, window: Window | None
) -> list[Period]:
    """The periods of one series (`times`: its instances' observedAt, oldest first) that hold an instance, oldest
    first; of an answer cut to `window`, only those whose every instance was returned."""
    # The range asked for: [timeAt, endTimeAt) for between, [timeAt, ...) for after, [..., timeAt) for before
    # (timeAt is then its end); each open side is where the instances themselves start or end.
    timerel = temporal.timerel if temporal is not None else None
    start = temporal.time_at if temporal is not None and timerel in ("after", "between") else None
    end = temporal.end_time_at if temporal is not None and timerel == "between" else None
    if temporal is not None and timerel == "before":
        end = temporal.time_at
    start = start if start is not None else times[0]
    end = end if end is not None else times[-1]
    if aggregation.period <= timedelta(0):
        if window is not None:  # one period over what was returned, as far as it goes
            start = max(start, window.start) if window.start is not None else start
            end = min(end, window.end) if window.end is not None else end
        buckets = [(start, max(end, times[-1]), list(range(len(times))))]
    else:
        grouped: dict[int, list[int]] = {}
        for index, ts in enumerate(times):
            grouped.setdefault(int((ts - start) // aggregation.period), []).append(index)
        buckets = [
            (start + k * aggregation.period, _bucket_end(start, (k + 1) * aggregation.period), v)
            for k, v in sorted(grouped.items())
        ]
    if window is None:
        return buckets
    # An answer cut at the cap: only the periods whose every instance was returned (a period partly
    # returned would be labelled with more time than it aggregates).
    return [
        (lo, hi, v)
        for lo, hi, v in buckets
        if (window.end is None or hi <= window.end) and (window.start is None or lo >= window.start)
    ]


def _bucket_end(start: datetime, offset: timedelta) -> datetime:
    """`start + offset`, or the last instant there is when a bucket would end after the year 9999."""
    try:
        return start + offset
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _aggregate(method: str, values: list[Any]) -> Any:
    if method == "totalCount":
        return len(values)
    if method == "distinctCount":
        return len({repr(v) for v in values})
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return None
    if method == "sum":
        return sum(numbers)
    if method == "avg":
        return sum(numbers) / len(numbers)
    if method == "min":
        return min(numbers)
    if method == "max":
        return max(numbers)
    if method == "sumsq":
        return sum(n * n for n in numbers)
    mean = sum(numbers) / len(numbers)
    return math.sqrt(sum((n - mean) ** 2 for n in numbers) / len(numbers))  # stddev (population)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Window:
    """What an answer cut at the per-request cap covers (§6.3.10): without lastN the oldest instances were
    kept, up to `end`; with it the newest, from `start` on (both inclusive). Every series in the answer holds
    all of its instances in that range, those at `end` (`start`) too."""

    start: datetime | None
    end: datetime | None
    last_n: int | None


def cut_to_window(history: Mapping[str, dict[str, TemporalAttribute]], last_n: int | None) -> Window | None:
    """When any attribute was cut at the cap: trim every attribute of every entity to the part of time all of
    them hold in full, and return it. The series that ends first sets the end (the mirror with lastN: the one
    that starts last, the start): a client that moves its window past the range returned then misses nothing,
    where the range of the longest series would skip another series' instances it was not given. A series
    ends before the instant where it was cut: the instances at that instant that were kept are only some of
    them, and a client asking after (before) it would never see the others."""
    ends: list[datetime] = []
    starts: list[datetime] = []
    for attrs in history.values():
        for name, slot in attrs.items():
            if slot.truncated:
                if last_n is None:
                    ends.append(_last_whole_instant(name, slot))
                else:
                    starts.append(_first_whole_instant(name, slot))
    if not ends and not starts:
        return None
    start = max(starts) if starts else None
    end = min(ends) if ends else None
    for attrs in history.values():
        for name, slot in list(attrs.items()):
            # Instances are oldest first: two bisections, not a parse of every instance's time.
            lo = bisect.bisect_left(slot.instances, start, key=_instant) if start is not None else 0
            hi = bisect.bisect_right(slot.instances, end, key=_instant) if end is not None else len(slot.instances)
            if hi <= lo:
                del attrs[name]  # nothing of it in the range: it comes with the next page
            elif (lo, hi) != (0, len(slot.instances)):
                slot.instances = slot.instances[lo:hi]
    return Window(start, end, last_n)


def _last_whole_instant(attr: str, slot: TemporalAttribute) -> datetime:
    """The newest time of a series cut after its oldest instances whose every instance was kept."""
    if slot.cut_at is None:  # a store that does not say where it cut: its last instance
        return _instant(slot.instances[-1])
    kept = bisect.bisect_left(slot.instances, slot.cut_at, key=_instant)
    if kept == 0:
        raise _one_instant_over_the_cap(attr, slot)
    return _instant(slot.instances[kept - 1])


def _first_whole_instant(attr: str, slot: TemporalAttribute) -> datetime:
    """The oldest time of a series cut before its newest instances (lastN) whose every instance was kept."""
    if slot.cut_at is None:
        return _instant(slot.instances[0])
    dropped = bisect.bisect_right(slot.instances, slot.cut_at, key=_instant)
    if dropped == len(slot.instances):
        raise _one_instant_over_the_cap(attr, slot)
    return _instant(slot.instances[dropped])


def _one_instant_over_the_cap(attr: str, slot: TemporalAttribute) -> TooManyResults:
    when = _iso(slot.cut_at) if slot.cut_at is not None else "one time"
    return TooManyResults(
        f"attribute {attr} has more instances at one instant ({when}) than this broker returns at once "
        f"({len(slot.instances)}): an answer cut there could not be paged, as a page ends before or after an "
        "instant, never within it; ask for fewer datasetIds, or contact the operator to raise the limit"
    )


def keep_whole_periods(
    history: Mapping[str, dict[str, TemporalAttribute]],
    window: Window,
    aggregation: Aggregation,
    temporal: TemporalQuery | None,
) -> None:
    """An aggregated answer cut to `window`: trim every series (entity, attribute and datasetId, as they are
    aggregated) to the periods it holds in full, and then further, until one time separates what is aggregated
    from what is not in every series (the periods of two series need not start together). The Content-Range of
    the instances left then pages as an instance answer does, each period on exactly one page. 403 when
    no period is left."""
    backward = window.last_n is not None
    series: list[tuple[list[datetime], list[Period]]] = []
    for attrs in history.values():
        for slot in attrs.values():
            groups: dict[str | None, list[datetime]] = {}
            for instance in slot.instances:
                groups.setdefault(instance.get("datasetId"), []).append(_instant(instance))
            series += [(times, _periods(times, aggregation, temporal, window)) for times in groups.values()]
    # The bound: without lastN everything older is aggregated, nothing from it on; with lastN the mirror.
    bound: datetime | None = None
    while True:
        outside = [t for times, periods in series if (t := _first_left_out(times, periods, backward)) is not None]
        if not outside:
            break  # every instance is in a whole period (and so it stays: periods are only ever left out)
        moved = max(outside) if backward else min(outside)
        if moved == bound:
            break
        bound = moved
        for index, (times, periods) in enumerate(series):  # periods reaching over the bound are left out too
            inside = [p for p in periods if (times[p[2][0]] > moved if backward else times[p[2][-1]] < moved)]
            series[index] = (times, inside)
    if bound is not None:
        for attrs in history.values():
            for name, slot in list(attrs.items()):
                if backward:
                    slot.instances = slot.instances[bisect.bisect_right(slot.instances, bound, key=_instant) :]
                else:
                    slot.instances = slot.instances[: bisect.bisect_left(slot.instances, bound, key=_instant)]
                if not slot.instances:
                    del attrs[name]
    if not any(attrs for attrs in history.values()):
        raise TooManyResults(
            "no aggregation period could be computed over all of its instances (more of them than this broker "
            "returns at once): ask for a shorter aggrPeriodDuration or a narrower timerel range"
        )


def _first_left_out(times: Sequence[datetime], periods: Sequence[Period], backward: bool) -> datetime | None:
    """The time of the instance nearest the aggregated ones that no period of `periods` holds (the newest
    before them, with `backward`); None when every instance is in one."""
    if backward:
        first = periods[0][2][0] if periods else len(times)
        return times[first - 1] if first > 0 else None
    count = periods[-1][2][-1] + 1 if periods else 0
    return times[count] if count < len(times) else None


def content_range(history: Mapping[str, Mapping[str, TemporalAttribute]], window: Window | None) -> str | None:
    """The Content-Range of an answer cut to `window` (None: a whole answer, no header): `date-time
    <first>-<last>/<lastN or *>`, the observedAt of the oldest and the newest instance the answer holds, with
    aggregatedValues too (of the instances its periods aggregate, not the periods' bounds).

    The paging rule, the same for every representation: without lastN the next page is the same query with
    `timerel=after&timeAt=<last>`, with lastN `timerel=before&timeAt=<first>` (or a `between` ending there).
    Each instance, and each period, comes on exactly one page: no instance after `first` and before `last` is
    left out, none at those instants is (a page never splits an instant; `cut_to_window`), and the periods of
    an aggregated page hold every instance up to `last` (from `first`) and none beyond (`keep_whole_periods`).
    A period of a later page starts at its own timeAt (§4.5.19's range), so periods line up across pages only
    where the instances do."""
    if window is None:
        return None
    total = window.last_n if window.last_n is not None else "*"
    slots = [slot for attrs in history.values() for slot in attrs.values() if slot.instances]
    first = min((s.instances[0] for s in slots), key=_instant)["observedAt"]
    last = max((s.instances[-1] for s in slots), key=_instant)["observedAt"]
    return f"date-time {first}-{last}/{total}"
