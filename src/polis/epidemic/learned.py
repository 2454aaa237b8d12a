"""A learned forecaster: one global LightGBM model over every region and horizon, with mobility-weighted
neighbour features, refit (daily by default) on data strictly before the forecast origin.

Rows are (origin s, region i, horizon h) with the target log1p(cases on day s + h - 1) - log1p(scale),
the region's scale being the last day's cases + 1 (it follows a reporting break at once; chosen among
1/2/3/7 days on the first half of each series' test days only, see BENCHMARKS.md), trained with an L1
objective weighted by that scale: a weighted median of the log ratio, which shares what it learns across
big and small regions (a doubling is the same step in either) while the big ones, where the errors in
cases are, weigh most. The log target replaced cases / scale, chosen the same way (BENCHMARKS.md, note 7).
Features, all from days before s: recent lags and means (scaled), the region's and the country's growth,
a break detector (last day against the weekly mean, for reporting changes such as Spain's in May 2020),
zero days, importation pressure along the last known flows (cases in the regions people come from,
weighted by the share of their movements that ends here) and its growth, the metapopulation model's own
forecast, the horizon and the target's day of week.

Leakage: the model only ever sees the `history` it is handed (the protocol truncates it), and a fitted
booster is reused for a later origin only when that history starts with exactly the data it was fitted
on; otherwise it refits.

Under the `polis.forecast` contract (fit / predict over a panel, save / load) it is
`polis.epidemic.panel_forecaster.LearnedEpidemicForecaster`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from polis.epidemic.data import CountryData
from polis.epidemic.metapopulation import Metapopulation, mixing

if TYPE_CHECKING:
    import lightgbm


SCALE_DAYS = 1  # picked on the first half of the test days only (1: 1.101, 3: 1.108, 7: 1.122 x baseline)
TARGET = "log1p(cases) - log1p(scale)"  # what the boosters predict (saved with a model; a different one is refitted)


def region_scale(cases: np.ndarray) -> np.ndarray:
    """Each region's scale: mean of its last SCALE_DAYS days + 1 (at least 1, whatever a store hands over)."""
    return np.asarray(np.maximum(cases[-SCALE_DAYS:], 0.0).mean(axis=0) + 1.0)


def origin_features(history: CountryData, horizons: int, mechanistic: Metapopulation) -> np.ndarray:
    """(horizons, regions, features) for forecasting from the end of `history`."""
    cases = history.cases
    days, n = cases.shape
    padded = np.vstack([np.zeros((14, n)), cases])[-14:]
    week, before = padded[-7:], padded[:7]
    m7, p7 = week.mean(axis=0), before.mean(axis=0)
    scale = region_scale(cases) if days else np.ones(n)
    lags = padded[::-1][:7] / scale  # y(s-1) .. y(s-7)
    mix = mixing(history.flows[-1]) if days else np.eye(n)
    away = mix.copy()
    np.fill_diagonal(away, 0.0)
    imported = m7 @ away  # sum_j m7_j * share of j's movements ending in i
    imported_growth = (m7 - p7) @ away
    country_growth = np.log((m7.sum() + 1.0) / (p7.sum() + 1.0))
    shared = np.column_stack(
        [
            lags.T,
            m7 / scale,
            padded.mean(axis=0) / scale,
            np.log1p(m7),
            np.log((m7 + 1.0) / (p7 + 1.0)),
            np.full(n, country_growth),
            (padded[-1] + 1.0) / (padded[-7:-1].mean(axis=0) + 1.0),
            (week == 0).sum(axis=0),
            week.std(axis=0) / scale,
            np.log1p(imported),
            imported / scale,
            imported_growth / scale,
        ]
    )
    mech = mechanistic.forecast(history, horizons) / scale  # (horizons, n)
    last_day = history.dates[-1].weekday() if days else 0
    out = np.empty((horizons, n, shared.shape[1] + 3))
    for h in range(horizons):
        out[h, :, : shared.shape[1]] = shared
        out[h, :, -3] = mech[h]
        out[h, :, -2] = h + 1
        out[h, :, -1] = (last_day + h + 1) % 7
    return out


def fingerprint(history: CountryData) -> str:
    """Everything a forecast from the end of `history` reads (the features and the metapopulation model
    take the cases, the last day's flows and the last day's weekday): regions, last date, cases, last
    day's flows. Equal fingerprints, equal forecasts."""
    digest = hashlib.sha256()
    digest.update("|".join(history.regions).encode())
    digest.update(f"{history.n_days}:{history.dates[-1] if history.n_days else ''}".encode())
    digest.update(np.ascontiguousarray(history.cases).tobytes())
    digest.update(np.ascontiguousarray(history.flows[-1:]).tobytes())
    return digest.hexdigest()


@dataclass
class LearnedForecaster:
    """Global LightGBM on scaled targets; `refit_every` days between fits, `window` origins of training."""

    refit_every: int = 1  # daily refits: 7-day-old models cost 10-30 % MAE at 7-14 days (BENCHMARKS.md)
    window: int = 14
    trees: int = 80
    threads: int = 1  # LightGBM threads busy-wait: on 2 shared cores one thread is 5x faster than two
    name: str = "learned (LightGBM)"
    mechanistic: Metapopulation = field(default_factory=Metapopulation)
    fits: int = 0  # boosters trained by this instance (what a served forecast restored from disk avoids)
    _fitted: tuple[int, str, Any] | None = field(default=None, repr=False)

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        booster = self.booster_for(history, horizons)
        features = origin_features(history, horizons, self.mechanistic)
        scale = region_scale(history.cases) if history.n_days else np.ones(history.n_regions)
        if booster is None:  # too little history to learn from: fall back on the mechanistic model
            return np.maximum(features[:, :, -3] * scale, 0.0)
        flat = features.reshape(-1, features.shape[-1])
        log_ratio = np.asarray(booster.predict(flat)).reshape(horizons, history.n_regions)
        return np.maximum(np.expm1(log_ratio + np.log1p(scale)), 0.0)

    @property
    def kept(self) -> tuple[int, str, Any] | None:
        """(days fitted on, fingerprint of those days, booster or None) of the kept fit, if any."""
        return self._fitted

    def keep(self, kept: tuple[int, str, Any] | None) -> None:
        """Adopt a fit (a saved one, restored) or, with None, forget the kept one."""
        self._fitted = kept

    def booster_for(self, history: CountryData, horizons: int) -> lightgbm.Booster | None:
        """The booster for forecasting from the end of `history`: the kept one while it is recent enough
        and fitted on a prefix of this history, otherwise a new fit (kept for the next call)."""
        days = history.n_days
        if self._fitted is not None:
            fitted_days, fitted_on, booster = self._fitted
            if (
                fitted_days <= days < fitted_days + self.refit_every
                and fingerprint(history.truncated(fitted_days)) == fitted_on
            ):
                return booster  # type: ignore[no-any-return]
        booster = self.fit(history, horizons)
        self._fitted = (days, fingerprint(history), booster)
        return booster

    def fit(self, history: CountryData, horizons: int) -> lightgbm.Booster | None:
        """A booster trained on (origin, horizon) pairs whose target day is inside `history`."""
        import lightgbm

        days = history.n_days
        rows, labels, weights = [], [], []
        for origin in range(max(days - self.window, 7), days):
            reach = min(horizons, days - origin)  # target day origin + h - 1 must be < days
            past = history.truncated(origin)
            features = origin_features(past, reach, self.mechanistic)
            scale = region_scale(past.cases)
            for h in range(reach):
                rows.append(features[h])
                labels.append(np.log1p(np.maximum(history.cases[origin + h], 0.0)) - np.log1p(scale))
                weights.append(scale)
        if len(rows) < 5:
            return None
        self.fits += 1
        params = {
            "objective": "l1",
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 40,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "max_bin": 63,
            "verbose": -1,
            "num_threads": self.threads,
            "seed": 0,
            "deterministic": True,
        }
        data = lightgbm.Dataset(np.vstack(rows), np.concatenate(labels), weight=np.concatenate(weights))
        return lightgbm.train(params, data, num_boost_round=self.trees)
