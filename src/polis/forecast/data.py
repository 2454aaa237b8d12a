"""Panels: the shape every forecaster reads. A panel is a regular time grid x a fixed set of sensors,
with NaN where a reading is missing, an optional sensor adjacency, and the local time zone that the
time-of-day and day-of-week features are taken in (traffic follows local clocks, not UTC).

The adapters read the public files directly (through `settings.datasets_dir`) with the same entity ids
and UTC placement as `polis.ingest.datasets`, so a model trained here forecasts the entities the hub holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["DATASETS", "DatasetSpec", "Panel", "load_panel", "time_features"]


@dataclass(frozen=True, slots=True)
class Panel:
    """`values[t, i]` is sensor i's reading at `times[t]` (UTC, every `step_s` seconds); NaN = missing."""

    name: str
    times: np.ndarray  # datetime64[s], strictly regular
    values: np.ndarray  # float64 [T, N]
    entity_ids: tuple[str, ...]
    step_s: int
    timezone: str
    entity_type: str  # short NGSI-LD type term, e.g. TrafficFlowObserved
    attribute: str  # short attribute term, e.g. averageVehicleSpeed
    adjacency: np.ndarray | None = None  # [N, N] non-negative weights, zero diagonal

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape != (len(self.times), len(self.entity_ids)):
            raise ValueError(
                f"panel {self.name}: values shape {self.values.shape} does not match "
                f"{len(self.times)} times x {len(self.entity_ids)} sensors"
            )
        if self.adjacency is not None and self.adjacency.shape != (len(self.entity_ids),) * 2:
            raise ValueError(f"panel {self.name}: adjacency must be {len(self.entity_ids)} x {len(self.entity_ids)}")

    @property
    def n_sensors(self) -> int:
        return len(self.entity_ids)

    @property
    def steps_per_day(self) -> int:
        return 86400 // self.step_s

    def head(self, stop: int) -> Panel:
        """The first `stop` steps only: what a model may see when everything after is held out."""
        return replace(self, times=self.times[:stop], values=self.values[:stop])

    def sensors(self, count: int) -> Panel:
        """The first `count` sensors (tiny panels for tests)."""
        adjacency = None if self.adjacency is None else self.adjacency[:count, :count]
        return replace(
            self, values=self.values[:, :count], entity_ids=self.entity_ids[:count], adjacency=adjacency
        )


def time_features(times: np.ndarray, timezone: str, step_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(slot of the day, day of week Monday=0) in local time for each UTC instant in `times`.

    Computed from the UTC offset at each distinct day, so one zone lookup per day, not per step."""
    seconds = times.astype("datetime64[s]").astype(np.int64)
    zone = ZoneInfo(timezone)
    days = seconds // 86400
    offsets = np.empty(len(seconds), dtype=np.int64)
    for day in np.unique(days):
        # the offset at noon UTC of that day: good enough for slots, and exact away from DST-change nights
        instant = datetime.fromtimestamp(int(day) * 86400 + 43200, tz=UTC).astimezone(zone)
        offset = instant.utcoffset()
        offsets[days == day] = int(offset.total_seconds()) if offset is not None else 0
    local = seconds + offsets
    slot = (local % 86400) // step_s
    dow = ((local // 86400) + 3) % 7  # 1970-01-01 was a Thursday
    return slot.astype(np.int64), dow.astype(np.int64)


def weekly_sums(history: Panel, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total, count), each [7, slots, N]: the sum of the present `values` (rows aligned with
    `history.times`; NaN = missing) and how many there are, per local weekday and time-of-day slot."""
    slots, days = time_features(history.times, history.timezone, history.step_s)
    present = ~np.isnan(values)
    total = np.zeros((7, history.steps_per_day, values.shape[1]))
    count = np.zeros_like(total)
    np.add.at(total, (days, slots), np.where(present, values, 0.0))
    np.add.at(count, (days, slots), present)
    return total, count


# ---------------------------------------------------------------------------------------------- datasets


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset file not found: {path} (POLIS_DATASETS_DIR must point at the folder holding the public data)"
        )
    return path


def _grid(start_local: datetime, step_s: int, count: int) -> np.ndarray:
    start = np.datetime64(start_local.astimezone(UTC).replace(tzinfo=None), "s")
    return start + np.arange(count) * np.timedelta64(step_s, "s")


def _los_loop(datasets_dir: Path) -> Panel:
    folder = datasets_dir / "traffic" / "los-loop"
    path = _require(folder / "los_speed.csv")
    with path.open(encoding="utf-8") as handle:
        sensor_ids = handle.readline().strip().split(",")
    speeds = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    adjacency = np.loadtxt(_require(folder / "los_adj.csv"), delimiter=",", dtype=np.float64)
    np.fill_diagonal(adjacency, 0.0)
    return Panel(
        name="los-loop",
        times=_grid(datetime(2012, 3, 1, tzinfo=ZoneInfo("America/Los_Angeles")), 300, speeds.shape[0]),
        values=speeds,
        entity_ids=tuple(f"urn:ngsi-ld:TrafficFlowObserved:los-loop:{s}" for s in sensor_ids),
        step_s=300,
        timezone="America/Los_Angeles",
        entity_type="TrafficFlowObserved",
        attribute="averageVehicleSpeed",
        adjacency=adjacency,
    )


def _sz_taxi(datasets_dir: Path) -> Panel:
    """Zeros are kept: the published protocol scores them as values (they mean no taxi crossed the road)."""
    folder = datasets_dir / "traffic" / "sz-taxi"
    with np.load(_require(folder / "SZ_taxi.npz"), allow_pickle=False) as archive:
        data = np.asarray(archive["data"], dtype=np.float64)
    speeds = data.reshape(data.shape[0], -1)
    adjacency = np.loadtxt(_require(folder / "sz_adj.csv"), delimiter=",", dtype=np.float64)
    np.fill_diagonal(adjacency, 0.0)
    return Panel(
        name="sz-taxi",
        times=_grid(datetime(2015, 1, 1, tzinfo=ZoneInfo("Asia/Shanghai")), 900, speeds.shape[0]),
        values=speeds,
        entity_ids=tuple(f"urn:ngsi-ld:TrafficFlowObserved:sz-taxi:{road}" for road in range(speeds.shape[1])),
        step_s=900,
        timezone="Asia/Shanghai",
        entity_type="TrafficFlowObserved",
        attribute="averageVehicleSpeed",
        adjacency=adjacency,
    )


def _melbourne(datasets_dir: Path) -> Panel:
    """Rebuilt on a regular hourly UTC grid from the hub's own loader, so DST rows are placed the same way;
    hours with no row (the skipped or repeated hour) are missing."""
    from polis.domain.entity import LOCATION
    from polis.ingest.datasets import load_melbourne_pedestrians

    load = load_melbourne_pedestrians(datasets_dir, "1970-01-01T00:00:00Z")
    ids = tuple(entity["id"] for entity in load.entities)
    column = {entity_id: i for i, entity_id in enumerate(ids)}
    stamps = load.history.observed_at.astype("datetime64[s]")
    start, stop = stamps.min(), stamps.max()
    times = np.arange(start, stop + np.timedelta64(3600, "s"), np.timedelta64(3600, "s"))
    values = np.full((len(times), len(ids)), np.nan)
    rows = ((stamps - start) // np.timedelta64(3600, "s")).astype(np.int64)
    cols = np.fromiter((column[e] for e in load.history.entity_id), dtype=np.int64, count=len(rows))
    values[rows, cols] = load.history.value
    coords = np.full((len(ids), 2), np.nan)
    for i, entity in enumerate(load.entities):
        point = entity.get(LOCATION)
        if point:
            coords[i] = point[0]["value"]["coordinates"]
    adjacency = _distance_adjacency(coords)
    return Panel(
        name="melbourne-pedestrians",
        times=times,
        values=values,
        entity_ids=ids,
        step_s=3600,
        timezone="Australia/Melbourne",
        entity_type="CrowdFlowObserved",
        attribute="peopleCount",
        adjacency=adjacency,
    )


def _distance_adjacency(coords: np.ndarray) -> np.ndarray:
    """Gaussian-kernel weights on straight-line metres between (lon, lat) points, as Los-loop's are built."""
    lat = np.radians(np.nanmean(coords[:, 1]))
    xy = np.column_stack([coords[:, 0] * 111_320 * np.cos(lat), coords[:, 1] * 110_540])
    distance = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    weights = np.exp(-((distance / 300.0) ** 2))  # 300 m: a city block or two
    weights[~np.isfinite(weights) | (weights < 0.1)] = 0.0
    np.fill_diagonal(weights, 0.0)
    return weights


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """What a dataset's benchmark asks for: input window and horizons (in steps) as published."""

    loader: Callable[[Path], Panel]
    input_steps: int
    horizon_steps: tuple[int, ...]  # every step a model predicts
    report_steps: tuple[int, ...]  # the horizons the benchmark table shows
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "los-loop": DatasetSpec(_los_loop, 12, tuple(range(1, 13)), (3, 6, 9, 12), "Los-loop speeds, 5 min, 207 sensors"),
    "sz-taxi": DatasetSpec(_sz_taxi, 4, (1, 2, 3, 4), (1, 2, 3, 4), "SZ-taxi speeds, 15 min, 156 roads"),
    "melbourne-pedestrians": DatasetSpec(
        _melbourne, 24, (1, 3, 6, 24), (1, 3, 6, 24), "Melbourne pedestrian counts, hourly, 55 sensors"
    ),
}


def load_panel(name: str, datasets_dir: Path) -> Panel:
    spec = DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown forecasting dataset {name!r}; known: {', '.join(DATASETS)}")
    return spec.loader(Path(datasets_dir))
