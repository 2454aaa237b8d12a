"""Region risk: how fast cases grow (the instantaneous reproduction number, Cori et al. 2013, with its
95 % credible interval) and how much infection arrives along the inflows (importation pressure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from polis.epidemic.data import CountryData

# Serial interval of COVID-19, gamma with mean 4.7 and sd 2.9 days (Nishiura et al., IJID 2020),
# discretised on days 1..21.
SERIAL_MEAN, SERIAL_SD, SERIAL_MAX = 4.7, 2.9, 21
PRIOR_SHAPE, PRIOR_SCALE = 1.0, 5.0  # Cori et al.'s default gamma prior on R
WINDOW = 7
MIN_CASES = 12  # fewer cases in the window and the posterior is mostly prior (Cori et al. advise >= 12)


def serial_interval() -> np.ndarray:
    """w[k - 1] = probability that the serial interval is k days, k = 1..SERIAL_MAX."""
    shape = (SERIAL_MEAN / SERIAL_SD) ** 2
    scale = SERIAL_SD**2 / SERIAL_MEAN
    edges = stats.gamma.cdf(np.arange(0.5, SERIAL_MAX + 1.5), shape, scale=scale)
    w = np.diff(edges)
    return np.asarray(w / w.sum())


@dataclass(frozen=True, slots=True)
class RegionRisk:
    region: str
    r_mean: float | None  # None: fewer than MIN_CASES cases in the window, too few to say
    r_lower: float | None  # 2.5 %
    r_upper: float | None  # 97.5 %
    cases_last_7_days: float
    importation_pressure: float  # expected infectious arrivals a day: sum_j share(j -> i) * cases_j
    imported_share: float  # importation against (importation + own cases)


def reproduction_number(cases: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cori et al.: posterior Gamma(a + sum I, 1 / (1/b + sum Lambda)) over the last `window` days, per
    region (columns of `cases`); returns mean, 2.5 % and 97.5 % quantiles."""
    w = serial_interval()
    days = cases.shape[0]
    padded = np.vstack([np.zeros((SERIAL_MAX, cases.shape[1])), cases])
    # Lambda_t = sum_k w_k I_{t-k}, for the last `window` days
    lam = np.array(
        [w @ padded[SERIAL_MAX + t - np.arange(1, SERIAL_MAX + 1)] for t in range(max(days - window, 0), days)]
    )
    incidence = cases[-window:]
    shape = PRIOR_SHAPE + incidence.sum(axis=0)
    scale = 1.0 / (1.0 / PRIOR_SCALE + lam.sum(axis=0))
    return shape * scale, stats.gamma.ppf(0.025, shape, scale=scale), stats.gamma.ppf(0.975, shape, scale=scale)


def region_risk(data: CountryData) -> list[RegionRisk]:
    """Risk per region at the end of the data."""
    mean, low, high = reproduction_number(data.cases)
    flows = data.flows[-1]
    outflow = flows.sum(axis=1)
    share = flows / np.where(outflow > 0, outflow, 1.0)[:, None]
    np.fill_diagonal(share, 0.0)
    recent = data.cases[-WINDOW:].mean(axis=0)
    imported = recent @ share
    total = imported + recent
    counted = data.cases[-WINDOW:].sum(axis=0)
    rows = []
    for i, name in enumerate(data.regions):
        enough = counted[i] >= MIN_CASES
        share = float(imported[i] / total[i]) if total[i] > 0 else 0.0
        rows.append(
            RegionRisk(
                name,
                float(mean[i]) if enough else None,
                float(low[i]) if enough else None,
                float(high[i]) if enough else None,
                float(counted[i]),
                float(imported[i]),
                share,
            )
        )
    return rows
