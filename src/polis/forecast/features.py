"""Features shared by the learned forecasters, built in whole arrays (origins x sensors x features).

Everything is in each sensor's own standard units (z = (x - mean) / std, from the training part only),
so one global model serves a 20 mph and a 70 mph road, a quiet and a busy corner. What is learned from
history (means, deviations, the time-of-day profile) is kept in `FeatureState` and saved with the model,
so a forecast served live sees the same transform as the backtest.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from polis.forecast.data import Panel, time_features
from polis.forecast.model import forward_fill

__all__ = ["FeatureState", "common_features", "step_features"]


@dataclass(slots=True)
class FeatureState:
    mean: np.ndarray  # [N]
    std: np.ndarray  # [N]
    profile: np.ndarray  # [slots, N] mean z by local time of day
    weekly: np.ndarray  # [7, slots, N] mean z by day of week and time of day (NaN where unseen)
    count: np.ndarray  # [7, slots, N] readings behind each weekly cell (for leave-one-out in training)
    neighbours: np.ndarray  # [N, N] row-normalised adjacency (zero rows where a sensor has none)
    timezone: str
    step_s: int
    lags: int
    season_steps: int  # the longest season worth looking back over (a week when the data is long enough)

    @classmethod
    def learn(cls, history: Panel, lags: int) -> FeatureState:
        values = history.values
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        z = (values - mean) / std
        slots, days = time_features(history.times, history.timezone, history.step_s)
        n_slots = history.steps_per_day
        present = ~np.isnan(z)
        filled = np.where(present, z, 0.0)
        total = np.zeros((7, n_slots, history.n_sensors))
        count = np.zeros_like(total)
        np.add.at(total, (days, slots), filled)
        np.add.at(count, (days, slots), present)
        with np.errstate(invalid="ignore", divide="ignore"):
            profile = total.sum(0) / count.sum(0)
            weekly = total / count
        profile = np.where(np.isfinite(profile), profile, 0.0)
        week = 7 * n_slots
        if len(values) < 3 * week:  # one or two of each weekday: a weekday mean would be a copy of the target
            weekly = np.full_like(weekly, np.nan)
        if history.adjacency is None:
            neighbours = np.zeros((history.n_sensors, history.n_sensors))
        else:
            weights = np.asarray(history.adjacency, dtype=np.float64)
            sums = weights.sum(axis=1, keepdims=True)
            neighbours = np.divide(weights, sums, out=np.zeros_like(weights), where=sums > 0)
        season = week if len(values) >= 3 * week else n_slots
        return cls(mean, std, profile, weekly, count, neighbours, history.timezone, history.step_s, lags, season)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "profile": self.profile, "weekly": self.weekly,
                "count": self.count, "neighbours": self.neighbours}

    def to_json(self) -> dict[str, object]:
        return {"timezone": self.timezone, "step_s": self.step_s, "lags": self.lags,
                "season_steps": self.season_steps}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], meta: dict[str, object]) -> FeatureState:
        return cls(
            arrays["mean"], arrays["std"], arrays["profile"], arrays["weekly"], arrays["count"], arrays["neighbours"],
            str(meta["timezone"]), int(meta["step_s"]), int(meta["lags"]),  # type: ignore[call-overload]
            int(meta["season_steps"]),  # type: ignore[call-overload]
        )

    def standardise(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std


def _take(z: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows `index` of z ([M] -> [M, N]); NaN where the index falls before the start."""
    out = z[np.clip(index, 0, None)]
    out[index < 0] = np.nan
    return out


@dataclass(slots=True)
class Common:
    """Features that do not depend on the step ahead, and the anchor each step's change is added to."""

    block: np.ndarray  # [M, N, F]
    names: list[str]
    z: np.ndarray  # standardised values up to the last origin [T, N]
    filled: np.ndarray  # z forward-filled
    base: np.ndarray  # [M, N] last reading in z units (forward-filled; the profile where nothing is known)
    slots: np.ndarray  # [M] local slot of each origin
    days: np.ndarray  # [M]


def common_features(panel: Panel, origins: np.ndarray, state: FeatureState) -> Common:
    """Only `panel.values[: max(origins) + 1]` is read: nothing after an origin reaches its features."""
    stop = int(origins.max()) + 1 if len(origins) else 0
    z = state.standardise(panel.values[:stop])
    filled = forward_fill(z)
    slots, days = time_features(panel.times[origins], state.timezone, state.step_s)
    base = filled[origins]
    base = np.where(np.isnan(base), state.profile[slots], base)
    lags = [_take(z, origins - k) for k in range(state.lags)]
    window = np.stack(lags, axis=-1)  # [M, N, L]
    columns: dict[str, np.ndarray] = {f"lag{k}": lags[k] for k in range(state.lags)}
    columns["base"] = base
    for k in (1, 2, 3, 6):
        if k < state.lags:
            columns[f"diff{k}"] = base - lags[k]
    with np.errstate(invalid="ignore"), _quiet():
        for width in (3, 6, state.lags):
            columns[f"mean{width}"] = np.nanmean(window[..., :width], axis=-1)
        columns["std"] = np.nanstd(window, axis=-1)
        columns["min"] = np.nanmin(window, axis=-1)
        columns["max"] = np.nanmax(window, axis=-1)
        long = np.stack([_take(filled, origins - k) for k in range(0, 4 * state.lags, 2)], axis=-1)
        columns["mean_long"] = np.nanmean(long, axis=-1)
    columns["profile_now"] = state.profile[slots]
    columns["above_profile"] = base - state.profile[slots]
    # the road network: what the upstream and downstream sensors read and how they are moving
    filled_now = np.nan_to_num(base)
    adjacency = state.neighbours
    has = adjacency.sum(axis=1) > 0
    for k in (0, 1, 3):
        lagged = np.nan_to_num(_take(filled, origins - k)) if k else filled_now
        mean = lagged @ adjacency.T
        columns[f"nb_mean{k}"] = np.where(has, mean, np.nan)
    columns["nb_diff"] = columns["nb_mean0"] - columns["nb_mean3"]
    columns["nb_gap"] = columns["nb_mean0"] - base
    nb_min = np.full_like(base, np.nan)
    nb_max = np.full_like(base, np.nan)
    for sensor in range(adjacency.shape[0]):  # per sensor: an [M, N, N] mask would not fit in memory
        near = np.flatnonzero(adjacency[sensor] > 0)
        if len(near):
            nb_min[:, sensor] = filled_now[:, near].min(axis=1)
            nb_max[:, sensor] = filled_now[:, near].max(axis=1)
    columns["nb_min"], columns["nb_max"] = nb_min, nb_max
    two_hop = adjacency @ adjacency
    columns["nb2_mean"] = np.where(two_hop.sum(1) > 0, filled_now @ two_hop.T, np.nan)
    names = list(columns)
    block = np.stack([columns[name] for name in names], axis=-1).astype(np.float32)
    return Common(block, names, z, filled, base, slots, days)


def step_features(
    common: Common, origins: np.ndarray, step: int, state: FeatureState, target: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """The features for `step` steps ahead: where that time of day usually is, and what happened over the
    same interval one day and one season ago.

    `target` (training rows only: the z value being predicted, [M, N]) takes that value back out of the
    time-of-day means, which were learned from the same training data; left in, a mean over five days
    would carry a fifth of the answer, and the model would learn to trust it more than it deserves."""
    n_slots = state.profile.shape[0]
    target_slot = (common.slots + step) % n_slots
    target_day = (common.days + (common.slots + step) // n_slots) % 7
    filled = common.filled
    profile = state.profile[target_slot]
    weekly = state.weekly[target_day, target_slot]
    if target is not None:
        known = ~np.isnan(target)
        n_day = state.count[:, target_slot].sum(axis=0)  # [M, N]
        n_week = state.count[target_day, target_slot]
        with np.errstate(invalid="ignore", divide="ignore"):
            loo = (profile * n_day - target) / (n_day - 1)
            loo_week = (weekly * n_week - target) / (n_week - 1)
        profile = np.where(known & (n_day > 1), loo, profile)
        weekly = np.where(known & (n_week > 1), loo_week, np.where(known, np.nan, weekly))
    columns: dict[str, np.ndarray] = {
        "profile_target": profile,
        "profile_change": profile - state.profile[common.slots],
        "weekly_target": weekly,
    }
    for label, back in (("day", n_slots), ("season", state.season_steps)):
        at_target = _take(filled, origins + step - back) if step < back else np.full_like(common.base, np.nan)
        at_origin = _take(filled, origins - back)
        columns[f"{label}_target"] = at_target
        columns[f"{label}_change"] = at_target - at_origin
    names = list(columns)
    block = np.stack([columns[name] for name in names], axis=-1).astype(np.float32)
    return block, names


@contextmanager
def _quiet() -> Iterator[None]:
    """numpy warns on all-NaN slices (a sensor with no neighbours, a gap); NaN is the right answer there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
