"""Citi Bike Jersey City trip files (`mobility/citibike-jersey-city/JC-YYYYMM-citibike-tripdata.csv`).

The published months differ: early files have headers like "Start Time", later ones "starttime" (some
quoted); Feb-Apr 2017 write times as `2017-02-01 00:06:33`, Nov 2017-Jan 2018 as `11/1/2017 0:04`.
Headers are matched after lower-casing and removing spaces, so both styles read the same. Times are
local wall-clock time in New York: they are placed in UTC with the zone's rules (a repeated hour in
November takes its first occurrence, a skipped hour in March moves forward).

The loader returns person-level `TripBatch`es: they go straight to the privacy gate, never to the store.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from polis.mobility.schema import EARLIEST_TIME, LATEST_TIME, Places, TripBatch, first_time_out_of_range
from polis.privacy.refusal import redacted

DATASET = "citibike-jersey-city"
FOLDER = Path("mobility") / DATASET
ZONE = "America/New_York"
_FORMATS = ("%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S")
_COLUMNS = {
    "starttime": "start_time",
    "stoptime": "end_time",
    "startstationid": "start_station",
    "startstationname": "start_name",
    "startstationlatitude": "start_lat",
    "startstationlongitude": "start_lon",
    "endstationid": "end_station",
    "endstationname": "end_name",
    "endstationlatitude": "end_lat",
    "endstationlongitude": "end_lon",
    "bikeid": "bike_id",
    "usertype": "user_type",
    "birthyear": "birth_year",
    "gender": "gender",
    "tripduration": "trip_duration",
}
_REQUIRED = ("start_time", "end_time", "start_station", "end_station", "start_lat", "start_lon", "end_lat", "end_lon")


def trip_files(datasets_dir: Path) -> list[Path]:
    folder = datasets_dir / FOLDER
    files = sorted(folder.glob("*-citibike-tripdata.csv"))
    if not files:
        raise FileNotFoundError(f"no Citi Bike trip files (*-citibike-tripdata.csv) in {folder}")
    return files


def _utc_seconds(column: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    """A time column in UTC seconds; a ValueError naming the file, the row and the value for a time that is
    unreadable, missing or outside the range every later step can hold (schema.EARLIEST_TIME..LATEST_TIME)."""
    # safe=False: newer Citi Bike files give fractions of a second (00:00:57.4340), which a trip does not need
    timestamp = pa.types.is_timestamp(column.type)
    local = column.cast(pa.timestamp("s"), safe=False) if timestamp else _parse_local(column, path, name)
    utc = pc.assume_timezone(local, ZONE, ambiguous="earliest", nonexistent="latest")
    seconds = utc.cast(pa.timestamp("s")).to_numpy().astype("datetime64[s]")
    bad = first_time_out_of_range(seconds)
    if bad is not None:
        value = column.cast(pa.string())[bad].as_py()
        if value is None:
            raise ValueError(f"{path.name}: column {name} has no time at data row {bad + 1}")
        raise ValueError(
            f"{path.name}: column {name} holds {_shown(value)} at data row {bad + 1}, outside the times a trip may "
            f"have (UTC, from {EARLIEST_TIME.astype(object):%Y-%m-%d} up to {LATEST_TIME.astype(object):%Y-%m-%d})"
        )
    return seconds


def _degrees(column: pa.ChunkedArray, path: Path, name: str, limit: float) -> np.ndarray:
    """A coordinate column in degrees; a ValueError naming the file, the row and the value for one outside
    [-limit, limit] (infinite ones included): no place has it, and H3 would still give it a cell. A missing
    value stays NaN, a trip without a place (its station is kept)."""
    degrees = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):  # NaN compares False
        outside = np.flatnonzero(np.abs(degrees) > limit)
    if len(outside):
        row = int(outside[0])
        raise ValueError(
            f"{path.name}: column {name} holds {_shown(str(column.cast(pa.string())[row].as_py()))} at data row "
            f"{row + 1}, outside the {name.split()[-1]}s a place may have (-{limit:g} to {limit:g} degrees)"
        )
    return degrees


def _parse_local(column: pa.ChunkedArray, path: Path, name: str) -> pa.ChunkedArray:
    """Local wall-clock times from text, in the first known format that reads every value."""
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    for fmt in _FORMATS:
        try:
            parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=False)
        except pa.ArrowInvalid:
            continue
        row = _first_rolled_over(text, parsed, fmt)
        if row is not None:
            raise ValueError(
                f"{path.name}: column {name} holds {_shown(text[row].as_py())} at data row {row + 1}, a day or "
                "time the calendar does not have"
            )
        return parsed
    row, value = _first_unreadable(text)
    raise ValueError(f"{path.name}: column {name} holds {_shown(value)} at data row {row + 1}, in no known time format")


def _first_rolled_over(text: pa.ChunkedArray, parsed: pa.ChunkedArray, fmt: str) -> int | None:
    """Index of the first time that `fmt` read on a day or a second other than the one written, None when none.

    Arrow's strptime (the C library's, underneath) checks each field against its own range only and counts on
    from the month's first day: `2/30/2020` reads as March 1, `2/29/2019` as March 1, `0:00:60` as the next
    minute. Only the times a rolled-over field can land on are read again, by a match-only regex on their text
    (no captures: RE2's fast path): about one in thirty for the day (`_may_have_rolled_into`), one in thirty
    for the second (0 or 1, from 60 or 61 written). The rest is integer arithmetic on the parsed column."""
    seconds = pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy()  # a missing time: the range check reports it
    if len(seconds) == 0:
        return None
    fields = re.findall(r"%(.)", fmt)
    checks = [(_may_have_rolled_into(seconds // 86_400), _written(fields, "d", r"(?:29|3\d)"))]
    if "S" in fields:
        checks.append((seconds % 60 <= 1, _written(fields, "S", r"6\d")))
    first: int | None = None
    for suspect, pattern in checks:
        # A filter by mask, chunk by chunk: a take would first concatenate the whole text column.
        hit = pc.index(pc.match_substring_regex(text.filter(pa.array(suspect)), pattern), True).as_py()
        if hit >= 0:
            row = int(np.flatnonzero(suspect)[hit])
            first = row if first is None else min(first, row)
    return first


def _may_have_rolled_into(days: np.ndarray) -> np.ndarray:
    """Whether each day (counted from 1970-01-01) is one that a day past its month's end reads as: the 1st of a
    month (from the 31st of a 30-day month, or February 29th or 30th) or March 2nd or 3rd (February 30th or
    31st). A table over the span of the file's days, then one lookup per row: no calendar arithmetic per row."""
    start = int(days.min())
    calendar = np.arange(start, int(days.max()) + 1).astype("datetime64[D]")
    months = calendar.astype("datetime64[M]")
    day_of_month = (calendar - months.astype("datetime64[D]")).astype(np.int64) + 1
    march = months.astype(np.int64) % 12 == 2
    table = (day_of_month == 1) | (march & (day_of_month <= 3))
    return np.asarray(table[days - start])


def _written(fields: list[str], field: str, value: str) -> str:
    """A regex matching text whose `field` (a strptime letter) is written as `value`. Every known format puts a
    non-digit between its fields, so field k of the format is the text's k-th run of digits."""
    return r"^\D*" + r"\d+\D+" * fields.index(field) + value + r"(?:\D|$)"


def _first_unreadable(text: pa.ChunkedArray) -> tuple[int, str]:
    """(index, value) of the first time the file's own format cannot read: the format reading the most values
    is taken for the file's, so the error names the value that broke it (not merely the file's first time)."""
    best: tuple[int, pa.ChunkedArray] | None = None
    for fmt in _FORMATS:
        parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True)
        failed = pc.and_(pc.is_null(parsed), pc.is_valid(text))
        count = pc.sum(failed).as_py() or 0
        if best is None or count < best[0]:
            best = (count, failed)
    assert best is not None  # _FORMATS is not empty
    index = pc.index(best[1], True).as_py()
    return index, text[index].as_py()


def _shown(value: str) -> str:
    """A value quoted in an error, unless a privacy rule refuses it (a shifted column can put anything here)."""
    shown = redacted(value)
    return repr(value) if shown == value else shown


def read_trip_file(path: Path) -> TripBatch:
    """One month of trips, either header style, either time format."""
    table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(null_values=["NULL", "", "\\N"]))
    renamed = {}
    for name in table.column_names:
        key = name.lower().replace(" ", "").replace("_", "")
        if key in _COLUMNS:
            renamed[_COLUMNS[key]] = table.column(name)
    missing = [c for c in _REQUIRED if c not in renamed]
    if missing:
        raise ValueError(f"{path.name}: missing columns {missing} (header: {table.column_names})")

    def text(name: str) -> np.ndarray:
        return np.asarray(renamed[name].cast(pa.string()).to_pylist(), dtype=object)

    def id_text(name: str) -> np.ndarray:
        # An empty or NULL id reads as a null: "" is how the schema spells "none" (schema.Places), and a
        # None would reach the gate and the aggregation as a null dictionary index.
        return np.asarray(pc.fill_null(renamed[name].cast(pa.string()), "").to_pylist(), dtype=object)

    def degrees(side: str, axis: str, limit: float) -> np.ndarray:
        return _degrees(renamed[f"{side}_{axis[:3]}"], path, f"{side} station {axis}", limit)

    start_station, end_station = id_text("start_station"), id_text("end_station")
    names: dict[str, str] = {}
    for side in ("start", "end"):
        if f"{side}_name" in renamed:
            ids = renamed[f"{side}_station"].cast(pa.string())
            pairs = (
                pa.table({"id": ids, "name": renamed[f"{side}_name"].cast(pa.string())})
                .group_by("id")
                .aggregate([("name", "max")])
            )
            names.update(zip(pairs.column("id").to_pylist(), pairs.column("name_max").to_pylist(), strict=True))
    identifiers = {"bike_id": id_text("bike_id")} if "bike_id" in renamed else {}
    quasi: dict[str, np.ndarray] = {
        name: text(name) for name in ("birth_year", "gender", "user_type", "trip_duration") if name in renamed
    }
    return TripBatch(
        dataset=DATASET,
        start_time=_utc_seconds(renamed["start_time"], path, "start time"),
        end_time=_utc_seconds(renamed["end_time"], path, "stop time"),
        start=Places(start_station, degrees("start", "latitude", 90), degrees("start", "longitude", 180)),
        end=Places(end_station, degrees("end", "latitude", 90), degrees("end", "longitude", 180)),
        identifiers=identifiers,
        quasi_identifiers=quasi,
        station_names={k: v for k, v in names.items() if k is not None and v is not None},
    )


def load_trips(datasets_dir: Path) -> TripBatch:
    """Every published month, in one batch (trips crossing midnight at a month's end stay whole)."""
    return concat([read_trip_file(path) for path in trip_files(datasets_dir)])


def concat(batches: list[TripBatch]) -> TripBatch:
    first = batches[0]

    def join(get: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(get)

    names: dict[str, str] = {}
    for b in batches:
        names.update(b.station_names)
    keys_ids = set.intersection(*(set(b.identifiers) for b in batches))
    keys_quasi = set.intersection(*(set(b.quasi_identifiers) for b in batches))
    return TripBatch(
        dataset=first.dataset,
        start_time=join([b.start_time for b in batches]),
        end_time=join([b.end_time for b in batches]),
        start=Places(*(join([getattr(b.start, f) for b in batches]) for f in ("station", "lat", "lon"))),
        end=Places(*(join([getattr(b.end, f) for b in batches]) for f in ("station", "lat", "lon"))),
        identifiers={k: join([b.identifiers[k] for b in batches]) for k in sorted(keys_ids)},
        quasi_identifiers={k: join([b.quasi_identifiers[k] for b in batches]) for k in sorted(keys_quasi)},
        station_names=names,
    )
