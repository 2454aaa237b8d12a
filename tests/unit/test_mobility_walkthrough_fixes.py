"""Defects a walkthrough of the bike-trip privacy gate found (2026-11-29), on a small synthetic city: the release
configuration a hub's first release pins, unbiased differentially private totals, the pseudonym secret's
length, and the day format."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from polis.domain.errors import ResourceNotFound
from polis.mobility.citibike import DATASET, ZONE
from polis.mobility.ingest import ingest_trips, pseudonymiser_for
from polis.mobility.products import Direction, DpRequest, ReleaseConfigurationPinned, Unit, day_ranges
from polis.mobility.schema import Places, TripBatch
from polis.ngsi_ld.params import parse_day
from polis.privacy.dp import Mechanism, noise_scale
from polis.privacy.service import PrivacyService
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore

DAY = date(2017, 4, 12)
# Eight stations across Jersey City (public places): several H3 res-8 cells, two or three res-7 OD cells.
STATIONS = {
    "3186": (40.7196, -74.0434),
    "3199": (40.7267, -74.0341),
    "3203": (40.7277, -74.0392),
    "3209": (40.7117, -74.0549),
    "3213": (40.7186, -74.0509),
    "3267": (40.7122, -74.0646),
    "3272": (40.7481, -74.0490),
    "3280": (40.7355, -74.0601),
}


def synthetic_trips(n: int = 600, seed: int = 3) -> TripBatch:
    """`n` trips starting on 2017-04-12 (New York time, UTC-4), busy in the rush hours, between random stations."""
    rng = np.random.default_rng(seed)
    ids = np.array(list(STATIONS), dtype=object)
    hours = rng.choice(24, n, p=np.bincount([7, 8, 8, 9, 12, 17, 17, 18, 18, 19], minlength=24) * 0.08 + 0.2 / 24)
    start = np.datetime64("2017-04-12T04:00:00") + (hours * 3600 + rng.integers(0, 3600, n)).astype("timedelta64[s]")
    end = start + rng.integers(300, 1800, n).astype("timedelta64[s]")
    a, b = rng.choice(ids, n), rng.choice(ids, n)
    lat = np.array([p[0] for p in STATIONS.values()])
    lon = np.array([p[1] for p in STATIONS.values()])
    index = {s: i for i, s in enumerate(STATIONS)}
    ia, ib = np.array([index[s] for s in a]), np.array([index[s] for s in b])
    return TripBatch(
        dataset=DATASET,
        start_time=start,
        end_time=end,
        start=Places(a, lat[ia], lon[ia]),
        end=Places(b, lat[ib], lon[ib]),
        identifiers={"bike_id": np.array([str(v) for v in rng.integers(24000, 24100, n)], dtype=object)},
        station_names={s: f"Station {s}" for s in STATIONS},
    )


def settings(**overrides: object) -> Settings:
    return Settings(pseudonym_secret="s" * 32, dp_epsilon_budget=1e6, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def store() -> Iterator[DuckDBStore]:
    """A hub holding the synthetic day, nothing released yet."""
    s = DuckDBStore(None)
    ingest_trips(settings(), s, synthetic_trips(), ZONE)
    yield s
    s.close()


def release(store: DuckDBStore, product: str, **overrides: object) -> None:
    """One release of the day under these settings: hourly flows in the configured unit, or an OD matrix."""
    products = PrivacyService(store, settings(**overrides)).products(DATASET)
    if product == "flows":
        products.hourly_flows(DATASET, DAY, products.flows_unit, Direction.DEPARTURES)
    else:
        products.od_matrix(DATASET, DAY, products.od_windows[0])


# -- 1. one release configuration per hub -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "first", "then", "setting", "pinned"),
    [
        ("flows", {"flows_unit": "cell"}, {"flows_unit": "station"}, "POLIS_FLOWS_UNIT", "cell"),
        ("flows", {"flows_unit": "station"}, {"flows_unit": "cell"}, "POLIS_FLOWS_UNIT", "station"),
        ("od", {"od_window_hours": 24}, {"od_window_hours": 8}, "POLIS_OD_WINDOW_HOURS", "24"),
        ("od", {"od_window_hours": 8}, {"od_window_hours": 24}, "POLIS_OD_WINDOW_HOURS", "8"),
        ("flows", {"suppression_k": 10}, {"suppression_k": 5}, "POLIS_SUPPRESSION_K", "10"),
        ("od", {"suppression_k": 5}, {"suppression_k": 10}, "POLIS_SUPPRESSION_K", "5"),
    ],
)
def test_the_first_release_pins_its_configuration_and_a_fresh_hub_may_choose_either(
    store: DuckDBStore, product: str, first: dict[str, object], then: dict[str, object], setting: str, pinned: str
) -> None:
    release(store, product, **first)
    release(store, product, **first)  # the same configuration again: fine
    for other_product in ("flows", "od"):  # every product is cut from the same joint suppression: both refused
        with pytest.raises(ReleaseConfigurationPinned) as refused:
            release(store, other_product, **then)
        assert refused.value.status == 409
        detail = refused.value.detail
        assert f"pinned to {setting}={pinned}" in detail and f"Keep {setting}={pinned}" in detail
        assert "new hub" in detail
    assert PrivacyService(store, settings(**then)).release_configuration(DATASET) == (
        PrivacyService(store, settings(**first)).products(DATASET).configuration
    )
    fresh = DuckDBStore(None)  # a new hub has released nothing: it may start with the other configuration
    try:
        ingest_trips(settings(), fresh, synthetic_trips(), ZONE)
        release(fresh, product, **then)
        with pytest.raises(ReleaseConfigurationPinned):
            release(fresh, product, **first)
    finally:
        fresh.close()


def test_nothing_pins_before_a_release_and_a_refused_release_charges_nothing(store: DuckDBStore) -> None:
    service = PrivacyService(store, settings(flows_unit="station"))
    assert service.release_configuration(DATASET).flows_unit == "station"  # the settings', until a release
    with pytest.raises(ResourceNotFound):  # no data that day: no release, so no pin
        service.products(DATASET).hourly_flows(DATASET, date(2017, 4, 13), Unit.STATION, Direction.DEPARTURES)
    release(store, "flows", flows_unit="cell")
    noisy = DpRequest(1.0)
    products = service.products(DATASET)
    with pytest.raises(ReleaseConfigurationPinned):
        products.hourly_flows(DATASET, DAY, Unit.STATION, Direction.DEPARTURES, noisy)
    assert service.ledger.spent(DATASET) == 0


# -- 2. differentially private totals are unbiased ----------------------------------------------------------------


def _noise_variance(mechanism: Mechanism, epsilon: float) -> float:
    scale = noise_scale(mechanism, epsilon, 1e-6)
    if mechanism is Mechanism.LAPLACE:
        t = math.exp(-1 / scale)
        return 2 * t / (1 - t) ** 2
    return scale**2  # the discrete Gaussian's variance is within 1e-8 of sigma^2 for sigma >= 1


@pytest.mark.parametrize(("mechanism", "epsilon"), [(Mechanism.LAPLACE, 1.0), (Mechanism.GAUSSIAN, 2.0)])
def test_noisy_totals_are_the_true_totals_plus_zero_mean_noise(
    store: DuckDBStore, mechanism: Mechanism, epsilon: float
) -> None:
    service = PrivacyService(store, settings())
    products = service.products(DATASET)
    exact = products.hourly_flows(DATASET, DAY, Unit.CELL, Direction.DEPARTURES).table
    cells = len(exact.rows) * len(exact.columns)
    true_total = 600  # every synthetic trip departs on the day
    assert exact.total == true_total
    empty = sum(v is None for row in exact.cells for v in row)
    assert empty > cells / 3  # the case that inflated totals: many cells whose noise was clamped at 0
    sd = math.sqrt(cells * _noise_variance(mechanism, epsilon))
    draws = 150
    totals = []
    for _ in range(draws):
        noisy = DpRequest(epsilon, mechanism)
        table = products.hourly_flows(DATASET, DAY, Unit.CELL, Direction.DEPARTURES, noisy).table
        assert table.total is not None
        assert abs(table.total - true_total) < 6 * sd
        shown = [v for row in table.cells for v in row if v is not None] + [
            v for v in (*table.row_totals, *table.column_totals) if v is not None
        ]
        assert all(v >= 10 for v in shown)  # nothing below k, so nothing negative, is shown
        totals.append(table.total)
    # Unbiased: the mean of the draws within 5 standard errors. Clamped at 0, each empty cell added about 0.43
    # (Laplace, epsilon 1) and the mean sat dozens of standard errors above.
    assert abs(np.mean(totals) - true_total) < 5 * sd / math.sqrt(draws)
    # Totals are post-processing of the noisy cells: each release is charged its epsilon once.
    assert service.ledger.spent(DATASET) == pytest.approx(draws * epsilon)


# -- 3. the pseudonym secret holds at least 32 characters ---------------------------------------------------------


def test_a_pseudonym_secret_setting_shorter_than_32_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="POLIS_PSEUDONYM_SECRET holds 16 characters; at least 32"):
        pseudonymiser_for(Settings(pseudonym_secret="0123456789abcdef"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="holds 31 characters"):
        pseudonymiser_for(Settings(pseudonym_secret="x" * 31))  # type: ignore[arg-type]
    assert pseudonymiser_for(Settings(pseudonym_secret="x" * 32)).pseudonym("1", DAY)  # type: ignore[arg-type]


# -- 7. days are YYYY-MM-DD --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["20170201", "2017-W05-3", "2017-13-01", "2017-2-1", "２０17-02-01", "2017-02-01 "])
def test_only_yyyy_mm_dd_is_a_day(text: str) -> None:
    with pytest.raises(ValueError, match="--day must be a date YYYY-MM-DD"):
        parse_day(text, "--day")


def test_a_day_is_read_and_days_are_shown_as_runs() -> None:
    assert parse_day("2017-02-01") == date(2017, 2, 1)
    days = [date(2017, 2, 1), date(2017, 2, 2), date(2017, 2, 3), date(2017, 2, 5), date(2017, 11, 1)]
    assert day_ranges(days) == "2017-02-01 to 2017-02-03, 2017-02-05, 2017-11-01"
    assert day_ranges([]) == "none"
