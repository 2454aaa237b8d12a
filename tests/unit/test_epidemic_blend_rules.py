"""The fixed combinations the online blend may choose (median of the models, mean of last day and the
learned model): what they forecast, their weights and intervals, and that a run without the learned model
leaves the pair out. On 20 French regions, a few origins."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from polis.epidemic.blend import CANDIDATES, MEDIAN, PAIR, _Blender, add_blend, candidate_blends
from polis.epidemic.data import load_country
from polis.epidemic.evaluation import Forecaster, LastDay, MeanOfLastWeek, RollingRun, rolling_origin
from polis.epidemic.learned import LearnedForecaster
from polis.epidemic.metapopulation import Metapopulation
from polis.settings import Settings

ORIGINS = list(range(20, 44))


@pytest.fixture(scope="module")
def run() -> RollingRun:
    data = load_country(Settings().datasets_dir, "France")
    keep = slice(0, 20)
    data = replace(data, regions=data.regions[keep], cases=data.cases[:, keep], flows=data.flows[:, keep, keep])
    models: list[Forecaster] = [LastDay(), MeanOfLastWeek(), Metapopulation(), LearnedForecaster(trees=10, window=7)]
    return rolling_origin(data.truncated(50), models, origins=ORIGINS)


def test_the_combinations_forecast_what_they_say(run: RollingRun) -> None:
    median, pair = (next(c for c in CANDIDATES if c.rule == rule) for rule in (MEDIAN, PAIR))
    blends = candidate_blends(run, (median, pair))
    stacked = np.stack(list(run.predictions.values()))
    t = ORIGINS[-1]
    assert np.allclose(blends[median][0][t], np.maximum(np.median(stacked[:, t], axis=0), 0.0))
    both = (run.predictions["last day"][t] + run.predictions["learned (LightGBM)"][t]) / 2
    assert np.allclose(blends[pair][0][t], np.maximum(both, 0.0))
    for _, lower, upper in blends.values():  # bands from residuals: they need not hold a biased point
        assert (lower[t] >= 0).all() and (lower[t] <= upper[t]).all() and (upper[t] > lower[t]).any()
    blender = _Blender(run)
    for setting, expected in ((median, None), (pair, {"last day": 0.5, "learned (LightGBM)": 0.5})):
        weights = blender.at_setting(t, setting)[3]
        assert all(abs(sum(w[h] for w in weights.values()) - 1) < 1e-3 for h in range(run.horizons))
        if expected is not None:
            assert {k: w[0] for k, w in weights.items() if w[0]} == expected


def test_a_run_without_the_learned_model_blends_without_the_pair(run: RollingRun) -> None:
    plain = RollingRun(run.data, run.origins, run.horizons)
    plain.predictions = {k: v for k, v in run.predictions.items() if k != "learned (LightGBM)"}
    assert {c.rule for c in candidate_blends(plain, CANDIDATES, at=ORIGINS[-2:])} == {
        "inverse-MAE weights",
        MEDIAN,
    }
    lower, upper = add_blend(plain)
    served = plain.predictions["blend"][ORIGINS]
    assert not np.isnan(served).any() and (lower[ORIGINS] <= upper[ORIGINS]).all()
