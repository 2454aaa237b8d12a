"""Replay a recorded dataset as live sensors: its real readings published over MQTT, in time order, at N×
real time, so the hub (and everything listening to it) sees the city as if the sensors were online.

Each time step of the dataset becomes, per sensor with a reading, one QoS 1 message in Smart Data
Models key-values form on the documented topic (see polis.ingest.messages):

    polis/<tenant>/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:los-loop:773869
    {"averageVehicleSpeed": 61.3, "dateObserved": "2012-03-01T08:00:00Z"}

or, with `batch=True`, one gateway message per time step on `polis/<tenant>/<Type>/_batch` holding an
array of such readings, each with its "id". Key-values carry no unit: the ingestor keeps the unitCode the
attribute already has (the dataset loaders set it), so ingest the dataset first (`polis ingest NAME`) for
entities with their names, locations and units; without it, the entities are created bare.

Pacing: step k is published (t_k - t_0) / speed seconds after the start; speed 0 or inf publishes as fast as
the broker acknowledges. The publisher keeps at most `window` messages unacknowledged (QoS 1 flow control:
a broker that slows down slows the replay), and returns once every message has been acknowledged.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.datasets import ZONES, load_dataset
from polis.ingest.messages import BATCH_SEGMENT, MAX_READINGS, topic_for
from polis.ingest.mqtt import parse_url
from polis.ngsi_ld.entities import utc_now

REPLAYABLE = ("los-loop", "melbourne-pedestrians", "sz-taxi")


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    dataset: str
    messages: int  # published and acknowledged by the broker
    readings: int
    steps: int
    seconds: float
    first: str | None  # observation time of the first and last step replayed
    last: str | None


@dataclass(frozen=True, slots=True)
class _Step:
    observed_at: np.datetime64
    entity_ids: np.ndarray
    attributes: np.ndarray
    values: np.ndarray

    def at(self, observed: np.datetime64) -> _Step:
        """The same readings, observed at another instant."""
        return _Step(observed, self.entity_ids, self.attributes, self.values)


def _term(iri: str) -> str:
    """The short name of a Smart Data Models IRI (the Transportation @context maps it back)."""
    return iri.rsplit("/", 1)[-1]


def _iso(instant: np.datetime64) -> str:
    return f"{np.datetime_as_string(instant, unit='s')}Z"


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _steps(dataset: str, datasets_dir: Path, start: datetime | None) -> tuple[dict[str, str], list[_Step]]:
    """The dataset's readings grouped by observation time, oldest first, and each entity's type term."""
    load = load_dataset(dataset, Path(datasets_dir), utc_now())
    types = {e["id"]: _term(e["type"][0]) for e in load.entities}
    columns = load.history
    order = np.argsort(columns.observed_at, kind="stable")  # rows are entity-major; replay is time-major
    times = columns.observed_at[order]
    if start is not None:
        first = np.datetime64(start.astimezone(UTC).replace(tzinfo=None), "us")
        keep = times >= first
        order, times = order[keep], times[keep]
    if times.size == 0:
        return types, []
    bounds = np.flatnonzero(np.diff(times.astype(np.int64))) + 1
    steps = []
    for rows in np.split(order, bounds):
        steps.append(
            _Step(columns.observed_at[rows[0]], columns.entity_id[rows], columns.attribute[rows], columns.value[rows])
        )
    return types, steps


def _messages(step: _Step, types: dict[str, str], tenant: str, batch: bool) -> Iterator[tuple[str, bytes, int]]:
    """(topic, payload, readings) of one time step."""
    when = _iso(step.observed_at)
    if not batch:
        for entity_id, attribute, value in zip(step.entity_ids, step.attributes, step.values, strict=True):
            body = {_term(attribute): _number(float(value)), "dateObserved": when}
            yield topic_for(tenant, types[entity_id], entity_id), orjson.dumps(body), 1
        return
    by_type: dict[str, list[dict[str, object]]] = {}
    for entity_id, attribute, value in zip(step.entity_ids, step.attributes, step.values, strict=True):
        item = {"id": entity_id, _term(attribute): _number(float(value)), "dateObserved": when}
        by_type.setdefault(types[entity_id], []).append(item)
    for type_term, items in by_type.items():
        for at in range(0, len(items), MAX_READINGS):
            part = items[at : at + MAX_READINGS]
            yield topic_for(tenant, type_term, BATCH_SEGMENT), orjson.dumps(part), len(part)


class _Publisher:
    """A QoS 1 publisher that keeps at most `window` messages unacknowledged."""

    def __init__(self, url: str, window: int, client_id: str) -> None:
        host, port = parse_url(url)
        self._window = window
        self._cond = threading.Condition()
        self._outstanding = 0
        self.acked = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(min(window, 100))  # more in flight makes paho slower, not faster
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, *_: object) -> None:
        with self._cond:
            self._outstanding -= 1
            self.acked += 1
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        with self._cond:
            while self._outstanding >= self._window:
                self._cond.wait(1.0)
            self._outstanding += 1
        self.client.publish(topic, payload, qos=1)

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._outstanding > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the broker did not acknowledge {self._outstanding} messages in {timeout} s")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish(
    publisher: _Publisher, step: _Step, types: dict[str, str], tenant: str, batch: bool, room: int | None
) -> tuple[int, int]:
    """Publish one step's messages, at most `room` of them (None: all); (messages, readings) published."""
    messages = readings = 0
    for topic, payload, count in _messages(step, types, tenant, batch):
        if room is not None and messages >= room:
            break
        publisher.publish(topic, payload)
        messages += 1
        readings += count
    return messages, readings


def _pause(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep; True when asked to stop meanwhile."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


WEEK = np.timedelta64(7, "D")


def _utc_now64() -> np.datetime64:
    return np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us")


def _shifted(steps: list[_Step], shift: np.timedelta64) -> list[_Step]:
    return [step.at(step.observed_at + shift) for step in steps]


def _ending_now(steps: list[_Step], per_step: list[int], limit: int | None, speed: float) -> np.timedelta64:
    """The shift that makes the last step replayed (within `limit` messages) observed when a replay at `speed`
    starting now reaches it. Step k then lies (span - (t_k - t_0)) x (1 - 1/speed) behind the clock: never ahead
    at speed 1 or more; slower than real time, the first step is observed now and the rest fall behind too."""
    last = len(steps) - 1
    if limit is not None:
        sent = np.cumsum(per_step)
        last = min(last, int(np.searchsorted(sent, limit)))  # the step whose messages reach the limit
    span = (steps[last].observed_at - steps[0].observed_at) / np.timedelta64(1, "s")
    behind = span * (1 - 1 / speed) if speed >= 1 else 0.0
    return _utc_now64() - np.timedelta64(int(behind * 1_000_000), "us") - steps[0].observed_at


def live_steps(steps: list[_Step], start: np.datetime64, zone: ZoneInfo | None = None) -> Iterator[_Step]:
    """The recording as this week's sensors, from `start` on and without end: every step observed a whole
    number of weeks after it was recorded (the recording's length rounded up to whole weeks is the cycle), so
    a reading falls on the weekday and time of day it was taken on: rush hours come at rush hour, and a model
    trained on the recording reads its time features as they were. The same instants on every run, so a
    restarted demo republishes what the hub already holds (skipped as duplicates) and never a second copy
    shifted a little.

    With the recording's `zone`, the weeks are the zone's: a reading taken at 08:00 local time in March
    (standard time) is replayed at 08:00 local time in July (daylight time), not at 09:00. Across a change of
    clocks a step that would not come after the one before (the hour that repeats, or the one a nonexistent
    local time maps onto) is left out, so instants only go forward."""
    if not steps:
        return
    first = steps[0].observed_at
    gap = steps[1].observed_at - first if len(steps) > 1 else np.timedelta64(5, "m")
    cycle = WEEK * max(1, math.ceil((steps[-1].observed_at - first + gap) / WEEK))
    shifted = _in_zone(steps, zone) if zone is not None else None
    k = int((start - first) // cycle) - (1 if zone is not None else 0)  # a zone moves instants by up to a day
    last: np.datetime64 | None = None
    while True:
        for n, step in enumerate(steps):
            observed = step.observed_at + cycle * k if shifted is None else shifted(n, cycle * k)
            if observed >= start and (last is None or observed > last):
                last = observed
                yield step.at(observed)
        k += 1


def _in_zone(steps: list[_Step], zone: ZoneInfo) -> Callable[[int, np.timedelta64], np.datetime64]:
    """Step n's instant `shift` (whole weeks) later on the zone's wall clock: the recorded local time plus the
    shift, read in the zone again (zoneinfo's first occurrence, fold 0, for a repeated or skipped time)."""
    local = [
        step.observed_at.astype("datetime64[us]").item().replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
        for step in steps
    ]

    def at(n: int, shift: np.timedelta64) -> np.datetime64:
        wall = local[n] + shift.astype("timedelta64[us]").item()
        return np.datetime64(wall.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None), "us")

    return at


def replay_live(
    dataset: str,
    datasets_dir: Path,
    url: str,
    *,
    stop: threading.Event,
    catch_up_hours: float = 6.0,
    on_caught_up: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Publish `dataset` as live sensors until `stop`: each reading at its time of week (`live_steps`), when
    the clock reaches it, never ahead of it, so what the hub holds, the alerts raised on it (CAP times) and
    the forecasts issued from it are about now, not hours ahead. The last `catch_up_hours` are published at
    once on start, as gateway batches (one message per type and step): the broker queues at most
    `MAX_QUEUED_MESSAGES` for a subscriber and drops the rest, and a week of single readings is 417k messages,
    while ingest may still be starting. From then on one message per reading, as sensors send them.
    `on_caught_up(readings)` is called when the replay reaches the clock."""
    types, steps = _steps(dataset, datasets_dir, None)
    catch_up = np.timedelta64(int(catch_up_hours * 3_600_000_000), "us")
    timeline = live_steps(steps, _utc_now64() - catch_up, ZONES.get(dataset))
    publisher = _Publisher(url, 1000, f"polis-replay-{uuid.uuid4().hex[:8]}")
    messages = readings = done_steps = 0
    first = last = None
    began = time.monotonic()
    caught_up = False
    try:
        for step in timeline:
            if stop.is_set():
                break
            wait = (step.observed_at - _utc_now64()) / np.timedelta64(1, "s")
            if wait > 0:
                if not caught_up:
                    caught_up = True
                    publisher.drain(timeout=60.0)
                    if on_caught_up is not None:
                        on_caught_up(readings)
                if _pause(float(wait), stop):
                    break
            sent, read = _publish(publisher, step, types, "", not caught_up, None)
            messages, readings = messages + sent, readings + read
            first = first or _iso(step.observed_at)
            last = _iso(step.observed_at)
            done_steps += 1
        publisher.drain(timeout=10.0)
    finally:
        publisher.close()
    return ReplaySummary(dataset, messages, readings, done_steps, time.monotonic() - began, first, last)


def replay(
    dataset: str,
    datasets_dir: Path,
    url: str,
    speed: float,
    *,
    tenant: str = "default",
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
    start: datetime | str | None = None,
    batch: bool = False,
    window: int = 1000,
    stop: threading.Event | None = None,
    rebase: datetime | None = None,
    ending_now: bool = False,
) -> ReplaySummary:
    """Publish `dataset`'s readings to the broker at `url`, `speed`× real time (0 or inf: no pauses).

    `limit`: at most this many messages; `start`: skip readings observed before this instant;
    `rebase`: shift every observation time so the first replayed step is observed at this instant (readings
    after the ingested copy of the dataset, which keeps its original times);
    `ending_now` (`polis replay --now`): shift them instead so the last replayed step is observed as the replay
    reaches it: the recorded readings arrive as today's and, faster than real time, catch up with the clock and
    are never ahead of it (alert rules refuse readings dated ahead of the clock, polis.alerts.evaluate.MAX_AHEAD);
    the demo's live sensors are `replay_live`;
    `progress(done, total)` is called after each time step, in messages; `stop` ends the replay early.
    The tenant is the topic's segment: "default" (or "") is the default tenant."""
    if dataset not in REPLAYABLE:
        raise ValueError(f"replay takes a sensor dataset: {', '.join(REPLAYABLE)}; got {dataset!r}")
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        start = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
    tenant = "" if tenant == "default" else tenant
    types, steps = _steps(dataset, datasets_dir, start)
    per_step = [step.entity_ids.size if not batch else len({types[e] for e in step.entity_ids}) for step in steps]
    total = sum(per_step) if limit is None else min(limit, sum(per_step))
    report = progress or (lambda done, total: None)
    paced = speed > 0 and math.isfinite(speed)
    if steps and ending_now:
        steps = _shifted(steps, _ending_now(steps, per_step, limit, speed if paced else math.inf))
    elif steps and rebase is not None:
        steps = _shifted(steps, np.datetime64(rebase.astimezone(UTC).replace(tzinfo=None), "us") - steps[0].observed_at)
    publisher = _Publisher(url, window, f"polis-replay-{uuid.uuid4().hex[:8]}")
    messages = readings = done_steps = 0
    first = last = None
    began = time.monotonic()
    try:
        report(0, total)
        for step in steps:
            if (limit is not None and messages >= limit) or (stop is not None and stop.is_set()):
                break
            if paced:
                offset = (step.observed_at - steps[0].observed_at) / np.timedelta64(1, "s") / speed
                wait = began + offset - time.monotonic()
                if wait > 0 and _pause(wait, stop):
                    break
            sent, read = _publish(publisher, step, types, tenant, batch, None if limit is None else limit - messages)
            messages, readings = messages + sent, readings + read
            first = first or _iso(step.observed_at)
            last = _iso(step.observed_at)
            done_steps += 1
            report(messages, total)
        publisher.drain(timeout=60.0)
    finally:
        publisher.close()
    return ReplaySummary(dataset, messages, readings, done_steps, time.monotonic() - began, first, last)
