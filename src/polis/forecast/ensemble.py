"""A stacked ensemble of the learned forecasters: per step ahead, a weighted sum of the members' forecasts of
that step and of the forecasts they made at earlier origins for the same target time (what a live service
issued one, two, ... steps ago), with weights fitted on the validation slice.

Why: the LightGBM and the MLP err differently (trees in steps, the network smoothly), and a forecast made
from an earlier origin for the same time adds a second look at the same target; least squares over those
columns lowers the squared error most, where the huber-trained members aim between MAE and RMSE.

Guard against fitting noise: the stack is kept only if, fitted on one half of the validation origins and
scored on the other (both ways), it beats the first member alone in MAE and in RMSE averaged up to every step;
otherwise the ensemble serves the first member's forecast unchanged (`stacked` False, saved with the model).
The 80 % intervals are calibrated on those cross-fitted errors, so the weights never score themselves.

Members already fitted when `fit` is called (the benchmark fits them first, on the same history) are not
fitted again. Saved as each member's own files under `members/` plus `ensemble.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from polis.forecast.data import Panel
from polis.forecast.model import (
    Forecast,
    Forecaster,
    IntervalCalibration,
    Progress,
    floor_of,
    floored,
    read_json,
    targets,
    write_json,
)

__all__ = ["StackedEnsemble"]

Column = tuple[int, int]  # (member index, index of the member's step whose forecast is used)


class StackedEnsemble:
    kind: ClassVar[str] = "ensemble"

    def __init__(self, steps: tuple[int, ...], seed: int = 0, members: Sequence[Forecaster] = ()) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(tuple(m.steps) != tuple(steps) for m in members):
            raise ValueError("every member must forecast the ensemble's steps")
        self.steps = tuple(steps)
        self.seed = seed
        self.members = list(members)
        self.columns: list[list[Column]] = []  # per step
        self.weights: list[np.ndarray] = []  # per step, one weight per column
        self.stacked = False
        self.calibration: IntervalCalibration | None = None

    # -- columns ------------------------------------------------------------------------------------

    def _all_columns(self, j: int) -> list[Column]:
        """Step j's candidates: every member's forecast of step j from the origin, then of each later step
        i from `steps[i] - steps[j]` origins earlier (same target time). The first is member 0's own."""
        return [(m, i) for m in range(len(self.members)) for i in range(j, len(self.steps))]

    def _offset(self, j: int, column: Column) -> int:
        return self.steps[column[1]] - self.steps[j]

    def _matrices(self, panel: Panel, origins: np.ndarray, columns: list[list[Column]]) -> list[np.ndarray]:
        """Per step j, [M, N, len(columns[j])]: each column's forecast for origin + steps[j]. An earlier origin
        before the panel's start takes the member's forecast from the origin itself."""
        wanted: dict[int, set[int]] = {}
        for j, cols in enumerate(columns):
            for m, i in cols:
                wanted.setdefault(m, set()).update({0, self._offset(j, (m, i))})
        forecasts: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # member -> (its sorted origins, their means)
        for m, offsets in wanted.items():
            at = np.unique(np.concatenate([np.maximum(origins - d, 0) for d in offsets]))
            forecasts[m] = (at, self.members[m].predict(panel, at).mean)
        out = []
        for j, cols in enumerate(columns):
            parts = []
            for m, i in cols:
                at, mean = forecasts[m]
                earlier = origins - self._offset(j, (m, i))
                rows, own = np.searchsorted(at, np.maximum(earlier, 0)), np.searchsorted(at, origins)
                parts.append(np.where((earlier >= 0)[:, None], mean[rows, i], mean[own, j]))
            out.append(np.stack(parts, axis=-1))
        return out

    # -- fit ----------------------------------------------------------------------------------------

    def fit(self, history: Panel, valid_from: int, progress: Progress | None = None) -> None:
        report = progress or (lambda what, done: None)
        count = len(self.members)
        for k, member in enumerate(self.members):
            if getattr(member, "calibration", None) is None:  # not fitted yet

                def tell(what: str, done: float, k: int = k, kind: str = member.kind) -> None:
                    report(f"{kind}: {what}", (k + done) / (count + 1))

                member.fit(history, valid_from, tell)
        report("stacking on the validation slice", count / (count + 1))
        origins = np.arange(valid_from - 1, len(history.values) - 1)
        truth = targets(history, origins, self.steps)  # [M, H, N]
        candidates = [self._all_columns(j) for j in range(len(self.steps))]
        matrices = self._matrices(history, origins, candidates)
        halves = np.arange(len(origins)) < len(origins) // 2
        cross = np.full(truth.shape, np.nan)  # each half forecast by weights fitted on the other
        for j, x in enumerate(matrices):
            for held in (halves, ~halves):
                weights = _sum_to_one_least_squares(x[~held], truth[~held, j])
                cross[held, j] = x[held] @ weights
        first = np.stack([x[..., 0] for x in matrices], axis=1)  # member 0 alone
        floor = floor_of(history)
        cross, first = floored(cross, floor), floored(first, floor)
        self.stacked = _beats_everywhere(cross, first, truth)
        if self.stacked:
            self.columns = candidates
            self.weights = [_sum_to_one_least_squares(x, truth[:, j]) for j, x in enumerate(matrices)]
            errors = cross - truth
        else:
            self.columns = [[(0, j)] for j in range(len(self.steps))]
            self.weights = [np.ones(1) for _ in self.steps]
            errors = first - truth
        self.calibration = IntervalCalibration.from_errors(errors, floor=floor)
        report("done", 1.0)

    # -- forecast -----------------------------------------------------------------------------------

    def predict(self, panel: Panel, origins: np.ndarray) -> Forecast:
        if self.calibration is None:
            raise RuntimeError("the model is not fitted")
        origins = np.asarray(origins, dtype=np.int64)
        # only the columns that carry weight are forecast: an unstacked ensemble costs its first member only
        used = [[k for k, w in enumerate(ws) if w != 0.0] for ws in self.weights]
        columns = [[self.columns[j][k] for k in keep] for j, keep in enumerate(used)]
        matrices = self._matrices(panel, origins, columns)
        mean = np.stack([x @ self.weights[j][used[j]] for j, x in enumerate(matrices)], axis=1)
        mean = floored(mean, self.calibration.floor)
        lower, upper = self.calibration.bounds(mean)
        return Forecast(origins, self.steps, mean, lower, upper)

    # -- files --------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if self.calibration is None:
            raise RuntimeError("the model is not fitted")
        directory.mkdir(parents=True, exist_ok=True)
        folders = []
        for k, member in enumerate(self.members):
            folder = f"{k}-{member.kind}"
            member.save(directory / "members" / folder)
            folders.append({"kind": member.kind, "folder": folder})
        write_json(directory / "ensemble.json", {
            "kind": self.kind, "steps": list(self.steps), "seed": self.seed, "members": folders,
            "stacked": self.stacked, "columns": [[list(c) for c in cols] for cols in self.columns],
            "weights": [w.tolist() for w in self.weights], "calibration": self.calibration.to_json(),
        })

    @classmethod
    def load(cls, directory: Path) -> Self:
        from polis.forecast.registry import model_class  # the registry knows every kind, this one too

        meta: dict[str, Any] = read_json(directory / "ensemble.json")
        members = [model_class(m["kind"]).load(directory / "members" / m["folder"]) for m in meta["members"]]
        model = cls(tuple(meta["steps"]), int(meta["seed"]), members)
        model.stacked = bool(meta["stacked"])
        model.columns = [[(int(m), int(i)) for m, i in cols] for cols in meta["columns"]]
        model.weights = [np.asarray(w, dtype=np.float64) for w in meta["weights"]]
        model.calibration = IntervalCalibration.from_json(meta["calibration"])
        return model


def _sum_to_one_least_squares(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Weights w (summing to 1) minimising |x @ w - truth|^2 over the rows where everything is known;
    `x` is [..., C], `truth` [...]. With a single column, or no usable row, the first column alone."""
    columns = x.shape[-1]
    flat, y = x.reshape(-1, columns), truth.reshape(-1)
    known = np.isfinite(y) & np.isfinite(flat).all(axis=1)
    fallback = np.eye(columns)[0]
    if columns == 1 or known.sum() < 2 * columns:
        return fallback
    # w = e0 + (the other columns minus the first) @ v: unconstrained in v, and sums to 1 for any v
    flat, y = flat[known], y[known]
    v, *_ = np.linalg.lstsq(flat[:, 1:] - flat[:, :1], y - flat[:, 0], rcond=None)
    return np.concatenate([[1.0 - v.sum()], v])


def _beats_everywhere(candidate: np.ndarray, reference: np.ndarray, truth: np.ndarray) -> bool:
    """Whether `candidate` has lower MAE and lower RMSE than `reference`, pooled over the steps up to each
    step (the way the tgcn protocol averages), at every step. Arrays [M, H, N]."""
    known = np.isfinite(truth) & np.isfinite(candidate) & np.isfinite(reference)
    if not known.any():
        return False
    for j in range(truth.shape[1]):
        mask = known[:, : j + 1]
        a = (candidate - truth)[:, : j + 1][mask]
        b = (reference - truth)[:, : j + 1][mask]
        if not (np.mean(np.abs(a)) < np.mean(np.abs(b)) and np.mean(a**2) < np.mean(b**2)):
            return False
    return True
