"""The `polis` command: serve the hub, load datasets, run the demo city, check the installation."""

from __future__ import annotations

import importlib.metadata
import os
import platform as py_platform
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from polis.settings import Settings

if TYPE_CHECKING:
    from polis.platform import Platform
    from polis.store.duckdb_ import DuckDBStore

app = typer.Typer(help="Polis, the open city data platform: it counts, it never watches.", no_args_is_help=True)
bench_app = typer.Typer(help="Accuracy and speed benchmarks on the real datasets.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()
err_console = Console(stderr=True)

DEMO_DATASETS = ("los-loop", "melbourne-pedestrians", "citibike-jersey-city")
# Live forecasts in the demo: road speeds (replayed live) and pedestrian counts (forecast from the last
# recorded hour, the recording's end, until new counts arrive).
DEMO_FORECASTS = ("los-loop", "melbourne-pedestrians")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Hub files (default $POLIS_DATA_DIR or ./polis-data)")]
DatasetsDir = Annotated[Path | None, typer.Option("--datasets-dir", help="Public datasets (default ../shared/data)")]


def _settings(data_dir: Path | None = None, datasets_dir: Path | None = None, **extra: object) -> Settings:
    overrides: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if datasets_dir is not None:
        overrides["datasets_dir"] = datasets_dir
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:  # a POLIS_* variable (or an option) the settings refuse: name it, no traceback
        fail("; ".join(_setting_problem(problem) for problem in error.errors()))


def _setting_problem(problem: Mapping[str, Any]) -> str:
    field = str(problem.get("loc", ("?",))[0])
    return f"invalid setting POLIS_{field.upper()}: {problem.get('msg', 'not valid')} (got {problem.get('input')!r})"


# -- what every command does with a mistake it can name: one line on stderr, a non-zero exit, no traceback.
# The feature packages' commands use these too (imported inside their functions: this module imports them).


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` as one red line on stderr and exit with `code`."""
    err_console.print(f"[red]{escape(message)}[/red]", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def hub_errors() -> Iterator[None]:
    """Turn a `HubError` (the hub is missing, locked, not answering, or refused the request: worded for the
    user by polis.epidemic.views, or by `hub_json` below) into `fail`."""
    from polis.epidemic.views import HubError

    try:
        yield
    except HubError as error:
        fail(error.message, error.code)


def data_dir_problem(path: Path) -> str | None:
    """Why `path` cannot hold a hub's files, or None: it must be a directory, or not exist yet with its nearest
    existing ancestor a directory this user may write in. Creates nothing."""
    try:
        if path.is_dir():
            return None
        if path.exists():
            return f"the data directory {path} is a file, not a directory"
        ancestor = path.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"the data directory {path} cannot be created: {ancestor} is a file, not a directory"
    except OSError as error:
        return f"the data directory {path} cannot be used: {error.strerror or error}"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"the data directory {path} cannot be created: {ancestor} is not writable"
    return None


def hub_settings(data_dir: Path | None = None, datasets_dir: Path | None = None, **extra: object) -> Settings:
    """The settings of a command that works on a hub's files (`--data-dir`, else $POLIS_DATA_DIR or ./polis-data),
    the data directory checked before anything opens it (`data_dir_problem`). Every command taking --data-dir
    builds its settings here."""
    settings = _settings(data_dir, datasets_dir, **extra)
    problem = data_dir_problem(settings.data_dir)
    if problem is not None:
        fail(problem)
    return settings


def fail_missing_datasets(name: str, error: FileNotFoundError) -> NoReturn:
    """A public dataset file not where the settings say: the file, and the two ways to point elsewhere."""
    fail(f"{name}: {error} (set POLIS_DATASETS_DIR or --datasets-dir)")


def require_hub_file(path: Path) -> None:
    """Fail, naming `path`, unless the hub file a reading command needs exists: `polis archive` or `polis admin
    list` pointed at a mistyped --data-dir must say so, not create an empty hub there and report nothing."""
    if not path.is_file():
        fail(f"no hub at {path.parent}: {path.name} does not exist (is --data-dir, or POLIS_DATA_DIR, the hub's "
             "directory?)")


@contextmanager
def unlocked_hub(settings: Settings, advice: str) -> Iterator[None]:
    """Opening the hub's files inside this block: one a running server holds is one clear line (`fail`) naming
    the file and its holder, then `advice`, not DuckDB's traceback."""
    import duckdb

    from polis.epidemic.views import locked_hub

    try:
        yield
    except duckdb.IOException as error:
        locked = locked_hub(settings, error)
        if locked is None:
            raise
        fail(f"{locked}: {advice}")


def open_hub(settings: Settings) -> DuckDBStore:
    """The hub's database opened to write, as `ingest`, `archive`, `flows` and `privacy` do (created if new)."""
    from polis.store.duckdb_ import DuckDBStore

    with unlocked_hub(settings, "stop it first, or use the server's API while it runs"):
        return DuckDBStore(settings.database_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit)


def open_hub_read_only(settings: Settings) -> DuckDBStore:
    """The hub's database opened to read, as `polis epidemic` opens it: no database there is an error that
    names the path (nothing is created), and a database a running server holds says to ask it with --url."""
    from polis.epidemic.views import open_store_read_only

    with hub_errors():
        store: DuckDBStore = open_store_read_only(
            settings, hint="is --data-dir (or POLIS_DATA_DIR) the hub's directory? (or ask a running hub with --url)"
        )
    return store


def hub_json(url: str, path: str, settings: Settings, tenant: str = "", method: str = "GET", **kwargs: Any) -> Any:
    """The JSON body of a running hub's answer to `method path`, through the client `polis epidemic --url` uses
    (the key from POLIS_API_KEY or the data directory's admin key; the tenant header): nothing listening is
    "no hub answers at URL", and an answer other than 2xx is an error quoting the problem's title and detail
    (both as `HubError`: run it inside `hub_errors()`)."""
    import httpx

    from polis.epidemic.views import HubError, RemoteViews

    try:
        answer = RemoteViews(url, settings, tenant).call(method, path, **kwargs)
    except httpx.InvalidURL as error:
        raise HubError(f"--url {url}: {error}", code=2) from None
    if not answer.is_success:
        raise HubError(
            f"{url} answered {answer.status_code}: {_problem_text(answer)}", code=2 if answer.status_code == 400 else 1
        )
    try:
        return answer.json()
    except ValueError:
        raise HubError(f"{url} answered {answer.status_code} with no JSON body: is it a Polis hub?") from None


def _problem_text(answer: Any) -> str:
    """An error answer in a line: an NGSI-LD problem's title and detail, else the start of the body."""
    try:
        problem = answer.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
        if parts:
            return ": ".join(dict.fromkeys(parts))
    text = " ".join(str(answer.text).split())
    return text[:200] or answer.reason_phrase or "(no body)"


def _platform(settings: Settings) -> Platform:
    """The platform on the hub's files; a second server on a data directory one already serves is refused."""
    from polis.alerts.rules import RulesFileError
    from polis.platform import Platform

    with unlocked_hub(settings, "one server per data directory"):
        try:
            return Platform(settings)
        except RulesFileError as error:
            fail(str(error), 2)


def _serve(
    settings: Settings,
    on_ready: Callable[[], None] | None = None,
    forecast_datasets: tuple[str, ...] = (),
    forecast_model: str = "lightgbm",
) -> None:
    """Serve until stopped; `on_ready` runs once the hub (and its MQTT subscription) is up; live forecasts
    for `forecast_datasets` start in the background (a registered model of kind `forecast_model`, or a quick
    one trained first)."""
    import uvicorn

    from polis.api.app import create_app

    _require_core_context(settings)
    platform = _platform(settings)
    try:
        if forecast_datasets:
            platform.forecasts.start(forecast_datasets, kind=forecast_model, say=console.print)
        if settings.mqtt_url:
            platform.start_mqtt(settings.mqtt_url, wait_s=30.0)
            console.print(f"taking sensor streams from {settings.mqtt_url} (topics polis/<tenant>/<type>/<id>)")
        if on_ready is not None:
            on_ready()
        from polis.runtime import exit_on_sigterm, tune_for_service

        tune_for_service()
        exit_on_sigterm()
        console.print(
            f"[bold]Polis[/bold] serving on http://{settings.host}:{settings.port} "
            f"(API docs at http://{settings.host}:{settings.port}/docs), data in {settings.data_dir}"
        )
        console.print(
            f"dashboard at http://{settings.host}:{settings.port}/ ; the admin department's key is in "
            f"{settings.admin_key_path} (send it as 'Authorization: Bearer <key>'; `polis admin` makes others)"
        )
        uvicorn.run(
            create_app(platform), host=settings.host, port=settings.port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=3,  # open event streams (subscriptions) would otherwise hold a stop forever
        )
    finally:
        platform.close()


def _require_core_context(settings: Settings) -> None:
    """Refuse to serve (exit 2, one line) without the NGSI-LD core context: every request resolves its @context
    over that shipped file, so a server started without it would answer every request 500 instead."""
    from polis.domain.errors import NgsiError
    from polis.ngsi_ld.context import CORE_CONTEXT_FILE, ContextCache

    path = settings.datasets_dir.joinpath(*CORE_CONTEXT_FILE)
    advice = f"set POLIS_DATASETS_DIR (now {settings.datasets_dir}) to the shipped data, the folder holding ngsi-ld/"
    if not path.is_file():
        fail(f"cannot serve: the NGSI-LD core context {path} is missing; {advice}", 2)
    try:  # the file is there: it must also parse as a context (its cache directory is not touched)
        ContextCache(settings.datasets_dir, settings.context_cache_dir).core()
    except RuntimeError as error:  # unreadable or not JSON: its message names the file and the setting
        fail(f"cannot serve: {error}", 2)
    except KeyError as error:
        fail(f"cannot serve: the NGSI-LD core context {path} has no {error} member; {advice}", 2)
    except (LookupError, TypeError, ValueError, NgsiError) as error:
        fail(f"cannot serve: the NGSI-LD core context {path} is broken ({error}); {advice}", 2)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000)")] = None,
    data_dir: DataDir = None,
    mqtt: Annotated[
        str | None, typer.Option(help="Take sensor streams from this broker, mqtt://127.0.0.1:1883")
    ] = None,
    forecast: Annotated[
        list[str] | None,
        typer.Option(
            "--forecast",
            help="Serve live forecasts of this dataset's sensors (repeatable: los-loop, sz-taxi, "
            "melbourne-pedestrians) with the registry's latest model, or a quick one trained first",
        ),
    ] = None,
    forecast_model: Annotated[
        str,
        typer.Option(
            help="The model kind those forecasts come from: lightgbm, ensemble (LightGBM and MLP stacked: "
            "lower errors on SZ-taxi, twice the training), mlp or a baseline",
        ),
    ] = "lightgbm",
) -> None:
    """Serve the NGSI-LD API from the hub in DATA_DIR (and ingest MQTT streams with --mqtt)."""
    from polis.forecast.data import DATASETS as FORECAST_DATASETS
    from polis.forecast.registry import FORECAST_KINDS

    unknown = [name for name in forecast or () if name not in FORECAST_DATASETS]
    if unknown:
        console.print(f"[red]no forecasts for {', '.join(unknown)}[/red]; known: {', '.join(FORECAST_DATASETS)}")
        raise typer.Exit(2)
    if forecast_model not in FORECAST_KINDS:  # the kinds `polis train` makes for these datasets
        fail(f"unknown model kind '{forecast_model}'; known: {', '.join(FORECAST_KINDS)}", 2)
    datasets = tuple(dict.fromkeys(forecast or ()))  # each once, however often named
    _serve(hub_settings(data_dir, host=host, port=port, mqtt_url=mqtt), forecast_datasets=datasets,
           forecast_model=forecast_model)


def ingestible() -> dict[str, str]:
    """Every dataset `polis ingest` takes, with its description: entity datasets and the person-level ones that
    go through the privacy gate."""
    from polis.ingest.datasets import DATASETS
    from polis.mobility.ingest import MOBILITY_DATASETS

    entities = {name: info.description for name, info in DATASETS.items()}
    return {**entities, **{name: info.description for name, info in MOBILITY_DATASETS.items()}}


def _check_pseudonym_secret(settings: Settings, name: str) -> None:
    from polis.mobility.ingest import pseudonymiser_for

    try:
        pseudonymiser_for(settings)
    except (PermissionError, ValueError) as error:
        fail(f"{name}: not ingested: {error}")


def _ingest(settings: Settings, names: list[str]) -> None:
    import csv

    from polis.domain.errors import NgsiError
    from polis.ingest.datasets import ingest, load_dataset
    from polis.mobility.cli import ingest_gated
    from polis.mobility.ingest import MOBILITY_DATASETS
    from polis.ngsi_ld.entities import utc_now

    known = ingestible()
    for name in names:
        if name not in known:
            console.print(f"[red]unknown dataset '{name}'[/red]; known: {', '.join(sorted(known))}")
            raise typer.Exit(2)
    # An existing hub is opened at once (one a server holds is refused before any loading); a new one only
    # once a dataset has loaded, so an ingest that fails on its files leaves no empty hub behind.
    store = open_hub(settings) if settings.database_path.exists() else None
    table = Table(title="Ingested")
    for column in ("dataset", "entities", "new entities", "observations seen", "observations added", "seconds"):
        table.add_column(column, justify="right" if column != "dataset" else "left")
    try:
        for name in names:
            if name in MOBILITY_DATASETS:  # person-level: through the privacy gate, never as entities
                if store is None:
                    _check_pseudonym_secret(settings, name)  # refused before a new hub is made for it
                store = store or open_hub(settings)
                ingest_gated(settings, store, name, console)
                continue
            try:
                load = load_dataset(name, settings.datasets_dir, utc_now())
            except FileNotFoundError as error:
                fail_missing_datasets(name, error)
            except (ValueError, csv.Error, NgsiError) as error:  # a file the loader refuses: it names file and why
                fail(f"{name}: not ingested: {error}")
            except OSError as error:  # there but unreadable (permissions, an I/O error)
                fail(f"{name}: not ingested: cannot read {error.filename or 'a file'}: {error.strerror or error}")
            store = store or open_hub(settings)
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
        if store is not None:
            store.close()
    if table.row_count:  # gated mobility datasets print their own line
        console.print(table)


@app.command(name="ingest")
def ingest_command(
    dataset: Annotated[
        list[str],
        typer.Argument(
            help="los-loop, sz-taxi, melbourne-pedestrians, montgomery-911, covid-europe-2020, citibike-jersey-city "
            "(`polis doctor` lists them with what they hold)"
        ),
    ],
    data_dir: DataDir = None,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Load public datasets into the hub, with their full history. Running it twice adds nothing."""
    _ingest(hub_settings(data_dir, datasets_dir), dataset)


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default 8000)")] = None,
    data_dir: DataDir = None,
    datasets_dir: DatasetsDir = None,
    catch_up: Annotated[
        float, typer.Option(min=0, max=168, help="Hours of readings published at once on start, before the clock")
    ] = 6.0,
) -> None:
    """The demo city: load Los-loop, Melbourne and the Jersey City bike trips (through the privacy gate;
    idempotent), install the demo alert rules, start a Mosquitto broker, serve the hub with MQTT ingest and
    live forecasts, and replay Los-loop's recorded readings as live sensors: each at its recorded weekday and
    time of day in the current week, when the clock reaches it (the last --catch-up hours at once)."""
    import threading

    from polis.alerts.demo import install_demo_rules
    from polis.ingest.broker import start_broker
    from polis.ingest.replay import replay_live

    settings = hub_settings(data_dir, datasets_dir, host=host, port=port)
    _ingest(settings, list(DEMO_DATASETS))
    install_demo_rules(settings)  # congestion, incidents and crowding alerts for the demo city
    broker = start_broker(settings.data_dir / "mosquitto")
    settings.mqtt_url = broker.url
    stop = threading.Event()

    def caught_up(readings: int) -> None:
        console.print(f"live: caught up with the clock ({readings:,} readings); a reading per sensor every 5 minutes")

    def live() -> None:
        try:
            replay_live("los-loop", settings.datasets_dir, broker.url, stop=stop, catch_up_hours=catch_up,
                        on_caught_up=caught_up)
        except Exception as error:  # the demo keeps serving even if the live feed ends badly
            console.print(f"[yellow]live replay stopped: {error}[/yellow]")

    feeder = threading.Thread(target=live, name="polis-demo-replay", daemon=True)

    def go_live() -> None:  # only once ingest is subscribed: a fresh broker keeps nothing for absent subscribers
        feeder.start()
        console.print(
            f"live: Los-loop's recorded readings through {broker.url}, each at its recorded weekday and time of day "
            f"this week, as the clock reaches it (the last {catch_up:g} hours at once)"
        )

    try:
        _serve(settings, on_ready=go_live, forecast_datasets=DEMO_FORECASTS)
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(10)
        broker.stop()


@app.command()
def archive(
    data_dir: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="Destination (default DATA_DIR/archive)")] = None,
) -> None:
    """Export all history to Parquet, partitioned by tenant and day (replacing the previous archive there)."""
    settings = hub_settings(data_dir)
    require_hub_file(settings.database_path)
    # resolved: an archive folder that is a link to a bigger disk is swapped there, not beside the link
    destination = (out or settings.archive_dir).resolve()
    if destination.exists() and not _holds_only_an_archive(destination):
        fail(f"{destination} holds files that are not a Polis archive: give a new or empty folder (--out)")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"cannot write the archive beside {destination}: {error.strerror or error} (choose another --out)")
    with _archive_lock(destination):
        _clear_archive_leftovers(destination)
        files = _write_archive(settings, destination)
    console.print(f"wrote {len(files)} Parquet files under {destination} (readable by their owner only)")


def _write_archive(settings: Settings, destination: Path) -> list[Path]:
    """Write the archive whole into a private folder beside `destination`, then swap it in: a partition of a
    day whose history was deleted since the last run must not survive in it, and the counts are below k only
    inside the hub. Its siblings are named `.NAME.partial-PID` and `.NAME.old-PID` (`_archive_leftover`)."""
    from polis.mobility.store import MobilityStore

    staging = destination.parent / f".{destination.name}.partial-{os.getpid()}"
    try:
        staging.mkdir(mode=0o700)
    except OSError as error:
        fail(f"cannot write the archive beside {destination}: {error.strerror or error} (choose another --out)")
    try:
        store = open_hub(settings)
        try:
            files = store.archive(staging)
            files += MobilityStore(store).archive(staging / "mobility")  # gated counts only, never raw trips
        finally:
            store.close()
        for path in staging.rglob("*"):  # DuckDB writes with the process umask
            path.chmod(0o700 if path.is_dir() else 0o600)
        old = destination.parent / f".{destination.name}.old-{os.getpid()}"
        try:
            if destination.exists():
                destination.rename(old)
            staging.rename(destination)
        except OSError as error:  # e.g. the folder is a mount point
            if old.exists() and not destination.exists():
                old.rename(destination)  # the previous archive back in place
            fail(f"cannot put the new archive in place at {destination}: {error.strerror or error} "
                 "(give a folder inside a mount point, not the mount point itself)")
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files


@contextmanager
def _archive_lock(destination: Path) -> Iterator[None]:
    """One `polis archive` at a time per destination: an exclusive lock on `.NAME.lock` beside it. The kernel
    drops the lock when its holder dies, however it dies, so a run that holds it knows every `.NAME.partial-PID`
    or `.NAME.old-PID` there is a killed run's. The holder removes the file when done (a killed one leaves it,
    and the next run takes it over); a run that locked a file removed meanwhile locks the new one instead."""
    import fcntl

    path = destination.parent / f".{destination.name}.lock"
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            fail(f"cannot write the archive beside {destination}: {error.strerror or error} (choose another --out)")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            fail(f"another `polis archive` is writing {destination} now: wait for it to finish")
        if _same_file(descriptor, path):
            break
        os.close(descriptor)  # its holder finished and removed it between our open and our lock
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: whoever opened it meanwhile sees it is gone and starts over
        os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether the open file is still the one at `path`."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _archive_leftover(destination: Path) -> re.Pattern[str]:
    """The names `_write_archive` gives its staging folder and the previous archive while it swaps them."""
    return re.compile(rf"\.{re.escape(destination.name)}\.(partial|old)-[0-9]+\Z")


def _clear_archive_leftovers(destination: Path) -> None:
    """Remove what a killed `polis archive` left beside `destination` (call it holding `_archive_lock`): its
    staging folder, and the previous archive it had moved aside, which goes back in place instead if the
    run died before putting the new one there. Only folders of exactly those names; links are left alone."""
    pattern = _archive_leftover(destination)
    for sibling in sorted(destination.parent.iterdir()):
        found = pattern.match(sibling.name)
        if found is None or sibling.is_symlink() or not sibling.is_dir():
            continue
        if found.group(1) == "old" and not destination.exists():
            sibling.rename(destination)
        else:
            shutil.rmtree(sibling, ignore_errors=True)


def _holds_only_an_archive(folder: Path) -> bool:
    """What `polis archive` writes: tenant=... partitions and mobility/ (or nothing yet)."""
    return folder.is_dir() and all(
        p.is_dir() and (p.name.startswith("tenant=") or p.name == "mobility") for p in folder.iterdir()
    )


@app.command(name="replay")
def replay_command(
    dataset: Annotated[str, typer.Argument(help="los-loop, melbourne-pedestrians or sz-taxi")],
    speed: Annotated[float, typer.Option(help="Times real time; 0 = as fast as the broker takes them")] = 60.0,
    mqtt: Annotated[str, typer.Option(help="Broker URL")] = "mqtt://127.0.0.1:1883",
    limit: Annotated[int | None, typer.Option(help="At most this many messages")] = None,
    batch: Annotated[bool, typer.Option(help="One gateway message per time step instead of one per sensor")] = False,
    now: Annotated[
        bool,
        typer.Option(
            help="Shift the recording to end as the replay ends, so its readings catch up with the clock and are "
            "never ahead of it"
        ),
    ] = False,
    datasets_dir: DatasetsDir = None,
) -> None:
    """Publish a real dataset's readings as sensor messages over MQTT, in time order."""
    from polis.ingest.replay import REPLAYABLE, replay

    if dataset not in REPLAYABLE:
        console.print(f"[red]cannot replay '{dataset}'[/red]; sensor datasets: {', '.join(REPLAYABLE)}")
        raise typer.Exit(2)
    settings = _settings(None, datasets_dir)
    with Progress(
        TextColumn(f"[bold]{dataset}[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(dataset, total=None)
        summary = replay(
            dataset,
            settings.datasets_dir,
            mqtt,
            speed,
            limit=limit,
            batch=batch,
            ending_now=now,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    console.print(
        f"published {summary.messages:,} messages ({summary.readings:,} readings, {summary.steps:,} "
        f"time steps) in {summary.seconds:.1f} s; observed {summary.first} .. {summary.last}"
    )


@app.command()
def deadletters(
    url: Annotated[
        str | None, typer.Option(help="Ask a running server (its DuckDB file is locked while it runs)")
    ] = None,
    data_dir: DataDir = None,
    limit: Annotated[int, typer.Option(help="How many, oldest first")] = 50,
) -> None:
    """Messages an ingest source refused, with the reason, from a running server or the hub's files."""
    settings = hub_settings(data_dir)
    if url is not None:
        with hub_errors():
            rows = hub_json(url, "/polis/v1/deadletters", settings, params={"limit": limit})
        letters = [(r["id"], r["receivedAt"], r["topic"], r["reason"], r["payload"]) for r in rows]
    else:
        store = open_hub_read_only(settings)  # reading creates no hub at a mistyped path
        try:
            letters = [
                (d.id, d.received_at.isoformat(), d.topic, d.reason, d.payload) for d in store.dead_letters(None, limit)
            ]
        finally:
            store.close()
    table = Table(title=f"dead letters ({len(letters)} shown)")
    for column in ("id", "received", "topic", "reason", "payload"):
        table.add_column(column, overflow="fold")
    for ident, received, topic, reason, payload in letters:
        # A sender's text, never markup: "[/bold]" in a payload broke the table, "[withheld: ...]" vanished
        cells = (str(ident), received, topic, reason, payload[:80])
        table.add_row(*(escape(str(cell)) for cell in cells))
    console.print(table)


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
    problem = data_dir_problem(settings.data_dir)
    state = f"[red]{escape(problem)}[/red]" if problem else "exists" if settings.data_dir.exists() else "new"
    table.add_row("data dir", f"{settings.data_dir.resolve()} ({state})")
    datasets_ok = settings.datasets_dir.is_dir()
    table.add_row(
        "datasets dir",
        f"{escape(str(settings.datasets_dir))} (found)" if datasets_ok else
        f"{escape(str(settings.datasets_dir))} ([red]missing[/red]: point POLIS_DATASETS_DIR or --datasets-dir at the "
        "folder holding the public datasets, the one with traffic/ and crowd/)",
    )
    if datasets_ok:  # every name `polis ingest` takes, the gated person-level ones too
        for name, description in sorted(ingestible().items()):
            table.add_row(f"  dataset {name}", description)
    core = settings.datasets_dir / "ngsi-ld" / "ngsi-ld-core-context-v1.9.jsonld"
    table.add_row("core @context v1.9", "found" if core.is_file() else "[red]missing[/red]")
    try:
        from polis.ingest.broker import find_mosquitto

        table.add_row("mosquitto", find_mosquitto())
    except (FileNotFoundError, RuntimeError):
        table.add_row("mosquitto", "[red]not installed[/red] (make setup installs it)")
    table.add_row("chromium", shutil.which("chromium") or "not installed (needed by the dashboard tests)")
    table.add_row("server", _server_status(settings))
    console.print(table)


def _server_status(settings: Settings) -> str:
    """Whether a hub answers at the configured address, and its ingest lag (from /metrics)."""
    import httpx

    from polis.access.control import client_headers

    url = f"http://{settings.host}:{settings.port}"
    try:
        text = httpx.get(f"{url}/metrics", timeout=1.0, headers=client_headers(settings)).text
    except httpx.HTTPError:
        return f"none at {url}"
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    lag = values.get('polis_ingest_lag_s{source="mqtt"}')
    pending = values.get('polis_ingest_pending{source="mqtt"}')
    ingest = f"MQTT lag {lag} s, {pending} pending" if lag is not None else "no MQTT ingest"
    return f"running at {url}: {values.get('polis_entities', '?')} entities, {ingest}"


# Feature packages register their own commands here; each keeps its heavy imports inside its commands so
# that `polis --help` stays fast. One line per package:
# FEATURE-COMMANDS (keep this marker: lines are added below it)
from polis.access.cli import register as _access_cli; _access_cli(app, bench_app)  # noqa: E402, E702, I001
from polis.mobility.cli import register as _mobility_cli; _mobility_cli(app, bench_app)  # noqa: E402, E702, I001
from polis.alerts.cli import register as _alerts_cli; _alerts_cli(app, bench_app)  # noqa: E402, E702, I001
from polis.epidemic.cli import register as _epidemic_cli; _epidemic_cli(app, bench_app)  # noqa: E402, E702, I001
from polis.forecast.cli import register as _forecast_cli; _forecast_cli(app, bench_app)  # noqa: E402, E702, I001


if __name__ == "__main__":  # pragma: no cover
    app()
