"""`polis bench epidemic` and `polis epidemic ...`: thin typer adapters over polis.epidemic.

`polis bench epidemic` scores the models on the published files (the protocol); `polis epidemic risk |
forecast | scenario` read what the hub holds, from a running server (`--url`) or from the hub's database
under the data directory (polis.epidemic.views), and print the API's bodies (`--json`) or tables of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from polis.epidemic.views import LocalViews, RemoteViews

console = Console()

Country = Annotated[str, typer.Option("--country", help="England, France, Italy or Spain")]
DatasetsDir = Annotated[Path | None, typer.Option("--datasets-dir", help="Public datasets (default ../shared/data)")]


def _datasets_dir(datasets_dir: Path | None) -> Path:
    from polis.settings import Settings

    return datasets_dir or Settings().datasets_dir


def _check_country(country: str) -> None:
    from polis.epidemic.data import COUNTRIES

    if country not in COUNTRIES:
        console.print(f"[red]unknown country '{country}'[/red]; known: {', '.join(COUNTRIES)}")
        raise typer.Exit(2)


def bench_epidemic(
    country: Country,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {country, results: [{model, horizon_days, mae}]}")
    ] = False,
    learned: Annotated[bool, typer.Option(help="Include the LightGBM forecaster (slowest part)")] = True,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Rolling-origin comparison: from the 15th day on, fit on the days before each test day and predict
    1-14 days ahead; MAE per region averaged over test days, per horizon, against the two baselines."""
    from polis.cli import fail
    from polis.domain.errors import NgsiError
    from polis.epidemic.comparison import compare
    from polis.epidemic.data import load_country
    from polis.epidemic.evaluation import REPORTED_HORIZONS

    _check_country(country)
    folder = _datasets_dir(datasets_dir)
    try:  # read here, once (the loader caches it for `compare`): a missing or refused file is one line
        load_country(folder, country)
    except (OSError, ValueError, NgsiError) as error:
        fail(f"bench epidemic: {error}")
    result = compare(folder, country, learned=learned)
    if as_json:
        print(
            json.dumps(
                {
                    "country": country,
                    "results": result.run.table(),
                    "coverage_80": round(result.coverage_80, 4),
                    "goals": result.goals(),
                    "seconds": {k: round(v, 2) for k, v in result.run.seconds.items()},
                }
            )
        )
        return
    table = Table(title=f"{country}: MAE per region (rolling origin, {len(result.run.origins)} test days)")
    table.add_column("model")
    for h in REPORTED_HORIZONS:
        table.add_column(f"{h} d", justify="right")
    for name in result.run.predictions:
        mae = result.run.mae(name)
        table.add_row(name, *(f"{mae[h - 1]:.2f}" for h in REPORTED_HORIZONS))
    console.print(table)
    console.print(f"blend 80 % interval coverage on test days: {result.coverage_80:.1%}")
    for row in result.goals():
        verdict = "met" if row["met"] else "MISSED"
        console.print(
            f"  {row['horizon_days']:>2} d: blend {row['blend_mae']} vs better baseline "
            f"{row['better_baseline_mae']} ({row['reduction']:.1%} lower; goal {row['goal']:.0%}) {verdict}"
        )


Url = Annotated[
    str | None,
    typer.Option(help="A running hub's address (its database file is locked while it runs); default: the hub files"),
]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Hub files (default $POLIS_DATA_DIR or ./polis-data)")]
Tenant = Annotated[str, typer.Option(help="NGSI-LD tenant holding the data (`polis ingest` writes the default one)")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON body")]


def _views(url: str | None, data_dir: Path | None, tenant: str) -> LocalViews | RemoteViews:
    """The hub the command reads: the server at `url`, else the database under the data directory."""
    from polis.cli import hub_settings
    from polis.epidemic.views import LocalViews, RemoteViews

    settings = hub_settings(data_dir)
    return RemoteViews(url, settings, tenant) if url else LocalViews(settings, tenant)


def _or_exit(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from polis.cli import hub_errors

    with hub_errors():
        return work()


def scenario(
    country: Country,
    regions: Annotated[str, typer.Option(help="Comma-separated region names, as in the labels file")],
    reduction: Annotated[float, typer.Option(help="Percent of the trips removed (0-100)")],
    start: Annotated[str, typer.Option(help="First day of the restriction, YYYY-MM-DD")],
    mode: Annotated[
        str,
        typer.Option(help="'between' (among the regions), 'outOf' (leaving them) or 'cordon' (into or out of them)"),
    ] = "between",
    days: Annotated[int, typer.Option(help="Days to project")] = 30,
    as_json: AsJson = False,
    url: Url = None,
    data_dir: DataDir = None,
    tenant: Tenant = "",
) -> None:
    """Project cases per region with and without a movement restriction (expected cases and 80 % band),
    from what the hub holds."""
    _check_country(country)
    try:
        day = date.fromisoformat(start)
    except ValueError:
        console.print(f"[red]--start: not an ISO date: {start!r}[/red]")
        raise typer.Exit(2) from None
    chosen = [r.strip() for r in regions.split(",") if r.strip()]
    views = _views(url, data_dir, tenant)
    body = _or_exit(lambda: views.scenario(country, chosen, reduction, day, mode, days))
    if as_json:
        print(json.dumps(body))
        return
    table = Table(
        title=f"{country}: {days} days from {body['dates'][0]}, {reduction:g} % fewer trips ({mode}) from {day}"
    )
    for column in (
        "region",
        "no intervention",
        "daily 80 % bounds, summed",
        "with intervention",
        "daily bounds, summed",
    ):
        table.add_column(column, justify="left" if column == "region" else "right")
    rows = {r["region"]: r for r in body["regions"]}
    for name in body["intervention"]["regions"]:
        base, cut = rows[name]["baseline"], rows[name]["intervention"]
        table.add_row(
            name,
            f"{sum(base['expected']):.0f}",
            f"{sum(base['lower']):.0f}-{sum(base['upper']):.0f}",
            f"{sum(cut['expected']):.0f}",
            f"{sum(cut['lower']):.0f}-{sum(cut['upper']):.0f}",
        )
    console.print(table)
    totals = body["totals"]
    console.print(
        f"whole country: {totals['baseline']:.0f} projected cases without, {totals['intervention']:.0f} with "
        f"(expected cases, summed); computed in {body['seconds']:.2f} s"
    )


def _incomplete_note(body: dict[str, Any]) -> None:
    """The later days left out of an answer because too few regions have reported them yet."""
    later = body.get("incompleteDays") or []
    if later:
        days = ", ".join(f"{d['date']} ({d['regionsReported']} of {d['regions']} regions)" for d in later[:3])
        more = f" and {len(later) - 3} more" if len(later) > 3 else ""
        console.print(
            f"data to {body['lastCompleteDay']}, the last day (nearly) every region reported; left out until more "
            f"regions report them: {days}{more}"
        )


def risk(
    country: Country,
    top: Annotated[int, typer.Option(help="Regions shown", min=1)] = 15,
    as_json: AsJson = False,
    url: Url = None,
    data_dir: DataDir = None,
    tenant: Tenant = "",
) -> None:
    """Reproduction number (Cori et al., 95 % interval) and importation pressure per region, latest week,
    from what the hub holds."""
    _check_country(country)
    views = _views(url, data_dir, tenant)
    body = _or_exit(lambda: views.risk(country))
    if as_json:
        print(json.dumps(body))
        return
    known = [r for r in body["regions"] if r["reproductionNumber"] is not None]
    known.sort(key=lambda r: -r["reproductionNumber"]["mean"])
    table = Table(title=f"{country}, week to {body['asOf']}")
    for column in ("region", "R", "95 % interval", "cases (7 d)", "importation", "imported share"):
        table.add_column(column, justify="left" if column == "region" else "right")
    for r in known[:top]:
        R = r["reproductionNumber"]
        table.add_row(
            r["region"],
            f"{R['mean']:.2f}",
            f"{R['lower95']:.2f}-{R['upper95']:.2f}",
            f"{r['casesLast7Days']:.0f}",
            f"{r['importationPressure']:.2f}",
            f"{r['importedShare']:.1%}",
        )
    console.print(table)
    unknown = len(body["regions"]) - len(known)
    if unknown:
        from polis.epidemic.risk import MIN_CASES

        console.print(
            f"{unknown} of {len(body['regions'])} regions left out: fewer than {MIN_CASES} cases in the week, too few "
            "to estimate R (`--json` lists them with their cases)"
        )
    _incomplete_note(body)


def forecast(
    country: Country,
    horizons: Annotated[int, typer.Option(help="Days ahead (1-14)", min=1, max=14)] = 14,
    top: Annotated[int, typer.Option(help="Regions shown (most cases expected first)", min=1)] = 15,
    as_json: AsJson = False,
    url: Url = None,
    data_dir: DataDir = None,
    tenant: Tenant = "",
) -> None:
    """Cases per region ahead with 80 % intervals: the blend `polis bench epidemic` scores (learned model
    included), fitted once per data version and kept in the model registry under the data directory."""
    _check_country(country)
    views = _views(url, data_dir, tenant)

    def waiting(stage: str) -> None:
        if not as_json:
            console.print(f"[dim]fitting the forecast: {escape(stage)}[/dim]")

    if not url and not as_json:
        console.print("[dim]reading the hub; the model is fitted only if the data changed since the last fit[/dim]")
    body = _or_exit(lambda: views.forecast(country, horizons, waiting if url else None))
    if as_json:
        print(json.dumps(body))
        return
    rows = sorted(body["regions"], key=lambda r: -sum(r["cases"]))[:top]
    table = Table(title=f"{country}: cases a day from {body['dates'][0]} (80 % interval), data to {body['asOf']}")
    table.add_column("region")
    for h in sorted({1, min(7, horizons), horizons}):
        table.add_column(f"{h} d", justify="right")
    for r in rows:
        table.add_row(
            r["region"],
            *(
                f"{r['cases'][h - 1]:.1f} ({r['lower'][h - 1]:.1f}-{r['upper'][h - 1]:.1f})"
                for h in sorted({1, min(7, horizons), horizons})
            ),
        )
    console.print(table)
    weights = ", ".join(f"{name} {w[0]:.2f}" for name, w in body["weights"].items())
    console.print(f"blend weights, next day: {weights}; model {body['model']['registry']}")
    _incomplete_note(body)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command(name="epidemic")(bench_epidemic)
    group = typer.Typer(
        help="Epidemic response on region-level mobility: risk, forecasts and scenarios from the hub.",
        no_args_is_help=True,
    )
    group.command(name="scenario")(scenario)
    group.command(name="risk")(risk)
    group.command(name="forecast")(forecast)
    app.add_typer(group, name="epidemic")
