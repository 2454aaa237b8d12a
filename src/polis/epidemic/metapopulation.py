"""A mobility-coupled SEIR-like metapopulation model, in case units, fitted per country.

Each region i has exposed E_i and infectious I_i (counted in reported cases; with a few thousand cases
against millions of residents, S/N stays ~1, so susceptible depletion is left out). Residents of i
spend their movements across regions as that day's flows say (mix[i, k] = flows[i -> k] / outflow_i,
outflow_i standing in for i's population N_i), and meet whoever is present there, so the force of
infection on i includes importation along the flows:

    rho_k = sum_j mix[j, k] I_j / presence_k          (infectious share of the people present in k)
    new_exposed_i = beta_i * N_i * sum_k mix[i, k] rho_k
    E <- (1 - sigma) E + new_exposed,   cases = sigma E,   I <- (1 - gamma) I + cases

A scenario removes a share of some trips (mix entries shrink, presence stays the baseline): a cancelled
trip removes the contacts made on it, so every region's pressure can only fall, and most where the
cut trips came from or went to.

The transmission rate is estimated over time from the recent case curve: beta_i is the ratio of the
last `fit_days` days of cases to the pressure that produced them (`sigma`'s delay earlier), shrunk
towards the country-wide ratio where a region has few cases (empirical Bayes, `prior_weight`). Ahead,
the reproduction number R = beta / beta_one relaxes towards 1 by `damping` a day: growth and decline
do not go on for ever (interventions, behaviour, saturation), and damped trends forecast better.
Everything is vectorised over regions; a forecast is `horizons` matrix-vector products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from polis.epidemic.data import CountryData

LATENT_DAYS = 3.0  # mean exposed-to-reported delay
INFECTIOUS_DAYS = 5.0


def mixing(flows: np.ndarray) -> np.ndarray:
    """Row-normalised flows: mix[j, i] = share of region j's movements that end in region i. A region
    with no recorded movement keeps its people at home."""
    flows = np.asarray(flows, dtype=np.float64)
    out = flows.sum(axis=-1, keepdims=True)
    eye = np.broadcast_to(np.eye(flows.shape[-1]), flows.shape)
    return np.where(out > 0, flows / np.where(out > 0, out, 1.0), eye)


@dataclass(frozen=True, slots=True)
class MetapopulationState:
    exposed: np.ndarray  # (regions,)
    infectious: np.ndarray  # (regions,)
    beta: np.ndarray  # (regions,) transmission rate at the origin
    beta_one: np.ndarray  # (regions,) the rate at which R = 1 given today's mixing: where beta relaxes to
    flows: np.ndarray  # (regions, regions) movements on the last known day
    outflow: np.ndarray  # (regions,) movements leaving (or staying in) each region: population proxy
    presence: np.ndarray  # (regions,) movements ending in each region: the people present there

    def mix_for(self, flows: np.ndarray) -> np.ndarray:
        """Trip shares of (possibly reduced) flows against the baseline outflow: cut trips are not
        re-routed home, they are gone."""
        return np.asarray(flows, dtype=np.float64) / np.where(self.outflow > 0, self.outflow, 1.0)[..., :, None]

    def exposure(self, infectious: np.ndarray, mix: np.ndarray) -> np.ndarray:
        """N_i sum_k mix[i, k] rho_k for a batch of infectious vectors (..., regions)."""
        return np.asarray(infectious @ self.operator(mix))

    def operator(self, mix: np.ndarray) -> np.ndarray:
        """K with exposure = I @ K: K[j, i] = sum_k mix[j, k] mix[i, k] N_i / presence_k (one matrix per
        mixing, so a day of simulation is a single matrix product)."""
        present = np.where(self.presence > 0, self.presence, 1.0)
        # einsum, not @: a multithreaded BLAS product stalls on 2 shared cores (34 ms against 6 ms for
        # England's 151 x 151 under load), and the served forecast builds one operator per past origin
        return np.asarray(np.einsum("jk,ik->ji", mix / present[None, :], mix) * self.outflow[None, :])


@dataclass(frozen=True, slots=True)
class Metapopulation:
    """The model's settings; `fit` reads a history, `simulate` runs it forward."""

    fit_days: int = 7
    damping: float = 0.2
    prior_weight: float = 100.0
    name: str = "metapopulation"

    @property
    def sigma(self) -> float:
        return 1.0 / LATENT_DAYS

    @property
    def gamma(self) -> float:
        return 1.0 / INFECTIOUS_DAYS

    def fit(self, history: CountryData) -> MetapopulationState:
        """State and transmission rates at the end of `history` (uses nothing after it)."""
        cases = history.cases
        days, n = cases.shape
        if days == 0:
            zero, one = np.zeros(n), np.ones(n)
            return MetapopulationState(zero, zero, np.full(n, self.gamma), np.full(n, self.gamma), np.eye(n), one, one)
        week = cases[-self.fit_days :]
        before = cases[-2 * self.fit_days : -self.fit_days] if days > self.fit_days else week[:1]
        level, previous = week.mean(axis=0), before.mean(axis=0)
        # Growth rate per day from the recent curve, shrunk towards the country's where a region has
        # few cases (its own ratio is mostly noise then).
        own = np.log((level + 1.0) / (previous + 1.0)) / self.fit_days
        country = np.log((level.sum() + 1.0) / (previous.sum() + 1.0)) / self.fit_days
        weight = (level + previous) / (level + previous + self.prior_weight)
        growth = np.clip(weight * own + (1.0 - weight) * country, -0.2, 0.2)
        # SEIR with exponential stages: R = (1 + r / sigma)(1 + r / gamma) (Wallinga & Lipsitch 2007).
        reproduction = np.maximum((1.0 + growth / self.sigma) * (1.0 + growth / self.gamma), 0.0)
        # State now: the weekly mean sits mid-week, ~(fit_days - 1) / 2 days back, so move it forward.
        now = np.maximum((level + 1.0) * np.exp(growth * (self.fit_days - 1) / 2.0) - 1.0, 0.0)
        infectious = now / self.gamma
        flows = np.array(history.flows[-1], dtype=np.float64)
        home = flows.sum(axis=1) <= 0  # a region with no recorded movement keeps its people at home
        flows[home, home] = 1.0
        outflow, presence = flows.sum(axis=1), flows.sum(axis=0)
        state = MetapopulationState(now / self.sigma, infectious, np.zeros(n), np.zeros(n), flows, outflow, presence)
        pressure = state.exposure(infectious, state.mix_for(flows))
        # beta such that today's pressure (home and imported) reproduces the region's own R.
        one = np.clip(
            np.where(pressure > 0, self.gamma * infectious / np.where(pressure > 0, pressure, 1.0), 0.0), 0, 50
        )
        return replace(state, beta=np.clip(reproduction * one, 0.0, 50.0), beta_one=one)

    def simulate(
        self,
        state: MetapopulationState,
        horizons: int,
        mixes: Sequence[np.ndarray] | None = None,
        draws: int = 0,
        rng: np.random.Generator | None = None,
        poisson: bool = True,
    ) -> np.ndarray:
        """Cases per day ahead: (horizons, regions), or (draws, horizons, regions) with `draws` > 0, where
        each draw perturbs the transmission rates (log-normal, sd 0.2) and, with `poisson`, the daily
        cases (Poisson reporting noise).
        `mixes` (one (regions, regions) trip-share matrix per day ahead, see `mix_for`) overrides the mixing
        ahead (a scenario); by default the last known day's mixing carries on. Days that share one matrix
        object share its operator."""
        n = state.beta.shape[0]
        mix_ahead = [state.mix_for(state.flows)] * horizons if mixes is None else list(mixes)
        operators: dict[int, np.ndarray] = {}
        for mix in mix_ahead:
            if id(mix) not in operators:
                operators[id(mix)] = state.operator(mix)
        batch = max(draws, 1)
        beta = np.broadcast_to(state.beta, (batch, n)).copy()
        if draws:
            generator = rng or np.random.default_rng(0)
            beta *= np.exp(generator.normal(0.0, 0.2, size=(batch, 1)) + generator.normal(0.0, 0.1, size=(batch, n)))
        exposed = np.broadcast_to(state.exposed, (batch, n)).copy()
        infectious = np.broadcast_to(state.infectious, (batch, n)).copy()
        out = np.empty((batch, horizons, n))
        r_one = state.beta_one
        for h in range(horizons):
            # einsum, not @: multithreaded BLAS on a small product stalls on shared cores (10x here)
            pressure = np.einsum("bj,ji->bi", infectious, operators[id(mix_ahead[h])])
            cases = self.sigma * exposed
            exposed = exposed - cases + beta * pressure
            infectious = infectious * (1.0 - self.gamma) + cases
            out[:, h] = cases
            beta = r_one + (beta - r_one) * self.damping
        if draws and poisson:
            generator = rng or np.random.default_rng(1)
            return generator.poisson(np.maximum(out, 0.0)).astype(np.float64)
        return out if draws else out[0]

    def forecast(self, history: CountryData, horizons: int) -> np.ndarray:
        return np.maximum(self.simulate(self.fit(history), horizons), 0.0)
