"""What a walkthrough of `polis train`, `polis forecast`, `polis serve --forecast-model` and the forecast history
endpoint found: every mistake a user can make is one line naming it and a non-zero exit (or an NGSI-LD 404),
never a traceback, an empty table or an empty answer that looks like a success."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from polis.api.app import create_app
from polis.cli import app
from polis.forecast.baselines import Persistence
from polis.forecast.data import DATASETS, load_panel
from polis.forecast.live import LiveModel, live_model_for, registry_for
from polis.forecast.registry import FORECAST_KINDS
from polis.settings import Settings
from tests.conftest import admin_headers, problem
from tests.integration.test_forecast_live import los_loop_hub


def _hub_with(tmp_path: Path, dataset: str = "los-loop") -> Path:
    """A hub whose registry holds one persistence model under `dataset` (nothing to fit: it saves as is)."""
    hub = tmp_path / "hub"
    registry_for(Settings(data_dir=hub)).save(Persistence((1, 2, 3)), dataset, "all-data")
    return hub


def _polis(*args: str, datasets_dir: Path) -> subprocess.CompletedProcess[str]:
    """`polis ...` as a user runs it: its own process, so a traceback would reach its output."""
    env = {**os.environ, "POLIS_DATASETS_DIR": str(datasets_dir), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "polis.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _refused(result: Result, code: int, one_line: bool = True) -> str:
    """The command exited with `code` by choice (no exception escaped it), saying why in one line on stderr
    (unless typer words it); its output, whitespace collapsed."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if one_line:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return " ".join(result.output.split())


# -- 1: the public datasets are not where the settings say


@pytest.mark.parametrize("command", [["train", "los-loop", "--model", "persistence"], ["forecast", "los-loop"]])
def test_missing_public_datasets_are_one_line_naming_the_path_and_the_setting(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nonexistent"
    done = _polis(*command, "--data-dir", str(_hub_with(tmp_path)), datasets_dir=missing)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(missing / "traffic" / "los-loop") in lines[0]
    assert "POLIS_DATASETS_DIR" in lines[0] and "--datasets-dir" in lines[0]


def test_the_datasets_dir_option_is_where_train_reads_the_public_data(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere"
    done = CliRunner().invoke(app, ["train", "sz-taxi", "--model", "persistence", "--data-dir",
                                    str(tmp_path / "hub"), "--datasets-dir", str(missing)])
    assert str(missing / "traffic" / "sz-taxi") in _refused(done, 1)
    assert not (tmp_path / "hub" / "models").exists()  # nothing registered


# -- 2 and 3: names `polis forecast` does not serve, kinds it does not know, kinds not trained


def test_an_epidemic_models_registry_name_is_not_a_forecasting_dataset(tmp_path: Path) -> None:
    name = "covid-europe-2020.Spain.default-tenant"
    done = CliRunner().invoke(app, ["forecast", name, "--data-dir", str(_hub_with(tmp_path, name))])
    said = _refused(done, 2)
    assert f"unknown dataset '{name}'" in said
    assert all(dataset in said for dataset in DATASETS)
    assert "polis epidemic forecast" in said


def test_forecasting_an_unknown_dataset_does_not_advise_training_it(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["forecast", "nosuch", "--data-dir", str(tmp_path / "hub")])
    said = _refused(done, 2)
    assert "unknown dataset 'nosuch'" in said and all(dataset in said for dataset in DATASETS)
    assert "polis train nosuch" not in said


def test_forecasting_an_unknown_model_kind_lists_the_kinds(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["forecast", "los-loop", "--model", "nosuch", "--data-dir",
                                    str(_hub_with(tmp_path))])
    said = _refused(done, 2)
    assert "unknown model kind 'nosuch'" in said and all(kind in said for kind in FORECAST_KINDS)
    assert "polis train" not in said


def test_forecasting_a_kind_not_trained_says_how_to_train_it_and_what_is_registered(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["forecast", "los-loop", "--model", "mlp", "--data-dir",
                                    str(_hub_with(tmp_path))])
    said = _refused(done, 1)
    assert "polis train los-loop --model mlp" in said
    assert "registered for los-loop: persistence" in said


def test_the_kinds_named_are_the_kinds_train_fits() -> None:
    from polis.forecast.bench import build_models

    for dataset in DATASETS:
        assert sorted(m.kind for m in build_models(dataset, quick=True)) == sorted(FORECAST_KINDS)


# -- 5: counts below one


@pytest.mark.parametrize("count", ["-3", "0"])
def test_showing_fewer_than_one_sensor_is_a_usage_error(tmp_path: Path, count: str) -> None:
    done = CliRunner().invoke(app, ["forecast", "los-loop", "--sensors", count, "--data-dir",
                                    str(_hub_with(tmp_path))])
    said = _refused(done, 2, one_line=False)  # typer's usage error
    assert "Invalid value for '--sensors'" in said and "greater than or equal to 1" in said


# -- 6: what --quick costs


def test_quick_training_does_not_promise_seconds() -> None:
    done = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    said = _refused(done, 0, one_line=False)
    quick = said[said.index("--quick"):said.index("--seed")]
    assert "seconds" not in quick and "two minutes" in quick, quick


# -- 7: serve's model kind


def test_serving_an_unknown_model_kind_lists_the_kinds(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["serve", "--forecast", "los-loop", "--forecast-model", "nosuch",
                                    "--data-dir", str(tmp_path)])
    said = _refused(done, 2)
    assert "unknown model kind 'nosuch'" in said and all(kind in said for kind in FORECAST_KINDS)
    assert not (tmp_path / "polis.duckdb").exists()  # refused before the hub opened


# -- 4: the history of a forecast nobody serves


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TestClient, LiveModel]]:
    """Two Los-loop sensors in the hub, watched by a persistence model, forecast once."""
    datasets_dir = Settings().datasets_dir
    platform = los_loop_hub(2)
    panel = load_panel("los-loop", datasets_dir).sensors(2)
    model = Persistence((1, 2, 3))
    model.fit(panel, len(panel.values) - 12)
    live = live_model_for(panel, model, datasets_dir)
    platform.forecasts.attach(live)
    assert platform.forecasts.refresh("", live) == 2
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        yield client, live
    platform.close()


def _history(client: TestClient, entity_id: str, attr: str) -> Any:
    return client.get(f"/polis/v1/forecasts/{entity_id}/history", params={"attr": attr})


def test_the_history_of_a_served_forecast_is_listed(served: tuple[TestClient, LiveModel]) -> None:
    client, live = served
    response = _history(client, live.entity_ids[0], "averageVehicleSpeed")
    assert response.status_code == 200, response.text
    assert [len(path["points"]) for path in response.json()] == [3]


def test_the_history_of_an_unwatched_entity_is_not_found_like_its_latest_forecast(
    served: tuple[TestClient, LiveModel]
) -> None:
    client, _ = served
    entity_id = "urn:ngsi-ld:TrafficFlowObserved:los-loop:nosuch"
    latest = problem(client.get(f"/polis/v1/forecasts/{entity_id}", params={"attr": "averageVehicleSpeed"}),
                     404, "ResourceNotFound", entity_id)
    history = problem(_history(client, entity_id, "averageVehicleSpeed"), 404, "ResourceNotFound", entity_id)
    assert history["detail"] == latest["detail"]


def test_the_history_of_a_misspelt_attribute_is_not_found(served: tuple[TestClient, LiveModel]) -> None:
    client, live = served
    problem(_history(client, live.entity_ids[0], "averageVehicleSped"), 404, "ResourceNotFound",
            "averageVehicleSped")
