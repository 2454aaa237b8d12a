"""A damaged or mismatched model in the hub's registry, as `polis forecast` and `polis serve --forecast` meet it:
never a process killed by LightGBM, never a traceback; the version before it where one loads, else no forecasts
for that dataset, said in the log and in the 404."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from polis.api.app import create_app
from polis.cli import app
from polis.forecast.baselines import HistoricalAverage, Persistence
from polis.forecast.data import load_panel
from polis.forecast.gbm import GbmParams, GlobalGbm
from polis.forecast.live import registry_for
from polis.settings import Settings
from tests.conftest import admin_headers
from tests.integration.test_forecast_live import los_loop_hub

SENSOR = "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"


@pytest.fixture(scope="module")
def gbm_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub directory whose registry holds a tiny LightGBM model of all of SZ-taxi's roads (seconds to fit)."""
    hub = tmp_path_factory.mktemp("gbm-hub")
    panel = load_panel("sz-taxi", Settings().datasets_dir)
    model = GlobalGbm((1,), seed=0, params=GbmParams(lags=4, max_rounds=5, learning_rate=0.3, num_leaves=7))
    model.fit(panel, len(panel.values) - 200)
    registry_for(Settings(data_dir=hub)).save(model, "sz-taxi", "all-data", entity_type=panel.entity_type,
                                              attribute=panel.attribute, entity_ids=panel.entity_ids)
    return hub


def _copy(hub: Path, tmp_path: Path) -> Path:
    shutil.copytree(hub, tmp_path / "hub")
    return tmp_path / "hub"


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """In a process of its own: LightGBM's abort on a damaged file would take the test run with it."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)})


@pytest.mark.parametrize("saved_before_digests", [False, True])
def test_a_cut_lightgbm_file_is_one_line_not_an_abort(gbm_hub: Path, tmp_path: Path,
                                                      saved_before_digests: bool) -> None:
    hub = _copy(gbm_hub, tmp_path)
    version = hub / "models" / "sz-taxi" / "lightgbm" / "1"
    if saved_before_digests:
        meta = json.loads((version / "meta.json").read_text())
        del meta["files"]
        (version / "meta.json").write_text(json.dumps(meta))
    _cut(version / "step1.txt")
    shown = _python("-m", "polis.cli", "forecast", "sz-taxi", "--model", "lightgbm", "--data-dir", str(hub))
    output = shown.stdout + shown.stderr
    assert shown.returncode == 1, output
    assert "Traceback" not in output and "[LightGBM] [Fatal]" not in output
    assert ("not a whole LightGBM model file" if saved_before_digests else "step1.txt: model file damaged") in output
    assert "no lightgbm model of sz-taxi could be loaded" in output
    assert "run `polis train sz-taxi --model lightgbm`" in output
    # what `polis serve --forecast sz-taxi` runs at its start: an error to log, the server process alive
    started = _python("-c", "from pathlib import Path; from polis.platform import Platform; "
                            "from polis.settings import Settings; "
                            f"p = Platform(Settings(data_dir=Path({str(hub)!r}))); "
                            "p.forecasts.start(['sz-taxi'], kind='lightgbm').join(60); "
                            "print('unavailable:', p.forecasts.unavailable); p.close()")
    assert started.returncode == 0, started.stderr
    assert "unavailable: {'sz-taxi': 'its lightgbm forecast model could not be loaded'}" in started.stdout
    assert "no live forecasts for sz-taxi" in started.stderr and "Traceback" not in started.stderr


def test_polis_forecast_serves_the_version_before_a_damaged_one(gbm_hub: Path, tmp_path: Path) -> None:
    hub = _copy(gbm_hub, tmp_path)
    kind = hub / "models" / "sz-taxi" / "lightgbm"
    shutil.copytree(kind / "1", kind / "2")
    meta = json.loads((kind / "2" / "meta.json").read_text())
    (kind / "2" / "meta.json").write_text(json.dumps({**meta, "version": 2}))
    _cut(kind / "2" / "step1.txt")
    shown = _python("-m", "polis.cli", "forecast", "sz-taxi", "--sensors", "2", "--data-dir", str(hub))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "lightgbm v2 of sz-taxi is not used" in shown.stdout and "trying the previous version" in shown.stdout
    assert "sz-taxi: lightgbm v1" in shown.stdout and "+15 min" in shown.stdout


def test_polis_forecast_refuses_another_datasets_model(tmp_path: Path) -> None:
    """SZ-taxi's fitted state registered as Los-loop's model: refused by the sensors it names, or, where its
    meta.json names none, by what it forecasts; one line, no traceback."""
    taxi = load_panel("sz-taxi", Settings().datasets_dir)
    model = HistoricalAverage((1, 2, 3))
    model.fit(taxi, len(taxi.values) - 200)
    registry = registry_for(Settings(data_dir=tmp_path))
    registry.save(model, "los-loop", "all-data", entity_ids=taxi.entity_ids)
    runner = CliRunner()
    shown = runner.invoke(app, ["forecast", "los-loop", "--model", "historical-average", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 1, shown.output
    assert "fitted on other sensors than los-loop's 207" in shown.output and "Traceback" not in shown.output
    registry.save(model, "los-loop", "all-data")  # v2, naming no sensors
    shown = runner.invoke(app, ["forecast", "los-loop", "--model", "historical-average", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 1, shown.output
    assert "historical-average v2 of los-loop is not used" in shown.output
    assert "cannot forecast los-loop" in shown.output or "forecasts 156 series, los-loop has 207" in shown.output


def test_the_hub_falls_back_to_the_previous_model_or_says_why_it_has_none(caplog: pytest.LogCaptureFixture) -> None:
    platform = los_loop_hub(2)
    try:
        registry = registry_for(platform.settings)
        ids = load_panel("los-loop", Settings().datasets_dir).entity_ids
        registry.save(Persistence((1, 2, 3)), "los-loop", "all-data", entity_ids=ids)
        second = registry.save(Persistence((1, 2, 3)), "los-loop", "all-data", entity_ids=ids)
        _cut(second.path / "baseline.json")
        with caplog.at_level(logging.WARNING):
            platform.forecasts.start(["los-loop"], kind="persistence").join(60)
        assert [m.name for m in platform.forecasts.models] == ["persistence:los-loop"]
        assert "persistence v2 of los-loop is not used" in caplog.text and not platform.forecasts.unavailable
    finally:
        platform.close()

    platform = los_loop_hub(2)
    try:
        registry = registry_for(platform.settings)
        first = registry.save(Persistence((1, 2, 3)), "los-loop", "all-data", entity_ids=ids)
        _cut(first.path / "baseline.json")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            platform.forecasts.start(["los-loop"], kind="persistence").join(60)
        assert platform.forecasts.models == []
        assert "no live forecasts for los-loop: no persistence model of los-loop could be loaded" in caplog.text
        assert not (platform.settings.data_dir / "models" / "train-los-loop-persistence.log").exists()  # no training
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            answer = client.get(f"/polis/v1/forecasts/{SENSOR}", params={"attr": "averageVehicleSpeed"})
            assert answer.status_code == 404
            assert "los-loop has no live forecasts, its persistence forecast model could not be loaded" in \
                answer.json()["detail"]
            other = client.get("/polis/v1/forecasts/urn:ngsi-ld:TrafficFlowObserved:sz-taxi:1",
                               params={"attr": "averageVehicleSpeed"})
            assert other.status_code == 404 and "not watched, or no readings yet" in other.json()["detail"]
    finally:
        platform.close()
