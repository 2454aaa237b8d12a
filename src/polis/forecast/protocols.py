"""Benchmark protocols: how a dataset is split, which forecasts are scored, and how errors are averaged.

- `tgcn`: the published T-GCN protocol (80 % train / 20 % test in time order, test windows wholly inside
  the test part, each horizon's error averaged over every step up to it), except that models are selected
  on a validation slice carved from the end of the training part (the last 10 % of the series), never on
  the test part as the published code does.
- `fair`: 70 / 10 / 20 in time order, selection on the 10 %, errors both at each horizon step and averaged
  up to it.
- `melbourne` (the only protocol for melbourne-pedestrians): last 20 % as test, the 10 % before it for
  validation, missing values masked, errors at each horizon step.

The model is given `panel.head(test_from)`: no value from the test part exists in what it fits on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PROTOCOLS", "Split", "make_split", "score"]

PROTOCOLS = ("tgcn", "fair")
# Truths below this count as zero for MAPE: SZ-taxi holds float residue such as 1e-16 where a speed is 0.
MAPE_FLOOR = 1.0


@dataclass(frozen=True, slots=True)
class Split:
    protocol: str
    valid_from: int  # validation = [valid_from, test_from)
    test_from: int  # test = [test_from, end)
    origins: np.ndarray  # test forecast origins (the last observed step of each window)
    averaged: tuple[bool, ...]  # for each reported row kind: averaged up to the horizon (True) or at it


def make_split(dataset: str, protocol: str, length: int, input_steps: int, max_step: int) -> Split:
    if dataset == "melbourne-pedestrians":
        if protocol not in ("melbourne", "tgcn", "fair"):
            raise ValueError(f"unknown protocol {protocol!r}")
        test_from = round(length * 0.8)
        valid_from = round(length * 0.7)
        origins = np.arange(test_from - 1, length - max_step)  # every test hour is a target at every horizon
        return Split("melbourne", valid_from, test_from, origins, (False,))
    if protocol == "tgcn":
        test_from = int(length * 0.8)
        valid_from = int(length * 0.7)
        averaged: tuple[bool, ...] = (True,)
    elif protocol == "fair":
        test_from = int(length * 0.8)
        valid_from = int(length * 0.7)
        averaged = (False, True)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    # as in T-GCN's code: windows of input_steps inputs then the outputs, all inside the test part
    count = length - test_from - input_steps - max_step
    origins = test_from + input_steps - 1 + np.arange(max(count, 0))
    return Split(protocol, valid_from, test_from, origins, averaged)


@dataclass(frozen=True, slots=True)
class Score:
    step: int
    averaged: bool
    mae: float
    rmse: float
    mape: float
    coverage: float  # share of truths inside the 80 % interval


def score(
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    truth: np.ndarray,
    steps: tuple[int, ...],
    report_steps: tuple[int, ...],
    averaged: bool,
) -> list[Score]:
    """Errors per reported step; averaged = pooled over every predicted step up to it. Missing truths
    (NaN) are masked; MAPE leaves out zero truths (a percentage of zero is undefined;
    below MAPE_FLOOR counts as zero)."""
    out = []
    for report in report_steps:
        chosen = [j for j, s in enumerate(steps) if (s <= report if averaged else s == report)]
        m, t = mean[:, chosen], truth[:, chosen]
        lo, hi = lower[:, chosen], upper[:, chosen]
        ok = ~np.isnan(t)
        error = (m - t)[ok]
        nonzero = ok & (np.abs(t) >= MAPE_FLOOR)
        mape = float(np.mean(np.abs((m - t)[nonzero] / t[nonzero])) * 100) if nonzero.any() else float("nan")
        inside = ((t >= lo) & (t <= hi))[ok]
        out.append(
            Score(
                report,
                averaged,
                float(np.mean(np.abs(error))),
                float(np.sqrt(np.mean(error**2))),
                mape,
                float(np.mean(inside)),
            )
        )
    return out
