"""Crowd-gathering detection on hourly people counts (one series per counting sensor).

The expected count of a sensor at an hour comes from its counts at the same hour of the week over the
previous `weeks` weeks: their mean without the highest and the lowest week (a seasonal profile that
ignores one past gathering or one rained-off week, and forgets lockdowns and reopenings within two months),
blended with the mean of the last `recent_weeks` weeks (`recent_weight`: the profile lags a city that is
changing, the last week alone is noisy). As an option (`holidays`, off), a weekday public holiday is
expected like a Sunday and stands for no weekday of later weeks (`polis.crowd.holidays`).
The excess is measured on the log scale, where a gathering that doubles the count is the same step at a
busy corner and a quiet lane, and cleaned three times before it is scored:

1. city-wide lulls (rain, a lockdown) move every sensor together, so the median excess over all sensors
   in that hour is taken off when it is negative (`common_mode`);
2. `neighbour_weight` x the median of what is left at the sensor's `neighbours` nearest sensors in the
   same hour is taken off: a district-wide swing is mostly explained by the sensors around, a local
   gathering is not (and half of a shared rise stays, so a city-wide celebration is still seen);
3. what is left of the sensor's own level over the previous `level_hours` hours is taken off too (a
   slow drift, not a gathering).

Divided by the sensor's robust spread (1.4826 x MAD over the previous `scale_days` days, recomputed at
each local midnight) that is a z, which is turned into the evidence of a gathering of `matched_ratio` x
the expected count (a log likelihood ratio, see `standardised`), and a gathering shows as a score above
the level in one hour, or smaller evidence held for two hours:
score = max(single_weight x z_t, pair_weight x (z_t + z_{t-1})), z here being that evidence.
An hour under `gate_ratio` x its expected count never scores above zero: half the usual crowd is not a
gathering, but twice a lockdown's trickle that still stays under the usual crowd can be (chosen on 2021,
see BENCHMARKS.md: at the same false-alarm rate it finds ~3 points more gatherings in the lockdown year,
and changes nothing in 2022).

Hours whose expected count is under `min_expected` are not scored: doubling a handful of night walkers
is not a crowd. Rows are local wall-clock hours numbered from the epoch (`first_hour` is row 0's
number), so a live window and the whole series agree on the same hour's score.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from polis.alerts.model import distance_m  # the engine's own distance: the same groups
from polis.crowd.holidays import weekday_holidays
from polis.nan_reduce import nan_reduce

HOURS_PER_WEEK = 168
EPOCH = datetime(1970, 1, 1)
NEAREST_BLOCK = 256  # rows of the distance matrix computed at a time (`nearest`)
AROUND_CELLS = 4_000_000  # floats of neighbours' excess gathered at a time (`around`): 32 MB


@dataclass(frozen=True, slots=True)
class CrowdParams:
    weeks: int = 8
    level_hours: int = 3
    scale_days: int = 28
    scale_floor: float = 0.08
    # Each hour's z is turned into evidence for a gathering of `matched_ratio` x the expected count (the log
    # likelihood ratio, see `standardised`; 1: the plain z), in units of z at a sensor whose spread is
    # `reference_spread` (2021's median spread). Chosen on 2021, see BENCHMARKS.md.
    matched_ratio: float = 2.0
    reference_spread: float = 0.165
    min_expected: float = 100.0
    pair_weight: float = 5 / 6
    single_weight: float = 1.0  # score = max(single_weight x z_t, pair_weight x (z_t + z_{t-1}))
    gate_ratio: float = 0.5  # an hour under gate_ratio x its expected count never scores (0: no gate)
    trimmed: bool = True  # expected = mean of the weeks without the highest and lowest (else their median)
    # ... blended: (1 - recent_weight) x that + recent_weight x the mean of the last `recent_weeks` weeks
    recent_weeks: int = 1  # chosen on 2021 (see BENCHMARKS.md), with the weight
    recent_weight: float = 0.3
    # whose weekday public holidays are expected like Sundays ("": none; "AU-VIC" set aside on 2021, see
    # BENCHMARKS.md: no more gatherings found, and events on holidays, measured against Sundays, rank lower)
    holidays: str = ""
    scale_by_hour: bool = False  # spread per hour of day (28 samples each) instead of pooled over the day
    common_mode: str = "drops"  # take off city-wide swings: "both", "drops" (only lulls) or "none"
    neighbours: int = 20  # take off part of the median excess of the k nearest sensors (0: not)
    neighbour_weight: float = 0.5  # that part: what nearby sensors share is partly a local event too
    # The alarm level: max(the rule's level, a floor, and the score each sensor reached in `alarm_hours` of
    # its observed hours per week over the previous `alarm_weeks` weeks (see alarm_levels); 0: fixed level.
    alarm_hours: float = 1.5  # chosen on 2021 with the rule's level (the floor), see BENCHMARKS.md
    alarm_weeks: int = 8  # the regime (lockdown, reopening), not last week's events: 1 week sank the next events
    alarm_scope: str = "city"  # whose past scores set the level: "city" (all sensors') or "sensor" (its own)

    def __post_init__(self) -> None:
        if self.matched_ratio < 1 or self.reference_spread <= 0:  # under 1 the "gathering" would be a drop
            raise ValueError("matched_ratio must be at least 1 and reference_spread positive")

    @property
    def lag_hours(self) -> int:
        """Rows before an hour that its expected count reads: `weeks` weeks, and with `holidays` 5 days
        more (a Friday holiday reads the Sundays from 12 days before it, see week_lag)."""
        return self.weeks * HOURS_PER_WEEK + (5 * 24 if self.holidays else 0)

    @property
    def score_hours(self) -> int:
        """Rows a window needs before the hour it scores."""
        return (self.scale_days + 1) * 24 + self.lag_hours + self.level_hours + 2

    @property
    def history_hours(self) -> int:
        """Rows a window needs before the hour it scores and sets the alarm level of."""
        adaptive = self.alarm_weeks * HOURS_PER_WEEK + 24 if self.alarm_hours > 0 else 0
        return self.score_hours + adaptive


@dataclass(frozen=True, slots=True)
class CrowdScores:
    score: np.ndarray  # (T, S), NaN where not scored
    z: np.ndarray  # each hour's own evidence (see `standardised`), before it is combined with the previous hour's
    expected: np.ndarray  # expected count
    usable: np.ndarray  # bool: scored

    def above(self, logc: np.ndarray) -> np.ndarray:
        """Bool (T, S): hours whose count (log1p `logc`, the rows scored) is above the expected count: the only
        hours that may raise an alert (`rising`), as the live rule raises (polis.alerts.evaluate)."""
        with np.errstate(invalid="ignore"):
            return np.expm1(logc) > self.expected  # NaN (no count or no expectation): False


def local_hour(at: datetime, zone: ZoneInfo) -> int:
    """The local wall-clock hour number of an instant (hours since 1970-01-01T00:00 local)."""
    local = at.astimezone(zone).replace(tzinfo=None)
    return int((local - EPOCH).total_seconds() // 3600)


@contextmanager
def _quiet() -> Iterator[None]:
    # Missing values are NaN here: arithmetic on them is expected, its floating-point warnings are noise.
    # np.errstate is per thread (warnings.catch_warnings is not: see polis.nan_reduce, which the NaN-skipping
    # reductions here go through).
    with np.errstate(all="ignore"):
        yield


def _lagged(a: np.ndarray, lags: range, step: int) -> np.ndarray:
    """Stack of `a` shifted down by lag*step rows (NaN where nothing precedes)."""
    out = np.full((len(lags), *a.shape), np.nan)
    for i, lag in enumerate(lags):
        shift = lag * step
        if shift < a.shape[0]:
            out[i, shift:] = a[: a.shape[0] - shift]
    return out


def profile(lags: np.ndarray, p: CrowdParams) -> np.ndarray:
    """The expected log count from the same hour of earlier weeks (axis 0): their median, or with
    `trimmed` the mean of what is left without the highest and lowest week (steadier than the median,
    still blind to one past gathering or one rained-off week)."""
    if not p.trimmed:
        return np.asarray(nan_reduce(np.nanmedian, lags, axis=0))
    ordered = np.sort(lags, axis=0)  # NaN last
    present = np.sum(~np.isnan(lags), axis=0)
    total = np.nansum(ordered, axis=0)
    highest = np.take_along_axis(ordered, np.maximum(present - 1, 0)[None], axis=0)[0]
    trimmed = (total - ordered[0] - highest) / np.maximum(present - 2, 1)
    return np.where(present >= 3, trimmed, nan_reduce(np.nanmedian, lags, axis=0))


def week_lag(hours: np.ndarray, k: int, p: CrowdParams) -> tuple[np.ndarray, np.ndarray]:
    """(hour numbers, valid): the hours whose counts stand for `hours` k weeks back: the same hour of the
    week, or for a weekday public holiday the same hour of a Sunday (a holiday moves like one): the Sunday
    8 to 12 days before it for k = 1, a week earlier for each k after (the Sunday just before a Monday
    holiday is the same long weekend: Moomba, Cup weekend); not valid where that hour is itself a weekday
    holiday (it says nothing of an ordinary weekday)."""
    off = np.array(sorted(weekday_holidays(p.holidays)), dtype=np.int64)
    day = hours // 24
    weekday = (day + 3) % 7  # Monday 0: 1970-01-01 was a Thursday
    sunday = hours + (6 - weekday) * 24 - HOURS_PER_WEEK  # the Sunday 1 to 5 days before
    lag = np.where(np.isin(day, off), sunday, hours) - k * HOURS_PER_WEEK
    return lag, ~np.isin(lag // 24, off)


def expected_from(lags: np.ndarray, p: CrowdParams) -> tuple[np.ndarray, np.ndarray]:
    """(expected log1p count, enough history) from the same hour of earlier weeks (axis 0, last week first)."""
    with _quiet():
        expected = profile(lags, p)
        if p.recent_weight > 0:
            recent = nan_reduce(np.nanmean, lags[: p.recent_weeks], axis=0)
            expected = np.where(np.isnan(recent), expected, (1 - p.recent_weight) * expected + p.recent_weight * recent)
    return expected, np.sum(~np.isnan(lags), axis=0) >= max(1, p.weeks // 2)


def expected_log(logc: np.ndarray, first_hour: int, p: CrowdParams) -> tuple[np.ndarray, np.ndarray]:
    """(expected log1p count, usable mask) of every row, from the rows of earlier weeks."""
    hours = first_hour + np.arange(logc.shape[0], dtype=np.int64)
    lags = np.full((p.weeks, *logc.shape), np.nan)
    for k in range(1, p.weeks + 1):
        lag, valid = week_lag(hours, k, p)
        rows = lag - first_hour
        valid &= rows >= 0
        lags[k - 1, valid] = logc[rows[valid]]
    med, enough = expected_from(lags, p)
    usable = enough & ~np.isnan(logc) & (np.expm1(med) >= p.min_expected)
    return med, usable


def nearest(points: Sequence[tuple[float, float] | None], k: int) -> np.ndarray:
    """(S, k) int: the columns of each sensor's k nearest other sensors, nearest first, from their
    (longitude, latitude); S (one past the last column, no sensor) where fewer than k have a location."""
    size = len(points)
    lonlat = np.array([point if point is not None else (np.nan, np.nan) for point in points], dtype=float)
    lonlat = lonlat.reshape(size, 2)
    with _quiet():
        lat = np.radians(nan_reduce(np.nanmean, lonlat[:, 1])) if size else 0.0
    xy = np.c_[lonlat[:, 0] * np.cos(lat), lonlat[:, 1]] * 111_320.0  # metres, flat within a city
    found = np.full((size, k), size, dtype=int)
    # A block of rows of the distance matrix at a time: the whole S x S matrix of a city with thousands of
    # counters is gigabytes, and a block gives each row the same distances and the same stable order.
    for start in range(0, size, NEAREST_BLOCK):
        rows = np.arange(start, min(start + NEAREST_BLOCK, size))
        distance = np.hypot(xy[rows, None, 0] - xy[None, :, 0], xy[rows, None, 1] - xy[None, :, 1])
        distance[np.isnan(distance)] = np.inf
        distance[np.arange(len(rows)), rows] = np.inf  # not its own neighbour
        order = np.argsort(distance, axis=1, kind="stable")[:, :k]
        found[rows, : order.shape[1]] = np.where(np.take_along_axis(distance, order, axis=1) < np.inf, order, size)
    return found


def around(rc: np.ndarray, usable: np.ndarray, near: np.ndarray) -> np.ndarray:
    """(T, S): the median excess of each sensor's neighbours in the same hour (0 where none is scored)."""
    masked = np.hstack([np.where(usable, rc, np.nan), np.full((rc.shape[0], 1), np.nan)])  # column S: none
    out = np.empty(rc.shape)
    # A block of sensors at a time: their neighbours' excess is (T, block, k), and over ten weeks of thousands
    # of counters the whole (T, S, k) stack would be gigabytes; each median reads only its own sensor's.
    step = max(1, AROUND_CELLS // max(1, rc.shape[0] * near.shape[1]))
    with _quiet():
        for start in range(0, rc.shape[1], step):
            block = near[start : start + step]
            out[:, start : start + len(block)] = np.nan_to_num(nan_reduce(np.nanmedian, masked[:, block], axis=2))
    return out


def corrected(r: np.ndarray, usable: np.ndarray, p: CrowdParams, near: np.ndarray | None = None) -> np.ndarray:
    """The excess r (log count - expected) less the city-wide swing of its hour and the sensor's own level
    over the previous `level_hours` rows. Rows are contiguous: the first `level_hours` of a block lack
    their full level history."""
    with _quiet():
        common = np.nan_to_num(nan_reduce(np.nanmedian, np.where(usable, r, np.nan), axis=1))
    if p.common_mode == "drops":
        common = np.minimum(common, 0.0)
    elif p.common_mode == "none":
        common = np.zeros_like(common)
    with _quiet():
        rc = r - common[:, None]
        if p.neighbours > 0:
            if near is None:
                raise ValueError("the neighbour correction needs each sensor's neighbours (see nearest())")
            rc = rc - p.neighbour_weight * around(rc, usable, near[:, : p.neighbours])
        level = np.nan_to_num(
            nan_reduce(np.nanmedian, _lagged(np.where(usable, rc, np.nan), range(1, p.level_hours + 1), 1), axis=0)
        )
    return rc - level


def residuals(
    logc: np.ndarray, first_hour: int, p: CrowdParams, near: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected log count, usable mask, corrected excess) for every row."""
    med, usable = expected_log(logc, first_hour, p)
    return med, usable, corrected(logc - med, usable, p, near)


def daily_scale(excess: np.ndarray, usable: np.ndarray, first_hour: int, p: CrowdParams) -> np.ndarray:
    """Per row and sensor: the robust spread of the excess over the `scale_days` local days before the row's day."""
    rows = excess.shape[0]
    scale = np.full(excess.shape, np.nan)
    masked = np.where(usable, excess, np.nan)
    day_of_row = (first_hour + np.arange(rows)) // 24
    with _quiet():
        for day in np.unique(day_of_row):
            start = (int(day) - p.scale_days) * 24 - first_hour
            stop = int(day) * 24 - first_hour
            if start < 0:
                continue  # not enough history in this window for this day
            block = masked[start:stop]
            if p.scale_by_hour:
                hours = block.reshape(p.scale_days, 24, block.shape[1])  # days x hour of day x sensors
                centre = nan_reduce(np.nanmedian, hours, axis=0)
                spread = 1.4826 * nan_reduce(np.nanmedian, np.abs(hours - centre), axis=0)  # (24, S)
                rows_of_day = np.nonzero(day_of_row == day)[0]
                scale[rows_of_day] = spread[(first_hour + rows_of_day) % 24]
                continue
            centre = nan_reduce(np.nanmedian, block, axis=0)
            spread = 1.4826 * nan_reduce(np.nanmedian, np.abs(block - centre), axis=0)
            scale[day_of_row == day] = spread
    return np.maximum(scale, p.scale_floor)


def crowd_scores(
    logc: np.ndarray, first_hour: int, p: CrowdParams | None = None, near: np.ndarray | None = None
) -> CrowdScores:
    """Scores of every row of a regular hourly matrix of log1p counts (rows: hours, columns: sensors)."""
    p = p or CrowdParams()
    med, usable, excess = residuals(logc, first_hour, p, near)
    scale = daily_scale(excess, usable, first_hour, p)
    usable = usable & ~np.isnan(scale)
    z = standardised(logc, med, excess, scale, usable, p)
    previous = np.vstack([np.zeros((1, z.shape[1])), np.nan_to_num(z[:-1])]) if len(z) else z
    return CrowdScores(score=combined(z, previous, usable, p), z=z, expected=np.expm1(med), usable=usable)


def standardised(
    logc: np.ndarray, med: np.ndarray, excess: np.ndarray, scale: np.ndarray, usable: np.ndarray, p: CrowdParams
) -> np.ndarray:
    """Each hour's evidence of a gathering, NaN where not usable: z (the corrected excess over the spread)
    matched to a gathering of `matched_ratio` x the expected count.

    With a step m = log(ratio) on the log scale and a spread s, the log likelihood ratio of "a gathering"
    against "a usual hour" is (m / s^2) (excess - m / 2) = (m / s) (z - m / (2 s)). Scaled to read as z
    where s = `reference_spread` (r), that is (r / s) (z - m / (2 s)) + m / (2 r). A plain z gives every
    sensor the same false-alarm rate; this spends them where a doubling can be told from the noise: a quiet
    counter (small s) needs a higher z, since a real doubling there shows far above the level anyway, and a
    very noisy one a lower share of its z, since there a doubling hides in the noise (chosen on 2021, see
    BENCHMARKS.md: about +2.5 points of 2x-for-2 h gatherings found at the same alerts raised)."""
    z = np.where(usable, excess / scale, np.nan)
    if p.matched_ratio != 1:
        step, reference = np.log(p.matched_ratio), p.reference_spread
        z = (reference / scale) * (z - step / (2 * scale)) + step / (2 * reference)
    # A gathering is more people than this place normally sees: an hour under `gate_ratio` x its own
    # expectation is never one, however much worse the rest of the city is doing (a lockdown, a storm).
    if p.gate_ratio > 0:
        z = np.where(logc > med + np.log(p.gate_ratio), z, np.minimum(z, 0.0))
    return z


def combined(z: np.ndarray, previous: np.ndarray, usable: np.ndarray, p: CrowdParams) -> np.ndarray:
    """The score of each hour from its z and the previous hour's (0 where that was not scored): one
    strong hour, or two moderate ones in a row (a 2-hour gathering adds up over both)."""
    zs = np.nan_to_num(z)
    return np.where(usable, np.maximum(p.single_weight * zs, p.pair_weight * (zs + previous)), np.nan)


def window_level(score: np.ndarray, observed: np.ndarray, floor: float, p: CrowdParams) -> np.ndarray:
    """(S,): the alarm level set by a block of past rows: max(floor, the k-th highest score of each sensor,
    k = ceil(alarm_hours x its observed hours / 168)), or over all sensors' hours with scope "city".

    Ranked over *observed* hours, an unscored hour counting as the lowest score: a fixed level alarms in a
    share of the scored hours, which grows when a city reopens; this level alarms in at most a share of
    the observed ones, whatever part of them is scored."""
    size = score.shape[1]
    if p.alarm_hours <= 0:
        return np.full(size, floor)
    ranked = np.where(observed, np.nan_to_num(score, nan=-np.inf), -np.inf)
    seen = observed.sum(axis=0)
    if p.alarm_scope == "city":
        ranked, seen = ranked.reshape(-1, 1), seen.sum(keepdims=True)
    k = np.maximum(np.ceil(p.alarm_hours * seen / HOURS_PER_WEEK).astype(int), 1)
    top = -np.sort(-ranked, axis=0)
    kth = top[np.minimum(k, len(top)) - 1, np.arange(top.shape[1])] if len(top) else np.full(top.shape[1], -np.inf)
    # Too few observed hours (under one week) say nothing about the sensor's usual tail: the floor alone.
    level = np.where(seen >= HOURS_PER_WEEK, np.maximum(kth, floor), floor)
    return np.broadcast_to(level, (size,)).astype(float)


def alarm_levels(score: np.ndarray, observed: np.ndarray, first_hour: int, floor: float, p: CrowdParams) -> np.ndarray:
    """(T, S): the alarm level of every row, set at each local midnight from the scores of the previous
    `alarm_weeks` weeks (only rows before that day: an hour never moves its own level; the rows before
    the start of the series are treated as not observed)."""
    levels = np.full(score.shape, float(floor))
    if p.alarm_hours <= 0:
        return levels
    day_of_row = (first_hour + np.arange(score.shape[0])) // 24
    for day in np.unique(day_of_row):
        stop = int(day) * 24 - first_hour
        start = max(stop - p.alarm_weeks * HOURS_PER_WEEK, 0)
        if stop <= 0:
            continue
        levels[day_of_row == day] = window_level(score[start:stop], observed[start:stop], floor, p)
    return levels


def rising(score: np.ndarray, level: float | np.ndarray, above: np.ndarray | None = None) -> np.ndarray:
    """Bool (T, S): the hours that would raise an alert: at or above the level and, given `above`
    (`CrowdScores.above`), with more people than expected. The corrections (a city-wide lull, quiet
    neighbours, a quiet previous hour) and the pair score can lift an hour under its own expected count over
    the level: no gathering there, and its alert would read "80 people, about 100 expected"."""
    on = np.nan_to_num(score, nan=-np.inf) >= level
    return on if above is None else on & above


def alarm_runs(score: np.ndarray, level: float | np.ndarray, above: np.ndarray | None = None) -> np.ndarray:
    """Bool (T, S): the first hour of each run of hours that would raise an alert (`rising`; one alarm per run)."""
    on = rising(score, level, above)
    before = np.vstack([np.zeros((1, on.shape[1]), dtype=bool), on[:-1]])
    return on & ~before


def alert_life(
    score: np.ndarray,
    level: float | np.ndarray,
    hysteresis: float,
    cooldown_hours: int,
    observed: np.ndarray | None = None,
    above: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends), bool (T, S): the hours where a live rule on hourly readings raises a sensor's
    alert and where it cancels it (the life of `polis.alerts.lifecycle.Tracker`): raised at the level (and,
    given `above`, only with more people than expected: `rising`), cancelled once the score falls under
    level - hysteresis or is not scored, and no new alert for `cooldown_hours` after a cancel. Hours without
    a reading (`observed` False) change nothing: the live rule is not called for them."""
    seen = np.ones(score.shape, dtype=bool) if observed is None else observed
    on = rising(score, level, above)
    kept = np.nan_to_num(score, nan=-np.inf) >= level - hysteresis
    active = np.zeros(score.shape[1], dtype=bool)
    cancelled = np.full(score.shape[1], -(10**9))
    starts = np.zeros(score.shape, dtype=bool)
    ends = np.zeros(score.shape, dtype=bool)
    for t in range(score.shape[0]):
        rise = seen[t] & ~active & (t - cancelled >= cooldown_hours) & on[t]
        cancel = seen[t] & active & ~kept[t]
        cancelled[cancel] = t
        active = (active | rise) & ~cancel
        starts[t], ends[t] = rise, cancel
    return starts, ends


def within(points: Sequence[tuple[float, float] | None], radius_m: float) -> np.ndarray:
    """Bool (S, S): the pairs of distinct sensors within `radius_m` metres of each other (great-circle,
    as the live engine measures), False where either has no location or the radius is 0 (no grouping)."""
    size = len(points)
    close = np.zeros((size, size), dtype=bool)
    for i, a in enumerate(points):
        for j, b in enumerate(points):
            close[i, j] = radius_m > 0 and i != j and a is not None and b is not None and distance_m(a, b) <= radius_m
    return close


def alerts_raised(starts: np.ndarray, ends: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Bool (T, S): the sensor starts (from `alert_life`) that raise a new alert once neighbours are
    grouped as the live engine groups them (`AlertEngine._apply`, a rule's `groupWithinM`): a sensor
    whose alert starts joins an open alert that has a member within the radius (`close`) - an Update of
    that alert, not a new one - and a member whose alert ends leaves it; an alert closes with its last
    member. So a start is a new alert exactly when no sensor within the radius is in an alert at that
    moment. Within an hour the sensors are taken in column order, as the live rule takes one batch of
    readings sent in that order (a neighbour that leaves before a sensor starts in the same hour leaves
    it nothing to join)."""
    active = np.zeros(starts.shape[1], dtype=bool)  # in an alert after the previous hour
    new = np.zeros(starts.shape, dtype=bool)
    for t in np.nonzero(starts.any(axis=1) | ends.any(axis=1))[0]:
        now = active.copy()
        for s in range(starts.shape[1]):
            if ends[t, s]:
                now[s] = False
            elif starts[t, s]:
                new[t, s] = not bool((now & close[s]).any())
                now[s] = True
        active = now
    return new


class HourlyPanel:
    """A live sliding window of log1p counts per local hour and sensor, fed by observations; scores the
    newest hours with the same arithmetic as `crowd_scores` on the whole series."""

    def __init__(
        self,
        sensors: list[str],
        zone: ZoneInfo,
        p: CrowdParams | None = None,
        points: Sequence[tuple[float, float] | None] | None = None,
    ) -> None:
        self.sensors = list(sensors)
        self.column = {s: i for i, s in enumerate(self.sensors)}
        self.zone = zone
        self.p = p or CrowdParams()
        # (longitude, latitude) of each sensor, in `sensors` order: whose counts explain whose
        self.points: list[tuple[float, float] | None] = list(points) if points is not None else [None] * len(sensors)
        self.near = nearest(self.points, self.p.neighbours)
        self.rows: dict[int, np.ndarray] = {}
        self._scales: dict[int, np.ndarray] = {}
        self._levels: dict[tuple[int, float], np.ndarray] = {}
        self._day_scores: dict[int, np.ndarray] = {}  # local day -> its (24, S) scores, for the levels

    def add(self, sensor: str, at: datetime, count: float) -> int | None:
        """Record a count; returns its local hour number (None for an unknown sensor)."""
        column = self.column.get(sensor)
        if column is None:
            return None
        hour = local_hour(at, self.zone)
        row = self.rows.get(hour)
        if row is None:
            row = self.rows[hour] = np.full(len(self.sensors), np.nan)
        row[column] = np.log1p(max(count, 0.0))
        for day in [d for d in self._scales if d * 24 > hour]:  # a late reading changes later days' spreads
            del self._scales[day]
        for key in [k for k in self._levels if k[0] * 24 > hour]:  # ... and their alarm levels
            del self._levels[key]
        for day in [d for d in self._day_scores if (d + 1) * 24 > hour]:  # ... and the scores from its day on
            del self._day_scores[day]
        return hour

    def extend(self, sensors: Sequence[str], points: Sequence[tuple[float, float] | None]) -> None:
        """Add columns for sensors that joined after the panel was built (their history is then `add`ed).
        A new sensor may be a neighbour of the sensors around it, so everyone's neighbours are found again
        and the cached spreads, levels and scores are dropped: they are recomputed as a new panel would."""
        new = [(s, point) for s, point in zip(sensors, points, strict=True) if s not in self.column]
        if not new:
            return
        for sensor, point in new:
            self.column[sensor] = len(self.sensors)
            self.sensors.append(sensor)
            self.points.append(point)
        padding = np.full(len(new), np.nan)
        self.rows = {hour: np.concatenate([row, padding]) for hour, row in self.rows.items()}
        self.near = nearest(self.points, self.p.neighbours)
        self._scales.clear()
        self._levels.clear()
        self._day_scores.clear()

    def oldest(self, newest: int) -> int:
        """The oldest hour the window keeps once its newest hour is `newest` (older rows are pruned)."""
        return newest - self.p.history_hours - 24

    def prune(self, newest: int) -> None:
        oldest = self.oldest(newest)
        for hour in [h for h in self.rows if h < oldest]:
            del self.rows[hour]

    def _matrix(self, first: int, last: int) -> np.ndarray:
        matrix = np.full((last - first + 1, len(self.sensors)), np.nan)
        for h in range(first, last + 1):
            row = self.rows.get(h)
            if row is not None:
                matrix[h - first] = row
        return matrix

    def _day_scale(self, day: int) -> np.ndarray:
        """(24, S): the spread of each hour of local day `day`, from the days before it (cached per day)."""
        found = self._scales.get(day)
        if found is None:
            p = self.p
            first = (day - p.scale_days) * 24 - p.lag_hours - p.level_hours - 1
            last = day * 24 + 23
            # Rows before the first count have no excess to take (NaN, unusable) however far back the matrix
            # starts, and the excess of a later row only reads earlier rows' counts: the same spreads from there.
            counted = [h for h in self.rows if first <= h <= last]
            start = min(counted, default=last)
            _, used, excess = residuals(self._matrix(start, last), start, p, self.near)
            # Only this day's spread is kept: from its `scale_days` days before, not every day of the matrix.
            rows = (p.scale_days + 1) * 24
            tail = np.full((rows, len(self.sensors)), np.nan)
            usable = np.zeros(tail.shape, dtype=bool)
            kept = min(rows, len(excess))
            tail[rows - kept :], usable[rows - kept :] = excess[len(excess) - kept :], used[len(used) - kept :]
            found = daily_scale(tail, usable, last + 1 - rows, p)[-24:]
            self._scales[day] = found
            for old in [d for d in self._scales if d < day - 2]:
                del self._scales[old]
        return found

    def alarm_level(self, hour: int, floor: float) -> np.ndarray:
        """(S,): the alarm level of row `hour`, as `alarm_levels` sets it on the whole series: from the
        scores of the `alarm_weeks` weeks before the hour's local day (recomputed once a day)."""
        p = self.p
        if p.alarm_hours <= 0:
            return np.full(len(self.sensors), float(floor))
        key = (hour // 24, float(floor))
        found = self._levels.get(key)
        if found is None:
            days = range(key[0] - p.alarm_weeks * 7, key[0])
            scores = self._scores_of(days)
            found = window_level(scores, ~np.isnan(self._matrix(days[0] * 24, days[-1] * 24 + 23)), floor, p)
            self._levels[key] = found
            for old in [k for k in self._levels if k[0] < key[0] - 2]:
                del self._levels[old]
        return found

    def _scores_of(self, days: range) -> np.ndarray:
        """(24 x len(days), S): the scores of whole local days, cached per day. The first time in one pass
        of `crowd_scores` over the days and their history (about a second for 8 weeks of 55 sensors), then
        a new day's 24 hours one by one with `score_hour` (the spreads are cached already)."""
        p = self.p
        missing = [d for d in days if d not in self._day_scores]
        if len(missing) > 2:
            first = days[0] * 24 - p.score_hours  # every row of the days with its full scoring history
            # An hour without a count is never scored, and an hour's score reads at most `score_hours` rows back:
            # starting that far before the local day of the first count gives the same scores, and a panel of
            # new counters (or one with weeks of history missing) is not scored over ten empty weeks.
            counted = [h for h in self.rows if h <= days[-1] * 24 + 23]
            first = max(first, (min(counted) // 24) * 24 - p.score_hours) if counted else days[-1] * 24 + 23
            score = crowd_scores(self._matrix(first, days[-1] * 24 + 23), first, p, self.near).score
            # (24 x len(days), S): the days' rows, NaN before the matrix (hours with no count anywhere)
            whole = np.full((24 * len(days), len(self.sensors)), np.nan)
            kept = min(len(score), len(whole))
            whole[len(whole) - kept :] = score[len(score) - kept :]
            for i, day in enumerate(days):
                self._day_scores[day] = whole[24 * i : 24 * (i + 1)]
        else:
            for day in missing:
                hours = range(day * 24, day * 24 + 24)
                self._day_scores[day] = np.vstack([self.score_hour(h).score for h in hours])
        for old in [d for d in self._day_scores if d < days[0]]:
            del self._day_scores[old]
        return np.vstack([self._day_scores[d] for d in days])

    def score_hour(self, hour: int) -> CrowdScores:
        """The scores of row `hour` (shape (1, S)): the arithmetic of `crowd_scores` on just the rows it
        needs (the hour, the one before it and their level history; spreads cached per day)."""
        p = self.p
        count = p.level_hours + 2
        rows = range(hour - count + 1, hour + 1)
        current = self._matrix(rows[0], hour)
        stack = np.full((p.weeks, count, len(self.sensors)), np.nan)
        for k in range(1, p.weeks + 1):
            lags, valid = week_lag(np.arange(rows.start, rows.stop, dtype=np.int64), k, p)
            for j, (lag, ok) in enumerate(zip(lags.tolist(), valid.tolist(), strict=True)):
                found = self.rows.get(lag) if ok else None
                if found is not None:
                    stack[k - 1, j] = found
        med, enough = expected_from(stack, p)
        usable = enough & ~np.isnan(current) & (np.expm1(med) >= p.min_expected)
        excess = corrected(current - med, usable, p, self.near)
        scale = np.stack([self._day_scale(r // 24)[r % 24] for r in (hour - 1, hour)])
        tail = slice(count - 2, count)
        use = usable[tail] & ~np.isnan(scale)
        z = standardised(current[tail], med[tail], excess[tail], scale, use, p)
        score = combined(z[1:], np.nan_to_num(z[:1]), use[1:], p)
        return CrowdScores(score, z[1:], np.expm1(med[-1:]), use[1:])
