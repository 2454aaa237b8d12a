"""The stacked ensemble served live: readings written to the hub give a forecast that combines what its
members forecast now and at earlier steps, read from the store's history like any other model's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.forecast.data import load_panel
from polis.forecast.ensemble import StackedEnsemble
from polis.forecast.gbm import GbmParams, GlobalGbm
from polis.forecast.live import live_model_for
from polis.forecast.neural import MlpParams, SpatioTemporalMlp
from polis.settings import Settings
from tests.conftest import admin_headers
from tests.integration.test_forecast_live import _wait_for, _write, los_loop_hub

SENSORS = 6
STEPS = (1, 2, 3)


def test_a_live_ensemble_forecasts_from_the_hubs_readings() -> None:
    datasets_dir = Settings().datasets_dir
    platform = los_loop_hub(SENSORS)
    try:
        panel = load_panel("los-loop", datasets_dir).sensors(SENSORS)
        gbm = GlobalGbm(STEPS, 0, GbmParams(lags=6, max_rounds=30, learning_rate=0.2, num_leaves=15))
        mlp = SpatioTemporalMlp(STEPS, 0, MlpParams(lags=6, hidden=16, embedding=4, epochs=2, threads=1))
        model = StackedEnsemble(STEPS, 0, [gbm, mlp])
        model.fit(panel, 1800)
        # earlier origins in play whatever the fit chose: step 1 also from the MLP's step 3 two steps back
        model.columns[0], model.weights[0] = [(0, 0), (1, 2)], np.array([0.5, 0.5])
        platform.forecasts.debounce_s = 0.1
        live = live_model_for(panel, model, datasets_dir)
        platform.forecasts.attach(live)
        with TestClient(create_app(platform), raise_server_exceptions=False,
                        headers=admin_headers(platform)) as client:
            last = datetime(2012, 3, 8, 7, 55, tzinfo=UTC)  # the recording's final step
            for i, entity_id in enumerate(live.entity_ids):
                _write(client, entity_id, 60.0 + i, last + timedelta(minutes=5))
            url = f"/polis/v1/forecasts/{live.entity_ids[0]}?attr=averageVehicleSpeed"
            body = _wait_for(client, url, lambda b: b["issuedAt"] == "2012-03-08T08:00:00Z")
        assert body["model"] == "ensemble:los-loop"
        assert [p["horizonMinutes"] for p in body["points"]] == [5, 10, 15]
        assert all(p["lower80"] <= p["value"] <= p["upper80"] for p in body["points"])
        assert 30 < body["points"][0]["value"] < 90  # near the last reading of 60 mph
    finally:
        platform.close()
