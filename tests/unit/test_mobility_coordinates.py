"""Coordinates no place on Earth has are refused by the Citi Bike loader, naming the file, the column and the row
(as an impossible time is), and read as "no place" by the gate on every other path: a latitude of 95 or a
longitude of -740 was placed in a made-up H3 cell, and 1e308 overflowed (review of 2026-11-30)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from polis.mobility.citibike import ZONE, read_trip_file
from polis.mobility.ingest import ingest_trips
from polis.mobility.schema import Places
from polis.mobility.store import MobilityStore
from polis.privacy.gate import cells_at
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.unit.test_mobility_walkthrough_fixes import settings, synthetic_trips

SOURCE = Settings().datasets_dir / "mobility" / "citibike-jersey-city" / "JC-201702-citibike-tripdata.csv"
ROW = (
    "435,2017-02-01 00:06:33,2017-02-01 00:13:49,3214,Essex Light Rail,{slat},{slon},3199,Newport Pkwy,{elat},{elon},"
    "24493,Subscriber,1988,1"
)
GOOD = {"slat": "40.7127742", "slon": "-74.0364857", "elat": "40.7287448", "elon": "-74.0321082"}


def trip_file(tmp_path: Path, **place: str) -> Path:
    """The header and 20 real trips of February 2017, then one trip with these coordinates (data row 21)."""
    lines = SOURCE.read_text().splitlines()[:21]
    path = tmp_path / "JC-201702-citibike-tripdata.csv"
    path.write_text("\n".join([*lines, ROW.format(**{**GOOD, **place})]) + "\n")
    return path


@pytest.mark.parametrize(
    ("place", "column", "shown"),
    [
        ({"slat": "95.0"}, "start station latitude", "95"),
        ({"slat": "-90.5"}, "start station latitude", "-90.5"),
        ({"slat": "1e308"}, "start station latitude", "1e+308"),
        ({"slat": "inf"}, "start station latitude", "inf"),
        ({"slon": "-740.0364857"}, "start station longitude", "-740.0364857"),
        ({"elat": "-95"}, "end station latitude", "-95"),
        ({"elon": "180.001"}, "end station longitude", "180.001"),
    ],
)
def test_the_loader_refuses_a_coordinate_outside_the_globe_naming_file_column_and_row(
    tmp_path: Path, place: dict[str, str], column: str, shown: str
) -> None:
    with pytest.raises(ValueError) as refused:
        read_trip_file(trip_file(tmp_path, **place))
    text = str(refused.value)
    assert text.startswith("JC-201702-citibike-tripdata.csv: "), text
    assert f"column {column} holds {shown!r} at data row 21" in text, text
    assert "-90" in text or "-180" in text, text


@pytest.mark.parametrize("place", [{}, {"slat": "90", "slon": "-180", "elat": "-90", "elon": "180"}, {"slat": ""}])
def test_the_loader_takes_the_globe_up_to_its_edges_and_a_missing_place(tmp_path: Path, place: dict[str, str]) -> None:
    batch = read_trip_file(trip_file(tmp_path, **place))
    assert len(batch) == 21
    if place.get("slat") == "":
        assert np.isnan(batch.start.lat[-1])  # no place: the trip keeps its station, and no cell


def test_the_gate_reads_a_point_outside_the_globe_as_no_place() -> None:
    lat = np.array([40.7127742, 95.0, 1e308, 40.71, np.nan, -np.inf, 90.0])
    lon = np.array([-74.0364857, -74.03, -74.03, -740.03, -74.03, -74.03, 180.0])
    cells, areas = cells_at(lat, lon, (8, 7))
    assert cells.to_pylist()[1:6] == [""] * 5 and areas.to_pylist()[1:6] == [""] * 5
    assert cells.to_pylist()[0] not in ("", cells.to_pylist()[6]) and cells.to_pylist()[6] != ""


def test_a_batch_with_such_points_is_gated_without_made_up_cells_or_places() -> None:
    """A batch from another source than the loader (an in-process caller): the bad points count in no cell and
    make no station row."""
    batch = synthetic_trips(n=50)
    lat, lon = batch.start.lat.copy(), batch.start.lon.copy()
    lat[0], lon[1] = 95.0, -740.0
    hostile = dataclasses.replace(batch, start=Places(batch.start.station.copy(), lat, lon))
    hostile.start.station[0] = hostile.start.station[1] = "hostile"
    store = DuckDBStore(None)
    try:
        ingest_trips(settings(), store, hostile, ZONE)
        mobility = MobilityStore(store)
        assert "hostile" not in {a.area for a in mobility.areas(hostile.dataset, "station")}
        for a in mobility.areas(hostile.dataset, "cell") + mobility.areas(hostile.dataset, "od"):
            assert a.lat is not None and abs(a.lat) < 90, a
        raw = store.connection().execute("SELECT start_cell FROM mobility_trips WHERE start_station = 'hostile'")
        assert {row[0] for row in raw.fetchall()} == {""}
    finally:
        store.close()
