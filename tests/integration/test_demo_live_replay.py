"""The demo's live sensors (`polis demo`): Los-loop's readings published at their recorded weekday and time of day
in the current week, never ahead of the clock, the last hours at once on start; and the same instants on every
run, so a restarted demo adds no second, slightly shifted copy of the recording to the history."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import Broker
from polis.ingest.replay import WEEK, _Step, _steps, live_steps, replay_live
from polis.settings import Settings

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def _recording(days: int = 7, minutes: int = 5) -> list[_Step]:
    start = np.datetime64("2012-03-01T08:00:00", "us")
    ids = np.array(["urn:ngsi-ld:TrafficFlowObserved:x"], dtype=object)
    return [_Step(start + np.timedelta64(k * minutes, "m"), ids, ids, np.array([float(k)]))
            for k in range(days * 24 * 60 // minutes)]


def _weekday_and_time(t: np.datetime64) -> tuple[int, str]:
    moment = t.astype("datetime64[us]").item()
    return moment.weekday(), moment.strftime("%H:%M")


def test_each_reading_keeps_its_weekday_and_time_of_day_week_after_week() -> None:
    steps = _recording()
    start = np.datetime64("2026-11-29T10:02:00", "us")
    timeline = live_steps(steps, start)
    taken = [next(timeline) for _ in range(3 * len(steps))]  # three weeks, across two turns of the recording
    assert taken[0].observed_at >= start and taken[0].observed_at - start < np.timedelta64(5, "m")
    assert all(b.observed_at - a.observed_at == np.timedelta64(5, "m") for a, b in itertools.pairwise(taken))
    by_value = {float(s.values[0]): s.observed_at for s in steps}
    for step in taken[:: len(steps) // 7]:
        recorded = by_value[float(step.values[0])]
        assert (step.observed_at - recorded) % WEEK == np.timedelta64(0, "us")  # whole weeks later
        assert _weekday_and_time(step.observed_at) == _weekday_and_time(recorded)


def _local(t: np.datetime64) -> datetime:
    return t.astype("datetime64[us]").item().replace(tzinfo=UTC).astimezone(LOS_ANGELES)


def test_in_summer_a_reading_keeps_its_local_time_of_day() -> None:
    """Recorded in March (Pacific standard time), replayed in July (daylight time): the 08:00 reading comes at
    08:00 in Los Angeles, not at 09:00 as whole UTC weeks would put it."""
    steps = _recording()
    recorded = {float(s.values[0]): _local(s.observed_at) for s in steps}
    timeline = live_steps(steps, np.datetime64("2027-07-01T00:00:00", "us"), LOS_ANGELES)
    week = [next(timeline) for _ in range(len(steps))]
    for step in week:
        was, now = recorded[float(step.values[0])], _local(step.observed_at)
        assert (now.weekday(), now.strftime("%H:%M")) == (was.weekday(), was.strftime("%H:%M"))
    assert all(b.observed_at - a.observed_at == np.timedelta64(5, "m") for a, b in itertools.pairwise(week))


def test_across_a_change_of_clocks_instants_only_go_forward() -> None:
    """Spring forward (2027-03-14) and fall back (2027-11-07) in Los Angeles: no instant twice or out of order;
    the 25-hour day has an hour without readings rather than two readings at one time."""
    steps = _recording()
    for start, change, readings in (("2027-03-13T00:00:00", "2027-03-14", 288 - 12),  # a 23-hour day
                                    ("2027-11-06T00:00:00", "2027-11-07", 288)):  # 25 hours, one without readings
        timeline = live_steps(steps, np.datetime64(start, "us"), LOS_ANGELES)
        taken = [next(timeline) for _ in range(3 * 288)]
        assert all(a.observed_at < b.observed_at for a, b in itertools.pairwise(taken))
        on_the_day = [s for s in taken if _local(s.observed_at).strftime("%Y-%m-%d") == change]
        assert len(on_the_day) == readings
        recorded = {float(s.values[0]): _local(s.observed_at) for s in steps}
        same = [s for s in taken if _local(s.observed_at).strftime("%H:%M")
                == recorded[float(s.values[0])].strftime("%H:%M")]
        assert len(same) >= len(taken) - 12  # all but the hour the clocks skip keep their time of day


def test_a_later_start_republishes_the_same_instants() -> None:
    steps = _recording()
    first_run = live_steps(steps, np.datetime64("2026-11-29T04:00:00", "us"))
    second_run = live_steps(steps, np.datetime64("2026-11-29T09:30:00", "us"))
    earlier = {(s.observed_at, float(s.values[0])) for s in (next(first_run) for _ in range(200))}
    later = [next(second_run) for _ in range(50)]
    overlap = [s for s in later if s.observed_at <= max(t for t, _ in earlier)]
    assert overlap and all((s.observed_at, float(s.values[0])) in earlier for s in overlap)


def test_the_live_replay_never_runs_ahead_of_the_clock(broker: Broker) -> None:
    """A real broker: every reading received carries an observation time at or before the moment it arrived,
    the last hour arrives at once (12 steps of 207 sensors) as one gateway batch per step (a week of catch-up
    as single readings would overflow the broker's queue), then the replay waits for the clock."""
    received: list[tuple[str, float]] = []
    batches: list[int] = []

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        body = orjson.loads(message.payload)
        readings = body if isinstance(body, list) else [body]
        batches.append(len(readings))
        received.extend((reading["dateObserved"], time.time()) for reading in readings)

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe("polis/#", qos=1)
    subscriber.loop_start()
    stop = threading.Event()
    caught_up: list[int] = []
    worker = threading.Thread(target=lambda: replay_live(
        "los-loop", Settings().datasets_dir, broker.url, stop=stop, catch_up_hours=1.0, on_caught_up=caught_up.append))
    try:
        time.sleep(0.5)  # subscribed before anything is published
        worker.start()
        deadline = time.monotonic() + 60
        while not caught_up and time.monotonic() < deadline:
            time.sleep(0.1)
        assert caught_up, "the replay did not catch up with the clock in 60 s"
        deadline = time.monotonic() + 10
        while len(received) < caught_up[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        sensors = len(_steps("los-loop", Settings().datasets_dir, None)[1][0].entity_ids)
        assert caught_up[0] == len(received) and 11 * sensors <= len(received) <= 13 * sensors
        catch_up = batches[: caught_up[0] // sensors]  # a live step may follow, one message per reading
        assert set(catch_up) == {sensors} and sum(catch_up) == caught_up[0]  # one message per step, not per reading
        now = datetime.now(UTC)
        times = [datetime.fromisoformat(observed.replace("Z", "+00:00")) for observed, _ in received]
        assert all(t <= datetime.fromtimestamp(arrived, UTC) for t, (_, arrived) in zip(times, received, strict=True))
        assert now - timedelta(hours=1, minutes=6) <= min(times) and max(times) <= now
    finally:
        stop.set()
        worker.join(15)
        subscriber.loop_stop()
        subscriber.disconnect()
    assert not worker.is_alive()
