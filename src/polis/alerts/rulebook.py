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

from polis.alerts.rules import AnyRule, parse_rule, rule_json
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
                    rule = parse_rule(item["rule"])
                except NgsiError as error:
                    log.error("alert rule %r is no longer accepted and is not run: %s", item["rule"].get("id"), error)
                    self._refused.append(item)
                    continue
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
            self._save()
        return rule

    def delete(self, tenant: str, rule_id: str) -> bool:
        with self._lock:
            found = self._rules.get(tenant, {}).pop(rule_id, None)
            if found is not None:
                self._save()
            return found is not None

    def _save(self) -> None:
        items: list[dict[str, Any]] = [
            {"tenant": t, "rule": rule_json(r)} for t, rules in self._rules.items() for r in rules.values()
        ]
        items += self._refused
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(items, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)
