"""The served forecast: an online blend of the forecasters, with conformal intervals.

At each origin t, each model's weight for horizon h is 1 / MAE^power over the most recent `window` past
pairs (origin s, horizon h) whose target day s + h - 1 is already before t; the interval for horizon h is
the 10 % and 90 % quantiles of the blend's own scaled residuals (y - yhat) / sqrt(yhat + 1) over the same
pairs (split conformal on a rolling window). Nothing after t enters either. Where a horizon has no past
pair yet, the nearest shorter horizon's record stands in; with none at all, equal weights and a wide
Poisson-like band.

The blend's own settings (power, window) are chosen the same way, online: every candidate setting is
blended at every origin, and at origin t each horizon takes the candidate whose blend had the lowest MAE
over the last SELECT_WINDOW origins resolved before t (`select_at`). Before any candidate has a record,
DEFAULT serves: the median of the models. Two fixed combinations compete with the weighted blends in
that choice: the median of the models and the mean of "last day" and the learned model (their intervals
from their own residuals, as above). So no setting is picked by looking at the days it is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from polis.epidemic.data import CountryData
from polis.epidemic.evaluation import FIRST_ORIGIN, Forecaster, RollingRun, rolling_origin

LOWER_Q, UPPER_Q = 0.1, 0.9  # 80 % nominal
FALLBACK_Z = 2.5  # residual band (in sqrt(yhat + 1) units) before any residual is known


WEIGHTED = "inverse-MAE weights"
MEDIAN = "median of the models"
PAIR = "mean of last day and learned"
PAIR_MODELS = ("last day", "learned (LightGBM)")


@dataclass(frozen=True, slots=True)
class BlendSetting:
    power: float  # weight = 1 / MAE^power: 0 is an equal mix, a steep power follows the recent leader
    window: int  # past resolved origins the weights and the residual quantiles are taken over
    rule: str = WEIGHTED  # or a fixed combination (MEDIAN, PAIR): no weights to learn, only its interval


# The grid the online selection chooses from (the grid an earlier, test-day tuning searched), and two
# fixed combinations that are robust where the recent leader changes (added after a comparison on the
# first half of each country's test days only: BENCHMARKS.md). A combination whose models are not in
# the run (no learned model) is left out.
CANDIDATES = (
    *(BlendSetting(p, w) for p in (2.0, 4.0, 8.0, 16.0) for w in (14, 21, 28)),
    BlendSetting(0.0, 21, MEDIAN),
    BlendSetting(0.0, 21, PAIR),
)
# Before any record: the median of the models (chosen on the first half of each country's test days only,
# against the middle of the grid, power 4 over 21 origins, which served before: BENCHMARKS.md).
DEFAULT = BlendSetting(0.0, 21, MEDIAN)
SELECT_WINDOW = 21  # resolved origins whose blend errors choose the setting
POWER, WINDOW = 4.0, 21  # a single fixed weighted blend: the middle of the grid (`blend_at`, tests)


@dataclass(frozen=True, slots=True)
class BlendedForecast:
    """Cases ahead per region with an 80 % interval, and how much each model weighed per horizon."""

    point: np.ndarray  # (horizons, regions)
    lower: np.ndarray
    upper: np.ndarray
    weights: dict[str, list[float]]  # model -> weight per horizon
    settings: list[BlendSetting]  # the blend setting chosen per horizon


def _past_pairs(origins: np.ndarray, t: int, h: int, window: int) -> np.ndarray:
    """Origins s whose horizon-h target (day s + h - 1) is before t, the most recent `window` of them."""
    ok = origins[(origins + h - 1 < t)]
    return ok[-window:]


Blended = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, list[float]]]  # point, lower, upper, weights


def blend_at(
    run: RollingRun,
    t: int,
    window: int = WINDOW,
    power: float = POWER,
) -> Blended:
    """Blend the run's models at origin t, using only pairs resolved before t."""
    return _Blender(run).at(t, window, power)


class _Blender:
    """The run's predictions stacked once ((models, days, horizons, regions)), so that blending many
    origins and settings costs array slices, not Python loops over models."""

    def __init__(self, run: RollingRun) -> None:
        self.run = run
        self.names = list(run.predictions)
        self.stacked = np.stack([run.predictions[m] for m in self.names])
        self.actual = run.actual()
        self._rule_cache: dict[str, np.ndarray] = {}

    def at(self, t: int, window: int, power: float) -> Blended:
        return self.at_powers(t, window, (power,))[0]

    def at_setting(self, t: int, setting: BlendSetting) -> Blended:
        if setting.rule == WEIGHTED:
            return self.at(t, setting.window, setting.power)
        return self.at_rule(t, setting.window, setting.rule)

    def usable(self, setting: BlendSetting) -> bool:
        return setting.rule != PAIR or all(name in self.names for name in PAIR_MODELS)

    def rule_points(self, rule: str) -> np.ndarray:
        """(days, horizons, regions): a fixed combination of the models' predictions."""
        if rule == MEDIAN:
            return np.asarray(np.median(self.stacked, axis=0))
        if rule == PAIR:
            return np.asarray(self.stacked[[self.names.index(m) for m in PAIR_MODELS]].mean(axis=0))
        raise ValueError(f"unknown blend rule {rule!r}")

    def rule_weights(self, t: int, rule: str) -> np.ndarray:
        """(horizons, models): each model's weight in the combination at origin t, averaged over regions
        (the median of an even number of models is the mean of the middle two)."""
        k = len(self.names)
        if rule == PAIR:
            w = np.array([0.5 if name in PAIR_MODELS else 0.0 for name in self.names])
            return np.tile(w, (self.run.horizons, 1))
        ranks = np.argsort(np.argsort(self.stacked[:, t], axis=0, kind="stable"), axis=0, kind="stable")
        middle = [k // 2] if k % 2 else [k // 2 - 1, k // 2]
        share = np.isin(ranks, middle) / len(middle)  # (models, horizons, regions)
        return np.asarray(share.mean(axis=2).T)

    def at_rule(self, t: int, window: int, rule: str) -> Blended:
        """A fixed combination at origin t, its interval from its own residuals on pairs resolved before t."""
        points = self._rule_cache.get(rule)
        if points is None:
            points = self._rule_cache[rule] = self.rule_points(rule)
        origins = np.array([s for s in self.run.origins if s < t], dtype=np.int64)
        quantiles = np.tile([-FALLBACK_Z, FALLBACK_Z], (self.run.horizons, 1))
        for h in range(1, self.run.horizons + 1):
            past = _past_pairs(origins, t, h, window)
            if len(past):
                predicted, truth = points[past, h - 1], self.actual[past, h - 1]
                present = ~np.isnan(truth) & ~np.isnan(predicted)
                scaled = (truth[present] - predicted[present]) / np.sqrt(np.maximum(predicted[present], 0.0) + 1.0)
                if scaled.size:
                    quantiles[h - 1] = np.quantile(scaled, [LOWER_Q, UPPER_Q])
            elif h > 1:
                quantiles[h - 1] = quantiles[h - 2]
        point = points[t]
        lower, upper = _band(point, quantiles)
        w = self.rule_weights(t, rule)
        weights = {name: [round(float(v), 4) for v in w[:, m]] for m, name in enumerate(self.names)}
        return np.maximum(point, 0.0), lower, upper, weights

    def at_powers(self, t: int, window: int, powers: Sequence[float]) -> list[Blended]:
        """The blends at origin t for several powers at once (they share the window's past pairs)."""
        run, names = self.run, self.names
        horizons, n, k = run.horizons, run.data.n_regions, len(powers)
        exponent = np.asarray(powers, dtype=np.float64)[:, None]
        origins = np.array([s for s in run.origins if s < t], dtype=np.int64)
        point = np.zeros((k, horizons, n))
        w_all = np.zeros((k, horizons, len(names)))
        residual_q = np.zeros((k, horizons, 2))
        last_w = np.full((k, len(names)), 1.0 / len(names))
        last_q = np.tile([-FALLBACK_Z, FALLBACK_Z], (k, 1))
        for h in range(1, horizons + 1):
            past = _past_pairs(origins, t, h, window)
            if len(past):
                predicted = self.stacked[:, past, h - 1]  # (models, pairs, regions)
                truth = self.actual[past, h - 1]
                present = ~np.isnan(truth) & ~np.isnan(predicted).any(axis=0)
                errors = np.array([np.abs(p[present] - truth[present]).mean() for p in predicted])
                w = 1.0 / np.maximum(errors, 1e-6)[None, :] ** exponent  # (powers, models)
                w = w / w.sum(axis=1, keepdims=True)
                blended = np.einsum("km,mq->kq", w, predicted[:, present])
                scaled = (truth[present][None, :] - blended) / np.sqrt(np.maximum(blended, 0.0) + 1.0)
                q = np.quantile(scaled, [LOWER_Q, UPPER_Q], axis=1).T  # (powers, 2)
            else:
                w, q = last_w, last_q
            point[:, h - 1] = w @ self.stacked[:, t, h - 1]
            w_all[:, h - 1], residual_q[:, h - 1] = w, q
            last_w, last_q = w, q
        lower, upper = _band(point, residual_q)
        out: list[Blended] = []
        for j in range(k):
            weights = {name: [round(float(v), 4) for v in w_all[j, :, m]] for m, name in enumerate(names)}
            out.append((np.maximum(point[j], 0.0), lower[j], upper[j], weights))
        return out


def _band(point: np.ndarray, quantiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) around `point` (..., horizons, regions) from residual quantiles (..., horizons, 2) in
    sqrt(point + 1) units, the scale the residuals were measured in."""
    spread = np.sqrt(np.maximum(point, 0.0) + 1.0)
    lower = np.maximum(point + quantiles[..., :1] * spread, 0.0)
    return lower, np.maximum(point + quantiles[..., 1:] * spread, lower)


Bands = tuple[np.ndarray, np.ndarray, np.ndarray]  # point, lower, upper: (days, horizons, regions)


def candidate_blends(
    run: RollingRun, candidates: Sequence[BlendSetting] = CANDIDATES, at: Sequence[int] | None = None
) -> dict[BlendSetting, Bands]:
    """Every candidate setting's blend (of the run's models as they are now) at every origin of the run
    (or at the origins `at` only; NaN elsewhere)."""
    blender = _Blender(run)
    shape = (run.data.n_days, run.horizons, run.data.n_regions)
    out: dict[BlendSetting, Bands] = {}
    usable = [c for c in candidates if blender.usable(c)]
    for c in usable:
        out[c] = (np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan))
    origins = run.origins if at is None else at
    weighted = [c for c in usable if c.rule == WEIGHTED]
    for window in dict.fromkeys(c.window for c in weighted):
        group = [c for c in weighted if c.window == window]
        for t in origins:
            blends = blender.at_powers(t, window, [c.power for c in group])
            for c, (point, lower, upper, _) in zip(group, blends, strict=True):
                out[c][0][t], out[c][1][t], out[c][2][t] = point, lower, upper
    for c in (c for c in usable if c.rule != WEIGHTED):
        for t in origins:
            point, lower, upper, _ = blender.at_rule(t, c.window, c.rule)
            out[c][0][t], out[c][1][t], out[c][2][t] = point, lower, upper
    return out


def select_at(
    run: RollingRun,
    blends: dict[BlendSetting, Bands],
    t: int,
    actual: np.ndarray,
    fallback_shorter: bool = False,
    default: BlendSetting = DEFAULT,
) -> list[BlendSetting]:
    """Per horizon, the candidate whose blend erred least over the last SELECT_WINDOW origins whose
    target was known before t (ties: the earlier candidate); `default` (if a candidate) for a horizon with
    no such origin yet (not the shorter horizon's choice: a fixed combination chosen at short horizons
    is no guide at long ones; compared on the first half of the test days, BENCHMARKS.md);
    `fallback_shorter` is the earlier rule, kept for that comparison (`benchmarks.bench_epidemic`)."""
    origins = np.array([s for s in run.origins if s < t], dtype=np.int64)
    fallback = default if default in blends else next(iter(blends))
    chosen: list[BlendSetting] = []
    for h in range(1, run.horizons + 1):
        past = _past_pairs(origins, t, h, SELECT_WINDOW)
        if not len(past):
            chosen.append(chosen[-1] if fallback_shorter and chosen else fallback)
            continue
        errors = [float(np.nanmean(np.abs(b[0][past, h - 1] - actual[past, h - 1]))) for b in blends.values()]
        chosen.append(list(blends)[int(np.nanargmin(errors))])
    return chosen


def add_blend(
    run: RollingRun,
    name: str = "blend",
    candidates: Sequence[BlendSetting] = CANDIDATES,
    fallback_shorter: bool = False,
    default: BlendSetting = DEFAULT,
) -> tuple[np.ndarray, np.ndarray]:
    """Add the online blend (its setting chosen online per origin and horizon) to a finished run as one
    more model; returns its (lower, upper) bounds. `candidates` of one setting is that fixed blend."""
    blends = candidate_blends(run, candidates)
    actual = run.actual()
    shape = (run.data.n_days, run.horizons, run.data.n_regions)
    point, lower, upper = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for t in run.origins:
        for h, setting in enumerate(select_at(run, blends, t, actual, fallback_shorter, default)):
            best = blends[setting]
            point[t, h], lower[t, h], upper[t, h] = best[0][t, h], best[1][t, h], best[2][t, h]
    run.predictions[name] = point
    return lower, upper


def coverage(run: RollingRun, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of (test day, horizon, region) targets inside [lower, upper]."""
    actual = run.actual()[run.origins]
    lo, hi = lower[run.origins], upper[run.origins]
    present = ~np.isnan(actual)
    inside = (actual >= lo) & (actual <= hi)
    return float(inside[present].mean())


def served_origins(days: int, horizons: int = 14, first_origin: int = FIRST_ORIGIN) -> list[int]:
    """The origins whose model forecasts the served blend at the end of `days` days reads: the choice of
    setting at `days` reads candidate blends at the last SELECT_WINDOW + horizons origins, and each of
    those reads model errors up to the widest window + horizons further back (`days` itself last)."""
    widest = max(c.window for c in CANDIDATES)
    blended = max(first_origin, days - SELECT_WINDOW - horizons)
    first = min(max(first_origin, blended - widest - horizons), days)
    return [*range(first, days), days]


def blended_forecast(
    history: CountryData, forecasters: Sequence[Forecaster], horizons: int = 14, first_origin: int = FIRST_ORIGIN
) -> BlendedForecast:
    """The forecast served for the days after `history`: each model re-run on the past origins to earn
    its weight, the residuals that size the interval and the record that picks the blend's setting,
    then blended at the end of the history with the setting chosen per horizon. With the protocol's first
    origin it is exactly the benchmark's blend at the origin after the history's last day."""
    days = history.n_days
    extended = _with_open_day(history)
    origins = served_origins(days, horizons, first_origin)
    blended = max(first_origin, days - SELECT_WINDOW - horizons)
    run = rolling_origin(extended, forecasters, horizons, origins=origins)
    blends = candidate_blends(run, at=[*range(min(blended, days), days), days])
    actual = run.actual()
    chosen = select_at(run, blends, days, actual)
    point, lower, upper = (np.empty((horizons, history.n_regions)) for _ in range(3))
    weights: dict[str, list[float]] = {name: [] for name in run.predictions}
    blender = _Blender(run)
    for h, setting in enumerate(chosen):
        point[h], lower[h], upper[h] = (b[days, h] for b in blends[setting])
        _, _, _, w = blender.at_setting(days, setting)
        for name in weights:
            weights[name].append(w[name][h])
    return BlendedForecast(point, lower, upper, weights, chosen)


def _with_open_day(history: CountryData) -> CountryData:
    """The history plus one placeholder day (NaN cases) so that the origin 'after the last day' exists
    in a run; the placeholder is never read, as every model sees only days before its origin."""
    from dataclasses import replace
    from datetime import timedelta

    cases = np.vstack([history.cases, np.full((1, history.n_regions), np.nan)])
    flows = np.concatenate([history.flows, history.flows[-1:]])
    observed = np.append(history.flow_observed, False)
    return replace(
        history,
        dates=(*history.dates, history.dates[-1] + timedelta(days=1)),
        cases=cases,
        flows=flows,
        flow_observed=observed,
    )
