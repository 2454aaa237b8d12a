"""Live forecasts: while the hub runs, every watched series is forecast again shortly after new readings
arrive (the bus tells us; a debounce thread batches a burst of readings into one refresh), from the recent
history in the store. Each issued forecast is kept with its issue time and steps, so once its valid times
pass it is scored against what was observed: the rolling live MAE per model.

Forecasts and their scores are kept in memory (bounded), per tenant; a restarted hub starts a new record.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from polis.forecast.data import Panel
from polis.forecast.model import Forecaster
from polis.forecast.path import ForecastPath, ForecastPoint
from polis.forecast.registry import ModelLoadError, ModelRecord, ModelRegistry

if TYPE_CHECKING:
    from polis.ngsi_ld.events import EntityChange
    from polis.platform import Platform
    from polis.settings import Settings

__all__ = ["ForecastService", "LiveModel", "check_fits", "registry_for"]

log = logging.getLogger(__name__)

HISTORY_PER_SERIES = 288  # issued paths kept per (tenant, entity, attribute)
SCORES_KEPT = 100_000  # scored (model, step, error) points kept for the rolling MAE


def registry_for(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.data_dir / "models")


@dataclass(slots=True)
class LiveModel:
    """A fitted model watching a set of entities' attribute (expanded IRIs), on the model's time grid."""

    name: str
    model: Forecaster
    entity_type: str
    attribute: str
    entity_ids: tuple[str, ...]
    step_s: int
    timezone: str
    context_steps: int  # how much history a forecast reads
    adjacency: np.ndarray | None = None
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {entity_id: i for i, entity_id in enumerate(self.entity_ids)}


@dataclass(slots=True)
class _Scored:
    tenant: str  # whose readings scored it: one tenant's accuracy is not another's
    model: str
    step: int
    error: float
    valid_at: datetime


class ForecastService:
    """Cheap to construct: nothing runs until `attach` or `start`."""

    def __init__(self, platform: Platform, debounce_s: float = 1.0) -> None:
        self.platform = platform
        self.debounce_s = debounce_s
        self.models: list[LiveModel] = []
        self._latest: dict[tuple[str, str, str], ForecastPath] = {}
        self._history: dict[tuple[str, str, str], deque[ForecastPath]] = {}
        self._scored: deque[_Scored] = deque(maxlen=SCORES_KEPT)
        # the points already scored, as (tenant, model, entity, issued at, valid at): a point's mark goes when its
        # path leaves the kept history (`_keep`), after which it can no longer be scored again
        self._scored_keys: set[tuple[str, str, str, str, datetime]] = set()
        self.unavailable: dict[str, str] = {}  # dataset -> why it has no live forecasts (its model did not load)
        self._dirty: set[tuple[str, int]] = set()  # (tenant, model index)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trainer: subprocess.Popen[bytes] | None = None  # a `polis train` child running for us
        self._subscribed = False
        self.refreshes = 0

    # ------------------------------------------------------------------------------------------ wiring

    def attach(self, live: LiveModel) -> None:
        """Watch `live`'s entities from now on (refreshing forecasts after each burst of readings)."""
        with self._lock:
            self.models.append(live)
        if not self._subscribed:
            self.platform.bus.subscribe(self._on_change)
            self._subscribed = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="polis-forecasts", daemon=True)
            self._thread.start()

    def start(
        self,
        datasets: Iterable[str] = ("los-loop",),
        quick: bool = True,
        kind: str = "lightgbm",
        say: Callable[[str], None] | None = None,
    ) -> threading.Thread:
        """For the demo: in the background, load each dataset's latest registered model (or train a quick
        LightGBM and register it), attach it, and forecast from what the hub already holds. `say` tells the
        operator what happens (a first start trains for minutes, which a silent log leaves unexplained)."""
        tell = say or (lambda _text: None)

        def work() -> None:
            for dataset in datasets:
                if self._stop.is_set():
                    return
                try:
                    live = self.load_or_train(dataset, quick=quick, kind=kind, say=tell)
                    self.unavailable.pop(dataset, None)
                    self.attach(live)
                    self.mark_dirty("", live)
                    tell(f"forecasts: live for {dataset} ({len(live.entity_ids)} series, {kind})")
                    if not self.platform.store.existing_ids("", list(live.entity_ids)):
                        log.warning("live forecasts for %s: none of its %d sensors is in the hub yet (ingest it, "
                                    "or its readings arrive); forecasts start with them", dataset,
                                    len(live.entity_ids))
                except ModelLoadError as error:  # no traceback: the line says which file is damaged
                    self.unavailable[dataset] = f"its {kind} forecast model could not be loaded"
                    log.error("no live forecasts for %s: %s", dataset, error)
                except Exception:  # the hub keeps serving without forecasts for that dataset
                    if self._stop.is_set():
                        return  # closed while its model trained: nothing went wrong
                    self.unavailable[dataset] = "its live forecasts could not start"
                    log.exception("could not start live forecasts for %s", dataset)

        thread = threading.Thread(target=work, name="polis-forecast-start", daemon=True)
        thread.start()
        return thread

    def load_or_train(
        self, dataset: str, quick: bool = True, kind: str = "lightgbm", say: Callable[[str], None] | None = None
    ) -> LiveModel:
        """The registry's latest model of `kind` for `dataset`, trained first (by `polis train`, in a child
        process) when there is none, which `say` announces with where its log is. A version that fails to load
        (damaged files) or does not fit the dataset is passed over, with a warning, for the one before it;
        ModelLoadError when none is left."""
        from polis.forecast.data import load_panel

        settings = self.platform.settings
        registry = registry_for(settings)
        if not registry.candidates(dataset, kind):
            if say is not None:
                say(f"forecasts: training a {'quick ' if quick else ''}{kind} model for {dataset} in the background "
                    f"(minutes on 2 cores; progress in {self._train_log(dataset, kind)})")
            self._train_in_child(dataset, kind, quick)
        panel = load_panel(dataset, settings.datasets_dir)
        # the sensors its meta.json names, not a trial forecast: a model fitted on some of them is served (each
        # refresh then says what it cannot forecast)
        found = registry.load_usable(dataset, kind, check=lambda record, model: check_fits(record, model, panel,
                                                                                          forecast=False))
        if found is None:
            raise RuntimeError(f"`polis train {dataset}` registered no {kind} model")
        return live_model_for(panel, found[1], settings.datasets_dir)

    def _train_in_child(self, dataset: str, kind: str, quick: bool) -> None:
        """`polis train` into this hub's registry, in its own process: training Melbourne's model peaks at
        ~1.3 GB (its feature matrices), which a server would otherwise keep as its high-water mark, and its
        feature building would hold the server's GIL for a minute. Its output goes to `models/train-*.log`;
        `close` stops it (the hub going away must not leave it running)."""
        settings = self.platform.settings
        log_path = self._train_log(dataset, kind)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "polis.cli", "train", dataset, "--model", kind,
                   "--data-dir", str(settings.data_dir), *(["--quick"] if quick else [])]
        env = {**os.environ, "POLIS_DATASETS_DIR": str(settings.datasets_dir)}
        with log_path.open("wb") as log, self._lock:
            if self._stop.is_set():
                raise RuntimeError("the forecast service is closing")
            trainer = self._trainer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        code = trainer.wait()
        with self._lock:
            self._trainer = None
        if code != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-1000:]
            raise RuntimeError(f"`polis train {dataset}` failed (exit {code}): {tail}")

    def _train_log(self, dataset: str, kind: str) -> Path:
        return self.platform.settings.data_dir / "models" / f"train-{dataset}-{kind}.log"

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            trainer = self._trainer
        if trainer is not None:
            trainer.terminate()
            try:
                trainer.wait(10)
            except subprocess.TimeoutExpired:
                trainer.kill()
                trainer.wait()
        if self._thread is not None:
            self._thread.join(5)

    # ------------------------------------------------------------------------------------------ events

    def _on_change(self, change: EntityChange) -> None:
        if change.entity is None:
            return
        for number, live in enumerate(self.models):
            if change.entity_id in live.index:
                with self._lock:
                    self._dirty.add((change.tenant, number))
                self._wake.set()

    def mark_dirty(self, tenant: str, live: LiveModel) -> None:
        with self._lock:
            self._dirty.add((tenant, self.models.index(live)))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            self._stop.wait(self.debounce_s)  # let a burst of readings land first
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            for tenant, number in sorted(dirty):
                try:
                    self.refresh(tenant, self.models[number])
                except Exception:
                    log.exception("live forecast refresh failed for %s", self.models[number].name)

    # ------------------------------------------------------------------------------------------ forecasting

    def recent_panel(self, tenant: str, live: LiveModel) -> Panel | None:
        """The last `context_steps` steps of the watched entities from the store, on the model's grid (the
        latest reading in each step; NaN where none)."""
        from polis.ngsi_ld.entities import parse_observed_at
        from polis.store.base import TemporalQuery

        store = self.platform.store
        if not store.has_tenant(tenant):
            return None
        current = store.get(tenant, list(live.entity_ids))
        window = _window(current, live, datetime.now(UTC))
        if window is None:
            return None
        start, step = window
        query = TemporalQuery(attrs=(live.attribute,), timerel="after", time_at=start - timedelta(microseconds=1),
                              max_instances=live.context_steps * 4)
        history = store.temporal(tenant, list(live.entity_ids), query)
        values = np.full((live.context_steps, len(live.entity_ids)), np.nan)
        for entity_id, attributes in history.items():
            column = live.index.get(entity_id)
            attribute = attributes.get(live.attribute)
            if column is None or attribute is None:
                continue
            for instance in attribute.instances:
                value = instance.get("value")
                if not isinstance(value, int | float) or "observedAt" not in instance:
                    continue
                row = (parse_observed_at(str(instance["observedAt"])) - start) // step
                if 0 <= row < live.context_steps:
                    values[row, column] = float(value)
        times = np.datetime64(start.replace(tzinfo=None), "s") + np.arange(live.context_steps) * np.timedelta64(
            live.step_s, "s")
        return Panel("live", times, values, live.entity_ids, live.step_s, live.timezone, live.entity_type,
                     live.attribute, live.adjacency)

    def refresh(self, tenant: str, live: LiveModel) -> int:
        """Forecast every watched entity from the latest readings; returns how many paths were issued."""
        panel = self.recent_panel(tenant, live)
        if panel is None:
            return 0
        self._score(tenant, live, panel)
        origin = len(panel.values) - 1
        if np.isnan(panel.values[origin]).all():
            return 0
        result = live.model.predict(panel, np.array([origin]))
        issued_at = _utc(panel.times[origin])
        step = timedelta(seconds=live.step_s)
        issued = 0
        with self._lock:
            for i, entity_id in enumerate(live.entity_ids):
                if np.isnan(panel.values[: origin + 1, i]).all():
                    continue  # never observed here: nothing to forecast from
                points = tuple(
                    ForecastPoint(issued_at + s * step, float(result.mean[0, j, i]), float(result.lower[0, j, i]),
                                  float(result.upper[0, j, i]))
                    for j, s in enumerate(result.steps)
                )
                path = ForecastPath(entity_id, live.attribute, live.name, issued_at, points)
                self._latest[(tenant, entity_id, live.attribute)] = path
                self._keep(tenant, path)
                issued += 1
            self.refreshes += 1
        return issued

    def _keep(self, tenant: str, path: ForecastPath) -> None:
        """Keep `path` in its series' history (with the lock held); the marks of the points of a path the bounded
        history lets go are dropped with it, so they stay as bounded as the history."""
        kept = self._history.setdefault((tenant, path.entity_id, path.attribute), deque(maxlen=HISTORY_PER_SERIES))
        if kept and kept[-1].issued_at == path.issued_at and kept[-1].model == path.model:
            kept.pop()  # the same origin forecast again with more of its readings in: keep the newer one
        elif len(kept) == kept.maxlen:
            gone = kept[0]
            for point in gone.points:
                self._scored_keys.discard((tenant, gone.model, gone.entity_id, gone.issued_at.isoformat(),
                                           point.valid_at))
        kept.append(path)

    def _score(self, tenant: str, live: LiveModel, panel: Panel) -> None:
        """Score every kept forecast point whose valid time now has an observation."""
        row_of = {_utc(t): r for r, t in enumerate(panel.times)}
        with self._lock:
            for (key_tenant, entity_id, attribute), paths in self._history.items():
                if key_tenant != tenant or attribute != live.attribute or entity_id not in live.index:
                    continue
                column = live.index[entity_id]
                for path in paths:
                    for number, point in enumerate(path.points, start=1):
                        row = row_of.get(point.valid_at)
                        if row is None or np.isnan(panel.values[row, column]):
                            continue
                        mark = (tenant, path.model, entity_id, path.issued_at.isoformat(), point.valid_at)
                        if mark in self._scored_keys:
                            continue
                        self._scored_keys.add(mark)
                        error = abs(point.value - float(panel.values[row, column]))
                        self._scored.append(_Scored(tenant, path.model, number, error, point.valid_at))

    # ------------------------------------------------------------------------------------------ reading

    def latest(self, entity_id: str, attribute: str, tenant: str | None = None) -> ForecastPath | None:
        """The newest forecast of `attribute` (expanded IRI or short term) of `entity_id`, or None."""
        with self._lock:
            path = self._latest.get((tenant or "", entity_id, attribute))
            if path is None:
                for (t, e, a), candidate in self._latest.items():
                    if t == (tenant or "") and e == entity_id and _short(a) == attribute:
                        return candidate
            return path

    def latest_for_type(self, entity_type: str, tenant: str | None = None) -> list[ForecastPath]:
        with self._lock:
            watched = {e for live in self.models if entity_type in (live.entity_type, _short(live.entity_type))
                       for e in live.entity_ids}
            return [p for (t, e, _), p in self._latest.items() if t == (tenant or "") and e in watched]

    def history(self, entity_id: str, attribute: str, tenant: str | None = None) -> list[ForecastPath]:
        with self._lock:
            for (t, e, a), paths in self._history.items():
                if t == (tenant or "") and e == entity_id and attribute in (a, _short(a)):
                    return list(paths)
            return []

    def accuracy(self, window: timedelta | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        """Rolling live MAE per model and step over `tenant`'s scored points (within `window` of its newest)."""
        with self._lock:
            scored = [s for s in self._scored if s.tenant == (tenant or "")]
        if not scored:
            return []
        newest = max(s.valid_at for s in scored)
        if window is not None:
            scored = [s for s in scored if s.valid_at > newest - window]
        groups: dict[tuple[str, int], list[float]] = {}
        for s in scored:
            groups.setdefault((s.model, s.step), []).append(s.error)
        return [{"model": m, "step": step, "mae": float(np.mean(e)), "points": len(e)}
                for (m, step), e in sorted(groups.items())]


def live_model_for(panel: Panel, model: Forecaster, datasets_dir: Any) -> LiveModel:
    """Watch the hub's entities for `panel`'s sensors, by the expanded IRIs the dataset loader writes."""
    from polis.ingest.datasets import Vocab

    vocab = Vocab.load(datasets_dir)
    # a day (hourly counts: a week) back from the furthest step, plus the lag windows
    days = 8 if panel.step_s >= 3600 else 2
    context = days * panel.steps_per_day + 64
    return LiveModel(
        name=f"{model.kind}:{panel.name}", model=model, entity_type=vocab(panel.entity_type),
        attribute=vocab(panel.attribute), entity_ids=panel.entity_ids, step_s=panel.step_s,
        timezone=panel.timezone, context_steps=context, adjacency=panel.adjacency,
    )


def check_fits(record: ModelRecord, model: Forecaster, panel: Panel, forecast: bool = True) -> None:
    """ModelLoadError unless `model` (registered as `record`) is one of `panel`'s sensors: fitted on the same ones
    (where its meta.json names them) and, with `forecast`, forecasting one value per sensor and step from the
    panel's end (a model fitted on another dataset's sensors forecasts garbage, or fails)."""
    saved = record.meta.get("entity_ids")
    if saved and list(saved) != list(panel.entity_ids):
        raise ModelLoadError(f"{record.path}: fitted on other sensors than {panel.name}'s {panel.n_sensors} "
                             f"(its meta.json names {len(saved)}, first {saved[0]!r})")
    if not forecast:
        return
    try:
        result = model.predict(panel, np.array([len(panel.values) - 1]))
    except Exception as error:  # a model that cannot forecast this panel (other shapes): not one to serve
        raise ModelLoadError(f"{record.path}: cannot forecast {panel.name}: {type(error).__name__}: {error}") \
            from error
    if result.mean.shape != (1, len(result.steps), panel.n_sensors):
        raise ModelLoadError(f"{record.path}: forecasts {result.mean.shape[-1]} series, {panel.name} has "
                             f"{panel.n_sensors}")


def _window(current: dict[str, Any], live: LiveModel, now: datetime) -> tuple[datetime, timedelta] | None:
    """The first step of the window a refresh forecasts from, and the step; None without a usable reading.

    The window ends at the newest reading among `current`'s, but not at one dated more than the alerts'
    MAX_AHEAD past `now`: a sensor with a broken clock (or a year 9999 typed in) would otherwise move every
    other sensor's window past its readings, and its forecast's valid times past the calendar's end. Readings
    of the past are fine: a recorded dataset (Melbourne's 2022) is forecast from where it ends."""
    from polis.alerts.evaluate import MAX_AHEAD
    from polis.ngsi_ld.entities import parse_observed_at

    newest = None
    for entity in current.values():
        for instance in entity.get(live.attribute, []):
            if isinstance(instance, dict) and "observedAt" in instance:
                stamp = parse_observed_at(str(instance["observedAt"]))
                if stamp <= now + MAX_AHEAD and (newest is None or stamp > newest):
                    newest = stamp
    if newest is None:
        return None
    step = timedelta(seconds=live.step_s)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    end = epoch + ((newest - epoch) // step) * step
    furthest = max(live.model.steps, default=1) * step
    highest, lowest = datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC)
    # both ends in the calendar: the forecast's last valid time, and the window's first step
    if end > highest - furthest or end < lowest + live.context_steps * step:
        return None
    return end - (live.context_steps - 1) * step, step


def _utc(instant: np.datetime64) -> datetime:
    return datetime.fromisoformat(str(instant.astype("datetime64[s]"))).replace(tzinfo=UTC)


def _short(iri: str) -> str:
    return iri.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


