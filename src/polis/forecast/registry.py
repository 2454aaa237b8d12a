"""The registry of trained models: one folder per model version under `<data dir>/models/<dataset>/<kind>/`,
holding the model's own files (LightGBM text, .npz arrays, JSON; never pickle) and `meta.json` with
the dataset, protocol, metrics, training time, version, creation time and the SHA-256 and size of each
model file (checked before a loader reads them: a damaged file is refused, not handed to LightGBM)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polis.forecast.model import Forecaster, read_json

__all__ = ["FORECAST_KINDS", "ModelLoadError", "ModelRecord", "ModelRegistry", "model_class"]

log = logging.getLogger(__name__)

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


class ModelLoadError(Exception):
    """A registered model version that cannot be served: its files are not the ones saved (truncated, replaced,
    missing), or its loader refused them, or it does not fit the data it would forecast."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    dataset: str
    kind: str
    version: int
    path: Path
    meta: dict[str, Any]


META = "meta.json"


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
        """The model's files first, then `meta.json` with the SHA-256 and size of each of them, written last and
        atomically: a version is registered only once it is whole, and `load` can tell when it no longer is."""
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
            "files": {name: _fingerprint(path / name) for name in _model_files(path)},
        }
        _write_atomically(path / META, meta)
        return ModelRecord(dataset, model.kind, version, path, meta)

    def records(self, dataset: str | None = None) -> list[ModelRecord]:
        """Every registered version (of `dataset`); one whose meta.json is unreadable or inconsistent is skipped
        with a warning, so one damaged version does not hide the others."""
        out = []
        for meta_path in sorted(self.root.glob(f"*/*/*/{META}")):
            try:
                record = _record(meta_path)
            except (OSError, ValueError) as error:
                log.warning("model registry: skipping %s: %s", meta_path.parent, error)
                continue
            if dataset is None or record.dataset == dataset:
                out.append(record)
        return sorted(out, key=lambda r: (r.dataset, r.kind, r.version))

    def candidates(self, dataset: str, kind: str | None = None) -> list[ModelRecord]:
        """`dataset`'s versions (of `kind`), the preferred first: the newest; without a kind the learned models
        before the baselines, the stack of them first."""
        matching = [r for r in self.records(dataset) if kind is None or r.kind == kind]
        order = {"ensemble": -1, "lightgbm": 0, "mlp": 1}
        matching.sort(key=lambda r: (-order.get(r.kind, 9), r.version) if kind is None else r.version)
        return matching[::-1]

    def latest(self, dataset: str, kind: str | None = None) -> ModelRecord | None:
        matching = self.candidates(dataset, kind)
        return matching[0] if matching else None

    def verify(self, record: ModelRecord) -> None:
        """Raise ModelLoadError unless every file `meta.json` lists has the size and SHA-256 it was saved with
        (a truncated LightGBM file makes LightGBM abort the process, which no `except` catches: checked first)."""
        files = record.meta.get("files")
        if files is None:
            log.warning("model %s was saved without file digests (before they were recorded): loading it "
                        "unverified; `polis train %s --model %s` registers a verified version", record.path,
                        record.dataset, record.kind)
            return
        if not isinstance(files, dict) or not files:
            raise ModelLoadError(f"{record.path}: meta.json lists no model files")
        for name, expected in files.items():
            path = record.path / name
            if not isinstance(expected, dict) or Path(name).is_absolute() or ".." in Path(name).parts:
                raise ModelLoadError(f"{record.path}: meta.json has an invalid entry for {name!r}")
            if not path.is_file():
                raise ModelLoadError(f"{path}: model file missing")
            size = path.stat().st_size
            if size != expected.get("size"):
                raise ModelLoadError(f"{path}: model file damaged ({size} bytes, saved with {expected.get('size')})")
            if _sha256(path) != expected.get("sha256"):
                raise ModelLoadError(f"{path}: model file damaged (its SHA-256 differs from the one saved)")

    def load(self, record: ModelRecord) -> Forecaster:
        """The fitted model of `record`, its files verified first; ModelLoadError when they fail verification
        or its loader refuses them."""
        self.verify(record)
        try:
            model: Forecaster = model_class(record.kind).load(record.path)
        except Exception as error:  # whatever a loader raises on files it cannot read (json, numpy, LightGBM)
            raise ModelLoadError(f"{record.path}: the {record.kind} model could not be loaded: "
                                 f"{type(error).__name__}: {error}") from error
        return model

    def load_usable(
        self,
        dataset: str,
        kind: str | None = None,
        check: Callable[[ModelRecord, Forecaster], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> tuple[ModelRecord, Forecaster] | None:
        """The newest version (see `candidates`) that loads and passes `check` (which raises ModelLoadError),
        each one passed over told to `warn`; None when `dataset` has no version, ModelLoadError (naming every
        version's fault) when none loads."""
        tell = warn or log.warning
        failures = []
        candidates = self.candidates(dataset, kind)
        for number, record in enumerate(candidates):
            try:
                model = self.load(record)
                if check is not None:
                    check(record, model)
            except ModelLoadError as error:
                failures.append(f"{record.kind} v{record.version}: {error}")
                if number + 1 < len(candidates):  # the last one's error is the one raised below
                    tell(f"model {record.kind} v{record.version} of {dataset} is not used: {error}; trying the "
                         "previous version")
                continue
            return record, model
        if not failures:
            return None
        raise ModelLoadError(f"no {kind + ' ' if kind else ''}model of {dataset} could be loaded "
                             f"({'; '.join(failures)})")


def _record(meta_path: Path) -> ModelRecord:
    """The record of one version folder, its meta.json checked against where it lies (ValueError if not)."""
    meta = read_json(meta_path)
    dataset, kind, version = meta.get("dataset"), meta.get("kind"), meta.get("version")
    if not isinstance(dataset, str) or not isinstance(kind, str):
        raise ValueError("meta.json lacks its dataset or kind")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"meta.json has version {version!r}, not a number")
    folder = meta_path.parent
    # the folder is what `save` numbered: a meta.json copied in from another dataset or version is not that one
    if (folder.parent.parent.name, folder.parent.name, folder.name) != (dataset, kind, str(version)):
        raise ValueError(f"meta.json says {dataset}/{kind}/{version}, which is not where it lies")
    return ModelRecord(dataset, kind, version, folder, meta)


def _model_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != META)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256(path), "size": path.stat().st_size}


def _write_atomically(path: Path, data: object) -> None:
    """Replace `path` by `data` as JSON in one step: readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
