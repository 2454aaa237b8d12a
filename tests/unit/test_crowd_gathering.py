"""The crowd-gathering detector's building blocks on small hand-made series: neighbours, the neighbour
correction, and how many alerts a live rule raises from a run of scores."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from polis.crowd.gathering import (
    EPOCH,
    HOURS_PER_WEEK,
    CrowdParams,
    HourlyPanel,
    alarm_levels,
    alert_life,
    alerts_raised,
    crowd_scores,
    expected_log,
    local_hour,
    nearest,
    standardised,
    window_level,
    within,
)
from polis.crowd.melbourne import ZONE
from tests.threads import errors_from_threads

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


def _weekly(weeks: int, first: datetime) -> tuple[np.ndarray, int]:
    """(log1p counts of one sensor, first hour): 1,000 an hour on weekdays, 300 on Saturdays and Sundays."""
    hours = local_hour(first, ZONE) + np.arange(weeks * HOURS_PER_WEEK)
    weekend = (hours // 24 + 3) % 7 >= 5
    return np.log1p(np.where(weekend, 300.0, 1000.0))[:, None], int(hours[0])


def test_a_weekday_holiday_is_expected_like_a_sunday_and_not_for_the_weekdays_after_it() -> None:
    first = datetime(2022, 4, 11, tzinfo=ZONE)  # a Monday, nine weeks before the King's Birthday holiday
    logc, first_hour = _weekly(11, first)
    holiday = local_hour(datetime(2022, 6, 13, 12, tzinfo=ZONE), ZONE) - first_hour  # Monday 13 June, noon
    logc[holiday - 12 : holiday + 12] = np.log1p(300.0)  # the city keeps a Sunday
    p, unaware = CrowdParams(holidays="AU-VIC"), CrowdParams()
    expected, usable = expected_log(logc, first_hour, p)
    assert np.expm1(expected[holiday, 0]) == pytest.approx(300.0) and usable[holiday, 0]
    assert np.expm1(expected_log(logc, first_hour, unaware)[0][holiday, 0]) == pytest.approx(1000.0)
    # the Monday after: its weeks are ordinary Mondays, the holiday stands for none of them
    after = holiday + HOURS_PER_WEEK
    assert np.expm1(expected[after, 0]) == pytest.approx(1000.0)
    assert np.expm1(expected_log(logc, first_hour, unaware)[0][after, 0]) < 750.0  # last week's lull pulls it


def test_the_expected_count_follows_a_changing_city_within_weeks() -> None:
    """A sensor whose count doubles: the 8-week profile alone would wait for three weeks of the new level
    (trimmed mean), the blend with last week moves at once, by `recent_weight` of the step."""
    logc, first_hour = _weekly(11, datetime(2022, 7, 4, tzinfo=ZONE))
    logc[10 * HOURS_PER_WEEK - 24 :] += np.log(2.0)  # from the last day of week 10
    p = CrowdParams()
    row = 11 * HOURS_PER_WEEK - 12  # the Sunday noon a week into the new level
    moved = expected_log(logc, first_hour, p)[0][row, 0] - logc[row - 2 * HOURS_PER_WEEK, 0]
    assert moved == pytest.approx(p.recent_weight * np.log(2.0), abs=0.01)
    assert expected_log(logc, first_hour, CrowdParams(recent_weight=0.0))[0][row, 0] == pytest.approx(
        logc[row - 2 * HOURS_PER_WEEK, 0], abs=0.01
    )


def test_the_live_panel_scores_a_holiday_as_the_whole_series_does() -> None:
    p = CrowdParams(neighbours=2, holidays="AU-VIC")
    rng = np.random.default_rng(23)
    logc, first_hour = _weekly(24, datetime(2022, 1, 10, tzinfo=ZONE))  # to 26 June, six holidays on the way
    counts = np.expm1(logc) * rng.lognormal(0.0, 0.1, size=(len(logc), 3))
    holiday = local_hour(datetime(2022, 6, 13, 11, tzinfo=ZONE), ZONE) - first_hour  # King's Birthday
    after = holiday + HOURS_PER_WEEK  # a Monday whose last week was the holiday
    # a day whose spread starts on Good Friday, whose Sundays reach 5 days further back than a Friday's
    spread = local_hour(datetime(2022, 5, 13, 11, tzinfo=ZONE), ZONE) - first_hour
    panel = HourlyPanel(["a", "b", "c"], ZONE, p, ROW[:3])
    for row in range(after + 1):
        for sensor in range(3):
            at = EPOCH.replace(tzinfo=ZONE) + timedelta(hours=first_hour + row)  # wall-clock arithmetic
            panel.add("abc"[sensor], at, counts[row, sensor])
    offline = crowd_scores(np.log1p(counts[: after + 1]), first_hour, p, nearest(ROW[:3], 2))
    for row in (spread, holiday, after):
        live = panel.score_hour(first_hour + row)
        np.testing.assert_allclose(live.score[0], offline.score[row], rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(live.expected[0], offline.expected[row], rtol=1e-9)
        assert live.usable.all()


def test_the_score_is_matched_to_a_doubling_quiet_and_noisy_counters_need_a_higher_z() -> None:
    p = CrowdParams()  # matched to 2x, reads as z at the reference spread
    plain = CrowdParams(matched_ratio=1.0)
    spreads = np.array([[0.08, p.reference_spread, 0.35]])  # a quiet counter, the usual one, a noisy one
    usable = np.ones((1, 3), dtype=bool)
    expected = np.full((1, 3), np.log1p(500.0))

    def evidence(z: float, params: CrowdParams) -> np.ndarray:
        excess = z * spreads
        out: np.ndarray = standardised(expected + excess, expected, excess, spreads, usable, params)[0]
        return out

    assert evidence(3.0, plain).tolist() == pytest.approx([3.0, 3.0, 3.0])  # the plain z: the same everywhere
    at_four = evidence(4.0, p)
    assert at_four[1] == pytest.approx(4.0)  # at the reference spread the evidence is the z
    assert at_four[0] < 4.0 and at_four[2] < 4.0  # elsewhere the same z is weaker evidence of a doubling ...
    step = np.full((1, 3), np.log(2.0))  # ... but a real doubling is the strongest evidence at the quiet one
    doubled = standardised(expected + step, expected, step, spreads, usable, p)[0]
    assert doubled[0] > doubled[1] > doubled[2]
    assert doubled[0] > 2 * at_four[1]
    # an hour under half its expected count is never evidence of a gathering, whatever its spread
    low = standardised(expected - 1.0, expected, np.full((1, 3), 0.5), spreads, usable, p)[0]
    assert (low <= 0).all()
    with pytest.raises(ValueError, match="matched_ratio"):
        CrowdParams(matched_ratio=0.5)  # a drop is not a gathering


def test_the_neighbour_correction_needs_the_neighbours() -> None:
    with pytest.raises(ValueError, match="neighbours"):
        crowd_scores(_steady(10, 2), 0, CrowdParams(neighbours=2))


def test_live_alerts_follow_the_hysteresis_and_the_cooldown() -> None:
    score = np.array([[0, 4.2, 3.5, 4.1, 2.0, 4.5, 1.0, 0.0, 4.0, np.nan, 4.0]], dtype=float).T
    # one alert over 4.2, 3.5 (inside the band), 4.1; cancelled at 2.0; 4.5 one hour later is in the
    # cooldown; 4.0 after it is a new alert; a hour not scored cancels it and starts the cooldown again
    assert np.nonzero(alert_life(score, 4.0, 1.0, 2)[0][:, 0])[0].tolist() == [1, 8]
    assert np.nonzero(alert_life(score, 4.0, 0.0, 0)[0][:, 0])[0].tolist() == [1, 3, 5, 8, 10]
    # an hour without a reading is not evaluated: the alert stands
    observed = ~np.isnan(score)
    assert np.nonzero(alert_life(score, 4.0, 1.0, 2, observed)[0][:, 0])[0].tolist() == [1, 8]
    gap = np.array([[4.5], [np.nan], [4.5]])
    assert alert_life(gap, 4.0, 1.0, 2, ~np.isnan(gap))[0][:, 0].tolist() == [True, False, False]


def test_neighbours_within_the_radius_share_one_alert() -> None:
    # ROW: 0-1 88 m apart, 1-2 176 m, 0-2 264 m, 2-3 617 m; no location or radius 0: never grouped
    assert within(ROW, 200).astype(int).tolist() == [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert not within([*ROW[:3], None], 1e6)[3].any() and not within(ROW, 0).any()
    close = within(ROW, 200)
    on = np.zeros((12, 4), dtype=bool)  # starts, one row per hour
    off = np.zeros((12, 4), dtype=bool)  # ends
    on[0, 0] = True  # 0 starts: a new alert
    on[1, 2] = True  # 2 is 264 m from 0: a new alert
    on[2, 1] = True  # 1 is next to both: joins one, nothing new
    off[3, 0], off[3, 1] = True, True  # 0 and 1 leave; 2 keeps its alert open
    on[4, 0] = True  # nobody near 0 is in an alert: new
    off[5, 0], on[5, 1] = True, True  # 0 leaves before 1 starts in the same hour, but 2 is still in: joins
    off[6, 1], off[6, 2], on[6, 3] = True, True, True  # the alert closes; 3 is far from all: new
    on[8, 0], on[8, 1] = True, True  # together: 0 raises it, 1 joins it
    off[9, 0], off[9, 1], on[9, 2] = True, True, True  # the hour's earlier columns left: 2 raises a new one
    new = alerts_raised(on, off, close)
    assert [tuple(cell) for cell in np.argwhere(new)] == [(0, 0), (1, 2), (4, 0), (6, 3), (8, 0), (9, 2)]
    assert alerts_raised(on, off, within(ROW, 0)).sum() == on.sum()  # no grouping: one alert per start
    # from scores: the starts and ends of `alert_life` (hysteresis 1, cooldown 2 h)
    score = np.array([[4.2, 3.5, 2.0, 4.5, 0, 4.1], [0, 4.3, 4.0, 2.5, 0, 0]]).T
    starts, ends = alert_life(score, 4.0, 1.0, 2)
    assert np.argwhere(starts).tolist() == [[0, 0], [1, 1], [5, 0]] and np.argwhere(ends).tolist() == [[2, 0], [3, 1]]
    assert np.argwhere(alerts_raised(starts, ends, close[:2, :2])).tolist() == [[0, 0], [5, 0]]


def test_the_adaptive_level_is_the_kth_highest_score_of_the_observed_hours() -> None:
    p = CrowdParams(alarm_hours=2.0, alarm_weeks=1, alarm_scope="city")
    rng = np.random.default_rng(5)
    score = rng.normal(0.0, 1.0, size=(HOURS_PER_WEEK, 2))
    score[:, 1] = np.nan  # the second sensor is observed but never scored: its hours rank lowest
    observed = np.ones(score.shape, dtype=bool)
    # 336 observed hours x 2 alarm hours per 168: the 4th highest score of all
    assert window_level(score, observed, 0.0, p) == pytest.approx(np.sort(score[:, 0])[-4])
    assert window_level(score, observed, 9.0, p).tolist() == [9.0, 9.0]  # never under the floor
    own = window_level(score, observed, -5.0, CrowdParams(alarm_hours=2.0, alarm_scope="sensor"))
    assert own[0] == pytest.approx(np.sort(score[:, 0])[-2]) and own[1] == -5.0  # nothing scored: the floor
    # under a week of observed hours: the floor alone
    assert window_level(score[:80], observed[:80], 1.0, p).tolist() == [1.0, 1.0]  # 160 hours


def test_the_adaptive_level_holds_the_alarm_rate_when_more_hours_are_scored() -> None:
    """A city reopening: the share of scored hours doubles. A fixed level alarms twice as often per observed
    hour; the adaptive level stays near its target, and an hour never moves its own day's level."""
    p = CrowdParams(alarm_hours=1.5, alarm_weeks=1, alarm_scope="city")
    rng = np.random.default_rng(11)
    weeks, sensors = 12, 20
    score = rng.normal(0.0, 1.0, size=(weeks * HOURS_PER_WEEK, sensors))
    half = score.shape[0] // 2
    score[:half][rng.random((half, sensors)) > 0.4] = np.nan  # 40 % of the hours scored, then 80 %
    score[half:][rng.random((score.shape[0] - half, sensors)) > 0.8] = np.nan
    observed = np.ones(score.shape, dtype=bool)
    levels = alarm_levels(score, observed, 0, 0.0, p)
    hours_per_week = sensors * HOURS_PER_WEEK * 2  # two weeks: one after the first, one at the end

    def rate(level: float | np.ndarray, rows: slice) -> float:
        return (
            float(
                (
                    np.nan_to_num(score[rows], nan=-np.inf) >= level[rows]
                    if isinstance(level, np.ndarray)
                    else np.nan_to_num(score[rows], nan=-np.inf) >= level
                ).sum()
            )
            / hours_per_week
            * HOURS_PER_WEEK
        )

    early, late = slice(half - 2 * HOURS_PER_WEEK, half), slice(-2 * HOURS_PER_WEEK, None)
    fixed = float(np.quantile(np.nan_to_num(score[:half], nan=-np.inf), 1 - 1.5 / HOURS_PER_WEEK))
    assert rate(fixed, late) > 1.6 * rate(fixed, early)
    assert 1.0 < rate(levels, early) < 2.0 and 1.0 < rate(levels, late) < 2.0
    # causal: raising a day's scores moves the next days' levels, not its own
    day = 60
    raised = score.copy()
    raised[day * 24 : day * 24 + 24] += 10.0
    moved = alarm_levels(raised, observed, 0, 0.0, p)
    assert np.array_equal(moved[: day * 24 + 24], levels[: day * 24 + 24])
    assert (moved[day * 24 + 24 :][:24] > levels[day * 24 + 24 :][:24]).all()


def test_the_live_panel_sets_the_same_levels_day_after_day_and_after_a_late_reading() -> None:
    """`HourlyPanel.alarm_level`: one pass the first day, one day of scores at a time after that, and a
    late reading recomputes what it changes; always equal to `alarm_levels` on the whole series."""
    p = CrowdParams(neighbours=2, alarm_weeks=2, alarm_hours=1.5, alarm_scope="city")
    rng = np.random.default_rng(17)
    rows = p.history_hours + 3 * 24
    week = rng.uniform(200.0, 2000.0, size=(HOURS_PER_WEEK, 3))
    counts = week[np.arange(rows) % HOURS_PER_WEEK] * rng.lognormal(0.0, 0.15, size=(rows, 3))
    zone = ZoneInfo("UTC")
    first_hour = local_hour(datetime(2022, 1, 3, tzinfo=zone), zone)
    panel = HourlyPanel(["a", "b", "c"], zone, p, ROW[:3])

    def feed(row: int, sensor: int) -> None:
        panel.add("abc"[sensor], EPOCH.replace(tzinfo=zone) + timedelta(hours=first_hour + row), counts[row, sensor])

    def offline(row: int) -> np.ndarray:
        logc = np.log1p(counts)
        score = crowd_scores(logc, first_hour, p, nearest(ROW[:3], 2)).score
        return alarm_levels(score, ~np.isnan(logc), first_hour, 0.0, p)[row]

    last_days = [rows - 72 + 5, rows - 48 + 5, rows - 24 + 5]  # an hour in each of the last three days
    for row in range(last_days[1]):
        for sensor in range(3):
            feed(row, sensor)
    np.testing.assert_allclose(panel.alarm_level(first_hour + last_days[0], 0.0), offline(last_days[0]), rtol=1e-12)
    np.testing.assert_allclose(panel.alarm_level(first_hour + last_days[1], 0.0), offline(last_days[1]), rtol=1e-12)
    counts[last_days[0] + 3, 1] *= 30  # a late reading on the day before: a gathering the level must now see
    feed(last_days[0] + 3, 1)
    before = offline(last_days[2])
    for row in range(last_days[1], last_days[2] + 1):
        for sensor in range(3):
            feed(row, sensor)
    level = panel.alarm_level(first_hour + last_days[2], 0.0)
    np.testing.assert_allclose(level, before, rtol=1e-12)
    assert level[0] > 0


def test_sensors_without_readings_score_nothing_and_warn_nothing_from_several_threads() -> None:
    # Missing slices are expected here; their numpy warnings used to be hushed with warnings.catch_warnings,
    # which is not thread-safe: the live service scores from several threads (pytest turns a warning into
    # an error, in any thread: errors_from_threads collects them).
    rng = np.random.default_rng(3)
    hours = HOURS_PER_WEEK * 10
    logc = np.log1p(rng.poisson(400.0, size=(hours, 4)).astype(float))
    logc[:, 2] = np.nan  # never reported
    logc[: HOURS_PER_WEEK * 7, 3] = np.nan  # reported only lately
    params = CrowdParams()
    near = nearest([(144.96, -37.81), (144.97, -37.81), None, (144.96, -37.82)], params.neighbours)
    results: list[np.ndarray] = []

    def score(_k: int) -> None:
        results.append(crowd_scores(logc, 0, params, near).score)

    assert errors_from_threads(score, 4) == []
    assert all(np.array_equal(r, results[0], equal_nan=True) for r in results)
    assert np.isnan(results[0][:, 2]).all()
    assert not np.isnan(results[0][-24:, 0]).all()
