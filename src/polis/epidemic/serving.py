"""The served forecast: the benchmark's blend (last day, mean of 7 days, metapopulation, learned LightGBM),
fitted once per (tenant, country, data) and kept, so that requests after the first answer at once.

The learned model is what costs: the blend weighs it by its forecasts on the last ~50 origins, each
from a LightGBM model refit on the days before that origin (England: ~50 fits, 10-25 s on 2 shared
cores). That cannot be bounded to a request's few seconds without serving a different model than the
benchmark chose, so it runs in a background thread (one at a time: the machine has 2 cores) and a
request that finds no finished fit waits at most `READY_WAIT_S` and then answers "fitting" (the API: 202
with Retry-After); the dashboard polls until the forecast is there.

What is kept: in memory, the finished forecast per (tenant, country) with the fingerprint of the data it
was made from (a new day or any change in the hub makes a new one); on disk, the learned model in the
forecasting package's registry under `<data dir>/models/<dataset>/epidemic-lightgbm/<version>/`, with its
record of forecasts per origin. After a restart, or after one new day, the record answers every origin
it has seen (keyed by the fingerprint of the history each was made from), so only unseen origins are
refit: none after a restart, one after a new day.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polis.domain.errors import NgsiError
from polis.epidemic.blend import BlendedForecast, blended_forecast, served_origins
from polis.epidemic.data import CountryData, UnusableData
from polis.epidemic.evaluation import FIRST_ORIGIN, Forecaster, LastDay, MeanOfLastWeek
from polis.epidemic.learned import fingerprint
from polis.epidemic.metapopulation import Metapopulation
from polis.epidemic.panel_forecaster import LearnedEpidemicForecaster, mobility_panel
from polis.forecast.model import Progress
from polis.forecast.registry import ModelLoadError, ModelRegistry

__all__ = [
    "MIN_DAYS",
    "Fitting",
    "NonFiniteForecast",
    "Served",
    "ServedForecasts",
    "check_finite",
    "check_forecastable",
    "data_version",
    "fit_served",
    "registry_dataset",
]

log = logging.getLogger(__name__)

HORIZONS = 14
READY_WAIT_S = 2.0  # a request waits this long for a fit (a restored model is ready within it)
VERSIONS_KEPT = 2  # registry versions kept per (tenant, country): the newest and the one before
# The blend weighs its models (and sizes its interval) by how their forecasts from day FIRST_ORIGIN + 1 on
# turned out: the first 14-day-ahead one is known on day FIRST_ORIGIN + HORIZONS. With fewer days some
# horizons have no record at all, and the learned model's calibration has none to read.
MIN_DAYS = FIRST_ORIGIN + HORIZONS


class NonFiniteForecast(NgsiError):
    """HTTP 500 naming the regions: a forecast came out NaN or infinite, and is not served as one."""


def check_forecastable(data: CountryData) -> None:
    """UnusableData (422) saying how many days the forecast needs, when `data` holds fewer."""
    if data.n_days < MIN_DAYS:
        held = f"{data.n_days} ({data.dates[0]} .. {data.dates[-1]})" if data.n_days else "none"
        raise UnusableData(
            f"{data.country}: the forecast needs at least {MIN_DAYS} complete days of cases, the hub holds {held}; "
            f"the blend weighs its models by how their forecasts from day {FIRST_ORIGIN + 1} on turned out, up to "
            f"{HORIZONS} days ahead (the risk view and scenarios work from fewer days)"
        )


def check_finite(data: CountryData, forecast: BlendedForecast, horizons: int) -> None:
    """NonFiniteForecast unless every value served (point and bounds, the first `horizons` days) is finite."""
    values = np.stack([forecast.point[:horizons], forecast.lower[:horizons], forecast.upper[:horizons]])
    bad = [name for name, ok in zip(data.regions, np.isfinite(values).all(axis=(0, 1)), strict=True) if not ok]
    if bad:
        raise NonFiniteForecast(
            f"{data.country}: the forecast came out non-finite (NaN or infinite) for {len(bad)} region(s), "
            f"e.g. {', '.join(bad[:5])}; it is not served"
        )


@dataclass(frozen=True, slots=True)
class Served:
    """A finished forecast and where it came from."""

    forecast: BlendedForecast  # 14 days ahead; shorter requests take the first days (the blend per
    # horizon does not depend on how many horizons are asked)
    version: str  # data_version of the data it was made from
    registry_path: str  # the learned model's registry folder
    fits: int  # LightGBM fits this forecast needed (0: everything came from the registry's record)
    seconds: float  # how long making it took


@dataclass(frozen=True, slots=True)
class Fitting:
    """A fit under way (or queued)."""

    since: float  # time.time() it was asked for
    stage: str
    done: float  # 0..1


def data_version(data: CountryData) -> str:
    """What the served forecast depends on: regions, calendar, every day's cases and flows."""
    digest = hashlib.sha256()
    digest.update("|".join(data.regions).encode())
    digest.update(f"{data.dates[0]}:{data.n_days}".encode())
    for array in (data.cases, data.flows, data.flow_observed):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def registry_dataset(tenant: str, country: str) -> str:
    """The registry's dataset name for a tenant's country (a folder name: odd tenant names are hashed)."""
    safe = tenant if re.fullmatch(r"[A-Za-z0-9_-]*", tenant) else hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"covid-europe-2020.{country}.{safe or 'default-tenant'}"


def fit_served(
    data: CountryData,
    registry: ModelRegistry,
    dataset: str,
    progress: Progress | None = None,
) -> Served:
    """The benchmark's blend at the end of `data`, the learned model restored from the registry where
    its record covers the origins, refit on the others (and saved as a new registry version). Fewer than
    MIN_DAYS days is UnusableData."""
    check_forecastable(data)
    started = time.perf_counter()
    origins = served_origins(data.n_days, HORIZONS, FIRST_ORIGIN)
    needed = [fingerprint(data.truncated(d)) for d in origins]
    model = _latest(registry, dataset) or LearnedEpidemicForecaster()
    before = model.model.fits
    panel = mobility_panel(data)
    if not all(key in model.record for key in needed):
        model.fit(panel, origins[0], progress)  # reuses what the record holds
    forecasters: list[Forecaster] = [LastDay(), MeanOfLastWeek(), Metapopulation(), model]
    forecast = blended_forecast(data, forecasters, HORIZONS, FIRST_ORIGIN)
    fits = model.model.fits - before
    record = registry.latest(dataset, LearnedEpidemicForecaster.kind)
    version = data_version(data)
    if model.calibration is None:  # too few days to have validation origins: served, not kept
        return Served(forecast, version, "", fits, time.perf_counter() - started)
    if fits or record is None:
        model.record = {key: model.record[key] for key in needed if key in model.record}
        record = registry.save(
            model,
            dataset,
            f"served blend: rolling-origin refits from day {FIRST_ORIGIN + 1}",
            train_seconds=time.perf_counter() - started,
            entity_type=panel.entity_type,
            attribute=panel.attribute,
            entity_ids=panel.entity_ids,
        )
        _prune(registry, dataset)
    return Served(forecast, version, str(record.path), fits, time.perf_counter() - started)


def _latest(registry: ModelRegistry, dataset: str) -> LearnedEpidemicForecaster | None:
    record = registry.latest(dataset, LearnedEpidemicForecaster.kind)
    if record is None:
        return None
    try:
        registry.verify(record)  # its files as saved (digests), before LightGBM reads any of them
        model = LearnedEpidemicForecaster.load(record.path)
    except (OSError, ValueError, KeyError, ModelLoadError) as error:  # damaged, or saved by other code: refit
        log.warning("not reusing %s: %s", record.path, error)
        return None
    served = LearnedEpidemicForecaster()
    if (model.model.window, model.model.trees) != (served.model.window, served.model.trees):
        return None  # fitted with other settings than the benchmark's: its record would serve another model
    return model


def _prune(registry: ModelRegistry, dataset: str) -> None:
    """Drop all but the newest VERSIONS_KEPT versions (each holds ~1 MB of recorded forecasts)."""
    folder = registry.root / dataset / LearnedEpidemicForecaster.kind
    versions = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)
    for old in versions[VERSIONS_KEPT:]:
        shutil.rmtree(folder / str(old), ignore_errors=True)


class ServedForecasts:
    """Finished forecasts per (tenant, country), and one background worker that makes missing ones."""

    def __init__(self, registry_root: Path) -> None:
        self.registry = ModelRegistry(registry_root)
        self._ready: dict[tuple[str, str], Served] = {}
        self._jobs: dict[tuple[str, str, str], Future[Served]] = {}  # (tenant, country, version)
        self._fitting: dict[tuple[str, str, str], Fitting] = {}
        self._versions: dict[tuple[str, str], tuple[CountryData, str]] = {}
        self._lock = threading.Lock()
        self._worker = threading.Lock()  # one fit at a time

    def version_of(self, tenant: str, country: str, data: CountryData) -> str:
        """`data_version(data)`, remembered for the data object the hub reader keeps handing out until the
        tenant's data changes (hashing England's flows costs ~15 ms a request otherwise)."""
        with self._lock:
            known = self._versions.get((tenant, country))
        if known is not None and known[0] is data:
            return known[1]
        version = data_version(data)
        with self._lock:
            self._versions[(tenant, country)] = (data, version)
        return version

    def ready(self, tenant: str, country: str, version: str) -> Served | None:
        with self._lock:
            served = self._ready.get((tenant, country))
        return served if served is not None and served.version == version else None

    def request(self, tenant: str, country: str, data: CountryData, version: str) -> Future[Served]:
        """The forecast for `data` (its `data_version` is `version`): a finished future when it is kept,
        else the (new or running) fit's future."""
        served = self.ready(tenant, country, version)
        if served is not None:
            done: Future[Served] = Future()
            done.set_result(served)
            return done
        key = (tenant, country, version)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                return job
            job = self._jobs[key] = Future()
            self._fitting[key] = Fitting(time.time(), "queued", 0.0)
        # A daemon thread: a server stopping mid-fit must not wait for it (a half-written registry
        # folder has no meta.json and is not read back).
        threading.Thread(target=self._run, args=(key, data, job), name=f"polis-epidemic-{country}", daemon=True).start()
        return job

    def fitting(self, tenant: str, country: str, version: str) -> Fitting | None:
        with self._lock:
            return self._fitting.get((tenant, country, version))

    def _run(self, key: tuple[str, str, str], data: CountryData, job: Future[Served]) -> None:
        tenant, country, _ = key

        def progress(stage: str, done: float) -> None:
            with self._lock:
                since = self._fitting[key].since
                self._fitting[key] = Fitting(since, stage, done)

        with self._worker:
            progress("fitting", 0.0)
            try:
                served = fit_served(data, self.registry, registry_dataset(tenant, country), progress)
            except Exception as error:
                log.exception("the served epidemic forecast for %s failed", country)
                with self._lock:
                    del self._jobs[key], self._fitting[key]  # the next request tries again
                job.set_exception(error)
                return
            with self._lock:
                self._ready[(tenant, country)] = served
                del self._jobs[key], self._fitting[key]
            job.set_result(served)
