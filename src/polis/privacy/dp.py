"""Optional differential privacy on released counts, through OpenDP, with a per-dataset ε budget.

The unit protected is one trip: a trip adds 1 to exactly one cell of a released table (L1 and L2
sensitivity 1). Noise goes on the cells only; totals are summed from the noisy cells afterwards, as drawn
(negative ones too, so a total is unbiased), which is post-processing and costs nothing more: a release is
charged its ε once, whatever totals it shows. Laplace releases are ε-DP (OpenDP's discrete Laplace on integer
counts, scale 1/ε). Gaussian releases are ρ-zCDP (discrete Gaussian); the ledger charges them the ε they
cost at the configured δ (OpenDP's zCDP -> (ε, δ) conversion), so both mechanisms draw on one budget.
Releases compose by plain addition of ε (basic composition: conservative), and a release that would take
the dataset past its budget is refused before any noise is drawn.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from polis.domain.errors import PrivacyBudgetExceeded
from polis.store.duckdb_ import DuckDBStore

LEDGER_DDL = """CREATE TABLE IF NOT EXISTS privacy_budget (
    dataset VARCHAR NOT NULL, product VARCHAR NOT NULL, mechanism VARCHAR NOT NULL, epsilon DOUBLE NOT NULL,
    delta DOUBLE NOT NULL, scale DOUBLE NOT NULL, released_at TIMESTAMP NOT NULL)"""


class Mechanism(StrEnum):
    LAPLACE = "laplace"
    GAUSSIAN = "gaussian"


@dataclass(frozen=True, slots=True)
class Spend:
    dataset: str
    product: str
    mechanism: Mechanism
    epsilon: float
    delta: float
    scale: float  # the noise scale drawn with (Laplace b, or Gaussian σ)


def _opendp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


# Below this a release is noise alone (a Laplace scale of a million), and the Gaussian's scale underflows to a
# division by zero near 1e-300.
MIN_EPSILON = 1e-6


def noise_scale(mechanism: Mechanism, epsilon: float, delta: float = 0.0) -> float:
    """The scale that spends exactly `epsilon` on a sensitivity-1 count query."""
    if not (epsilon >= MIN_EPSILON and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive number, at least {MIN_EPSILON:g}, got {epsilon}")
    if mechanism is Mechanism.LAPLACE:
        return 1.0 / epsilon
    if not 0 < delta < 1:
        raise ValueError(f"the Gaussian mechanism needs 0 < delta < 1, got {delta}")
    # ε(ρ, δ) = ρ + 2·sqrt(ρ·ln(1/δ)) (Bun & Steinke); solve for ρ, then σ = 1/sqrt(2ρ).
    log_term = math.log(1.0 / delta)
    root = epsilon / (math.sqrt(log_term) + math.sqrt(log_term + epsilon))  # sqrt(L + ε) − sqrt(L), no cancellation
    return 1.0 / math.sqrt(2.0 * root * root)


def epsilon_of(mechanism: Mechanism, scale: float, delta: float = 0.0) -> float:
    """What OpenDP says a sensitivity-1 release at `scale` costs (ε, at δ for the Gaussian)."""
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=int))
    if mechanism is Mechanism.LAPLACE:
        return float(dp.m.make_laplace(space, dp.l1_distance(T=int), scale=scale).map(1))
    gaussian = dp.m.make_gaussian(space, dp.l2_distance(T=int), scale=scale)
    return float(dp.c.make_zCDP_to_approxDP(gaussian).map(1).epsilon(delta))


def add_noise(counts: np.ndarray, mechanism: Mechanism, scale: float) -> np.ndarray:
    """Integer counts plus OpenDP noise (discrete Laplace or discrete Gaussian), as drawn: a count near 0 may
    come out negative. Not clamped here: a sum of clamped cells is biased upwards (each empty cell adds the
    positive half of its noise), so totals must be summed from these; a release hides what is below k anyway."""
    dp = _opendp()
    flat = [int(v) for v in np.asarray(counts, dtype=np.int64).ravel()]
    if not flat:
        return np.asarray(counts, dtype=np.int64)
    space = dp.vector_domain(dp.atom_domain(T=int))
    if mechanism is Mechanism.LAPLACE:
        measurement = dp.m.make_laplace(space, dp.l1_distance(T=int), scale=scale)
    else:
        measurement = dp.m.make_gaussian(space, dp.l2_distance(T=int), scale=scale)
    return np.asarray(measurement(flat), dtype=np.int64).reshape(np.shape(counts))


class BudgetLedger:
    """The ε each dataset has spent, in the hub's database, so a restart does not refill the budget."""

    def __init__(self, store: DuckDBStore, budgets: dict[str, float] | float) -> None:
        self.store = store
        self._budgets = budgets
        self._lock = threading.Lock()
        self._ready = False

    def budget(self, dataset: str) -> float:
        if isinstance(self._budgets, dict):
            return float(self._budgets.get(dataset, 0.0))
        return float(self._budgets)

    def _ensure(self) -> None:
        if not self._ready:
            con = self.store.connection()
            try:
                con.execute(LEDGER_DDL)
            finally:
                con.close()
            self._ready = True

    def spent(self, dataset: str) -> float:
        self._ensure()
        con = self.store.connection()
        try:
            rows = con.execute("SELECT COALESCE(sum(epsilon), 0) FROM privacy_budget WHERE dataset = ?", [dataset])
            return float(rows.fetchall()[0][0])
        finally:
            con.close()

    def require(self, dataset: str, epsilon: float) -> None:
        """PrivacyBudgetExceeded when the dataset's budget cannot cover `epsilon` now. A check before anything
        else a release does (freezing its day: polis.mobility.products), so a refused release leaves no trace;
        `charge` checks again, under its lock."""
        budget = self.budget(dataset)
        spent = self.spent(dataset)
        # A tiny tolerance so that spending the budget in exact fractions (10 x 0.1) is not refused by rounding.
        if spent + epsilon > budget + 1e-9:
            raise PrivacyBudgetExceeded(
                f"differential-privacy budget of dataset {dataset} exhausted: ε {spent:g} of {budget:g} "
                f"spent, this release asks for {epsilon:g}; ask without epsilon for the suppressed "
                "release, or for a smaller epsilon",
                dataset=dataset,
                epsilonSpent=spent,
                epsilonBudget=budget,
                epsilonRequested=epsilon,
            )

    def charge(self, spend: Spend) -> None:
        """Record `spend`, or refuse it (PrivacyBudgetExceeded) when the dataset's budget cannot cover it."""
        with self._lock:
            self._ensure()
            self.require(spend.dataset, spend.epsilon)
            con = self.store.connection()
            try:
                con.execute(
                    "INSERT INTO privacy_budget VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        spend.dataset,
                        spend.product,
                        spend.mechanism.value,
                        spend.epsilon,
                        spend.delta,
                        spend.scale,
                        datetime.now(UTC).replace(tzinfo=None),
                    ],
                )
            finally:
                con.close()


def release_noise(
    ledger: BudgetLedger,
    dataset: str,
    product: str,
    counts: np.ndarray,
    mechanism: Mechanism,
    epsilon: float,
    delta: float,
) -> tuple[np.ndarray, Spend]:
    """Charge the ledger, then draw the noise (never the other way round: a refused release draws nothing)."""
    scale = noise_scale(mechanism, epsilon, delta)
    used_delta = delta if mechanism is Mechanism.GAUSSIAN else 0.0
    spend = Spend(dataset, product, mechanism, epsilon, used_delta, scale)
    ledger.charge(spend)
    return add_noise(counts, mechanism, scale), spend
