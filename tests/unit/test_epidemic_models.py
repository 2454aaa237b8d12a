"""The models on real data: better than the baselines on a slice, scenarios that cut what they restrict,
a reproduction number that reads a curve correctly."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

import numpy as np
import pytest

from polis.domain.errors import BadRequestData
from polis.epidemic.blend import DEFAULT, BlendSetting, add_blend, candidate_blends, coverage, select_at
from polis.epidemic.data import CountryData, load_country
from polis.epidemic.evaluation import LastDay, MeanOfLastWeek, rolling_origin
from polis.epidemic.learned import LearnedForecaster
from polis.epidemic.metapopulation import Metapopulation
from polis.epidemic.risk import reproduction_number, serial_interval
from polis.epidemic.scenario import run_scenario, validate
from polis.settings import Settings


def test_learned_blend_beats_both_baselines_next_day_on_a_france_slice() -> None:
    france = load_country(Settings().datasets_dir, "France")
    run = rolling_origin(
        france,
        [LastDay(), MeanOfLastWeek(), Metapopulation(), LearnedForecaster(refit_every=14)],
        origins=range(30, 60),
    )
    lower, upper = add_blend(run)
    best_baseline = min(run.mae("last day")[0], run.mae("mean of last 7 days")[0])
    assert run.mae("learned (LightGBM)")[0] < 0.9 * best_baseline
    assert run.mae("blend")[0] < 0.95 * best_baseline
    assert 0.6 < coverage(run, lower, upper) < 0.95


def test_cutting_movement_among_london_boroughs_lowers_their_projected_cases() -> None:
    england = load_country(Settings().datasets_dir, "England")
    london = [r for r in england.regions if r.startswith("E09")]
    intervention = validate(england, london, 90, date(2020, 5, 13), "between", 30)
    result = run_scenario(england, intervention, 30)
    inside = [england.region_index(r) for r in london]
    base, cut = result.baseline.median, result.restricted.median
    assert cut[:, inside].sum() < 0.97 * base[:, inside].sum()
    assert (cut <= base + 1e-9).all()  # a cancelled trip never adds infection anywhere
    assert (result.restricted.lower <= cut + 1e-9).all() and (cut <= result.restricted.upper + 1e-9).all()
    assert len(result.dates) == 30 and str(result.dates[0]) == "2020-05-13"


def test_a_restriction_from_a_later_day_changes_nothing_before_it() -> None:
    england = load_country(Settings().datasets_dir, "England")
    intervention = validate(
        england, [r for r in england.regions if r.startswith("E09")], 100, date(2020, 5, 20), "between", 20
    )
    result = run_scenario(england, intervention, 20)
    assert np.array_equal(result.baseline.median[:7], result.restricted.median[:7])
    assert result.restricted.median[7:].sum() < result.baseline.median[7:].sum()


def test_scenario_input_errors_name_the_field() -> None:
    italy = load_country(Settings().datasets_dir, "Italy")
    cases = [
        (["atlantis"], 50, "between", 30, "regions"),
        (["milano", "lodi"], 150, "between", 30, "reductionPercent"),
        (["milano", "lodi"], 50, "sideways", 30, "mode"),
        (["milano", "lodi"], 50, "between", 0, "days"),
        (["milano"], 50, "between", 30, "regions"),
    ]
    for regions, percent, mode, days, field in cases:
        with pytest.raises(BadRequestData) as error:
            validate(italy, regions, percent, date(2020, 6, 6), mode, days)
        assert error.value.extra["field"] == field


def test_an_unknown_region_is_answered_with_the_spelling_meant_and_known_names() -> None:
    france = load_country(Settings().datasets_dir, "France")
    with pytest.raises(BadRequestData) as error:
        validate(france, ["Paris", "atlantis"], 50, date(2020, 4, 1), "outOf", 30)
    detail = error.value.detail
    assert "'Paris' (did you mean 'paris'?)" in detail
    assert "'atlantis'," not in detail and "'atlantis';" in detail  # no suggestion for a name it cannot place
    assert f"its {len(france.regions)} regions" in detail and sorted(france.regions)[0] in detail


def test_reproduction_number_reads_growth_and_decline() -> None:
    assert serial_interval().sum() == pytest.approx(1.0)
    days = np.arange(60)
    cases = np.column_stack([100 * np.exp(0.1 * days), 1000 * np.exp(-0.1 * days), np.full(60, 200.0)])
    mean, low, high = reproduction_number(cases)
    assert mean[0] > 1.3 and low[0] > 1.0
    assert mean[1] < 0.8 and high[1] < 1.0
    assert low[2] < 1.0 < high[2]


@dataclass(frozen=True, slots=True)
class _Offset:
    """A stand-in forecaster that knows the truth and misses it by a fixed amount (to test the blend)."""

    name: str
    truth: np.ndarray
    miss: float

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        ahead = self.truth[history.n_days : history.n_days + horizons]
        padded = np.vstack([ahead, np.repeat(self.truth[-1:], horizons - len(ahead), axis=0)])
        return padded + self.miss


def test_the_blend_setting_is_chosen_from_past_origins_only() -> None:
    days, n = 70, 3
    truth = np.tile(np.arange(days, dtype=np.float64)[:, None], (1, n)) + 50.0
    flows = np.broadcast_to(np.eye(n), (days, n, n))
    start = date(2020, 3, 1)
    data = CountryData(
        "Synthetic", ("a", "b", "c"), tuple(start + timedelta(days=k) for k in range(days)), truth, flows,
        np.ones(days, dtype=bool),
    )
    run = rolling_origin(data, [_Offset("near", truth, 1.0), _Offset("far", truth, 10.0)], horizons=7)
    candidates = (BlendSetting(2.0, 14), DEFAULT, BlendSetting(16.0, 14))
    blends = candidate_blends(run, candidates)
    actual = run.actual()
    assert select_at(run, blends, run.origins[0], actual) == [DEFAULT] * 7  # no record yet
    # a steep power follows the model that is always nearer: it errs least on every resolved origin
    assert select_at(run, blends, 40, actual) == [BlendSetting(16.0, 14)] * 7
    # the choice at t reads nothing from day t on: the same choice when later days are wrecked
    wrecked = truth.copy()
    wrecked[40:] = 0.0
    later = rolling_origin(
        replace(data, cases=wrecked), [_Offset("near", truth, 1.0), _Offset("far", truth, 10.0)], horizons=7
    )
    assert select_at(later, candidate_blends(later, candidates), 40, later.actual()) == [BlendSetting(16.0, 14)] * 7
