"""Features shared by the learned forecasters, built in whole arrays (origins x sensors x features).

Everything is in each sensor's own standard units (z = (x - mean) / std, from the training part only),
so one global model serves a 20 mph and a 70 mph road, a quiet and a busy corner. What is learned from
history (means, deviations, the time-of-day profile) is kept in `FeatureState` and saved with the model,
so a forecast served live sees the same transform as the backtest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from polis.forecast.data import Panel, time_features, weekly_sums
from polis.forecast.model import forward_fill
from polis.nan_reduce import nan_reduce

__all__ = ["FeatureState", "common_features", "most_correlated", "recent_window", "step_features"]

# Each sensor also reads its most correlated sensors over the training part, wherever they are: on
# Los-loop this beat every road-graph feature tried on the validation slice (a jam shows on sensors that
# share a corridor's daily pattern, not only on the adjacent ones).
RELATED = 5


@dataclass(slots=True)
class FeatureState:
    mean: np.ndarray  # [N]
    std: np.ndarray  # [N]
    profile: np.ndarray  # [slots, N] mean z by local time of day
    weekly: np.ndarray  # [7, slots, N] mean z by day of week and time of day (NaN where unseen)
    count: np.ndarray  # [7, slots, N] readings behind each weekly cell (for leave-one-out in training)
    neighbours: np.ndarray  # [N, N] row-normalised adjacency (zero rows where a sensor has none)
    related: np.ndarray  # [N, K] each sensor's K most correlated other sensors (K = 0 in older models)
    related_weight: np.ndarray  # [N, K] their positive correlations, summing to 1 (a zero row: none)
    timezone: str
    step_s: int
    lags: int
    season_steps: int  # the longest season worth looking back over (a week when the data is long enough)
    # Whether each step also reads "as a day / a season ago" as a change from the last reading (`step_features`):
    # only with a weekly season; over one week of data a day back is one noisy sample (Los-loop: worse).
    gaps: bool = False  # False in models saved before it, which were trained without those columns
    _graph: Graph | None = field(default=None, repr=False, compare=False)  # derived, never saved

    @classmethod
    def learn(cls, history: Panel, lags: int) -> FeatureState:
        values = history.values
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        z = (values - mean) / std
        n_slots = history.steps_per_day
        total, count = weekly_sums(history, z)
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
        related, related_weight = most_correlated(z, min(RELATED, history.n_sensors - 1))
        return cls(mean, std, profile, weekly, count, neighbours, related, related_weight, history.timezone,
                   history.step_s, lags, season, gaps=season == week)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "profile": self.profile, "weekly": self.weekly,
                "count": self.count, "neighbours": self.neighbours, "related": self.related,
                "related_weight": self.related_weight}

    def to_json(self) -> dict[str, object]:
        return {"timezone": self.timezone, "step_s": self.step_s, "lags": self.lags,
                "season_steps": self.season_steps, "gaps": self.gaps}

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray], meta: dict[str, object]) -> FeatureState:
        none = np.zeros((len(arrays["mean"]), 0))  # a model saved before related sensors: it reads none
        return cls(
            arrays["mean"], arrays["std"], arrays["profile"], arrays["weekly"], arrays["count"], arrays["neighbours"],
            arrays.get("related", none.astype(np.int64)), arrays.get("related_weight", none),
            str(meta["timezone"]), int(meta["step_s"]), int(meta["lags"]),  # type: ignore[call-overload]
            int(meta["season_steps"]),  # type: ignore[call-overload]
            gaps=bool(meta.get("gaps", False)),
        )

    def standardise(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def graph(self) -> Graph:
        """The road graph's derived forms, computed once per model: under load a 207 x 207 matrix product
        on every forecast took ~45 ms of a 60 ms feature build (BLAS threads fighting other work)."""
        if self._graph is None:
            self._graph = Graph.of(self.neighbours)
        return self._graph


def most_correlated(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sensor's k most correlated other sensors over `z` [T, N] (standardised; a gap counts as the
    sensor's mean), with weights: the positive correlations, normalised per sensor."""
    n = z.shape[1]
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0))
    x = np.nan_to_num(z)
    x = x - x.mean(axis=0)
    norm = np.sqrt((x * x).sum(axis=0))
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    correlation = x.T @ x
    np.fill_diagonal(correlation, -np.inf)
    related = np.argsort(-correlation, axis=1, kind="stable")[:, :k]
    weight = np.take_along_axis(correlation, related, axis=1).clip(0)
    sums = weight.sum(axis=1, keepdims=True)
    return related, np.divide(weight, sums, out=np.zeros_like(weight), where=sums > 0)


@dataclass(frozen=True, slots=True)
class Graph:
    has: np.ndarray  # [N] whether a sensor has any neighbour
    near: np.ndarray  # [N, K] each sensor's neighbours (column indices), padded with N (no sensor)
    two_hop: np.ndarray  # [N, N] adjacency @ adjacency
    has_two_hop: np.ndarray  # [N]

    @classmethod
    def of(cls, adjacency: np.ndarray) -> Graph:
        n = adjacency.shape[0]
        lists = [np.flatnonzero(row > 0) for row in adjacency]
        near = np.full((n, max((len(x) for x in lists), default=0)), n, dtype=np.int64)
        for sensor, found in enumerate(lists):
            near[sensor, : len(found)] = found
        two_hop = adjacency @ adjacency
        return cls(adjacency.sum(axis=1) > 0, near, two_hop, two_hop.sum(1) > 0)

    def extremes(self, now: np.ndarray, chunk_cells: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and highest neighbour reading [M, N] of each sensor (NaN without neighbours), in
        chunks of origins so the [M, N, K] gather stays small."""
        low, high = np.full_like(now, np.nan), np.full_like(now, np.nan)
        if self.near.shape[1] == 0:
            return low, high
        per_chunk = max(1, chunk_cells // self.near.size)
        for start in range(0, len(now), per_chunk):
            part = now[start : start + per_chunk]
            pad = np.full((len(part), 1), np.inf)
            around = np.concatenate([part, pad], axis=1)[:, self.near]  # [m, N, K]; the pad column is +inf
            low[start : start + per_chunk] = np.where(self.has, around.min(axis=2), np.nan)
            around = np.concatenate([part, -pad], axis=1)[:, self.near]
            high[start : start + per_chunk] = np.where(self.has, around.max(axis=2), np.nan)
        return low, high


def take_rows(z: np.ndarray, index: np.ndarray) -> np.ndarray:
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


def season_anchor(common: Common, origins: np.ndarray, step: int, state: FeatureState) -> np.ndarray:
    """[M, N] in z units: the reading one season before the target time (the last one at or before it), or
    the last reading where there is none; what a step anchored on the season adds its change to."""
    if step >= state.season_steps:
        return common.base
    back = take_rows(common.filled, origins + step - state.season_steps)
    return np.where(np.isnan(back), common.base, back)


def lookback(state: FeatureState) -> int:
    """How many steps before its origin any feature reads (the long mean, a day back, a season back)."""
    return max(4 * state.lags, state.profile.shape[0], state.season_steps)


def recent_window(panel: Panel, origins: np.ndarray, state: FeatureState) -> tuple[Panel, np.ndarray]:
    """The part of `panel` that the features of `origins` read, and the origins as rows of that part.

    A forecast from the latest step needs a day or a week back, not the whole history: standardising and
    forward-filling only that part is most of what makes a served forecast fast. The features come out
    identical because the window's first row carries the forward-filled reading in (the last one at or
    before it), and that row lies further back than any lag reads a raw value from."""
    stop = int(origins.max()) + 1 if len(origins) else 0
    start = max(0, int(origins.min()) - lookback(state)) if len(origins) else 0
    if start == 0:
        return panel.head(stop), origins
    values = panel.values[start:stop].copy()
    gaps = np.flatnonzero(np.isnan(values[0]))
    if len(gaps):
        earlier = panel.values[: start + 1, gaps]
        seen = ~np.isnan(earlier)
        last = start - np.argmax(seen[::-1], axis=0)  # the latest reading at or before `start`
        values[0, gaps] = np.where(seen.any(axis=0), earlier[last, np.arange(len(gaps))], np.nan)
    return replace(panel, times=panel.times[start:stop], values=values), origins - start


def common_features(panel: Panel, origins: np.ndarray, state: FeatureState) -> Common:
    """Only `panel.values[: max(origins) + 1]` is read: nothing after an origin reaches its features."""
    stop = int(origins.max()) + 1 if len(origins) else 0
    z = state.standardise(panel.values[:stop])
    filled = forward_fill(z)
    slots, days = time_features(panel.times[origins], state.timezone, state.step_s)
    base = filled[origins]
    base = np.where(np.isnan(base), state.profile[slots], base)
    lags = [take_rows(z, origins - k) for k in range(state.lags)]
    window = np.stack(lags, axis=-1)  # [M, N, L]
    columns: dict[str, np.ndarray] = {f"lag{k}": lags[k] for k in range(state.lags)}
    columns["base"] = base
    for k in (1, 2, 3, 6):
        if k < state.lags:
            columns[f"diff{k}"] = base - lags[k]
    with np.errstate(invalid="ignore"):  # NaN slices (a gap, a sensor without neighbours) give NaN, quietly
        for width in (3, 6, state.lags):
            columns[f"mean{width}"] = nan_reduce(np.nanmean, window[..., :width], axis=-1)
        columns["std"] = nan_reduce(np.nanstd, window, axis=-1)
        columns["min"] = nan_reduce(np.nanmin, window, axis=-1)
        columns["max"] = nan_reduce(np.nanmax, window, axis=-1)
        long = np.stack([take_rows(filled, origins - k) for k in range(0, 4 * state.lags, 2)], axis=-1)
        columns["mean_long"] = nan_reduce(np.nanmean, long, axis=-1)
    columns["profile_now"] = state.profile[slots]
    columns["above_profile"] = base - state.profile[slots]
    # the road network: what the upstream and downstream sensors read and how they are moving
    filled_now = np.nan_to_num(base)
    adjacency = state.neighbours
    graph = state.graph()
    for k in (0, 1, 3):
        lagged = np.nan_to_num(take_rows(filled, origins - k)) if k else filled_now
        mean = lagged @ adjacency.T
        columns[f"nb_mean{k}"] = np.where(graph.has, mean, np.nan)
    columns["nb_diff"] = columns["nb_mean0"] - columns["nb_mean3"]
    columns["nb_gap"] = columns["nb_mean0"] - base
    columns["nb_min"], columns["nb_max"] = graph.extremes(filled_now)
    columns["nb2_mean"] = np.where(graph.has_two_hop, filled_now @ graph.two_hop.T, np.nan)
    if state.related.shape[1]:
        columns.update(_related_columns(state, filled, filled_now, origins))
    names = list(columns)
    block = np.stack([columns[name] for name in names], axis=-1).astype(np.float32)
    return Common(block, names, z, filled, base, slots, days)


def _related_columns(
    state: FeatureState, filled: np.ndarray, now: np.ndarray, origins: np.ndarray
) -> dict[str, np.ndarray]:
    """Where the most correlated sensors stand against this one, and how they moved over the last one and
    three steps: their weighted mean, and the three closest one by one."""
    related, weight = state.related, state.related_weight
    has = weight.sum(axis=1) > 0
    moved1 = now - np.nan_to_num(take_rows(filled, origins - 1))
    moved3 = now - np.nan_to_num(take_rows(filled, origins - 3))

    def weighted(x: np.ndarray) -> np.ndarray:
        return np.where(has, (x[:, related] * weight).sum(axis=-1), np.nan)

    columns = {"rel_mean": weighted(now)}
    columns["rel_gap"] = columns["rel_mean"] - now
    columns["rel_diff1"] = weighted(moved1)
    columns["rel_diff3"] = weighted(moved3)
    for rank in range(min(3, related.shape[1])):
        other = related[:, rank]
        columns[f"rel{rank}_gap"] = now[:, other] - now
        columns[f"rel{rank}_diff1"] = moved1[:, other]
    return columns


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
        at_target = take_rows(filled, origins + step - back) if step < back else np.full_like(common.base, np.nan)
        at_origin = take_rows(filled, origins - back)
        columns[f"{label}_target"] = at_target
        columns[f"{label}_change"] = at_target - at_origin
        if state.gaps:  # the change that "as then" forecasts, as one feature: a tree splits on one at a time
            columns[f"{label}_gap"] = at_target - common.base
    names = list(columns)
    block = np.stack([columns[name] for name in names], axis=-1).astype(np.float32)
    return block, names

