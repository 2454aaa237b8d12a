"""MQTT ingest against a real Mosquitto: readings land in the hub, redeliveries are stored once, bad
messages become dead letters without stopping the stream, broker restarts and SIGKILLed ingest processes
lose nothing that was acknowledged, and a replayed dataset arrives."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from polis.ingest.broker import Broker
from polis.ingest.messages import MessageParser, MessageRejected
from polis.ingest.mqtt import MqttIngestor, parser_for
from polis.ingest.replay import replay
from polis.ngsi_ld.events import EntityChange
from polis.platform import Platform
from polis.privacy.refusal import kept_payload
from polis.settings import Settings
from polis.store.base import TemporalQuery
from polis.store.duckdb_ import DuckDBStore

SDM = "https://smartdatamodels.org/dataModel.Transportation/"
SPEED = SDM + "averageVehicleSpeed"
PEOPLE = SDM + "peopleCount"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def at(k: int) -> str:
    return (T0 + timedelta(minutes=5 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)



class Publisher:
    """A QoS 1 publisher that remembers which messages the broker acknowledged (PUBACK)."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(50)
        self.acked: set[int] = set()
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._lock:
            self.acked.add(mid)

    def send(self, topic: str, payload: bytes | str) -> int:
        return int(self.client.publish(topic, payload, qos=1).mid)

    def send_all(self, messages: list[tuple[str, bytes | str]], timeout: float = 15.0) -> None:
        mids = [self.send(t, p) for t, p in messages]
        wait_until(lambda: set(mids) <= self.acked, timeout, "PUBACKs from the broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def hub(broker: Broker, tenant: str) -> Iterator[tuple[Platform, MqttIngestor]]:
    platform = Platform.in_memory()
    ingestor = MqttIngestor(
        platform, broker.url, client_id=f"ingest-{tenant}", topic=f"polis/{tenant}/#", batch_wait_s=0.01
    )
    ingestor.start(wait_s=10)
    yield platform, ingestor
    ingestor.stop()
    platform.close()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(broker)
    yield pub
    pub.close()


def history(platform: Platform, tenant: str, entity_id: str, attr: str) -> list[tuple[str, Any]]:
    found = platform.store.temporal(tenant, [entity_id], TemporalQuery(attrs=(attr,)))
    slot = found.get(entity_id, {}).get(attr)
    return [(i["observedAt"], i["value"]) for i in slot.instances] if slot else []


# -- the three payload forms --------------------------------------------------------------------------


def test_fragment_key_values_and_gateway_batch_land_in_state_and_history(
    hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    platform, ingestor = hub
    changes: list[EntityChange] = []
    platform.bus.subscribe(changes.append)
    crowd = "urn:ngsi-ld:CrowdFlowObserved:gate-1"
    road = "urn:ngsi-ld:TrafficFlowObserved:road-"
    publisher.send_all(
        [
            (
                f"polis/{tenant}/CrowdFlowObserved/{crowd}",
                json.dumps({"peopleCount": {"type": "Property", "value": 5, "observedAt": at(0), "unitCode": "C62"}}),
            ),
            (f"polis/{tenant}/CrowdFlowObserved/{crowd}", json.dumps({"peopleCount": 8, "dateObserved": at(1)})),
            (
                f"polis/{tenant}/TrafficFlowObserved/_batch",
                json.dumps(
                    [
                        {"id": road + "1", "averageVehicleSpeed": 61.5, "dateObserved": at(0)},
                        {"id": road + "2", "averageVehicleSpeed": {"value": 42.0, "observedAt": at(0)}},
                        {"id": road + "1", "averageVehicleSpeed": 58.0, "dateObserved": at(1)},
                    ]
                ),
            ),
        ]
    )
    wait_until(lambda: ingestor.metrics()["committed"] == 3, what="3 committed messages")
    terms = ingestor.parser.terms
    current = platform.entities.retrieve(tenant, crowd, terms, fmt="concise")
    # The key-values reading (newest) is current; it keeps the unit the normalized one brought.
    assert current["type"] == "CrowdFlowObserved"
    assert current["peopleCount"] == {"value": 8, "observedAt": at(1), "unitCode": "C62"}
    assert current["dateObserved"] == {"@type": "DateTime", "@value": at(1)}
    assert history(platform, tenant, crowd, PEOPLE) == [(at(0), 5), (at(1), 8)]
    assert history(platform, tenant, road + "1", SPEED) == [(at(0), 61.5), (at(1), 58.0)]
    assert history(platform, tenant, road + "2", SPEED) == [(at(0), 42.0)]
    assert platform.entities.retrieve(tenant, road + "1", terms, fmt="keyValues")["averageVehicleSpeed"] == 58.0
    assert {c.entity_id for c in changes} == {crowd, road + "1", road + "2"}
    assert all(c.tenant == tenant and c.entity is not None for c in changes)


def test_a_late_reading_goes_to_history_but_not_current_state(
    hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    platform, ingestor = hub
    eid = "urn:ngsi-ld:TrafficFlowObserved:late"
    topic = f"polis/{tenant}/TrafficFlowObserved/{eid}"
    publisher.send_all([(topic, json.dumps({"averageVehicleSpeed": 50, "dateObserved": at(5)}))])
    wait_until(lambda: ingestor.metrics()["committed"] == 1)
    publisher.send_all([(topic, json.dumps({"averageVehicleSpeed": 70, "dateObserved": at(2)}))])
    wait_until(lambda: ingestor.metrics()["committed"] == 2)
    current = platform.entities.retrieve(tenant, eid, ingestor.parser.terms, fmt="keyValues")
    assert current["averageVehicleSpeed"] == 50 and current["dateObserved"]["@value"] == at(5)
    assert history(platform, tenant, eid, SPEED) == [(at(2), 70), (at(5), 50)]


def test_a_reading_for_an_entity_of_another_type_is_a_dead_letter(
    hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    platform, ingestor = hub
    eid = "urn:ngsi-ld:Thing:1"
    publisher.send_all(
        [(f"polis/{tenant}/TrafficFlowObserved/{eid}", json.dumps({"averageVehicleSpeed": 50, "dateObserved": at(0)}))]
    )
    wait_until(lambda: ingestor.metrics()["committed"] == 1)
    publisher.send_all(
        [
            (f"polis/{tenant}/CrowdFlowObserved/{eid}", json.dumps({"peopleCount": 3, "dateObserved": at(1)})),
            (
                f"polis/{tenant}/CrowdFlowObserved/_batch",
                json.dumps(
                    [  # one message, one new id, two types
                        {"id": "urn:ngsi-ld:Thing:2", "peopleCount": 3, "dateObserved": at(1)},
                        {
                            "id": "urn:ngsi-ld:Thing:2",
                            "type": "TrafficFlowObserved",
                            "averageVehicleSpeed": 3,
                            "dateObserved": at(1),
                        },
                    ]
                ),
            ),
        ]
    )
    wait_until(lambda: ingestor.metrics()["dead_lettered"] == 2)
    reasons = sorted(d.reason for d in platform.store.dead_letters("mqtt"))
    assert all("exists with type" in r for r in reasons), reasons
    assert platform.store.get(tenant, ["urn:ngsi-ld:Thing:2"]) == {}
    assert history(platform, tenant, eid, PEOPLE) == []


# -- exactly once ---------------------------------------------------------------------------------------


def test_the_same_message_twice_is_stored_once(
    hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    platform, ingestor = hub
    eid = "urn:ngsi-ld:TrafficFlowObserved:dup"
    body = json.dumps({"averageVehicleSpeed": 50, "observedAt": at(0)})
    message = (f"polis/{tenant}/TrafficFlowObserved/{eid}", body)
    publisher.send_all([message, message])
    wait_until(lambda: ingestor.metrics()["received"] == 2)
    publisher.send_all([message])
    wait_until(lambda: ingestor.metrics()["received"] == 3 and ingestor.metrics()["in_flight"] == 0)
    assert history(platform, tenant, eid, SPEED) == [(at(0), 50)]
    assert ingestor.metrics()["duplicates"] == 2 and ingestor.metrics()["committed"] == 1


def test_committed_but_unacknowledged_messages_are_redelivered_and_stored_once(
    broker: Broker, publisher: Publisher, tenant: str
) -> None:
    """Commit, then lose the connection before the PUBACKs: the broker redelivers, receipts recognise them."""
    platform = Platform.in_memory()
    client_id, topic = f"ingest-{tenant}", f"polis/{tenant}/#"
    first = MqttIngestor(platform, broker.url, client_id=client_id, topic=topic, batch_wait_s=0.01)
    first._ack = lambda group: None  # type: ignore[method-assign]  # the crash window: committed, never acked
    first.start(wait_s=10)
    eids = [f"urn:ngsi-ld:TrafficFlowObserved:re-{i}" for i in range(5)]
    publisher.send_all(
        [
            (f"polis/{tenant}/TrafficFlowObserved/{e}", json.dumps({"averageVehicleSpeed": i, "observedAt": at(i)}))
            for i, e in enumerate(eids)
        ]
    )
    wait_until(lambda: first.metrics()["committed"] == 5)
    first.stop()
    second = MqttIngestor(platform, broker.url, client_id=client_id, topic=topic, batch_wait_s=0.01)
    second.start(wait_s=10)
    try:
        wait_until(lambda: second.metrics()["duplicates"] == 5, what="the 5 redeliveries")
        assert second.metrics()["committed"] == 0
        assert [history(platform, tenant, e, SPEED) for e in eids] == [[(at(i), i)] for i in range(5)]
    finally:
        second.stop()
        platform.close()
    platform = Platform.in_memory()
    third = MqttIngestor(platform, broker.url, client_id=client_id, topic=topic)
    third.start(wait_s=10)
    try:  # the redeliveries were acknowledged this time: nothing comes back again
        time.sleep(0.3)
        assert third.metrics()["received"] == 0
    finally:
        third.stop()
        platform.close()


# -- dead letters -----------------------------------------------------------------------------------------


def _bad_messages(rng: random.Random, tenant: str) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason prefix) for a fuzzed mix of bad input."""
    good_topic = f"polis/{tenant}/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:bad"
    out: list[tuple[str, bytes, str]] = []
    for _ in range(6):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        out.append((good_topic, b"\xff\xfe" + junk, "invalid UTF-8"))
        text = rng.choice(['{"averageVehicleSpeed": ', "[{", "nul", '{"a" 1}', "", "{'single': 1}"])
        out.append((good_topic, text.encode(), "invalid JSON"))
    for value in ["fast", True, [1, 2], {"nested": 1}, "12"]:
        out.append(
            (good_topic, json.dumps({"averageVehicleSpeed": value, "observedAt": at(0)}).encode(), "wrong value type")
        )
    for type_name in ["Unicorn", "trafficflowobserved", "Building"]:
        out.append(
            (
                f"polis/{tenant}/{type_name}/urn:ngsi-ld:X:1",
                json.dumps({"averageVehicleSpeed": 1, "observedAt": at(0)}).encode(),
                "unknown entity type",
            )
        )
    for topic in [
        f"polis/{tenant}",
        f"polis/{tenant}/TrafficFlowObserved",
        f"polis/{tenant}/TrafficFlowObserved/urn:x:1/extra",
    ]:
        out.append((topic, b'{"averageVehicleSpeed": 1, "observedAt": "2024-05-01T08:00:00Z"}', "wrong topic"))
    out.append((f"polis/{tenant}/TrafficFlowObserved/not-a-uri", b'{"averageVehicleSpeed": 1}', "invalid entity id"))
    huge = json.dumps({"averageVehicleSpeed": 1, "observedAt": at(0), "note": "x" * (300 * 1024)}).encode()
    out.append((good_topic, huge, "payload too large"))
    out.append((good_topic, b'{"averageVehicleSpeed": 1}', "missing observedAt"))
    out.append((good_topic, json.dumps({"plate": "B-XY 123", "dateObserved": at(0)}).encode(), "privacy:"))
    out.append(
        (
            good_topic,
            json.dumps({"averageVehicleSpeed": 1, "image": {"url": "x"}, "dateObserved": at(0)}).encode(),
            "privacy:",
        )
    )
    out.append((f"polis/{tenant}/TrafficFlowObserved/_batch", b"[]", "empty batch"))
    out.append((good_topic, json.dumps({"bad name": 1, "observedAt": at(0)}).encode(), "invalid attribute name"))
    out.append(
        (
            good_topic,
            json.dumps({"averageVehicleSpeed": 1, "dateObserved": "yesterday"}).encode(),
            "dateObserved must be an ISO 8601",
        )
    )
    # The same topic and payload twice is one message (the second is a redelivery): keep each once.
    return list({(t, p): (t, p, r) for t, p, r in out}.values())


def test_fuzzed_bad_messages_become_dead_letters_and_every_valid_one_is_stored(
    hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    platform, ingestor = hub
    rng = random.Random(20240501)
    bad = _bad_messages(rng, tenant)
    good = [
        (
            f"polis/{tenant}/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:ok-{i % 7}",
            json.dumps({"averageVehicleSpeed": float(i), "dateObserved": at(i)}).encode(),
            "",
        )
        for i in range(60)
    ]
    stream = bad + good
    rng.shuffle(stream)
    publisher.send_all([(t, p) for t, p, _ in stream])
    wait_until(
        lambda: ingestor.metrics()["committed"] + ingestor.metrics()["dead_lettered"] == len(stream),
        what="every message handled",
    )
    letters = platform.store.dead_letters("mqtt", limit=1000)
    assert len(letters) == len(bad) == ingestor.metrics()["dead_lettered"]
    reasons = {(d.topic, d.payload): d.reason for d in letters}
    for topic, payload, expected in bad:
        reason = reasons[(topic, kept_payload(payload, expected))]
        assert expected in reason, (payload[:60], reason)
    assert all(len(d.payload) <= 4200 for d in letters)  # a huge payload is kept, truncated
    for k in range(7):
        eid = f"urn:ngsi-ld:TrafficFlowObserved:ok-{k}"
        assert history(platform, tenant, eid, SPEED) == [(at(i), float(i)) for i in range(k, 60, 7)]


def test_an_integer_beyond_a_double_is_stored_exactly(
    hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    """A key-values reading skips the codec when its values are plain numbers; 2**53 + 1 is not (a double
    would round it), so it takes the full path and history keeps it as written."""
    platform, _ = hub
    eid = "urn:ngsi-ld:TrafficFlowObserved:exact"
    topic = f"polis/{tenant}/TrafficFlowObserved/{eid}"
    publisher.send_all([(topic, json.dumps({"intensity": v, "dateObserved": at(k)}))
                        for k, v in enumerate([2**53, 2**53 + 1, 7])])
    intensity = SDM + "intensity"
    wait_until(lambda: len(history(platform, tenant, eid, intensity)) == 3, what="three readings")
    got = history(platform, tenant, eid, intensity)
    assert got == [(at(0), 2**53), (at(1), 2**53 + 1), (at(2), 7)]
    assert all(type(v) is int for _, v in got)


def test_a_message_over_the_broker_limit_is_never_acknowledged(
    broker: Broker, hub: tuple[Platform, MqttIngestor], publisher: Publisher, tenant: str
) -> None:
    """Mosquitto refuses a packet over its limit before the QoS 1 flow completes: the publisher is not told
    "received" for a message Polis never sees (with `message_size_limit` it was), and the stream goes on."""
    platform, _ = hub
    topic = f"polis/{tenant}/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:big"
    oversize = Publisher(broker)
    try:
        mid = oversize.send(topic, json.dumps({"averageVehicleSpeed": 1, "note": "x" * (2 << 20)}))
        wait_until(lambda: "disconnected due to oversize packet" in broker.log_tail(100_000), what="refusal")
        time.sleep(0.5)  # a PUBACK, had one been sent, would have arrived with the disconnection
        assert mid not in oversize.acked
    finally:
        oversize.close()
    publisher.send_all([(topic, json.dumps({"averageVehicleSpeed": 2.0, "dateObserved": at(0)}))])
    wait_until(lambda: bool(history(platform, tenant, "urn:ngsi-ld:TrafficFlowObserved:big", SPEED)), what="store")
    assert history(platform, tenant, "urn:ngsi-ld:TrafficFlowObserved:big", SPEED) == [(at(0), 2.0)]


def test_a_message_the_store_cannot_take_is_a_dead_letter_and_the_rest_flows(
    broker: Broker, publisher: Publisher, tenant: str
) -> None:
    platform = Platform.in_memory()
    real_write = platform.store.write

    def picky_write(tenant: str, upserts: Any = (), *args: Any, **kwargs: Any) -> None:
        if any(e["id"].endswith("poison") for e in upserts):
            raise RuntimeError("cannot store this one")
        real_write(tenant, upserts, *args, **kwargs)

    platform.store.write = picky_write  # type: ignore[method-assign]
    ingestor = MqttIngestor(platform, broker.url, client_id=f"ingest-{tenant}", topic=f"polis/{tenant}/#")
    ingestor.start(wait_s=10)
    try:
        body = json.dumps({"averageVehicleSpeed": 1, "observedAt": at(0)})
        ids = ["urn:x:poison", "urn:x:ok-1", "urn:x:ok-2"]
        publisher.send_all([(f"polis/{tenant}/TrafficFlowObserved/{e}", body) for e in ids])
        wait_until(lambda: ingestor.metrics()["acked"] == 3)
        assert [d.reason for d in platform.store.dead_letters("mqtt")] == [
            "the store rejected the write: cannot store this one"
        ]
        assert [len(history(platform, tenant, e, SPEED)) for e in ids] == [0, 1, 1]
    finally:
        ingestor.stop()
        platform.close()


# -- flow control, broker restarts ---------------------------------------------------------------------


def test_a_slow_store_is_throttled_through_the_broker_not_buffered(
    broker: Broker, publisher: Publisher, tenant: str
) -> None:
    platform = Platform.in_memory()
    ingestor = MqttIngestor(
        platform,
        broker.url,
        client_id=f"ingest-{tenant}",
        topic=f"polis/{tenant}/#",
        batch_max=20,
        batch_wait_s=0.005,
        max_pending=40,
    )
    real_write = platform.store.write

    def slow_write(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.02)
        real_write(*args, **kwargs)

    platform.store.write = slow_write  # type: ignore[method-assign]
    ingestor.start(wait_s=10)
    pending: list[int] = []
    lags: list[float] = []
    try:
        publisher.send_all(
            [
                (
                    f"polis/{tenant}/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:s{i % 9}",
                    json.dumps({"averageVehicleSpeed": i, "dateObserved": at(i)}),
                )
                for i in range(600)
            ]
        )
        # The broker acknowledged all 600 to the publisher and holds what the slow hub has not taken.
        assert ingestor.metrics()["received"] < 300
        while ingestor.metrics()["committed"] < 600:
            m = ingestor.metrics()
            pending.append(m["pending"])
            lags.append(m["lag_s"])
            time.sleep(0.005)
        assert max(pending) <= 40  # the in-process queue stays bounded
        assert max(lags) > 0.05  # and the lag shows
        assert platform.store.history_count(tenant) == 600
    finally:
        ingestor.stop()
        platform.close()


def test_a_broker_restart_mid_stream_loses_nothing(broker: Broker, tenant: str) -> None:
    platform = Platform.in_memory()
    ingestor = MqttIngestor(
        platform, broker.url, client_id=f"ingest-{tenant}", topic=f"polis/{tenant}/#", batch_wait_s=0.01
    )
    ingestor.start(wait_s=10)
    publisher = Publisher(broker)
    topic = f"polis/{tenant}/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:r"
    sent: dict[int, int] = {}  # mid -> reading number
    try:
        for i in range(300):
            sent[publisher.send(topic + str(i % 5), json.dumps({"averageVehicleSpeed": i, "dateObserved": at(i)}))] = i
            if i == 150:
                broker.restart()
            time.sleep(0.002)
        wait_until(lambda: len(publisher.acked) == 300, 30, "the publisher's messages acknowledged")
        wait_until(lambda: platform.store.history_count(tenant) >= 300, 30, "all readings stored")
        time.sleep(0.2)
        stored = sorted(
            v for e in range(5) for _, v in history(platform, tenant, f"{topic.rsplit('/', 1)[1]}{e}", SPEED)
        )
        assert stored == sorted(sent[m] for m in publisher.acked)
        assert ingestor.metrics()["connects"] >= 2
    finally:
        publisher.close()
        ingestor.stop()
        platform.close()


# -- replay ---------------------------------------------------------------------------------------------


def test_a_replayed_slice_of_los_loop_lands_in_the_hub(
    hub: tuple[Platform, MqttIngestor], tenant: str, broker: Broker
) -> None:
    platform, ingestor = hub
    summary = replay("los-loop", platform.settings.datasets_dir, broker.url, 0, tenant=tenant, limit=414)
    assert (summary.messages, summary.readings, summary.steps) == (414, 414, 2)
    assert (summary.first, summary.last) == ("2012-03-01T08:00:00Z", "2012-03-01T08:05:00Z")
    wait_until(lambda: ingestor.metrics()["committed"] == 414, what="the replayed readings")
    assert platform.store.entity_count(tenant) == 207
    eid = "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"
    assert [t for t, _ in history(platform, tenant, eid, SPEED)] == ["2012-03-01T08:00:00Z", "2012-03-01T08:05:00Z"]
    batched = replay(
        "los-loop",
        platform.settings.datasets_dir,
        broker.url,
        0,
        tenant=tenant,
        limit=1,
        batch=True,
        start="2012-03-01T08:10:00Z",
    )
    assert (batched.messages, batched.readings) == (1, 207)
    wait_until(lambda: platform.store.history_count(tenant) == 414 + 207, what="the batched step")


# -- the parser alone -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parser() -> Any:
    platform = Platform.in_memory()
    yield parser_for(platform)
    platform.close()


@settings(deadline=None, max_examples=150)
@given(
    values=st.dictionaries(
        st.sampled_from(["averageVehicleSpeed", "intensity", "occupancy", "laneId", "congested", "flow"]),
        st.one_of(
            st.integers(-(10**6), 10**6),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
            st.text(max_size=3),
        ),
        min_size=1,
    )
)
def test_the_plain_number_shortcut_gives_what_the_codec_gives(parser: Any, values: dict[str, Any]) -> None:
    """Items of a layout seen before skip the codec when every value is a plain number: same result."""
    fresh = MessageParser(parser.terms, ["TrafficFlowObserved"], value_types=parser.value_types)
    topic = "polis/default/TrafficFlowObserved/urn:ngsi-ld:TrafficFlowObserved:1"
    payload = json.dumps({**values, "dateObserved": at(0)}).encode()

    def outcome() -> Any:
        try:
            return [r.attributes for r in fresh.parse(topic, payload, "2026-01-01T00:00:00Z")]
        except MessageRejected as why:
            return why.reason

    first, second = outcome(), outcome()  # the second goes through the shortcut when it applies
    assert first == second
    warm = MessageParser(parser.terms, ["TrafficFlowObserved"], value_types=parser.value_types)
    layout = {k: (True if k == "congested" else 1) for k in values}  # accepted: teaches the parser the layout
    warm.parse(topic, json.dumps(layout | {"dateObserved": at(0)}).encode(), "x")
    try:
        again = [r.attributes for r in warm.parse(topic, payload, "2026-01-01T00:00:00Z")]
    except MessageRejected as why:
        again = why.reason  # type: ignore[assignment]
    assert again == first


@settings(deadline=None, max_examples=100)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"value": st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=3))},
            optional={
                "observedAt": st.sampled_from(["2024-05-01T08:00:00Z", "2024-05-01T08:00:00.250000Z"]),
                "datasetId": st.sampled_from(["urn:ngsi-ld:Dataset:a", "urn:ngsi-ld:Dataset:b"]),
                "unitCode": st.just("KMH"),
            },
        ),
        max_size=3,
    )
)
def test_the_ingest_history_is_history_of(instances: list[dict[str, Any]]) -> None:
    from polis.ingest.mqtt import _history
    from polis.ngsi_ld.entities import history_of

    attributes = {SPEED: [{"type": "Property", **i, "createdAt": "c", "modifiedAt": "m"} for i in instances]}
    assert _history("urn:x:1", attributes, {}) == history_of({"id": "urn:x:1", **attributes})


def test_topic_scheme_and_limits(parser: Any) -> None:
    readings = parser.parse(
        "polis/default/CrowdFlowObserved/urn:ngsi-ld:CrowdFlowObserved:1",
        b'{"peopleCount": 3, "dateObserved": "2024-05-01T10:00:00+02:00"}',
        "now",
    )
    assert readings[0].tenant == "" and readings[0].attributes[PEOPLE][0]["observedAt"] == "2024-05-01T08:00:00Z"
    small = MessageParser(parser.terms, ["CrowdFlowObserved"], max_readings=3)
    with pytest.raises(MessageRejected, match="too many readings"):
        small.parse(
            "polis/default/CrowdFlowObserved/_batch",
            json.dumps([{"id": "urn:x:1", "peopleCount": 1, "observedAt": at(0)}] * 4).encode(),
            "now",
        )
    with pytest.raises(MessageRejected, match="too many readings"):  # counted in values, not only items
        small.parse(
            "polis/default/CrowdFlowObserved/_batch",
            json.dumps(
                [{"id": "urn:x:1", "peopleCount": 1, "peopleCountTowards": 1, "observedAt": at(0)}] * 2
            ).encode(),
            "now",
        )
    with pytest.raises(MessageRejected, match="payload too large"):
        parser.parse("polis/default/CrowdFlowObserved/urn:x:1", b" " * (256 * 1024 + 1), "now")
    deep = b'{"peopleCount": 3, "note": ' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    with pytest.raises(MessageRejected, match="levels deep"):  # once failed only in the store, slowing its batch
        parser.parse("polis/default/CrowdFlowObserved/urn:x:1", deep, "now")
    for identifying in ("urn:ngsi-ld:CrowdFlowObserved:gina@example.org", "urn:ngsi-ld:Device:a4:5e:60:12:9b:01"):
        with pytest.raises(MessageRejected, match="privacy: the entity id in the topic"):  # before the payload
            parser.parse(f"polis/default/CrowdFlowObserved/{identifying}", b'{"peopleCount": 3}', "now")
    with pytest.raises(MessageRejected, match="privacy: the tenant in the topic is refused by rule") as refused:
        parser.parse("polis/00-1A-2B-3C-4D-5E/CrowdFlowObserved/urn:x:1", b'{"peopleCount": 3}', "now")
    assert "1A-2B" not in refused.value.reason  # kept with the dead letter: the rule, never the name
    dated = parser.parse("polis/20261127-2150/CrowdFlowObserved/urn:x:1", b'{"peopleCount": 3, "dateObserved": '
                         b'"2024-05-01T08:00:00Z"}', "now")
    assert dated[0].tenant == "20261127-2150"  # a date-stamped tenant is no device identifier
    with pytest.raises(MessageRejected, match=r"wrong topic: tenant 'a\.b' must be 1-64"):
        parser.parse("polis/a.b/CrowdFlowObserved/urn:x:1", b'{"peopleCount": 3}', "now")
    with pytest.raises(MessageRejected, match="differs from the topic"):
        parser.parse("polis/default/CrowdFlowObserved/urn:x:1", b'{"id": "urn:x:2", "peopleCount": 1}', "now")
    with pytest.raises(MessageRejected, match="needs its entity 'id'"):
        parser.parse(
            "polis/default/CrowdFlowObserved/_batch",
            b'[{"peopleCount": 1, "observedAt": "2024-05-01T08:00:00Z"}]',
            "now",
        )
    with pytest.raises(MessageRejected, match="item 1: wrong value type"):
        parser.parse(
            "polis/default/CrowdFlowObserved/_batch",
            json.dumps(
                [
                    {"id": "urn:x:1", "peopleCount": 1, "observedAt": at(0)},
                    {"id": "urn:x:2", "peopleCount": 1.5, "observedAt": at(0)},
                ]
            ).encode(),
            "now",
        )


# -- crash safety: SIGKILL the ingest process again and again ---------------------------------------------


def _start_ingest(url: str, data_dir: Path, tenant: str) -> subprocess.Popen[str]:
    env = {**os.environ, "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    with (data_dir.parent / "ingest.log").open("a") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "polis.ingest.mqtt",
                "--url",
                url,
                "--data-dir",
                str(data_dir),
                "--client-id",
                f"crash-{tenant}",
                "--topic",
                f"polis/{tenant}/#",
                "--batch-wait-ms",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # "ready" once connected (the session and its queue are back)
    if line.strip() != "ready":
        _end(process, signal.SIGKILL)
        raise AssertionError(f"ingest did not start: {(data_dir.parent / 'ingest.log').read_text()[-2000:]}")
    return process


def _end(process: subprocess.Popen[str], sig: int) -> None:
    process.send_signal(sig)
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def crash_run(broker: Broker, data_dir: Path, tenant: str, messages: int, kills: int, seed: int) -> dict[str, int]:
    """Publish `messages` unique readings while SIGKILLing the ingest process `kills` times at random
    moments; returns counts, and raises if an acknowledged reading is missing or stored twice."""
    rng = random.Random(seed)
    publisher = Publisher(broker)
    sent: dict[int, tuple[str, str]] = {}
    done = threading.Event()
    span = kills * 1.6  # seconds the stream lasts: about as long as the kill/restart cycles

    def publish() -> None:
        for i in range(messages):
            eid = f"urn:ngsi-ld:TrafficFlowObserved:crash-{i % 50}"
            when = at(i)
            mid = publisher.send(
                f"polis/{tenant}/TrafficFlowObserved/{eid}",
                json.dumps({"averageVehicleSpeed": i % 97, "dateObserved": when}),
            )
            sent[mid] = (eid, when)
            time.sleep(span / messages)
        done.set()

    process = _start_ingest(broker.url, data_dir, tenant)
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.6))
            _end(process, signal.SIGKILL)
            process = _start_ingest(broker.url, data_dir, tenant)
        assert done.wait(120)
        wait_until(lambda: len(publisher.acked) == messages, 60, "PUBACKs for every message")
        time.sleep(1.0)  # the last readings reach the ingest process, which drains on SIGTERM
    finally:
        _end(process, signal.SIGTERM)
        publisher.close()
    store = DuckDBStore(data_dir / "polis.duckdb")
    try:
        rows = store._con.execute(
            "SELECT eid, strftime(observed_at, '%Y-%m-%dT%H:%M:%SZ') FROM history WHERE tenant = ?", [tenant]
        ).fetchall()
    finally:
        store.close()
    acknowledged = {sent[m] for m in publisher.acked}
    stored = [(eid, when) for eid, when in rows]
    lost = acknowledged - set(stored)
    duplicates = len(stored) - len(set(stored))
    assert not lost, f"{len(lost)} acknowledged readings lost, e.g. {sorted(lost)[:3]}"
    assert duplicates == 0, f"{duplicates} readings stored twice"
    return {"acknowledged": len(acknowledged), "stored": len(stored), "lost": len(lost), "duplicates": duplicates}


def test_sigkill_at_20_random_points_loses_nothing_and_stores_nothing_twice(
    broker: Broker, tmp_path: Path, tenant: str
) -> None:
    counts = crash_run(broker, tmp_path / "hub", tenant, messages=3000, kills=20, seed=8)
    assert counts == {"acknowledged": 3000, "stored": 3000, "lost": 0, "duplicates": 0}
