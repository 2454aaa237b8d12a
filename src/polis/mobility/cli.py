"""`polis flows`, `polis privacy purge|budget`, and the gated path of `polis ingest citibike-jersey-city`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from polis.settings import Settings

if TYPE_CHECKING:
    from polis.store.duckdb_ import DuckDBStore

__all__ = ["ingest_gated", "register"]

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Hub files (default $POLIS_DATA_DIR or ./polis-data)")]


def ingest_gated(settings: Settings, store: DuckDBStore, name: str, console: Console) -> None:
    from polis.cli import fail, fail_missing_datasets
    from polis.mobility.ingest import ingest_mobility
    from polis.mobility.products import day_ranges

    try:
        summary = ingest_mobility(settings, store, name)
    except FileNotFoundError as error:
        fail_missing_datasets(name, error)
    except (PermissionError, ValueError) as error:  # the pseudonym secret, or a file the loader refuses: named
        fail(f"{name}: not ingested: {error}")
    console.print(
        f"{name}: {summary.trips:,} trips over {summary.days} days through the privacy gate in "
        f"{summary.seconds:.1f} s (pseudonymised, birth year and gender dropped, times to the hour); "
        f"{summary.raw_kept:,} raw pseudonymous trips kept (the last {settings.raw_retention_days:g} days of "
        f"data time), {summary.raw_purged:,} purged"
    )
    if summary.frozen_changed:
        # Said, not fixed: releasing a day twice with different counts gives away their difference (PRIVACY.md).
        console.print(
            f"{name}: this load changed the counts of {len(summary.frozen_changed)} day(s) already released, "
            f"{day_ranges(summary.frozen_changed)}: their products stay as first released (frozen, for good), "
            "since a second release with other counts would give away the difference"
        )


def _settings(data_dir: Path | None) -> Settings:
    from polis.cli import hub_settings

    return hub_settings(data_dir)


def _store(settings: Settings) -> DuckDBStore:
    """The hub's database, which must exist: a mistyped --data-dir is an error, not a new empty hub."""
    from polis.cli import open_hub, require_hub_file

    require_hub_file(settings.database_path)
    return open_hub(settings)


def _known_dataset(dataset: str) -> None:
    from polis.cli import fail
    from polis.mobility.ingest import MOBILITY_DATASETS

    if dataset not in MOBILITY_DATASETS:
        fail(f"--dataset: unknown mobility dataset {dataset!r}; known: {', '.join(sorted(MOBILITY_DATASETS))}", 2)


def _one_of(option: str, value: str, choices: list[str]) -> None:
    from polis.cli import fail

    if value not in choices:
        fail(f"{option} must be one of {', '.join(choices)}, got {value!r}", 2)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    console = Console()
    privacy = typer.Typer(
        help="The privacy gate: retention purge and differential-privacy budget.", no_args_is_help=True
    )
    app.add_typer(privacy, name="privacy")

    @app.command()
    def flows(
        day: Annotated[str, typer.Option(help="Local day, YYYY-MM-DD")],
        dataset: Annotated[str, typer.Option(help="Mobility dataset")] = "citibike-jersey-city",
        od: Annotated[bool, typer.Option("--od", help="The origin-destination matrix instead of hourly flows")] = False,
        by: Annotated[str | None, typer.Option(help="'station' or 'cell' (H3); default POLIS_FLOWS_UNIT")] = None,
        direction: Annotated[
            str | None, typer.Option(help="'departures' (default) or 'arrivals'; hourly flows only")
        ] = None,
        window: Annotated[
            str | None, typer.Option(help="With --od: day, or 00-08/08-16/16-24 (POLIS_OD_WINDOW_HOURS=8)")
        ] = None,
        epsilon: Annotated[
            str | None, typer.Option(help="Add differential-privacy noise spending this ε (a decimal, e.g. 0.5)")
        ] = None,
        mechanism: Annotated[
            str | None, typer.Option(help="'laplace' (default) or 'gaussian'; needs --epsilon")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="The whole release as JSON")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Released mobility products (suppressed below k, optionally noisy): hourly flows or the OD matrix."""
        from polis.cli import fail
        from polis.domain.errors import NgsiError
        from polis.mobility.products import WINDOWS, Direction, DpRequest, Unit, parse_epsilon
        from polis.ngsi_ld.params import parse_day
        from polis.privacy.dp import Mechanism
        from polis.privacy.service import PrivacyService

        # The request is checked as the API checks it (an option that does not apply is refused, not ignored),
        # before the hub is opened: exit 2, one line.
        _known_dataset(dataset)
        try:
            when = parse_day(day, "--day")
        except ValueError as error:
            fail(str(error), 2)
        if od:
            for option, value in (("--by", by), ("--direction", direction)):
                if value is not None:
                    fail(f"{option} is for hourly flows; --od releases the origin-destination matrix", 2)
            if window is not None:
                _one_of("--window", window, list(WINDOWS))
        elif window is not None:
            fail("--window is for the origin-destination matrix: add --od", 2)
        else:
            if by is not None:
                _one_of("--by", by, [u.value for u in Unit])
            _one_of("--direction", direction or Direction.DEPARTURES.value, [d.value for d in Direction])
        if mechanism is not None:
            if epsilon is None:
                fail("--mechanism needs --epsilon: the differential-privacy budget the release spends", 2)
            _one_of("--mechanism", mechanism, [m.value for m in Mechanism])
        spend: float | None = None
        if epsilon is not None:
            try:
                spend = parse_epsilon(epsilon, "--epsilon")
            except ValueError as error:
                fail(str(error), 2)

        settings = _settings(data_dir)
        store = _store(settings)
        try:
            service = PrivacyService(store, settings)
            dp = (
                DpRequest(spend, Mechanism(mechanism or Mechanism.LAPLACE.value), settings.dp_delta)
                if spend is not None
                else None
            )
            if od:
                chosen = window or ("day" if settings.od_window_hours == 24 else "00-08")
                release = service.products(dataset).od_matrix(dataset, when, chosen, dp)
            else:
                unit = Unit(by or settings.flows_unit)
                chosen_direction = Direction(direction or Direction.DEPARTURES.value)
                release = service.products(dataset).hourly_flows(dataset, when, unit, chosen_direction, dp)
        except (NgsiError, ValueError) as error:
            fail(str(getattr(error, "detail", error)))
        finally:
            store.close()
        body = release.body()
        if as_json:
            import orjson

            typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
            return
        # Long format (one published count per line): a 24-column or 19x19 grid does not fit a terminal.
        table = Table(title=f"{dataset} {body['product']} {day}: {body['description']}")
        for column in ("row", "column", "trips"):
            table.add_column(column, justify="right" if column == "trips" else "left")
        labels = dict(zip(body["rows"], body["rowLabels"], strict=True))
        for row, cells, total in zip(body["rows"], body["cells"], body["rowTotals"], strict=True):
            name = labels.get(row) or row
            for column, value in zip(body["columns"], cells, strict=True):
                if value is not None:
                    table.add_row(name, column, str(value))
            if total is not None:
                table.add_row(name, "total", str(total))
        for column, value in zip(body["columns"], body["columnTotals"], strict=True):
            if value is not None:
                table.add_row("total", column, str(value))
        table.add_row("total", "total", "-" if body["total"] is None else str(body["total"]))
        console.print(table)
        shown = sum(v is not None for row in body["cells"] for v in row)
        console.print(
            f"{shown} cells published, {body['suppressedCells']} suppressed (counts below k={body['k']} and their "
            "complements); --json for the whole table"
        )
        if body["differentialPrivacy"]:
            console.print(f"differential privacy: {body['differentialPrivacy']}")

    @privacy.command()
    def purge(data_dir: DataDir = None) -> None:
        """Delete raw pseudonymous records older than the retention period (counted in data time)."""
        from polis.mobility.store import MobilityStore

        settings = _settings(data_dir)
        store = _store(settings)
        try:
            purged = MobilityStore(store).purge(timedelta(days=settings.raw_retention_days))
        finally:
            store.close()
        for name, rows in purged.items() or {"(no mobility dataset)": 0}.items():
            console.print(f"{name}: {rows:,} raw pseudonymous records purged")

    @privacy.command()
    def budget(
        dataset: Annotated[str, typer.Option(help="Mobility dataset")] = "citibike-jersey-city",
        data_dir: DataDir = None,
    ) -> None:
        """The differential-privacy ε a dataset has spent, of its budget."""
        from polis.privacy.dp import BudgetLedger

        _known_dataset(dataset)
        settings = _settings(data_dir)
        store = _store(settings)
        try:
            spent = BudgetLedger(store, settings.dp_epsilon_budget).spent(dataset)
        finally:
            store.close()
        console.print(f"{dataset}: ε {spent:g} spent of {settings.dp_epsilon_budget:g}")
