"""The City of Melbourne pedestrian counts as one regular matrix of local hours x sensors, for the
gathering detector's evaluation (the hub itself reads the same counts from its store)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from polis.crowd.gathering import EPOCH

ZONE = ZoneInfo("Australia/Melbourne")
FOLDER = Path("crowd") / "melbourne-pedestrians"
ENTITY_PREFIX = "urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:"


@dataclass(frozen=True, slots=True)
class CountsPanel:
    entity_ids: list[str]
    names: list[str]
    points: list[tuple[float, float]]  # (longitude, latitude)
    first_hour: int  # local hour number of row 0
    counts: np.ndarray  # (hours, sensors) float, NaN = missing

    @property
    def logc(self) -> np.ndarray:
        return np.log1p(self.counts)

    def stamp(self, row: int) -> datetime:
        from datetime import timedelta

        return EPOCH + timedelta(hours=self.first_hour + row)


def load_counts(datasets_dir: Path) -> CountsPanel:
    """counts.csv as published: one row per local wall-clock hour. The filler row of the hour skipped when
    clocks go forward (all zeros) becomes missing, as it is in the hub's store."""
    folder = datasets_dir / FOLDER
    with (folder / "sensors.csv").open(newline="", encoding="utf-8") as handle:
        by_name = {row["name"]: row for row in csv.DictReader(handle)}
    with (folder / "counts.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    names = header[1:]
    counts = np.array([[float(c) if c else np.nan for c in row[1:]] for row in body])
    first = datetime.fromisoformat(body[0][0])
    first_hour = int((first - EPOCH).total_seconds() // 3600)
    for index, row in enumerate(body):
        local = datetime.fromisoformat(row[0])
        if int((local - EPOCH).total_seconds() // 3600) != first_hour + index:
            raise ValueError(f"{folder / 'counts.csv'}: row {index + 2} breaks the hourly grid")
        roundtrip = local.replace(tzinfo=ZONE).astimezone(ZONE).replace(tzinfo=None)
        if roundtrip != local:  # a wall-clock hour that did not exist
            counts[index] = np.nan
    return CountsPanel(
        entity_ids=[ENTITY_PREFIX + by_name[n]["sensor_id"] for n in names],
        names=names,
        points=[(float(by_name[n]["longitude"]), float(by_name[n]["latitude"])) for n in names],
        first_hour=first_hour,
        counts=counts,
    )
