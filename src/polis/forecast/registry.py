"""The registry of trained models: one folder per model version under `<data dir>/models/<dataset>/<kind>/`,
holding the model's own files (LightGBM text, .npz arrays, JSON; never pickle) and `meta.json` with
the dataset, protocol, metrics, training time, version and creation time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polis.forecast.model import Forecaster, read_json, write_json

__all__ = ["FORECAST_KINDS", "ModelRecord", "ModelRegistry", "model_class"]

# The kinds `polis train` fits for a forecasting dataset (`polis.forecast.bench.build_models`, a test keeps the
# two in step), which `polis forecast` and `polis serve --forecast-model` take: named here, where naming them
# imports neither LightGBM nor torch.
FORECAST_KINDS = ("lightgbm", "mlp", "ensemble", "persistence", "historical-average", "seasonal-naive")


def model_class(kind: str) -> Any:
    """The class that loads models of `kind` (imported only when asked: torch and LightGBM are heavy)."""
    from polis.forecast.baselines import HistoricalAverage, Persistence, SeasonalNaive

    if kind == "lightgbm":
        from polis.forecast.gbm import GlobalGbm

        return GlobalGbm
    if kind == "mlp":
        from polis.forecast.neural import SpatioTemporalMlp

        return SpatioTemporalMlp
    if kind == "ensemble":
        from polis.forecast.ensemble import StackedEnsemble

        return StackedEnsemble
    if kind == "epidemic-lightgbm":  # the epidemic module's learned forecaster, behind the same contract
        from polis.epidemic.panel_forecaster import LearnedEpidemicForecaster

        return LearnedEpidemicForecaster
    known = {c.kind: c for c in (Persistence, HistoricalAverage, SeasonalNaive)}
    if kind not in known:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(FORECAST_KINDS)}, epidemic-lightgbm")
    return known[kind]


@dataclass(frozen=True, slots=True)
class ModelRecord:
    dataset: str
    kind: str
    version: int
    path: Path
    meta: dict[str, Any]


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save(
        self,
        model: Forecaster,
        dataset: str,
        protocol: str,
        *,
        metrics: list[dict[str, Any]] | None = None,
        train_seconds: float = 0.0,
        entity_type: str = "",
        attribute: str = "",
        entity_ids: tuple[str, ...] = (),
    ) -> ModelRecord:
        folder = self.root / dataset / model.kind
        folder.mkdir(parents=True, exist_ok=True)
        versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
        version = max(versions, default=0) + 1
        path = folder / str(version)
        model.save(path)
        meta = {
            "dataset": dataset, "kind": model.kind, "version": version, "protocol": protocol,
            "metrics": metrics or [], "train_seconds": round(train_seconds, 3), "steps": list(model.steps),
            "seed": model.seed, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "entity_type": entity_type, "attribute": attribute, "entity_ids": list(entity_ids),
        }
        write_json(path / "meta.json", meta)
        return ModelRecord(dataset, model.kind, version, path, meta)

    def records(self, dataset: str | None = None) -> list[ModelRecord]:
        out = []
        for meta_path in sorted(self.root.glob("*/*/*/meta.json")):
            try:
                meta = read_json(meta_path)
            except (OSError, json.JSONDecodeError, ValueError):
                continue  # a half-written folder is not a model
            if dataset is None or meta.get("dataset") == dataset:
                out.append(ModelRecord(str(meta["dataset"]), str(meta["kind"]), int(meta["version"]),  # type: ignore[call-overload]
                                       meta_path.parent, meta))
        return sorted(out, key=lambda r: (r.dataset, r.kind, r.version))

    def latest(self, dataset: str, kind: str | None = None) -> ModelRecord | None:
        matching = [r for r in self.records(dataset) if kind is None or r.kind == kind]
        if kind is None:  # the learned models before the baselines, the stack of them first
            order = {"ensemble": -1, "lightgbm": 0, "mlp": 1}
            matching.sort(key=lambda r: (-order.get(r.kind, 9), r.version))
        return matching[-1] if matching else None

    def load(self, record: ModelRecord) -> Forecaster:
        model: Forecaster = model_class(record.kind).load(record.path)
        return model
