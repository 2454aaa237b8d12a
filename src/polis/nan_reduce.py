"""numpy's NaN-skipping reductions without their warnings about slices that hold no number.

Missing readings are NaN throughout Polis, and a sensor with none in a window is ordinary: the reduction's
answer there (NaN) is the right one, and numpy's RuntimeWarning about it is noise. The usual hush,
`warnings.catch_warnings`, swaps the process-wide warning filters and restores them on exit, which is not
thread-safe: the live service scores crowds and forecasts from several threads at once, and one thread's
restore let another's warning through (seen in `make run`; tests/unit/test_crowd_gathering.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def nan_reduce(reduce: Callable[..., Any], a: np.ndarray, axis: int | None = None) -> Any:
    """`reduce(a, axis=axis)` for np.nanmedian, np.nanmean, np.nanstd, np.nanmin or np.nanmax: the same
    values, NaN where a slice holds no number, and no warning about such slices."""
    empty = np.isnan(a).all(axis=axis, keepdims=True)
    out = np.where(empty, np.nan, reduce(np.where(empty, 0.0, a), axis=axis, keepdims=True))
    return out.reshape(())[()] if axis is None else out.squeeze(axis=axis)
