"""The gated mobility data in the hub's DuckDB database: its own tables, through the store's connection.

- `mobility_trips`: raw pseudonymous trips (daily pseudonym, hours, stations, cells), kept only for the
  retention period, counted back from the newest time in the dataset itself (`mobility_clock`), so that a
  replayed history is purged as it would have been live;
- `mobility_flows`, `mobility_od`: the counts the released products are cut from (never released as is:
  every release goes through suppression, see products.py). Every row carries the local day its trips
  started (`start_day`; the `day` of departures and OD rows, and for arrivals, counted on the day a trip
  ends, the day it began), which is what a load rewrites;
- `mobility_areas`: stations (public infrastructure: id, name, place) and cells, the rows of the products;
- `mobility_release_config`: the release configuration (flows unit, OD window, k) each dataset's first
  release pinned: releases under two configurations could be solved against each other (products.py);
- `mobility_releases`: each day's tables (counts and hidden masks) as its first release cut them: every later
  release of the day is cut from them, whatever a later load changed (products.py, `_released_day`).

Nothing here holds an identifier, a birth year, a gender or an exact time: the gate ran before.
Rewrites are per start day (delete what the trips starting on the load's days counted, insert it again) in
one transaction: loading the same files twice changes nothing, and loading February after March leaves March
whole, only adding the arrivals of the February trips that ended on 1 March (a load that deleted every day its
trips touched, end days included, wiped 1 March for one trip crossing midnight).
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

_FLOWS_DDL = """CREATE TABLE IF NOT EXISTS mobility_flows (
    dataset VARCHAR NOT NULL, unit VARCHAR NOT NULL, direction VARCHAR NOT NULL, area VARCHAR NOT NULL,
    day DATE NOT NULL, hour TIMESTAMP NOT NULL, trips BIGINT NOT NULL, start_day DATE NOT NULL)"""
_DDL = [
    """CREATE TABLE IF NOT EXISTS mobility_trips (
        dataset VARCHAR NOT NULL, day DATE NOT NULL, pseudonym VARCHAR NOT NULL, start_hour TIMESTAMP NOT NULL,
        end_hour TIMESTAMP NOT NULL, start_station VARCHAR, end_station VARCHAR, start_cell VARCHAR,
        end_cell VARCHAR)""",
    _FLOWS_DDL,
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
    """CREATE TABLE IF NOT EXISTS mobility_releases (
        dataset VARCHAR NOT NULL, day DATE NOT NULL, tables VARCHAR NOT NULL, released_at TIMESTAMP NOT NULL,
        PRIMARY KEY (dataset, day))""",
]

# What a released day's counts are, to see whether a load changed them: one hash per day over its hourly counts
# (arrivals summed over their start days) and its OD counts.
_DAY_FINGERPRINTS = """
    SELECT day, bit_xor(h) FROM (
        SELECT day, hash(unit, direction, area, hour, sum(trips)) AS h FROM mobility_flows
        WHERE dataset = $dataset AND day IN (SELECT day FROM mobility_releases WHERE dataset = $dataset)
        GROUP BY day, unit, direction, area, hour
        UNION ALL
        SELECT day, hash('od', "window", origin, destination, sum(trips)) FROM mobility_od
        WHERE dataset = $dataset AND day IN (SELECT day FROM mobility_releases WHERE dataset = $dataset)
        GROUP BY day, "window", origin, destination)
    GROUP BY day"""

# A flows table written before rows carried their trips' start day: arrivals were kept per end day only, so
# their start day is not known; each row is taken as starting on its own day (true of every departure and of
# every arrival but those crossing midnight). A backfill of the day before such a day then counts its crossing
# trips twice until the day's own month is loaded again (`polis ingest` of the whole folder mends every day).
_MIGRATE_FLOWS = [
    "ALTER TABLE mobility_flows RENAME TO mobility_flows_v1",
    _FLOWS_DDL,
    "INSERT INTO mobility_flows SELECT dataset, unit, direction, area, day, hour, trips, day FROM mobility_flows_v1",
    "DROP TABLE mobility_flows_v1",
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
        self._ready_lock = threading.Lock()  # two first uses at once: one migration
        self._pin_lock = threading.Lock()  # two first releases at once: one insert, not a write-write conflict
        self._freeze_lock = threading.Lock()  # the same for a day's first release

    def _con(self) -> duckdb.DuckDBPyConnection:
        con = self.store.connection()
        if not self._ready:
            with self._ready_lock:
                if not self._ready:
                    for ddl in _DDL:
                        con.execute(ddl)
                    self._migrate(con)
                    self._ready = True
        return con

    @staticmethod
    def _migrate(con: duckdb.DuckDBPyConnection) -> None:
        """Bring tables written by an older Polis up to `_DDL`, in one transaction."""
        columns = con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'mobility_flows' AND column_name = 'start_day'"
        ).fetchall()
        if columns[0][0]:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in _MIGRATE_FLOWS:
                con.execute(sql)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _run(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = self._con()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    # -- writes ----------------------------------------------------------------------------------

    def replace(self, trips: GatedTrips, counts: TripCounts, areas: list[Area]) -> list[date]:
        """Store a gated load, in one transaction: what the trips starting on its days counted is rewritten
        whole (raw trips, departures, OD, and the arrivals those trips made, on whatever day they ended); what
        trips of other days counted stays, on every day. Returns the days already released whose counts the
        load changed (their releases stay as they were: see `freeze_day`)."""
        dataset = trips.dataset
        days = np.unique(trips.start_day).astype("datetime64[D]")
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
                ("trip_ends", _trip_ends(trips)),
                ("od_rows", counts.od),
                ("area_rows", area_rows),
            ):
                con.register(name, table)
            con.execute("BEGIN TRANSACTION")
            try:
                released_before = dict(con.execute(_DAY_FINGERPRINTS, {"dataset": dataset}).fetchall())
                for table, day in (("mobility_trips", "day"), ("mobility_flows", "start_day"), ("mobility_od", "day")):
                    con.execute(
                        f"DELETE FROM {table} WHERE dataset = ? AND {day} IN (SELECT day FROM load_days)", [dataset]
                    )
                con.execute(
                    "INSERT INTO mobility_trips SELECT ?, day, pseudonym, start_hour, end_hour, start_station, "
                    "end_station, start_cell, end_cell FROM raw_rows",
                    [dataset],
                )
                # Departures as counted (their day is their start day); arrivals counted here per start day too,
                # so that a load can take back exactly what its own trips added to a day (`_trip_ends`).
                con.execute(
                    "INSERT INTO mobility_flows (dataset, unit, direction, area, day, hour, trips, start_day) "
                    "SELECT ?, unit, direction, area, day, hour, trips, day FROM flow_rows "
                    "WHERE direction = 'departures'",
                    [dataset],
                )
                con.execute(
                    "INSERT INTO mobility_flows (dataset, unit, direction, area, day, hour, trips, start_day) "
                    "SELECT ?, unit, 'arrivals', area, end_day, end_hour, count(*), start_day FROM ("
                    "SELECT 'station' AS unit, end_station AS area, * FROM trip_ends UNION ALL "
                    "SELECT 'cell' AS unit, end_cell AS area, * FROM trip_ends) GROUP BY ALL",
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
                released_after = dict(con.execute(_DAY_FINGERPRINTS, {"dataset": dataset}).fetchall())
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
        changed = released_before.keys() | released_after.keys()
        return sorted(d for d in changed if released_before.get(d) != released_after.get(d))

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

    def freeze_day(self, dataset: str, day: date, tables: str) -> str:
        """Record `tables` (products.py's serialised DayTables) as the day's released tables unless the day has
        some already; the recorded ones either way (the first release wins, and no load replaces them)."""
        with self._freeze_lock:
            self._run(
                "INSERT INTO mobility_releases VALUES (?, ?, ?, ?) ON CONFLICT (dataset, day) DO NOTHING",
                [dataset, day, tables, datetime.now(UTC).replace(tzinfo=None)],
            )
            frozen = self.frozen_day(dataset, day)
        if frozen is None:  # pragma: no cover - just written, or there before
            raise RuntimeError(f"the release of {dataset} {day} was not recorded")
        return frozen

    # -- reads -----------------------------------------------------------------------------------

    def frozen_day(self, dataset: str, day: date) -> str | None:
        """The day's tables as its first release cut them (`freeze_day`), None before any release of the day."""
        rows = self._run("SELECT tables FROM mobility_releases WHERE dataset = ? AND day = ?", [dataset, day])
        return str(rows[0][0]) if rows else None

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
        """(area, UTC hour, trips) of one local day; arrivals summed over the days their trips started."""
        return [
            (area, hour, int(trips))
            for area, hour, trips in self._run(
                "SELECT area, hour, sum(trips) FROM mobility_flows WHERE dataset = ? AND unit = ? AND direction = ? "
                "AND day = ? GROUP BY area, hour",
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


def _trip_ends(trips: GatedTrips) -> pa.Table:
    """Where and when each trip ended, with the local day it started: the arrivals, counted per start day."""
    return pa.table(
        {
            "start_day": pa.array(trips.start_day.astype("datetime64[D]")),
            "end_day": pa.array(trips.end_day.astype("datetime64[D]")),
            "end_hour": pa.array(trips.end_hour.astype("datetime64[s]")),
            "end_station": trips.end_station.cast(pa.string()),
            "end_cell": trips.end_cell.cast(pa.string()),
        }
    )
