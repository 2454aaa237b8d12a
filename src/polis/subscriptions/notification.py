"""The Notification payload (§5.3.1) and its headers, built from outbox items at delivery time (off the
write path): entities compacted with the subscription's context, in its format, with only its attributes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from polis.domain.entity import ENTITY_MEMBERS, LOCATION, VALUE_MEMBER, Entity
from polis.ngsi_ld.context import CORE_CONTEXT_URL, TermMap
from polis.ngsi_ld.entity_codec import compact_entity
from polis.subscriptions.model import Subscription

JSONLD_REL = "http://www.w3.org/ns/json-ld#context"
TENANT_HEADER = "NGSILD-Tenant"
_PREVIOUS = {"Property": "previousValue", "GeoProperty": "previousValue", "Relationship": "previousObject",
             "LanguageProperty": "previousLanguageMap"}


@dataclass(frozen=True, slots=True)
class Change:
    """One matched entity change as the outbox keeps it (expanded names)."""

    entity: Entity | None  # the new state; None when the entity was deleted
    previous: Entity | None  # kept only where the notification needs it (showChanges, deletions)
    trigger: str

    def to_json(self) -> dict[str, Any]:
        return {"e": self.entity, "p": self.previous, "t": self.trigger}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Change:
        return cls(raw.get("e"), raw.get("p"), raw.get("t", "attributeUpdated"))


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One notification waiting for delivery; `seq` orders a subscription's notifications."""

    seq: int
    tenant: str
    subscription_id: str
    notification_id: str
    notified_at: str
    changes: tuple[Change, ...]


def new_notification_id() -> str:
    return f"urn:ngsi-ld:Notification:{uuid.uuid4()}"


def build(sub: Subscription, terms: TermMap, items: list[OutboxItem]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one notification carrying `items` (one, or several merged by throttling:
    the first item's id and time, every change in order)."""
    first = items[0]
    changes = [(item, change) for item in items for change in item.changes]
    data = [_entity(sub, terms, change, item.notified_at) for item, change in changes]
    body: dict[str, Any] = {
        "id": first.notification_id,
        "type": "Notification",
        "subscriptionId": sub.id,
        "notifiedAt": first.notified_at,
        "data": data,
    }
    accept = sub.endpoint.accept
    headers = {"Content-Type": accept}
    if accept == "application/ld+json":
        body["@context"] = _context_value(terms)
    else:
        headers["Link"] = _link_header(terms)
        if accept == "application/geo+json":
            body["data"] = _feature_collection(data, [_geometry(sub, change) for _, change in changes])
    if sub.tenant:
        headers[TENANT_HEADER] = sub.tenant
    for key, value in sub.endpoint.receiver_info:
        headers[key] = value
    return orjson.dumps(body), headers


def _entity(sub: Subscription, terms: TermMap, change: Change, notified_at: str) -> dict[str, Any]:
    if change.entity is None:
        old = change.previous or {}
        types = old.get("type") or []
        return {
            "id": old.get("id"),
            "type": terms.compact(types[0]) if len(types) == 1 else [terms.compact(t) for t in types],
            "deletedAt": notified_at,
        }
    pick = {"id", "type", *sub.attributes} if sub.attributes else None
    out = compact_entity(change.entity, terms, fmt=sub.fmt, sys_attrs=sub.sys_attrs, pick=pick, lang=sub.lang)
    if sub.show_changes and change.previous is not None:
        _add_previous(out, change.entity, change.previous, terms, pick)
    return out


def _add_previous(out: dict[str, Any], new: Entity, old: Entity, terms: TermMap, pick: set[str] | None) -> None:
    """showChanges: previousValue / previousObject / previousLanguageMap on attributes whose value changed
    (default instance only)."""
    for name, instances in new.items():
        if name in ENTITY_MEMBERS or (pick is not None and name not in pick):
            continue
        if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
            continue
        before = old.get(name)
        if not isinstance(before, list) or len(before) != 1:
            continue
        kind = instances[0].get("type", "Property")
        member = VALUE_MEMBER.get(kind, "value")
        previous_key = _PREVIOUS.get(kind)
        if previous_key is None or before[0].get(member) == instances[0].get(member):
            continue
        short = terms.compact(name)
        shown = out.get(short)
        if not isinstance(shown, dict):  # a bare concise value: give it its object form to hold the change
            shown = out[short] = {member: shown}
        shown[previous_key] = before[0].get(member)


def _context_value(terms: TermMap) -> Any:
    urls = list(terms.urls)
    if CORE_CONTEXT_URL not in urls:
        urls.append(CORE_CONTEXT_URL)
    return urls[0] if len(urls) == 1 else urls


def _link_header(terms: TermMap) -> str:
    urls = [u for u in terms.urls if u != CORE_CONTEXT_URL]
    return f'<{urls[0] if urls else CORE_CONTEXT_URL}>; rel="{JSONLD_REL}"; type="application/ld+json"'


def _geometry(sub: Subscription, change: Change) -> Any:
    """The Feature's geometry: the value of the entity's `location` GeoProperty, decided on the stored entity,
    before compaction, because keyValues shows a GeoProperty and a Property holding a GeoJSON-shaped object
    alike; None when there is none, or the notification leaves location out."""
    entity = change.entity
    if entity is None or (sub.attributes and LOCATION not in sub.attributes):
        return None
    instances = entity.get(LOCATION)
    first = instances[0] if isinstance(instances, list) and instances else None
    if not isinstance(first, dict) or first.get("type") != "GeoProperty":
        return None
    value = first.get("value")
    return value if isinstance(value, dict) else None


def _feature_collection(data: list[dict[str, Any]], geometries: list[Any]) -> dict[str, Any]:
    features = [
        {
            "id": entity.get("id"),
            "type": "Feature",
            "geometry": geometry,
            "properties": {k: v for k, v in entity.items() if k != "id"},
        }
        for entity, geometry in zip(data, geometries, strict=True)
    ]
    return {"type": "FeatureCollection", "features": features}
