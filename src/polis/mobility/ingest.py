"""`polis ingest citibike-jersey-city`: load the person-level files, pass them through the gate, store
the gated records and their counts, then run the retention purge. The person-level batch never leaves
this function's memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polis.mobility import citibike
from polis.mobility.aggregate import count_trips
from polis.mobility.schema import TripBatch
from polis.mobility.store import Area, MobilityStore
from polis.privacy.gate import GatedTrips, gate_trips, on_the_globe, public_station_names
from polis.privacy.pseudonyms import SECRET_BYTES, Pseudonymiser, default_secret_file, load_or_create_secret
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
    # Days released before this load whose counts it changed: their releases stay as first made (products.py)
    frozen_changed: list[date] = field(default_factory=list)


def pseudonymiser_for(settings: Settings) -> Pseudonymiser:
    """The master secret from the setting, else from its 0600 file (created on first use). Both hold at least
    SECRET_BYTES: whoever guesses the secret recomputes every pseudonym from the small bike ids. A ValueError or
    PermissionError (a file others may read) says what to change."""
    if settings.pseudonym_secret is not None:
        secret = settings.pseudonym_secret.get_secret_value()
        if len(secret) < SECRET_BYTES:
            raise ValueError(
                f"POLIS_PSEUDONYM_SECRET holds {len(secret)} characters; at least {SECRET_BYTES} are needed (e.g. "
                "the output of `openssl rand -hex 32`), or unset it to use the secret file"
            )
        return Pseudonymiser(secret.encode())
    return Pseudonymiser(load_or_create_secret(settings.pseudonym_secret_file or default_secret_file()))


def dataset_zone(name: str) -> str:
    known = MOBILITY_DATASETS.get(name)
    return known.zone if known is not None else "UTC"


def ingest_trips(
    settings: Settings, store: DuckDBStore, batch: TripBatch, zone: str, pseudonymiser: Pseudonymiser | None = None
) -> MobilitySummary:
    started = time.perf_counter()
    mobility = MobilityStore(store)
    _check_resolutions(settings, mobility, batch.dataset)
    gated = gate_trips(
        batch,
        pseudonymiser or pseudonymiser_for(settings),
        resolution=settings.h3_resolution,
        od_resolution=settings.od_h3_resolution,
        zone=zone,
    )
    areas = _areas(batch, gated, settings)
    del batch  # the person-level records end here
    counts = count_trips(gated)
    frozen_changed = mobility.replace(gated, counts, areas)
    purged = mobility.purge(timedelta(days=settings.raw_retention_days), gated.dataset)
    return MobilitySummary(
        dataset=gated.dataset,
        trips=len(gated),
        days=len(np.unique(gated.start_day)),
        raw_kept=mobility.raw_count(gated.dataset),
        raw_purged=purged.get(gated.dataset, 0),
        seconds=time.perf_counter() - started,
        frozen_changed=frozen_changed,
    )


# The setting behind each resolution of a dataset's stored cells, as an operator sets it.
RESOLUTION_SETTINGS = {
    "cell": ("POLIS_H3_RESOLUTION", "h3_resolution"),
    "od": ("POLIS_OD_H3_RESOLUTION", "od_h3_resolution"),
}


def _check_resolutions(settings: Settings, mobility: MobilityStore, dataset: str) -> None:
    """A dataset's cells keep the resolutions of its first load. Loading days at another resolution would put
    tables of two resolutions in one hub, and a res-8 cell's released total minus the released res-9 cells
    inside it (H3 cells do not nest exactly, but nearly) gives what suppression hid; the products would also
    mix both in their rows. Raises ValueError naming the setting, before anything is gated."""
    stored = mobility.resolutions(dataset)
    wrong = [
        (name, stored[unit], getattr(settings, field))
        for unit, (name, field) in RESOLUTION_SETTINGS.items()
        if unit in stored and stored[unit] != getattr(settings, field)
    ]
    if wrong:
        was = ", ".join(f"{name}={held}" for name, held, _ in wrong)
        now = ", ".join(f"{name}={given}" for name, _, given in wrong)
        raise ValueError(
            f"this hub holds {dataset} at {was} and the setting is now {now}: counts at two resolutions could be "
            f"subtracted from each other for what suppression hides. Keep {was}, or load into a new hub (another "
            "--data-dir)"
        )


def _areas(batch: TripBatch, gated: GatedTrips, settings: Settings) -> list[Area]:
    """The rows of the products: every station (public: id, name, place) and every cell either resolution
    of which holds a station, at its centre. Stations as the gate kept them (an identifying id withheld),
    names as `public_station_names` keeps them; "" (no station) is no row: its trips count in their cells."""
    labels, codes = _station_codes(gated.start_station, gated.end_station)
    names = public_station_names(batch.station_names)
    lats = np.concatenate([batch.start.lat, batch.end.lat])
    lons = np.concatenate([batch.start.lon, batch.end.lon])
    unique, first = np.unique(codes, return_index=True)
    areas: list[Area] = []
    cells: dict[tuple[str, str], None] = {}
    for code, index in zip(unique.tolist(), first.tolist(), strict=True):
        station, lat, lon = labels[code], float(lats[index]), float(lons[index])
        if station == "" or not on_the_globe(np.array(lat), np.array(lon)):
            continue
        areas.append(Area("station", station, names.get(station), lat, lon))
        cells[("cell", h3.latlng_to_cell(lat, lon, settings.h3_resolution))] = None
        cells[("od", h3.latlng_to_cell(lat, lon, settings.od_h3_resolution))] = None
    for unit, cell in cells:
        lat, lon = h3.cell_to_latlng(cell)
        areas.append(Area(unit, cell, None, lat, lon))
    return areas


def _station_codes(start: pa.DictionaryArray, end: pa.DictionaryArray) -> tuple[list[str], np.ndarray]:
    """The stations of both ends in one code space: (labels, the code of each start then each end). Integer
    codes, so finding each station's first record is an np.unique on integers, not on 2 x n strings."""
    labels = pa.concat_arrays([start.dictionary, end.dictionary]).unique()
    start_map = pc.index_in(start.dictionary, labels).to_numpy(zero_copy_only=False)
    end_map = pc.index_in(end.dictionary, labels).to_numpy(zero_copy_only=False)
    codes = np.concatenate(
        [start_map[start.indices.to_numpy(zero_copy_only=False)], end_map[end.indices.to_numpy(zero_copy_only=False)]]
    )
    return labels.to_pylist(), codes


def ingest_mobility(settings: Settings, store: DuckDBStore, name: str) -> MobilitySummary:
    dataset = MOBILITY_DATASETS[name]
    pseudonymiser = pseudonymiser_for(settings)  # a bad secret is refused before the files are read
    return ingest_trips(settings, store, dataset.loader(settings.datasets_dir), dataset.zone, pseudonymiser)
