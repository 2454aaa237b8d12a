"""The released mobility products: hourly flows per station or H3 cell, and the origin-destination matrix
per day or 8-hour window at the coarser resolution. Every release is a table with margins through
`privacy.suppression` (no count below k, complementary suppression); all the tables of one day are
suppressed together with the equations between them (`day_tables`), or, with differential-privacy noise
charged to the dataset's ε budget first, one by one. Nothing else about trips ever leaves the hub (except the
raw-pseudonymous tier, to departments granted it)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import h3
import numpy as np
import orjson

from polis.domain.errors import BadRequestData, NgsiError, ResourceNotFound
from polis.mobility.ingest import MOBILITY_DATASETS
from polis.mobility.store import MobilityStore, PinnedConfiguration, ReleaseConfiguration
from polis.privacy.dp import MIN_EPSILON, BudgetLedger, Mechanism, Spend, release_noise
from polis.privacy.gate import WINDOW_HOURS
from polis.privacy.suppression import (
    Entry,
    Link,
    SuppressedTable,
    released_table,
    suppress_jointly,
    suppression_mask,
    with_margins,
)


class Unit(StrEnum):
    STATION = "station"
    CELL = "cell"


class Direction(StrEnum):
    DEPARTURES = "departures"
    ARRIVALS = "arrivals"


WINDOWS = {"day": [0, 1, 2], "00-08": [0], "08-16": [1], "16-24": [2]}

# The setting behind each field of a release configuration, as an operator sets it.
SETTING_NAMES = {
    "flows_unit": "POLIS_FLOWS_UNIT",
    "od_window_hours": "POLIS_OD_WINDOW_HOURS",
    "k": "POLIS_SUPPRESSION_K",
}


class ReleaseConfigurationPinned(NgsiError):
    """HTTP 409: the hub now runs with a release configuration other than the one its first release pinned."""

    name = "ReleaseConfigurationPinned"
    status = 409
    title = "Release configuration pinned"


def day_ranges(days: Sequence[date]) -> str:
    """Sorted days as runs of consecutive days: "2017-02-01 to 2017-04-30, 2017-11-01"."""
    runs: list[list[date]] = []
    for day in days:
        if runs and day - runs[-1][1] == timedelta(days=1):
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return ", ".join(str(first) if first == last else f"{first} to {last}" for first, last in runs) or "none"


@dataclass(frozen=True, slots=True)
class DayTables:
    """Everything released about one local day, suppressed jointly (see `MobilityProducts.day_tables`)."""

    names: list[str]  # departures, arrivals, then od/<window> for each window the hub releases
    rows: list[list[str]]
    columns: list[list[str]]
    fulls: list[np.ndarray]  # counts with margins
    masks: list[np.ndarray]  # hidden entries
    links: list[Link]

    def table(self, name: str, k: int) -> SuppressedTable:
        t = self.names.index(name)
        return released_table(self.fulls[t], self.masks[t], self.rows[t], self.columns[t], k)

    def counts(self, name: str) -> np.ndarray:
        """The counts of one table, without its margins."""
        return self.fulls[self.names.index(name)][:-1, :-1]

    def to_json(self, configuration: ReleaseConfiguration) -> str:
        """The tables and the configuration they were cut under, as `mobility_releases` keeps them."""
        return orjson.dumps(
            {
                "configuration": [configuration.flows_unit, configuration.od_window_hours, configuration.k],
                "names": self.names,
                "rows": self.rows,
                "columns": self.columns,
                "fulls": [full.tolist() for full in self.fulls],
                "masks": [mask.tolist() for mask in self.masks],
                "links": [[link.plus, link.minus] for link in self.links],
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> tuple[ReleaseConfiguration, DayTables]:
        data = orjson.loads(text)
        unit, hours, k = data["configuration"]
        tables = cls(
            names=data["names"],
            rows=data["rows"],
            columns=data["columns"],
            fulls=[np.array(full, dtype=np.int64) for full in data["fulls"]],
            masks=[np.array(mask, dtype=bool) for mask in data["masks"]],
            links=[Link(_entries(plus), _entries(minus)) for plus, minus in data["links"]],
        )
        return ReleaseConfiguration(unit, int(hours), int(k)), tables


def _entries(items: list[list[int]]) -> tuple[Entry, ...]:
    return tuple((int(t), int(i), int(j)) for t, i, j in items)


# ASCII digits, a point, an exponent: what a person writes for a number. Python's float() also takes "1_0" (10),
# other scripts' digits and padding, and an ε misread spends budget for good.
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def parse_epsilon(text: str, name: str = "epsilon") -> float:
    """The ε a release asks to spend, written as a plain decimal number of at least MIN_EPSILON; a ValueError
    naming `name` and the text otherwise."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{name} must be a positive decimal number such as 0.5, got {text!r}")
    epsilon = float(text)
    if not MIN_EPSILON <= epsilon < float("inf"):
        raise ValueError(f"{name} must be a positive number, at least {MIN_EPSILON:g}, got {text!r}")
    return epsilon


@dataclass(frozen=True, slots=True)
class DpRequest:
    epsilon: float
    mechanism: Mechanism = Mechanism.LAPLACE
    delta: float = 1e-6


@dataclass(frozen=True, slots=True)
class Release:
    dataset: str
    product: str  # hourly-flows or od-matrix
    day: date
    description: str
    table: SuppressedTable
    row_labels: dict[str, str]  # area -> station name, where there is one
    dp: Spend | None

    def body(self) -> dict[str, Any]:
        t = self.table
        return {
            "dataset": self.dataset,
            "product": self.product,
            "tier": "aggregate",
            "day": self.day.isoformat(),
            "description": self.description,
            "k": t.k,
            "rows": t.rows,
            "rowLabels": [self.row_labels.get(r) for r in t.rows],
            "columns": t.columns,
            "cells": t.cells,
            "rowTotals": t.row_totals,
            "columnTotals": t.column_totals,
            "total": t.total,
            "suppressedCells": t.suppressed_count(),
            "differentialPrivacy": None
            if self.dp is None
            else {
                "mechanism": self.dp.mechanism.value,
                "epsilon": self.dp.epsilon,
                "delta": self.dp.delta,
                "scale": self.dp.scale,
            },
        }


def local_hours(day: date, zone: str) -> list[datetime]:
    """The UTC starts of the local hours of `day` (23, 24 or 25 of them), naive UTC."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)
    hours = int((end - start).total_seconds() // 3600)
    return [(start + timedelta(hours=h)).replace(tzinfo=None) for h in range(hours)]


class MobilityProducts:
    def __init__(
        self,
        store: MobilityStore,
        ledger: BudgetLedger,
        *,
        k: int,
        zone: str,
        flows_unit: Unit = Unit.CELL,
        od_window_hours: int = 24,
        cache: dict[tuple[str, date, str, tuple[str, ...], int, datetime | None], DayTables] | None = None,
        pin_configuration: bool = False,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.k = k
        self.zone = zone
        # One unit and one OD granularity per hub: a cell-hour table and a station-hour table of the same day
        # (or a day matrix and its three window matrices) are linked by sums, and suppression protects each
        # table on its own, so releasing both would let an attacker solve one with the other.
        self.flows_unit = flows_unit
        self.od_window_hours = od_window_hours
        self.od_windows = ["day"] if od_window_hours == 24 else ["00-08", "08-16", "16-24"]
        # ... and one per hub over time, which the settings alone do not make: the hub's releases (PrivacyService,
        # behind the API and `polis flows`) pin the configuration of the first one (`_pin_configuration`). Off
        # for analysis in process (tests, benchmarks), which works out several configurations on purpose. The
        # same releases freeze each day's tables at its first release (`_released_day`).
        self.pins_configuration = pin_configuration
        # Joint suppression of a day costs about a second: keep the result, shared by the hub's requests
        # (PrivacyService) and keyed by the data's newest time, so a new load recomputes it.
        self._days = {} if cache is None else cache

    def day_tables(self, dataset: str, day: date) -> DayTables:
        """The day's hourly departures and arrivals (the hub's unit) and its OD matrices, suppressed as one
        linear system. They are cut from the same trips, so they are linked by sums: the OD row totals of a
        coarse cell (per window) equal the departures of the stations or fine cells inside it in those
        hours, and the OD grand total equals the day's departures. Suppressing each table on its own would
        let an attacker who adds those equations solve hidden entries; `suppress_jointly` audits all the
        tables together with the links and hides more until nothing is pinned. Arrivals are counted by the
        day a trip ends, the OD by the day it starts: trips crossing midnight break every exact equation
        between them within one day (see PRIVACY.md)."""
        key = (dataset, day, self.flows_unit.value, tuple(self.od_windows), self.k, self.store.newest(dataset))
        if key in self._days:
            return self._days[key]
        unit = self.flows_unit.value
        areas = self.store.areas(dataset, unit)
        rows = [a.area for a in areas]
        hours = local_hours(day, self.zone)
        row_index = {a: i for i, a in enumerate(rows)}
        column_index = {h: j for j, h in enumerate(hours)}
        columns = [f"{h.isoformat()}Z" for h in hours]
        names: list[str] = []
        all_rows: list[list[str]] = []
        all_columns: list[list[str]] = []
        fulls: list[np.ndarray] = []
        for direction in Direction:
            counts = np.zeros((len(rows), len(hours)), dtype=np.int64)
            for area, hour, trips in self.store.hourly(dataset, unit, direction.value, day):
                if area in row_index and hour in column_index:
                    counts[row_index[area], column_index[hour]] += trips
            names.append(direction.value)
            all_rows.append(rows)
            all_columns.append(columns)
            fulls.append(with_margins(counts))
        od_areas = [a.area for a in self.store.areas(dataset, "od")]
        od_index = {a: i for i, a in enumerate(od_areas)}
        for window in self.od_windows:
            counts = np.zeros((len(od_areas), len(od_areas)), dtype=np.int64)
            for origin, destination, trips in self.store.od(dataset, day, WINDOWS[window]):
                if origin in od_index and destination in od_index:
                    counts[od_index[origin], od_index[destination]] += trips
            names.append(f"od/{window}")
            all_rows.append(od_areas)
            all_columns.append(od_areas)
            fulls.append(with_margins(counts))
        links = self._links(dataset, rows, hours, od_areas, fulls)
        masks = suppress_jointly(fulls, links, self.k)
        tables = DayTables(names, all_rows, all_columns, fulls, masks, links)
        self._days[key] = tables
        return tables

    def _links(
        self, dataset: str, rows: list[str], hours: list[datetime], od_areas: list[str], fulls: list[np.ndarray]
    ) -> list[Link]:
        """departures (table 0) vs each OD window (tables 2..): per group of areas connected through the
        stations' public places (a station lies in one flow area and one OD cell), the departures in the
        window's hours equal the OD row totals; and the grand totals. Only equations that hold on the counts
        are kept (a station whose place moved between files can blur a group; the attacker can't use an
        equation that is false either)."""
        if not rows or not od_areas:
            return []
        od_resolution = h3.get_resolution(od_areas[0])
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        flow_row = {a: i for i, a in enumerate(rows)}
        od_row = {a: i for i, a in enumerate(od_areas)}
        for station in self.store.areas(dataset, "station"):
            if station.lat is None or station.lon is None:
                continue
            flow_area = (
                station.area
                if self.flows_unit is Unit.STATION
                else h3.latlng_to_cell(station.lat, station.lon, h3.get_resolution(rows[0]))
            )
            od_area = h3.latlng_to_cell(station.lat, station.lon, od_resolution)
            if flow_area in flow_row and od_area in od_row:
                parent[find("f:" + flow_area)] = find("o:" + od_area)
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for area, i in flow_row.items():
            groups.setdefault(find("f:" + area), ([], []))[0].append(i)
        for area, i in od_row.items():
            groups.setdefault(find("o:" + area), ([], []))[1].append(i)
        zone = ZoneInfo(self.zone)
        local_window = [h.replace(tzinfo=UTC).astimezone(zone).hour // WINDOW_HOURS for h in hours]
        n_hours = len(hours)
        links: list[Link] = []
        for t, window in enumerate(self.od_windows, start=2):
            in_window = [j for j, w in enumerate(local_window) if w in WINDOWS[window]]
            n_od = len(od_areas)
            for flow_rows, od_rows in groups.values():
                if not flow_rows or not od_rows:
                    continue
                if window == "day":
                    plus = tuple((0, i, n_hours) for i in flow_rows)
                else:
                    plus = tuple((0, i, j) for i in flow_rows for j in in_window)
                links.append(Link(plus, tuple((t, g, n_od) for g in od_rows)))
            links.append(Link(tuple((0, len(rows), j) for j in in_window), ((t, n_od, n_od),)))
        return [link for link in links if link.holds(fulls)]

    @property
    def configuration(self) -> ReleaseConfiguration:
        return ReleaseConfiguration(self.flows_unit.value, self.od_window_hours, self.k)

    def _refuse_another_configuration(self, dataset: str, pinned: PinnedConfiguration | None) -> None:
        """The settings must be those the dataset's releases are pinned to (see `_pin_configuration`)."""
        if pinned is None or pinned.configuration == self.configuration:
            return
        fields = [f for f in SETTING_NAMES if getattr(pinned.configuration, f) != getattr(self.configuration, f)]
        was = ", ".join(f"{SETTING_NAMES[f]}={getattr(pinned.configuration, f)}" for f in fields)
        now = ", ".join(f"{SETTING_NAMES[f]}={getattr(self.configuration, f)}" for f in fields)
        raise ReleaseConfigurationPinned(
            f"{dataset}: this hub's releases are pinned to {was} since its first release "
            f"({pinned.pinned_at:%Y-%m-%d %H:%M} UTC), and it now runs with {now}: tables released under both could "
            f"be solved against each other for counts below k, so nothing is released under the new setting. Keep "
            f"{was}, or start a new hub (another --data-dir, with {dataset} ingested again) for the new one",
            pinned={SETTING_NAMES[f]: getattr(pinned.configuration, f) for f in SETTING_NAMES},
            configured={SETTING_NAMES[f]: getattr(self.configuration, f) for f in SETTING_NAMES},
        )

    def _pin_configuration(self, dataset: str) -> None:
        """Record the configuration of the dataset's first release in the hub's database, and refuse any later
        release under another. Tables released under two flow units or two OD granularities are linked by sums
        (a cell-hour count is a sum of station-hour counts; a day matrix the sum of its windows), and one table
        suppressed at two k, or under two joint systems, hides two different sets of entries: the union of what
        both show pins entries each hides (an LP on cell- and station-hour departures of 2017-02-01 pinned
        hidden station totals exactly). Pinned at the first release rather than at ingest: nothing can be
        combined before something is released, and until then an operator may still correct a setting. Any
        release pins (exact or noisy, flows or OD): every one is cut from the day's joint suppression, which
        depends on all three settings."""
        if self.pins_configuration:
            self._refuse_another_configuration(dataset, self.store.pin_configuration(dataset, self.configuration))

    def _check_configuration(self, dataset: str) -> None:
        """Refuse a release under settings other than the pinned ones before anything is drawn or charged."""
        if self.pins_configuration:
            self._refuse_another_configuration(dataset, self.store.pinned_configuration(dataset))

    def _check_day(self, dataset: str, day: date) -> None:
        if dataset not in self.store.datasets():
            if dataset not in MOBILITY_DATASETS:
                raise ResourceNotFound(
                    f"unknown mobility dataset {dataset!r}; known: {', '.join(sorted(MOBILITY_DATASETS))}"
                )
            raise ResourceNotFound(f"no mobility dataset {dataset} in this hub (polis ingest {dataset})")
        days = self.store.days(dataset)
        if day not in days:  # outside the days held, or a day inside them without a trip (no trips May-Oct 2017)
            raise ResourceNotFound(
                f"{dataset} has no data for {day}: it holds {len(days)} local days, {day_ranges(days)} (newest data "
                f"{self.store.newest(dataset)} UTC)"
            )

    def _noisy_table(self, exact: DayTables, name: str, noisy: np.ndarray) -> SuppressedTable:
        """A differentially private release of one of the day's products. Every entry the exact release hides
        stays hidden (its complementary suppression included), then small noisy counts and what would pin them
        are hidden too: so what it shows is a subset of what the exact release shows, plus noise. Suppressed on
        its own, a noisy table hid other entries than the exact one, and with little noise (ε = 9) a linear
        program over both and the day's other products pinned hidden station counts (red team, 2026-11-27).

        `noisy` is the cells as drawn, below 0 too. The totals are summed from them (post-processing: no more
        ε), so each is the true total plus zero-mean noise; summed from cells clamped at 0 they grew by the
        positive half of every empty cell's noise (a day's 569 departures released as 1,014 at ε = 1). Every
        number shown is at least k, so no cell shown is negative. The complementary suppression is worked out
        on the cells clamped at 0 and their sums, a table the audit can take (it assumes what it solves for is
        not negative); a total below k in the released table is hidden first whatever its clamped sum.

        `noisy` is drawn on `exact.counts(name)`, so both are laid out alike (the same areas and hours)."""
        t = exact.names.index(name)
        full = with_margins(noisy)
        audited = with_margins(np.maximum(noisy, 0))
        hidden = suppression_mask(audited, self.k, exact.masks[t] | (full < self.k))
        return released_table(full, hidden, exact.rows[t], exact.columns[t], self.k)

    def _released_day(self, dataset: str, day: date) -> DayTables:
        """The tables every release of the day is cut from: for the hub's releases, those of the day's first
        release, kept in the hub's database (`mobility_releases`) and never recomputed, whatever a later load
        changes. A day released again after late data (a trip of the day before ending on it, a month loaded
        again) would show the new counts beside the old ones, and the difference of two released totals is a
        count below k (758 then 759 arrivals on 2017-03-01, one cell's row 52 then 53: one trip, review of
        2026-11-30); recomputed masks differ too, so one release could fill the other's gaps. A noisy release
        freezes the day as well (it hides what the exact release hides, and draws on the same counts)."""
        if not self.pins_configuration:  # analysis in process: the counts as they are now
            return self.day_tables(dataset, day)
        frozen = self.store.frozen_day(dataset, day)
        if frozen is None:
            frozen = self.store.freeze_day(dataset, day, self.day_tables(dataset, day).to_json(self.configuration))
        configuration, tables = DayTables.from_json(frozen)
        if configuration != self.configuration:  # pragma: no cover - the pinned configuration is checked first
            raise RuntimeError(f"{dataset} {day} was released under {configuration}, not {self.configuration}")
        return tables

    def _release(
        self, counts: np.ndarray, dataset: str, product: str, dp: DpRequest | None
    ) -> tuple[np.ndarray, Spend | None]:
        if dp is None:
            return counts, None
        noisy, spend = release_noise(self.ledger, dataset, product, counts, dp.mechanism, dp.epsilon, dp.delta)
        return noisy, spend

    def hourly_flows(
        self, dataset: str, day: date, unit: Unit, direction: Direction, dp: DpRequest | None = None
    ) -> Release:
        self._check_day(dataset, day)
        self._check_configuration(dataset)
        if unit is not self.flows_unit:
            raise BadRequestData(
                f"this hub releases hourly flows per {self.flows_unit.value} only (POLIS_FLOWS_UNIT): tables per "
                "station and per cell of the same hours could be solved against each other"
            )
        self._pin_configuration(dataset)
        if dp is not None:  # a release refused for its ε must not freeze the day it never released
            self.ledger.require(dataset, dp.epsilon)
        tables = self._released_day(dataset, day)
        product = f"hourly-flows/{unit.value}/{direction.value}/{day.isoformat()}"
        counts, spend = self._release(tables.counts(direction.value), dataset, product, dp)
        table = (
            self._noisy_table(tables, direction.value, counts) if dp else tables.table(direction.value, self.k)
        )
        areas = self.store.areas(dataset, unit.value)
        return Release(
            dataset=dataset,
            product="hourly-flows",
            day=day,
            description=f"{direction.value} per {unit.value} per hour (columns: UTC start of each local hour)",
            table=table,
            row_labels={a.area: a.name for a in areas if a.name},
            dp=spend,
        )

    def od_matrix(self, dataset: str, day: date, window: str = "day", dp: DpRequest | None = None) -> Release:
        self._check_day(dataset, day)
        self._check_configuration(dataset)
        if window not in self.od_windows:
            raise BadRequestData(
                f"window must be one of {', '.join(self.od_windows)} (local time; POLIS_OD_WINDOW_HOURS decides "
                f"whether this hub releases daily or 8-hour matrices, never both), got {window!r}"
            )
        self._pin_configuration(dataset)
        if dp is not None:
            self.ledger.require(dataset, dp.epsilon)
        tables = self._released_day(dataset, day)
        product = f"od-matrix/{window}/{day.isoformat()}"
        counts, spend = self._release(tables.counts(f"od/{window}"), dataset, product, dp)
        table = self._noisy_table(tables, f"od/{window}", counts) if dp else tables.table(f"od/{window}", self.k)
        return Release(
            dataset=dataset,
            product="od-matrix",
            day=day,
            description=f"trips from origin (rows) to destination (columns) H3 cells, window {window} local time",
            table=table,
            row_labels={},
            dp=spend,
        )
