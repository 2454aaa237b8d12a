"""The served forecast is the benchmark's blend (learned model included), fitted once per data version and
kept in the model registry: restored without refitting, and refit only on the new origin after a new day.
On 20 French regions (a small real panel: every origin refits LightGBM)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from polis.epidemic.blend import add_blend
from polis.epidemic.data import CountryData, load_country
from polis.epidemic.evaluation import LastDay, MeanOfLastWeek, RollingRun, rolling_origin
from polis.epidemic.learned import LearnedForecaster
from polis.epidemic.metapopulation import Metapopulation
from polis.epidemic.serving import ServedForecasts, data_version, fit_served, registry_dataset
from polis.forecast.registry import ModelRegistry
from polis.settings import Settings

REGIONS = 20
DAYS = 52


@pytest.fixture(scope="module")
def france() -> CountryData:
    data = load_country(Settings().datasets_dir, "France")
    keep = slice(0, REGIONS)
    return replace(data, regions=data.regions[keep], cases=data.cases[:, keep], flows=data.flows[:, keep, keep])


@pytest.fixture(scope="module")
def benchmark(france: CountryData) -> tuple[RollingRun, np.ndarray, np.ndarray]:
    """`polis bench epidemic`'s run (the same models and blend as `polis.epidemic.comparison.compare`)."""
    run = rolling_origin(france.truncated(DAYS), [LastDay(), MeanOfLastWeek(), Metapopulation(), LearnedForecaster()])
    lower, upper = add_blend(run)
    return run, lower, upper


def test_the_served_forecast_is_the_benchmarks_blend_at_the_next_origin(
    france: CountryData, benchmark: tuple[RollingRun, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    run, lower, upper = benchmark
    registry = ModelRegistry(tmp_path / "models")
    served = fit_served(france.truncated(48), registry, "fr")
    assert np.array_equal(served.forecast.point, run.predictions["blend"][48])
    assert np.array_equal(served.forecast.lower, lower[48]) and np.array_equal(served.forecast.upper, upper[48])
    assert "learned (LightGBM)" in served.forecast.weights and served.fits > 30  # one fit per origin read
    assert served.registry_path == str(tmp_path / "models" / "fr" / "epidemic-lightgbm" / "1")

    # the registry answers the same data without a fit (a restarted server), and one new day with one fit
    restored = fit_served(france.truncated(48), registry, "fr")
    assert restored.fits == 0 and np.array_equal(restored.forecast.point, served.forecast.point)
    assert restored.registry_path == served.registry_path
    next_day = fit_served(france.truncated(49), registry, "fr")
    assert next_day.fits == 1 and np.array_equal(next_day.forecast.point, run.predictions["blend"][49])
    assert np.array_equal(next_day.forecast.upper, upper[49])
    # a change in a past day of the hub invalidates what was made from it: refit from that day on
    cases = np.array(france.cases)
    cases[44, 0] += 50
    corrected = fit_served(replace(france, cases=cases).truncated(49), registry, "fr")
    assert corrected.fits == 5  # the histories that hold day 44: 45 .. 49 days long
    versions = sorted(p.name for p in (tmp_path / "models" / "fr" / "epidemic-lightgbm").iterdir())
    assert versions == ["2", "3"]  # older versions pruned


def test_requests_share_one_background_fit_and_then_answer_from_memory(france: CountryData, tmp_path: Path) -> None:
    served = ServedForecasts(tmp_path / "models")
    data = france.truncated(40)
    version = data_version(data)
    first = served.request("health", "France", data, version)
    assert served.request("health", "France", data, version) is first  # the same fit, not a second one
    assert served.fitting("health", "France", version) is not None or first.done()
    result = first.result(timeout=120)
    assert served.fitting("health", "France", version) is None
    assert served.ready("health", "France", version) is result
    assert served.ready("health", "France", data_version(france.truncated(41))) is None  # another data version
    started = time.perf_counter()
    again = served.request("health", "France", data, version)
    assert again.done() and again.result() is result and time.perf_counter() - started < 0.1
    assert result.registry_path.startswith(str(tmp_path / "models" / registry_dataset("health", "France")))


def test_registry_names_keep_tenants_apart() -> None:
    assert registry_dataset("", "Italy") == "covid-europe-2020.Italy.default-tenant"
    assert registry_dataset("health", "Italy") == "covid-europe-2020.Italy.health"
    odd = registry_dataset("../x", "Italy")
    assert "/" not in odd and odd != registry_dataset("..x", "Italy")
