"""The gate itself: person-level trips and pings in, pseudonymous generalised records out.

Applied in memory, before anything is stored: identifiers become daily pseudonyms, the policy drops the
quasi-identifiers and generalises times to the hour and places to H3 cells. Only what `GatedTrips` and
`GatedPings` hold can reach the store (and only for the retention period); released products are built
from these by aggregation, suppression and optional noise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polis.mobility.schema import PingBatch, Places, TripBatch
from polis.privacy.policy import Action, action_for
from polis.privacy.pseudonyms import Pseudonymiser
from polis.privacy.refusal import rule_for_value

_log = logging.getLogger(__name__)

WINDOW_HOURS = 8  # origin-destination windows: 00-08, 08-16, 16-24 local time


@dataclass(frozen=True, slots=True)
class GatedTrips:
    """What is left of trips after the gate: no identifier, no quasi-identifier, no exact time."""

    dataset: str
    pseudonym: pa.DictionaryArray  # (str): daily HMAC pseudonym of the vehicle/person
    start_hour: np.ndarray  # datetime64[h], UTC
    end_hour: np.ndarray  # datetime64[h], UTC
    start_day: np.ndarray  # datetime64[D], local date of the start
    end_day: np.ndarray  # datetime64[D], local date of the end
    start_window: np.ndarray  # int8: 0, 1, 2 = local 00-08, 08-16, 16-24
    start_station: pa.DictionaryArray  # (str)
    end_station: pa.DictionaryArray  # (str)
    start_cell: pa.DictionaryArray  # (str): H3 at the flows resolution
    end_cell: pa.DictionaryArray
    start_area: pa.DictionaryArray  # (str): H3 at the coarser origin-destination resolution
    end_area: pa.DictionaryArray

    def __len__(self) -> int:
        return len(self.start_hour)


@dataclass(frozen=True, slots=True)
class GatedPings:
    dataset: str
    pseudonym: pa.DictionaryArray
    hour: np.ndarray  # datetime64[h], UTC
    day: np.ndarray  # datetime64[D], local
    cell: pa.DictionaryArray  # (str)

    def __len__(self) -> int:
        return len(self.hour)


def local_days_and_hours(hours: np.ndarray, zone: str) -> tuple[np.ndarray, np.ndarray]:
    """Local date and local hour of day of UTC hours (datetime64[h]), through Arrow's time-zone kernels."""
    utc = pa.array(hours.astype("datetime64[s]"), pa.timestamp("s")).cast(pa.timestamp("s", tz="UTC"))
    local = pc.local_timestamp(utc.cast(pa.timestamp("s", tz=zone))).to_numpy(zero_copy_only=False)
    days = local.astype("datetime64[D]")
    of_day = ((local - days).astype("timedelta64[h]").astype(np.int64)).astype(np.int8)
    return days, of_day


def on_the_globe(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Whether each point is a place: finite, latitude within [-90, 90], longitude within [-180, 180]. Any other
    point is no place (a missing one): H3 would put a latitude of 95 in a made-up cell."""
    with np.errstate(invalid="ignore"):  # NaN compares False: a missing coordinate is no place either
        return np.asarray((np.abs(lat) <= 90) & (np.abs(lon) <= 180))


def cells(places_lat: np.ndarray, places_lon: np.ndarray, resolution: int) -> pa.DictionaryArray:
    """H3 cell of each point (see `cells_at`)."""
    return cells_at(places_lat, places_lon, (resolution,))[0]


def cells_at(places_lat: np.ndarray, places_lon: np.ndarray, resolutions: tuple[int, ...]) -> list[pa.DictionaryArray]:
    """H3 cells of each point at each resolution, computed once per distinct point (stations repeat); "" for a
    point that is no place (`on_the_globe`)."""
    if len(places_lat) == 0:
        return [pa.array([], pa.string()).dictionary_encode() for _ in resolutions]
    valid = on_the_globe(places_lat, places_lon)
    # One int64 key per point at 1e-6 degree (~0.1 m): np.unique on integers is fast, on float pairs it is not.
    # Points that are no place are zeroed before the arithmetic, which 1e308 would overflow.
    lat_key = np.round(np.where(valid, places_lat, 0.0) * 1e6).astype(np.int64) + 90_000_000
    lon_key = np.round(np.where(valid, places_lon, 0.0) * 1e6).astype(np.int64) + 180_000_000
    keys = np.where(valid, lat_key * 400_000_000 + lon_key, -1)
    unique, inverse = np.unique(keys, return_inverse=True)
    indices = pa.array(inverse.reshape(-1).astype(np.int32))
    out = []
    for resolution in resolutions:
        labels: list[str] = [""] * len(unique)
        for index, key in enumerate(unique.tolist()):
            if key >= 0:
                lat_part, lon_part = divmod(key, 400_000_000)
                labels[index] = h3.latlng_to_cell(
                    (lat_part - 90_000_000) / 1e6, (lon_part - 180_000_000) / 1e6, resolution
                )
        # Distinct points can share a cell: the dictionary must hold each cell once (counts group by code).
        distinct, code = np.unique(np.array(labels, dtype=object), return_inverse=True)
        remapped = pa.array(code.reshape(-1).astype(np.int32)).take(indices)
        out.append(pa.DictionaryArray.from_arrays(remapped, pa.array(distinct.tolist(), pa.string())))
    return out


def _identifier(batch_ids: dict[str, np.ndarray], n: int) -> pa.Array:
    """The one identifier column to pseudonymise (several are joined: they identify together), as Arrow
    strings; a missing id is a null (the pseudonymiser reads it as "", as the schema spells "none")."""
    names = [name for name in batch_ids if action_for(name) is Action.PSEUDONYMISE]
    unknown = [name for name in batch_ids if action_for(name) is not Action.PSEUDONYMISE]
    if unknown:
        raise ValueError(f"identifier columns {unknown} are not declared as pseudonymised by the policy")
    if not names:
        return pa.array(np.full(n, "", dtype=object), pa.string())
    parts = [_id_text(batch_ids[name]) for name in names]
    if len(parts) == 1:
        return parts[0]  # as it always was: one column's pseudonyms do not change
    # Each part escaped before the join (every backslash doubled, then a backslash before every "|"): ("a|b", "c")
    # and ("a", "b|c") are two people and must not share a pseudonym. A missing part joins as "", never "None".
    escaped = [pc.replace_substring(pc.replace_substring(p, "\\", "\\\\"), "|", "\\|") for p in parts]
    return pc.binary_join_element_wise(*escaped, "|", null_handling="replace", null_replacement="")


def _id_text(values: np.ndarray) -> pa.Array:
    """An id column as Arrow strings, a missing id (None, or NaN from a pandas-style column) as a null: never the
    text "None" or "nan", which would give every id-less record of a day one shared, made-up identifier."""
    column = np.asarray(values, dtype=object)
    try:
        return pa.array(column, from_pandas=True).cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # ids of mixed types (texts and numbers): each one as text
        return pa.array([None if v is None or v != v else str(v) for v in column.tolist()], pa.string())  # NaN != NaN


def gate_trips(
    batch: TripBatch, pseudonymiser: Pseudonymiser, *, resolution: int, od_resolution: int, zone: str
) -> GatedTrips:
    """Trips through the gate. `zone`: the city's time zone, for local days and 8-hour windows."""
    start_hour = batch.start_time.astype("datetime64[h]")
    end_hour = batch.end_time.astype("datetime64[h]")
    start_day, start_of_day = local_days_and_hours(start_hour, zone)
    end_day, _ = local_days_and_hours(end_hour, zone)
    pseudonym = pseudonymiser.pseudonymise(_identifier(batch.identifiers, len(batch)), start_day)
    start_cells = cells_at(batch.start.lat, batch.start.lon, (resolution, od_resolution))
    end_cells = cells_at(batch.end.lat, batch.end.lon, (resolution, od_resolution))
    # Quasi-identifiers are simply never read here: the policy drops them (see policy.TRIP_POLICY).
    return GatedTrips(
        dataset=batch.dataset,
        pseudonym=pseudonym,
        start_hour=start_hour,
        end_hour=end_hour,
        start_day=start_day,
        end_day=end_day,
        start_window=(start_of_day // WINDOW_HOURS).astype(np.int8),
        start_station=_stations(batch.start),
        end_station=_stations(batch.end),
        start_cell=start_cells[0],
        end_cell=end_cells[0],
        start_area=start_cells[1],
        end_area=end_cells[1],
    )


def gate_pings(batch: PingBatch, pseudonymiser: Pseudonymiser, *, resolution: int, zone: str) -> GatedPings:
    hour = batch.time.astype("datetime64[h]")
    day, _ = local_days_and_hours(hour, zone)
    return GatedPings(
        dataset=batch.dataset,
        pseudonym=pseudonymiser.pseudonymise(_id_text(batch.device), day),
        hour=hour,
        day=day,
        cell=cells(batch.lat, batch.lon, resolution),
    )


def _stations(places: Places) -> pa.DictionaryArray:
    """Station ids as the gate keeps them (policy KEEP: docking stations are public infrastructure), with ""
    where the source has none, and "" too where an id is identifying by its value (a MAC address, an e-mail):
    identifiers are refused at the door on every path, so such an id is withheld and the trip keeps only its
    cell. Without a null: the aggregation groups on the dictionary codes."""
    ids = pa.array(np.asarray(places.station, dtype=object), pa.string())
    if ids.null_count:
        ids = pc.fill_null(ids, "")
    encoded = ids.dictionary_encode()
    # The rules run once per distinct id (a city has hundreds of stations), never per record.
    withheld = [station for station in encoded.dictionary.to_pylist() if rule_for_value(station) is not None]
    if not withheld:
        return encoded
    _log.warning(
        "withheld %d station id(s) that a privacy value rule refuses; their trips keep their cells", len(withheld)
    )
    # Re-encoded, not relabelled in the dictionary: each label must appear there once (counts group by code).
    return pc.if_else(pc.is_in(ids, value_set=pa.array(withheld, pa.string())), "", ids).dictionary_encode()


def public_station_names(names: Mapping[str, str]) -> dict[str, str]:
    """Station id -> name, for the products' row labels, without the names (or the ids) that a privacy value
    rule refuses: a station name is free text from the source, and an e-mail address or a phone number in it
    would be stored and released with the counts."""
    return {
        station: name
        for station, name in names.items()
        if rule_for_value(name) is None and rule_for_value(station) is None
    }
