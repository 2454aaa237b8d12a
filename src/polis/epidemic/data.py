"""The covid-europe-2020 set (Panagopoulos et al., AAAI 2021) as arrays: daily new cases per region and
each day's region-to-region movement matrix.

Files, per country: `<country>_labels.csv` (a `name` column then one column per day; Italy's file also
has a leading unnamed index column and a trailing all-zero `id` column, both dropped: only columns whose
header is an ISO date are days) and `graphs/<CC>_<date>.csv` (`src,dst,count`).

Days with no graph file are filled explicitly, and `flow_observed` says which days were: a day after the
first graph file carries the previous day's flows forward (movement changes slowly day to day, and
only the past is used, so no leakage); days before the first graph file take the first file's flows
(the only movement known then). Both choices are reported by `CountryData.flow_note`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from polis.domain.errors import OperationNotSupported
from polis.epidemic.guard import check_flow_header, check_labels_header

COUNTRIES = {"England": "EN", "France": "FR", "Italy": "IT", "Spain": "ES"}
DATASET_FOLDER = Path("epidemic") / "covid-europe-2020"


class UnusableData(OperationNotSupported):
    """HTTP 422: what the hub holds for a country cannot go into the epidemic models (a negative count, too
    few days); the detail says what and where. The request was fine: the data has to change first."""

    title = "Data unusable by the epidemic models"


@dataclass(frozen=True, slots=True)
class CountryData:
    country: str
    regions: tuple[str, ...]
    dates: tuple[date, ...]
    cases: np.ndarray  # float64 (days, regions): daily new confirmed cases
    flows: np.ndarray  # float64 (days, regions, regions): flows[t, i, j] = movements i -> j on day t
    flow_observed: np.ndarray  # bool (days,): whether day t had its own graph file
    # Days after the calendar's end that too few regions reported yet (polis.epidemic.hub), with how many
    # did: left out of the models, reported with the answers. The published files have none.
    incomplete_days: tuple[tuple[date, int], ...] = ()

    @property
    def n_days(self) -> int:
        return len(self.dates)

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    def region_index(self, name: str) -> int:
        try:
            return self.regions.index(name)
        except ValueError:
            raise KeyError(name) from None

    def day_index(self, day: date) -> int:
        """Index of `day` on this country's calendar; days past the end extend it (scenarios project ahead)."""
        offset = (day - self.dates[0]).days
        if offset < 0:
            raise KeyError(day)
        return offset

    def flow_note(self) -> str:
        missing = int((~self.flow_observed).sum())
        if not missing:
            return "every day has its own movement file"
        first = int(np.argmax(self.flow_observed))
        return (
            f"{missing} of {self.n_days} days have no movement file: {first} day(s) before the first file take "
            f"its flows, later gaps carry the previous day's flows forward"
        )

    def truncated(self, days: int) -> CountryData:
        """The first `days` days only (what was known before day `days`)."""
        return CountryData(
            self.country,
            self.regions,
            self.dates[:days],
            self.cases[:days],
            self.flows[:days],
            self.flow_observed[:days],
        )


def country_folder(datasets_dir: Path, country: str) -> Path:
    if country not in COUNTRIES:
        raise ValueError(f"unknown country {country!r}; known: {', '.join(COUNTRIES)}")
    return Path(datasets_dir) / DATASET_FOLDER / country


def load_country(datasets_dir: Path, country: str) -> CountryData:
    """One country's cases and daily flows (cached per folder: the files are read only)."""
    return _load(country_folder(datasets_dir, country).resolve(), country)


@lru_cache(maxsize=8)
def _load(folder: Path, country: str) -> CountryData:
    labels = folder / f"{country.lower()}_labels.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"dataset file not found: {labels} (POLIS_DATASETS_DIR must point at the public data)")
    with labels.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or not any(rows[0]):
        raise ValueError(f"{labels}: the file is empty; expected a header (name, then one column per day)")
    header, body = rows[0], rows[1:]
    check_labels_header(header, labels)
    name_col = header.index("name")
    day_cols = [i for i, h in enumerate(header) if _is_date(h)]
    dates = tuple(date.fromisoformat(header[i]) for i in day_cols)
    if any((b - a).days != 1 for a, b in pairwise(dates)):
        raise ValueError(f"{labels}: day columns are not consecutive days")
    if not body:
        raise ValueError(f"{labels}: no regions below the header (a truncated file?)")
    needed = max([name_col, *day_cols]) + 1
    for line, row in enumerate(body, start=2):
        if len(row) < needed:
            raise ValueError(f"{labels}:{line}: {len(row)} field(s), the header has {len(header)} (a truncated file?)")
    regions = tuple(row[name_col] for row in body)
    if len(set(regions)) != len(regions):
        raise ValueError(f"{labels}: region names repeat")
    cases = np.array(
        [[_count(row[i], labels, line, "case count") for i in day_cols] for line, row in enumerate(body, start=2)],
        dtype=np.float64,
    ).T
    flows, observed = _load_flows(folder / "graphs", COUNTRIES[country], regions, dates)
    for array in (cases, flows, observed):
        array.setflags(write=False)
    return CountryData(country, regions, dates, cases, flows, observed)


def _count(text: str, path: Path, line: int, what: str) -> float:
    """A count as the files write it (an empty cell is 0), or ValueError naming path:line: a count that is
    not a number, negative, NaN or infinite would be ingested as given and then refused by every model (or,
    summed into a day's movement, make a whole pair vanish), so the file is refused here instead."""
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {what} {text[:20]!r} is not a number") from None
    if not 0 <= value < math.inf:  # NaN fails both
        raise ValueError(f"{path}:{line}: {what} {text[:20]!r} is negative or not finite; counts are 0 or more")
    return value


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _load_flows(
    graphs: Path, code: str, regions: tuple[str, ...], dates: tuple[date, ...]
) -> tuple[np.ndarray, np.ndarray]:
    index = {name: k for k, name in enumerate(regions)}
    n = len(regions)
    flows = np.zeros((len(dates), n, n), dtype=np.float64)
    observed = np.zeros(len(dates), dtype=bool)
    for t, day in enumerate(dates):
        path = graphs / f"{code}_{day.isoformat()}.csv"
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        check_flow_header(rows[0] if rows else [], path)
        for line, row in enumerate(rows, start=1):
            if len(row) != 3:
                raise ValueError(f"{path}:{line}: expected src,dst,count")
            src, dst, count = row
            if src not in index or dst not in index:
                raise ValueError(
                    f"{path}:{line}: region {src if src not in index else dst!r} is not in the labels file"
                )
            i, j = index[src], index[dst]
            total = float(flows[t, i, j]) + _count(count, path, line, "flow count")  # lines of one pair add up
            if total == math.inf:  # finite counts that add up past what a float holds
                raise ValueError(f"{path}:{line}: the flow counts of {src} -> {dst} add up past what a number holds")
            flows[t, i, j] = total
        observed[t] = True
    if not observed.any():
        raise FileNotFoundError(f"no movement files for {code} under {graphs}")
    fill_flow_gaps(flows, observed)
    return flows, observed


def fill_flow_gaps(flows: np.ndarray, observed: np.ndarray) -> None:
    """In place: days before the first observed day take its flows, later unobserved days carry the
    previous day's flows forward (see the module docstring; the hub reader makes the same choice)."""
    first = int(np.argmax(observed))
    flows[:first] = flows[first]
    for t in range(first + 1, len(flows)):
        if not observed[t]:
            flows[t] = flows[t - 1]
