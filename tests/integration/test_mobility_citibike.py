"""Citi Bike Jersey City through the gate, end to end on the real files: `polis ingest`, a served hub and
`polis archive`, then a scan of the whole data directory (database, Parquet, logs) for the raw bike ids and
for birth years linked to trips; retention in data time; the released products (nothing below k, nothing
derivable, checked by linear programming); and the four-trip re-identification attack (PRIVACY.md)."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import h3
import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from polis.cli import app
from polis.domain.errors import BadRequestData
from polis.mobility.citibike import ZONE, trip_files
from polis.mobility.products import Direction, MobilityProducts, Release, Unit
from polis.mobility.store import MobilityStore
from polis.privacy.dp import BudgetLedger
from polis.privacy.suppression import suppress
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import start_server, stop_server
from tests.unit.test_privacy_suppression import (
    Cell,
    assert_jointly_protected,
    assert_protected,
    joint_attacker_intervals,
    with_totals,
)

DATASET = "citibike-jersey-city"
K = 10
NY = ZoneInfo(ZONE)


@dataclass(frozen=True)
class RawTrip:
    start: datetime  # local wall clock, to the minute
    end: datetime
    start_station: str
    end_station: str
    bike: str
    birth_year: str
    gender: str


def _local(text: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M"):
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    raise ValueError(text)


@pytest.fixture(scope="module")
def raw_trips() -> list[RawTrip]:
    """The attacker's (and the scanner's) view of the published files, read independently of Polis."""
    out = []
    for path in trip_files(Settings().datasets_dir):
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = [h.lower().replace(" ", "") for h in next(reader)]
            col = {name: header.index(name) for name in header}
            for row in reader:
                out.append(
                    RawTrip(
                        _local(row[col["starttime"]]).replace(second=0),
                        _local(row[col["stoptime"]]).replace(second=0),
                        row[col["startstationid"]],
                        row[col["endstationid"]],
                        row[col["bikeid"]],
                        row[col["birthyear"]],
                        row[col["gender"]],
                    )
                )
    return out


@dataclass
class Hub:
    data_dir: Path
    ingest_output: str
    products: MobilityProducts
    mobility: MobilityStore
    store: DuckDBStore


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("citibike")
    data_dir = root / "hub"
    env = {
        **os.environ,
        "POLIS_DATASETS_DIR": str(Settings().datasets_dir),
        "POLIS_PSEUDONYM_SECRET_FILE": str(root / "secrets" / "pseudonym.key"),  # outside the data dir
    }
    (data_dir / "logs").mkdir(parents=True)
    runner = CliRunner()
    run = runner.invoke(app, ["ingest", DATASET, "--data-dir", str(data_dir)], env=env)
    assert run.exit_code == 0, run.output[-2000:]
    (data_dir / "logs" / "ingest.log").write_text(run.output)
    # A served hub answering product requests, its log kept in the data dir too.
    log = (data_dir / "logs" / "server.log").open("wb")
    server = start_server(data_dir, env=env)
    try:
        for path in ("flows?day=2017-04-12", "od?day=2017-04-12", "trips?day=2018-01-30", "summary"):
            answer = httpx.get(f"{server.url}/polis/v1/mobility/{DATASET}/{path}", headers=server.headers, timeout=30)
            assert answer.status_code == 200, answer.text
            log.write(answer.content)  # what a client saw is part of the scan too
    finally:
        stop_server(server.process)
        log.write(server.log_path.read_bytes())  # the server's own log
        log.close()
    archive = runner.invoke(app, ["archive", "--data-dir", str(data_dir)], env=env)
    assert archive.exit_code == 0, archive.output[-2000:]
    assert os.stat(root / "secrets" / "pseudonym.key").st_mode & 0o777 == 0o600
    store = DuckDBStore(data_dir / "polis.duckdb")
    try:
        mobility = MobilityStore(store)
        products = MobilityProducts(mobility, BudgetLedger(store, 10.0), k=K, zone=ZONE)
        yield Hub(data_dir, run.output, products, mobility, store)
    finally:
        store.close()


def test_both_header_styles_and_both_time_formats_load(raw_trips: list[RawTrip], hub: Hub) -> None:
    assert len(raw_trips) == 99_570
    flows = hub.mobility._run(
        "SELECT unit, direction, sum(trips) FROM mobility_flows WHERE dataset = ? GROUP BY ALL", [DATASET]
    )
    assert {(u, d): int(n) for u, d, n in flows} == {
        (u, d): 99_570 for u in ("station", "cell") for d in ("departures", "arrivals")
    }
    # Per local day, departures match the files exactly: Feb (`2017-02-01 00:06:33`) and Nov
    # (`11/1/2017 0:04`) rows land on the right New York day, DST changes included.
    expected = Counter(t.start.date() for t in raw_trips)
    rows = hub.mobility._run(
        "SELECT day, sum(trips) FROM mobility_flows WHERE dataset = ? AND unit = 'station' "
        "AND direction = 'departures' GROUP BY day",
        [DATASET],
    )
    assert {d: int(n) for d, n in rows} == dict(expected)
    assert "99,570 trips" in hub.ingest_output


def test_the_data_dir_holds_no_bike_id_and_no_birth_year_linked_to_a_trip(raw_trips: list[RawTrip], hub: Hub) -> None:
    bikes = {t.bike for t in raw_trips}
    files = [p for p in hub.data_dir.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".duckdb", ".parquet", ".log"} <= kinds, kinds
    token = re.compile(rb"(?<![0-9A-Za-z])(\d{5})(?![0-9A-Za-z])")
    for path in files:
        found = {m.decode() for m in token.findall(path.read_bytes())} & bikes
        assert not found, (path, sorted(found)[:5])
    # In the database, column by column: no value is a bike id, no column is about birth or gender, and the
    # per-trip table holds nothing year-like beyond the trip's own hours.
    con = hub.store.connection()
    try:
        columns = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal AND schema_name = 'main'"
        ).fetchall()
        assert not [c for c in columns if re.search(r"birth|gender|bike|user_?type|duration", c[1], re.I)]
        for table, column in columns:
            query = f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM "{table}"'
            values = {str(v[0]) for v in con.execute(query).fetchall()}
            assert not values & bikes, (table, column)
        trip_columns = [c for t, c in columns if t == "mobility_trips"]
        assert set(trip_columns) == {
            "dataset", "day", "pseudonym", "start_hour", "end_hour", "start_station", "end_station", "start_cell",
            "end_cell",
        }  # fmt: skip
    finally:
        con.close()


def test_raw_pseudonymous_trips_are_kept_only_for_the_retention_period(raw_trips: list[RawTrip], hub: Hub) -> None:
    newest = hub.mobility.newest(DATASET)
    assert newest == datetime(2018, 2, 1, 4)  # the data's own clock: the last drop-off, to the hour (UTC)
    cutoff = newest - timedelta(days=7)
    kept = hub.mobility._run("SELECT min(end_hour), count(*) FROM mobility_trips WHERE dataset = ?", [DATASET])[0]
    assert kept[0] >= cutoff
    ends = [t.end.replace(tzinfo=NY).astimezone(ZoneInfo("UTC")).replace(tzinfo=None, minute=0) for t in raw_trips]
    assert kept[1] == sum(1 for e in ends if e >= cutoff) > 1000


def _releases(products: MobilityProducts, day: date) -> list[Release]:
    """Everything this hub releases about one day (defaults: hourly flows per cell, daily OD)."""
    out = [products.od_matrix(DATASET, day, window) for window in products.od_windows]
    for direction in Direction:
        out.append(products.hourly_flows(DATASET, day, products.flows_unit, direction))
    return out


SAMPLED_DAYS = [date(2017, 4, 12), date(2017, 11, 5), date(2018, 1, 30)]  # busy, DST change, within retention


def test_released_aggregates_have_no_cell_below_k_and_nothing_derivable(hub: Hub) -> None:
    rng = np.random.default_rng(4)
    checked = 0
    for day in SAMPLED_DAYS:
        for release in _releases(hub.products, day):
            table = release.table
            assert all(v >= K for v in table.released_values())
            published = sum(v is not None for row in table.cells for v in row)
            assert published + table.suppressed_count() == len(table.rows) * len(table.columns)
    with pytest.raises(BadRequestData, match="per cell only"):  # one unit per hub: tables never overlap
        hub.products.hourly_flows(DATASET, date(2017, 4, 12), Unit.STATION, Direction.DEPARTURES)
    # The attacker's LP on whole tables: the OD matrix of a busy day, and a cell-hour table where the
    # cells with small true counts (1..k-1) are attacked along with a sample of the rest.
    od = hub.products.od_matrix(DATASET, date(2017, 4, 12))
    counts = _truth(hub, od)
    checked += assert_protected(od.table, counts)
    flows = hub.products.hourly_flows(DATASET, date(2017, 4, 12), Unit.CELL, Direction.DEPARTURES)
    counts = _truth(hub, flows)
    _, hidden = flows.table.extended()
    small = [(int(i), int(j)) for i, j in np.argwhere(hidden[:-1, :-1] & (counts > 0) & (counts < K))]
    others = [(int(i), int(j)) for i, j in np.argwhere(hidden)]
    sample = small[:25] + [others[i] for i in rng.choice(len(others), 10, replace=False)]
    checked += assert_protected(flows.table, counts, sample)
    assert checked >= 250


def _truth(hub: Hub, release: Release) -> np.ndarray:
    """The unsuppressed counts behind a release, straight from the counts tables."""
    t = release.table
    counts = np.zeros((len(t.rows), len(t.columns)), dtype=np.int64)
    rows, cols = {r: i for i, r in enumerate(t.rows)}, {c: j for j, c in enumerate(t.columns)}
    if release.product == "od-matrix":
        for o, d, n in hub.mobility.od(DATASET, release.day, [0, 1, 2]):
            counts[rows[o], cols[d]] += n
    else:
        for area, hour, n in hub.mobility.hourly(DATASET, "cell", "departures", release.day):
            counts[rows[area], cols[f"{hour.isoformat()}Z"]] += n
    return counts


def _day_release(products: MobilityProducts, day: date) -> tuple[list[Release], list[str]]:
    """Everything a department granted the aggregate tier can ask about one day, through the product API."""
    releases = [products.hourly_flows(DATASET, day, products.flows_unit, d) for d in Direction]
    releases += [products.od_matrix(DATASET, day, w) for w in products.od_windows]
    return releases, [d.value for d in Direction] + products.od_windows


def _true_counts(hub: Hub, products: MobilityProducts, release: Release, name: str) -> np.ndarray:
    t = release.table
    counts = np.zeros((len(t.rows), len(t.columns)), dtype=np.int64)
    rows, cols = {r: i for i, r in enumerate(t.rows)}, {c: j for j, c in enumerate(t.columns)}
    if release.product == "od-matrix":
        windows = {"day": [0, 1, 2], "00-08": [0], "08-16": [1], "16-24": [2]}[name]
        for o, d, n in hub.mobility.od(DATASET, release.day, windows):
            counts[rows[o], cols[d]] += n
    else:
        for area, hour, n in hub.mobility.hourly(DATASET, products.flows_unit.value, name, release.day):
            counts[rows[area], cols[f"{hour.isoformat()}Z"]] += n
    return with_totals(counts)


def _attacker_links(hub: Hub, releases: list[Release], names: list[str]) -> list[tuple[list[Cell], list[Cell]]]:
    """The equations an attacker writes between a day's products from public knowledge only: the stations'
    places (public summary) put each station in one flow row and one OD cell; per connected group of those,
    the departures in an OD window's local hours equal the window's OD row totals, and the grand totals
    agree. Built here from scratch, not from the implementation's links."""
    departures = releases[0].table
    od_rows = releases[2].table.rows
    fine = h3.get_resolution(departures.rows[0]) if h3.is_valid_cell(departures.rows[0]) else None
    coarse = h3.get_resolution(od_rows[0])
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for s in hub.mobility.areas(DATASET, "station"):
        flow = s.area if fine is None else h3.latlng_to_cell(s.lat, s.lon, fine)
        parent[root("f" + flow)] = root("o" + h3.latlng_to_cell(s.lat, s.lon, coarse))
    local = [
        datetime.fromisoformat(c.removesuffix("Z")).replace(tzinfo=UTC).astimezone(ZoneInfo(ZONE)).hour // 8
        for c in departures.columns
    ]
    links = []
    n_hours, n_od = len(departures.columns), len(od_rows)
    for t, name in enumerate(names[2:], start=2):
        windows = {"day": [0, 1, 2], "00-08": [0], "08-16": [1], "16-24": [2]}[name]
        hours = [j for j, w in enumerate(local) if w in windows]
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for i, area in enumerate(departures.rows):
            groups.setdefault(root("f" + area), ([], []))[0].append(i)
        for g, area in enumerate(od_rows):
            groups.setdefault(root("o" + area), ([], []))[1].append(g)
        for flow_rows, od_group in groups.values():
            if flow_rows and od_group:
                links.append(([(0, i, j) for i in flow_rows for j in hours], [(t, g, n_od) for g in od_group]))
        links.append(([(0, len(departures.rows), j) for j in hours], [(t, n_od, n_od)]))
    assert n_hours == len(local)
    return links


@pytest.mark.parametrize(
    ("unit", "window_hours", "day"),
    [(Unit.CELL, 24, date(2017, 4, 12)), (Unit.CELL, 24, date(2017, 11, 5)), (Unit.STATION, 8, date(2017, 4, 12))],
)
def test_a_days_products_attacked_together_reveal_no_suppressed_count(
    hub: Hub, unit: Unit, window_hours: int, day: date
) -> None:
    """The gap suppression table by table leaves: the OD row totals of a coarse cell equal the departures of
    the stations (or fine cells) inside it. One LP attacker over all of a day's products and those equations
    finds every attacked suppressed entry at least 1 wide and holding its true value; with the same links,
    the tables suppressed one by one (the old release) leak on the station / 8-hour configuration."""
    products = MobilityProducts(
        hub.mobility, BudgetLedger(hub.store, 10.0), k=K, zone=ZONE, flows_unit=unit, od_window_hours=window_hours
    )
    started = time.perf_counter()
    releases, names = _day_release(products, day)
    elapsed = time.perf_counter() - started
    fulls = [_true_counts(hub, products, r, n) for r, n in zip(releases, names, strict=True)]
    links = _attacker_links(hub, releases, names)
    for plus, minus in links:  # the attacker's equations are true: the attack is sound
        assert sum(fulls[t][i, j] for t, i, j in plus) == sum(fulls[t][i, j] for t, i, j in minus)
    tables = [r.table for r in releases]
    # Attack what the links touch (hidden row totals and link cells, hidden totals) and a random sample.
    hidden = [(t, int(i), int(j)) for t, table in enumerate(tables) for i, j in np.argwhere(table.extended()[1])]
    in_links = {c for plus, minus in links for c in plus + minus}
    rng = np.random.default_rng(7)
    linked = [c for c in hidden if c in in_links or c[1] == fulls[c[0]].shape[0] - 1]
    others = [c for c in hidden if c not in set(linked)]
    targets = [linked[i] for i in rng.choice(len(linked), min(40, len(linked)), replace=False)]
    targets += [others[i] for i in rng.choice(len(others), 10, replace=False)]
    assert assert_jointly_protected(tables, fulls, links, targets) == len(targets)
    assert elapsed < 60  # a day's joint suppression, under the test machine's contention
    if unit is Unit.STATION:
        alone = [suppress(f[:-1, :-1], t.rows, t.columns, K) for f, t in zip(fulls, tables, strict=True)]
        hidden_alone = [
            (t, int(i), int(j)) for t, table in enumerate(alone) for i, j in np.argwhere(table.extended()[1])
        ]
        row_totals = [c for c in hidden_alone if c[0] == 0 and c[2] == fulls[0].shape[1] - 1]
        intervals = joint_attacker_intervals(alone, links, row_totals)
        assert any(high - low < 1 - 1e-6 for low, high in intervals.values())


def test_four_known_trips_do_not_single_out_a_rider(raw_trips: list[RawTrip], hub: Hub) -> None:
    """The attack of PRIVACY.md. A rider is someone with a (birth year, gender) pair; the attacker knows
    four of their trips (stations, start and end to the minute: what a neighbour or a photo reveals).
    On the published files, those four trips single the rider out; on the released products, every
    product cell containing a known trip either is suppressed or counts >= k trips, and nothing in the
    products links two trips, so the rider stays hidden among at least k."""
    days = set(SAMPLED_DAYS)
    by_rider: dict[tuple[str, str], list[RawTrip]] = defaultdict(list)
    for t in raw_trips:
        if t.birth_year not in ("", "NULL", "\\N") and t.start.date() in days:
            by_rider[(t.birth_year, t.gender)].append(t)
    riders = sorted((r for r, trips in by_rider.items() if len(trips) >= 4), key=lambda r: (-len(by_rider[r]), r))[:12]
    assert len(riders) >= 10
    everyone: dict[tuple[str, str, datetime], list[RawTrip]] = defaultdict(list)
    for t in raw_trips:
        everyone[(t.start_station, t.end_station, t.start)].append(t)
    releases = {day: _releases(hub.products, day) for day in days}
    stations = hub.mobility.areas(DATASET, "station")
    cell_of = {s.area: h3.latlng_to_cell(s.lat, s.lon, 8) for s in stations}
    cell_of |= {f"od:{s.area}": h3.latlng_to_cell(s.lat, s.lon, 7) for s in stations}
    singled_out_raw = 0
    smallest_set = 10**9
    for rider in riders:
        known = by_rider[rider][:4]
        # On the raw files: riders matching all four trips (exact stations and minutes).
        candidates: set[tuple[str, str]] | None = None
        for trip in known:
            matching = {(t.birth_year, t.gender) for t in everyone[(trip.start_station, trip.end_station, trip.start)]}
            candidates = matching if candidates is None else candidates & matching
        singled_out_raw += candidates == {rider}
        # On the released products: the anonymity set of each known trip in every product containing it.
        for trip in known:
            for release in releases[trip.start.date()]:
                for value in _cells_containing(release, trip, cell_of):
                    if value is not None:
                        assert value >= K
                        smallest_set = min(smallest_set, value)
    assert singled_out_raw >= len(riders) * 0.9  # the raw files give riders away
    assert smallest_set >= K  # the products never place a known trip among fewer than k


def _cells_containing(release: Release, trip: RawTrip, cell_of: dict[str, str]) -> list[int | None]:
    """Published numbers (cells and totals) whose count includes `trip`; the attacker places a trip in its
    cell from the stations' public coordinates."""
    t = release.table
    if release.product == "od-matrix":
        origin, destination = cell_of.get(f"od:{trip.start_station}"), cell_of.get(f"od:{trip.end_station}")
        if origin not in t.rows or destination not in t.columns:
            return [t.total]
        i, j = t.rows.index(origin), t.columns.index(destination)
        return [t.total, t.cells[i][j], t.row_totals[i], t.column_totals[j]]
    departures = "departures" in release.description
    local = trip.start if departures else trip.end
    hour = local.replace(tzinfo=NY).astimezone(ZoneInfo("UTC")).replace(tzinfo=None, minute=0)
    area = trip.start_station if departures else trip.end_station
    row = area if "per station" in release.description else cell_of.get(area)
    outs: list[int | None] = [t.total]
    column = f"{hour.isoformat()}Z"
    if column in t.columns:
        j = t.columns.index(column)
        outs.append(t.column_totals[j])
        if row in t.rows:
            i = t.rows.index(row)
            outs += [t.cells[i][j], t.row_totals[i]]
    return outs


def test_polis_flows_and_privacy_commands(hub: Hub) -> None:
    runner = CliRunner()
    data_dir = ["--data-dir", str(hub.data_dir)]
    shown = runner.invoke(app, ["flows", "--day", "2017-04-12", "--json", *data_dir])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["product"] == "hourly-flows" and "per cell" in body["description"]
    assert all(v is None or v >= K for row in body["cells"] for v in row)
    od = runner.invoke(app, ["flows", "--day", "2017-04-12", "--od", *data_dir])
    assert od.exit_code == 0 and "cells published" in od.output and "total" in od.output
    refused = runner.invoke(app, ["flows", "--day", "2017-04-12", "--by", "station", *data_dir])
    assert refused.exit_code == 1 and "per cell only" in refused.output
    noisy = runner.invoke(app, ["flows", "--day", "2017-04-12", "--od", "--epsilon", "0.5", *data_dir])
    assert noisy.exit_code == 0 and "laplace" in noisy.output
    budget = runner.invoke(app, ["privacy", "budget", *data_dir])
    assert "ε 0.5 spent of 10" in budget.output
    purged = runner.invoke(app, ["privacy", "purge", *data_dir])
    assert purged.exit_code == 0 and f"{DATASET}: 0 raw pseudonymous records purged" in purged.output
    # Ingesting the same files again changes nothing (days are rewritten whole).
    before = hub.mobility._run("SELECT count(*), sum(trips) FROM mobility_flows")
    raw = hub.mobility.raw_count(DATASET)
    again = runner.invoke(app, ["ingest", DATASET, *data_dir], env={"POLIS_PSEUDONYM_SECRET": "s" * 32})
    assert again.exit_code == 0, again.output
    assert hub.mobility._run("SELECT count(*), sum(trips) FROM mobility_flows") == before
    assert hub.mobility.raw_count(DATASET) == raw
