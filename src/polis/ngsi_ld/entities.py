"""Entity operations of NGSI-LD (§5.6, §5.7): the semantics, on top of any `Store`.

Inputs are parsed JSON bodies plus a resolved `TermMap`; outputs are plain results the API adapter
serialises. Every write computes the complete new documents first and hands them to the store in one
call, so a rejected request writes nothing.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import numpy as np

from polis.domain.entity import (
    ENTITY_MEMBERS,
    RESERVED_ATTRIBUTE_MEMBERS,
    Entity,
    HistoryInstance,
    Instance,
    is_plain_number,
    same_instances,
)
from polis.domain.errors import AlreadyExists, BadRequestData, NgsiError, ResourceNotFound
from polis.ngsi_ld.batch_plan import BatchExpansion, expand_batch
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entity_codec import (
    NULL_MARKER,
    compact_entity,
    expand_attribute_instance,
    expand_entity,
    expand_fragment,
    is_null,
    validate_dataset_id,
    validate_entity_id,
    without_null_sub_attributes,
)
from polis.ngsi_ld.events import EntityChange, EventBus
from polis.ngsi_ld.params import narrow_pick
from polis.privacy.refusal import refuse_personal_data
from polis.store.attr_index import IndexColumns
from polis.store.base import EntityQuery, HistoryColumns, QueryResult, Store

P = ParamSpec("P")
R = TypeVar("R")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_observed_at(text: str) -> datetime:
    known = _instants.get(text)
    if known is None:
        known = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if len(_instants) >= 4096:
            _instants.clear()
        _instants[text] = known
    return known


_instants: dict[str, datetime] = {}  # a batch of readings shares a few observedAt values


@dataclass(slots=True)
class UpdateResult:
    """§5.2.18: which attributes were written and which were not, with why."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)

    def body(self, terms: TermMap) -> dict[str, Any]:
        return {
            "updated": [terms.compact(a) for a in self.updated],
            "notUpdated": [{"attributeName": terms.compact(a), "reason": r} for a, r in self.not_updated],
        }


def history_of(entity: Entity, attributes: Sequence[str] | None = None) -> list[HistoryInstance]:
    """Every attribute instance that carries observedAt becomes a temporal instance."""
    items = []
    names = attributes if attributes is not None else [k for k in entity if k not in ENTITY_MEMBERS]
    for name in names:
        for instance in entity.get(name, ()):
            observed = instance.get("observedAt")
            if observed is not None:
                items.append(_history_instance(entity["id"], name, instance, observed))
    return items


def _history_instance(entity_id: str, name: str, instance: Instance, observed: str) -> HistoryInstance:
    stored = {k: v for k, v in instance.items() if k not in ("createdAt", "modifiedAt")}
    return HistoryInstance(entity_id, name, parse_observed_at(observed), stored, instance.get("datasetId"))


class _History:
    """A batch's temporal instances: plain numeric readings go in columns (the bulk of a sensor batch, with
    no object per reading), the rest as `HistoryInstance`s. Same rows in the store as `history_of` gives."""

    _PLAIN = frozenset({"type", "value", "observedAt", "unitCode", "createdAt", "modifiedAt"})

    def __init__(self) -> None:
        self.instances: list[HistoryInstance] = []
        self._ids: list[str] = []
        self._attrs: list[str] = []
        self._times: list[str] = []
        self._values: list[float | int] = []
        self._units: list[str | None] = []

    def add(self, entity: Entity, attributes: Sequence[str]) -> None:
        eid = entity["id"]
        for name in attributes:
            for instance in entity.get(name, ()):
                observed = instance.get("observedAt")
                if observed is None:
                    continue
                # normalized UTC, which numpy reads without the Z; no datasetId (columns have none)
                if observed[-1] == "Z" and is_plain_number(instance, self._PLAIN):
                    self._ids.append(eid)
                    self._attrs.append(name)
                    self._times.append(observed[:-1])
                    self._values.append(instance["value"])
                    self._units.append(instance.get("unitCode"))
                else:
                    self.instances.append(_history_instance(eid, name, instance, observed))

    def columns(self) -> HistoryColumns | None:
        if not self._ids:
            return None
        return HistoryColumns(
            entity_id=np.array(self._ids, dtype=object),
            attribute=np.array(self._attrs, dtype=object),
            observed_at=np.array(self._times, dtype="datetime64[us]"),
            value=np.array(self._values, dtype=np.float64),
            unit_codes=np.array(self._units, dtype=object),
        )


def _refuse(entities: Sequence[Entity], cleared: Set[int] = frozenset()) -> None:
    """422 naming the field and rule before anything is stored (polis.privacy); `cleared`: id() of entities
    a batch plan has already shown the privacy gate (polis.ngsi_ld.batch_plan)."""
    refuse_personal_data([e for e in entities if id(e) not in cleared] if cleared else entities)


def _changes(
    tenant: str, kind: str, entities: Sequence[Entity], previous: Sequence[Entity | None]
) -> list[EntityChange]:
    return [EntityChange(tenant, kind, e["id"], e, before) for e, before in zip(entities, previous, strict=True)]


def _merge_instances(old: list[Instance], new: list[Instance], now: str) -> list[Instance]:
    """Replace the instances of `old` that share a datasetId with one in `new`; keep the rest."""
    by_dataset = {i.get("datasetId"): i for i in old}
    for instance in new:
        previous = by_dataset.get(instance.get("datasetId"))
        merged = dict(instance)  # `new` stays as expanded: a batch redone after a conflict starts from it again
        if previous is not None and "createdAt" in previous:
            merged["createdAt"] = previous["createdAt"]
        merged["modifiedAt"] = now
        by_dataset[instance.get("datasetId")] = merged
    return list(by_dataset.values())


# The value members that merge-patch merges key by key (§5.6.17, §5.6.20: RFC 7396 applies to the values too, as
# the NGSI-LD Primer's and §5.5.12's examples of an address merged with a key set to urn:ngsi-ld:null show): a
# Property's value, a JsonProperty's json and a LanguageProperty's languageMap (one language changed or, with
# null, removed, §4.5.18). A GeoProperty's geometry and the list kinds are replaced whole.
_MERGED_VALUE = {"Property": "value", "JsonProperty": "json", "LanguageProperty": "languageMap"}


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 MergePatch of a value: a JSON object patches an object key by key, recursively, where a key set
    to null (RFC 7396) or to urn:ngsi-ld:null (the NGSI-LD Null, §4.5) is removed; anything else, and an object
    onto what is not one, replaces (an object then loses its null keys). A typed literal ({"@type": "DateTime",
    "@value": ...}) is one value, never merged into or with."""
    if not _is_json_object(patch):
        return patch
    merged = dict(target) if _is_json_object(target) else {}
    for key, value in patch.items():
        if value is None or value == NULL_MARKER:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


def _is_json_object(value: Any) -> bool:
    return isinstance(value, dict) and "@value" not in value


def _merge_instance(before: Instance | None, instance: Instance) -> Instance:
    """RFC 7396 on an attribute instance (or a sub-attribute): onto a stored one of the same kind, members not
    sent survive, the kind's value merges key by key (`_MERGED_VALUE`) and a sub-attribute sent onto a stored
    one merges the same way, recursively. Onto nothing, or another kind, it replaces. Null sub-attributes stay
    here, for `without_null_sub_attributes` to drop with what they delete."""
    member = _MERGED_VALUE.get(instance.get("type", ""))
    if before is None or before.get("type") != instance.get("type"):
        if member is not None and member in instance:  # a new object still loses its null keys
            return {**instance, member: _merge_patch(None, instance[member])}
        return instance
    combined = dict(before)
    for key, value in instance.items():
        old = before.get(key)
        if key == member:
            combined[key] = _merge_patch(old, value)
        elif key not in RESERVED_ATTRIBUTE_MEMBERS and isinstance(value, dict) and isinstance(old, dict):
            combined[key] = _merge_instance(old, value)
        else:
            combined[key] = value
    return combined


def _split_nulls(fragment: dict[str, list[Instance]]) -> tuple[dict[str, list[Instance]], dict[str, set[str | None]]]:
    """A fragment's instances to write, and per attribute the datasetIds its null instances delete."""
    writes: dict[str, list[Instance]] = {}
    nulls: dict[str, set[str | None]] = {}
    for name, instances in fragment.items():
        if not any(is_null(i) for i in instances):
            writes[name] = instances
            continue
        kept = [i for i in instances if not is_null(i)]
        if kept:
            writes[name] = kept
        nulls[name] = {i.get("datasetId") for i in instances if is_null(i)}
    return writes, nulls


def _split_entity_nulls(entity: Entity) -> tuple[Entity, dict[str, set[str | None]]]:
    """`_split_nulls` of a whole (batch) entity: a copy without its null instances, and what they delete."""
    writes, nulls = _split_nulls({k: v for k, v in entity.items() if k not in ENTITY_MEMBERS})
    return {**{k: v for k, v in entity.items() if k in ENTITY_MEMBERS}, **writes}, nulls


def _deleted(instances: list[Instance], datasets: set[str | None]) -> list[Instance]:
    """What a null instance leaves of an attribute: one without datasetId deletes the attribute (as the bare
    null marker does), one with a datasetId deletes that instance."""
    if None in datasets:
        return []
    return [i for i in instances if i.get("datasetId") not in datasets]


def serialised(method: Callable[P, R]) -> Callable[P, R]:
    """Read-modify-write under the service's write lock: two requests changing the same entity must not
    both start from the old document (one update would be lost), and two creates of one id must not both
    succeed. Reads take no lock."""

    @functools.wraps(method)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0].write_lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return locked


class EntityService:
    def __init__(self, store: Store, bus: EventBus, clock: Callable[[], str] = utc_now) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.write_lock = threading.RLock()  # shared by every writer of this hub (temporal API, MQTT ingest)

    # -- single entity -----------------------------------------------------------------------

    def _load(self, tenant: str, entity_id: str) -> Entity:
        validate_entity_id(entity_id)
        found = self.store.get(tenant, [entity_id]).get(entity_id)
        if found is None:
            raise ResourceNotFound(f"entity {entity_id} was not found")
        return found

    def _commit(
        self,
        tenant: str,
        kind: str,
        entities: Sequence[Entity],
        previous: Sequence[Entity | None],
        history: list[HistoryInstance],
        deletes: Sequence[str] = (),
        *,
        history_columns: HistoryColumns | None = None,
        index_columns: IndexColumns | None = None,
        cleared: Set[int] = frozenset(),
    ) -> None:
        _refuse(entities, cleared)
        self.bus.commit(
            _changes(tenant, kind, entities, previous),
            lambda staged: self.store.write(
                tenant,
                upserts=entities,
                deletes=deletes,
                history=history,
                history_columns=history_columns,
                staged=staged,
                index_columns=index_columns,
            ),
        )

    @serialised
    def create(self, tenant: str, body: Any, terms: TermMap) -> str:
        entity = expand_entity(body, terms, self.clock())
        if self.store.get(tenant, [entity["id"]]):
            raise AlreadyExists(f"entity {entity['id']} already exists")
        self._commit(tenant, "created", [entity], [None], history_of(entity))
        return str(entity["id"])

    def retrieve(
        self,
        tenant: str,
        entity_id: str,
        terms: TermMap,
        *,
        attrs: Sequence[str] = (),
        type_iris: Sequence[str] = (),
        fmt: str = "normalized",
        sys_attrs: bool = False,
        pick: set[str] | None = None,
        omit: set[str] | None = None,
        lang: str | None = None,
        dataset_ids: tuple[str | None, ...] | None = None,
    ) -> dict[str, Any]:
        entity = self._load(tenant, entity_id)
        _check_type(entity, type_iris, terms)
        if attrs:
            if not any(a in entity for a in attrs):
                raise ResourceNotFound(f"entity {entity_id} has none of the attributes asked for")
            pick = narrow_pick(pick, tuple(attrs))
        return compact_entity(
            entity, terms, fmt=fmt, sys_attrs=sys_attrs, pick=pick, omit=omit, lang=lang, dataset_ids=dataset_ids
        )

    @serialised
    def replace(self, tenant: str, entity_id: str, body: Any, terms: TermMap) -> None:
        """§5.6.18: the body's attributes become the whole attribute set."""
        old = self._load(tenant, entity_id)
        now = self.clock()
        if not isinstance(body, dict):
            raise BadRequestData("the request body must be a JSON object")
        body = dict(body)
        if body.setdefault("id", entity_id) != entity_id:
            raise BadRequestData(f"the body's id {body['id']} does not match the path's {entity_id}")
        if "type" not in body:
            body["type"] = [terms.compact(t) for t in old["type"]]
        entity = expand_entity(body, terms, now)
        if set(entity["type"]) != set(old["type"]):
            raise BadRequestData(
                f"the body's type {body['type']} does not match the entity's; replace keeps the type (delete and "
                "create to change it)"
            )
        entity["createdAt"] = old.get("createdAt", now)
        self._commit(tenant, "replaced", [entity], [old], history_of(entity))

    @serialised
    def delete(
        self, tenant: str, entity_id: str, *, type_iris: Sequence[str] = (), terms: TermMap | None = None
    ) -> None:
        old = self._load(tenant, entity_id)
        _check_type(old, type_iris, terms)
        changes = [EntityChange(tenant, "deleted", entity_id, None, old)]
        self.bus.commit(changes, lambda staged: self.store.write(tenant, deletes=[entity_id], staged=staged))

    # -- attributes --------------------------------------------------------------------------

    @serialised
    def append_attrs(
        self, tenant: str, entity_id: str, body: Any, terms: TermMap, *, no_overwrite: bool = False
    ) -> UpdateResult:
        """§5.6.3: add attributes; same-named ones are overwritten unless noOverwrite."""
        old = self._load(tenant, entity_id)
        now = self.clock()
        fragment, nulls = _split_nulls(self._fragment(body, terms, now, old))
        entity = dict(old)
        result = UpdateResult()
        written: list[str] = []
        deleted = self._delete_nulls(entity, nulls, result, keep_existing=no_overwrite)
        for name, instances in fragment.items():
            existing = {i.get("datasetId") for i in entity.get(name, ())}
            if no_overwrite and any(i.get("datasetId") in existing for i in instances):
                result.not_updated.append((name, "attribute exists and noOverwrite was asked for"))
                continue
            entity[name] = _merge_instances(entity.get(name, []), instances, now)
            if name not in result.updated:
                result.updated.append(name)
            written.append(name)
        if written or deleted:
            entity["modifiedAt"] = now
            self._commit(tenant, "updated", [entity], [old], _history_for(entity, fragment, written))
        return result

    @serialised
    def update_attrs(self, tenant: str, entity_id: str, body: Any, terms: TermMap) -> UpdateResult:
        """§5.6.2: overwrite existing attributes only; the rest are reported as not updated."""
        old = self._load(tenant, entity_id)
        now = self.clock()
        fragment, nulls = _split_nulls(self._fragment(body, terms, now, old))
        entity = dict(old)
        result = UpdateResult()
        missing = set()
        for name, instances in fragment.items():
            existing = {i.get("datasetId") for i in old.get(name, ())}
            if name not in old or any(i.get("datasetId") not in existing for i in instances):
                result.not_updated.append((name, "attribute does not exist"))
                missing.add(name)
                nulls.pop(name, None)  # the attribute is left as it was, all of it
        deleted = self._delete_nulls(entity, nulls, result)  # first, as in a merge: null, then what is sent
        written = []
        for name, instances in fragment.items():
            if name in missing:
                continue
            entity[name] = _merge_instances(entity.get(name, []), instances, now)
            if name not in result.updated:
                result.updated.append(name)
            written.append(name)
        if written or deleted:
            entity["modifiedAt"] = now
            self._commit(tenant, "updated", [entity], [old], _history_for(entity, fragment, written))
        return result

    @serialised
    def patch_attr(self, tenant: str, entity_id: str, attr: str, body: Any, terms: TermMap) -> None:
        """§5.6.4 partial attribute update: only the members sent change."""
        old = self._load(tenant, entity_id)
        now = self.clock()
        if not isinstance(body, dict):
            raise BadRequestData("the request body must be a JSON object")
        dataset_id = body.get("datasetId")
        if "datasetId" in body:  # malformed is bad data, not a missing instance: check before looking it up
            validate_dataset_id(dataset_id, terms.compact(attr))
        instances = old.get(attr)
        target = next((i for i in instances or () if i.get("datasetId") == dataset_id), None)
        if target is None:
            raise ResourceNotFound(
                f"entity {entity_id} has no attribute {terms.compact(attr)}"
                + (f" with datasetId {dataset_id}" if dataset_id else "")
            )
        merged_body = {k: v for k, v in target.items() if k not in ("createdAt", "modifiedAt")}
        if "value" in body and target.get("type") == "Relationship":
            raise BadRequestData(f"attribute {terms.compact(attr)} is a Relationship: send 'object', not 'value'")
        # Sub-attribute names in the body are short; re-expand the merged instance through the codec (which
        # drops the sub-attributes the body sets to the null marker).
        merged = _compact_sub_attributes(merged_body, terms)
        merged.update(body)
        instance = expand_attribute_instance(terms.compact(attr), merged, terms, now)
        if is_null(instance):  # the value member sent is the null marker: the attribute (instance) goes
            self._delete_instances(tenant, old, attr, dataset_id, now)
            return
        instance["createdAt"] = target.get("createdAt", now)
        entity = dict(old)
        entity[attr] = [instance if i is target else i for i in instances or ()]
        entity["modifiedAt"] = now
        self._commit(tenant, "updated", [entity], [old], history_of({"id": entity_id, attr: [instance]}))

    @serialised
    def replace_attr(self, tenant: str, entity_id: str, attr: str, body: Any, terms: TermMap) -> None:
        """§5.6.19: the attribute instance (the body's datasetId, or the default one) becomes the body. It must
        exist: PUT replaces, it does not add (that is append's job)."""
        old = self._load(tenant, entity_id)
        now = self.clock()
        if attr not in old:
            raise ResourceNotFound(f"entity {entity_id} has no attribute {terms.compact(attr)}")
        # A replacement is a whole attribute, read as on create (a kind needs its value member).
        instance = expand_attribute_instance(terms.compact(attr), body, terms, now, partial=False)
        dataset_id = instance.get("datasetId")
        if not any(i.get("datasetId") == dataset_id for i in old[attr]):
            raise ResourceNotFound(
                f"attribute {terms.compact(attr)} of {entity_id} has no instance with datasetId "
                f"{dataset_id or '(default)'}"
            )
        if is_null(instance):  # replaced by the null marker: deleted, as a partial update to it does
            self._delete_instances(tenant, old, attr, dataset_id, now)
            return
        entity = dict(old)
        entity[attr] = _merge_instances(old[attr], [instance], now)
        entity["modifiedAt"] = now
        self._commit(tenant, "updated", [entity], [old], history_of({"id": entity_id, attr: [instance]}))

    def _delete_instances(self, tenant: str, old: Entity, attr: str, dataset_id: str | None, now: str) -> None:
        """What a null instance of `attr` with this datasetId does (the rule of merge, `_deleted`): without a
        datasetId it deletes the attribute, with one that instance. The caller checked that it exists."""
        entity = dict(old)
        kept = _deleted(old[attr], {dataset_id})
        if kept:
            entity[attr] = kept
        else:
            del entity[attr]
        entity["modifiedAt"] = now
        self._commit(tenant, "updated", [entity], [old], [])

    @serialised
    def delete_attr(
        self,
        tenant: str,
        entity_id: str,
        attr: str,
        terms: TermMap,
        *,
        dataset_id: str | None = None,
        delete_all: bool = False,
    ) -> None:
        old = self._load(tenant, entity_id)
        instances = old.get(attr)
        if not instances:
            raise ResourceNotFound(f"entity {entity_id} has no attribute {terms.compact(attr)}")
        keep = [] if delete_all else [i for i in instances if i.get("datasetId") != dataset_id]
        if len(keep) == len(instances):
            raise ResourceNotFound(
                f"attribute {terms.compact(attr)} of {entity_id} has no instance with datasetId "
                f"{dataset_id or '(default)'}"
            )
        entity = dict(old)
        if keep:
            entity[attr] = keep
        else:
            del entity[attr]
        entity["modifiedAt"] = self.clock()
        self._commit(tenant, "updated", [entity], [old], [])

    @serialised
    def merge(
        self,
        tenant: str,
        entity_id: str,
        body: Any,
        terms: TermMap,
        *,
        observed_at: str | None = None,
        type_iris: Sequence[str] = (),
    ) -> None:
        """§5.6.17 merge-patch: attributes present are added or overwritten; urn:ngsi-ld:null deletes."""
        old = self._load(tenant, entity_id)
        _check_type(old, type_iris, terms)
        entity = self._merged(old, body, terms, self.clock(), observed_at)
        self._commit(tenant, "updated", [entity], [old], _history_for(entity, entity, _changed(old, entity)))

    def _merged(self, old: Entity, body: Any, terms: TermMap, now: str, observed_at: str | None = None) -> Entity:
        if not isinstance(body, dict):
            raise BadRequestData("the request body must be a JSON object")
        # urn:ngsi-ld:null as the attribute or as its kind's value member deletes it (checked like the rest); as
        # a sub-attribute's, it deletes that sub-attribute, so those stay until combined with the stored instance.
        fragment, nulls = _split_nulls(self._fragment(body, terms, now, old, keep_null_sub_attributes=True))
        entity = dict(old)
        self._delete_nulls(entity, nulls, None)
        for name, instances in fragment.items():
            if observed_at is not None:
                for instance in instances:
                    instance.setdefault("observedAt", observed_at)
            merged = []
            previous = {i.get("datasetId"): i for i in entity.get(name, ())}
            for instance in instances:
                merged_instance = _merge_instance(previous.get(instance.get("datasetId")), instance)
                merged.append(without_null_sub_attributes(merged_instance))
            entity[name] = _merge_instances(entity.get(name, []), merged, now)
        entity["modifiedAt"] = now
        return entity

    @staticmethod
    def _delete_nulls(
        entity: Entity, nulls: dict[str, set[str | None]], result: UpdateResult | None, *, keep_existing: bool = False
    ) -> bool:
        """Apply a fragment's null instances to `entity` (a copy); with a `result`, report each attribute (not
        updated where there is nothing to delete, or where `keep_existing`, i.e. noOverwrite). Whether any
        instance was deleted."""
        changed = False
        for name, datasets in nulls.items():
            instances = entity.get(name, [])
            kept = _deleted(instances, datasets)
            if len(kept) == len(instances):
                if result is not None:
                    result.not_updated.append((name, "attribute does not exist"))
                continue
            if keep_existing:
                if result is not None:
                    result.not_updated.append((name, "attribute exists and noOverwrite was asked for"))
                continue
            if kept:
                entity[name] = kept
            else:
                entity.pop(name, None)
            changed = True
            if result is not None:
                result.updated.append(name)
        return changed

    def _fragment(
        self, body: Any, terms: TermMap, now: str, old: Entity, *, keep_null_sub_attributes: bool = False
    ) -> dict[str, list[Instance]]:
        if not isinstance(body, dict):
            raise BadRequestData("the request body must be a JSON object of attributes")
        body = dict(body)
        body.pop("@context", None)
        if "id" in body and body.pop("id") != old["id"]:
            raise BadRequestData(f"the body's id does not match the entity {old['id']}")
        body.pop("type", None)
        fragment = expand_fragment(body, terms, now, keep_null_sub_attributes=keep_null_sub_attributes) if body else {}
        if not fragment:
            raise BadRequestData("the request body holds no attributes")
        return fragment

    # -- query -------------------------------------------------------------------------------

    def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        return self.store.query(tenant, query)

    # -- batch -------------------------------------------------------------------------------

    def batch(
        self,
        tenant: str,
        op: str,
        items: Any,
        terms_for: Callable[[Any], TermMap],
        *,
        replace: bool = True,
        no_overwrite: bool = False,
    ) -> BatchResult:
        """§5.6.7–5.6.10, §5.6.20: each item succeeds or fails on its own; all successes are written
        in one store call. An id appearing twice in one batch is a conflict for the later items.

        The items are expanded before the write lock is taken (that needs no stored state), and a create or
        upsert is also worked out and prepared before it (`_batch_prepared`), so one request's Python runs
        while another's transaction is in the store, which works outside the GIL."""
        if not isinstance(items, list):
            raise BadRequestData("a batch operation takes a JSON array")
        if not items:
            raise BadRequestData("the batch is empty")
        if op == "delete":
            with self.write_lock:
                return self._batch_delete(tenant, items, BatchResult())
        now = self.clock()
        expansion = expand_batch(items, terms_for, now)
        work = functools.partial(
            self._batch_changes, tenant, op, items, terms_for, expansion, now, replace, no_overwrite
        )
        if op in ("create", "upsert"):
            done = self._batch_prepared(tenant, expansion, work)
            if done is not None:
                return done
        with self.write_lock:
            batch = work()
            if batch.writes:
                # Index rows built with the plans hold for documents written as expanded (a replaced entity's
                # own createdAt is not indexed); the store matches them by identity, so merged documents get
                # their own.
                self._commit(
                    tenant,
                    "batch",
                    batch.writes,
                    batch.before,
                    batch.history.instances,
                    history_columns=batch.history.columns(),
                    index_columns=expansion.index,
                    cleared=expansion.cleared,
                )
            return batch.result

    def _batch_prepared(
        self, tenant: str, expansion: BatchExpansion, work: Callable[[], _BatchChanges]
    ) -> BatchResult | None:
        """A create or upsert worked out from the stored state without the write lock, then written under it
        if no other write touched its entities meanwhile (else None: the caller does it all under the lock).
        Under the lock are then only the check and the store's transaction, which runs outside the GIL: one
        request's SQL overlaps the next one's Python."""
        store = self.store
        snapshot = store.commit_number()
        batch = work()
        if not batch.writes:
            return None
        _refuse(batch.writes, expansion.cleared)
        prepared = store.prepare(
            tenant,
            upserts=batch.writes,
            history=batch.history.instances,
            history_columns=batch.history.columns(),
            index_columns=expansion.index,
        )
        with self.write_lock:
            if not store.unchanged_since(tenant, (e["id"] for e in batch.writes), snapshot):
                return None
            self.bus.commit(
                _changes(tenant, "batch", batch.writes, batch.before), lambda staged: store.apply(prepared, staged)
            )
        return batch.result

    def _batch_changes(
        self,
        tenant: str,
        op: str,
        items: list[Any],
        terms_for: Callable[[Any], TermMap],
        expansion: BatchExpansion,
        now: str,
        replace: bool,
        no_overwrite: bool,
    ) -> _BatchChanges:
        """Each item's new document (or error) against the stored state, and the history it adds."""
        batch = _BatchChanges()
        result = batch.result
        parsed: list[tuple[Entity, Any]] = []
        seen: set[str] = set()
        for position, (item, entity) in enumerate(zip(items, expansion.entities, strict=True)):
            if isinstance(entity, NgsiError):
                result.fail_item(position, item.get("id") if isinstance(item, dict) else None, entity)
            elif entity["id"] in seen:
                error = BadRequestData(f"entity {entity['id']} appears more than once in this batch")
                result.fail(entity["id"], error)
            else:
                seen.add(entity["id"])
                parsed.append((entity, item))
        existing = self.store.get(tenant, [e["id"] for e, _ in parsed])
        for entity, item in parsed:
            eid = entity["id"]
            old = existing.get(eid)
            nulls: dict[str, set[str | None]] = {}
            if id(entity) in expansion.nulls:
                # Null instances are left out of a new or replacing entity, and delete in an update (as in
                # append and update attrs). A copy: a batch redone after a conflict starts from `entity` again.
                entity, nulls = _split_entity_nulls(entity)
            try:
                if op == "create":
                    if old is not None:
                        raise AlreadyExists(f"entity {eid} already exists")
                    new = entity
                    new["createdAt"] = now  # set again: a batch redone after a conflict reuses its documents
                elif op == "upsert":
                    if old is None:
                        result.created.append(eid)
                        new = entity
                        new["createdAt"] = now
                    elif replace:
                        new = entity
                        new["createdAt"] = old.get("createdAt", now)
                    else:
                        new = self._merge_attrs(old, entity, now, no_overwrite=False, nulls=nulls)
                elif op == "update":
                    if old is None:
                        raise ResourceNotFound(f"entity {eid} was not found")
                    new = self._merge_attrs(old, entity, now, no_overwrite=no_overwrite, nulls=nulls)
                elif op == "merge":
                    if old is None:
                        raise ResourceNotFound(f"entity {eid} was not found")
                    body = {k: v for k, v in item.items() if k not in ("id", "type", "@context")}
                    new = self._merged(old, body, terms_for(item), now)
                else:  # pragma: no cover - the router only passes the operations above
                    raise BadRequestData(f"unknown batch operation {op}")
            except NgsiError as error:
                result.fail(eid, error)
                continue
            batch.writes.append(new)
            batch.before.append(old)
            batch.history.add(new, _changed(old, new))
            result.success.append(eid)
        return batch

    @classmethod
    def _merge_attrs(
        cls,
        old: Entity,
        entity: Entity,
        now: str,
        *,
        no_overwrite: bool,
        nulls: dict[str, set[str | None]] | None = None,
    ) -> Entity:
        """A batch update (or upsert with update): `entity`'s attributes onto `old`, after the deletions its
        null instances ask for (`_split_entity_nulls`; kept under noOverwrite, as append does)."""
        new = dict(old)
        if nulls:
            cls._delete_nulls(new, nulls, None, keep_existing=no_overwrite)
        for name, instances in entity.items():
            if name in ENTITY_MEMBERS:
                continue
            if no_overwrite and name in old:
                continue
            new[name] = _merge_instances(old.get(name, []), instances, now)
        new["modifiedAt"] = now
        return new

    def _batch_delete(self, tenant: str, items: list[Any], result: BatchResult) -> BatchResult:
        ids: list[str] = []
        for position, item in enumerate(items):
            try:
                eid = validate_entity_id(item)
                if eid in ids:
                    raise BadRequestData(f"entity {eid} appears more than once in this batch")
                ids.append(eid)
            except NgsiError as error:
                result.fail_item(position, item, error)
        existing = self.store.get(tenant, ids)
        for eid in ids:
            if eid in existing:
                result.success.append(eid)
            else:
                result.fail(eid, ResourceNotFound(f"entity {eid} was not found"))
        if result.success:
            changes = [EntityChange(tenant, "deleted", eid, None, existing[eid]) for eid in result.success]
            self.bus.commit(changes, lambda staged: self.store.write(tenant, deletes=result.success, staged=staged))
        return result


@dataclass(slots=True)
class _BatchChanges:
    result: BatchResult = field(default_factory=lambda: BatchResult())
    writes: list[Entity] = field(default_factory=list)
    before: list[Entity | None] = field(default_factory=list)
    history: _History = field(default_factory=lambda: _History())


@dataclass(slots=True)
class BatchResult:
    """§5.2.16 BatchOperationResult, plus the ids an upsert created (for its 201 body)."""

    success: list[str] = field(default_factory=list)
    errors: list[tuple[str, NgsiError]] = field(default_factory=list)  # BatchEntityError (§5.2.17)
    created: list[str] = field(default_factory=list)

    def fail(self, entity_id: str, error: NgsiError) -> None:
        self.errors.append((entity_id, error))

    def fail_item(self, position: int, sent_id: Any, error: NgsiError) -> None:
        """An item refused before it had an entity id (`sent_id`: what it sent as one). BatchEntityError's
        entityId is mandatory and a URI (§5.2.17), so it is never null: an id sent as a string is reported as
        sent, URI or not (the client knows the item by it; Orion-LD does the same); an item with no string id
        (none, a number, an object, null, or not an object at all) is reported under urn:ngsi-ld:null, the
        spec's own null where a URI is required, with its place in the request in the detail to find it by."""
        if isinstance(sent_id, str) and sent_id:
            self.fail(sent_id, error)
        else:
            located = type(error)(f"item {position} of the batch (counted from 0): {error.detail}", **error.extra)
            self.fail(NULL_MARKER, located)

    def body(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "errors": [{"entityId": eid, "error": err.problem()} for eid, err in self.errors],
        }


def _check_type(entity: Entity, type_iris: Sequence[str], terms: TermMap | None) -> None:
    """ResourceNotFound when a request named types (`?type=`, expanded) and the entity has none of them."""
    if type_iris and not set(type_iris) & set(entity["type"]):
        shown = [terms.compact(t) for t in type_iris] if terms is not None else list(type_iris)
        raise ResourceNotFound(f"entity {entity['id']} is not of type {', '.join(shown)}")


def _changed(old: Entity | None, new: Entity) -> list[str]:
    """Attributes whose instances differ: only those enter the history on an update."""
    if old is None:
        return [k for k in new if k not in ENTITY_MEMBERS]
    return [k for k in new if k not in ENTITY_MEMBERS and not same_instances(new[k], old.get(k))]


def _history_for(entity: Entity, fragment: dict[str, Any], names: Sequence[str]) -> list[HistoryInstance]:
    return history_of({"id": entity["id"], **{n: entity[n] for n in names if n in fragment and n in entity}})


def _compact_sub_attributes(instance: Instance, terms: TermMap) -> dict[str, Any]:
    """An instance's sub-attribute keys back to short names, so the codec can re-expand the merge."""
    return {k if k in RESERVED_ATTRIBUTE_MEMBERS else terms.compact(k): v for k, v in instance.items()}
