"""Person-level trip records are read strictly and identified correctly on their way through the gate.

- citibike.read_trip_file: a time the calendar does not have (`2/30/2020`, which Arrow's strptime reads as
  March 1) is refused like any other bad time, naming the file, the column, the data row and the value.
- gate._identifier: several identifier columns identify together; the pseudonym is built from all of them,
  a missing one never becomes the text "None", and ids holding the separator cannot collide.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from polis.mobility.citibike import read_trip_file
from polis.mobility.schema import PingBatch, Places, TripBatch
from polis.privacy.gate import gate_pings, gate_trips
from polis.privacy.pseudonyms import Pseudonymiser

_HEADER = (
    "tripduration,starttime,stoptime,start station id,start station name,start station latitude,"
    "start station longitude,end station id,end station name,end station latitude,end station longitude,"
    "bikeid,usertype,birth year,gender\n"
)
FILE = "JC-201711-citibike-tripdata.csv"


def _trip(start: str, end: str) -> str:
    return (
        f'600,{start},{end},3186,"Grove St PATH",40.71958612,-74.04311746,3199,"Newport PATH",'
        "40.7287448,-74.0321082,24493,Subscriber,1988,1\n"
    )


def _file(tmp_path: Path, *trips: tuple[str, str]) -> Path:
    path = tmp_path / FILE
    path.write_text(_HEADER + "".join(_trip(start, end) for start, end in trips))
    return path


# A good trip in each time format a file may use (a file keeps to one).
_GOOD = {
    "m/d/Y H:M": ("11/1/2017 0:04", "11/1/2017 0:14"),
    "m/d/Y H:M:S": ("11/1/2017 0:04:07", "11/1/2017 0:14:59"),
    "Y-m-d H:M:S": ("2017-02-01 00:06:33", "2017-02-01 00:16:33"),
}


@pytest.mark.parametrize(
    ("start", "end", "column", "value"),
    [
        ("2/30/2020 0:04", "3/1/2020 0:14", "start time", "2/30/2020 0:04"),
        ("2/29/2019 8:00", "2/28/2019 8:10", "start time", "2/29/2019 8:00"),
        ("2/31/2019 8:00", "2/28/2019 8:10", "start time", "2/31/2019 8:00"),
        ("4/30/2018 23:55", "4/31/2018 0:05", "stop time", "4/31/2018 0:05"),
        ("11/30/2017 12:00", "11/31/2017 12:10", "stop time", "11/31/2017 12:10"),
        ("1/15/2018 12:00:60", "1/15/2018 12:10:00", "start time", "1/15/2018 12:00:60"),
        ("1/2/2018 23:59:60", "1/3/2018 0:10:00", "start time", "1/2/2018 23:59:60"),
        ("2017-02-30 08:06:33", "2017-02-28 08:16:33", "start time", "2017-02-30 08:06:33"),
    ],
    ids=[
        "feb-30",
        "feb-29-of-2019",
        "feb-31-of-2019",
        "apr-31-stop",
        "nov-31-stop",
        "second-60",
        "second-60-at-midnight",
        "iso-feb-30",
    ],
)
def test_a_day_or_time_the_calendar_does_not_have_is_refused_naming_file_column_row_and_value(
    tmp_path: Path, start: str, end: str, column: str, value: str
) -> None:
    good = _GOOD["Y-m-d H:M:S" if "-" in start else "m/d/Y H:M:S" if start.count(":") == 2 else "m/d/Y H:M"]
    path = _file(tmp_path, good, good, (start, end), good)
    with pytest.raises(ValueError, match="calendar does not have") as refused:
        read_trip_file(path)
    message = str(refused.value)
    assert FILE in message and f"column {column}" in message and "data row 3" in message, message
    assert repr(value) in message, message


def test_the_days_at_the_ends_of_months_that_exist_are_read(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        ("2/29/2020 23:59", "3/1/2020 0:09"),  # a leap day
        ("1/31/2018 23:59", "2/1/2018 0:09"),
        ("12/31/2017 23:59", "1/1/2018 0:01"),
        ("11/30/2017 0:00", "11/30/2017 0:10"),
        ("1/3/2018 0:00", "1/3/2018 0:10"),
    )
    batch = read_trip_file(path)
    # New York is UTC-5 in winter: the local times, five hours on.
    assert [str(t) for t in batch.start_time] == [
        "2020-03-01T04:59:00", "2018-02-01T04:59:00", "2018-01-01T04:59:00", "2017-11-30T05:00:00",
        "2018-01-03T05:00:00",
    ]  # fmt: skip


def test_seconds_that_exist_at_the_turn_of_a_minute_are_read(tmp_path: Path) -> None:
    path = _file(tmp_path, ("1/31/2018 23:59:59", "2/1/2018 0:00:00"), ("1/2/2018 0:00:01", "1/2/2018 0:10:00"))
    assert [str(t) for t in read_trip_file(path).end_time] == ["2018-02-01T05:00:00", "2018-01-02T05:10:00"]


# -- identifiers: several id columns, missing ids -----------------------------------------------------------

NEWPORT = (40.7287448, -74.0321082)


def _trips(identifiers: dict[str, np.ndarray]) -> TripBatch:
    n = len(next(iter(identifiers.values())))
    times = np.array(["2017-02-01T10:00:00"] * n, dtype="datetime64[s]")
    here = Places(np.array(["3186"] * n, dtype=object), np.full(n, NEWPORT[0]), np.full(n, NEWPORT[1]))
    return TripBatch("t", times, times, here, here, identifiers=identifiers)


def _pseudonyms(identifiers: dict[str, np.ndarray]) -> list[str]:
    gated = gate_trips(_trips(identifiers), Pseudonymiser(b"k" * 32), resolution=8, od_resolution=7, zone="UTC")
    return list(gated.pseudonym.cast("string").to_pylist())


def test_a_missing_id_among_several_is_not_the_text_none() -> None:
    """A record without a card id was pseudonymised as the id "24493|None", the same as a card really called
    "None": two people, one pseudonym."""
    got = _pseudonyms(
        {
            "bike_id": np.array(["24493", "24493", "24493"], dtype=object),
            "card_id": np.array([None, "None", float("nan")], dtype=object),
        }
    )
    assert got[0] != got[1]  # missing is not "None"
    assert got[0] == got[2]  # NaN (a pandas-style missing value) is missing too, not "nan"


def test_the_identifier_is_built_from_every_id_column() -> None:
    got = _pseudonyms(
        {
            "bike_id": np.array(["24493", "24493", "24493", "26232"], dtype=object),
            "card_id": np.array(["c1", "c1", "c2", "c1"], dtype=object),
        }
    )
    assert got[0] == got[1] and len({got[0], got[2], got[3]}) == 3


def test_ids_holding_the_separator_do_not_collide() -> None:
    got = _pseudonyms(
        {
            "bike_id": np.array(["a|b", "a", "a\\", "a"], dtype=object),
            "card_id": np.array(["c", "b|c", "|c", "\\|c"], dtype=object),
        }
    )
    assert len(set(got)) == 4, got


def test_one_id_column_keeps_its_pseudonyms() -> None:
    """Pseudonyms of a single id column are the plain HMAC of the id (unchanged by the multi-column fix)."""
    pseudonymiser = Pseudonymiser(b"k" * 32)
    gated = gate_trips(
        _trips({"bike_id": np.array(["24493", None], dtype=object)}),
        pseudonymiser,
        resolution=8,
        od_resolution=7,
        zone="UTC",
    )
    day = date(2017, 2, 1)
    assert gated.pseudonym.cast("string").to_pylist() == [
        pseudonymiser.pseudonym("24493", day),
        pseudonymiser.pseudonym("", day),
    ]


def test_a_ping_without_a_device_id_is_not_the_text_none() -> None:
    pseudonymiser = Pseudonymiser(b"k" * 32)
    pings = PingBatch(
        dataset="p",
        time=np.array(["2024-05-01T08:15:00"] * 3, dtype="datetime64[s]"),
        lat=np.full(3, NEWPORT[0]),
        lon=np.full(3, NEWPORT[1]),
        device=np.array([None, "None", 7], dtype=object),
    )
    got = gate_pings(pings, pseudonymiser, resolution=8, zone="UTC").pseudonym.cast("string").to_pylist()
    day = date(2024, 5, 1)
    assert got == [
        pseudonymiser.pseudonym("", day),
        pseudonymiser.pseudonym("None", day),
        pseudonymiser.pseudonym("7", day),
    ]
