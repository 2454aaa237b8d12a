"""What the learned forecasters share: per-sensor standardisation (`FeatureState`), split-conformal 80 %
intervals (`IntervalCalibration`) around the model's mean, and the two files that hold them next to the
model's own weights (`state.npz`, `model.json`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from polis.forecast.data import Panel
from polis.forecast.features import FeatureState
from polis.forecast.model import Forecast, IntervalCalibration, floored, read_json, write_json


class StandardisedForecaster:
    kind: ClassVar[str]
    steps: tuple[int, ...]
    seed: int
    params: Any  # the model's parameter dataclass
    state: FeatureState | None
    calibration: IntervalCalibration | None

    def _mean(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, panel: Panel, origins: np.ndarray) -> Forecast:
        if self.state is None or self.calibration is None:
            raise RuntimeError("the model is not fitted")
        origins = np.asarray(origins, dtype=np.int64)
        mean = floored(self._mean(panel, origins), self.calibration.floor)
        lower, upper = self.calibration.bounds(mean)
        return Forecast(origins, self.steps, mean, lower, upper)

    def _save_state(self, directory: Path, **extra: object) -> None:
        """The fitted state and metadata; `extra` are the model's own members of `model.json`."""
        if self.state is None or self.calibration is None:
            raise RuntimeError("the model is not fitted")
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "state.npz", **self.state.to_arrays())  # type: ignore[arg-type]
        write_json(directory / "model.json", {
            "kind": self.kind, "steps": list(self.steps), "seed": self.seed, "params": asdict(self.params),
            "state": self.state.to_json(), "calibration": self.calibration.to_json(), **extra,
        })

    def _load_state(self, directory: Path, meta: dict[str, Any]) -> None:
        with np.load(directory / "state.npz", allow_pickle=False) as arrays:
            self.state = FeatureState.restore(dict(arrays), meta["state"])
        self.calibration = IntervalCalibration.from_json(meta["calibration"])


def read_meta(directory: Path) -> dict[str, Any]:
    return dict(read_json(directory / "model.json"))
