"""The epidemic API and CLI as a user meets them: scenarios, risk, forecasts, bad input, ingest, bench.
The API serves what the hub holds: one in-memory hub with covid-europe-2020 ingested for the module."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from polis.api.app import create_app
from polis.cli import app
from polis.epidemic.data import load_country
from polis.epidemic.hub import country_from_store
from polis.ingest.datasets import ingest, load_dataset
from polis.ngsi_ld.entities import utc_now
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import admin_headers

SCENARIO = "/polis/v1/epidemic/England/scenario"
TENANT = "health"  # the data goes to a named tenant: the default one holds nothing


@pytest.fixture(scope="module")
def hub() -> Iterator[Platform]:
    platform = Platform.in_memory()
    ingest(platform.store, TENANT, load_dataset("covid-europe-2020", Settings().datasets_dir, utc_now()))
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def client(hub: Platform) -> Iterator[TestClient]:
    headers = {**admin_headers(hub), "NGSILD-Tenant": TENANT}
    with TestClient(create_app(hub), raise_server_exceptions=False, headers=headers) as c:
        yield c


def test_the_hub_returns_exactly_what_the_files_hold(hub: Platform) -> None:
    for country in ("Italy", "Spain"):
        held = country_from_store(hub.store, TENANT, country)
        files = load_country(Settings().datasets_dir, country)
        assert held is not None and held.regions == files.regions and held.dates == files.dates
        assert np.array_equal(held.cases, files.cases) and np.array_equal(held.flows, files.flows)
        assert np.array_equal(held.flow_observed, files.flow_observed)
    assert country_from_store(hub.store, "", "Italy") is None


def test_views_read_the_tenant_and_say_when_nothing_is_ingested(hub: Platform, client: TestClient) -> None:
    assert client.get("/polis/v1/epidemic").json()["countries"] == ["England", "France", "Italy", "Spain"]
    default = {"Authorization": client.headers["Authorization"], "NGSILD-Tenant": ""}
    assert client.get("/polis/v1/epidemic", headers=default).json()["countries"] == []
    body = {"regions": ["E09000001", "E09000033"], "reductionPercent": 50, "start": "2020-05-13"}
    for method, path in (
        ("GET", "/polis/v1/epidemic/Italy/risk"),
        ("GET", "/polis/v1/epidemic/Italy/forecast"),
        ("POST", SCENARIO),
    ):
        answer = client.request(method, path, headers=default, json=body if method == "POST" else None)
        assert answer.status_code == 404, answer.text
        problem = answer.json()
        assert problem["type"].endswith("ResourceNotFound") and "polis ingest covid-europe-2020" in problem["detail"]


def _london(client: TestClient) -> list[str]:
    risk = client.get("/polis/v1/epidemic/England/risk")
    assert risk.status_code == 200, risk.text
    return [r["region"] for r in risk.json()["regions"] if r["region"].startswith("E09")]


def test_scenario_over_the_api_lowers_cases_where_movement_is_cut(client: TestClient) -> None:
    london = _london(client)
    body = {"regions": london, "reductionPercent": 90, "start": "2020-05-13", "mode": "between", "days": 30}
    answer = client.post(SCENARIO, json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert len(result["dates"]) == 30 and result["totals"]["intervention"] < result["totals"]["baseline"]
    rows = {r["region"]: r for r in result["regions"]}
    base = sum(sum(rows[r]["baseline"]["expected"]) for r in london)
    cut = sum(sum(rows[r]["intervention"]["expected"]) for r in london)
    assert cut < 0.97 * base


def test_bad_scenario_input_is_400_naming_the_field(client: TestClient) -> None:
    good = {"regions": ["E09000001", "E09000033"], "reductionPercent": 50, "start": "2020-05-13"}
    bad = [
        ({**good, "reductionPercent": 250}, "reductionPercent"),
        ({**good, "reductionPercent": "half"}, "reductionPercent"),
        ({**good, "regions": ["Atlantis", "E09000001"]}, "regions"),
        ({**good, "start": "13/05/2020"}, "start"),
        ({**good, "start": "9999-12-31"}, "start"),
        ({**good, "days": 1000}, "days"),
        ({**good, "mode": "sideways"}, "mode"),
        ({**good, "colour": "red"}, "colour"),
        ({k: v for k, v in good.items() if k != "start"}, "start"),
        ({**good, "deviceId": "3f2a"}, "deviceId"),
    ]
    for body, field in bad:
        answer = client.post(SCENARIO, json=body)
        assert answer.status_code == 400, (body, answer.text)
        problem = answer.json()
        assert problem["type"].endswith("BadRequestData") and problem["field"] == field, problem
    assert client.post(SCENARIO, content=b"{not json").status_code == 400
    assert client.post(SCENARIO, json=[1, 2]).status_code == 400
    assert client.post("/polis/v1/epidemic/Atlantis/scenario", json=good).status_code == 404
    assert client.get("/polis/v1/epidemic/Italy/forecast", params={"horizons": 40}).json()["field"] == "horizons"
    for horizons in ("١٤", "1" * 4_301):  # other scripts' digits; more digits than int() converts
        r = client.get("/polis/v1/epidemic/Italy/forecast", params={"horizons": horizons})
        assert r.status_code == 400 and r.json()["field"] == "horizons"


def test_person_level_records_offered_to_the_api_are_refused(client: TestClient) -> None:
    trip = {
        "regions": ["E09000001", "E09000033"],
        "reductionPercent": 50,
        "start": "2020-05-13",
        "user_id": 991,
        "Birth Year": 1980,
    }
    answer = client.post(SCENARIO, json=trip)
    assert answer.status_code == 400
    assert "person-level" in answer.json()["detail"]


def test_risk_view(client: TestClient) -> None:
    risk = client.get("/polis/v1/epidemic/Italy/risk").json()
    assert len(risk["regions"]) == 105 and risk["asOf"] == "2020-06-05"
    known = [r for r in risk["regions"] if r["reproductionNumber"] is not None]
    assert known and all(
        r["reproductionNumber"]["lower95"] <= r["reproductionNumber"]["mean"] <= r["reproductionNumber"]["upper95"]
        for r in known
    )
    assert all(r["importationPressure"] >= 0 for r in risk["regions"])


def _forecast(client: TestClient, country: str, **params: int) -> tuple[list[int], dict[str, Any]]:
    """Ask as the dashboard does: again after Retry-After while the server answers 202 (fitting)."""
    statuses: list[int] = []
    deadline = time.monotonic() + 300
    while True:
        answer = client.get(f"/polis/v1/epidemic/{country}/forecast", params=params)
        statuses.append(answer.status_code)
        body: dict[str, Any] = answer.json()
        if answer.status_code != 202:
            assert answer.status_code == 200, answer.text
            return statuses, body
        assert body["status"] == "fitting" and 0 <= body["progress"] <= 1 and int(answer.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, body
        time.sleep(0.5)


def test_the_forecast_serves_the_benchmarks_blend_fitted_once_and_kept(hub: Platform, client: TestClient) -> None:
    statuses, forecast = _forecast(client, "France")
    assert statuses[0] == 202 and statuses[-1] == 200  # the first fit runs in the background
    assert forecast["dates"][0] == "2020-05-27" and len(forecast["dates"]) == 14 and forecast["status"] == "ready"
    assert set(forecast["weights"]) == {"last day", "mean of last 7 days", "metapopulation", "learned (LightGBM)"}
    assert all(abs(sum(w[h] for w in forecast["weights"].values()) - 1) < 1e-3 for h in range(14))
    for row in forecast["regions"]:
        assert all(lo <= mid <= hi for lo, mid, hi in zip(row["lower"], row["cases"], row["upper"], strict=True))
    model = forecast["model"]
    assert model["fits"] > 50 and Path(model["registry"]).is_relative_to(hub.settings.data_dir / "models")
    assert (Path(model["registry"]) / "record.npz").is_file()

    again = client.get("/polis/v1/epidemic/France/forecast")  # kept in memory: no 202, the same answer
    assert again.status_code == 200 and again.json() == forecast
    short = client.get("/polis/v1/epidemic/France/forecast", params={"horizons": 3}).json()
    assert short["dates"] == forecast["dates"][:3]
    assert short["regions"][5]["upper"] == forecast["regions"][5]["upper"][:3]

    # a restarted server (a new app, nothing in memory) restores the model from the registry: no refit
    with TestClient(create_app(hub), raise_server_exceptions=False, headers=client.headers) as restarted:
        _, restored = _forecast(restarted, "France")
    assert restored["model"]["fits"] == 0 and restored["model"]["registry"] == model["registry"]
    assert restored["regions"] == forecast["regions"] and restored["weights"] == forecast["weights"]


def _polis(*args: str) -> Result:
    """The `polis` command in-process (the same typer app the console script runs)."""
    env = {"POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


def test_ingest_and_bench_from_the_command_line(tmp_path: Path) -> None:
    ingested = _polis("ingest", "covid-europe-2020", "--data-dir", str(tmp_path))
    assert ingested.exit_code == 0, ingested.output
    con = duckdb.connect(str(tmp_path / "polis.duckdb"), read_only=True)
    try:
        types = dict(con.execute("SELECT types[1], count(*) FROM entities GROUP BY 1").fetchall())
    finally:
        con.close()
    assert sum(v for k, v in types.items() if "AdministrativeArea" in k) == 151 + 94 + 105 + 52
    assert sum(v for k, v in types.items() if "OriginDestinationFlow" in k) > 4000
    bench = _polis("bench", "epidemic", "--country", "France", "--json", "--no-learned")
    assert bench.exit_code == 0, bench.output
    result = json.loads(bench.stdout)
    assert result["country"] == "France"
    week = {r["horizon_days"]: r["mae"] for r in result["results"] if r["model"] == "mean of last 7 days"}
    assert round(week[1], 2) == 4.26 and round(week[14], 2) == 6.17
    assert {"metapopulation", "blend"} <= {r["model"] for r in result["results"]}
    scenario = _polis(
        "epidemic",
        "scenario",
        "--country",
        "Spain",
        "--regions",
        "madrid,toledo",
        "--reduction",
        "200",
        "--start",
        "2020-06-21",
        "--data-dir",
        str(tmp_path),
    )
    assert scenario.exit_code == 2 and "reductionPercent" in scenario.output


def test_a_new_day_in_the_hub_moves_the_views_forward(hub: Platform, client: TestClient) -> None:
    """Spain only (the other tests read England, France and Italy): one more day of cases written to the
    hub for every region (madrid first: a day only some regions reported waits for the others), and the risk
    view and the forecast start from it; nothing in the files changed."""
    from polis.epidemic.hub import region_id
    from polis.ingest.datasets import Vocab
    from polis.store.base import HistoryColumns

    before = client.get("/polis/v1/epidemic/Spain/risk").json()
    assert before["asOf"] == "2020-06-20"
    attribute = Vocab.load(Settings().datasets_dir)("newConfirmedCases")

    def new_day(regions: list[str], cases: float) -> None:
        hub.store.bulk_history(
            TENANT,
            HistoryColumns(
                entity_id=np.array([region_id("Spain", r) for r in regions], dtype=object),
                attribute=np.array([attribute] * len(regions), dtype=object),
                observed_at=np.array([np.datetime64("2020-06-21T00:00:00", "us")] * len(regions)),
                value=np.full(len(regions), cases),
            ),
        )

    new_day(["madrid"], 5000.0)
    partial = client.get("/polis/v1/epidemic/Spain/risk").json()
    assert partial["asOf"] == "2020-06-20" and partial["incompleteDays"][0]["regionsReported"] == 1
    new_day([r["region"] for r in before["regions"] if r["region"] != "madrid"], 3.0)
    after = client.get("/polis/v1/epidemic/Spain/risk").json()
    assert after["asOf"] == "2020-06-21"
    madrid = {r["region"]: r for r in after["regions"]}["madrid"]
    assert madrid["casesLast7Days"] > {r["region"]: r for r in before["regions"]}["madrid"]["casesLast7Days"] + 4000
    assert _forecast(client, "Spain")[1]["dates"][0] == "2020-06-22"
