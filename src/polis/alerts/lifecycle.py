"""One alert's life, per rule and subject (a sensor, or a burst's group): raised once, updated while the
condition lasts, cancelled when it clears, and kept quiet for a cooldown after that.

Time is the observations' own time (observedAt), not the wall clock: a replay at 60x real time and a
test feeding readings a second apart see the same minimum durations and cooldowns as live sensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

Decision = Literal["raise", "update", "cancel"]


@dataclass(frozen=True, slots=True)
class Signal:
    """What one evaluation found. `on`: the condition holds; `off`: it has cleared beyond the hysteresis
    band. Neither: inside the band, so the current state stands (that is what stops flapping)."""

    on: bool
    off: bool
    value: float
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)


class Phase(Enum):
    IDLE = "idle"
    PENDING = "pending"  # condition holds, not yet for the minimum duration
    ACTIVE = "active"
    COOLING = "cooling"  # cancelled; no new alert until the cooldown has passed


@dataclass(slots=True)
class Tracker:
    min_duration_s: float = 0.0
    cooldown_s: float = 0.0
    update_interval_s: float = 300.0
    phase: Phase = Phase.IDLE
    since: datetime | None = None  # when the condition started holding (onset)
    cancelled_at: datetime | None = None
    updated_at: datetime | None = None

    def step(self, at: datetime, signal: Signal) -> Decision | None:
        if self.phase is Phase.COOLING:
            if self.cancelled_at is not None and (at - self.cancelled_at).total_seconds() < self.cooldown_s:
                return None
            self.phase = Phase.IDLE
        if self.phase is Phase.IDLE:
            if not signal.on:
                return None
            self.phase, self.since = Phase.PENDING, at
        if self.phase is Phase.PENDING:
            if signal.off:
                self.phase, self.since = Phase.IDLE, None
                return None
            assert self.since is not None
            if (at - self.since).total_seconds() >= self.min_duration_s:
                self.phase, self.updated_at = Phase.ACTIVE, at
                return "raise"
            return None
        # ACTIVE
        if signal.off:
            self.phase, self.cancelled_at, self.since = Phase.COOLING, at, None
            return "cancel"
        assert self.updated_at is not None
        if (at - self.updated_at).total_seconds() >= self.update_interval_s:
            self.updated_at = at
            return "update"
        return None

    def lapse(self) -> None:
        """The alert expired unconfirmed (its sensor went quiet past its validity): nothing is known to hold and
        nothing was seen to clear, so no cooldown; the next reading that holds starts a new alert."""
        self.phase, self.since, self.updated_at = Phase.IDLE, None, None

    def force_cancel(self, at: datetime) -> None:
        """The alert ended for another reason (its rule was deleted or changed)."""
        self.phase, self.cancelled_at, self.since = Phase.COOLING, at, None
