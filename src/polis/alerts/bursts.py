"""Event bursts: how many events of a kind fell in one group (a township, a district) within a sliding
window, against how many that group sees in such a window on average.

The expected count is the group's rate over the observed days times the window; "far above" is a Poisson
tail: P(N >= count) <= max_p_value, and at least min_count events. Observed days, not calendar span: a
sample that holds only some days (the Montgomery 911 sample keeps the 15th of each month) must not
dilute the rate with the days it never saw.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

from scipy.stats import poisson

Point = tuple[float, float]  # (longitude, latitude)
PRIOR_EVENTS = 0.5  # a group never seen before still has a small rate, not zero


@dataclass(frozen=True, slots=True)
class BurstReading:
    group: str
    count: int
    expected: float
    p_value: float


@dataclass(slots=True)
class BurstCounter:
    window_s: float
    times: dict[str, list[tuple[datetime, Point | None]]] = field(default_factory=dict)  # per group, by time
    totals: Counter[str] = field(default_factory=Counter)
    days: set[date] = field(default_factory=set)
    watermark: datetime | None = None  # newest event time seen: the clock bursts expire by

    @property
    def observed_days(self) -> int:
        return len(self.days)

    def add(self, group: str, at: datetime, point: Point | None = None) -> None:
        bisect.insort(self.times.setdefault(group, []), (at, point), key=lambda item: item[0])
        self.totals[group] += 1
        self.days.add(at.date())
        if self.watermark is None or at > self.watermark:
            self.watermark = at
        self._forget(group)

    def note_day(self, at: datetime) -> None:
        """An event outside every group still shows the day was observed."""
        self.days.add(at.date())
        if self.watermark is None or at > self.watermark:
            self.watermark = at

    def _forget(self, group: str) -> None:
        # Only the window is needed for counting; totals keep the rate.
        times = self.times[group]
        if self.watermark is None:
            return
        horizon = self.watermark.timestamp() - self.window_s
        cut = 0
        while cut < len(times) and times[cut][0].timestamp() <= horizon:
            cut += 1
        del times[:cut]

    def reading(self, group: str, at: datetime | None = None) -> BurstReading:
        at = at or self.watermark
        times = self.times.get(group, [])
        if at is None:
            return BurstReading(group, 0, 0.0, 1.0)
        start = at.timestamp() - self.window_s
        count = sum(1 for t, _ in times if start < t.timestamp() <= at.timestamp())
        exposure_s = max(len(self.days), 1) * 86_400.0
        expected = (self.totals[group] - count + PRIOR_EVENTS) / exposure_s * self.window_s
        p_value = float(poisson.sf(count - 1, expected)) if count > 0 else 1.0
        return BurstReading(group, count, expected, p_value)

    def groups(self) -> list[str]:
        return list(self.times)

    def points(self, group: str) -> list[Point]:
        return [p for _, p in self.times.get(group, []) if p is not None]
