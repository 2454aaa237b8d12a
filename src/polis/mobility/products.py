"""The released mobility products: hourly flows per station or H3 cell, and the origin-destination matrix
per day or 8-hour window at the coarser resolution. Every release is a table with margins through
`privacy.suppression` (no count below k, complementary suppression), optionally with differential-privacy
noise charged to the dataset's ε budget first. Nothing else about trips ever leaves the hub (except the
raw-pseudonymous tier, to departments granted it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from polis.domain.errors import BadRequestData, ResourceNotFound
from polis.mobility.store import MobilityStore
from polis.privacy.dp import BudgetLedger, Mechanism, Spend, release_noise
from polis.privacy.suppression import SuppressedTable, suppress


class Unit(StrEnum):
    STATION = "station"
    CELL = "cell"


class Direction(StrEnum):
    DEPARTURES = "departures"
    ARRIVALS = "arrivals"


WINDOWS = {"day": [0, 1, 2], "00-08": [0], "08-16": [1], "16-24": [2]}


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
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.k = k
        self.zone = zone
        # One unit and one OD granularity per hub: a cell-hour table and a station-hour table of the same day
        # (or a day matrix and its three window matrices) are linked by sums, and suppression protects each
        # table on its own, so releasing both would let an attacker solve one with the other.
        self.flows_unit = flows_unit
        self.od_windows = ["day"] if od_window_hours == 24 else ["00-08", "08-16", "16-24"]

    def _check_day(self, dataset: str, day: date) -> None:
        if dataset not in self.store.datasets():
            raise ResourceNotFound(f"no mobility dataset {dataset} in this hub (polis ingest {dataset})")
        newest = self.store.newest(dataset)
        days = self.store.days(dataset)
        if days and not days[0] <= day <= days[-1]:
            raise ResourceNotFound(
                f"{dataset} holds days {days[0]} to {days[-1]} (newest data {newest}); no data for {day}"
            )

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
        if unit is not self.flows_unit:
            raise BadRequestData(
                f"this hub releases hourly flows per {self.flows_unit.value} only (POLIS_FLOWS_UNIT): tables per "
                "station and per cell of the same hours could be solved against each other"
            )
        self._check_day(dataset, day)
        areas = self.store.areas(dataset, unit.value)
        rows = [a.area for a in areas]
        hours = local_hours(day, self.zone)
        row_index = {a: i for i, a in enumerate(rows)}
        column_index = {h: j for j, h in enumerate(hours)}
        counts = np.zeros((len(rows), len(hours)), dtype=np.int64)
        for area, hour, trips in self.store.hourly(dataset, unit.value, direction.value, day):
            if area in row_index and hour in column_index:
                counts[row_index[area], column_index[hour]] += trips
        product = f"hourly-flows/{unit.value}/{direction.value}/{day.isoformat()}"
        counts, spend = self._release(counts, dataset, product, dp)
        columns = [f"{h.isoformat()}Z" for h in hours]
        return Release(
            dataset=dataset,
            product="hourly-flows",
            day=day,
            description=f"{direction.value} per {unit.value} per hour (columns: UTC start of each local hour)",
            table=suppress(counts, rows, columns, self.k),
            row_labels={a.area: a.name for a in areas if a.name},
            dp=spend,
        )

    def od_matrix(self, dataset: str, day: date, window: str = "day", dp: DpRequest | None = None) -> Release:
        if window not in self.od_windows:
            raise BadRequestData(
                f"window must be one of {', '.join(self.od_windows)} (local time; POLIS_OD_WINDOW_HOURS decides "
                f"whether this hub releases daily or 8-hour matrices, never both), got {window!r}"
            )
        self._check_day(dataset, day)
        areas = [a.area for a in self.store.areas(dataset, "od")]
        index = {a: i for i, a in enumerate(areas)}
        counts = np.zeros((len(areas), len(areas)), dtype=np.int64)
        for origin, destination, trips in self.store.od(dataset, day, WINDOWS[window]):
            if origin in index and destination in index:
                counts[index[origin], index[destination]] += trips
        product = f"od-matrix/{window}/{day.isoformat()}"
        counts, spend = self._release(counts, dataset, product, dp)
        return Release(
            dataset=dataset,
            product="od-matrix",
            day=day,
            description=f"trips from origin (rows) to destination (columns) H3 cells, window {window} local time",
            table=suppress(counts, areas, areas, self.k),
            row_labels={},
            dp=spend,
        )
