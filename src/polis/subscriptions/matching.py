"""Which committed changes a subscription is notified of (§5.8, the triggers of §5.2.12).

A change matches when the entity is one the subscription selects (tenant, type, id or idPattern), one of
its watched attributes (any attribute without watchedAttributes) changed in a way the triggers name,
and the entity satisfies `q` and `geoQ` after the change (before it, for a deletion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polis.domain.entity import ENTITY_MEMBERS, Entity, same_instances
from polis.ngsi_ld.events import EntityChange
from polis.ngsi_ld.geoquery import GeoQuery
from polis.ngsi_ld.geoquery import matches as geo_matches
from polis.ngsi_ld.q import QExpr, client_regex
from polis.ngsi_ld.q import matches as q_matches
from polis.subscriptions.model import Selector, Subscription


@dataclass(frozen=True, slots=True)
class Compiled:
    """A subscription with its q and geo-query parsed once, ready for the write path."""

    sub: Subscription
    q: QExpr | None
    geo: GeoQuery | None
    type_iris: frozenset[str]  # every type any selector names: a cheap first test

    def wants(self, change: EntityChange, diff: Diff) -> str | None:
        """The trigger that fires for this change, or None."""
        sub = self.sub
        if change.tenant != sub.tenant:
            return None
        state = change.entity if change.entity is not None else change.previous
        if state is None or not self._selected(state):
            return None
        trigger = _trigger(sub, change, diff)
        if trigger is None:
            return None
        if self.q is not None and not q_matches(self.q, state):
            return None
        if self.geo is not None and not _geo_ok(self.geo, state):
            return None
        return trigger

    def _selected(self, entity: Entity) -> bool:
        if not self.sub.entities:
            return True
        types = entity.get("type") or ()
        if self.type_iris.isdisjoint(types):
            return False
        return any(_selector_matches(s, entity, types) for s in self.sub.entities)


def _selector_matches(selector: Selector, entity: Entity, types: Any) -> bool:
    if not any(all(t in types for t in group) for group in selector.types.any_of):
        return False
    if selector.id is not None:
        return bool(entity.get("id") == selector.id)
    if selector.id_pattern is not None:
        return client_regex(selector.id_pattern).search(str(entity.get("id", ""))) is not None
    return True




def _geo_ok(geo: GeoQuery, entity: Entity) -> bool:
    return any(
        instance.get("type") == "GeoProperty"
        and isinstance(instance.get("value"), dict)
        and geo_matches(geo, instance["value"])
        for instance in entity.get(geo.geoproperty, ())
        if isinstance(instance, dict)
    )


class Diff:
    """Which attributes a change created, updated and deleted; computed once per change, when first asked."""

    __slots__ = ("_change", "_done", "created", "deleted", "updated")

    def __init__(self, change: EntityChange) -> None:
        self._change = change
        self._done = False
        self.created: set[str] = set()
        self.updated: set[str] = set()
        self.deleted: set[str] = set()

    def compute(self) -> Diff:
        if self._done:
            return self
        self._done = True
        new = self._change.entity or {}
        old = self._change.previous or {}
        for name, instances in new.items():
            if name in ENTITY_MEMBERS:
                continue
            before = old.get(name)
            if before is None:
                self.created.add(name)
            elif not same_instances(instances, before):
                self.updated.add(name)
        if self._change.entity is not None:
            self.deleted = {n for n in old if n not in ENTITY_MEMBERS and n not in new}
        return self


def _trigger(sub: Subscription, change: EntityChange, diff: Diff) -> str | None:
    triggers = sub.triggers
    if change.entity is None:
        return "entityDeleted" if "entityDeleted" in triggers else None
    if change.previous is None and "entityCreated" in triggers:
        return "entityCreated"
    diff.compute()
    watched = sub.watched

    def hit(names: set[str]) -> bool:
        return bool(names) and (not watched or any(a in names for a in watched))

    if ("attributeCreated" in triggers or "entityUpdated" in triggers) and hit(diff.created):
        return "attributeCreated"
    if ("attributeUpdated" in triggers or "entityUpdated" in triggers) and hit(diff.updated):
        return "attributeUpdated"
    if ("attributeDeleted" in triggers or "entityUpdated" in triggers) and hit(diff.deleted):
        return "attributeDeleted"
    return None
