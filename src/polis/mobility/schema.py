"""The generic person-level mobility schema: trips (start and end, time and place) and pings (a device
seen at a time and place), columnar. These shapes exist only in memory, on the way to the privacy gate:
nothing in them is ever stored as is."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The times a source's records may carry, checked where the source is parsed (`first_time_out_of_range`):
# every later step works inside this range (local days, the daily pseudonym keys, Python dates, DuckDB
# timestamps, the retention arithmetic). A time outside it is a broken file, not mobility data: year 1 broke
# the daily keys, year 9999 (year 10000 in UTC) the store, neither with an error naming the file.
EARLIEST_TIME = np.datetime64("1900-01-01T00:00:00", "s")
LATEST_TIME = np.datetime64("2200-01-01T00:00:00", "s")  # exclusive


def first_time_out_of_range(times: np.ndarray) -> int | None:
    """Index of the first time (datetime64[s], UTC) that is missing (NaT) or outside [EARLIEST_TIME,
    LATEST_TIME); None when all are within. Vectorised: one pass of two comparisons."""
    inside = (times >= EARLIEST_TIME) & (times < LATEST_TIME)  # NaT compares False: missing counts as outside
    if inside.all():
        return None
    return int(np.argmin(inside))


@dataclass(frozen=True, slots=True)
class Places:
    """Where each record starts or ends: a station (or stop, or zone) id where the source has one, and
    coordinates (WGS84 degrees)."""

    station: np.ndarray  # object (str); "" where the source has no station
    lat: np.ndarray  # float64
    lon: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.lat)


@dataclass(frozen=True, slots=True)
class TripBatch:
    """Trips as a source publishes them, person-level."""

    dataset: str
    start_time: np.ndarray  # datetime64[s], UTC
    end_time: np.ndarray  # datetime64[s], UTC
    start: Places
    end: Places
    identifiers: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. bike_id: object (str)
    quasi_identifiers: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. birth_year, gender
    station_names: dict[str, str] = field(default_factory=dict)  # station id -> public name

    def __len__(self) -> int:
        return len(self.start_time)

    def __post_init__(self) -> None:
        n = len(self.start_time)
        sizes = {len(self.end_time), len(self.start), len(self.end)}
        sizes |= {len(v) for v in self.identifiers.values()} | {len(v) for v in self.quasi_identifiers.values()}
        if sizes - {n}:
            raise ValueError(f"{self.dataset}: trip columns of different lengths {sorted(sizes | {n})}")


@dataclass(frozen=True, slots=True)
class PingBatch:
    """Device pings (a phone, a tag, a card tap) as a source publishes them, person-level."""

    dataset: str
    time: np.ndarray  # datetime64[s], UTC
    lat: np.ndarray  # float64
    lon: np.ndarray  # float64
    device: np.ndarray  # object (str): the device/card identifier
    quasi_identifiers: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)
