"""Differential privacy: the noise scale matches ε (statistically), and the per-dataset budget is never
exceeded (a release that would pass it is refused before any noise is drawn)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from polis.domain.errors import PrivacyBudgetExceeded
from polis.privacy.dp import BudgetLedger, Mechanism, add_noise, epsilon_of, noise_scale, release_noise
from polis.store.duckdb_ import DuckDBStore

SAMPLES = 40_000


@pytest.fixture
def store() -> Iterator[DuckDBStore]:
    s = DuckDBStore(None)
    yield s
    s.close()


def discrete_laplace_variance(scale: float) -> float:
    t = math.exp(-1.0 / scale)
    return 2 * t / (1 - t) ** 2


@pytest.mark.parametrize("epsilon", [0.25, 1.0])
def test_laplace_noise_has_the_scale_epsilon_asks_for(epsilon: float) -> None:
    scale = noise_scale(Mechanism.LAPLACE, epsilon)
    assert scale == pytest.approx(1 / epsilon)
    assert epsilon_of(Mechanism.LAPLACE, scale) == pytest.approx(epsilon)  # OpenDP's own accounting agrees
    noise = add_noise(np.full(SAMPLES, 1000), Mechanism.LAPLACE, scale) - 1000
    expected = discrete_laplace_variance(scale)
    # Relative standard error of a Laplace variance estimate is sqrt(5/n) ~ 1.1%; 6% is > 5 sigma, and a
    # scale off by 20% would move the variance by 44%.
    assert noise.var() == pytest.approx(expected, rel=0.06)
    assert abs(noise.mean()) < 6 * math.sqrt(expected / SAMPLES)


def test_gaussian_noise_has_the_scale_epsilon_asks_for() -> None:
    epsilon, delta = 1.0, 1e-6
    sigma = noise_scale(Mechanism.GAUSSIAN, epsilon, delta)
    spent = epsilon_of(Mechanism.GAUSSIAN, sigma, delta)
    assert 0.8 * epsilon <= spent <= epsilon + 1e-9  # never more than asked for
    noise = add_noise(np.full(SAMPLES, 1000), Mechanism.GAUSSIAN, sigma) - 1000
    assert noise.std() == pytest.approx(sigma, rel=0.03)


def test_releases_never_exceed_the_budget(store: DuckDBStore) -> None:
    ledger = BudgetLedger(store, 1.0)
    counts = np.array([[20, 30], [40, 50]])
    released = 0
    with pytest.raises(PrivacyBudgetExceeded) as refused:
        for _ in range(100):
            release_noise(ledger, "trips", "od", counts, Mechanism.LAPLACE, 0.3, 1e-6)
            released += 1
    assert released == 3 and ledger.spent("trips") == pytest.approx(0.9)
    assert refused.value.status == 403 and "exhausted" in refused.value.detail
    # Exactly what is left still fits; a Gaussian release is charged its ε too.
    release_noise(ledger, "trips", "od", counts, Mechanism.LAPLACE, 0.1, 1e-6)
    assert ledger.spent("trips") == pytest.approx(1.0)
    with pytest.raises(PrivacyBudgetExceeded):
        release_noise(ledger, "trips", "od", counts, Mechanism.GAUSSIAN, 0.01, 1e-6)
    assert ledger.spent("other") == 0  # budgets are per dataset
    assert BudgetLedger(store, 1.0).spent("trips") == pytest.approx(1.0)  # kept in the store, not in memory


def test_bad_epsilon_is_refused() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="epsilon"):
            noise_scale(Mechanism.LAPLACE, bad)
