"""The `polis` command: serve the hub, load datasets, run the demo city, check the installation."""

from __future__ import annotations

import importlib.metadata
import platform as py_platform
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from polis.settings import Settings

app = typer.Typer(help="Polis, the open city data platform: it counts, it never watches.", no_args_is_help=True)
console = Console()

DEMO_DATASETS = ("los-loop", "melbourne-pedestrians")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Hub files (default $POLIS_DATA_DIR or ./polis-data)")]
DatasetsDir = Annotated[Path | None, typer.Option("--datasets-dir", help="Public datasets (default ../shared/data)")]


def _settings(data_dir: Path | None = None, datasets_dir: Path | None = None, **extra: object) -> Settings:
    overrides: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if datasets_dir is not None:
        overrides["datasets_dir"] = datasets_dir
    return Settings(**overrides)  # type: ignore[arg-type]


def _serve(settings: Settings) -> None:
    import uvicorn

    from polis.api.app import create_app
    from polis.platform import Platform

    platform = Platform(settings)
    try:
        console.print(
            f"[bold]Polis[/bold] serving on http://{settings.host}:{settings.port} "
            f"(API docs at http://{settings.host}:{settings.port}/docs), data in {settings.data_dir}"
        )
        uvicorn.run(create_app(platform), host=settings.host, port=settings.port, log_level="warning", access_log=False)
    finally:
        platform.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Serve the NGSI-LD API from the hub in DATA_DIR."""
    _serve(_settings(data_dir, host=host, port=port))


def _ingest(settings: Settings, names: list[str]) -> None:
    from polis.ingest.datasets import DATASETS, ingest, load_dataset
    from polis.ngsi_ld.entities import utc_now
    from polis.store.duckdb_ import DuckDBStore

    for name in names:
        if name not in DATASETS:
            console.print(f"[red]unknown dataset '{name}'[/red]; known: {', '.join(sorted(DATASETS))}")
            raise typer.Exit(2)
    store = DuckDBStore(settings.database_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    table = Table(title="Ingested")
    for column in ("dataset", "entities", "new entities", "observations seen", "observations added", "seconds"):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    try:
        for name in names:
            try:
                load = load_dataset(name, settings.datasets_dir, utc_now())
            except FileNotFoundError as error:
                console.print(f"[red]{name}: {error}[/red] (set POLIS_DATASETS_DIR or --datasets-dir)")
                raise typer.Exit(1) from None
            with Progress(
                TextColumn(f"[bold]{name}[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task(name, total=None)

                def report(done: int, total: int, task_id: TaskID = task) -> None:
                    progress.update(task_id, completed=done, total=total)

                summary = ingest(store, "", load, progress=report)
            table.add_row(
                name,
                f"{summary.entities_written:,}",
                f"{summary.new_entities:,}",
                f"{summary.observations_seen:,}",
                f"{summary.observations_added:,}",
                f"{summary.seconds:.1f}",
            )
    finally:
        store.close()
    console.print(table)


@app.command(name="ingest")
def ingest_command(
    dataset: Annotated[list[str], typer.Argument(help="los-loop, sz-taxi, melbourne-pedestrians, montgomery-911")],
    data_dir: DataDir = None,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Load public datasets into the hub, with their full history. Running it twice adds nothing."""
    _ingest(_settings(data_dir, datasets_dir), dataset)


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000)")] = None,
    data_dir: DataDir = None,
    datasets_dir: DatasetsDir = None,
) -> None:
    """The demo city: load Los-loop and Melbourne (idempotent), then serve them."""
    settings = _settings(data_dir, datasets_dir, host=host, port=port)
    _ingest(settings, list(DEMO_DATASETS))
    _serve(settings)


@app.command()
def archive(
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Destination (default DATA_DIR/archive)")] = None,
) -> None:
    """Export all history to Parquet, partitioned by tenant and day."""
    from polis.store.duckdb_ import DuckDBStore

    settings = _settings(data_dir)
    destination = out or settings.archive_dir
    store = DuckDBStore(settings.database_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)
    try:
        files = store.archive(destination)
    finally:
        store.close()
    console.print(f"wrote {len(files)} Parquet files under {destination}")


@app.command()
def doctor(data_dir: DataDir = None, datasets_dir: DatasetsDir = None) -> None:
    """Versions, paths, and what is installed and reachable."""
    settings = _settings(data_dir, datasets_dir)
    table = Table(title="polis doctor", show_header=False)
    table.add_row("python", py_platform.python_version())
    for package in ("polis", "fastapi", "uvicorn", "duckdb", "pyarrow", "h3", "shapely", "orjson"):
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = "[red]not installed[/red]"
        table.add_row(package, version)
    table.add_row("data dir", f"{settings.data_dir.resolve()} ({'exists' if settings.data_dir.exists() else 'new'})")
    datasets_ok = settings.datasets_dir.is_dir()
    table.add_row("datasets dir", f"{settings.datasets_dir} ({'found' if datasets_ok else '[red]missing[/red]'})")
    if datasets_ok:
        from polis.ingest.datasets import DATASETS

        for name in sorted(DATASETS):
            table.add_row(f"  dataset {name}", "available")
    core = settings.datasets_dir / "ngsi-ld" / "ngsi-ld-core-context-v1.9.jsonld"
    table.add_row("core @context v1.9", "found" if core.is_file() else "[red]missing[/red]")
    for tool in ("mosquitto", "chromium"):
        table.add_row(tool, shutil.which(tool) or "not installed (needed by later features)")
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
