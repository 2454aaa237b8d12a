"""The models on real data: better than the baselines on a slice, scenarios that cut what they restrict,
a reproduction number that reads a curve correctly."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from polis.domain.errors import BadRequestData
from polis.epidemic.blend import add_blend, coverage
from polis.epidemic.data import load_country
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


def test_reproduction_number_reads_growth_and_decline() -> None:
    assert serial_interval().sum() == pytest.approx(1.0)
    days = np.arange(60)
    cases = np.column_stack([100 * np.exp(0.1 * days), 1000 * np.exp(-0.1 * days), np.full(60, 200.0)])
    mean, low, high = reproduction_number(cases)
    assert mean[0] > 1.3 and low[0] > 1.0
    assert mean[1] < 0.8 and high[1] < 1.0
    assert low[2] < 1.0 < high[2]
