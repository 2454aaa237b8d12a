"""`polis replay --now` faster than real time: the recording is shifted to end as the replay ends, so its
readings catch up with the clock and are never ahead of it (alert rules refuse readings over 5 minutes ahead:
at 60x with the first reading observed now, every alert rule stopped taking them after about 5 seconds)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import Broker
from polis.ingest.replay import replay
from polis.settings import Settings

SENSORS = 207  # Los-loop: one message per sensor and 5-minute step


def test_a_fast_replay_ending_now_is_never_ahead_of_the_clock(broker: Broker) -> None:
    received: list[tuple[datetime, float]] = []
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        observed = orjson.loads(message.payload)["dateObserved"]
        received.append((datetime.fromisoformat(observed.replace("Z", "+00:00")), time.time()))

    subscriber.on_message = on_message
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe("polis/#", qos=1)
    subscriber.loop_start()
    try:
        time.sleep(0.5)  # subscribed before anything is published
        summary = replay("los-loop", Settings().datasets_dir, broker.url, 300.0, limit=4 * SENSORS, ending_now=True)
        deadline = time.monotonic() + 10
        while len(received) < 4 * SENSORS and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    assert summary.steps == 4 and len(received) == 4 * SENSORS
    # 4 steps of 5 minutes at 300x: 3 s of replay for 15 minutes of readings, the first ~15 minutes back
    assert all(observed.timestamp() <= arrived + 0.5 for observed, arrived in received)
    first, last = min(t for t, _ in received), max(t for t, _ in received)
    assert (last - first).total_seconds() == 15 * 60
    assert abs((datetime.now(UTC) - last).total_seconds()) < 10  # the last reading is about now
