"""Mobility products over HTTP (in-process app, real Citi Bike data): flows, OD, summary, the raw-pseudonymous
tier, differential privacy with its budget, and clear errors for bad requests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.access.enforce import ROUTE_POLICIES, Fixed, app_routes
from polis.api.app import create_app
from polis.api.routes_mobility import MOBILITY_ROUTES
from polis.mobility.citibike import DATASET, ZONE, load_trips
from polis.mobility.ingest import ingest_trips
from polis.platform import Platform
from tests.conftest import admin_headers

BASE = f"/polis/v1/mobility/{DATASET}"


@pytest.fixture(scope="module")
def hub() -> Iterator[Platform]:
    # Stations and 8-hour OD windows here (the Citi Bike test covers the defaults: cells, daily OD).
    platform = Platform.in_memory(
        pseudonym_secret="t" * 32, dp_epsilon_budget=2.0, flows_unit="station", od_window_hours=8
    )
    ingest_trips(platform.settings, platform.store, load_trips(platform.settings.datasets_dir), ZONE)
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def api(hub: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(hub), raise_server_exceptions=False, headers=admin_headers(hub)) as client:
        yield client


def test_every_route_names_its_dataset_and_tier(api: TestClient) -> None:
    assert {tier for _, tier, _ in MOBILITY_ROUTES.values()} == {"public", "aggregate", "raw-pseudonymous"}
    served = {(method, path) for method, path, _ in app_routes(api.app) if path.startswith(BASE)}  # type: ignore[arg-type]
    assert served == set(MOBILITY_ROUTES)
    for route, (dataset, tier, action) in MOBILITY_ROUTES.items():  # access control grants exactly these
        assert ROUTE_POLICIES[route] == Fixed(dataset, tier, action)


def test_hourly_station_flows_are_suppressed_below_k(api: TestClient) -> None:
    body = api.get(f"{BASE}/flows", params={"day": "2017-04-12", "by": "station", "direction": "arrivals"}).json()
    assert body["tier"] == "aggregate" and body["k"] == 10 and len(body["columns"]) == 24
    numbers = [v for row in body["cells"] for v in row] + body["rowTotals"] + body["columnTotals"] + [body["total"]]
    assert all(v is None or v >= 10 for v in numbers)
    assert body["total"] is not None and body["total"] > 500
    assert "Grove St PATH" in body["rowLabels"]


def test_daylight_saving_days_have_23_or_25_hours(api: TestClient) -> None:
    body = api.get(f"{BASE}/flows", params={"day": "2017-11-05"}).json()
    assert len(body["columns"]) == 25 and body["columns"][0] == "2017-11-05T04:00:00Z"
    body = api.get(f"{BASE}/flows", params={"day": "2017-03-12"}).json()
    assert len(body["columns"]) == 23


def test_od_matrix_per_window_and_one_granularity_per_hub(api: TestClient) -> None:
    windows = [
        api.get(f"{BASE}/od", params={"day": "2017-04-12", "window": w}).json() for w in ("00-08", "08-16", "16-24")
    ]
    for release in windows:
        assert release["product"] == "od-matrix" and release["rows"] == release["columns"]
        assert all(v is None or v >= 10 for row in release["cells"] for v in row)
    assert windows[1]["total"] is not None and windows[1]["total"] > 100
    # The day matrix is the cell-wise sum of the three windows: releasing both would give suppressed cells away.
    refused = api.get(f"{BASE}/od", params={"day": "2017-04-12", "window": "day"})
    assert refused.status_code == 400 and "never both" in refused.json()["detail"]
    refused = api.get(f"{BASE}/flows", params={"day": "2017-04-12", "by": "cell"})
    assert refused.status_code == 400 and "per station only" in refused.json()["detail"]


def test_summary_is_public_and_lists_stations(api: TestClient, hub: Platform) -> None:
    body = api.get(f"{BASE}/summary").json()
    assert body["tier"] == "public" and body["firstDay"] == "2017-02-01" and body["lastDay"] == "2018-01-31"
    assert any(s["name"] == "Grove St PATH" for s in body["stations"])
    with TestClient(create_app(hub), raise_server_exceptions=False) as anonymous:  # no key: the public department
        assert anonymous.get(f"{BASE}/flows", params={"day": "2017-04-12"}).status_code in (401, 403)


def test_raw_pseudonymous_trips_exist_only_within_retention(api: TestClient) -> None:
    recent = api.get(f"{BASE}/trips", params={"day": "2018-01-30"}).json()
    assert recent["tier"] == "raw-pseudonymous" and len(recent["trips"]) > 50
    trip = recent["trips"][0]
    assert set(trip) == {
        "pseudonym",
        "start_hour",
        "end_hour",
        "start_station",
        "end_station",
        "start_cell",
        "end_cell",
    }
    assert trip["start_hour"].endswith(":00:00Z") and len(trip["pseudonym"]) == 32
    purged = api.get(f"{BASE}/trips", params={"day": "2017-04-12"})
    assert purged.status_code == 404 and "POLIS_RAW_RETENTION_DAYS" in purged.json()["detail"]  # said, not []


def test_dp_releases_spend_the_budget_then_are_refused(api: TestClient) -> None:
    params = {"day": "2017-04-12", "epsilon": "0.75"}
    first = api.get(f"{BASE}/od", params=params).json()
    assert first["differentialPrivacy"] == {"mechanism": "laplace", "epsilon": 0.75, "delta": 0.0, "scale": 1 / 0.75}
    assert all(v is None or v >= 10 for row in first["cells"] for v in row)
    gaussian = api.get(f"{BASE}/flows", params={**params, "mechanism": "gaussian"}).json()
    assert gaussian["differentialPrivacy"]["mechanism"] == "gaussian"
    refused = api.get(f"{BASE}/od", params=params)
    assert refused.status_code == 403
    problem = refused.json()
    assert problem["type"].endswith("PrivacyBudgetExceeded") and problem["epsilonSpent"] == pytest.approx(1.5)
    assert api.get(f"{BASE}/summary").json()["epsilonSpent"] == pytest.approx(1.5)
    assert api.get(f"{BASE}/od", params={"day": "2017-04-12"}).status_code == 200  # suppressed release: free


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("flows", {}, 400, "'day'"),
        ("flows", {"day": "12/04/2017"}, 400, "YYYY-MM-DD"),
        ("flows", {"day": "2017-04-12", "by": "person"}, 400, "by must be one of"),
        ("flows", {"day": "2017-04-12", "bogus": "1"}, 400, "unknown query parameter"),
        ("od", {"day": "2017-04-12", "window": "night"}, 400, "window must be one of"),
        ("od", {"day": "2017-04-12", "epsilon": "-1"}, 400, "positive"),
        ("od", {"day": "2017-04-12", "mechanism": "laplace"}, 400, "needs epsilon"),
        ("od", {"day": "2019-01-01"}, 404, "no data for 2019-01-01"),
    ],
)
def test_bad_requests_get_clear_problems(
    api: TestClient, path: str, params: dict[str, str], status: int, words: str
) -> None:
    answer = api.get(f"{BASE}/{path}", params=params)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


def _hidden(body: dict[str, Any]) -> set[tuple[str, int, int]]:
    """Where a released table shows nothing: cells, row and column totals, the grand total."""
    cells = {("cell", i, j) for i, row in enumerate(body["cells"]) for j, v in enumerate(row) if v is None}
    rows = {("row", i, 0) for i, v in enumerate(body["rowTotals"]) if v is None}
    columns = {("column", 0, j) for j, v in enumerate(body["columnTotals"]) if v is None}
    return cells | rows | columns | ({("total", 0, 0)} if body["total"] is None else set())


def test_a_noisy_release_hides_everything_the_exact_one_hides() -> None:
    # With little noise (a large epsilon) a noisy table suppressed on its own, plus the exact releases of the
    # day, let a linear program pin hidden station counts. Hiding a superset of the exact table's entries
    # means a noisy table shows only entries the exact one already shows, plus noise.
    platform = Platform.in_memory(
        pseudonym_secret="t" * 32, dp_epsilon_budget=100.0, flows_unit="station", od_window_hours=8
    )
    try:
        ingest_trips(platform.settings, platform.store, load_trips(platform.settings.datasets_dir), ZONE)
        with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as api:
            for path, extra in [("flows", {"direction": "departures"}), ("flows", {"direction": "arrivals"}),
                                ("od", {"window": "08-16"})]:
                params = {"day": "2017-04-12", **extra}
                exact = api.get(f"{BASE}/{path}", params=params).json()
                noisy = api.get(f"{BASE}/{path}", params={**params, "epsilon": "9"}).json()
                assert noisy["differentialPrivacy"]["epsilon"] == 9, noisy
                assert _hidden(exact) and _hidden(exact) <= _hidden(noisy), path
                assert all(v is None or v >= 10 for row in noisy["cells"] for v in row)
    finally:
        platform.close()
