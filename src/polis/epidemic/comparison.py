"""The honest comparison behind `polis bench epidemic`: baselines, the metapopulation model, the learned
forecaster and their online blend, all on the same rolling origins, with the blend's interval coverage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polis.epidemic.blend import add_blend, coverage
from polis.epidemic.data import load_country
from polis.epidemic.evaluation import (
    REPORTED_HORIZONS,
    Forecaster,
    LastDay,
    MeanOfLastWeek,
    RollingRun,
    rolling_origin,
)
from polis.epidemic.metapopulation import Metapopulation

BASELINES = ("last day", "mean of last 7 days")
BLEND = "blend"


@dataclass(frozen=True, slots=True)
class Comparison:
    run: RollingRun
    coverage_80: float  # share of test targets inside the blend's 80 % interval

    def goals(self) -> list[dict[str, object]]:
        """Per reported horizon: the better baseline, the blend, and the reduction against the goal."""
        rows: list[dict[str, object]] = []
        for h in REPORTED_HORIZONS:
            best = min(float(self.run.mae(b)[h - 1]) for b in BASELINES)
            served = float(self.run.mae(BLEND)[h - 1])
            goal = 0.15 if h == 1 else 0.10
            reduction = 1.0 - served / best
            rows.append(
                {
                    "horizon_days": h,
                    "better_baseline_mae": round(best, 3),
                    "blend_mae": round(served, 3),
                    "reduction": round(reduction, 4),
                    "goal": goal,
                    "met": reduction >= goal,
                }
            )
        return rows


def compare(datasets_dir: Path, country: str, learned: bool = True) -> Comparison:
    data = load_country(datasets_dir, country)
    models: list[Forecaster] = [LastDay(), MeanOfLastWeek(), Metapopulation()]
    if learned:
        from polis.epidemic.learned import LearnedForecaster

        models.append(LearnedForecaster())
    run = rolling_origin(data, models)
    lower, upper = add_blend(run, BLEND)
    return Comparison(run, coverage(run, lower, upper))
