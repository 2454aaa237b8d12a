"""The walkthrough's findings at the level of the epidemic package: the protocol on short histories, the
forecast never served with NaN, the scenario's dates, the hub reader's rules, a server's address."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from polis.api.routes_epidemic import forecast_body
from polis.domain.errors import BadRequestData
from polis.epidemic.blend import BlendedForecast, BlendSetting
from polis.epidemic.data import CountryData, UnusableData
from polis.epidemic.evaluation import LastDay, rolling_origin
from polis.epidemic.hub import country_from_store, region_id, regions_needed
from polis.epidemic.scenario import run_scenario, validate
from polis.epidemic.serving import MIN_DAYS, NonFiniteForecast, Served, fit_served
from polis.epidemic.views import _host, listening_url
from polis.forecast.registry import ModelRegistry
from polis.ingest.datasets import DatasetLoad, ingest
from polis.store.base import HistoryColumns
from polis.store.duckdb_ import DuckDBStore

DAY0 = date(2020, 3, 1)


def _country(days: int, regions: int = 2, name: str = "France") -> CountryData:
    k = np.arange(days, dtype=np.float64)[:, None]
    cases = np.round(30.0 * 1.03**k * np.arange(1, regions + 1)[None, :])
    flows = np.broadcast_to(np.full((regions, regions), 50.0) + 500.0 * np.eye(regions), (days, regions, regions))
    names = tuple(f"r{i}" for i in range(regions))
    return CountryData(name, names, tuple(DAY0 + timedelta(days=d) for d in range(days)), cases, flows.copy(),
                       np.ones(days, dtype=bool))


def test_the_protocols_truth_table_takes_fewer_days_than_horizons() -> None:
    data = _country(5)
    run = rolling_origin(data, [LastDay()], horizons=14, origins=[3])
    actual = run.actual()
    assert actual.shape == (5, 14, 2)
    assert np.array_equal(actual[0, 4], data.cases[4]) and np.isnan(actual[:, 5:]).all()


def test_fewer_days_than_the_forecast_needs_is_unusable_data_saying_how_many(tmp_path: Path) -> None:
    with pytest.raises(UnusableData) as error:
        fit_served(_country(MIN_DAYS - 1), ModelRegistry(tmp_path), "short")
    assert error.value.status == 422 and f"at least {MIN_DAYS}" in error.value.detail
    assert f"holds {MIN_DAYS - 1}" in error.value.detail


def test_a_forecast_with_nan_is_never_served_as_ready() -> None:
    data = _country(30)
    point = np.full((14, 2), 5.0)
    point[3, 1] = np.nan
    forecast = BlendedForecast(point, point - 1, point + 1, {"last day": [1.0] * 14}, [BlendSetting(0.0, 21)] * 14)
    served = Served(forecast, "v", "", 0, 0.1)
    with pytest.raises(NonFiniteForecast) as error:
        forecast_body(data, served, 14)
    assert error.value.status == 500 and "r1" in error.value.detail and "r0" not in error.value.detail
    assert forecast_body(data, served, 3)["status"] == "ready"  # the first three days are all numbers


def test_a_scenario_window_runs_from_as_of_and_a_cut_must_start_before_its_last_day() -> None:
    data = _country(40, regions=3)
    as_of = DAY0 + timedelta(days=20)
    with pytest.raises(BadRequestData) as error:  # after the projection from asOf ends (asOf + 10 days)
        validate(data, ["r0", "r1"], 50, DAY0 + timedelta(days=35), "between", 10, as_of)
    assert error.value.extra["field"] == "start" and str(as_of + timedelta(days=10)) in error.value.detail
    with pytest.raises(BadRequestData) as error:  # on the last projected day: it could change nothing
        validate(data, ["r0", "r1"], 50, as_of + timedelta(days=10), "between", 10, as_of)
    assert error.value.extra["field"] == "start"
    day_before = validate(data, ["r0", "r1"], 90, as_of + timedelta(days=9), "between", 10, as_of)
    result = run_scenario(data, day_before, 10, as_of)
    assert result.as_of == as_of and result.dates[0] == as_of + timedelta(days=1)
    assert result.restricted.median[-1].sum() < result.baseline.median[-1].sum()
    assert np.array_equal(result.restricted.median[:-1], result.baseline.median[:-1])
    with pytest.raises(BadRequestData) as error:
        validate(data, ["r0", "r1"], 50, as_of, "between", 1, as_of)
    assert error.value.extra["field"] == "days"
    with pytest.raises(BadRequestData) as error:  # asOf past the data
        validate(data, ["r0", "r1"], 50, as_of, "between", 10, DAY0 + timedelta(days=40))
    assert error.value.extra["field"] == "asOf"


def test_as_of_in_a_scenario_uses_the_data_up_to_that_day() -> None:
    data = _country(40)
    as_of = DAY0 + timedelta(days=25)
    intervention = validate(data, ["r0", "r1"], 50, as_of, "between", 5, as_of)
    assert np.array_equal(
        run_scenario(data, intervention, 5, as_of).baseline.median,
        run_scenario(data.truncated(26), intervention, 5).baseline.median,
    )


def test_a_day_counts_once_nearly_every_region_reported_it() -> None:
    assert [regions_needed(n) for n in (1, 2, 19, 20, 52, 151)] == [1, 2, 19, 19, 50, 144]


def _hub(values: dict[str, dict[int, float]]) -> DuckDBStore:
    """An in-memory hub holding France's regions' newConfirmedCases, by region and day offset."""
    store = DuckDBStore(None)
    attribute = "https://uri.etsi.org/ngsi-ld/default-context/newConfirmedCases"
    store.ensure_tenant("t")
    entities = [
        {"id": region_id("France", name), "type": ["https://uri.etsi.org/ngsi-ld/default-context/AdministrativeArea"],
         "createdAt": "2020-01-01T00:00:00Z", "modifiedAt": "2020-01-01T00:00:00Z"}
        for name in values
    ]
    rows = [(region_id("France", name), day, value) for name, series in values.items() for day, value in series.items()]
    history = HistoryColumns(
        entity_id=np.array([r[0] for r in rows], dtype=object),
        attribute=np.array([attribute] * len(rows), dtype=object),
        observed_at=np.array([np.datetime64(DAY0 + timedelta(days=r[1]), "us") for r in rows]),
        value=np.array([r[2] for r in rows], dtype=np.float64),
    )
    ingest(store, "t", DatasetLoad("test", entities, history, [], "test"))  # type: ignore[arg-type]
    return store


def test_the_hub_reader_ends_the_calendar_at_the_last_complete_day() -> None:
    full = {d: 10.0 + d for d in range(12)}
    store = _hub({"a": {**full, 12: 500.0}, "b": full, "c": {**full, 12: 400.0}})
    try:
        data = country_from_store(store, "t", "France")
    finally:
        store.close()
    assert data is not None and data.dates[-1] == DAY0 + timedelta(days=11) and data.n_days == 12
    assert data.incomplete_days == ((DAY0 + timedelta(days=12), 2),)
    assert (data.cases[-1] == 21.0).all()


def test_the_hub_reader_refuses_a_negative_count_naming_region_and_day() -> None:
    store = _hub({"a": {0: 5.0, 1: -7.0}, "b": {0: 3.0, 1: 4.0}})
    try:
        with pytest.raises(UnusableData) as error:
            country_from_store(store, "t", "France")
    finally:
        store.close()
    assert "a on 2020-03-02: -7" in error.value.detail and error.value.status == 422


def test_the_address_a_process_listens_on_is_read_from_proc() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
         "print(s.getsockname()[1], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        assert listening_url(child.pid) == f"http://127.0.0.1:{port}"
    finally:
        child.kill()
        child.communicate()  # reaps it and closes its pipe
    assert listening_url(child.pid) is None  # gone: unknown, not guessed


def test_proc_addresses_decode_to_hosts_to_connect_to() -> None:
    assert _host("0100007F") == "127.0.0.1"
    assert _host("00000000") == "127.0.0.1"  # every address: ask on loopback
    assert _host("00000000000000000000000001000000") == "[::1]"
    assert _host("00000000000000000000000000000000") == "[::1]"
