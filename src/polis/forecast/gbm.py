"""A global gradient-boosted forecaster (LightGBM): one booster per step ahead ("direct" forecasting,
so no step feeds its own error into the next), trained on every sensor at once with the sensor's
identity as a categorical feature. Each booster predicts the change from the last reading in the
sensor's standard units (a step a quarter of a day ahead or more, in a weekly series, may predict the change
from the reading a week before the target time instead: `SEASON_ANCHOR_FROM`); the number of trees is chosen
on the validation slice (early stopping, then the fewest trees within `tree_tolerance` of the best validation
MAE). A step whose booster forecasts the validation slice worse than the reading a season before the target
time serves that reading instead (Melbourne's 24 hours ahead, before the weekly anchor: a year of lockdowns
taught the booster less than last week says).
Boosters are saved in LightGBM's own text format, the learned state as a plain .npz and JSON.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from polis.forecast.data import Panel
from polis.forecast.features import (
    Common,
    FeatureState,
    common_features,
    recent_window,
    season_anchor,
    step_features,
    take_rows,
)
from polis.forecast.model import IntervalCalibration, Progress, floor_of, floored, forward_fill, targets
from polis.forecast.standardised import StandardisedForecaster, read_meta

__all__ = ["GbmParams", "GlobalGbm", "fewest_rounds", "used_trees"]

# A step this share of a day ahead or more (Melbourne's 6 and 24 hours; none of the traffic steps) also
# tries a booster that forecasts the change from the reading a season before the target time instead of
# from the last reading, in a series with a weekly season; the better of the two on validation is kept.
# Six hours on, the last reading says less about the target than last week's same hour does.
SEASON_ANCHOR_FROM = 0.25


@dataclass(frozen=True, slots=True)
class GbmParams:
    lags: int = 12
    objective: str = "huber"  # l2 | l1 | huber (huber: best MAE and RMSE together on Los-loop)
    learning_rate: float = 0.08
    num_leaves: int = 63
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_rounds: int = 1000
    early_stopping: int = 50
    max_bin: int = 127
    # After early stopping, keep the fewest trees whose validation MAE (in the series' own units) is within
    # this share of the best (0: early stopping's pick). Los-loop's full model uses 0.3 %: +0.3 % validation
    # MAE for a third fewer trees, which keeps its 207 sensors x 12 steps forecast under 50 ms.
    tree_tolerance: float = 0.0
    # One thread: on a shared 2-core machine LightGBM's OpenMP threads spin against other work and run
    # several times slower than one thread (measured: 0.5 s against 0.09 s per round on Los-loop).
    threads: int = 1
    # Forecasting calls the step boosters from this many Python threads at once (LightGBM lets go of the
    # GIL while it predicts), each on one OpenMP thread: both cores busy without OpenMP's spinning.
    predict_workers: int = 2
    refit: bool = False  # after selection, train again on train + validation with the chosen tree count


class GlobalGbm(StandardisedForecaster):
    kind: ClassVar[str] = "lightgbm"

    def __init__(self, steps: tuple[int, ...], seed: int = 0, params: GbmParams | None = None) -> None:
        self.steps = tuple(steps)
        self.seed = seed
        self.params = params or GbmParams()
        self.boosters: list[Any] = []
        self.state: FeatureState | None = None
        self.calibration: IntervalCalibration | None = None
        self.feature_names: list[str] = []
        self.rounds: list[int] = []
        self.seasonal: list[bool] = []  # per step: serve the reading a season before the target (see fit)
        self.anchors: list[str] = []  # per step: "last" (the last reading) or "season" (see fit)

    # ------------------------------------------------------------------------------------------ features

    def _matrix(
        self, common: Common, rows: np.ndarray, origins: np.ndarray, step: int, target: np.ndarray | None = None
    ) -> np.ndarray:
        """The feature matrix for `rows` of `common` (origins `origins`), one row per (origin, sensor)."""
        assert self.state is not None
        sub = Common(common.block[rows], common.names, common.z, common.filled, common.base[rows],
                     common.slots[rows], common.days[rows])
        extra, extra_names = step_features(sub, origins, step, self.state, target)
        m, n = len(rows), common.block.shape[1]
        sensor = np.broadcast_to(np.arange(n, dtype=np.float32)[None, :, None], (m, n, 1))
        n_slots = self.state.profile.shape[0]
        clock = np.stack(
            [sub.slots / n_slots, ((sub.slots + step) % n_slots) / n_slots, sub.days.astype(np.float64)], axis=-1
        ).astype(np.float32)
        clock = np.broadcast_to(clock[:, None, :], (m, n, 3))
        scale = np.broadcast_to(
            np.stack([self.state.mean, self.state.std], axis=-1).astype(np.float32)[None], (m, n, 2)
        )
        matrix = np.concatenate([sub.block, extra, sensor, clock, scale], axis=-1)
        if not self.feature_names:
            fixed = ["sensor", "slot", "target_slot", "dow", "sensor_mean", "sensor_std"]
            self.feature_names = [*common.names, *extra_names, *fixed]
        return matrix.reshape(m * n, -1)

    # ------------------------------------------------------------------------------------------ fitting

    def _train_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "objective": {"l2": "regression", "l1": "regression_l1", "huber": "huber"}[p.objective],
            "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves,
            "min_data_in_leaf": p.min_data_in_leaf,
            "feature_fraction": p.feature_fraction,
            "bagging_fraction": p.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": p.lambda_l2,
            "max_bin": p.max_bin,
            "num_threads": p.threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def fit(self, history: Panel, valid_from: int, progress: Progress | None = None) -> None:
        report = progress or (lambda what, done: None)
        self.state = FeatureState.learn(history.head(valid_from), self.params.lags)
        self.feature_names = []
        self.seasonal = []
        origins = np.arange(0, len(history.values) - 1)
        common = common_features(history, origins, self.state)
        z_target = self.state.standardise(history.values)
        n = history.n_sensors
        self.boosters, self.rounds, self.anchors = [], [], []
        for index, step in enumerate(self.steps):
            report(f"step {step}", index / len(self.steps))
            tried = []
            for anchor in ("last", "season") if self._may_anchor_on_season(step, history) else ("last",):
                tried.append((*self._train_step(common, origins, z_target, step, valid_from, anchor), anchor))
            # the anchor whose booster forecasts the validation slice better (both were stopped on it)
            booster, rounds, _, anchor = min(tried, key=lambda t: t[2])
            self.rounds.append(rounds)
            self.boosters.append(booster)
            self.anchors.append(anchor)
        report("calibrating", 0.95)
        valid_origins = np.arange(valid_from - 1, len(history.values) - 1)
        truth = targets(history, valid_origins, self.steps)
        floor = floor_of(history)
        boosted = floored(self._mean(history, valid_origins), floor)
        seasonal = self._season_back(*recent_window(history, valid_origins, self.state))
        # The boosters were stopped on this slice, which favours them: the season's reading must beat that.
        self.seasonal = [_lower_mae(seasonal[:, h], boosted[:, h], truth[:, h]) for h in range(len(self.steps))]
        forecast = np.where(np.array(self.seasonal)[None, :, None] & ~np.isnan(seasonal), seasonal, boosted)
        self.calibration = IntervalCalibration.from_errors(forecast - truth, floor=floor)
        if self.params.refit:
            self._refit(history, origins, common, z_target, n)
        report("done", 1.0)

    def _may_anchor_on_season(self, step: int, history: Panel) -> bool:
        """A step at least SEASON_ANCHOR_FROM of a day ahead, in a series with a weekly season (see `fit`)."""
        assert self.state is not None
        return self.state.gaps and step < self.state.season_steps and step >= SEASON_ANCHOR_FROM * history.steps_per_day

    def _anchor(self, common: Common, origins: np.ndarray, step: int, anchor: str) -> np.ndarray:
        """[M, N] in z units: what the booster of a step adds its change to."""
        assert self.state is not None
        return season_anchor(common, origins, step, self.state) if anchor == "season" else common.base

    def _train_step(
        self, common: Common, origins: np.ndarray, z_target: np.ndarray, step: int, valid_from: int, anchor: str
    ) -> tuple[Any, int, float]:
        """One step's booster, early-stopped on the validation slice: (booster, trees kept, its validation MAE
        in the series' units at that tree count)."""
        import lightgbm as lgb

        assert self.state is not None
        n = z_target.shape[1]
        train_rows = np.flatnonzero(origins + step < valid_from)
        valid_rows = np.flatnonzero((origins >= valid_from - 1) & (origins + step < len(z_target)))
        base = self._anchor(common, origins, step, anchor)
        data = {}
        for label, rows in (("train", train_rows), ("valid", valid_rows)):
            leave_out = z_target[origins[rows] + step] if label == "train" else None
            x = self._matrix(common, rows, origins[rows], step, leave_out)
            y = (z_target[origins[rows] + step] - base[rows]).reshape(-1)
            keep = ~np.isnan(y)
            data[label] = (x[keep], y[keep])
            if label == "valid":  # each validation row's sensor scale: |change in z| x std = error in units
                valid_std = np.broadcast_to(self.state.std, (len(rows), n)).reshape(-1)[keep]
        sensor_column = self.feature_names.index("sensor")
        train_set = lgb.Dataset(data["train"][0], data["train"][1], categorical_feature=[sensor_column],
                                feature_name=self.feature_names, free_raw_data=True)
        valid_set = lgb.Dataset(data["valid"][0], data["valid"][1], reference=train_set)
        valid_y = data["valid"][1]

        def mae_in_units(
            predicted: np.ndarray, _: Any, truth: np.ndarray = valid_y, scale: np.ndarray = valid_std
        ) -> tuple[str, float, bool]:
            return "mae_units", float(np.mean(np.abs(predicted - truth) * scale)), False

        record: dict[str, Any] = {}
        booster = lgb.train(
            self._train_params(), train_set, num_boost_round=self.params.max_rounds, valid_sets=[valid_set],
            feval=mae_in_units,
            callbacks=[lgb.early_stopping(self.params.early_stopping, first_metric_only=True, verbose=False),
                       lgb.record_evaluation(record)],
        )
        seen = record["valid_0"]["mae_units"]
        rounds = fewest_rounds(seen, booster.best_iteration, self.params.tree_tolerance)
        booster.best_iteration = rounds  # what predict and save_model use
        return booster, rounds, float(seen[rounds - 1])

    def _refit(self, history: Panel, origins: np.ndarray, common: Common, z_target: np.ndarray, n: int) -> None:
        import lightgbm as lgb

        boosters = []
        for step, rounds, anchor in zip(self.steps, self.rounds, self.anchors, strict=True):
            rows = np.flatnonzero(origins + step < len(history.values))
            x = self._matrix(common, rows, origins[rows], step, z_target[origins[rows] + step])
            y = (z_target[origins[rows] + step] - self._anchor(common, origins, step, anchor)[rows]).reshape(-1)
            keep = ~np.isnan(y)
            train_set = lgb.Dataset(x[keep], y[keep], categorical_feature=[self.feature_names.index("sensor")],
                                    feature_name=self.feature_names)
            boosters.append(lgb.train(self._train_params(), train_set, num_boost_round=rounds))
        self.boosters = boosters

    # ------------------------------------------------------------------------------------------ forecasting

    def _mean(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        """Features from only the recent part of the panel that they read (see `recent_window`: identical
        values), one matrix per step, each booster called once on every origin and sensor."""
        assert self.state is not None
        window, at = recent_window(panel, origins, self.state)
        common = common_features(window, at, self.state)
        m, n = len(origins), panel.n_sensors
        rows = np.arange(m)
        changes: list[np.ndarray] = [np.empty(0)] * len(self.steps)

        def change(index: int) -> None:
            x = self._matrix(common, rows, at, self.steps[index])
            predicted = self.boosters[index].predict(x, num_threads=self.params.threads)
            changes[index] = np.asarray(predicted).reshape(m, n)

        # the largest boosters first: the last to start is then a small one, so the workers finish together
        order = sorted(range(len(self.steps)), key=lambda index: -used_trees(self.boosters[index]))
        if self.params.predict_workers > 1 and len(order) > 1:
            with ThreadPoolExecutor(min(self.params.predict_workers, len(order))) as pool:
                list(pool.map(change, order))
        else:
            for index in order:
                change(index)
        anchors = [self._anchor(common, at, step, a) for step, a in zip(self.steps, self.anchors, strict=True)]
        z = np.stack(anchors, axis=1) + np.stack(changes, axis=1)  # [M, H, N]
        out: np.ndarray = z * self.state.std + self.state.mean
        if any(self.seasonal):
            chosen = np.array(self.seasonal)
            season = self._season_back(window, at)[:, chosen]
            out[:, chosen] = np.where(np.isnan(season), out[:, chosen], season)  # no reading then: the booster's
        return out

    def _season_back(self, window: Panel, at: np.ndarray) -> np.ndarray:
        """[M, H, N]: the reading one season before each target time, for origins `at` of `window` (from
        `recent_window`: the last reading at or before it; NaN for a step longer than the season, which would
        read after the origin)."""
        assert self.state is not None
        season = self.state.season_steps
        filled = forward_fill(window.values[: int(at.max()) + 1]) if len(at) else window.values
        out = np.full((len(at), len(self.steps), window.n_sensors), np.nan)
        for index, step in enumerate(self.steps):
            if step <= season:
                out[:, index] = take_rows(filled, at + step - season)
        return out

    # ------------------------------------------------------------------------------------------ files

    def save(self, directory: Path) -> None:
        self._save_state(directory, feature_names=self.feature_names, rounds=self.rounds, seasonal=self.seasonal,
                         anchors=self.anchors)
        for step, booster in zip(self.steps, self.boosters, strict=True):
            booster.save_model(str(directory / f"step{step}.txt"))

    @classmethod
    def load(cls, directory: Path) -> Self:
        import lightgbm as lgb

        meta = read_meta(directory)
        model = cls(tuple(meta["steps"]), int(meta["seed"]), GbmParams(**meta["params"]))
        model._load_state(directory, meta)
        model.feature_names = list(meta["feature_names"])
        model.rounds = list(meta["rounds"])
        model.seasonal = [bool(x) for x in meta.get("seasonal", [])]  # none in models saved before it
        model.anchors = [str(x) for x in meta.get("anchors", ["last"] * len(model.steps))]  # as before anchors
        model.boosters = [lgb.Booster(model_str=whole_model_text(directory / f"step{s}.txt")) for s in model.steps]
        return model


def whole_model_text(path: Path) -> str:
    """A LightGBM model file's text, refused (ValueError) unless it is whole: LightGBM aborts the process on a
    cut-off file (its fatal "Model format error" is no exception Python can catch). The registry's digests catch
    damage first; this guards models saved before them. `save_model` ends every file with its trees' end mark, the
    parameters and a last `pandas_categorical:` line, so a file cut anywhere before that line lacks one of them."""
    text = path.read_text(encoding="utf-8")
    lines = text.rstrip("\n").rsplit("\n", 1)
    if not text.startswith("tree\n") or "\nend of trees\n" not in text or \
            not lines[-1].startswith("pandas_categorical:"):
        raise ValueError(f"{path}: not a whole LightGBM model file (cut off or overwritten)")
    return text


def _lower_mae(candidate: np.ndarray, current: np.ndarray, truth: np.ndarray) -> bool:
    """Whether `candidate` has the lower mean absolute error where both forecast a known truth."""
    known = ~(np.isnan(candidate) | np.isnan(current) | np.isnan(truth))
    if not known.any():
        return False
    return bool(np.mean(np.abs(candidate[known] - truth[known])) < np.mean(np.abs(current[known] - truth[known])))


def used_trees(booster: Any) -> int:
    """The trees a booster predicts with: a fitted one keeps the rounds after its pick (`best_iteration`)
    in memory, a saved and loaded one holds only those it uses."""
    return int(booster.best_iteration) if booster.best_iteration > 0 else int(booster.num_trees())


def fewest_rounds(mae: list[float], best_iteration: int, tolerance: float) -> int:
    """The first round whose validation MAE is within `tolerance` of the lowest up to early stopping's pick."""
    seen = np.asarray(mae[: max(best_iteration, 1)])
    if not len(seen):
        return max(best_iteration, 1)
    return int(np.flatnonzero(seen <= seen.min() * (1 + tolerance))[0]) + 1


def timed_fit(model: Any, history: Panel, valid_from: int, progress: Progress | None = None) -> float:
    started = time.perf_counter()
    model.fit(history, valid_from, progress)
    return time.perf_counter() - started
