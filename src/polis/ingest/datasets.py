"""The public datasets behind `polis ingest DATASET`: each loader turns one published file set into
entities in the internal shape (expanded IRIs, attributes as lists of instances) plus numeric history
in columns, and `ingest` writes a load into a store idempotently.

Attribute and type IRIs are what the hub's own context resolution makes of the terms with the Smart Data
Models Transportation @context shipped with the data (`Vocab`): that context's terms, the NGSI-LD core
context's (part of every context, and protected: `title` is Dublin Core's title), else the default
vocabulary; exactly as a client posting the same term with that context would see it expanded, so every
ingested attribute reads and queries by its short name with that context.

Time: the files carry local wall-clock times (or none at all); every loader documents how it places its
readings in UTC, and every history row comes out entity-major (all of one sensor's rows, oldest first,
then the next sensor's) because the store reads per-sensor series fastest in that order.
"""

from __future__ import annotations

import csv
import hashlib
import time
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


def _csv_rows(path: Path) -> list[list[str]]:
    with _require(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


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
    located = {row[1]: (float(row[3]), float(row[2])) for row in _csv_rows(folder / "sensor_locations.csv")[1:]}
    vocab = Vocab.load(datasets_dir)
    with speed_path.open(encoding="utf-8") as handle:
        sensor_ids = handle.readline().strip().split(",")
    unlocated = [s for s in sensor_ids if s not in located]
    if unlocated:
        raise ValueError(f"{folder / 'sensor_locations.csv'} lacks sensors {unlocated[:5]} named in {speed_path}")
    speeds = np.loadtxt(speed_path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
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


def load_sz_taxi(datasets_dir: Path, now: str) -> DatasetLoad:
    """SZ-taxi (T-GCN): taxi-derived average speed in km/h ("KMH") on 156 roads of Luohu, Shenzhen.

    Rows are 15-minute steps from 2015-01-01T00:00 Asia/Shanghai (UTC+8, no DST). About a quarter of
    the entries are 0: a speed derived from taxi GPS is 0 when no taxi crossed the road in that step,
    which is an absence of data, not a traffic jam, so 0 is treated as missing and not stored. No road
    coordinates are published, so these entities have no location."""
    path = _require(datasets_dir / "traffic" / "sz-taxi" / "SZ_taxi.npz")
    with np.load(path, allow_pickle=False) as archive:
        data = np.asarray(archive["data"], dtype=np.float64)
    speeds = data.reshape(data.shape[0], -1)  # (steps, roads, 1) -> (steps, roads)
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
    with _require(folder / "sensors.csv").open(newline="", encoding="utf-8") as handle:
        by_name = {row["name"]: row for row in csv.DictReader(handle)}
    rows = _csv_rows(counts_path)
    header, body = rows[0], rows[1:]
    columns = header[1:]
    unknown = [c for c in columns if c not in by_name]
    if unknown:
        raise ValueError(f"columns of {counts_path} with no row in {folder / 'sensors.csv'}: {unknown}")
    ragged = [n + 2 for n, row in enumerate(body) if len(row) != len(header)]
    if ragged:
        raise ValueError(f"{counts_path}: lines {ragged[:5]} do not have {len(header)} fields")
    cells = np.array([row[1:] for row in body], dtype="U16").reshape(len(body), len(columns))
    cells[cells == ""] = "nan"
    times, kept = _hourly_rows_to_utc([row[0] for row in body], ZONES["melbourne-pedestrians"])
    sensors = [
        Sensor(
            f"urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:{by_name[c]['sensor_id']}",
            c,
            (float(by_name[c]["longitude"]), float(by_name[c]["latitude"])),
        )
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
        values=cells.astype(np.float64)[kept],
        integer=True,
    )
    return _sensor_load(series, Vocab.load(datasets_dir), now)


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
    for line, row in enumerate(_csv_rows(path), start=1):
        if len(row) != 6:
            raise ValueError(f"{path}:{line}: expected 6 fields (lat, lon, title, timestamp, township, address)")
        lat, lon, title, stamp, township, _address = (field.strip() for field in row)
        digest = hashlib.sha256(f"{lat}|{lon}|{title}|{stamp}|{township}".encode()).hexdigest()[:16]
        seen[digest] += 1
        suffix = "" if seen[digest] == 1 else f"-{seen[digest]}"
        entity_id = f"urn:ngsi-ld:EmergencyCall:montgomery-911:{digest}{suffix}"
        entities.append(_call_entity(entity_id, row, zone, vocab, now))
    categories = Counter(e[vocab("category")][0]["value"] for e in entities if vocab("category") in e)
    mix = ", ".join(f"{n} {c}" for c, n in sorted(categories.items()))
    description = f"{len(entities)} EmergencyCall entities (montcoalert.org, ODbL): {mix}"
    return DatasetLoad("montgomery-911", entities, _empty_history(), [], description)


def _call_entity(entity_id: str, row: list[str], zone: ZoneInfo, vocab: Vocab, now: str) -> Entity:
    lat, lon, title, stamp, township = (field.strip() for field in row[:5])
    category, colon, what = title.partition(":")
    instant, _ = _wall_clock_to_utc(stamp, zone)
    entity: Entity = {"id": entity_id, "type": [vocab("EmergencyCall")], "createdAt": now, "modifiedAt": now}
    if colon:
        entity[vocab("category")] = [_prop(category.strip(), now)]
    entity[vocab("title")] = [_prop((what if colon else title).strip(), now)]
    entity[vocab("township")] = [_prop(township, now)]
    if lat and lon:
        entity[LOCATION] = [_point((float(lon), float(lat)), now)]
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
