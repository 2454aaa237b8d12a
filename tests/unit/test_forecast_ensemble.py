"""The stacked ensemble: its forecast is the weighted sum of what its members forecast for the same target time
(from the origin and from earlier origins), it keeps the stack only where that beats its first member on
held-out halves of the validation slice, and `polis train` / `polis forecast` / the benchmark handle it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from polis.forecast.bench import run_benchmark
from polis.forecast.data import DATASETS
from polis.forecast.ensemble import StackedEnsemble, _beats_everywhere
from polis.forecast.gbm import GlobalGbm
from polis.forecast.model import floored
from polis.forecast.neural import SpatioTemporalMlp
from polis.forecast.registry import ModelRegistry
from polis.settings import Settings
from tests.unit.test_forecast_models import TINY_GBM, TINY_MLP, panel


def _fitted(steps: tuple[int, ...]) -> StackedEnsemble:
    data = panel("sz-taxi")
    model = StackedEnsemble(steps, 0, [GlobalGbm(steps, 0, TINY_GBM), SpatioTemporalMlp(steps, 0, TINY_MLP)])
    model.fit(data.head(2300), 2000)
    return model


def test_a_stacked_forecast_is_the_weighted_sum_of_what_members_forecast_for_that_time(tmp_path: Path) -> None:
    data = panel("sz-taxi")
    model = _fitted((1, 2, 3))
    gbm, mlp = model.members
    # the path under test, whatever the fit chose: step 1 from the LightGBM now and from the MLP's step-3
    # forecast made two origins earlier (the same target time); step 2 from the MLP's step 3 one origin back
    model.columns = [[(0, 0), (1, 2)], [(1, 2)], [(0, 2)]]
    model.weights = [np.array([0.7, 0.3]), np.array([1.0]), np.array([1.0])]
    origins = np.array([2400, 2500, 2900])
    forecast = model.predict(data, origins)
    floor = model.calibration.floor  # type: ignore[union-attr]
    expected_1 = 0.7 * gbm.predict(data, origins).mean[:, 0] + 0.3 * mlp.predict(data, origins - 2).mean[:, 2]
    assert np.allclose(forecast.mean[:, 0], floored(expected_1, floor))
    assert np.allclose(forecast.mean[:, 1], floored(mlp.predict(data, origins - 1).mean[:, 2], floor))
    assert np.allclose(forecast.mean[:, 2], gbm.predict(data, origins).mean[:, 2])
    assert (forecast.lower <= forecast.mean).all() and (forecast.mean <= forecast.upper).all()

    # an earlier origin reads even less: nothing after the origin moves the forecast
    later = data.values.copy()
    later[2401:] = 0.0
    again = model.predict(replace(data, values=later), origins[:1])
    assert np.allclose(again.mean, forecast.mean[:1])

    record = ModelRegistry(tmp_path).save(model, "sz-taxi", "tgcn")
    loaded = ModelRegistry(tmp_path).load(record)
    assert np.array_equal(loaded.predict(data, origins).mean, forecast.mean)
    assert sorted(p.name for p in (record.path / "members").iterdir()) == ["0-lightgbm", "1-mlp"]


def test_an_ensemble_that_cannot_beat_its_first_member_serves_that_members_forecast() -> None:
    """A model stacked with itself has nothing to add: the two-fold check keeps the plain forecast."""
    data = panel("sz-taxi")
    gbm = GlobalGbm((1,), 0, TINY_GBM)
    model = StackedEnsemble((1,), 0, [gbm, gbm])
    model.fit(data.head(2300), 2000)
    assert not model.stacked and model.columns == [[(0, 0)]]
    origins = np.array([2400, 2500])
    assert np.array_equal(model.predict(data, origins).mean, gbm.predict(data, origins).mean)


def test_the_stack_must_beat_its_reference_in_mae_and_rmse_up_to_every_step() -> None:
    truth = np.zeros((4, 2, 3))
    reference = np.full(truth.shape, 1.0)
    assert _beats_everywhere(np.full(truth.shape, 0.9), reference, truth)
    spiky = np.zeros(truth.shape)
    spiky[0] = 3.0  # lower MAE (0.75), higher RMSE (1.5)
    assert not _beats_everywhere(spiky, reference, truth)
    late = np.full(truth.shape, 0.5)
    late[:, 1] = 2.0  # better at step 1, worse pooled over steps 1-2
    assert not _beats_everywhere(late, reference, truth)


def test_benchmark_times_an_ensemble_with_its_members_and_fits_them_once() -> None:
    data = panel("sz-taxi")
    steps = DATASETS["sz-taxi"].horizon_steps
    gbm, mlp = GlobalGbm(steps, 0, TINY_GBM), SpatioTemporalMlp(steps, 0, TINY_MLP)
    ensemble = StackedEnsemble(steps, 0, [gbm, mlp])
    fits: list[str] = []
    for member in (gbm, mlp):
        original = member.fit
        member.fit = lambda *a, original=original, kind=member.kind, **k: (fits.append(kind), original(*a, **k))[1]  # type: ignore[method-assign]
    rows, fitted = run_benchmark("sz-taxi", "tgcn", Settings().datasets_dir, panel=data, models=[gbm, mlp, ensemble])
    assert fits == ["lightgbm", "mlp"]
    seconds = {r.model: r.train_seconds for r in rows if r.horizon_minutes == 15}
    assert seconds["ensemble"] >= seconds["lightgbm"] + seconds["mlp"] - 0.02  # type: ignore[operator]
    assert fitted["ensemble"] is ensemble


def test_the_registry_prefers_a_trained_ensemble_to_its_members(tmp_path: Path) -> None:
    """What `polis forecast DATASET` and the live service's default load: the stack of the learned models."""
    model = _fitted((1,))
    registry = ModelRegistry(tmp_path)
    registry.save(model, "sz-taxi", "all-data")
    for member in model.members:
        registry.save(member, "sz-taxi", "all-data")
    latest = registry.latest("sz-taxi")
    assert latest is not None and latest.kind == "ensemble"
    assert isinstance(registry.load(latest), StackedEnsemble)
