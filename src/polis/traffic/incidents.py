"""Congestion and incidents on speed sensors.

- Free-flow speed: the 85th percentile of a sensor's recorded speeds (the traffic engineers' usual
  "operating speed"); congestion is a speed below a fraction of it.
- Sudden speed drop: an incident (a crash, a stalled truck) slows one stretch while the sensors up- and
  downstream keep moving; a jam wave slows them all. The score is the sensor's own drop over the last
  `lookback` readings minus the median drop of its road neighbours, both as fractions of free-flow, and
  never more than the own drop: 0.3 means this sensor lost 30 % of free-flow speed, and 30 % more than
  its neighbours did (a neighbour recovering from its own incident is no drop here).

Neighbours come from the published road-distance graph where there is one (Los-loop's `los_adj.csv`,
Gaussian-kernel weights over road distance), else from the nearest sensors by location.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from polis.alerts.model import distance_m

FREE_FLOW_PERCENTILE = 85.0
LOS_LOOP_PREFIX = "urn:ngsi-ld:TrafficFlowObserved:los-loop:"


def free_flow(speeds: np.ndarray) -> float:
    return float(np.nanpercentile(speeds, FREE_FLOW_PERCENTILE))


def los_loop_neighbours(datasets_dir: Path, k: int = 4) -> dict[str, list[str]]:
    """Each Los-loop sensor's `k` closest sensors by road distance (largest kernel weights)."""
    folder = datasets_dir / "traffic" / "los-loop"
    with (folder / "los_speed.csv").open(encoding="utf-8") as handle:
        ids = [LOS_LOOP_PREFIX + s for s in handle.readline().strip().split(",")]
    weights = np.loadtxt(folder / "los_adj.csv", delimiter=",", ndmin=2)
    np.fill_diagonal(weights, 0.0)
    neighbours = {}
    for i, entity_id in enumerate(ids):
        order = np.argsort(-weights[i])[:k]
        neighbours[entity_id] = [ids[j] for j in order if weights[i, j] > 0]
    return neighbours


def nearest_neighbours(
    points: dict[str, tuple[float, float]], k: int = 4, max_m: float = 5000.0
) -> dict[str, list[str]]:
    """Fallback without a road graph: the `k` nearest sensors within `max_m` metres."""
    result = {}
    for entity_id, point in points.items():
        near = sorted(
            (distance_m(point, other), other_id) for other_id, other in points.items() if other_id != entity_id
        )
        result[entity_id] = [other_id for d, other_id in near[:k] if d <= max_m]
    return result


def drop_scores(speeds: np.ndarray, free: np.ndarray, neighbours: list[list[int]], lookback: int = 3) -> np.ndarray:
    """Offline: the speed-drop score of every row (T, S) of a regular speed matrix."""
    rows = speeds.shape[0]
    drop = np.full(speeds.shape, np.nan)
    for t in range(lookback, rows):
        drop[t] = (speeds[t - lookback : t].mean(axis=0) - speeds[t]) / free
    score = np.full(speeds.shape, np.nan)
    for s, near in enumerate(neighbours):
        if near:
            score[:, s] = np.minimum(drop[:, s], drop[:, s] - np.median(drop[:, near], axis=1))
    return score


class SpeedDropTracker:
    """Live: recent readings per sensor, and the score of a new reading against its neighbours'."""

    def __init__(self, lookback: int = 3, max_gap: timedelta = timedelta(minutes=15)) -> None:
        self.lookback = lookback
        self.max_gap = max_gap
        self.recent: dict[str, deque[tuple[datetime, float]]] = {}

    def add(self, entity_id: str, at: datetime, speed: float) -> None:
        buffer = self.recent.setdefault(entity_id, deque(maxlen=self.lookback + 1))
        if buffer and at <= buffer[-1][0]:
            return  # a late or repeated reading does not rewrite the recent past
        buffer.append((at, speed))

    def drop(self, entity_id: str, at: datetime, free: float) -> float | None:
        """(mean of the previous `lookback` readings - latest) / free-flow, if the latest is recent."""
        buffer = self.recent.get(entity_id)
        if not buffer or len(buffer) < self.lookback + 1 or free <= 0:
            return None
        latest_at, latest = buffer[-1]
        if abs((at - latest_at).total_seconds()) > self.max_gap.total_seconds():
            return None
        before = [v for _, v in list(buffer)[:-1]]
        return (sum(before) / len(before) - latest) / free

    def score(self, entity_id: str, at: datetime, free: dict[str, float], neighbours: list[str]) -> float | None:
        own = self.drop(entity_id, at, free.get(entity_id, 0.0))
        if own is None:
            return None
        others = [d for n in neighbours if (d := self.drop(n, at, free.get(n, 0.0))) is not None]
        if not others:
            return None
        return min(own, own - float(np.median(others)))
