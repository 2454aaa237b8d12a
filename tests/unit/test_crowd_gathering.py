"""The crowd-gathering detector's building blocks on small hand-made series: neighbours, the neighbour
correction, and how many alerts a live rule raises from a run of scores."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from polis.crowd.gathering import CrowdParams, alert_starts, crowd_scores, local_hour, nearest
from polis.crowd.melbourne import ZONE

ROW = [(144.960, -37.810), (144.961, -37.810), (144.963, -37.810), (144.970, -37.810)]  # west to east


def test_nearest_orders_other_sensors_by_distance_and_pads_the_unknown() -> None:
    assert nearest(ROW, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    # no location: no neighbours, and nobody's neighbour; too few sensors: padded with "none" (4)
    assert nearest([*ROW[:3], None], 3).tolist() == [[1, 2, 4], [0, 2, 4], [1, 0, 4], [4, 4, 4]]


def _steady(rows: int, sensors: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.log1p(1000.0) + rng.normal(0.0, 0.05, size=(rows, sensors))


def test_a_rise_shared_with_the_neighbours_scores_lower_than_a_rise_alone() -> None:
    p = CrowdParams(neighbours=3, neighbour_weight=0.5)
    near = nearest(ROW, p.neighbours)
    first_hour = local_hour(datetime(2022, 3, 1, tzinfo=ZONE), ZONE)
    alone = _steady(p.history_hours + 48, 4)
    alone[-2:, 0] += np.log(2.0)  # sensor 0 doubles for two hours
    shared = alone.copy()
    shared[-2:, 1:] += np.log(2.0)  # ... and so do all its neighbours
    lone_score = crowd_scores(alone, first_hour, p, near).score[-1, 0]
    shared_score = crowd_scores(shared, first_hour, p, near).score[-1, 0]
    assert lone_score >= 4
    # half of what the neighbours share is taken off, the city-wide rise (median of all) is not
    assert 0 < shared_score < 0.7 * lone_score
    unaware = CrowdParams(neighbours=0)  # the previous detector sees the same rise either way
    before = crowd_scores(alone, first_hour, unaware).score[-1, 0]
    assert np.isclose(crowd_scores(shared, first_hour, unaware).score[-1, 0], before, rtol=0.1)


def test_the_neighbour_correction_needs_the_neighbours() -> None:
    with pytest.raises(ValueError, match="neighbours"):
        crowd_scores(_steady(10, 2), 0, CrowdParams(neighbours=2))


def test_live_alerts_follow_the_hysteresis_and_the_cooldown() -> None:
    score = np.array([[0, 4.2, 3.5, 4.1, 2.0, 4.5, 1.0, 0.0, 4.0, np.nan, 4.0]], dtype=float).T
    # one alert over 4.2, 3.5 (inside the band), 4.1; cancelled at 2.0; 4.5 one hour later is in the
    # cooldown; 4.0 after it is a new alert; a hour not scored cancels it and starts the cooldown again
    assert np.nonzero(alert_starts(score, 4.0, 1.0, 2)[:, 0])[0].tolist() == [1, 8]
    assert np.nonzero(alert_starts(score, 4.0, 0.0, 0)[:, 0])[0].tolist() == [1, 3, 5, 8, 10]
    # an hour without a reading is not evaluated: the alert stands
    observed = ~np.isnan(score)
    assert np.nonzero(alert_starts(score, 4.0, 1.0, 2, observed)[:, 0])[0].tolist() == [1, 8]
    gap = np.array([[4.5], [np.nan], [4.5]])
    assert alert_starts(gap, 4.0, 1.0, 2, ~np.isnan(gap))[:, 0].tolist() == [True, False, False]
