"""`polis ingest citibike-jersey-city`: load the person-level files, pass them through the gate, store
the gated records and their counts, then run the retention purge. The person-level batch never leaves
this function's memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import h3
import numpy as np

from polis.mobility import citibike
from polis.mobility.aggregate import count_trips
from polis.mobility.schema import TripBatch
from polis.mobility.store import Area, MobilityStore
from polis.privacy.gate import gate_trips
from polis.privacy.pseudonyms import Pseudonymiser, default_secret_file, load_or_create_secret
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore


@dataclass(frozen=True, slots=True)
class MobilityDataset:
    name: str
    description: str
    zone: str  # the city's time zone: local days and 8-hour windows
    loader: Callable[[Path], TripBatch]


MOBILITY_DATASETS = {
    citibike.DATASET: MobilityDataset(
        citibike.DATASET,
        "Citi Bike Jersey City trips (6 months, 99,570 trips), through the privacy gate",
        citibike.ZONE,
        citibike.load_trips,
    )
}


@dataclass(frozen=True, slots=True)
class MobilitySummary:
    dataset: str
    trips: int
    days: int
    raw_kept: int
    raw_purged: int
    seconds: float


def pseudonymiser_for(settings: Settings) -> Pseudonymiser:
    """The master secret from the setting, else from its 0600 file (created on first use)."""
    if settings.pseudonym_secret is not None:
        return Pseudonymiser(settings.pseudonym_secret.get_secret_value().encode())
    return Pseudonymiser(load_or_create_secret(settings.pseudonym_secret_file or default_secret_file()))


def dataset_zone(name: str) -> str:
    known = MOBILITY_DATASETS.get(name)
    return known.zone if known is not None else "UTC"


def ingest_trips(settings: Settings, store: DuckDBStore, batch: TripBatch, zone: str) -> MobilitySummary:
    started = time.perf_counter()
    gated = gate_trips(
        batch,
        pseudonymiser_for(settings),
        resolution=settings.h3_resolution,
        od_resolution=settings.od_h3_resolution,
        zone=zone,
    )
    areas = _areas(batch, settings)
    del batch  # the person-level records end here
    counts = count_trips(gated)
    mobility = MobilityStore(store)
    mobility.replace(gated, counts, areas)
    purged = mobility.purge(timedelta(days=settings.raw_retention_days), gated.dataset)
    return MobilitySummary(
        dataset=gated.dataset,
        trips=len(gated),
        days=len(np.unique(gated.start_day)),
        raw_kept=mobility.raw_count(gated.dataset),
        raw_purged=purged.get(gated.dataset, 0),
        seconds=time.perf_counter() - started,
    )


def _areas(batch: TripBatch, settings: Settings) -> list[Area]:
    """The rows of the products: every station (public: id, name, place) and every cell either resolution
    of which holds a station, at its centre."""
    stations = np.concatenate([batch.start.station, batch.end.station]).astype(str)
    lats = np.concatenate([batch.start.lat, batch.end.lat])
    lons = np.concatenate([batch.start.lon, batch.end.lon])
    _, first = np.unique(stations, return_index=True)
    areas: list[Area] = []
    cells: dict[tuple[str, str], None] = {}
    for index in first.tolist():
        station, lat, lon = stations[index], float(lats[index]), float(lons[index])
        if not (np.isfinite(lat) and np.isfinite(lon)):
            continue
        areas.append(Area("station", station, batch.station_names.get(station), lat, lon))
        cells[("cell", h3.latlng_to_cell(lat, lon, settings.h3_resolution))] = None
        cells[("od", h3.latlng_to_cell(lat, lon, settings.od_h3_resolution))] = None
    for unit, cell in cells:
        lat, lon = h3.cell_to_latlng(cell)
        areas.append(Area(unit, cell, None, lat, lon))
    return areas


def ingest_mobility(settings: Settings, store: DuckDBStore, name: str) -> MobilitySummary:
    dataset = MOBILITY_DATASETS[name]
    return ingest_trips(settings, store, dataset.loader(settings.datasets_dir), dataset.zone)
