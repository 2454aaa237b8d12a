"""`polis train`, `polis forecast` and `polis bench forecast` as a user runs them."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polis.cli import app
from polis.forecast.data import DATASETS
from polis.forecast.live import registry_for
from polis.platform import Platform
from polis.settings import Settings


def test_train_then_forecast_through_the_registry(tmp_path: Path) -> None:
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "sz-taxi", "--model", "persistence", "--data-dir", str(tmp_path)])
    assert trained.exit_code == 0, trained.output
    meta = json.loads(next((tmp_path / "models" / "sz-taxi" / "persistence").glob("*/meta.json")).read_text())
    assert meta["dataset"] == "sz-taxi" and meta["version"] == 1 and meta["train_seconds"] >= 0
    shown = runner.invoke(app, ["forecast", "sz-taxi", "--sensors", "3", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "+15 min" in shown.output and "+60 min" in shown.output


def test_forecast_without_a_model_and_unknown_names_fail_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["forecast", "los-loop", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "polis train los-loop" in missing.output
    unknown = runner.invoke(app, ["bench", "forecast", "--dataset", "nowhere"])
    assert unknown.exit_code == 2 and "unknown dataset" in unknown.output
    protocol = runner.invoke(app, ["bench", "forecast", "--dataset", "los-loop", "--protocol", "best"])
    assert protocol.exit_code == 2 and "unknown protocol" in protocol.output


def test_a_hub_without_a_model_trains_one_in_a_child_process(tmp_path: Path) -> None:
    """What `polis serve --forecast` and the demo do on a first start: `polis train` into the hub's registry
    in its own process (its log beside the models), then the registered model is served; a second start
    trains nothing. A training that fails says why."""
    platform = Platform(Settings(data_dir=tmp_path / "hub"))
    try:
        live = platform.forecasts.load_or_train("sz-taxi", kind="persistence")
        assert live.name == "persistence:sz-taxi" and len(live.entity_ids) == 156
        registry = registry_for(platform.settings)
        assert [r.kind for r in registry.records("sz-taxi")] == ["persistence"]
        log = tmp_path / "hub" / "models" / "train-sz-taxi-persistence.log"
        assert "trained persistence on sz-taxi" in log.read_text()
        platform.forecasts.load_or_train("sz-taxi", kind="persistence")
        assert len(registry.records("sz-taxi")) == 1
        with pytest.raises(RuntimeError, match="unknown model 'no-such-model'"):
            platform.forecasts.load_or_train("sz-taxi", kind="no-such-model")
    finally:
        platform.close()


def test_closing_the_hub_stops_a_model_still_training(tmp_path: Path) -> None:
    """A server stopped during its first start's training (the demo test does exactly that) must not leave
    `polis train` running on its own."""
    platform = Platform(Settings(data_dir=tmp_path / "hub"))
    closed = False
    try:
        thread = platform.forecasts.start(["los-loop"], quick=True)  # a minute of training in a child
        deadline = time.monotonic() + 30
        while platform.forecasts._trainer is None:
            assert time.monotonic() < deadline, "no training started"
            time.sleep(0.05)
        child = platform.forecasts._trainer
        platform.close()
        closed = True
        assert child.poll() is not None  # stopped, not orphaned
        thread.join(10)
        assert not thread.is_alive()
        assert registry_for(platform.settings).latest("los-loop") is None
    finally:
        if not closed:
            platform.close()


def test_forecasting_a_dataset_the_hub_does_not_hold_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`polis serve --forecast sz-taxi` on a hub without SZ-taxi's roads: the model is attached (readings may
    yet arrive) and the log says why no forecast appears."""
    platform = Platform(Settings(data_dir=tmp_path / "hub"))
    try:
        platform.forecasts.load_or_train("sz-taxi", kind="persistence")  # registered: start() loads it
        with caplog.at_level(logging.WARNING, logger="polis.forecast.live"):
            platform.forecasts.start(["sz-taxi"], kind="persistence").join(30)
        assert [m.name for m in platform.forecasts.models] == ["persistence:sz-taxi"]
        assert "none of its 156 sensors is in the hub yet" in caplog.text
    finally:
        platform.close()


def test_serving_forecasts_of_an_unknown_dataset_is_refused_before_serving(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["serve", "--forecast", "los-loop", "--forecast", "atlantis",
                                    "--data-dir", str(tmp_path)])
    assert done.exit_code == 2
    assert "no forecasts for atlantis" in done.output and "melbourne-pedestrians" in done.output
    assert not (tmp_path / "polis.duckdb").exists()  # nothing was opened


def test_serving_forecasts_from_an_unknown_model_kind_is_refused_before_serving(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["serve", "--forecast", "sz-taxi", "--forecast-model", "oracle",
                                    "--data-dir", str(tmp_path)])
    assert done.exit_code == 2
    assert "unknown model kind 'oracle'" in done.output
    assert not (tmp_path / "polis.duckdb").exists()


def test_a_registered_ensemble_serves_live_forecasts(tmp_path: Path) -> None:
    """`polis serve --forecast sz-taxi --forecast-model ensemble` with a stacked model in the hub's registry."""
    from tests.unit.test_forecast_ensemble import _fitted

    settings = Settings(data_dir=tmp_path / "hub")
    registry_for(settings).save(_fitted(DATASETS["sz-taxi"].horizon_steps), "sz-taxi", "all-data")
    platform = Platform(settings)
    try:
        platform.forecasts.start(["sz-taxi"], kind="ensemble").join(30)
        assert [m.name for m in platform.forecasts.models] == ["ensemble:sz-taxi"]
    finally:
        platform.close()
