"""The model registry keeps what it saved verifiable: every model file's SHA-256 and size in meta.json (written last,
in one step), checked before a loader reads the files; a damaged version is passed over for the one before it,
and one unreadable meta.json hides nothing else."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from polis.forecast.baselines import HistoricalAverage, Persistence
from polis.forecast.data import load_panel
from polis.forecast.registry import ModelLoadError, ModelRecord, ModelRegistry
from polis.settings import Settings

STEPS = (1, 2, 3)


def _fitted_average() -> HistoricalAverage:
    panel = load_panel("sz-taxi", Settings().datasets_dir).sensors(4)
    model = HistoricalAverage(STEPS)
    model.fit(panel, len(panel.values) - 200)
    return model


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _meta(record: ModelRecord) -> dict[str, object]:
    return dict(json.loads((record.path / "meta.json").read_text()))


def test_meta_records_the_digest_and_size_of_every_model_file(tmp_path: Path) -> None:
    record = ModelRegistry(tmp_path).save(_fitted_average(), "sz-taxi", "all-data")
    files = _meta(record)["files"]
    assert isinstance(files, dict) and set(files) == {"baseline.json"}
    saved = (record.path / "baseline.json").read_bytes()
    assert files["baseline.json"] == {"sha256": hashlib.sha256(saved).hexdigest(), "size": len(saved)}
    assert sorted(p.name for p in record.path.iterdir()) == ["baseline.json", "meta.json"]  # no temporary left


def test_a_damaged_model_file_is_refused_before_its_loader_reads_it(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    record = registry.save(_fitted_average(), "sz-taxi", "all-data")
    model_file = record.path / "baseline.json"
    original = model_file.read_bytes()
    _cut(model_file)
    with pytest.raises(ModelLoadError, match=r"baseline.json: model file damaged \(\d+ bytes, saved with \d+\)"):
        registry.load(record)
    # same size, other bytes: the digest tells
    model_file.write_bytes(original.replace(b"1", b"2", 1))
    with pytest.raises(ModelLoadError, match="SHA-256 differs"):
        registry.load(record)
    model_file.unlink()
    with pytest.raises(ModelLoadError, match="model file missing"):
        registry.load(record)


def test_the_newest_version_that_loads_is_served_with_a_warning_for_the_others(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.save(_fitted_average(), "sz-taxi", "all-data")
    second = registry.save(_fitted_average(), "sz-taxi", "all-data")
    assert registry.load_usable("sz-taxi", "historical-average") is not None
    _cut(second.path / "baseline.json")
    told: list[str] = []
    found = registry.load_usable("sz-taxi", "historical-average", warn=told.append)
    assert found is not None and found[0].version == first.version == 1
    assert len(told) == 1 and "historical-average v2 of sz-taxi is not used" in told[0]
    assert "trying the previous version" in told[0]
    _cut(first.path / "baseline.json")
    with pytest.raises(ModelLoadError, match="no historical-average model of sz-taxi could be loaded"):
        registry.load_usable("sz-taxi", "historical-average", warn=told.append)
    assert registry.load_usable("sz-taxi", "persistence") is None  # none registered: not an error


def test_a_model_saved_before_digests_loads_unverified_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(tmp_path)
    record = registry.save(_fitted_average(), "sz-taxi", "all-data")
    meta = _meta(record)
    del meta["files"]
    (record.path / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="polis.forecast.registry"):
        model = registry.load(registry.records("sz-taxi")[0])
    assert isinstance(model, HistoricalAverage)
    assert "saved without file digests" in caplog.text
    assert "polis train sz-taxi --model historical-average" in caplog.text


def test_one_unusable_meta_json_hides_no_other_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A meta.json with a version that is no number, one that is no object, one without a kind, one copied in
    from another version: each is skipped with a warning, every other model of the dataset stays served."""
    registry = ModelRegistry(tmp_path)
    registry.save(Persistence(STEPS), "los-loop", "all-data")
    for _ in range(4):
        registry.save(_fitted_average(), "los-loop", "all-data")
    folder = tmp_path / "los-loop" / "historical-average"
    meta = json.loads((folder / "1" / "meta.json").read_text())
    (folder / "1" / "meta.json").write_text(json.dumps({**meta, "version": "one"}))
    (folder / "2" / "meta.json").write_text("[1, 2]")
    (folder / "3" / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "kind"}))
    (folder / "4" / "meta.json").write_text(json.dumps(meta))  # says version 1
    with caplog.at_level(logging.WARNING, logger="polis.forecast.registry"):
        records = registry.records("los-loop")
    assert [(r.kind, r.version) for r in records] == [("persistence", 1)]
    assert "version 'one', not a number" in caplog.text
    assert "expected a JSON object" in caplog.text
    assert "lacks its dataset or kind" in caplog.text
    assert "says los-loop/historical-average/1, which is not where it lies" in caplog.text
    found = registry.load_usable("los-loop", "persistence")
    assert found is not None and isinstance(found[1], Persistence)


def test_a_cut_lightgbm_file_of_a_model_saved_before_digests_is_refused(tmp_path: Path) -> None:
    """LightGBM aborts the process on a cut-off model file; a model without digests is guarded by the loader."""
    from polis.forecast.gbm import GbmParams, GlobalGbm

    panel = load_panel("sz-taxi", Settings().datasets_dir).sensors(4)
    model = GlobalGbm((1,), seed=0, params=GbmParams(lags=4, max_rounds=5, learning_rate=0.3, num_leaves=7))
    model.fit(panel, len(panel.values) - 200)
    registry = ModelRegistry(tmp_path)
    record = registry.save(model, "sz-taxi", "all-data")
    meta = _meta(record)
    del meta["files"]
    (record.path / "meta.json").write_text(json.dumps(meta))
    record = registry.records("sz-taxi")[0]
    loaded = registry.load(record)
    origin = np.array([len(panel.values) - 1])
    assert np.allclose(loaded.predict(panel, origin).mean, model.predict(panel, origin).mean)
    _cut(record.path / "step1.txt")
    with pytest.raises(ModelLoadError, match="not a whole LightGBM model file"):
        registry.load(record)
