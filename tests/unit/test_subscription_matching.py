"""Which changes a subscription is notified of: triggers, watched attributes, selectors, q, tenants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from polis.ngsi_ld.context import ContextCache
from polis.ngsi_ld.events import EntityChange
from polis.settings import Settings
from polis.subscriptions.matching import Compiled, Diff
from polis.subscriptions.model import Subscription, parse_subscription

V = "https://uri.etsi.org/ngsi-ld/default-context/"
NOW = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> ContextCache:
    return ContextCache(Settings().datasets_dir, tmp_path_factory.mktemp("ctx"))


def compiled(contexts: ContextCache, tenant: str = "", **body: Any) -> Compiled:
    terms = contexts.core()
    sub: Subscription = parse_subscription(
        {"type": "Subscription", "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}, **body},
        terms, None, tenant=tenant, now=NOW,
    )
    types = frozenset(t for s in sub.entities for g in s.types.any_of for t in g)
    return Compiled(sub, sub.compiled_q(terms), sub.compiled_geo(), types)


def entity(n: int = 1, etype: str = "Car", **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:{etype}:{n}", "type": [V + etype],
            **{V + k: [{"type": "Property", "value": v}] for k, v in attrs.items()}}


def fires(c: Compiled, new: dict[str, Any] | None, old: dict[str, Any] | None, tenant: str = "") -> str | None:
    kind = "deleted" if new is None else "created" if old is None else "updated"
    eid = (new or old or {})["id"]
    change = EntityChange(tenant, kind, eid, new, old)
    return c.wants(change, Diff(change))


def test_default_triggers_are_attribute_created_and_updated(contexts: ContextCache) -> None:
    c = compiled(contexts, entities=[{"type": "Car"}])
    assert fires(c, entity(speed=1), None) == "attributeCreated"
    assert fires(c, entity(speed=2), entity(speed=1)) == "attributeUpdated"
    assert fires(c, entity(speed=1), entity(speed=1)) is None  # nothing changed
    assert fires(c, entity(), entity(speed=1)) is None  # attributeDeleted is not a default trigger
    assert fires(c, None, entity(speed=1)) is None


def test_entity_updated_covers_deletions_of_attributes(contexts: ContextCache) -> None:
    c = compiled(contexts, entities=[{"type": "Car"}], notificationTrigger=["entityUpdated", "entityDeleted"])
    assert fires(c, entity(), entity(speed=1)) == "attributeDeleted"
    assert fires(c, None, entity(speed=1)) == "entityDeleted"


def test_watched_attributes_and_q(contexts: ContextCache) -> None:
    c = compiled(contexts, watchedAttributes=["speed"], q="speed>10")
    assert fires(c, entity(speed=20, fuel=1), entity(speed=20, fuel=2)) is None  # fuel is not watched
    assert fires(c, entity(speed=5), entity(speed=20)) is None  # q fails after the change
    assert fires(c, entity(speed=30), entity(speed=20)) == "attributeUpdated"
    assert fires(c, entity(etype="Bus", speed=30), None) == "attributeCreated"  # no entities: any type


def test_selectors_and_tenants(contexts: ContextCache) -> None:
    c = compiled(contexts, "city", entities=[{"type": "Car", "id": "urn:ngsi-ld:Car:2"},
                                             {"type": "Bus", "idPattern": "^urn:ngsi-ld:Bus:1"}])
    assert fires(c, entity(2, speed=1), None, "city") == "attributeCreated"
    assert fires(c, entity(1, speed=1), None, "city") is None
    assert fires(c, entity(12, "Bus", speed=1), None, "city") == "attributeCreated"
    assert fires(c, entity(2, "Bus", speed=1), None, "city") is None
    assert fires(c, entity(2, speed=1), None, "") is None  # another tenant
