"""`polis bench forecast`, `polis train` and `polis forecast`. Heavy imports stay inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from polis.forecast.data import Panel

console = Console(width=None if Console().is_terminal else 200)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), console=console, transient=True)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


DatasetsDir = Annotated[
    Path | None, typer.Option(help="Public datasets (default $POLIS_DATASETS_DIR or ../shared/data)")
]


def _check_dataset(dataset: str) -> None:
    """Before anything is read: a name that is no forecasting dataset (an epidemic model's registry name
    included) is one line naming the datasets these commands serve."""
    from polis.cli import fail
    from polis.forecast.data import DATASETS

    if dataset not in DATASETS:
        fail(f"unknown dataset '{dataset}'; polis train and polis forecast serve {', '.join(DATASETS)} "
             "(epidemic forecasts: polis epidemic forecast COUNTRY)", 2)


def _read_panel(dataset: str, datasets_dir: Path) -> Panel:
    """The dataset's panel, or one line naming the missing file and where the public datasets are set."""
    from polis.cli import fail_missing_datasets
    from polis.forecast.data import load_panel

    try:
        return load_panel(dataset, datasets_dir)
    except FileNotFoundError as error:
        fail_missing_datasets(dataset, error)


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command(name="forecast")
    def bench_forecast(
        dataset: Annotated[str, typer.Option(help="los-loop, sz-taxi or melbourne-pedestrians")],
        protocol: Annotated[str, typer.Option(help="tgcn or fair (melbourne-pedestrians has its own)")] = "tgcn",
        quick: Annotated[bool, typer.Option(help="Small models: seconds, not minutes")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
        seed: Annotated[int, typer.Option(help="Random seed")] = 0,
        datasets_dir: Annotated[Path | None, typer.Option(help="Public datasets (default ../shared/data)")] = None,
    ) -> None:
        """Baselines, Polis models and published numbers side by side on one dataset and protocol."""
        from polis.forecast.bench import run_benchmark
        from polis.forecast.data import DATASETS
        from polis.forecast.protocols import PROTOCOLS
        from polis.settings import Settings

        if dataset not in DATASETS:
            console.print(f"[red]unknown dataset '{dataset}'[/red]; known: {', '.join(DATASETS)}")
            raise typer.Exit(2)
        if protocol not in PROTOCOLS:
            console.print(f"[red]unknown protocol '{protocol}'[/red]; known: {', '.join(PROTOCOLS)}")
            raise typer.Exit(2)
        settings = Settings(**({"datasets_dir": datasets_dir} if datasets_dir else {}))  # type: ignore[arg-type]
        panel = _read_panel(dataset, settings.datasets_dir)
        if as_json:
            rows, _ = run_benchmark(dataset, protocol, settings.datasets_dir, quick=quick, seed=seed, panel=panel)
        else:
            with _progress() as bar:
                task = bar.add_task(f"{dataset} / {protocol}", total=1.0)
                rows, _ = run_benchmark(dataset, protocol, settings.datasets_dir, quick=quick, seed=seed,
                                        panel=panel, progress=lambda what, done: bar.update(
                                            task, completed=done, description=what))
        if as_json:
            shown = "melbourne" if dataset == "melbourne-pedestrians" else protocol
            print(json.dumps({"dataset": dataset, "protocol": shown, "results": [r.to_json() for r in rows]}))
            return
        horizons = sorted({r.horizon_minutes for r in rows})
        table = Table(title=f"{dataset}, protocol {protocol}: MAE / RMSE / MAPE % (80 % interval coverage)")
        table.add_column("model")
        table.add_column("errors")
        for h in horizons:
            table.add_column(f"{h} min", justify="right")
        table.add_column("train s", justify="right")
        keys = list(dict.fromkeys((r.model, r.averaged, r.published) for r in rows))
        for model, averaged, published in keys:
            cells = {r.horizon_minutes: r for r in rows if (r.model, r.averaged, r.published) == (model, averaged,
                                                                                                 published)}
            texts = []
            for h in horizons:
                r = cells.get(h)
                if r is None:
                    texts.append("")
                elif published:
                    texts.append(f"{_fmt(r.mae)} / {_fmt(r.rmse)}")
                else:
                    texts.append(f"{_fmt(r.mae)} / {_fmt(r.rmse)} / {_fmt(r.mape, 1)} ({_fmt(r.coverage, 2)})")
            seconds = next(iter(cells.values())).train_seconds
            label = f"[italic]{model}[/italic]" if published else model
            table.add_row(label, "published" if published else ("mean up to" if averaged else "at step"), *texts,
                          _fmt(seconds, 1))
        console.print(table)

    @app.command()
    def train(
        dataset: Annotated[str, typer.Argument(help="los-loop, sz-taxi or melbourne-pedestrians")],
        model: Annotated[str, typer.Option(help="lightgbm, mlp, ensemble (both stacked) or a baseline")] = "lightgbm",
        quick: Annotated[bool, typer.Option(
            help="A smaller model (fewer LightGBM rounds, 3 MLP epochs), not an instant one: about two minutes "
                 "for los-loop's LightGBM on 2 cores")] = False,
        seed: Annotated[int, typer.Option(help="Random seed")] = 0,
        data_dir: Annotated[Path | None, typer.Option(help="Hub files (registry under DATA_DIR/models)")] = None,
        datasets_dir: DatasetsDir = None,
    ) -> None:
        """Train a forecaster on a whole dataset (the last 10 % for selection) and put it in the registry."""
        from polis.cli import hub_settings
        from polis.forecast.bench import build_models
        from polis.forecast.live import registry_for

        _check_dataset(dataset)
        models = build_models(dataset, quick, seed)
        chosen = [m for m in models if m.kind == model]
        if not chosen:
            known = ", ".join(dict.fromkeys(m.kind for m in models))
            console.print(f"[red]unknown model '{model}'[/red]; known for {dataset}: {known}")
            raise typer.Exit(2)
        settings = hub_settings(data_dir, datasets_dir)
        panel = _read_panel(dataset, settings.datasets_dir)
        import time

        started = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task(f"training {model} on {dataset}", total=1.0)
            chosen[0].fit(panel, int(len(panel.values) * 0.9),
                          lambda what, done: bar.update(task, completed=done, description=f"{model}: {what}"))
        seconds = time.perf_counter() - started
        record = registry_for(settings).save(chosen[0], dataset, "all-data", train_seconds=seconds,
                                             entity_type=panel.entity_type, attribute=panel.attribute,
                                             entity_ids=panel.entity_ids)
        console.print(f"trained {model} on {dataset} in {seconds:.1f} s: {record.path}")

    @app.command()
    def forecast(
        dataset: Annotated[str, typer.Argument(help="los-loop, sz-taxi or melbourne-pedestrians")],
        model: Annotated[str | None, typer.Option(help="Model kind (default: the registry's best)")] = None,
        sensors: Annotated[int, typer.Option(help="How many sensors to show", min=1)] = 10,
        data_dir: Annotated[Path | None, typer.Option(help="Hub files (registry under DATA_DIR/models)")] = None,
        datasets_dir: DatasetsDir = None,
    ) -> None:
        """Forecast from the end of a dataset's recording with a registered model."""
        import numpy as np

        from polis.cli import fail, hub_settings
        from polis.forecast.live import check_fits, registry_for
        from polis.forecast.registry import FORECAST_KINDS, ModelLoadError

        _check_dataset(dataset)
        if model is not None and model not in FORECAST_KINDS:
            fail(f"unknown model kind '{model}'; known: {', '.join(FORECAST_KINDS)}", 2)
        settings = hub_settings(data_dir, datasets_dir)
        registry = registry_for(settings)
        if not registry.candidates(dataset, model):
            if model is None:
                fail(f"no trained model for {dataset}; run `polis train {dataset}` first")
            registered = ", ".join(dict.fromkeys(r.kind for r in registry.records(dataset))) or "none"
            fail(f"no trained {model} model for {dataset}; run `polis train {dataset} --model {model}` first "
                 f"(registered for {dataset}: {registered})")
        panel = _read_panel(dataset, settings.datasets_dir)
        # a damaged or mismatched version is passed over for the one before it, each said in one line; none
        # left is one line too (with what to run), never a traceback
        with _progress() as bar:
            bar.add_task(f"loading the {model or 'best'} model of {dataset}", total=None)
            try:
                found = registry.load_usable(dataset, model, check=lambda record, fitted: check_fits(
                    record, fitted, panel), warn=lambda text: console.print(f"[yellow]{escape(text)}[/yellow]"))
            except ModelLoadError as error:
                fail(f"{error}; run `polis train {dataset}{f' --model {model}' if model else ''}` to register a "
                     "new version")
            assert found is not None  # candidates were there: one loaded, or ModelLoadError
            record, fitted = found
            result = fitted.predict(panel, np.array([len(panel.values) - 1]))
        minutes = panel.step_s // 60
        table = Table(title=f"{dataset}: {record.kind} v{record.version}, issued at {panel.times[-1]}Z")
        table.add_column("sensor")
        for step in result.steps:
            table.add_column(f"+{step * minutes} min", justify="right")
        for i in range(min(sensors, panel.n_sensors)):
            table.add_row(panel.entity_ids[i].rsplit(":", 1)[-1], *(
                f"{result.mean[0, j, i]:.1f} [{result.lower[0, j, i]:.1f}, {result.upper[0, j, i]:.1f}]"
                for j in range(len(result.steps))))
        console.print(table)
