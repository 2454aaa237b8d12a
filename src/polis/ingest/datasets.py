"""The public datasets behind `polis ingest DATASET`: each loader turns one published file set into
entities in the internal shape (expanded IRIs, attributes as lists of instances) plus numeric history
in columns, and `ingest` writes a load into a store idempotently.

Attribute and type IRIs are what the hub's own context resolution makes of the terms with the Smart Data
Models Transportation @context shipped with the data (`Vocab`): that context's terms, the NGSI-LD core
context's (part of every context, and protected: `title` is Dublin Core's title), else the default
vocabulary; exactly as a client posting the same term with that context would see it expanded, so every
ingested attribute reads and queries by its short name with that context.

Damaged files: every loader refuses a file it cannot read as published with a ValueError that names the file
and, for text, the line (`path:line: why`), never a bare parser message; CSV files are UTF-8, a byte-order
mark allowed.

Time: the files carry local wall-clock times (or none at all); every loader documents how it places its
readings in UTC, and every history row comes out entity-major (all of one sensor's rows, oldest first,
then the next sensor's) because the store reads per-sensor series fastest in that order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from polis.domain.entity import LOCATION, Entity, HistoryInstance, Instance, attribute_names
from polis.ingest.messages import TRANSPORTATION_CONTEXT_URL
from polis.ngsi_ld.context import ContextCache, TermMap
from polis.store.base import HistoryColumns, Store, chunks

DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
TRANSPORTATION_CONTEXT = Path("smart-data-models/contexts/dataModel.Transportation-context.jsonld")

ENTITY_CHUNK = 500
HISTORY_CHUNK = 200_000


# ---------------------------------------------------------------------------------------------- public shapes


@dataclass(slots=True)
class DatasetLoad:
    name: str
    entities: list[Entity]  # current state: the last observation of each entity, with observedAt
    history: HistoryColumns  # every numeric observation, entity-major, missing readings already dropped
    events: list[HistoryInstance]  # non-numeric history; each event's entity must be among `entities`
    description: str  # one line for the summary


class DatasetInfo(NamedTuple):
    description: str
    loader: Callable[[Path, str], DatasetLoad]  # (datasets_dir, now) -> load


@dataclass(frozen=True, slots=True)
class IngestSummary:
    entities_written: int
    new_entities: int
    observations_added: int
    observations_seen: int
    seconds: float
    events_added: int = 0


# ---------------------------------------------------------------------------------------------- vocabulary


class Vocab:
    """Term -> expanded IRI, as the hub expands it under the Smart Data Models Transportation @context (with
    the core context beneath it, as for any request). Reading that context's file alone once gave `title` the
    default vocabulary's IRI, which no client can name: the core context's `title` always wins."""

    def __init__(self, terms: TermMap) -> None:
        self._terms = terms

    @classmethod
    def load(cls, datasets_dir: Path) -> Vocab:
        return cls(_transportation_terms(Path(datasets_dir)))

    def __call__(self, term: str) -> str:
        return self._terms.expand(term)


@lru_cache(maxsize=4)
def _transportation_terms(datasets_dir: Path) -> TermMap:
    _require(datasets_dir / TRANSPORTATION_CONTEXT)
    # Only shipped contexts are read (the core and Transportation files): the cache directory, for contexts
    # fetched or registered, is never touched, so it need not exist.
    return ContextCache(datasets_dir, datasets_dir / "no-context-cache").resolve(TRANSPORTATION_CONTEXT_URL)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset file not found: {path} (POLIS_DATASETS_DIR must point at the folder holding the public data)"
        )
    return path


# ---------------------------------------------------------------------------------------------- time

# Where each sensor dataset was recorded: its readings' local time (the live replay keeps it week after week).
ZONES = {
    "los-loop": ZoneInfo("America/Los_Angeles"),
    "sz-taxi": ZoneInfo("Asia/Shanghai"),
    "melbourne-pedestrians": ZoneInfo("Australia/Melbourne"),
}


def _iso(instant: np.datetime64 | datetime) -> str:
    if isinstance(instant, datetime):
        instant = np.datetime64(instant.astimezone(UTC).replace(tzinfo=None), "us")
    return f"{np.datetime_as_string(instant, unit='s')}Z"


def _elapsed_grid(start_local: datetime, step: timedelta, count: int) -> np.ndarray:
    """Instants (datetime64[us], UTC) of `count` readings taken every `step` of elapsed time from a local start."""
    start = np.datetime64(start_local.astimezone(UTC).replace(tzinfo=None), "us")
    return start + np.arange(count) * np.timedelta64(step)


def _wall_clock_to_utc(stamp: str, zone: ZoneInfo) -> tuple[datetime, bool]:
    """The UTC instant of a local wall-clock time, and whether that wall-clock time existed.

    An ambiguous time (the repeated hour when clocks go back) takes fold=0, its first occurrence, in
    daylight time. A nonexistent one (the skipped hour) maps as zoneinfo maps it, with the offset in
    force before the jump, and is reported so the caller can decide."""
    local = datetime.fromisoformat(stamp)
    instant = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    existed = instant.astimezone(zone).replace(tzinfo=None) == local
    return instant, existed


def _hourly_rows_to_utc(stamps: Sequence[str], zone: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """UTC instants of wall-clock rows, and which rows to keep (in the order to keep them).

    Rows whose wall-clock time did not exist are dropped, as is any row landing on an instant an
    earlier row already took, so the kept instants are strictly increasing and never repeat."""
    instants = np.empty(len(stamps), dtype="datetime64[us]")
    keep: list[int] = []
    taken: set[datetime] = set()
    for row, stamp in enumerate(stamps):
        instant, existed = _wall_clock_to_utc(stamp, zone)
        instants[row] = np.datetime64(instant.replace(tzinfo=None), "us")
        if existed and instant not in taken:
            taken.add(instant)
            keep.append(row)
    kept = np.array(keep, dtype=np.int64)
    return instants, kept[np.argsort(instants[kept], kind="stable")]


# ---------------------------------------------------------------------------------------------- building blocks


class Sensor(NamedTuple):
    entity_id: str
    name: str
    lon_lat: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class SensorSeries:
    """One dataset of fixed sensors measuring one quantity on a shared time axis."""

    name: str
    type_term: str
    attribute_term: str
    unit_code: str
    provider: str
    sensors: list[Sensor]
    times: np.ndarray  # datetime64[us] UTC, one per row of `values`
    values: np.ndarray  # float64 (len(times), len(sensors)), NaN = missing
    integer: bool = False  # counts: current value as int


def _prop(value: Any, now: str, **members: Any) -> Instance:
    return {"type": "Property", "value": value, **members, "createdAt": now, "modifiedAt": now}


def _date_time(iso: str) -> dict[str, str]:
    return {"@type": "DateTime", "@value": iso}


def _point(lon_lat: tuple[float, float], now: str) -> Instance:
    lon, lat = lon_lat
    value = {"type": "Point", "coordinates": [lon, lat]}
    return {"type": "GeoProperty", "value": value, "createdAt": now, "modifiedAt": now}


def _history_columns(series: SensorSeries, attribute: str) -> HistoryColumns:
    n_times, n_sensors = series.values.shape
    ids = np.array([s.entity_id for s in series.sensors], dtype=object)
    entity_id = np.repeat(ids, n_times)
    observed_at = np.tile(series.times, n_sensors)
    value = np.ascontiguousarray(series.values.T).ravel()  # entity-major
    present = ~np.isnan(value)
    return HistoryColumns(
        entity_id=entity_id[present],
        attribute=np.full(int(present.sum()), attribute, dtype=object),
        observed_at=observed_at[present],
        value=value[present],
        unit_code=series.unit_code,
    )


def _last_rows(values: np.ndarray) -> list[int | None]:
    """Per column, the row of its last non-missing value."""
    present = ~np.isnan(values)
    last = values.shape[0] - 1 - np.argmax(present[::-1], axis=0)
    return [int(row) if any_ else None for row, any_ in zip(last, present.any(axis=0), strict=True)]


def _sensor_load(series: SensorSeries, vocab: Vocab, now: str) -> DatasetLoad:
    attribute = vocab(series.attribute_term)
    entities = []
    for column, (sensor, row) in enumerate(zip(series.sensors, _last_rows(series.values), strict=True)):
        entity: Entity = {"id": sensor.entity_id, "type": [vocab(series.type_term)]}
        entity.update(createdAt=now, modifiedAt=now)
        entity[vocab("name")] = [_prop(sensor.name, now)]
        entity[vocab("dataProvider")] = [_prop(series.provider, now)]
        if sensor.lon_lat is not None:
            entity[LOCATION] = [_point(sensor.lon_lat, now)]
        if row is not None:
            observed = _iso(series.times[row])
            reading = float(series.values[row, column])
            value = int(reading) if series.integer else reading
            entity[attribute] = [_prop(value, now, observedAt=observed, unitCode=series.unit_code)]
            entity[vocab("dateObserved")] = [_prop(_date_time(observed), now)]
        entities.append(entity)
    history = _history_columns(series, attribute)
    first, last = (_iso(series.times.min())[:10], _iso(series.times.max())[:10]) if len(series.times) else ("", "")
    description = (
        f"{len(entities)} {series.type_term} ({series.provider}), {len(history):,} {series.attribute_term} "
        f"readings [{series.unit_code}], {first} to {last} (UTC)"
    )
    return DatasetLoad(series.name, entities, history, [], description)


def _empty_history() -> HistoryColumns:
    empty = np.empty(0, dtype=object)
    return HistoryColumns(empty, empty.copy(), np.empty(0, dtype="datetime64[us]"), np.empty(0, dtype=np.float64))


Line = tuple[int, list[str]]  # a CSV record and the line it ends on (1-based)


def _text(path: Path) -> str:
    """A whole UTF-8 text file, a byte-order mark dropped (spreadsheet exports write one). Bytes that are not
    UTF-8 name their line: the decoder's own position counts from the start of a buffer, not of the file."""
    data = _require(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save it as UTF-8") from None


def _csv_lines(path: Path) -> list[Line]:
    """Every record of a CSV file with its line number; blank lines are skipped."""
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    lines: list[Line] = []
    try:
        for row in reader:
            if row:
                lines.append((reader.line_num, row))
    except csv.Error as error:  # e.g. a field over csv's size limit: the parser's message names no file
        raise ValueError(f"{path}:{reader.line_num}: {error}") from None
    return lines


def _header(path: Path, lines: list[Line], required: Sequence[str] = ()) -> dict[str, int]:
    """Column name -> index from a file's first line; a file with no lines or lacking a column is refused."""
    if not lines:
        raise ValueError(f"{path}: the file is empty (expected a header line)")
    line, names = lines[0]
    columns = {name.strip(): index for index, name in enumerate(names)}
    missing = [name for name in required if name not in columns]
    if missing:
        raise ValueError(f"{path}:{line}: the header lacks column(s) {', '.join(missing)} (it has {', '.join(names)})")
    return columns


def _same_width(path: Path, lines: list[Line], width: int) -> None:
    ragged = [(line, len(row)) for line, row in lines if len(row) != width]
    if ragged:
        first, fields = ragged[0]
        raise ValueError(
            f"{path}: lines {[line for line, _ in ragged[:5]]} do not have {width} fields (line {first} has {fields})"
        )


def _number_table(path: Path, names: list[str], lines: list[Line], first: int, empty_is_missing: bool) -> np.ndarray:
    """Columns `first:` of the data lines (all `len(names)` wide) as float64, NaN where a cell is empty if
    `empty_is_missing`. A cell that is no number is refused naming its line and column."""
    cells = np.array([row[first:] for _, row in lines], dtype=object).reshape(len(lines), len(names) - first)
    if empty_is_missing:
        cells[cells == ""] = "nan"
    try:
        return cells.astype(np.float64)
    except ValueError:  # find the first culprit: the conversion's message names neither line nor column
        for row_index, (line, row) in enumerate(lines):
            for column, cell in enumerate(cells[row_index]):
                try:
                    float(cell)
                except ValueError:
                    name, text = names[first + column], row[first + column]
                    raise ValueError(f"{path}:{line}: column {name!r} holds {text!r}, not a number") from None
        raise


def _lon_lat(lon: str, lat: str) -> tuple[float, float]:
    """A (longitude, latitude) pair in WGS 84 degrees from text; anything off the globe is refused, since
    a point there would break every geo-query that reaches it."""
    try:
        x, y = float(lon), float(lat)
    except ValueError:
        raise ValueError(f"latitude {lat!r} / longitude {lon!r} are not numbers") from None
    if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):  # NaN fails too
        raise ValueError(f"latitude {lat} / longitude {lon} are off the globe (latitude ±90, longitude ±180)")
    return x, y


def _local_time(path: Path, line: int, stamp: str) -> None:
    try:
        datetime.fromisoformat(stamp)
    except ValueError:
        raise ValueError(f"{path}:{line}: {stamp!r} is not a date and time (YYYY-MM-DD HH:MM[:SS])") from None


def _npz_data(path: Path) -> np.ndarray:
    """The `data` array of a NumPy .npz archive as float64; a file that is not one is refused naming it."""
    if not zipfile.is_zipfile(_require(path)):  # np.load would take it for a pickle and say that instead
        raise ValueError(f"{path}: not a NumPy .npz archive (not a zip file: truncated or another format?)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            data = np.asarray(archive["data"], dtype=np.float64) if "data" in names else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # e.g. an object array
        raise ValueError(f"{path}: not a readable NumPy .npz archive: {error}") from None
    if data is None:
        raise ValueError(f"{path}: the .npz archive holds no array named 'data' (it holds: {', '.join(names) or '-'})")
    return data


# ---------------------------------------------------------------------------------------------- the datasets


def load_los_loop(datasets_dir: Path, now: str) -> DatasetLoad:
    """Los-loop (METR-LA as published with T-GCN): 207 highway loop detectors, average speed in mph.

    `los_speed.csv` has no timestamps. Its 2016 rows are 5-minute steps over 1–7 March 2012, and METR-LA
    was recorded in Los Angeles, so row 0 is taken as 2012-03-01T00:00 America/Los_Angeles (08:00Z) and
    row k as k × 5 minutes of elapsed time later (no DST change falls in that week). Speeds go out as
    `averageVehicleSpeed` with unitCode "HM" (UN/CEFACT mile per hour); locations come from
    `sensor_locations.csv` as GeoJSON Points in (longitude, latitude) order."""
    folder = datasets_dir / "traffic" / "los-loop"
    speed_path = _require(folder / "los_speed.csv")
    located = _los_locations(folder / "sensor_locations.csv")
    vocab = Vocab.load(datasets_dir)
    lines = _csv_lines(speed_path)
    _header(speed_path, lines)
    sensor_ids = [s.strip() for s in lines[0][1]]
    unlocated = [s for s in sensor_ids if s not in located]
    if unlocated:
        raise ValueError(f"{folder / 'sensor_locations.csv'} lacks sensors {unlocated[:5]} named in {speed_path}")
    body = lines[1:]
    if not body:
        raise ValueError(f"{speed_path}: no readings after the header line")
    _same_width(speed_path, body, len(sensor_ids))
    speeds = _number_table(speed_path, sensor_ids, body, 0, empty_is_missing=False)
    start = datetime(2012, 3, 1, tzinfo=ZONES["los-loop"])
    series = SensorSeries(
        name="los-loop",
        type_term="TrafficFlowObserved",
        attribute_term="averageVehicleSpeed",
        unit_code="HM",
        provider="METR-LA (Li et al., ICLR 2018) via T-GCN (Zhao et al., IEEE T-ITS 2019)",
        sensors=[
            Sensor(f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}", f"METR-LA loop detector {s}", located[s])
            for s in sensor_ids
        ],
        times=_elapsed_grid(start, timedelta(minutes=5), speeds.shape[0]),
        values=speeds,
    )
    return _sensor_load(series, vocab, now)


def _los_locations(path: Path) -> dict[str, tuple[float, float]]:
    """sensor id -> (longitude, latitude), from the columns named sensor_id, latitude and longitude."""
    lines = _csv_lines(path)
    columns = _header(path, lines, ("sensor_id", "latitude", "longitude"))
    _same_width(path, lines[1:], len(lines[0][1]))
    located = {}
    for line, row in lines[1:]:
        try:
            located[row[columns["sensor_id"]].strip()] = _lon_lat(row[columns["longitude"]], row[columns["latitude"]])
        except ValueError as error:
            raise ValueError(f"{path}:{line}: {error}") from None
    return located


def load_sz_taxi(datasets_dir: Path, now: str) -> DatasetLoad:
    """SZ-taxi (T-GCN): taxi-derived average speed in km/h ("KMH") on 156 roads of Luohu, Shenzhen.

    Rows are 15-minute steps from 2015-01-01T00:00 Asia/Shanghai (UTC+8, no DST). About a quarter of
    the entries are 0: a speed derived from taxi GPS is 0 when no taxi crossed the road in that step,
    which is an absence of data, not a traffic jam, so 0 is treated as missing and not stored. No road
    coordinates are published, so these entities have no location."""
    path = _require(datasets_dir / "traffic" / "sz-taxi" / "SZ_taxi.npz")
    data = _npz_data(path)
    # As published (steps, roads, 1); (steps, roads) is the same table. Anything else is not that table, and
    # reshaping it anyway once turned a flat array into one "road" with no readings, ingested without a word.
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 1)) or min(data.shape[:2]) == 0:
        raise ValueError(f"{path}: 'data' has shape {data.shape}, expected (time steps, roads, 1) with both above 0")
    speeds = data.reshape(data.shape[0], data.shape[1])  # (steps, roads, 1) -> (steps, roads)
    speeds = np.where(speeds == 0, np.nan, speeds)
    start = datetime(2015, 1, 1, tzinfo=ZONES["sz-taxi"])
    series = SensorSeries(
        name="sz-taxi",
        type_term="TrafficFlowObserved",
        attribute_term="averageVehicleSpeed",
        unit_code="KMH",
        provider="Shenzhen taxi GPS via T-GCN (Zhao et al., IEEE T-ITS 2019)",
        sensors=[
            Sensor(f"urn:ngsi-ld:TrafficFlowObserved:sz-taxi:{road}", f"Luohu road {road}", None)
            for road in range(speeds.shape[1])
        ],
        times=_elapsed_grid(start, timedelta(minutes=15), speeds.shape[0]),
        values=speeds,
    )
    return _sensor_load(series, Vocab.load(datasets_dir), now)


def load_melbourne_pedestrians(datasets_dir: Path, now: str) -> DatasetLoad:
    """City of Melbourne pedestrian counters: hourly `peopleCount` (unitCode "C62", one) of 55 sensors.

    `counts.csv` stamps are Melbourne wall-clock hours on a regular 24-rows-a-day grid, so daylight
    saving leaves two kinds of odd rows, handled the same way every run:
    - when clocks go back (April) 02:00 happens twice but the file has one row; it is placed at the
      first occurrence (daylight time, +11:00), so the second 02:00 hour simply has no reading;
    - when clocks go forward (October) 02:00 never happens; the file still has a row for it (all zeros,
      a filler) and that row is dropped, since mapping it would land on the instant of 03:00.
    Any row that would repeat an instant is dropped, so each sensor's instants strictly increase.
    Columns are matched by name to `sensors.csv`, which gives the id, installation and coordinates.
    An empty cell is a missing reading; 0 is a real count."""
    folder = datasets_dir / "crowd" / "melbourne-pedestrians"
    counts_path = _require(folder / "counts.csv")
    by_name = _melbourne_sensors(_require(folder / "sensors.csv"))
    lines = _csv_lines(counts_path)
    _header(counts_path, lines)
    header, body = lines[0][1], lines[1:]
    columns = header[1:]
    unknown = [c for c in columns if c not in by_name]
    if unknown:
        raise ValueError(f"columns of {counts_path} with no row in {folder / 'sensors.csv'}: {unknown}")
    if not body:
        raise ValueError(f"{counts_path}: no counts after the header line")
    _same_width(counts_path, body, len(header))
    for line, row in body:
        _local_time(counts_path, line, row[0])
    counts = _number_table(counts_path, header, body, 1, empty_is_missing=True)
    times, kept = _hourly_rows_to_utc([row[0] for _, row in body], ZONES["melbourne-pedestrians"])
    sensors = [
        Sensor(f"urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:{by_name[c][0]}", c, by_name[c][1])
        for c in columns
    ]
    series = SensorSeries(
        name="melbourne-pedestrians",
        type_term="CrowdFlowObserved",
        attribute_term="peopleCount",
        unit_code="C62",
        provider="City of Melbourne Pedestrian Counting System (CC BY 4.0) via UCTB",
        sensors=sensors,
        times=times[kept],
        values=counts[kept],
        integer=True,
    )
    return _sensor_load(series, Vocab.load(datasets_dir), now)


def _melbourne_sensors(path: Path) -> dict[str, tuple[str, tuple[float, float]]]:
    """Sensor name -> (sensor id, (longitude, latitude)), from the columns of those names."""
    lines = _csv_lines(path)
    columns = _header(path, lines, ("sensor_id", "latitude", "longitude", "name"))
    _same_width(path, lines[1:], len(lines[0][1]))
    sensors = {}
    for line, row in lines[1:]:
        try:
            lon_lat = _lon_lat(row[columns["longitude"]], row[columns["latitude"]])
        except ValueError as error:
            raise ValueError(f"{path}:{line}: {error}") from None
        sensors[row[columns["name"]]] = (row[columns["sensor_id"]], lon_lat)
    return sensors


def load_montgomery_911(datasets_dir: Path, now: str) -> DatasetLoad:
    """Montgomery County (PA) 911 calls, one entity per call of type `EmergencyCall` (default vocabulary).

    Why this model: a call is a one-off event with a place, a time and a kind, not a sensor with a
    series, and no Smart Data Model fits (SDM `Alert` is what the hub raises itself; mixing citizens'
    calls into it would blur the two). 3,051 calls are few enough to keep as entities, so `events` is
    empty and the calls answer ordinary queries (type, q on any attribute, geo).
    Kept: `category` (EMS / Fire / Traffic), `title` (the text after the category), `township`,
    `location` (the published intersection point), `dateObserved` and `dataProvider`, named as `Vocab`
    names everything: each reads and queries by that short name with the Smart Data Models Transportation
    @context (`category`, `dateObserved` and `dataProvider` are its terms, `title` the core context's,
    `township` and the type `EmergencyCall` the default vocabulary's). A hub that holds calls ingested before
    `title` took its core IRI gets them rewritten by the next `polis ingest montgomery-911`, since ingest
    replaces whole documents. The street address is dropped:
    it adds nothing a count needs and points at a person's doorstep more than the point does, so the
    privacy line (count, don't watch) keeps it out. Timestamps are America/New_York wall-clock; an
    ambiguous time takes its first occurrence. Ids hash the kept fields (never the address), with an
    occurrence suffix for the identical rows the sample holds, so they are stable across runs."""
    path = datasets_dir / "emergency" / "montgomery-911" / "calls.csv"
    vocab = Vocab.load(datasets_dir)
    zone = ZoneInfo("America/New_York")
    seen: Counter[str] = Counter()
    entities: list[Entity] = []
    for line, row in _csv_lines(path):
        if len(row) != 6:
            raise ValueError(f"{path}:{line}: expected 6 fields (lat, lon, title, timestamp, township, address)")
        lat, lon, title, stamp, township, _address = (field.strip() for field in row)
        digest = hashlib.sha256(f"{lat}|{lon}|{title}|{stamp}|{township}".encode()).hexdigest()[:16]
        seen[digest] += 1
        suffix = "" if seen[digest] == 1 else f"-{seen[digest]}"
        entity_id = f"urn:ngsi-ld:EmergencyCall:montgomery-911:{digest}{suffix}"
        try:
            entities.append(_call_entity(entity_id, row, zone, vocab, now))
        except ValueError as error:  # a field the call cannot have: its line, not just the parser's word
            raise ValueError(f"{path}:{line}: {error}") from None
    categories = Counter(e[vocab("category")][0]["value"] for e in entities if vocab("category") in e)
    mix = ", ".join(f"{n} {c}" for c, n in sorted(categories.items()))
    description = f"{len(entities)} EmergencyCall entities (montcoalert.org, ODbL): {mix}"
    return DatasetLoad("montgomery-911", entities, _empty_history(), [], description)


def _call_entity(entity_id: str, row: list[str], zone: ZoneInfo, vocab: Vocab, now: str) -> Entity:
    lat, lon, title, stamp, township = (field.strip() for field in row[:5])
    category, colon, what = title.partition(":")
    try:
        instant, _ = _wall_clock_to_utc(stamp, zone)
    except ValueError:
        raise ValueError(f"timestamp {stamp!r} is not a date and time (YYYY-MM-DD HH:MM)") from None
    entity: Entity = {"id": entity_id, "type": [vocab("EmergencyCall")], "createdAt": now, "modifiedAt": now}
    if colon:
        entity[vocab("category")] = [_prop(category.strip(), now)]
    entity[vocab("title")] = [_prop((what if colon else title).strip(), now)]
    entity[vocab("township")] = [_prop(township, now)]
    if lat and lon:
        entity[LOCATION] = [_point(_lon_lat(lon, lat), now)]
    entity[vocab("dateObserved")] = [_prop(_date_time(_iso(instant)), now)]
    entity[vocab("dataProvider")] = [_prop("montcoalert.org (ODbL)", now)]
    return entity


DATASETS: dict[str, DatasetInfo] = {
    "los-loop": DatasetInfo(
        "Los Angeles highway loop detectors (METR-LA): 207 speeds, 5 min, March 2012", load_los_loop
    ),
    "sz-taxi": DatasetInfo("Shenzhen Luohu taxi-derived road speeds: 156 roads, 15 min, January 2015", load_sz_taxi),
    "melbourne-pedestrians": DatasetInfo(
        "City of Melbourne pedestrian counters: 55 sensors, hourly, 2021-2022", load_melbourne_pedestrians
    ),
    "montgomery-911": DatasetInfo("Montgomery County PA 911 calls: 3,051 calls, 2016-2018", load_montgomery_911),
    "covid-europe-2020": DatasetInfo(
        "COVID-19 cases and daily region-to-region movement, England/France/Italy/Spain, spring 2020",
        lambda datasets_dir, now: _load_covid_europe(datasets_dir, now),
    ),
}


def _load_covid_europe(datasets_dir: Path, now: str) -> DatasetLoad:
    from polis.epidemic.hub import load_covid_europe  # the epidemic package builds on this module

    return load_covid_europe(datasets_dir, now)


def load_dataset(name: str, datasets_dir: Path, now: str) -> DatasetLoad:
    info = DATASETS.get(name)
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return info.loader(Path(datasets_dir), now)


# ---------------------------------------------------------------------------------------------- ingest


def ingest(
    store: Store, tenant: str, load: DatasetLoad, progress: Callable[[int, int], None] | None = None
) -> IngestSummary:
    """Write a load into `tenant`; running it again adds nothing.

    Entities are upserted (an entity that already exists keeps its createdAt); history goes through
    `bulk_history`, which skips (entity, attribute, observedAt) already stored. Events are written in
    the same transaction as their entity's first upsert and skipped for entities that existed before,
    so a rerun never repeats them."""
    started = time.perf_counter()
    report = progress or (lambda done, total: None)
    total = len(load.entities) + len(load.history) + len(load.events)
    events_by_entity = _events_by_entity(load)
    store.ensure_tenant(tenant)
    report(0, total)
    done = new_entities = events_added = 0
    for chunk in chunks(load.entities, ENTITY_CHUNK):
        current = store.get(tenant, [e["id"] for e in chunk])
        fresh = [e["id"] for e in chunk if e["id"] not in current]
        events = [event for entity_id in fresh for event in events_by_entity.get(entity_id, ())]
        store.write(tenant, upserts=[_keep_created_at(e, current.get(e["id"])) for e in chunk], history=events)
        new_entities += len(fresh)
        events_added += len(events)
        done += len(chunk) + sum(len(events_by_entity.get(e["id"], ())) for e in chunk)
        report(done, total)
    added = 0
    for start in range(0, len(load.history), HISTORY_CHUNK):
        part = _slice(load.history, start, start + HISTORY_CHUNK)
        added += store.bulk_history(tenant, part)
        done += len(part)
        report(done, total)
    return IngestSummary(
        entities_written=len(load.entities),
        new_entities=new_entities,
        observations_added=added,
        observations_seen=int(np.count_nonzero(~np.isnan(load.history.value))),
        seconds=time.perf_counter() - started,
        events_added=events_added,
    )


def _events_by_entity(load: DatasetLoad) -> dict[str, list[HistoryInstance]]:
    ids = {e["id"] for e in load.entities}
    grouped: dict[str, list[HistoryInstance]] = {}
    for event in load.events:
        if event.entity_id not in ids:
            raise ValueError(f"{load.name}: event for {event.entity_id}, which is not among the dataset's entities")
        grouped.setdefault(event.entity_id, []).append(event)
    return grouped


def _keep_created_at(entity: Entity, existing: Entity | None) -> Entity:
    """The entity to upsert: replacing a stored one must not move its createdAt (nor its attributes')."""
    if existing is None:
        return entity
    merged = dict(entity)
    if "createdAt" in existing:
        merged["createdAt"] = existing["createdAt"]
    for key in attribute_names(entity):
        instances, old = entity[key], existing.get(key)
        if not isinstance(old, list):
            continue
        created = {i.get("datasetId"): i["createdAt"] for i in old if isinstance(i, dict) and "createdAt" in i}
        merged[key] = [
            {**i, "createdAt": created[i.get("datasetId")]} if i.get("datasetId") in created else i for i in instances
        ]
    return merged


def _slice(columns: HistoryColumns, start: int, stop: int) -> HistoryColumns:
    return HistoryColumns(
        entity_id=columns.entity_id[start:stop],
        attribute=columns.attribute[start:stop],
        observed_at=columns.observed_at[start:stop],
        value=columns.value[start:stop],
        unit_code=columns.unit_code,
    )
