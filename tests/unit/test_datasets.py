"""The public dataset loaders and `ingest`, read against the real files in the shared data folder."""

from __future__ import annotations

import copy
import csv
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.domain.entity import LOCATION, Entity, HistoryInstance
from polis.ingest import datasets as ds
from polis.ingest.datasets import DATASETS, DatasetLoad, Vocab, ingest, load_dataset
from polis.settings import Settings
from polis.store.base import HistoryColumns, Store

NOW = "2026-01-01T00:00:00.000000Z"
SDM = "https://smartdatamodels.org/dataModel.Transportation/"
SPEED = SDM + "averageVehicleSpeed"
PEOPLE = SDM + "peopleCount"
DATE_OBSERVED = "https://smartdatamodels.org/dateObserved"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = Settings().datasets_dir
    if not (path / "traffic" / "los-loop" / "los_speed.csv").is_file():
        pytest.skip(f"public datasets not found under {path}")
    return path


@pytest.fixture(scope="module")
def los(data_dir: Path) -> DatasetLoad:
    return load_dataset("los-loop", data_dir, NOW)


@pytest.fixture(scope="module")
def melbourne(data_dir: Path) -> DatasetLoad:
    return load_dataset("melbourne-pedestrians", data_dir, NOW)


def by_id(load: DatasetLoad) -> dict[str, Entity]:
    return {e["id"]: e for e in load.entities}


def series_of(history: HistoryColumns, entity_id: str) -> tuple[np.ndarray, np.ndarray]:
    rows = history.entity_id == entity_id
    return history.observed_at[rows], history.value[rows]


def assert_entity_major_and_increasing(history: HistoryColumns, n_entities: int) -> None:
    same = history.entity_id[1:] == history.entity_id[:-1]
    assert int((~same).sum()) == n_entities - 1, "each entity's rows must be contiguous"
    assert (np.diff(history.observed_at)[same] > np.timedelta64(0, "us")).all(), "duplicate or unordered instants"


# ---------------------------------------------------------------------------------------------- vocabulary + errors


def test_vocab_reads_the_transportation_context_and_falls_back_to_the_default_vocabulary(data_dir: Path) -> None:
    vocab = Vocab.load(data_dir)
    assert vocab("TrafficFlowObserved") == SDM + "TrafficFlowObserved"
    assert vocab("name") == "https://smartdatamodels.org/name"
    assert vocab("location") == LOCATION
    assert vocab("township") == DEFAULT + "township"
    assert vocab("id") == DEFAULT + "id"  # keyword aliases are not vocabulary


def test_unknown_dataset_names_the_known_ones(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'la-loop'") as err:
        load_dataset("la-loop", data_dir, NOW)
    for name in DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_files_name_the_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset(name, tmp_path, NOW)


# ---------------------------------------------------------------------------------------------- los-loop


def test_los_loop_shape(los: DatasetLoad) -> None:
    assert len(los.entities) == 207
    assert len(los.history) == 2016 * 207  # the publishers interpolated every gap
    assert los.history.unit_code == "HM"
    assert set(los.history.attribute) == {SPEED}
    assert los.history.observed_at.dtype == np.dtype("datetime64[us]")
    assert all(e["type"] == [SDM + "TrafficFlowObserved"] for e in los.entities)
    assert los.events == []
    assert_entity_major_and_increasing(los.history, 207)


def test_los_loop_first_and_last_reading_of_773869(los: DatasetLoad, data_dir: Path) -> None:
    with (data_dir / "traffic" / "los-loop" / "los_speed.csv").open() as handle:
        rows = list(csv.reader(handle))
    column = rows[0].index("773869")
    entity_id = "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"
    times, values = series_of(los.history, entity_id)
    # Row 0 is 2012-03-01T00:00 Los Angeles time (PST, UTC-8); 5-minute steps.
    assert times[0] == np.datetime64("2012-03-01T08:00:00", "us")
    assert values[0] == float(rows[1][column])
    assert times[-1] == np.datetime64("2012-03-08T07:55:00", "us")
    current = by_id(los)[entity_id][SPEED][0]
    assert current["value"] == float(rows[-1][column])
    assert current["observedAt"] == "2012-03-08T07:55:00Z"
    assert current["unitCode"] == "HM"
    assert by_id(los)[entity_id][DATE_OBSERVED][0]["value"] == {"@type": "DateTime", "@value": "2012-03-08T07:55:00Z"}


def test_los_loop_location_is_longitude_then_latitude(los: DatasetLoad) -> None:
    entity = by_id(los)["urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"]
    assert entity[LOCATION][0]["value"] == {"type": "Point", "coordinates": [-118.31829, 34.15497]}
    assert entity[LOCATION][0]["type"] == "GeoProperty"


# ---------------------------------------------------------------------------------------------- sz-taxi


def test_sz_taxi_drops_zero_speeds_as_missing(data_dir: Path) -> None:
    load = load_dataset("sz-taxi", data_dir, NOW)
    with np.load(data_dir / "traffic" / "sz-taxi" / "SZ_taxi.npz") as archive:
        raw = archive["data"][..., 0]
    assert len(load.entities) == 156
    assert len(load.history) == int(np.count_nonzero(raw))
    assert (load.history.value > 0).all()
    assert load.history.unit_code == "KMH"
    assert all(LOCATION not in e for e in load.entities)  # no coordinates are published
    times, values = series_of(load.history, "urn:ngsi-ld:TrafficFlowObserved:sz-taxi:0")
    first = int(np.flatnonzero(raw[:, 0])[0])
    # 2015-01-01T00:00 Shanghai (UTC+8) plus 15-minute steps.
    assert times[0] == np.datetime64("2014-12-31T16:00:00", "us") + first * np.timedelta64(15, "m")
    assert values[0] == raw[first, 0]
    assert_entity_major_and_increasing(load.history, 156)


# ---------------------------------------------------------------------------------------------- Melbourne


def test_melbourne_shape_and_sensor_matching(melbourne: DatasetLoad, data_dir: Path) -> None:
    assert len(melbourne.entities) == 55
    assert melbourne.history.unit_code == "C62"
    entity = by_id(melbourne)["urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:1"]
    assert entity["https://smartdatamodels.org/name"][0]["value"] == "Bou292_T"
    assert entity[LOCATION][0]["value"]["coordinates"] == [144.96515323, -37.81349441]
    assert isinstance(entity[PEOPLE][0]["value"], int)
    assert entity[PEOPLE][0]["observedAt"] == "2022-10-31T12:00:00Z"  # 23:00 AEDT


def test_melbourne_empty_cells_are_missing_and_the_dst_filler_rows_are_dropped(
    melbourne: DatasetLoad, data_dir: Path
) -> None:
    with (data_dir / "crowd" / "melbourne-pedestrians" / "counts.csv").open() as handle:
        body = list(csv.reader(handle))[1:]
    non_empty = sum(cell != "" for row in body for cell in row[1:])
    spring_forward_rows = 2  # 2021-10-03 02:00 and 2022-10-02 02:00 never happened in Melbourne
    assert len(melbourne.history) == non_empty - spring_forward_rows * 55


def test_melbourne_dst_gives_no_duplicate_and_strictly_increasing_instants(melbourne: DatasetLoad) -> None:
    assert_entity_major_and_increasing(melbourne.history, 55)


def test_melbourne_dst_transitions_map_deterministically(melbourne: DatasetLoad, data_dir: Path) -> None:
    with (data_dir / "crowd" / "melbourne-pedestrians" / "counts.csv").open() as handle:
        local = {row[0]: row[1] for row in csv.reader(handle)}  # column 1 = Bou292_T = sensor 1
    times, values = series_of(melbourne.history, "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:1")
    at = dict(zip(times.astype("datetime64[s]").astype(str), values, strict=True))
    # Clocks back, 2021-04-04 03:00 AEDT -> 02:00 AEST: the single 02:00 row is the first (daylight) 02:00.
    assert at["2021-04-03T14:00:00"] == float(local["2021-04-04 01:00:00"])
    assert at["2021-04-03T15:00:00"] == float(local["2021-04-04 02:00:00"])
    assert "2021-04-03T16:00:00" not in at
    assert at["2021-04-03T17:00:00"] == float(local["2021-04-04 03:00:00"])
    # Clocks forward, 2021-10-03 02:00 AEST -> 03:00 AEDT: 03:00 keeps its own count, not the filler zero.
    assert at["2021-10-02T15:00:00"] == float(local["2021-10-03 01:00:00"])
    assert at["2021-10-02T16:00:00"] == float(local["2021-10-03 03:00:00"]) != 0.0


@settings(deadline=None, max_examples=60)
@given(
    zone=st.sampled_from(["Australia/Melbourne", "America/New_York", "Europe/London", "UTC"]),
    start=st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2023, 1, 1)),
    hours=st.integers(min_value=1, max_value=24 * 60),
)
def test_wall_clock_rows_never_repeat_an_instant(zone: str, start: datetime, hours: int) -> None:
    stamps = [(start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=h)).isoformat(" ") for h in
              range(hours)]
    instants, kept = ds._hourly_rows_to_utc(stamps, ZoneInfo(zone))
    chosen = instants[kept]
    assert (np.diff(chosen) > np.timedelta64(0, "us")).all()
    assert len(stamps) - len(kept) <= 2 * (hours // (24 * 150) + 1)  # at most the DST gaps are dropped
    for row in kept:  # every kept instant shows the wall-clock time it came from
        instant = instants[row].astype(datetime).replace(tzinfo=UTC)
        assert instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None).isoformat(" ") == stamps[row]


# ---------------------------------------------------------------------------------------------- Montgomery 911


def test_montgomery_calls_are_stable_entities_without_the_address(data_dir: Path) -> None:
    first = load_dataset("montgomery-911", data_dir, NOW)
    again = load_dataset("montgomery-911", data_dir, "2030-01-01T00:00:00.000000Z")
    ids = [e["id"] for e in first.entities]
    assert len(ids) == len(set(ids)) == 3051
    assert ids == [e["id"] for e in again.entities]
    assert len(first.history) == 0 and first.events == []
    call = first.entities[0]  # 40.0883549,-75.3821004,EMS: ABDOMINAL PAINS,2016-01-15 12:01,UPPER MERION,DEKALB ...
    assert call["type"] == [DEFAULT + "EmergencyCall"]
    assert call[SDM + "category"][0]["value"] == "EMS"
    assert call["http://purl.org/dc/terms/title"][0]["value"] == "ABDOMINAL PAINS"  # the core context maps title
    assert call[DEFAULT + "township"][0]["value"] == "UPPER MERION"
    assert call[LOCATION][0]["value"]["coordinates"] == [-75.3821004, 40.0883549]
    assert call[DATE_OBSERVED][0]["value"]["@value"] == "2016-01-15T17:01:00Z"  # EST is UTC-5
    assert "DEKALB" not in repr(first.entities)
    assert {e[SDM + "category"][0]["value"] for e in first.entities} == {"EMS", "Fire", "Traffic"}


# ---------------------------------------------------------------------------------------------- ingest


class MemoryStore:
    """Just enough of `Store` for ingest: documents, history keys, events."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], Entity] = {}
        self.keys: set[tuple[str, str, str, np.datetime64]] = set()
        self.events: list[HistoryInstance] = []
        self.bulk_sizes: list[int] = []

    def ensure_tenant(self, tenant: str) -> None:
        pass

    def get(self, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        return {i: copy.deepcopy(self.docs[tenant, i]) for i in ids if (tenant, i) in self.docs}

    def write(self, tenant: str, upserts: Sequence[Entity] = (), deletes: Sequence[str] = (),
              history: Sequence[HistoryInstance] = ()) -> None:
        for entity in upserts:
            self.docs[tenant, entity["id"]] = copy.deepcopy(entity)
        self.events.extend(history)

    def bulk_history(self, tenant: str, columns: HistoryColumns) -> int:
        self.bulk_sizes.append(len(columns))
        before = len(self.keys)
        for row in zip(columns.entity_id, columns.attribute, columns.observed_at, columns.value, strict=True):
            if not np.isnan(row[3]):
                self.keys.add((tenant, row[0], row[1], row[2]))
        return len(self.keys) - before


def small_load(now: str, with_events: bool = True) -> DatasetLoad:
    ids = [f"urn:ngsi-ld:Thing:{n}" for n in range(7)]
    attr = DEFAULT + "level"
    entities = [{"id": i, "type": [DEFAULT + "Thing"], "createdAt": now, "modifiedAt": now,
                 attr: [{"type": "Property", "value": 1.0, "createdAt": now, "modifiedAt": now}]} for i in ids]
    times = np.datetime64("2024-01-01T00:00", "us") + np.arange(10) * np.timedelta64(1, "h")
    values = np.arange(70, dtype=np.float64)
    values[5] = np.nan
    history = HistoryColumns(np.repeat(np.array(ids, dtype=object), 10), np.full(70, attr, dtype=object),
                             np.tile(times, 7), values, "C62")
    events = [HistoryInstance(ids[0], DEFAULT + "note", datetime(2024, 1, 1, tzinfo=UTC),
                              {"type": "Property", "value": "opened"})] if with_events else []
    return DatasetLoad("small", entities, history, events, "7 things")


def test_ingest_is_idempotent_chunked_and_reports_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "HISTORY_CHUNK", 25)
    monkeypatch.setattr(ds, "ENTITY_CHUNK", 3)
    memory = MemoryStore()
    store = cast(Store, memory)
    calls: list[tuple[int, int]] = []
    first = ingest(store, "t", small_load(NOW), lambda done, total: calls.append((done, total)))
    assert (first.entities_written, first.new_entities, first.events_added) == (7, 7, 1)
    assert first.observations_seen == first.observations_added == 69
    assert memory.bulk_sizes == [25, 25, 20]
    assert calls[0] == (0, 78) and calls[-1] == (78, 78)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    later = "2027-01-01T00:00:00.000000Z"
    second = ingest(store, "t", small_load(later))
    assert (second.new_entities, second.observations_added, second.events_added) == (0, 0, 0)
    assert second.observations_seen == 69
    assert len(memory.events) == 1
    doc = memory.docs["t", "urn:ngsi-ld:Thing:0"]
    assert doc["createdAt"] == NOW and doc["modifiedAt"] == later  # replacing keeps the creation time
    assert doc[DEFAULT + "level"][0]["createdAt"] == NOW


def test_ingest_refuses_events_for_entities_outside_the_load() -> None:
    load = small_load(NOW)
    load.events.append(HistoryInstance("urn:ngsi-ld:Thing:elsewhere", DEFAULT + "note",
                                       datetime(2024, 1, 1, tzinfo=UTC), {"type": "Property", "value": "x"}))
    with pytest.raises(ValueError, match="urn:ngsi-ld:Thing:elsewhere"):
        ingest(cast(Store, MemoryStore()), "t", load)


def test_ingest_into_duckdb_twice_adds_nothing_the_second_time(los: DatasetLoad, data_dir: Path) -> None:
    duckdb_store = pytest.importorskip("polis.store.duckdb_")
    store = duckdb_store.DuckDBStore(None)
    try:
        first = ingest(store, "la", los)
        assert (first.entities_written, first.new_entities) == (207, 207)
        assert first.observations_added == first.observations_seen == 2016 * 207
        second = ingest(store, "la", load_dataset("los-loop", data_dir, "2027-01-01T00:00:00.000000Z"))
        assert (second.new_entities, second.observations_added) == (0, 0)
        assert store.history_count("la") == 2016 * 207
        stored = store.get("la", ["urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"])
        assert stored["urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"]["createdAt"] == NOW

        calls = load_dataset("montgomery-911", data_dir, NOW)
        assert ingest(store, "911", calls).new_entities == 3051
        assert ingest(store, "911", calls).new_entities == 0
        assert store.history_count("911") == 0
    finally:
        store.close()
