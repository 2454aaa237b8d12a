"""What a walkthrough of the epidemic module found, as a user meets it: a hub holding a few hand-written
regions (the temporal API, one tenant per case), the API in-process, the `polis` command on a hub's files."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from polis.api.app import create_app
from polis.cli import app
from polis.epidemic.hub import flow_id, region_id
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import admin_headers, start_server, stop_server

BASE = "/polis/v1/epidemic"
DAY0 = date(2020, 3, 1)


def _day(k: int) -> str:
    return (DAY0 + timedelta(days=k)).isoformat()


def _area(country: str, name: str, values: list[float], first: int = 0) -> dict[str, Any]:
    """A region as a department would post it: daily newConfirmedCases from day `first` on."""
    return {
        "id": region_id(country, name),
        "type": "AdministrativeArea",
        "newConfirmedCases": [
            {"type": "Property", "value": v, "observedAt": f"{_day(first + k)}T00:00:00Z"} for k, v in enumerate(values)
        ],
    }


def _flow(country: str, origin: str, destination: str, values: list[float]) -> dict[str, Any]:
    return {
        "id": flow_id(country, origin, destination),
        "type": "OriginDestinationFlow",
        "flowCount": [
            {"type": "Property", "value": v, "observedAt": f"{_day(k)}T00:00:00Z"} for k, v in enumerate(values)
        ],
    }


def _growing(days: int, level: float, growth: float = 0.03) -> list[float]:
    return [float(round(level * (1 + growth) ** k)) for k in range(days)]


def _post(client: TestClient, tenant: str, *entities: dict[str, Any]) -> None:
    for entity in entities:
        answer = client.post("/ngsi-ld/v1/temporal/entities", json=entity, headers={"NGSILD-Tenant": tenant})
        assert answer.status_code in (201, 204), answer.text


@pytest.fixture(scope="module")
def hub() -> Iterator[Platform]:
    platform = Platform.in_memory()
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def client(hub: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(hub), raise_server_exceptions=False, headers=admin_headers(hub)) as c:
        yield c


def _get(client: TestClient, tenant: str, path: str, **params: Any) -> Any:
    return client.get(f"{BASE}/{path}", params=params, headers={"NGSILD-Tenant": tenant})


def _scenario(client: TestClient, tenant: str, country: str, body: dict[str, Any]) -> Any:
    return client.post(f"{BASE}/{country}/scenario", json=body, headers={"NGSILD-Tenant": tenant})


def _forecast(client: TestClient, tenant: str, country: str, **params: Any) -> Any:
    """Asks again while the hub answers 202 (fitting), as the dashboard does."""
    deadline = time.monotonic() + 240
    while True:
        answer = _get(client, tenant, f"{country}/forecast", **params)
        if answer.status_code != 202:
            return answer
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.3)


def _problem(answer: Any, status: int, *named: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    problem: dict[str, Any] = answer.json()
    for text in named:
        assert text in problem["detail"], (text, problem)
    return problem


# -- 1. negative counts ------------------------------------------------------------------------------


def test_a_negative_case_count_in_the_hub_is_refused_naming_region_and_day(client: TestClient) -> None:
    tenant = "walk-negative"
    cases = _growing(20, 30)
    wrong = list(cases)
    wrong[15] = -500.0
    _post(client, tenant, _area("France", "paris", wrong), _area("France", "lyon", cases))
    scenario = {"regions": ["paris", "lyon"], "reductionPercent": 50, "start": _day(21)}
    for answer in (
        _get(client, tenant, "France/risk"),
        _get(client, tenant, "France/forecast"),
        _scenario(client, tenant, "France", scenario),
    ):
        problem = _problem(answer, 422, "paris", _day(15), "-500", "negative")
        assert problem["type"].endswith("OperationNotSupported")
    # corrected, it is served again
    _post(client, tenant, _area("France", "paris", [40.0], first=15))
    risk = _get(client, tenant, "France/risk")
    assert risk.status_code == 200, risk.text
    assert all(r["casesLast7Days"] >= 0 for r in risk.json()["regions"])


def test_a_negative_flow_in_the_hub_is_refused_naming_the_pair_and_day(client: TestClient) -> None:
    tenant = "walk-negative-flow"
    flows = [100.0] * 10
    flows[4] = -3.0
    _post(
        client,
        tenant,
        _area("Spain", "madrid", _growing(10, 30)),
        _area("Spain", "toledo", _growing(10, 20)),
        _flow("Spain", "madrid", "toledo", flows),
    )
    _problem(_get(client, tenant, "Spain/risk"), 422, "madrid:toledo", _day(4), "flow")
    body = {"regions": ["madrid", "toledo"], "reductionPercent": 50, "start": _day(12)}
    _problem(_scenario(client, tenant, "Spain", body), 422, "madrid:toledo")


# -- 2, 3. too few days ------------------------------------------------------------------------------


def test_a_forecast_from_too_few_days_says_how_many_are_needed(client: TestClient) -> None:
    tenant = "walk-short"
    _post(client, tenant, _area("England", "E1", _growing(10, 20)), _area("England", "E2", _growing(10, 30)))
    for horizons in ("2", "14"):
        problem = _problem(_get(client, tenant, "England/forecast", horizons=horizons), 422, "28", "10", _day(9))
        assert "days" in problem["detail"]
    assert _get(client, tenant, "England/risk").status_code == 200  # the risk view works from fewer days


def test_a_scenario_as_of_a_day_in_a_hub_of_few_days_is_refused_not_a_crash(client: TestClient) -> None:
    tenant = "walk-five"
    _post(client, tenant, _area("Italy", "milano", _growing(5, 40)), _area("Italy", "lodi", _growing(5, 20)))
    body = {"regions": ["milano", "lodi"], "reductionPercent": 50, "start": _day(6), "asOf": _day(4)}
    problem = _problem(_scenario(client, tenant, "Italy", body), 400, "5 day(s)", "asOf")
    assert problem["field"] == "asOf"
    without = {k: v for k, v in body.items() if k != "asOf"}
    assert _scenario(client, tenant, "Italy", without).status_code == 200  # from the last day held, as before


# -- 4, 5, 7. scenario dates -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spain(client: TestClient) -> str:
    """40 days of three Spanish regions with flows between them, in their own tenant."""
    tenant = "walk-spain"
    names = ("madrid", "toledo", "avila")
    _post(client, tenant, *(_area("Spain", n, _growing(40, 50 + 20 * k)) for k, n in enumerate(names)))
    _post(
        client,
        tenant,
        *(_flow("Spain", a, b, [1000.0 if a == b else 200.0] * 40) for a in names for b in names),
    )
    return tenant


def test_a_cut_starting_after_an_as_of_projection_ends_is_refused(client: TestClient, spain: str) -> None:
    body = {"regions": ["madrid", "toledo"], "reductionPercent": 50, "days": 10, "asOf": _day(20), "start": _day(35)}
    problem = _problem(_scenario(client, spain, "Spain", body), 400, _day(30))  # the last projected day
    assert problem["field"] == "start"


def test_a_cut_from_the_last_projected_day_is_refused_the_day_before_changes_cases(
    client: TestClient, spain: str
) -> None:
    last = _day(39 + 10)  # data to day 39, 10 days projected
    body = {"regions": ["madrid", "toledo"], "reductionPercent": 90, "days": 10, "start": last}
    problem = _problem(_scenario(client, spain, "Spain", body), 400, last, _day(48))
    assert problem["field"] == "start"
    answer = _scenario(client, spain, "Spain", {**body, "start": _day(48)})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["totals"]["intervention"] < result["totals"]["baseline"]
    one_day = _scenario(client, spain, "Spain", {**body, "start": _day(30), "days": 1})
    assert _problem(one_day, 400)["field"] == "days"


def test_scenario_as_of_is_the_last_day_of_data_used_and_is_echoed(client: TestClient, spain: str) -> None:
    risk = _get(client, spain, "Spain/risk").json()
    body = {"regions": ["madrid", "toledo"], "reductionPercent": 50, "days": 5, "start": _day(22)}
    latest = _scenario(client, spain, "Spain", body).json()
    assert latest["asOf"] == risk["asOf"] == _day(39) and latest["dates"][0] == _day(40)
    earlier = _scenario(client, spain, "Spain", {**body, "asOf": _day(20)})
    assert earlier.status_code == 200, earlier.text
    assert earlier.json()["asOf"] == _day(20) and earlier.json()["dates"][0] == _day(21)
    too_early = _scenario(client, spain, "Spain", {**body, "asOf": _day(5)})
    assert _problem(too_early, 400, _day(6))["field"] == "asOf"  # 7 days of data up to asOf


def test_scenario_dates_must_be_date_strings(client: TestClient, spain: str) -> None:
    body = {"regions": ["madrid", "toledo"], "reductionPercent": 50, "days": 5}
    for field, value in (("start", 20200513), ("start", "20200513"), ("asOf", 20200320), ("start", ["2020-05-13"])):
        answer = _scenario(client, spain, "Spain", {"start": _day(42), **body, field: value})
        assert _problem(answer, 400, "YYYY-MM-DD")["field"] == field, value


# -- 6. a day some regions have not reported yet -----------------------------------------------------


def test_a_day_only_one_region_reported_waits_for_the_others(client: TestClient) -> None:
    tenant = "walk-partial"
    names = ("paris", "lyon", "lille")
    _post(client, tenant, *(_area("France", n, _growing(30, 40 + 30 * k)) for k, n in enumerate(names)))
    before = _get(client, tenant, "France/risk").json()
    forecast = _forecast(client, tenant, "France")
    assert forecast.status_code == 200, forecast.text
    assert before["asOf"] == before["lastCompleteDay"] == _day(29) and before["incompleteDays"] == []

    _post(client, tenant, _area("France", "paris", [5000.0], first=30))  # paris reports day 30 first
    after = _get(client, tenant, "France/risk").json()
    assert after["asOf"] == after["lastCompleteDay"] == _day(29)
    assert after["incompleteDays"] == [{"date": _day(30), "regionsReported": 1, "regions": 3}]
    assert after["regions"] == before["regions"]  # nobody reads as zero cases that day
    again = _forecast(client, tenant, "France")  # not refit on zeros: the same forecast, saying what waits
    assert again.status_code == 200, again.text
    assert again.json()["regions"] == forecast.json()["regions"] and again.json()["asOf"] == _day(29)
    assert again.json()["incompleteDays"] == after["incompleteDays"]

    _post(client, tenant, _area("France", "lyon", [80.0], first=30), _area("France", "lille", [130.0], first=30))
    complete = _get(client, tenant, "France/risk").json()
    assert complete["asOf"] == _day(30) and complete["incompleteDays"] == []


# -- the command line --------------------------------------------------------------------------------


def _polis(*args: str) -> Result:
    env = {"POLIS_DATASETS_DIR": str(Settings().datasets_dir), "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env)


def _one_line_failure(result: Result, code: int = 1) -> str:
    """The command failed with `code`, saying why in one line on stderr and no traceback; returns that line."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an exception escaping the command
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub's files: England with 10 days in tenant `tiny`; France with 30 days in tenant `walk`, two of its
    three regions with too few cases for R (and forecasts below 1 a day)."""
    data_dir = tmp_path_factory.mktemp("walkthrough") / "hub"
    platform = Platform(Settings(data_dir=data_dir, api_key_hash_time_cost=1, api_key_hash_memory_kib=64))
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as c:
            _post(c, "tiny", _area("England", "E1", _growing(10, 20)), _area("England", "E2", _growing(10, 30)))
            _post(
                c,
                "walk",
                _area("France", "paris", _growing(30, 0.6, 0.02)),
                _area("France", "lyon", _growing(30, 90)),
                _area("France", "lille", [0.0, 1.0] * 15),
            )
    finally:
        platform.close()
    return data_dir


def test_the_cli_forecast_from_too_few_days_is_one_line(hub_dir: Path) -> None:
    result = _polis("epidemic", "forecast", "--country", "England", "--tenant", "tiny", "--data-dir", str(hub_dir))
    line = _one_line_failure(result)
    assert "28" in line and "10" in line


def test_cli_risk_and_forecast_tables(hub_dir: Path) -> None:
    where = ["--country", "France", "--tenant", "walk", "--data-dir", str(hub_dir)]
    for command in ("risk", "forecast"):
        for top in ("0", "-1"):
            refused = _polis("epidemic", command, *where, "--top", top)
            assert refused.exit_code == 2 and "--top" in refused.output, refused.output
    risk = _polis("epidemic", "risk", *where)
    assert risk.exit_code == 0, risk.output
    assert "2 of 3 regions left out: fewer than 12 cases in the week" in risk.output, risk.output
    forecast = _polis("epidemic", "forecast", *where)
    assert forecast.exit_code == 0, forecast.output
    cells = re.findall(r"(\d+\.\d+) \((\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\)", forecast.output)
    assert len(cells) == 9, forecast.output  # 3 regions x (1, 7, 14 days)
    for point, lower, upper in cells:
        assert all("." in bound for bound in (lower, upper)), forecast.output  # the point's precision
        assert float(lower) <= float(point) <= float(upper), forecast.output


@pytest.mark.server
def test_a_locked_hub_names_the_running_servers_real_address(tmp_path: Path) -> None:
    server = start_server(tmp_path / "hub")
    try:
        locked = _polis("epidemic", "risk", "--country", "Spain", "--data-dir", str(tmp_path / "hub"))
        line = _one_line_failure(locked)
        assert f"--url {server.url}" in line and f"process {server.pid}" in line, line
    finally:
        stop_server(server.process)


def test_a_hub_locked_by_a_process_with_no_address_says_so(tmp_path: Path) -> None:
    """Another command holding the file (no server): no made-up URL."""
    import duckdb

    duckdb.connect(str(tmp_path / "polis.duckdb")).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "time.sleep(120)", str(tmp_path / "polis.duckdb")],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        line = _one_line_failure(_polis("epidemic", "risk", "--country", "Spain", "--data-dir", str(tmp_path)))
        assert f"process {holder.pid}" in line and "could not be found" in line, line
        assert "http://" not in line, line
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe


def test_bench_on_a_missing_datasets_dir_is_one_line() -> None:
    result = _polis("bench", "epidemic", "--country", "England", "--datasets-dir", "/nonexistent")
    line = _one_line_failure(result)
    assert "/nonexistent" in line and "england_labels.csv" in line


@pytest.mark.parametrize("column", ["NHS number", "postcode"])
def test_an_ingest_refusing_a_labels_file_is_one_line_and_leaves_no_hub(tmp_path: Path, column: str) -> None:
    """A copy of the public data whose England labels file has one column too many."""
    real = Settings().datasets_dir
    copy = tmp_path / "datasets"
    copy.mkdir()
    for entry in real.iterdir():
        if entry.name != "epidemic":
            (copy / entry.name).symlink_to(entry)
    covid = copy / "epidemic" / "covid-europe-2020"
    for country in ("France", "Italy", "Spain"):
        (covid / country).parent.mkdir(parents=True, exist_ok=True)
        (covid / country).symlink_to(real / "epidemic" / "covid-europe-2020" / country)
    england = covid / "England"
    england.mkdir()
    (england / "graphs").symlink_to(real / "epidemic" / "covid-europe-2020" / "England" / "graphs")
    with (real / "epidemic" / "covid-europe-2020" / "England" / "england_labels.csv").open(newline="") as source:
        rows = list(csv.reader(source))
    labels = england / "england_labels.csv"
    with labels.open("w", newline="") as target:
        csv.writer(target).writerows([[*rows[0][:1], column, *rows[0][1:]]] + [[*r[:1], "x", *r[1:]] for r in rows[1:]])

    data_dir = tmp_path / "new-hub"
    result = _polis("ingest", "covid-europe-2020", "--datasets-dir", str(copy), "--data-dir", str(data_dir))
    line = _one_line_failure(result)
    assert str(labels) in line and column in line, line
    assert not (data_dir / "polis.duckdb").exists() and not data_dir.exists()
