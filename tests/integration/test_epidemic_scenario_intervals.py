"""A scenario's band holds the value it is shown with: lower <= expected <= upper for every region, day and
arm, over whole countries (small counts are where 10th/90th percentiles of whole-number draws fall on either
side of the mean), and a 100 % cordon of a region leaves no exposure it causes elsewhere."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from polis.epidemic.data import load_country
from polis.epidemic.metapopulation import Metapopulation
from polis.epidemic.scenario import reduced_flows, run_scenario, validate
from polis.settings import Settings


@pytest.mark.parametrize(("country", "mode"), [("Italy", "between"), ("Spain", "outOf"), ("France", "between")])
def test_every_band_holds_its_expected_value(country: str, mode: str) -> None:
    data = load_country(Settings().datasets_dir, country)
    regions = list(data.regions[:3]) if mode == "between" else [data.regions[0]]
    start = data.dates[-1] + timedelta(days=1)
    result = run_scenario(data, validate(data, regions, 60, start, mode, 30), days=30)
    for arm in (result.baseline, result.restricted):
        assert arm.median.shape == (30, data.n_regions)
        assert (arm.lower <= arm.median).all() and (arm.median <= arm.upper).all(), (
            int((arm.median > arm.upper).sum()),
            int((arm.lower > arm.median).sum()),
        )
        assert (arm.lower >= 0).all()


def _exposure_caused_elsewhere(country: str, region: str, mode: str, reduction: float) -> tuple[float, float]:
    """(before, after): exposure the region's infectious cause in every other region, per infectious case,
    under the model's mixing on the last day, without and with the cut."""
    data = load_country(Settings().datasets_dir, country)
    state = Metapopulation().fit(data)
    m = data.region_index(region)
    others = np.arange(data.n_regions) != m
    before = state.operator(state.mix_for(state.flows))[m, others].sum()
    cut = reduced_flows(state.flows, np.array([m]), reduction, mode)  # type: ignore[arg-type]
    after = state.operator(state.mix_for(cut))[m, others].sum()
    return float(before), float(after)


@pytest.mark.parametrize("region", ["milano", "roma", "bergamo"])
def test_a_full_cordon_leaves_no_exposure_caused_elsewhere(region: str) -> None:
    before, after = _exposure_caused_elsewhere("Italy", region, "cordon", 1.0)
    assert before > 0 and after == 0.0
    # 'outOf' stops only the residents' trips: visitors still meet them and carry it home (as documented)
    _, out_of = _exposure_caused_elsewhere("Italy", region, "outOf", 1.0)
    assert 0 < out_of < before
    # a partial cordon cuts part of it
    _, half = _exposure_caused_elsewhere("Italy", region, "cordon", 0.5)
    assert 0 < half < before


def test_a_cordon_scenario_runs_and_lowers_cases_elsewhere() -> None:
    data = load_country(Settings().datasets_dir, "Italy")
    start = data.dates[-1] + timedelta(days=1)
    result = run_scenario(data, validate(data, ["milano"], 100, start, "cordon", 20), days=20)
    assert result.totals()["intervention"] < result.totals()["baseline"]
