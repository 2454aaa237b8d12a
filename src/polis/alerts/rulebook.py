"""The declared rules, per tenant, kept in one JSON file under the hub's data directory so they survive a
restart (written whole to a temporary file, then renamed: a crash leaves the old or the new set)."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson

from polis.alerts.rules import AnyRule, parse_rule, rule_json, rule_problems
from polis.domain.errors import NgsiError

log = logging.getLogger(__name__)


class RuleBook:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rules: dict[str, dict[str, AnyRule]] = {}
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

    def all(self) -> list[tuple[str, AnyRule]]:
        with self._lock:
            return [(tenant, rule) for tenant, rules in self._rules.items() for rule in rules.values()]

    def of(self, tenant: str) -> list[AnyRule]:
        with self._lock:
            return list(self._rules.get(tenant, {}).values())

    def get(self, tenant: str, rule_id: str) -> AnyRule | None:
        with self._lock:
            return self._rules.get(tenant, {}).get(rule_id)

    def put(self, tenant: str, rule: AnyRule) -> AnyRule:
        """Insert or replace; a rule without an id gets one."""
        if rule.id is None:
            rule = rule.model_copy(update={"id": f"rule-{uuid.uuid4().hex[:12]}"})
        with self._lock:
            self._rules.setdefault(tenant, {})[str(rule.id)] = rule
            self._forget_refused(tenant, str(rule.id))  # a valid rule replaces one no longer accepted
            self._save()
        return rule

    def delete(self, tenant: str, rule_id: str) -> bool:
        with self._lock:
            found = self._rules.get(tenant, {}).pop(rule_id, None) is not None
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
        items: list[dict[str, Any]] = [
            {"tenant": t, "rule": rule_json(r)} for t, rules in self._rules.items() for r in rules.values()
        ]
        items += self._refused
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(items, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)
