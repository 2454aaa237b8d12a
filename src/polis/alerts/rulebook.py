"""The declared rules, per tenant, kept in one JSON file under the hub's data directory so they survive a
restart (written whole to a temporary file, then renamed: a crash leaves the old or the new set).

Each rule is kept with its owner (`RuleOwner`: the declaring department and the datasets it may watch), beside
the rule's own JSON so that no client sets it. A rule saved by an older Polis has none recorded: `unowned`
lists them and the engine decides theirs at its start (`polis.alerts.engine.legacy_owner`)."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson

from polis.alerts.rules import OPERATOR, AnyRule, RuleOwner, parse_rule, rule_json, rule_problems
from polis.domain.errors import NgsiError

log = logging.getLogger(__name__)


class RuleBook:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rules: dict[str, dict[str, AnyRule]] = {}
        self._owners: dict[tuple[str, str], RuleOwner] = {}  # (tenant, rule id); none: saved by an older Polis
        # Stored rules that today's checks refuse (stricter than when they were submitted): kept in the file as
        # they are, logged and not run, rather than stopping the hub from starting.
        self._refused: list[dict[str, Any]] = []
        if path.is_file():
            for item in orjson.loads(path.read_bytes()):
                try:
                    rule = parse_rule(item["rule"], stored=True)
                except NgsiError as error:
                    log.error("alert rule %r is no longer accepted and is not run: %s", item["rule"].get("id"), error)
                    self._refused.append(item)
                    continue
                # Field combinations refused since the rule was saved (updateIntervalS at or above validityS)
                # make it work less well, not unsafely: a rule that stopped would raise no alert at all, so it
                # runs, and the operator is told at every start until it is replaced with a valid one.
                for field, reason in rule_problems(rule):
                    log.warning("alert rule %r runs but would be refused now: %s: %s", rule.id, field, reason)
                self._rules.setdefault(item["tenant"], {})[str(rule.id)] = rule
                if "owner" in item:
                    try:
                        self._owners[(item["tenant"], str(rule.id))] = RuleOwner.from_json(item["owner"])
                    except ValueError:  # damaged: decided again like an older Polis's rule, never as "everything"
                        log.warning("alert rule %r: its recorded owner is damaged", rule.id)

    def all(self) -> list[tuple[str, AnyRule]]:
        with self._lock:
            return [(tenant, rule) for tenant, rules in self._rules.items() for rule in rules.values()]

    def of(self, tenant: str) -> list[AnyRule]:
        with self._lock:
            return list(self._rules.get(tenant, {}).values())

    def get(self, tenant: str, rule_id: str) -> AnyRule | None:
        with self._lock:
            return self._rules.get(tenant, {}).get(rule_id)

    def owner(self, tenant: str, rule_id: str) -> RuleOwner | None:
        """Who declared the rule and what it may watch; None: not recorded (saved by an older Polis)."""
        with self._lock:
            return self._owners.get((tenant, rule_id))

    def unowned(self) -> list[tuple[str, AnyRule]]:
        """The rules saved without an owner (by an older Polis)."""
        return [(t, r) for t, r in self.all() if self.owner(t, str(r.id)) is None]

    def set_owners(self, owners: dict[tuple[str, str], RuleOwner]) -> None:
        """Record the owners of these (tenant, rule id)s, in one write."""
        with self._lock:
            for (tenant, rule_id), owner in owners.items():
                if rule_id in self._rules.get(tenant, {}):
                    self._owners[(tenant, rule_id)] = owner
            self._save()

    def put(self, tenant: str, rule: AnyRule, owner: RuleOwner = OPERATOR) -> AnyRule:
        """Insert or replace; a rule without an id gets one. `owner`: the operator unless a department declared it
        over the API (the CLI and the demo write the operator's rules)."""
        if rule.id is None:
            rule = rule.model_copy(update={"id": f"rule-{uuid.uuid4().hex[:12]}"})
        with self._lock:
            self._rules.setdefault(tenant, {})[str(rule.id)] = rule
            self._owners[(tenant, str(rule.id))] = owner
            self._forget_refused(tenant, str(rule.id))  # a valid rule replaces one no longer accepted
            self._save()
        return rule

    def delete(self, tenant: str, rule_id: str) -> bool:
        with self._lock:
            found = self._rules.get(tenant, {}).pop(rule_id, None) is not None
            self._owners.pop((tenant, rule_id), None)
            found = self._forget_refused(tenant, rule_id) or found  # one no longer accepted can be deleted too
            if found:
                self._save()
            return found

    def _forget_refused(self, tenant: str, rule_id: str) -> bool:
        """Drop the saved rules of this id that are no longer accepted; whether there were any."""
        def same(item: dict[str, Any]) -> bool:
            rule = item.get("rule")
            return item.get("tenant") == tenant and isinstance(rule, dict) and rule.get("id") == rule_id

        kept = [item for item in self._refused if not same(item)]
        dropped = len(kept) != len(self._refused)
        self._refused = kept
        return dropped

    def _save(self) -> None:
        items: list[dict[str, Any]] = []
        for tenant, rules in self._rules.items():
            for rule in rules.values():
                item: dict[str, Any] = {"tenant": tenant, "rule": rule_json(rule)}
                owner = self._owners.get((tenant, str(rule.id)))
                if owner is not None:  # an older Polis's rule keeps none until the engine has decided it
                    item["owner"] = owner.to_json()
                items.append(item)
        items += self._refused
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(items, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)
