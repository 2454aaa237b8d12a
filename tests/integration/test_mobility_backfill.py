"""Loading an earlier month after a later one (a backfill) keeps the later month's days whole: a load rewrites the
days its trips start on, and the arrivals of a trip that crosses midnight into a day the load does not cover are
added to that day, not put in place of it (review of 2026-11-30: one February trip ending on 1 March deleted all
758 trips of 1 March). Real rows of the Citi Bike files, a few hundred, copied into the test's folders."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from polis.cli import app
from polis.mobility.citibike import DATASET, FOLDER
from polis.mobility.store import MobilityStore
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore

SECRET = "s" * 32
SOURCE = Settings().datasets_dir / FOLDER
ROWS = 150  # per month: the last trips of 28 February (one of them ends on 1 March), the first of 1 March
MARCH_1 = date(2017, 3, 1)


def month_slice(folder: Path, month: str, *, last: bool) -> None:
    """The header and the first (or last) ROWS trips of one month's file, as that month's file in `folder`."""
    lines = (SOURCE / f"JC-{month}-citibike-tripdata.csv").read_text().splitlines()
    target = folder / FOLDER / f"JC-{month}-citibike-tripdata.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join([lines[0], *(lines[-ROWS:] if last else lines[1 : ROWS + 1])]) + "\n")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three dataset folders: February's slice alone, March's alone, and both (what a full download holds)."""
    root = tmp_path_factory.mktemp("backfill")
    for name, months in (("feb", ["201702"]), ("mar", ["201703"]), ("both", ["201702", "201703"])):
        for month in months:
            month_slice(root / name, month, last=month == "201702")
    return {name: root / name for name in ("feb", "mar", "both")}


def ingest(hub: Path, folder: Path) -> str:
    run = CliRunner().invoke(
        app,
        ["ingest", DATASET, "--data-dir", str(hub), "--datasets-dir", str(folder)],
        env={"POLIS_PSEUDONYM_SECRET": SECRET},
    )
    assert run.exit_code == 0, run.output[-2000:]
    return run.output


def held(hub: Path) -> dict[str, Any]:
    """Everything the hub holds about each day: per unit and direction the hourly counts, the OD counts of every
    window, and the raw pseudonymous trips."""
    store = DuckDBStore(hub / "polis.duckdb")
    try:
        mobility = MobilityStore(store)
        out: dict[str, Any] = {}
        for day in mobility.days(DATASET):
            for unit in ("station", "cell"):
                for direction in ("departures", "arrivals"):
                    out[f"{day} {unit} {direction}"] = sorted(mobility.hourly(DATASET, unit, direction, day))
            out[f"{day} od"] = sorted(mobility.od(DATASET, day, [0, 1, 2]))
            out[f"{day} raw"] = mobility.raw_trips(DATASET, day)
        return out
    finally:
        store.close()


def total(counts: list[tuple[str, Any, int]]) -> int:
    return sum(n for *_, n in counts)


@pytest.fixture(scope="module")
def reference(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a hub holds after one load of both months."""
    hub = tmp_path_factory.mktemp("reference") / "hub"
    ingest(hub, folders["both"])
    return held(hub)


def test_the_slices_hold_a_trip_that_crosses_midnight_into_march(reference: dict[str, Any]) -> None:
    # The premise: 1 March's arrivals are its own trips (none of the first ones runs past midnight) and one trip
    # that started on 28 February.
    for unit in ("station", "cell"):
        departures, arrivals = (total(reference[f"{MARCH_1} {unit} {d}"]) for d in ("departures", "arrivals"))
        assert arrivals == departures + 1 == len(reference[f"{MARCH_1} raw"]) + 1 > 100


@pytest.mark.parametrize("order", [("mar", "feb"), ("feb", "mar"), ("mar", "feb", "mar", "feb")])
def test_months_loaded_one_at_a_time_in_any_order_hold_what_one_load_of_both_holds(
    folders: dict[str, Path], reference: dict[str, Any], tmp_path: Path, order: tuple[str, ...]
) -> None:
    hub = tmp_path / "hub"
    for name in order:
        ingest(hub, folders[name])
    assert held(hub) == reference


def test_a_later_month_survives_the_backfill_of_an_earlier_one(folders: dict[str, Path], tmp_path: Path) -> None:
    """The reviewer's case: March first, then a folder holding only February."""
    hub = tmp_path / "hub"
    ingest(hub, folders["mar"])
    before = held(hub)
    ingest(hub, folders["feb"])
    after = held(hub)
    for what in ("station departures", "cell departures", "od", "raw"):
        assert after[f"{MARCH_1} {what}"] == before[f"{MARCH_1} {what}"], what
    for unit in ("station", "cell"):  # the February trip that ended on 1 March is added to its arrivals
        assert total(after[f"{MARCH_1} {unit} arrivals"]) == total(before[f"{MARCH_1} {unit} arrivals"]) + 1


OLD_FLOWS = """CREATE TABLE mobility_flows (
    dataset VARCHAR NOT NULL, unit VARCHAR NOT NULL, direction VARCHAR NOT NULL, area VARCHAR NOT NULL,
    day DATE NOT NULL, hour TIMESTAMP NOT NULL, trips BIGINT NOT NULL)"""


@pytest.fixture
def old_hub(folders: dict[str, Path], tmp_path: Path) -> Iterator[Path]:
    """A hub whose counts were written before arrivals carried their trips' start day: March loaded, then its
    flows table rewritten in the old layout."""
    hub = tmp_path / "hub"
    ingest(hub, folders["mar"])
    store = DuckDBStore(hub / "polis.duckdb")
    try:
        con = store.connection()
        con.execute(
            "CREATE TABLE flows_copy AS SELECT dataset, unit, direction, area, day, hour, trips FROM mobility_flows"
        )
        con.execute("DROP TABLE mobility_flows")
        con.execute(OLD_FLOWS)
        con.execute("INSERT INTO mobility_flows SELECT * FROM flows_copy")
        con.execute("DROP TABLE flows_copy")
        con.close()
    finally:
        store.close()
    yield hub


def test_a_hub_written_before_the_change_is_migrated_and_backfilled_without_loss(
    old_hub: Path, folders: dict[str, Path], reference: dict[str, Any]
) -> None:
    before = held(old_hub)  # read through the migrated table
    assert total(before[f"{MARCH_1} station departures"]) == len(before[f"{MARCH_1} raw"]) > 100
    ingest(old_hub, folders["feb"])
    assert held(old_hub) == reference
