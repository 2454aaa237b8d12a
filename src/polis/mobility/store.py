"""The gated mobility data in the hub's DuckDB database: its own tables, through the store's connection.

- `mobility_trips`: raw pseudonymous trips (daily pseudonym, hours, stations, cells), kept only for the
  retention period, counted back from the newest time in the dataset itself (`mobility_clock`), so that a
  replayed history is purged as it would have been live;
- `mobility_flows`, `mobility_od`: the counts the released products are cut from (never released as is:
  every release goes through suppression, see products.py);
- `mobility_areas`: stations (public infrastructure: id, name, place) and cells, the rows of the products;
- `mobility_release_config`: the release configuration (flows unit, OD window, k) each dataset's first
  release pinned: releases under two configurations could be solved against each other (products.py).

Nothing here holds an identifier, a birth year, a gender or an exact time: the gate ran before.
Rewrites are per day (delete the days a load covers, insert them again) in one transaction: loading the
same files twice changes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import h3
import numpy as np
import pyarrow as pa

from polis.mobility.aggregate import TripCounts
from polis.privacy.gate import GatedTrips
from polis.store.duckdb_ import DuckDBStore

_DDL = [
    """CREATE TABLE IF NOT EXISTS mobility_trips (
        dataset VARCHAR NOT NULL, day DATE NOT NULL, pseudonym VARCHAR NOT NULL, start_hour TIMESTAMP NOT NULL,
        end_hour TIMESTAMP NOT NULL, start_station VARCHAR, end_station VARCHAR, start_cell VARCHAR,
        end_cell VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS mobility_flows (
        dataset VARCHAR NOT NULL, unit VARCHAR NOT NULL, direction VARCHAR NOT NULL, area VARCHAR NOT NULL,
        day DATE NOT NULL, hour TIMESTAMP NOT NULL, trips BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS mobility_od (
        dataset VARCHAR NOT NULL, day DATE NOT NULL, "window" TINYINT NOT NULL, origin VARCHAR NOT NULL,
        destination VARCHAR NOT NULL, trips BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS mobility_areas (
        dataset VARCHAR NOT NULL, unit VARCHAR NOT NULL, area VARCHAR NOT NULL, name VARCHAR,
        lat DOUBLE, lon DOUBLE)""",
    "CREATE TABLE IF NOT EXISTS mobility_clock (dataset VARCHAR PRIMARY KEY, newest TIMESTAMP NOT NULL)",
    """CREATE TABLE IF NOT EXISTS mobility_release_config (
        dataset VARCHAR PRIMARY KEY, flows_unit VARCHAR NOT NULL, od_window_hours INTEGER NOT NULL,
        k INTEGER NOT NULL, pinned_at TIMESTAMP NOT NULL)""",
]


@dataclass(frozen=True, slots=True)
class Area:
    unit: str  # station, cell or od (the coarser cells of the origin-destination matrices)
    area: str
    name: str | None
    lat: float | None
    lon: float | None


@dataclass(frozen=True, slots=True)
class ReleaseConfiguration:
    """What shapes every release of a dataset: tables released under two of these are linked by sums."""

    flows_unit: str  # POLIS_FLOWS_UNIT
    od_window_hours: int  # POLIS_OD_WINDOW_HOURS
    k: int  # POLIS_SUPPRESSION_K


@dataclass(frozen=True, slots=True)
class PinnedConfiguration:
    configuration: ReleaseConfiguration
    pinned_at: datetime  # wall clock (UTC) of the release that pinned it


class MobilityStore:
    def __init__(self, store: DuckDBStore) -> None:
        self.store = store
        self._ready = False
        self._pin_lock = threading.Lock()  # two first releases at once: one insert, not a write-write conflict

    def _con(self) -> duckdb.DuckDBPyConnection:
        con = self.store.connection()
        if not self._ready:
            for ddl in _DDL:
                con.execute(ddl)
            self._ready = True
        return con

    def _run(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = self._con()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    # -- writes ----------------------------------------------------------------------------------

    def replace(self, trips: GatedTrips, counts: TripCounts, areas: list[Area]) -> None:
        """Store a gated load: the days it covers are rewritten whole, in one transaction."""
        dataset = trips.dataset
        days = np.unique(np.concatenate([trips.start_day, trips.end_day])).astype("datetime64[D]")
        raw = pa.table(
            {
                "day": pa.array(trips.start_day.astype("datetime64[D]")),
                "pseudonym": trips.pseudonym.cast(pa.string()),
                "start_hour": pa.array(trips.start_hour.astype("datetime64[s]")),
                "end_hour": pa.array(trips.end_hour.astype("datetime64[s]")),
                "start_station": trips.start_station.cast(pa.string()),
                "end_station": trips.end_station.cast(pa.string()),
                "start_cell": trips.start_cell.cast(pa.string()),
                "end_cell": trips.end_cell.cast(pa.string()),
            }
        )
        area_rows = pa.table(
            {
                "unit": pa.array([a.unit for a in areas], pa.string()),
                "area": pa.array([a.area for a in areas], pa.string()),
                "name": pa.array([a.name for a in areas], pa.string()),
                "lat": pa.array([a.lat for a in areas], pa.float64()),
                "lon": pa.array([a.lon for a in areas], pa.float64()),
            }
        )
        newest = trips.end_hour.max().astype("datetime64[s]").astype(datetime) if len(trips) else None
        con = self._con()
        try:
            for name, table in (
                ("load_days", pa.table({"day": pa.array(days)})),
                ("raw_rows", raw),
                ("flow_rows", counts.flows),
                ("od_rows", counts.od),
                ("area_rows", area_rows),
            ):
                con.register(name, table)
            con.execute("BEGIN TRANSACTION")
            try:
                for table in ("mobility_trips", "mobility_flows", "mobility_od"):
                    con.execute(
                        f"DELETE FROM {table} WHERE dataset = ? AND day IN (SELECT day FROM load_days)", [dataset]
                    )
                con.execute(
                    "INSERT INTO mobility_trips SELECT ?, day, pseudonym, start_hour, end_hour, start_station, "
                    "end_station, start_cell, end_cell FROM raw_rows",
                    [dataset],
                )
                con.execute(
                    "INSERT INTO mobility_flows SELECT ?, unit, direction, area, day, hour, trips FROM flow_rows",
                    [dataset],
                )
                con.execute(
                    'INSERT INTO mobility_od SELECT ?, day, "window", origin, destination, trips FROM od_rows',
                    [dataset],
                )
                con.execute(
                    "DELETE FROM mobility_areas WHERE dataset = ? "
                    "AND (unit, area) IN (SELECT unit, area FROM area_rows)",
                    [dataset],
                )
                con.execute("INSERT INTO mobility_areas SELECT ?, unit, area, name, lat, lon FROM area_rows", [dataset])
                if newest is not None:
                    con.execute(
                        "INSERT INTO mobility_clock VALUES (?, ?) ON CONFLICT (dataset) DO UPDATE "
                        "SET newest = greatest(mobility_clock.newest, excluded.newest)",
                        [dataset, newest],
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    def purge(self, retention: timedelta, dataset: str | None = None) -> dict[str, int]:
        """Delete raw pseudonymous trips older than `retention` before each dataset's newest data time."""
        purged: dict[str, int] = {}
        for name, newest in self._run("SELECT dataset, newest FROM mobility_clock ORDER BY dataset"):
            if dataset is not None and name != dataset:
                continue
            rows = self._run(
                "DELETE FROM mobility_trips WHERE dataset = ? AND end_hour < ? RETURNING 1", [name, newest - retention]
            )
            purged[name] = len(rows)
        con = self._con()
        try:
            con.execute("CHECKPOINT")  # fold the deletion into the file: no old page keeps the purged rows
        finally:
            con.close()
        return purged

    def archive(self, destination: Path) -> list[Path]:
        """The counts tables (flows, OD) as Parquet, one file per table and dataset. The raw pseudonymous
        trips are not archived: an archive would outlive their retention period."""
        files: list[Path] = []
        for dataset in self.datasets():
            for table in ("mobility_flows", "mobility_od"):
                target = destination / dataset / f"{table.removeprefix('mobility_')}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                quoted = str(target).replace("'", "''")
                con = self._con()
                try:
                    con.execute(
                        f"COPY (SELECT * FROM {table} WHERE dataset = ? ORDER BY ALL) TO '{quoted}' (FORMAT PARQUET)",
                        [dataset],
                    )
                finally:
                    con.close()
                files.append(target)
        return files

    def pin_configuration(self, dataset: str, configuration: ReleaseConfiguration) -> PinnedConfiguration:
        """Record `configuration` as the dataset's release configuration unless one is already pinned; the pinned
        one either way (the first writer wins: two releases at once cannot pin two configurations)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        c = configuration
        with self._pin_lock:
            self._run(
                "INSERT INTO mobility_release_config VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset) DO NOTHING",
                [dataset, c.flows_unit, c.od_window_hours, c.k, now],
            )
            pinned = self.pinned_configuration(dataset)
        if pinned is None:  # pragma: no cover - just written, or there before
            raise RuntimeError(f"the release configuration of {dataset} was not recorded")
        return pinned

    # -- reads -----------------------------------------------------------------------------------

    def pinned_configuration(self, dataset: str) -> PinnedConfiguration | None:
        rows = self._run(
            "SELECT flows_unit, od_window_hours, k, pinned_at FROM mobility_release_config WHERE dataset = ?", [dataset]
        )
        if not rows:
            return None
        unit, hours, k, pinned_at = rows[0]
        return PinnedConfiguration(ReleaseConfiguration(unit, int(hours), int(k)), pinned_at)

    def resolutions(self, dataset: str) -> dict[str, int]:
        """The H3 resolution of the dataset's stored cells, per unit (`cell` for flows, `od` for the matrices);
        empty for a dataset not yet loaded. Read from the cells themselves: the resolution is fixed at ingest."""
        rows = self._run(
            "SELECT unit, any_value(area) FROM mobility_areas WHERE dataset = ? AND unit IN ('cell', 'od') "
            "GROUP BY unit",
            [dataset],
        )
        return {unit: h3.get_resolution(cell) for unit, cell in rows}

    def raw_days(self, dataset: str) -> list[date]:
        """The days (of trip start) the raw-pseudonymous tier still holds trips of."""
        return [
            r[0] for r in self._run("SELECT DISTINCT day FROM mobility_trips WHERE dataset = ? ORDER BY day", [dataset])
        ]

    def datasets(self) -> list[str]:
        return [r[0] for r in self._run("SELECT dataset FROM mobility_clock ORDER BY dataset")]

    def newest(self, dataset: str) -> datetime | None:
        rows = self._run("SELECT newest FROM mobility_clock WHERE dataset = ?", [dataset])
        return rows[0][0] if rows else None

    def days(self, dataset: str) -> list[date]:
        return [
            r[0] for r in self._run("SELECT DISTINCT day FROM mobility_od WHERE dataset = ? ORDER BY day", [dataset])
        ]

    def areas(self, dataset: str, unit: str) -> list[Area]:
        rows = self._run(
            "SELECT unit, area, name, lat, lon FROM mobility_areas WHERE dataset = ? AND unit = ? ORDER BY area",
            [dataset, unit],
        )
        return [Area(*row) for row in rows]

    def hourly(self, dataset: str, unit: str, direction: str, day: date) -> list[tuple[str, datetime, int]]:
        return [
            (area, hour, int(trips))
            for area, hour, trips in self._run(
                "SELECT area, hour, trips FROM mobility_flows WHERE dataset = ? AND unit = ? AND direction = ? "
                "AND day = ?",
                [dataset, unit, direction, day],
            )
        ]

    def od(self, dataset: str, day: date, windows: list[int]) -> list[tuple[str, str, int]]:
        return [
            (origin, destination, int(trips))
            for origin, destination, trips in self._run(
                'SELECT origin, destination, sum(trips) FROM mobility_od WHERE dataset = ? AND day = ? AND "window" '
                "IN (SELECT unnest(?::TINYINT[])) GROUP BY origin, destination",
                [dataset, day, windows],
            )
        ]

    def raw_trips(self, dataset: str, day: date) -> list[dict[str, Any]]:
        """The raw-pseudonymous tier: trips of one day still within retention."""
        con = self._con()
        try:
            cursor = con.execute(
                "SELECT pseudonym, start_hour, end_hour, start_station, end_station, start_cell, end_cell "
                "FROM mobility_trips WHERE dataset = ? AND day = ? ORDER BY start_hour, pseudonym",
                [dataset, day],
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()

    def raw_count(self, dataset: str) -> int:
        return int(self._run("SELECT count(*) FROM mobility_trips WHERE dataset = ?", [dataset])[0][0])
