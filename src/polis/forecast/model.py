"""The contract every forecaster implements, and the prediction intervals they share.

A forecaster is global over a panel: one model for all sensors. `fit` sees only the panel it is given
(the protocol cuts off everything after the training part before calling it), with the steps from
`valid_from` on held out for model selection and interval calibration. `predict` forecasts from each
origin `o` (the last observed step) and may read only `values[: o + 1]`; the leakage tests hold every
model to that by changing later values and checking the forecast does not move.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from polis.forecast.data import Panel

__all__ = ["Forecast", "Forecaster", "IntervalCalibration", "Progress", "floor_of", "floored", "forward_fill"]

Progress = Callable[[str, float], None]  # (what is happening, fraction done 0..1)
NOMINAL_COVERAGE = 0.8


@dataclass(frozen=True, slots=True)
class Forecast:
    """Forecasts from `origins` (panel step indices) for each of `steps` steps ahead: arrays [M, H, N]."""

    origins: np.ndarray
    steps: tuple[int, ...]
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


class Forecaster(Protocol):
    kind: ClassVar[str]
    steps: tuple[int, ...]
    seed: int

    def fit(self, history: Panel, valid_from: int, progress: Progress | None = None) -> None: ...

    def predict(self, panel: Panel, origins: np.ndarray) -> Forecast: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Self: ...


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last earlier reading of its column (still NaN before the first one)."""
    rows = np.where(np.isnan(values), 0, np.arange(values.shape[0])[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    filled = values[rows, np.arange(values.shape[1])[None, :]]
    return np.asarray(filled)


def floor_of(history: Panel) -> float | None:
    """0 for a series that never went below it in the history a model is fitted on (speeds, counts of
    people): its forecasts and their intervals then stay at or above 0, as its readings do. None: no floor."""
    known = history.values[~np.isnan(history.values)]
    return 0.0 if known.size and float(known.min()) >= 0.0 else None


def floored(values: np.ndarray, floor: float | None) -> np.ndarray:
    """`values` raised to `floor` where below it (NaN stays NaN); unchanged without a floor."""
    return values if floor is None else np.maximum(values, floor)


class IntervalCalibration:
    """Split-conformal intervals, scaled per sensor: the score is |error| / the sensor's typical error at
    that step (shrunk towards the step's overall typical error when a sensor has few validation points),
    and the interval is the forecast +- the 80 % quantile of scores x that scale. Scaling lets a calm
    sensor get a narrow band and an erratic one a wide band at the same overall coverage.

    `floor` (see `floor_of`) bounds the interval from below: a count of people has no 80 % interval
    reaching to -140 at night. Raising a bound to a floor no reading goes under loses no coverage."""

    def __init__(self, quantile: np.ndarray, scale: np.ndarray, floor: float | None = None) -> None:
        self.quantile = quantile  # [H]
        self.scale = scale  # [H, N]
        self.floor = floor

    @classmethod
    def from_errors(
        cls, errors: np.ndarray, prior_weight: float = 20.0, floor: float | None = None
    ) -> IntervalCalibration:
        """`errors`: forecast - truth on held-out origins, [M, H, N], NaN where the truth is missing (the
        forecasts already raised to `floor`, as they will be served)."""
        absolute = np.abs(errors)
        present = ~np.isnan(absolute)
        count = present.sum(axis=0)  # [H, N]
        total = np.where(present, absolute, 0.0).sum(axis=0)
        overall = np.nanmean(absolute, axis=(0, 2)) if present.any() else np.ones(errors.shape[1])
        overall = np.where(np.isfinite(overall) & (overall > 0), overall, 1.0)
        scale = (total + prior_weight * overall[:, None]) / (count + prior_weight)
        scores = absolute / scale[None]
        level = NOMINAL_COVERAGE
        quantile = np.empty(errors.shape[1])
        for h in range(errors.shape[1]):
            valid = scores[:, h][~np.isnan(scores[:, h])]
            n = len(valid)
            # the finite-sample conformal rank: ceil((n + 1) * level) / n
            quantile[h] = np.quantile(valid, min(1.0, np.ceil((n + 1) * level) / n)) if n else 1.0
        return cls(quantile, scale, floor)

    def bounds(self, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        half = self.quantile[None, :, None] * self.scale[None]
        return floored(mean - half, self.floor), floored(mean + half, self.floor)

    def to_json(self) -> dict[str, Any]:
        return {"quantile": self.quantile.tolist(), "scale": self.scale.tolist(), "floor": self.floor}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntervalCalibration:
        floor = data.get("floor")  # none in models saved before it
        return cls(
            np.asarray(data["quantile"], dtype=np.float64),
            np.asarray(data["scale"], dtype=np.float64),
            None if floor is None else float(floor),
        )


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def targets(panel: Panel, origins: np.ndarray, steps: tuple[int, ...]) -> np.ndarray:
    """The true values [M, H, N] at origin + step (NaN beyond the panel's end)."""
    index = origins[:, None] + np.asarray(steps)[None, :]
    out = np.full((len(origins), len(steps), panel.n_sensors), np.nan)
    inside = index < len(panel.values)
    out[inside] = panel.values[index[inside]]
    return out
