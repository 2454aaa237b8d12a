"""A compact spatio-temporal neural forecaster in PyTorch, for the CPU: an MLP over each sensor's recent
window and its road neighbours' window, with learned sensor, time-of-day and day-of-week identity
embeddings (the STID idea: most of what a graph network learns about a sensor is *which* sensor and
*when*, and embeddings learn that for a fraction of the cost). All steps ahead come out at once as
changes from the last reading in the sensor's standard units.

Trained with PyTorch; forecasts come from the same weights in numpy (`_NumpyNet`), so a server that loads
the model (the live service, the stacked ensemble) never imports PyTorch. Saved as the weights in a plain
.npz + JSON; a model saved before that (a torch state_dict, `network.pt`) still loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from polis.forecast.data import Panel
from polis.forecast.features import FeatureState, recent_window
from polis.forecast.model import IntervalCalibration, Progress, floor_of, floored, forward_fill, targets
from polis.forecast.standardised import StandardisedForecaster, read_meta

__all__ = ["MlpParams", "SpatioTemporalMlp"]


@dataclass(frozen=True, slots=True)
class MlpParams:
    lags: int = 12
    hidden: int = 128
    embedding: int = 16
    epochs: int = 30
    patience: int = 5
    batch: int = 2048
    learning_rate: float = 2e-3
    threads: int = 2


def _inputs(panel: Panel, origins: np.ndarray, state: FeatureState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window [M, N, 2L] of own and neighbour z, base [M, N], slot/day [M, 2]); reads only up to each origin."""
    from polis.forecast.data import time_features

    stop = int(origins.max()) + 1
    z = forward_fill(state.standardise(panel.values[:stop]))
    z = np.where(np.isnan(z), 0.0, z)
    index = origins[:, None] - np.arange(state.lags)[None, :]  # [M, L]
    own = z[np.clip(index, 0, None)]  # [M, L, N]
    own[index < 0] = 0.0
    near = own @ state.neighbours.T
    window = np.concatenate([own, near], axis=1).transpose(0, 2, 1)  # [M, N, 2L]
    base = own[:, 0, :]
    window = window - base[:, :, None]  # the shape of the recent past, relative to now
    slots, days = time_features(panel.times[origins], state.timezone, state.step_s)
    extra = np.concatenate([window, base[:, :, None]], axis=-1)
    return extra.astype(np.float32), base, np.stack([slots, days], axis=-1)


class _NumpyNet:
    """The trained network's forward pass in numpy (float32, as trained): the embeddings looked up and
    concatenated to the window, then Linear-ReLU-Linear-ReLU-Linear."""

    NAMES = ("sensor.weight", "slot.weight", "day.weight", "body.0.weight", "body.0.bias", "body.2.weight",
             "body.2.bias", "body.4.weight", "body.4.bias")

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = {name: np.ascontiguousarray(weights[name], dtype=np.float32) for name in self.NAMES}

    def __call__(self, window: np.ndarray, when: np.ndarray) -> np.ndarray:
        """window [M, N, 2L+1] float32, when [M, 2] (slot, day) -> change [M, N, H]."""
        w = self.weights
        m, n, _ = window.shape
        sensor = np.broadcast_to(w["sensor.weight"][None, :n], (m, n, w["sensor.weight"].shape[1]))
        slot = np.broadcast_to(w["slot.weight"][when[:, 0]][:, None, :], (m, n, w["slot.weight"].shape[1]))
        day = np.broadcast_to(w["day.weight"][when[:, 1]][:, None, :], (m, n, w["day.weight"].shape[1]))
        x = np.concatenate([window, sensor, slot, day], axis=-1)
        x = np.maximum(x @ w["body.0.weight"].T + w["body.0.bias"], 0.0)
        x = np.maximum(x @ w["body.2.weight"].T + w["body.2.bias"], 0.0)
        out: np.ndarray = x @ w["body.4.weight"].T + w["body.4.bias"]
        return out


class SpatioTemporalMlp(StandardisedForecaster):
    kind: ClassVar[str] = "mlp"

    def __init__(self, steps: tuple[int, ...], seed: int = 0, params: MlpParams | None = None) -> None:
        self.steps = tuple(steps)
        self.seed = seed
        self.params = params or MlpParams()
        self.state: FeatureState | None = None
        self.calibration: IntervalCalibration | None = None
        self.network: Any = None  # the torch module, while training only
        self.forward: _NumpyNet | None = None  # what forecasts
        self.n_sensors = 0
        self.n_slots = 0

    def _build(self) -> Any:
        import torch
        from torch import nn

        p = self.params
        width = 2 * p.lags + 1 + 3 * p.embedding

        class Net(nn.Module):
            def __init__(self, n_sensors: int, n_slots: int, n_out: int) -> None:
                super().__init__()
                self.sensor = nn.Embedding(n_sensors, p.embedding)
                self.slot = nn.Embedding(n_slots, p.embedding)
                self.day = nn.Embedding(7, p.embedding)
                self.body = nn.Sequential(
                    nn.Linear(width, p.hidden), nn.ReLU(), nn.Linear(p.hidden, p.hidden), nn.ReLU(),
                    nn.Linear(p.hidden, n_out),
                )

            def forward(self, window: torch.Tensor, when: torch.Tensor) -> torch.Tensor:
                m, n, _ = window.shape
                ids = torch.arange(n).expand(m, n)
                parts = [window, self.sensor(ids), self.slot(when[:, 0]).unsqueeze(1).expand(m, n, -1),
                         self.day(when[:, 1]).unsqueeze(1).expand(m, n, -1)]
                out: torch.Tensor = self.body(torch.cat(parts, dim=-1))
                return out

        return Net(self.n_sensors, self.n_slots, len(self.steps))

    def fit(self, history: Panel, valid_from: int, progress: Progress | None = None) -> None:
        import torch

        report = progress or (lambda what, done: None)
        torch.set_num_threads(self.params.threads)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.state = FeatureState.learn(history.head(valid_from), self.params.lags)
        self.n_sensors, self.n_slots = history.n_sensors, history.steps_per_day
        self.network = self._build()
        z = self.state.standardise(history.values)
        max_step = max(self.steps)
        train_o = np.arange(self.params.lags - 1, valid_from - max_step)
        valid_o = np.arange(valid_from - 1, len(history.values) - max_step)
        tensors = {}
        for label, origins in (("train", train_o), ("valid", valid_o)):
            window, base, when = _inputs(history, origins, self.state)
            y = z[origins[:, None] + np.asarray(self.steps)[None, :]] - base[:, None, :]  # [M, H, N]
            tensors[label] = (torch.from_numpy(window), torch.from_numpy(when),
                              torch.from_numpy(y.transpose(0, 2, 1).astype(np.float32)))
        optimiser = torch.optim.Adam(self.network.parameters(), lr=self.params.learning_rate)
        loss_fn = torch.nn.HuberLoss(delta=1.0)
        best, best_state, waited = float("inf"), None, 0
        per_batch = max(1, self.params.batch // history.n_sensors)
        for epoch in range(self.params.epochs):
            self.network.train()
            order = rng.permutation(len(train_o))
            train_window, train_when, y = tensors["train"]
            for start in range(0, len(order), per_batch):
                pick = torch.from_numpy(order[start : start + per_batch])
                target = y[pick]
                known = ~torch.isnan(target)
                out = self.network(train_window[pick], train_when[pick])
                loss = loss_fn(out[known], target[known])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            self.network.eval()
            with torch.no_grad():
                window_v, when_v, y_v = tensors["valid"]
                out_v = self.network(window_v, when_v)
                known_v = ~torch.isnan(y_v)
                valid_loss = float(torch.mean(torch.abs(out_v[known_v] - y_v[known_v])))
            report(f"epoch {epoch + 1}: validation MAE {valid_loss:.4f} (z)", (epoch + 1) / self.params.epochs)
            if valid_loss < best - 1e-5:
                best, waited = valid_loss, 0
                best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
            else:
                waited += 1
                if waited >= self.params.patience:
                    break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.forward = _NumpyNet({k: v.detach().numpy() for k, v in self.network.state_dict().items()})
        self.network = None  # forecasts come from `forward`
        valid_origins = np.arange(valid_from - 1, len(history.values) - 1)
        floor = floor_of(history)
        errors = floored(self._mean(history, valid_origins), floor) - targets(history, valid_origins, self.steps)
        self.calibration = IntervalCalibration.from_errors(errors, floor=floor)
        report("done", 1.0)

    def _mean(self, panel: Panel, origins: np.ndarray) -> np.ndarray:
        assert self.state is not None and self.forward is not None
        recent, at = recent_window(panel, origins, self.state)  # the same inputs from far fewer steps
        window, base, when = _inputs(recent, at, self.state)
        change = self.forward(window, when)  # [M, N, H]
        z = base[:, None, :] + change.transpose(0, 2, 1)
        out: np.ndarray = z * self.state.std + self.state.mean
        return out

    def save(self, directory: Path) -> None:
        if self.forward is None:
            raise RuntimeError("the model is not fitted")
        self._save_state(directory, n_sensors=self.n_sensors, n_slots=self.n_slots)
        np.savez(directory / "network.npz", **self.forward.weights)  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = read_meta(directory)
        model = cls(tuple(meta["steps"]), int(meta["seed"]), MlpParams(**meta["params"]))
        model._load_state(directory, meta)
        model.n_sensors, model.n_slots = int(meta["n_sensors"]), int(meta["n_slots"])
        if (directory / "network.npz").exists():
            with np.load(directory / "network.npz", allow_pickle=False) as arrays:
                model.forward = _NumpyNet(dict(arrays))
        else:  # saved before the .npz: only the state_dict
            import torch

            state = torch.load(directory / "network.pt", weights_only=True)
            model.forward = _NumpyNet({k: v.numpy() for k, v in state.items()})
        return model
