"""Tenant names: what the NGSILD-Tenant header and an MQTT topic's tenant segment may be.

One definition for both doors. A tenant name is shown to operators (metrics, the audit log, response headers,
topics), so a new tenant may not be named by a device identifier (`00-1A-2B-3C-4D-5E`, `imei-490154203237518`:
polis.privacy.refusal's rule). Only that rule: the pattern leaves no room for an e-mail address, and the
whole-value phone rule would refuse date-stamped or numbered tenants (`20261127-2150`, `100-200-300`)."""

from __future__ import annotations

import re

from polis.privacy.refusal import RULES, rule_for_value

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}\Z")
_DEVICE = "device-identifier"


def tenant_problem(name: str) -> tuple[str, str | None] | None:
    """None for a usable tenant name; else (why, the privacy rule it breaks or None). The reason never repeats
    a name refused by the rule (it would be kept, in a dead letter or a log)."""
    if not _NAME.match(name):
        return "must be 1-64 letters, digits, '_' or '-'", None
    if rule_for_value(name) == _DEVICE:
        return f"is refused by rule '{_DEVICE}' ({RULES[_DEVICE]}): a tenant name is shown to operators", _DEVICE
    return None
