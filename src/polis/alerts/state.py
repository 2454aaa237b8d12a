"""What the engine remembers across a restart besides its alerts (`messages.jsonl`): per rule, each sensor's
latest reading time (an older reading is late, and the hub takes a repeated one as no change: a gateway
resending its buffer after a restart must not raise the incident again) and the lifecycles between alerts (a
condition waiting out its minimum duration, the cooldown after an all-clear). Open alerts need nothing here:
their records say it.

One JSON file, `alerts/state.json`, keyed like `backfilled.json` ("<tenant>/<rule id>") and written whole to
a temporary file, then renamed: a kill mid-write leaves the previous state, never half a file. The engine
writes it at most once a second while readings flow (`engine.STATE_SAVE_S`) and at shutdown, so a crash loses
at most the last second's reading times. A rule's entry holds its definition's fingerprint: a changed rule
starts afresh, as it does without a restart.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from polis.alerts.evaluate import CompiledRule
from polis.alerts.lifecycle import Phase

log = logging.getLogger(__name__)

KEPT = (Phase.PENDING, Phase.COOLING)  # ACTIVE comes back from the alert records, IDLE is the default


def fingerprint(rule: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(rule, option=orjson.OPT_SORT_KEYS)).hexdigest()


def state_key(compiled: CompiledRule) -> str:
    return f"{compiled.tenant}/{compiled.rule_id}"


def _at(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def lane_state(compiled: CompiledRule) -> dict[str, Any]:
    """A rule's live state as JSON (full-precision times: a reading a microsecond later is not late)."""
    return {
        "rule": fingerprint(compiled.json),
        "lastAt": {subject: at.isoformat() for subject, at in compiled.last_at.items()},
        "trackers": {
            subject: {
                "phase": t.phase.value,
                "since": t.since.isoformat() if t.since else None,
                "cancelledAt": t.cancelled_at.isoformat() if t.cancelled_at else None,
            }
            for subject, t in compiled.trackers.items()
            if t.phase in KEPT
        },
    }


def restore_lane(compiled: CompiledRule, saved: Any) -> None:
    """Put a rule's saved state back, if it was saved for this very definition."""
    if not isinstance(saved, dict) or saved.get("rule") != fingerprint(compiled.json):
        return
    try:
        last_at = {str(s): at for s, text in dict(saved.get("lastAt") or {}).items() if (at := _at(text))}
        trackers = dict(saved.get("trackers") or {})
        for subject, kept in trackers.items():
            phase = Phase(kept["phase"])
            if phase not in KEPT:
                continue
            tracker = compiled.tracker(str(subject))
            tracker.phase, tracker.since, tracker.cancelled_at = phase, _at(kept["since"]), _at(kept["cancelledAt"])
    except (KeyError, TypeError, ValueError):  # a damaged entry costs the rule its memory, not the hub its start
        log.warning("alert rule %s: its saved state is damaged and was dropped", compiled.rule_id)
        compiled.trackers.clear()
        return
    compiled.last_at.update(last_at)
    compiled.clock = max(last_at.values(), default=None)


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved: dict[str, Any] = {}
        if path.is_file():
            try:
                self.saved = dict(orjson.loads(path.read_bytes()))
            except (orjson.JSONDecodeError, TypeError, ValueError):
                log.warning("%s is damaged: the alert rules start without their saved state", path)

    def get(self, key: str) -> Any:
        return self.saved.get(key)

    def save(self, lanes: dict[str, dict[str, Any]], keep: set[str]) -> None:
        """Write `lanes` over their rules' entries; entries of rules not in `keep` (deleted) go."""
        self.saved = {k: v for k, v in self.saved.items() if k in keep} | lanes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_suffix(".json.tmp")
        staged.write_bytes(orjson.dumps(self.saved))
        staged.replace(self.path)
