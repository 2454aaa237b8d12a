"""The line: the epidemic module takes region-level counts and flows; person-level records are refused."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from polis.epidemic.data import load_country
from polis.epidemic.guard import PersonLevelDataRefused, check_records
from polis.settings import Settings


def test_real_citi_bike_trips_are_refused_naming_the_field() -> None:
    path = Settings().datasets_dir / "mobility" / "citibike-jersey-city" / "JC-201702-citibike-tripdata.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        trips = [row for _, row in zip(range(20), csv.DictReader(handle), strict=False)]
    with pytest.raises(PersonLevelDataRefused) as error:
        check_records(trips, "flows")
    assert error.value.status == 400
    assert error.value.extra["field"] == "Trip Duration"
    assert "person-level" in error.value.detail and "Bike ID" in error.value.detail


@pytest.mark.parametrize(
    "record",
    [
        {"origin": "milano", "destination": "lodi", "date": "2020-03-01", "count": 1, "deviceId": "a1"},
        {"origin": "milano", "destination": "lodi", "date": "2020-03-01", "count": 1, "start_time": "08:01"},
        {"region": "milano", "date": "2020-03-01", "cases": 1, "patient_id": 17},
        {"region": "milano", "date": "2020-03-01", "cases": 1, "birthYear": 1950},
    ],
)
def test_a_person_level_field_anywhere_is_refused(record: dict[str, object]) -> None:
    kind = "counts" if "region" in record else "flows"
    fine = (
        {"region": "lodi", "date": "2020-03-01", "cases": 3}
        if kind == "counts"
        else {"origin": "lodi", "destination": "milano", "date": "2020-03-01", "count": 5}
    )
    with pytest.raises(PersonLevelDataRefused) as error:
        check_records([fine, record], kind)  # one bad record refuses the whole batch
    assert error.value.extra["field"] == next(k for k in record if k not in fine)


def test_region_level_aggregates_pass() -> None:
    counts = [{"region": "lodi", "date": "2020-03-01", "cases": 3}]
    flows = [{"origin": "milano", "destination": "lodi", "date": "2020-03-01", "count": 1200.0}]
    assert check_records(counts, "counts") == counts
    assert check_records(flows, "flows") == flows


def test_a_labels_file_with_a_person_column_is_refused(tmp_path: Path) -> None:
    source = Settings().datasets_dir / "epidemic" / "covid-europe-2020" / "France"
    target = tmp_path / "epidemic" / "covid-europe-2020" / "France"
    shutil.copytree(source, target)
    labels = target / "france_labels.csv"
    lines = labels.read_text(encoding="utf-8").splitlines()
    lines = [f"{line},device_id" if n == 0 else f"{line},A1B2" for n, line in enumerate(lines)]
    labels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PersonLevelDataRefused, match="device_id"):
        load_country(tmp_path, "France")
