"""The rolling-origin protocol: for every test day from the 15th on, each model sees the data strictly
before that day (a truncated `CountryData`, so it cannot peek) and predicts the 1 to 14 following days
(horizon 1 is the test day itself). The score is the mean absolute error per region, averaged over the
test days whose target day is in the data, per horizon.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from polis.epidemic.data import CountryData

HORIZONS = 14
FIRST_ORIGIN = 14  # the 15th day, 0-based
REPORTED_HORIZONS = (1, 7, 14)


class Forecaster(Protocol):
    """Anything that forecasts cases per region from a history it is given (and nothing else)."""

    @property
    def name(self) -> str: ...

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        """(horizons, regions) cases for the `horizons` days after the history's last day."""
        ...


@dataclass(frozen=True, slots=True)
class LastDay:
    name: str = "last day"

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        return np.repeat(history.cases[-1:], horizons, axis=0)


@dataclass(frozen=True, slots=True)
class MeanOfLastWeek:
    name: str = "mean of last 7 days"

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        return np.repeat(history.cases[-7:].mean(axis=0, keepdims=True), horizons, axis=0)


@dataclass(slots=True)
class RollingRun:
    """Every model's predictions at every origin: predictions[name][t, h-1] forecasts day t + h - 1
    from the data before day t (NaN where not run)."""

    data: CountryData
    origins: list[int]
    horizons: int
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def actual(self) -> np.ndarray:
        """actual[t, h-1] = cases on day t + h - 1 (NaN past the data), aligned with predictions."""
        days, n = self.data.cases.shape
        out = np.full((days, self.horizons, n), np.nan)
        for h in range(1, min(self.horizons, days) + 1):  # a horizon past the data's length has no target day
            out[: days - h + 1, h - 1] = self.data.cases[h - 1 :]
        return out

    def mae(self, name: str) -> np.ndarray:
        """(horizons,) mean over test days of the per-region mean absolute error."""
        errors = np.abs(self.predictions[name] - self.actual()).mean(axis=2)  # (days, horizons)
        rows = errors[self.origins]
        with np.errstate(invalid="ignore"):
            return np.array([np.nanmean(rows[:, h]) for h in range(self.horizons)])

    def table(self) -> list[dict[str, object]]:
        return [
            {"model": name, "horizon_days": h + 1, "mae": round(float(value), 4)}
            for name in self.predictions
            for h, value in enumerate(self.mae(name))
        ]


def rolling_origin(
    data: CountryData,
    forecasters: Sequence[Forecaster],
    horizons: int = HORIZONS,
    first_origin: int = FIRST_ORIGIN,
    origins: Sequence[int] | None = None,
) -> RollingRun:
    chosen = list(origins) if origins is not None else list(range(first_origin, data.n_days))
    run = RollingRun(data, chosen, horizons)
    for model in forecasters:
        started = time.perf_counter()
        out = np.full((data.n_days, horizons, data.n_regions), np.nan)
        for t in chosen:
            out[t] = model.forecast(data.truncated(t), horizons)
        run.predictions[model.name] = out
        run.seconds[model.name] = time.perf_counter() - started
    return run
