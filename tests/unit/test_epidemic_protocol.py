"""The rolling-origin protocol: it reproduces the issue's reference baselines, and no model can see the future."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from polis.epidemic.blend import add_blend, blended_forecast
from polis.epidemic.data import CountryData, load_country
from polis.epidemic.evaluation import LastDay, MeanOfLastWeek, rolling_origin
from polis.epidemic.learned import LearnedForecaster
from polis.epidemic.metapopulation import Metapopulation
from polis.settings import Settings


def country(name: str) -> CountryData:
    return load_country(Settings().datasets_dir, name)


def test_baselines_reproduce_the_reference_numbers_for_england() -> None:
    run = rolling_origin(country("England"), [LastDay(), MeanOfLastWeek()])
    assert run.origins[0] == 14 and len(run.origins) == 61 - 14
    last, week = run.mae("last day"), run.mae("mean of last 7 days")
    assert np.round(week[[0, 6, 13]], 2).tolist() == [5.65, 8.14, 10.19]
    assert np.round(last[[0, 6, 13]], 2).tolist() == [6.00, 7.53, 9.60]


def test_json_table_has_every_model_and_horizon() -> None:
    run = rolling_origin(country("France"), [LastDay(), MeanOfLastWeek()])
    rows = run.table()
    assert len(rows) == 2 * 14
    assert {r["model"] for r in rows} == {"last day", "mean of last 7 days"}
    assert [r["horizon_days"] for r in rows[:14]] == list(range(1, 15))
    assert rows[0]["mae"] == pytest.approx(4.14, abs=0.005)


def _perturbed_after(data: CountryData, day: int) -> CountryData:
    """The same country with every case count and flow from `day` on changed."""
    rng = np.random.default_rng(7)
    cases = np.array(data.cases)
    cases[day:] = cases[day:] * 3 + rng.integers(0, 50, size=cases[day:].shape)
    flows = np.array(data.flows)
    flows[day:] *= rng.uniform(0.1, 2.0, size=flows[day:].shape)
    return replace(data, cases=cases, flows=flows)


def test_no_model_sees_data_from_its_test_day_on() -> None:
    data = country("France").truncated(45)
    cut = 28
    tampered = _perturbed_after(data, cut)
    # refit_every=4: both a refit and a reuse of a fitted booster happen on either side of the cut
    models = lambda: [  # noqa: E731
        LastDay(), MeanOfLastWeek(), Metapopulation(), LearnedForecaster(trees=15, window=14, refit_every=4)
    ]
    origins = list(range(20, 36))
    honest = rolling_origin(data, models(), origins=origins)
    changed = rolling_origin(tampered, models(), origins=origins)
    add_blend(honest)
    add_blend(changed)
    for name in honest.predictions:
        before = honest.predictions[name][20 : cut + 1]
        assert np.array_equal(before, changed.predictions[name][20 : cut + 1]), name  # origins <= cut see days < cut
        assert not np.array_equal(honest.predictions[name][cut + 1 : 36], changed.predictions[name][cut + 1 : 36])


def test_served_forecast_ignores_nothing_but_the_future() -> None:
    data = country("Italy")
    models = [LastDay(), MeanOfLastWeek(), Metapopulation()]
    served = blended_forecast(data.truncated(60), models, horizons=7)
    again = blended_forecast(_perturbed_after(data, 60).truncated(60), models, horizons=7)
    assert np.array_equal(served.point, again.point) and np.array_equal(served.upper, again.upper)
    assert served.point.shape == (7, data.n_regions)
    assert (served.lower <= served.point).all() and (served.point <= served.upper).all()
    assert all(abs(sum(w[h] for w in served.weights.values()) - 1) < 1e-3 for h in range(7))
