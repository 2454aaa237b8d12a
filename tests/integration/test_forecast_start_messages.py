"""What `polis serve --forecast` and the demo tell the operator about live forecasts: that a model is being
trained in the background and where its log is (a first start trains for minutes, which a silent console left
unexplained), and when forecasts are live."""

from __future__ import annotations

import pytest

from polis.forecast.baselines import Persistence
from polis.forecast.live import registry_for
from tests.integration.test_forecast_live import los_loop_hub


def test_a_registered_model_goes_live_and_says_so() -> None:
    platform = los_loop_hub(2)
    try:
        registry_for(platform.settings).save(Persistence((1, 2, 3)), "los-loop", "all-data")
        said: list[str] = []
        platform.forecasts.start(["los-loop"], kind="persistence", say=said.append).join(120)
        assert len(said) == 1 and said[0].startswith("forecasts: live for los-loop (") and "persistence" in said[0]
    finally:
        platform.close()


def test_a_model_to_train_is_announced_with_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    platform = los_loop_hub(2)
    try:
        registry = registry_for(platform.settings)

        def trained(dataset: str, kind: str, quick: bool) -> None:  # what `polis train` in its child leaves
            registry.save(Persistence((1, 2, 3)), dataset, "all-data")

        monkeypatch.setattr(platform.forecasts, "_train_in_child", trained)
        said: list[str] = []
        platform.forecasts.start(["los-loop"], kind="persistence", say=said.append).join(120)
        log = platform.settings.data_dir / "models" / "train-los-loop-persistence.log"
        assert said[0] == (f"forecasts: training a quick persistence model for los-loop in the background (minutes on "
                           f"2 cores; progress in {log})")
        assert said[1].startswith("forecasts: live for los-loop (")
    finally:
        platform.close()
