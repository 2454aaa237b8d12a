"""`polis bench epidemic` and `polis epidemic ...`: thin typer adapters over polis.epidemic."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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
    from polis.epidemic.comparison import compare
    from polis.epidemic.evaluation import REPORTED_HORIZONS

    _check_country(country)
    result = compare(_datasets_dir(datasets_dir), country, learned=learned)
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


def scenario(
    country: Country,
    regions: Annotated[str, typer.Option(help="Comma-separated region names, as in the labels file")],
    reduction: Annotated[float, typer.Option(help="Percent of the trips removed (0-100)")],
    start: Annotated[str, typer.Option(help="First day of the restriction, YYYY-MM-DD")],
    mode: Annotated[str, typer.Option(help="'between' (among the regions) or 'outOf' (leaving them)")] = "between",
    days: Annotated[int, typer.Option(help="Days to project")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON body")] = False,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Project cases per region with and without a movement restriction (expected cases and 80 % band)."""
    from polis.api.routes_epidemic import scenario_body
    from polis.domain.errors import NgsiError
    from polis.epidemic.data import load_country
    from polis.epidemic.scenario import run_scenario, validate

    _check_country(country)
    data = load_country(_datasets_dir(datasets_dir), country)
    try:
        day = date.fromisoformat(start)
    except ValueError:
        console.print(f"[red]--start: not an ISO date: {start!r}[/red]")
        raise typer.Exit(2) from None
    try:
        intervention = validate(data, [r.strip() for r in regions.split(",") if r.strip()], reduction, day, mode, days)
    except NgsiError as error:
        console.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(2) from None
    result = run_scenario(data, intervention, days)
    if as_json:
        print(json.dumps(scenario_body(result)))
        return
    index = [data.region_index(r) for r in intervention.regions]
    table = Table(
        title=f"{country}: {days} days from {result.dates[0]}, {reduction:g} % fewer trips ({mode}) from {day}"
    )
    for column in (
        "region",
        "no intervention",
        "daily 80 % bounds, summed",
        "with intervention",
        "daily bounds, summed",
    ):
        table.add_column(column, justify="left" if column == "region" else "right")
    for i in index:
        base, cut = result.baseline, result.restricted
        table.add_row(
            data.regions[i],
            f"{base.median[:, i].sum():.0f}",
            f"{base.lower[:, i].sum():.0f}-{base.upper[:, i].sum():.0f}",
            f"{cut.median[:, i].sum():.0f}",
            f"{cut.lower[:, i].sum():.0f}-{cut.upper[:, i].sum():.0f}",
        )
    console.print(table)
    totals = result.totals()
    console.print(
        f"whole country: {totals['baseline']:.0f} projected cases without, {totals['intervention']:.0f} with "
        f"(expected cases, summed); computed in {result.seconds:.2f} s"
    )


def risk(
    country: Country, top: Annotated[int, typer.Option(help="Regions shown")] = 15, datasets_dir: DatasetsDir = None
) -> None:
    """Reproduction number (Cori et al., 95 % interval) and importation pressure per region, latest week."""
    from polis.epidemic.data import load_country
    from polis.epidemic.risk import region_risk

    _check_country(country)
    data = load_country(_datasets_dir(datasets_dir), country)
    rows = sorted((r for r in region_risk(data) if r.r_mean is not None), key=lambda r: -(r.r_mean or 0.0))[:top]
    table = Table(title=f"{country}, week to {data.dates[-1]}")
    for column in ("region", "R", "95 % interval", "cases (7 d)", "importation", "imported share"):
        table.add_column(column, justify="left" if column == "region" else "right")
    for r in rows:
        table.add_row(
            r.region,
            f"{r.r_mean or 0:.2f}",
            f"{r.r_lower or 0:.2f}-{r.r_upper or 0:.2f}",
            f"{r.cases_last_7_days:.0f}",
            f"{r.importation_pressure:.2f}",
            f"{r.imported_share:.1%}",
        )
    console.print(table)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    bench.command(name="epidemic")(bench_epidemic)
    group = typer.Typer(help="Epidemic response on region-level mobility: scenarios and risk.", no_args_is_help=True)
    group.command(name="scenario")(scenario)
    group.command(name="risk")(risk)
    app.add_typer(group, name="epidemic")
