"""What-if scenarios: "cut movement between these regions (or out of this region) by X % from day D",
projected with the metapopulation model against no intervention, both with uncertainty.

Modes (`reduced_flows`), each cutting a share of the trips, never the staying at home:
- `between`: trips from one chosen region to another; trips to or from the rest are untouched;
- `outOf`: trips leaving the chosen regions (to anywhere else). Trips into them are untouched, so at 100 %
  visitors still meet their residents there and carry infection home: it stops the residents travelling,
  not the regions' exposure of others;
- `cordon`: trips crossing the chosen regions' boundary, either way (out of them and into them; trips among
  them are untouched). At 100 % no one meets the residents of the chosen regions but people of those
  regions, so no exposure they cause reaches any other region.

`asOf` is the last day of data the projection uses, as in the risk and forecast answers (default: the last
day the data holds); the projection runs from the day after it.

Both arms share their random draws (same transmission-rate perturbations, same Poisson noise), so the
difference between them is the intervention's effect, not sampling noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np

from polis.domain.errors import BadRequestData
from polis.epidemic.data import CountryData
from polis.epidemic.metapopulation import Metapopulation

Mode = Literal["between", "outOf", "cordon"]
MODES = ("between", "outOf", "cordon")
MAX_DAYS = 120
DRAWS = 100
MIN_FIT_DAYS = 7  # days of data up to asOf: the model reads the growth over the last week


@dataclass(frozen=True, slots=True)
class Intervention:
    regions: tuple[str, ...]
    reduction: float  # share of the trips removed, 0..1
    start: date
    mode: Mode = "between"


@dataclass(frozen=True, slots=True)
class Projection:
    """Cases per day and region: expected cases (mean over the transmission draws) and an 80 % band
    (10th and 90th percentiles of the draws with Poisson reporting noise), widened where needed so that
    lower <= expected <= upper on every day and region."""

    median: np.ndarray  # (days, regions): the expected path, the central value reported
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    country: str
    regions: tuple[str, ...]
    as_of: date  # the last day of data used; `dates` start the day after
    dates: tuple[date, ...]
    intervention: Intervention
    baseline: Projection
    restricted: Projection
    seconds: float

    def totals(self) -> dict[str, float]:
        """Projected cases over the whole period, no intervention against intervention (expected values)."""
        return {"baseline": float(self.baseline.median.sum()), "intervention": float(self.restricted.median.sum())}


def _unknown_regions(data: CountryData, unknown: list[str]) -> str:
    """Names the unknown regions, the spelling meant where only the case differs (the labels files write
    'paris'), and some known names: a user guessing at names gets somewhere."""
    by_fold = {r.casefold(): r for r in data.regions}
    named = []
    for region in unknown[:5]:
        meant = by_fold.get(str(region).casefold())
        named.append(f"'{region}' (did you mean '{meant}'?)" if meant else f"'{region}'")
    known = sorted(data.regions)
    return (
        f"regions: unknown in {data.country}: {', '.join(named)}; its {len(known)} regions are named as in the "
        f"dataset's labels file, e.g. {', '.join(known[:6])} (the risk view lists them all)"
    )


def check_as_of(data: CountryData, as_of: date) -> date:
    """`as_of` if the projection can start after it (MIN_FIT_DAYS of data up to it, none past the data),
    else BadRequestData on `asOf`."""
    span = f"{data.dates[0]} .. {data.dates[-1]}" if data.n_days else "no days"
    if data.n_days < MIN_FIT_DAYS:
        raise BadRequestData(
            f"asOf: {data.country} has {data.n_days} day(s) of cases in the hub ({span}); a projection fits on "
            f"the {MIN_FIT_DAYS} days up to asOf (leave asOf out to project from the last day held)",
            field="asOf",
        )
    earliest = data.dates[MIN_FIT_DAYS - 1]
    if not earliest <= as_of <= data.dates[-1]:
        raise BadRequestData(
            f"asOf: the last day of data the projection uses must be within {earliest} .. {data.dates[-1]} "
            f"({MIN_FIT_DAYS} days of data up to it, none past the data), not {as_of}",
            field="asOf",
        )
    return as_of


def validate(
    data: CountryData,
    regions: list[str],
    reduction_percent: float,
    start: date,
    mode: str,
    days: int,
    as_of: date | None = None,
) -> Intervention:
    """The intervention a request asks for, projected `days` days after `as_of` (default: the data's last
    day), or BadRequestData naming the field that is wrong."""
    if not regions:
        raise BadRequestData("regions: give at least one region", field="regions")
    unknown = [r for r in regions if r not in data.regions]
    if unknown:
        raise BadRequestData(_unknown_regions(data, unknown), field="regions")
    if not 0 <= reduction_percent <= 100:
        raise BadRequestData("reductionPercent: must be between 0 and 100", field="reductionPercent")
    if mode not in MODES:
        raise BadRequestData("mode: must be 'between', 'outOf' or 'cordon'", field="mode")
    if mode == "between" and len(set(regions)) < 2:
        raise BadRequestData("regions: 'between' needs at least two regions", field="regions")
    # A day's cases come from exposure before it (Metapopulation.simulate), so a cut shows from the day
    # after it starts: one projected day cannot show one, and a cut must start before the last projected
    # day. Otherwise both arms are the same, which reads as "no benefit".
    if not 2 <= days <= MAX_DAYS:
        raise BadRequestData(
            f"days: must be between 2 and {MAX_DAYS} (a cut changes cases from the day after it starts)", field="days"
        )
    end = data.dates[-1] if as_of is None else check_as_of(data, as_of)
    if start < data.dates[0]:
        raise BadRequestData(f"start: before the data begins ({data.dates[0]})", field="start")
    last = end + timedelta(days=days)  # the projection runs from the day after `end`
    if start >= last:
        raise BadRequestData(
            f"start: {start} is not before the last projected day ({last}: {days} days after {end}, the last day "
            f"of data used); a cut changes cases from the day after it starts, so it must start by "
            f"{last - timedelta(days=1)} to show in this projection",
            field="start",
        )
    return Intervention(tuple(dict.fromkeys(regions)), reduction_percent / 100.0, start, mode)  # type: ignore[arg-type]


def reduced_flows(flows: np.ndarray, index: np.ndarray, reduction: float, mode: Mode) -> np.ndarray:
    """The flows with the chosen trips cut by `reduction` (staying-at-home movement is untouched): see the
    module's notes for what each mode cuts."""
    out = np.array(flows, dtype=np.float64)
    n = out.shape[0]
    chosen = np.zeros(n, dtype=bool)
    chosen[index] = True
    origin, destination = chosen[:, None], chosen[None, :]
    if mode == "between":
        cut = origin & destination
    elif mode == "outOf":
        cut = np.broadcast_to(origin, (n, n)).copy()
    else:  # cordon: one end inside, the other outside
        cut = origin ^ destination
    np.fill_diagonal(cut, False)
    out[cut] *= 1.0 - reduction
    return out


def run_scenario(
    data: CountryData,
    intervention: Intervention,
    days: int = 30,
    as_of: date | None = None,
    model: Metapopulation | None = None,
    draws: int = DRAWS,
    seed: int = 0,
) -> ScenarioResult:
    """Project `days` days from the day after `as_of` (the last day of data used; default: the data's
    last day), fitting on the data up to it, with and without the intervention (`validate` checks both)."""
    started = time.perf_counter()
    model = model or Metapopulation()
    origin = data.n_days if as_of is None else data.day_index(as_of) + 1
    if not 1 <= origin <= data.n_days:
        raise ValueError(f"as_of {as_of} is not a day of the data ({data.dates[0]} .. {data.dates[-1]})")
    history = data.truncated(origin)
    state = model.fit(history)
    first_day = history.dates[-1] + timedelta(days=1)
    index = np.array([data.region_index(r) for r in intervention.regions])
    normal = state.mix_for(state.flows)
    cut = state.mix_for(reduced_flows(state.flows, index, intervention.reduction, intervention.mode))
    offsets = np.arange(days)
    active = np.array([first_day + timedelta(days=int(k)) >= intervention.start for k in offsets])
    mixes = [cut if on else normal for on in active]
    arms = []
    for ahead in (None, mixes):
        # Same seed for both arms: the same transmission draws and the same reporting-noise stream.
        rng = np.random.default_rng(seed)
        paths = model.simulate(state, days, ahead, draws=draws, rng=rng, poisson=False)
        noisy = rng.poisson(np.maximum(paths, 0.0)).astype(np.float64)
        low, high = np.quantile(noisy, [0.1, 0.9], axis=0)
        expected = paths.mean(axis=0)
        # Percentiles of whole-number draws can fall on either side of a small mean (mean 0.3: most draws
        # are 0, so the 90th percentile is 0): the band is widened to hold the expected value it is shown with.
        arms.append(Projection(expected, np.minimum(low, expected), np.maximum(high, expected)))
    dates = tuple(first_day + timedelta(days=int(k)) for k in offsets)
    return ScenarioResult(
        data.country,
        data.regions,
        history.dates[-1],
        dates,
        intervention,
        arms[0],
        arms[1],
        time.perf_counter() - started,
    )
