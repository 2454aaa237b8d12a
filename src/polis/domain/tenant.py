"""Tenant names: what the NGSILD-Tenant header and an MQTT topic's tenant segment may be.

One definition for both doors. A tenant name is shown to operators (metrics, the audit log, response headers,
topics), so a name that identifies a device or a person (`00-1A-2B-3C-4D-5E`, `imei-490154203237518`) is
refused like any other value Polis is sent (polis.privacy.refusal)."""

from __future__ import annotations

import re

from polis.privacy.refusal import RULES, rule_for_value

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}\Z")


def tenant_problem(name: str) -> tuple[str, str | None] | None:
    """None for a usable tenant name; else (why, the privacy rule it breaks or None)."""
    if not _NAME.match(name):
        return "must be 1-64 letters, digits, '_' or '-'", None
    rule = rule_for_value(name)
    if rule is not None:
        return f"is refused by rule '{rule}' ({RULES[rule]}): a tenant name is shown to operators", rule
    return None
