"""Defects a walkthrough of the bike-trip privacy gate found (2026-11-29), on the real Citi Bike files through
`polis ingest`, `polis flows`, `polis privacy` and the mobility API: one release configuration per hub (a hub
released hourly flows per cell and then per station, and a linear program on the two pinned hidden station
totals), inflated differentially private totals, the pseudonym secret's checks, commands that created a hub at
a mistyped --data-dir, `polis flows` options that were ignored, and the API's answers for days it does not
hold."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import h3
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from polis.api.app import create_app
from polis.cli import app
from polis.mobility.citibike import DATASET
from polis.mobility.products import Direction, DpRequest, Unit
from polis.platform import Platform
from polis.privacy.service import PrivacyService
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import admin_headers

BASE = f"/polis/v1/mobility/{DATASET}"
SECRET = "s" * 32


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub with the Citi Bike set ingested and nothing released: copied, never used, by the tests."""
    data_dir = tmp_path_factory.mktemp("walkthrough") / "hub"
    run = CliRunner().invoke(app, ["ingest", DATASET, "--data-dir", str(data_dir)], env=env())
    assert run.exit_code == 0, run.output[-2000:]
    return data_dir


@pytest.fixture
def hub(ingested: Path, tmp_path: Path) -> Path:
    """A fresh copy of the ingested hub: its first release is still to come."""
    return Path(shutil.copytree(ingested, tmp_path / "hub"))


def env(**settings: str) -> dict[str, str]:
    return {
        "POLIS_DATASETS_DIR": str(Settings().datasets_dir),
        "POLIS_PSEUDONYM_SECRET": SECRET,
        **{f"POLIS_{name.upper()}": value for name, value in settings.items()},
    }


def polis(*args: str, **settings: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env(**settings))


def one_line_failure(run: Result, code: int, *fragments: str) -> str:
    """The command failed with `code` and said why in one line, naming every fragment, without a traceback."""
    assert run.exit_code == code, run.output
    assert run.exception is None or isinstance(run.exception, SystemExit), repr(run.exception)
    text = run.output.strip()
    assert "\n" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


@contextmanager
def served(data_dir: Path, **overrides: object) -> Iterator[TestClient]:
    """The hub in `data_dir` served in process under these settings, to its admin."""
    platform = Platform(Settings(data_dir=data_dir, pseudonym_secret=SECRET, **overrides))  # type: ignore[arg-type]
    try:
        with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as api:
            yield api
    finally:
        platform.close()


# -- 1. one flows unit, one OD window, one k per hub -------------------------------------------------------------


def test_a_hub_that_released_per_cell_refuses_station_flows_from_the_cli_and_the_api(hub: Path) -> None:
    first = polis("flows", "--day", "2017-02-01", "--json", "--data-dir", str(hub))
    assert first.exit_code == 0, first.output
    assert "per cell" in json.loads(first.output)["description"]
    # The walkthrough's second run: the same hub, the setting changed. Released, the station table with the cell
    # table pinned hidden station totals by linear programming (3268 = 3, 3205 = 7).
    refused = polis("flows", "--day", "2017-02-01", "--json", "--data-dir", str(hub), flows_unit="station")
    one_line_failure(refused, 1, "pinned to POLIS_FLOWS_UNIT=cell", "Keep POLIS_FLOWS_UNIT=cell", "new hub")
    assert "rows" not in refused.output
    refused = polis("flows", "--od", "--day", "2017-02-01", "--data-dir", str(hub), od_window_hours="8")
    one_line_failure(refused, 1, "POLIS_OD_WINDOW_HOURS=24")
    refused = polis("flows", "--day", "2017-02-01", "--data-dir", str(hub), suppression_k="5")
    one_line_failure(refused, 1, "POLIS_SUPPRESSION_K=10")

    with served(hub, flows_unit="station") as api:
        for by in ("station", "cell"):
            answer = api.get(f"{BASE}/flows", params={"day": "2017-02-01", "by": by})
            assert answer.status_code == 409, answer.text
            problem = answer.json()
            assert "pinned to POLIS_FLOWS_UNIT=cell" in problem["detail"]
            assert problem["pinned"]["POLIS_FLOWS_UNIT"] == "cell"
            assert problem["configured"]["POLIS_FLOWS_UNIT"] == "station"
        assert api.get(f"{BASE}/od", params={"day": "2017-02-01"}).status_code == 409
        # The dashboard asks /flows with by=summary.flowsUnit: the unit the hub releases, the pinned one.
        summary = api.get(f"{BASE}/summary").json()
        assert summary["flowsUnit"] == "cell"
        assert {h3.get_resolution(a["id"]) for a in summary["flowAreas"]} == {8}
    with served(hub) as api:  # back to the pinned setting: released again
        assert api.get(f"{BASE}/flows", params={"day": "2017-02-01", "by": "cell"}).status_code == 200


def test_a_fresh_hub_may_release_per_station_first_and_is_then_held_to_it(hub: Path) -> None:
    first = polis("flows", "--day", "2017-02-01", "--json", "--data-dir", str(hub), flows_unit="station")
    assert first.exit_code == 0, first.output
    assert "per station" in json.loads(first.output)["description"]
    refused = polis("flows", "--day", "2017-04-12", "--data-dir", str(hub))  # the default unit, cell, now
    one_line_failure(refused, 1, "pinned to POLIS_FLOWS_UNIT=station", "Keep POLIS_FLOWS_UNIT=station")
    with served(hub) as api:
        assert api.get(f"{BASE}/summary").json()["flowsUnit"] == "station"
        assert api.get(f"{BASE}/flows", params={"day": "2017-02-01", "by": "cell"}).status_code == 409


# -- 2. differentially private totals ----------------------------------------------------------------------------


def test_noisy_totals_of_a_real_day_are_the_true_total_plus_zero_mean_noise(hub: Path) -> None:
    store = DuckDBStore(hub / "polis.duckdb")
    try:
        products = PrivacyService(store, Settings(dp_epsilon_budget=1000.0)).products(DATASET)
        day = date(2017, 2, 1)
        exact = products.hourly_flows(DATASET, day, Unit.CELL, Direction.DEPARTURES).table
        assert exact.total == 569
        cells = len(exact.rows) * len(exact.columns)
        t = math.exp(-1.0)  # discrete Laplace at epsilon 1: variance 2t/(1-t)^2 per cell
        sd = math.sqrt(cells * 2 * t / (1 - t) ** 2)
        draws = 12
        totals = []
        for _ in range(draws):
            table = products.hourly_flows(DATASET, day, Unit.CELL, Direction.DEPARTURES, DpRequest(1.0)).table
            assert table.total is not None and abs(table.total - 569) < 6 * sd
            totals.append(table.total)
        # Summed from cells clamped at 0, the walkthrough's totals were 1,014 and 960: ~1,100 empty cells each
        # added the positive half of its noise (about 0.43).
        assert abs(np.mean(totals) - 569) < 5 * sd / math.sqrt(draws)
    finally:
        store.close()


# -- 3 and 4. the pseudonym secret -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "fragments"),
    [
        ("0123456789abcdef", ["POLIS_PSEUDONYM_SECRET holds 16 characters", "at least 32"]),
        ("short", ["POLIS_PSEUDONYM_SECRET holds 5 characters"]),
    ],
)
def test_ingest_refuses_a_short_secret_in_one_line(tmp_path: Path, secret: str, fragments: list[str]) -> None:
    run = CliRunner().invoke(
        app,
        ["ingest", DATASET, "--data-dir", str(tmp_path / "hub")],
        env={**env(), "POLIS_PSEUDONYM_SECRET": secret},
    )
    one_line_failure(run, 1, f"{DATASET}: not ingested", *fragments)


def test_ingest_refuses_a_secret_file_others_may_read_in_one_line(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "pseudonym.key"
    key.parent.mkdir()
    key.write_text("k" * 64)
    os.chmod(key, 0o644)
    run = CliRunner().invoke(
        app,
        ["ingest", DATASET, "--data-dir", str(tmp_path / "hub")],
        env={**env(), "POLIS_PSEUDONYM_SECRET": None, "POLIS_PSEUDONYM_SECRET_FILE": str(key)},
    )
    one_line_failure(run, 1, f"{DATASET}: not ingested", "mode 644", f"chmod 600 {key}")


# -- 5. no hub created at a mistyped --data-dir ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["flows", "--day", "2017-02-01"], ["privacy", "purge"], ["privacy", "budget"]]
)
def test_reading_commands_refuse_a_data_dir_without_a_hub(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "hub-typo"
    one_line_failure(polis(*command, "--data-dir", str(typo)), 1, f"no hub at {typo}")
    assert not typo.exists()


# -- 6. `polis flows` refuses what it would ignore ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--mechanism", "foo"], ["--mechanism needs --epsilon"]),
        (["--mechanism", "gaussian"], ["--mechanism needs --epsilon"]),
        (["--epsilon", "1", "--mechanism", "foo"], ["--mechanism must be one of laplace, gaussian", "'foo'"]),
        (["--epsilon", "0"], ["--epsilon must be a positive number"]),
        (["--od", "--by", "station"], ["--by is for hourly flows"]),
        (["--od", "--direction", "arrivals"], ["--direction is for hourly flows"]),
        (["--od", "--window", "night"], ["--window must be one of day, 00-08, 08-16, 16-24", "'night'"]),
        (["--window", "00-08"], ["--window is for the origin-destination matrix: add --od"]),
        (["--direction", "foo"], ["--direction must be one of departures, arrivals", "'foo'"]),
        (["--by", "person"], ["--by must be one of station, cell", "'person'"]),
        (["--dataset", "foo"], ["--dataset: unknown mobility dataset 'foo'; known: citibike-jersey-city"]),
    ],
)
def test_polis_flows_refuses_options_that_do_not_apply(ingested: Path, args: list[str], fragments: list[str]) -> None:
    text = one_line_failure(polis("flows", "--day", "2017-02-01", *args, "--data-dir", str(ingested)), 2, *fragments)
    assert "polis ingest foo" not in text


@pytest.mark.parametrize("day", ["2017-13-01", "20170201", "2017-W05-3"])
def test_polis_flows_names_the_day_option(ingested: Path, day: str) -> None:
    one_line_failure(
        polis("flows", "--day", day, "--data-dir", str(ingested)), 2, f"--day must be a date YYYY-MM-DD, got '{day}'"
    )


# -- 7. the API on days it does not hold -------------------------------------------------------------------------


def test_the_api_says_which_days_it_holds_and_charges_nothing_for_a_day_without_data(hub: Path) -> None:
    with served(hub) as api:
        for path, params in [
            ("flows", {"day": "2017-07-01"}),
            ("flows", {"day": "2017-07-01", "epsilon": "1"}),
            ("od", {"day": "2017-07-01", "epsilon": "1", "mechanism": "gaussian"}),
        ]:
            answer = api.get(f"{BASE}/{path}", params=params)
            assert answer.status_code == 404, answer.text
            detail = answer.json()["detail"]
            assert "no data for 2017-07-01" in detail and "2017-03-17 to 2017-04-30, 2017-11-01 to 2018-01-31" in detail
        assert api.get(f"{BASE}/summary").json()["epsilonSpent"] == 0
        for day in ("2017-02-01", "9999-12-31"):  # purged (retention), and never held
            answer = api.get(f"{BASE}/trips", params={"day": day})
            assert answer.status_code == 404, answer.text
            detail = answer.json()["detail"]
            assert f"no raw pseudonymous trips of {day}" in detail and "POLIS_RAW_RETENTION_DAYS" in detail
            assert "2018-01-24 to 2018-01-31" in detail
        assert len(api.get(f"{BASE}/trips", params={"day": "2018-01-30"}).json()["trips"]) > 50
        for day in ("20170201", "2017-W05-3"):
            for path in ("flows", "od", "trips"):
                answer = api.get(f"{BASE}/{path}", params={"day": day})
                assert answer.status_code == 400 and "YYYY-MM-DD" in answer.json()["detail"], answer.text
        answer = api.get(f"{BASE}/summary", params={"x": "1"})
        assert answer.status_code == 400
        assert answer.json()["detail"] == "unknown query parameter(s): x; this endpoint accepts no query parameters"
