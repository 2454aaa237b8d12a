"""The learned epidemic forecaster under the forecasting package's contract (`polis.forecast.model`):
`fit(history: Panel, valid_from)`, `predict(panel, origins) -> Forecast`, `save` / `load`, so the model
registry, the leakage and seed checks and anything else written against that contract take it as is.

The panel is daily new cases per region (one column per region entity). The region-to-region flows are
exogenous features that change every day, which a plain `Panel` (one static adjacency) cannot carry, so
`MobilityPanel` adds them: `flows[t]` is day t's movement matrix and `flow_observed[t]` whether it was
published. A plain `Panel` still works: its adjacency stands in as every day's flows (the graph), and
with no adjacency each region is on its own (no importation features).

Origins follow the package's convention: `o` is the last observed step, so the forecast for step k ahead
is day o + k, and `predict` hands the epidemic model the days 0..o only (`CountryData.truncated(o + 1)`):
it cannot read later cases or later flows. Intervals are the package's split-conformal
`IntervalCalibration`, fitted on the origins from `valid_from` on.

The model keeps a record of its forecasts, keyed by the fingerprint of the history each was made from
(`polis.epidemic.learned.fingerprint`: everything a forecast reads), so a history it has forecast from is
never refit: the served blend (`polis.epidemic.serving`) weighs the model by its forecasts on recent
origins, and a model restored from the registry, or refit after one new day, recomputes only what it has
not seen. Saved as JSON, LightGBM's own text format and a NumPy archive of the record (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from polis.epidemic.data import CountryData
from polis.epidemic.hub import region_id
from polis.epidemic.learned import SCALE_DAYS, TARGET, LearnedForecaster, fingerprint
from polis.forecast.data import Panel
from polis.forecast.model import Forecast, IntervalCalibration, Progress, read_json, targets, write_json

__all__ = ["LearnedEpidemicForecaster", "MobilityPanel", "country_of", "mobility_panel"]

DAY_S = 86_400
STEPS = tuple(range(1, 15))


@dataclass(frozen=True, slots=True)
class MobilityPanel(Panel):
    """A daily panel of cases per region with each day's flow matrix as exogenous features."""

    flows: np.ndarray | None = None  # float64 [T, N, N]: flows[t, i, j] = movements i -> j on day t
    flow_observed: np.ndarray | None = None  # bool [T]


def mobility_panel(data: CountryData) -> MobilityPanel:
    """A country's cases and flows as a panel whose sensors are the hub's region entities."""
    times = np.array([np.datetime64(d.isoformat(), "s") for d in data.dates])
    return MobilityPanel(
        name=f"covid-europe-2020:{data.country}",
        times=times,
        values=np.asarray(data.cases, dtype=np.float64),
        entity_ids=tuple(region_id(data.country, r) for r in data.regions),
        step_s=DAY_S,
        timezone="UTC",
        entity_type="AdministrativeArea",
        attribute="newConfirmedCases",
        flows=np.asarray(data.flows, dtype=np.float64),
        flow_observed=np.asarray(data.flow_observed, dtype=bool),
    )


def country_of(panel: Panel, days: int | None = None) -> CountryData:
    """The first `days` days of a panel (all by default) as the epidemic models' `CountryData`.

    A missing reading counts zero cases (as an empty cell in the published files does)."""
    if panel.step_s != DAY_S:
        raise ValueError(f"panel {panel.name}: the epidemic models need daily steps, got {panel.step_s} s")
    stop = len(panel.values) if days is None else days
    n = panel.n_sensors
    cases = np.nan_to_num(panel.values[:stop], nan=0.0)
    flows, observed = _flows_of(panel, stop, n)
    dates = tuple(date.fromisoformat(str(t)[:10]) for t in panel.times[:stop])
    regions = tuple(e.rsplit(":", 1)[-1] for e in panel.entity_ids)
    if len(set(regions)) != n:
        regions = panel.entity_ids  # ids that do not end in distinct names: the ids themselves
    return CountryData(panel.name, regions, dates, cases, flows, observed)


def _flows_of(panel: Panel, stop: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    flows = getattr(panel, "flows", None)
    if flows is not None:
        if flows.shape[1:] != (n, n) or len(flows) < stop:
            raise ValueError(f"panel {panel.name}: flows {flows.shape} do not cover {stop} days x {n} regions")
        observed = getattr(panel, "flow_observed", None)
        seen = np.ones(stop, dtype=bool) if observed is None else np.asarray(observed[:stop], dtype=bool)
        return np.asarray(flows[:stop], dtype=np.float64), seen
    static = np.eye(n) if panel.adjacency is None else np.asarray(panel.adjacency, dtype=np.float64)
    return np.broadcast_to(static, (stop, n, n)), np.zeros(stop, dtype=bool)


class LearnedEpidemicForecaster:
    """`polis.epidemic.learned.LearnedForecaster` (daily-refit global LightGBM with mobility-weighted
    neighbour features and the metapopulation forecast as a feature) as a `polis.forecast` Forecaster."""

    kind: ClassVar[str] = "epidemic-lightgbm"

    def __init__(self, steps: tuple[int, ...] = STEPS, seed: int = 0, window: int = 14, trees: int = 80) -> None:
        if not steps or min(steps) < 1:
            raise ValueError("steps: one or more days ahead, each >= 1")
        self.steps = tuple(steps)
        self.seed = seed  # LightGBM runs with seed 0 and deterministic=True: the seed is recorded, not drawn
        self.model = LearnedForecaster(window=window, trees=trees)
        self.calibration: IntervalCalibration | None = None
        # fingerprint of a history -> the forecast from its end, (max(steps), regions)
        self.record: dict[str, np.ndarray] = {}

    def fit(self, history: Panel, valid_from: int, progress: Progress | None = None) -> None:
        """Calibrate the intervals on the origins from `valid_from` on (each forecast refit on the days
        before its origin, as served; origins already in the record are not refit), then fit on the
        whole history for the next forecast. The record keeps these origins' forecasts only."""
        full = country_of(history)
        origins = np.arange(max(valid_from - 1, 7), len(history.values) - 1)
        used = [fingerprint(full.truncated(o + 1)) for o in origins.tolist()]
        if len(origins):
            errors = self._mean(history, origins, progress) - targets(history, origins, self.steps)
            self.calibration = IntervalCalibration.from_errors(errors)
        final = fingerprint(full)
        if final not in self.record:
            self.model.keep(None)  # a fresh fit on everything given, kept for forecasts from its end
            self.model.booster_for(full, max(self.steps))
        self.record = {key: self.record[key] for key in [*used, final] if key in self.record}
        if progress is not None:
            progress("fitted", 1.0)

    def forecast_days(self, history: CountryData) -> np.ndarray:
        """(max(steps), regions): the forecast from the end of `history`, from the record when this
        history was forecast from before, else refit on it (and recorded)."""
        key = fingerprint(history)
        kept = self.record.get(key)
        if kept is None:
            kept = self.model.forecast(history, max(self.steps))
            kept.setflags(write=False)
            self.record[key] = kept
        return kept

    @property
    def name(self) -> str:
        return self.model.name

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        """`polis.epidemic.evaluation.Forecaster`: the same forecasts, for the rolling protocol and the
        served blend."""
        if horizons > max(self.steps):
            raise ValueError(f"this model forecasts {max(self.steps)} days ahead, not {horizons}")
        return np.array(self.forecast_days(history)[:horizons])

    def predict(self, panel: Panel, origins: np.ndarray) -> Forecast:
        if self.calibration is None:
            raise RuntimeError("the model is not fitted")
        origins = np.asarray(origins, dtype=np.int64)
        mean = self._mean(panel, origins)
        lower, upper = self.calibration.bounds(mean)
        return Forecast(origins, self.steps, mean, np.maximum(lower, 0.0), upper)

    def _mean(self, panel: Panel, origins: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """[M, H, N]: from each origin, the days o + step, from the days up to o only."""
        index = np.asarray(self.steps) - 1
        out = np.empty((len(origins), len(self.steps), panel.n_sensors))
        full = country_of(panel)
        for m, origin in enumerate(origins.tolist()):
            out[m] = self.forecast_days(full.truncated(origin + 1))[index]
            if progress is not None:
                progress(f"forecast from day {origin + 1} of {len(panel.values)}", (m + 1) / (len(origins) + 1))
        return out

    def save(self, directory: Path) -> None:
        if self.calibration is None:
            raise RuntimeError("the model is not fitted")
        directory.mkdir(parents=True, exist_ok=True)
        fitted = self.model.kept
        booster = None if fitted is None else fitted[2]
        if booster is not None:
            booster.save_model(str(directory / "booster.txt"))
        if self.record:
            keys = list(self.record)
            np.savez(directory / "record.npz", keys=np.array(keys), forecasts=np.stack([self.record[k] for k in keys]))
        write_json(
            directory / "model.json",
            {
                "kind": self.kind,
                "steps": list(self.steps),
                "seed": self.seed,
                "params": {
                    "window": self.model.window,
                    "trees": self.model.trees,
                    "scale_days": SCALE_DAYS,
                    "target": TARGET,
                },
                "fitted": None if fitted is None else {"days": fitted[0], "fingerprint": fitted[1]},
                "booster": booster is not None,
                "recorded_forecasts": len(self.record),
                "calibration": self.calibration.to_json(),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        import lightgbm

        meta = read_json(directory / "model.json")
        params = meta["params"]
        if meta.get("kind") != cls.kind or not isinstance(params, dict):
            raise ValueError(f"{directory}: not a {cls.kind} model")
        if params.get("scale_days") != SCALE_DAYS:  # the features would mean something else now
            raise ValueError(f"{directory}: saved with scale_days {params.get('scale_days')}, code uses {SCALE_DAYS}")
        if params.get("target") != TARGET:  # its boosters and recorded forecasts predict something else
            raise ValueError(f"{directory}: saved for the target {params.get('target')!r}, code uses {TARGET!r}")
        steps: list[int] = meta["steps"]  # type: ignore[assignment]
        model = cls(tuple(steps), int(meta["seed"]), int(params["window"]), int(params["trees"]))  # type: ignore[call-overload]
        model.calibration = IntervalCalibration.from_json(meta["calibration"])  # type: ignore[arg-type]
        fitted = meta.get("fitted")
        if isinstance(fitted, dict):
            from polis.forecast.gbm import whole_model_text  # LightGBM aborts the process on a cut-off file

            booster = None
            if meta.get("booster"):
                booster = lightgbm.Booster(model_str=whole_model_text(directory / "booster.txt"))
            model.model.keep((int(fitted["days"]), str(fitted["fingerprint"]), booster))
        if meta.get("recorded_forecasts"):
            with np.load(directory / "record.npz", allow_pickle=False) as saved:
                for key, kept in zip(saved["keys"].tolist(), saved["forecasts"], strict=True):
                    kept.setflags(write=False)
                    model.record[str(key)] = kept
        return model
