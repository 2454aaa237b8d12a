"""The naive forecasts every model must beat: persistence, the historical average by time of day and day
of week, and the seasonal naive forecast (the value one season ago). Their intervals are calibrated on the
validation slice like any model's, so the coverage comparison is fair too."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from polis.forecast.data import Panel, time_features, weekly_sums
from polis.forecast.model import (
    Forecast,
    IntervalCalibration,
    Progress,
    floor_of,
    floored,
    forward_fill,
    read_json,
    targets,
    write_json,
)

__all__ = ["HistoricalAverage", "Persistence", "SeasonalNaive"]


class _Baseline:
    kind: ClassVar[str] = ""

    def __init__(self, steps: tuple[int, ...], seed: int = 0) -> None:
        self.steps = tuple(steps)
        self.seed = seed
        self.calibration: IntervalCalibration | None = None

    def _point(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _learn(self, history: Panel) -> None:
        """Whatever the baseline keeps from the history (nothing for persistence)."""

    def fit(self, history: Panel, valid_from: int, progress: Progress | None = None) -> None:
        self._learn(history.head(valid_from))
        origins = np.arange(max(valid_from - 1, 0), len(history.values) - 1)
        if len(origins):
            floor = floor_of(history)
            errors = floored(self._point(history, origins), floor) - targets(history, origins, self.steps)
            self.calibration = IntervalCalibration.from_errors(errors, floor=floor)
        self._learn(history)  # the last known history counts too once selection is over
        if progress is not None:
            progress("fitted", 1.0)

    def predict(self, panel: Panel, origins: np.ndarray) -> Forecast:
        origins = np.asarray(origins, dtype=np.int64)
        mean = self._point(panel, origins)
        if self.calibration is None:
            lower, upper = mean.copy(), mean.copy()
        else:
            mean = floored(mean, self.calibration.floor)
            lower, upper = self.calibration.bounds(mean)
        return Forecast(origins, self.steps, mean, lower, upper)

    def _state(self) -> dict[str, object]:
        return {}

    def _restore(self, state: dict[str, object]) -> None:
        pass

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {"kind": self.kind, "steps": list(self.steps), "seed": self.seed, **self._state()}
        state["calibration"] = self.calibration.to_json() if self.calibration else None
        write_json(directory / "baseline.json", state)

    @classmethod
    def load(cls, directory: Path) -> Self:
        state = read_json(directory / "baseline.json")
        steps: list[int] = state["steps"]  # type: ignore[assignment]
        model = cls(tuple(int(s) for s in steps), int(state["seed"]))  # type: ignore[call-overload]
        calibration = state.get("calibration")
        model.calibration = IntervalCalibration.from_json(calibration) if calibration else None  # type: ignore[arg-type]
        model._restore(state)
        return model


class Persistence(_Baseline):
    """Every step ahead = the last reading."""

    kind = "persistence"

    def _point(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        last = forward_fill(panel.values[: int(origins.max()) + 1])[origins] if len(origins) else np.empty((0, 0))
        return np.repeat(last[:, None, :], len(self.steps), axis=1)


class SeasonalNaive(_Baseline):
    """The value one season earlier (a week for hourly counts, a day for traffic) at the target time."""

    kind = "seasonal-naive"

    def __init__(self, steps: tuple[int, ...], seed: int = 0, season_steps: int = 288) -> None:
        super().__init__(steps, seed)
        self.season_steps = season_steps

    def _point(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        filled = forward_fill(panel.values)
        out = np.full((len(origins), len(self.steps), panel.n_sensors), np.nan)
        for j, step in enumerate(self.steps):
            # a target more than a season ahead repeats the latest season it can see
            back = self.season_steps * int(np.ceil(step / self.season_steps))
            index = origins + step - back
            ok = index >= 0
            out[ok, j] = filled[index[ok]]
        last = filled[origins]
        return np.where(np.isnan(out), last[:, None, :], out)

    def _state(self) -> dict[str, object]:
        return {"season_steps": self.season_steps}

    def _restore(self, state: dict[str, object]) -> None:
        self.season_steps = int(state["season_steps"])  # type: ignore[call-overload]


class HistoricalAverage(_Baseline):
    """Each sensor's mean at that time of day and day of week; where the training data never saw that
    weekday (a one-week set), its mean at that time of day; failing that, its overall mean."""

    kind = "historical-average"

    def __init__(self, steps: tuple[int, ...], seed: int = 0) -> None:
        super().__init__(steps, seed)
        self.table = np.empty((0, 0, 0))  # [7, slots, N]
        self.by_slot = np.empty((0, 0))  # [slots, N]
        self.overall = np.empty(0)
        self.timezone = "UTC"
        self.step_s = 3600

    def _learn(self, history: Panel) -> None:
        total, count = weekly_sums(history, history.values)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.table = total / count
            self.by_slot = total.sum(0) / count.sum(0)
            self.overall = np.nansum(history.values, axis=0) / (~np.isnan(history.values)).sum(0)
        self.timezone, self.step_s = history.timezone, history.step_s

    def _point(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        index = origins[:, None] + np.asarray(self.steps)[None, :]
        when = panel.times[0] + index * np.timedelta64(panel.step_s, "s")
        slots, days = time_features(when.ravel(), self.timezone, self.step_s)
        out = self.table[days, slots]
        out = np.where(np.isnan(out), self.by_slot[slots], out)
        out = np.where(np.isnan(out), self.overall[None, :], out)
        return out.reshape(len(origins), len(self.steps), -1)

    def _state(self) -> dict[str, object]:
        return {"table": _nan_list(self.table), "overall": _nan_list(self.overall), "by_slot": _nan_list(self.by_slot),
                "timezone": self.timezone, "step_s": self.step_s}

    def _restore(self, state: dict[str, object]) -> None:
        self.table = np.asarray(state["table"], dtype=np.float64)
        self.by_slot = np.asarray(state["by_slot"], dtype=np.float64)
        self.overall = np.asarray(state["overall"], dtype=np.float64)
        self.timezone, self.step_s = str(state["timezone"]), int(state["step_s"])  # type: ignore[call-overload]


def _nan_list(array: np.ndarray) -> object:
    """JSON has no NaN: missing cells go out as null."""
    return np.where(np.isnan(array), None, array).tolist()  # type: ignore[call-overload]
