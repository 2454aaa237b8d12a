"""The MLP forecasts in numpy from the weights PyTorch trained: the same numbers as the torch network, a
loaded model never imports PyTorch (the live server, the ensemble), and a model saved as a torch state_dict
before that still loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from polis.forecast.neural import SpatioTemporalMlp, _inputs
from polis.forecast.registry import ModelRegistry
from tests.unit.test_forecast_models import TINY_MLP, panel

ORIGINS = np.array([2400, 2500, 2900])


def _fitted() -> SpatioTemporalMlp:
    model = SpatioTemporalMlp((1, 2), 0, TINY_MLP)
    model.fit(panel("sz-taxi").head(2300), 2000)
    return model


def test_the_numpy_forward_pass_is_the_torch_networks() -> None:
    model = _fitted()
    assert model.forward is not None and model.network is None  # the torch module is not kept
    net = model._build()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.forward.weights.items()})
    net.eval()
    assert model.state is not None
    window, _, when = _inputs(panel("sz-taxi"), ORIGINS, model.state)
    with torch.no_grad():
        expected = net(torch.from_numpy(window), torch.from_numpy(when)).numpy()
    assert np.allclose(model.forward(window, when), expected, rtol=1e-4, atol=1e-5)
    assert np.abs(expected).max() > 0.01  # a network that outputs something


def test_a_loaded_model_forecasts_without_importing_pytorch(tmp_path: Path) -> None:
    model = _fitted()
    record = ModelRegistry(tmp_path).save(model, "sz-taxi", "tgcn")
    assert not (record.path / "network.pt").exists()
    expected = model.predict(panel("sz-taxi"), ORIGINS).mean
    np.save(tmp_path / "expected.npy", expected)
    script = f"""
import sys
import numpy as np
from polis.forecast.registry import ModelRegistry
from tests.unit.test_forecast_models import panel
registry = ModelRegistry({str(tmp_path)!r})
model = registry.load(registry.latest("sz-taxi", "mlp"))
mean = model.predict(panel("sz-taxi"), np.array({ORIGINS.tolist()})).mean
assert np.array_equal(mean, np.load({str(tmp_path / "expected.npy")!r}), equal_nan=True)
assert "torch" not in sys.modules, "PyTorch was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr


def test_a_model_saved_as_a_torch_state_dict_still_loads(tmp_path: Path) -> None:
    model = _fitted()
    record = ModelRegistry(tmp_path).save(model, "sz-taxi", "tgcn")
    assert model.forward is not None
    torch.save({k: torch.from_numpy(v) for k, v in model.forward.weights.items()}, record.path / "network.pt")
    (record.path / "network.npz").unlink()  # as the MLP was saved before the .npz
    again = SpatioTemporalMlp.load(record.path)  # nor file digests then
    assert np.array_equal(again.predict(panel("sz-taxi"), ORIGINS).mean, model.predict(panel("sz-taxi"), ORIGINS).mean)
