"""`polis epidemic risk | forecast | scenario` read the hub, not the published files: from the hub's database
under --data-dir, or from a running server with --url (a real uvicorn on loopback), with the same answers;
and say what to do when the database is locked by that server or the country was never ingested."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from polis.api.routes_epidemic import risk_body
from polis.cli import app
from polis.epidemic.hub import country_from_store, region_id
from polis.ingest.datasets import Vocab
from polis.settings import Settings
from polis.store.base import HistoryColumns
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import start_server, stop_server

NEW_DAY = "2020-06-21"  # a day of Spain's cases that is in the hub only, not in the files


def _polis(*args: str) -> Result:
    env = {"POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


def _json(*args: str) -> dict[str, Any]:
    result = _polis(*args, "--json")
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub with covid-europe-2020 ingested by the CLI, plus one more day of Spain's cases (5000 in Madrid)."""
    data_dir = tmp_path_factory.mktemp("epidemic-cli") / "hub"
    ingested = _polis("ingest", "covid-europe-2020", "--data-dir", str(data_dir))
    assert ingested.exit_code == 0, ingested.output
    store = DuckDBStore(data_dir / "polis.duckdb")
    try:
        attribute = Vocab.load(Settings().datasets_dir)("newConfirmedCases")
        spain = country_from_store(store, "", "Spain")
        assert spain is not None
        store.bulk_history(
            "",
            HistoryColumns(
                entity_id=np.array([region_id("Spain", r) for r in spain.regions], dtype=object),
                attribute=np.array([attribute] * spain.n_regions, dtype=object),
                observed_at=np.array([np.datetime64(f"{NEW_DAY}T00:00:00", "us")] * spain.n_regions),
                value=np.array([5000.0 if r == "madrid" else 3.0 for r in spain.regions]),
            ),
        )
    finally:
        store.close()
    return data_dir


def _held_risk(data_dir: Path, country: str) -> dict[str, Any]:
    """What the hub holds, read with the hub's own reader (after the CLI has let go of the file)."""
    store = DuckDBStore(data_dir / "polis.duckdb")
    try:
        data = country_from_store(store, "", country)
    finally:
        store.close()
    assert data is not None
    return risk_body(data)


def test_risk_reads_the_hub_under_the_data_dir(hub_dir: Path) -> None:
    risk = _json("epidemic", "risk", "--country", "Spain", "--data-dir", str(hub_dir))
    assert risk["asOf"] == NEW_DAY  # the hub's day, which the published files do not have
    madrid = {r["region"]: r for r in risk["regions"]}["madrid"]
    assert madrid["casesLast7Days"] >= 5000
    assert json.loads(json.dumps(_held_risk(hub_dir, "Spain"))) == risk
    table = _polis("epidemic", "risk", "--country", "Spain", "--data-dir", str(hub_dir), "--top", "5")
    assert table.exit_code == 0 and f"week to {NEW_DAY}" in table.output


def test_a_country_never_ingested_says_to_run_the_ingest(hub_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    missing = _polis("epidemic", "risk", "--country", "Italy", "--data-dir", str(empty))
    assert missing.exit_code == 1 and "polis ingest covid-europe-2020" in missing.output
    assert not (empty / "polis.duckdb").exists()  # asking created no hub
    other = _polis("epidemic", "forecast", "--country", "Italy", "--data-dir", str(hub_dir), "--tenant", "parks")
    assert other.exit_code == 1
    assert "never ingested into tenant 'parks'" in other.output and "polis ingest covid-europe-2020" in other.output


def test_the_same_answers_from_the_files_and_from_a_running_server(hub_dir: Path) -> None:
    where = ["--data-dir", str(hub_dir)]
    scenario = ["--regions", "madrid,toledo", "--reduction", "50", "--start", NEW_DAY, "--mode", "between"]
    local_risk = _json("epidemic", "risk", "--country", "Spain", *where)
    local_scenario = _json("epidemic", "scenario", "--country", "Spain", *scenario, *where)
    local_forecast = _json("epidemic", "forecast", "--country", "England", *where)  # fits, saves to the registry
    assert local_forecast["model"]["fits"] > 0
    table = _polis("epidemic", "forecast", "--country", "England", *where, "--top", "3")  # from the registry
    assert table.exit_code == 0 and "England: cases a day from 2020-05-13" in table.output, table.output
    server = start_server(hub_dir)
    try:
        locked = _polis("epidemic", "risk", "--country", "Spain", *where)
        assert locked.exit_code == 1
        assert "locked" in locked.output and f"process {server.pid}" in locked.output and "--url" in locked.output
        remote = [*where, "--url", server.url]  # --data-dir here only says where the admin key is
        assert _json("epidemic", "risk", "--country", "Spain", *remote) == local_risk
        remote_scenario = _json("epidemic", "scenario", "--country", "Spain", *scenario, *remote)
        assert {**remote_scenario, "seconds": 0} == {**local_scenario, "seconds": 0}
        remote_forecast = _json("epidemic", "forecast", "--country", "England", *remote)
        # the server restored the model the command line fitted: same registry version, no refit
        assert remote_forecast["model"]["fits"] == 0
        assert remote_forecast["model"]["registry"] == local_forecast["model"]["registry"]
        for key in ("dates", "regions", "weights", "blendSettings", "asOf"):
            assert remote_forecast[key] == local_forecast[key], key
        other = _polis("epidemic", "risk", "--country", "Spain", *remote, "--tenant", "parks")
        assert other.exit_code == 1 and "never ingested into tenant 'parks'" in other.output
        keyless = _polis("epidemic", "risk", "--country", "Spain", "--url", server.url)
        assert keyless.exit_code == 1 and "answered 403" in keyless.output
    finally:
        stop_server(server.process)
    bad = _polis("epidemic", "risk", "--country", "Spain", "--url", server.url)
    assert bad.exit_code == 1 and "no hub answers at" in bad.output


@pytest.fixture(autouse=True)
def _no_api_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("POLIS_API_KEY", raising=False)
    yield
