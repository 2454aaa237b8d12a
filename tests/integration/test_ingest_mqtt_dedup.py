"""One reading is stored once whichever way it came in: `polis ingest` (bulk history) and MQTT (receipts, and
history itself) agree on what the same reading is — (entity, attribute, datasetId, observedAt) with the
same value — and both store another value at that instant as a correction, beside the one held (NGSI-LD
keeps several instances of an instant). The NGSI-LD API's own writes are not subject to the rule.
Also here: the hub's files are private to their owner."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from polis.domain.entity import HistoryInstance
from polis.ingest.broker import Broker
from polis.ingest.datasets import DatasetLoad, ingest, load_dataset
from polis.ingest.mqtt import MqttIngestor
from polis.ingest.replay import replay
from polis.platform import Platform
from polis.settings import Settings
from polis.store.base import HistoryColumns, TemporalQuery
from polis.store.duckdb_ import DuckDBStore
from tests.integration.test_mqtt import wait_until as mqtt_wait_until

SPEED = "https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"
SENSOR = "urn:ngsi-ld:TrafficFlowObserved:los-loop:773869"
NOW = "2024-01-01T00:00:00.000000Z"
LOS_LOOP_READINGS = 417_312


def wait_until(check: Callable[[], bool], what: str = "condition") -> None:
    """test_mqtt's wait, with room for replays of hundreds of readings on a loaded machine."""
    mqtt_wait_until(check, 30.0, what)



@pytest.fixture(scope="module")
def los_loop() -> DatasetLoad:
    return load_dataset("los-loop", Settings().datasets_dir, NOW)


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


def publish(broker: Broker, messages: list[tuple[str, str]]) -> None:
    """Publish with QoS 1 and wait for every PUBACK."""
    acked: set[int] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
    client.on_publish = lambda _c, _u, mid, _r, _p: acked.add(mid)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        mids = [client.publish(topic, payload, qos=1).mid for topic, payload in messages]
        wait_until(lambda: set(mids) <= acked, what="PUBACKs")
    finally:
        client.disconnect()
        client.loop_stop()


def history(platform: Platform, tenant: str, entity_id: str = SENSOR) -> list[tuple[str, Any]]:
    found = platform.store.temporal(tenant, [entity_id], TemporalQuery(attrs=(SPEED,), max_instances=100_000))
    slot = found.get(entity_id, {}).get(SPEED)
    return [(i["observedAt"], i["value"]) for i in slot.instances] if slot else []


def settled(ingestor: MqttIngestor, received: int) -> Callable[[], bool]:
    return lambda: ingestor.metrics()["received"] == received and ingestor.metrics()["in_flight"] == 0


# -- `polis ingest` then MQTT, and the other way round --------------------------------------------------------


def test_readings_ingested_then_replayed_over_mqtt_are_stored_once(
    hub: tuple[Platform, MqttIngestor], broker: Broker, tenant: str, los_loop: DatasetLoad
) -> None:
    """The reviewer's case: `polis ingest los-loop`, then `polis replay los-loop --limit 500` into the hub."""
    platform, ingestor = hub
    assert ingest(platform.store, tenant, los_loop).observations_added == LOS_LOOP_READINGS
    before = history(platform, tenant)
    replay("los-loop", platform.settings.datasets_dir, broker.url, 0, tenant=tenant, limit=500)
    wait_until(settled(ingestor, 500), what="the replayed readings")
    assert history(platform, tenant) == before
    assert platform.store.history_count(tenant) == LOS_LOOP_READINGS
    metrics = ingestor.metrics()
    assert (metrics["duplicates"], metrics["duplicate_readings"], metrics["committed"]) == (500, 500, 0)
    assert before[:2] == [("2012-03-01T08:00:00Z", 64.375), ("2012-03-01T08:05:00Z", 62.66666667)]
    # the same replay again: no receipt was written for readings not stored, so history recognises them again
    replay("los-loop", platform.settings.datasets_dir, broker.url, 0, tenant=tenant, limit=500)
    wait_until(settled(ingestor, 1000), what="the second replay")
    assert ingestor.metrics()["duplicates"] == 1000 and platform.store.history_count(tenant) == LOS_LOOP_READINGS


def test_readings_replayed_over_mqtt_then_ingested_are_stored_once(
    hub: tuple[Platform, MqttIngestor], broker: Broker, tenant: str, los_loop: DatasetLoad
) -> None:
    platform, ingestor = hub
    replay("los-loop", platform.settings.datasets_dir, broker.url, 0, tenant=tenant, limit=414)
    wait_until(lambda: ingestor.metrics()["committed"] == 414, what="the replayed readings")
    summary = ingest(platform.store, tenant, los_loop)
    assert summary.observations_added == LOS_LOOP_READINGS - 414
    assert platform.store.history_count(tenant) == LOS_LOOP_READINGS
    stamps = [t for t, _ in history(platform, tenant)]
    assert len(stamps) == len(set(stamps)) == 2016
    assert ingest(platform.store, tenant, los_loop).observations_added == 0  # running it twice adds nothing


# -- MQTT alone: one reading in other forms, and corrections ------------------------------------------------


def test_the_same_reading_in_another_form_or_twice_in_a_batch_is_stored_once(
    hub: tuple[Platform, MqttIngestor], broker: Broker, tenant: str
) -> None:
    platform, ingestor = hub
    eid = "urn:ngsi-ld:TrafficFlowObserved:forms"
    topic = f"polis/{tenant}/TrafficFlowObserved/{eid}"
    t0, t1 = "2024-05-01T08:00:00Z", "2024-05-01T08:05:00Z"
    publish(broker, [(topic, json.dumps({"averageVehicleSpeed": 50, "dateObserved": t0}))])
    wait_until(settled(ingestor, 1))
    # other payloads (so other receipts), the same reading: normalized, with a float, in a gateway batch
    normalized = {"averageVehicleSpeed": {"type": "Property", "value": 50.0, "observedAt": t0}}
    twice = [{"id": eid, "averageVehicleSpeed": 61, "dateObserved": t1}] * 2
    batch = f"polis/{tenant}/TrafficFlowObserved/_batch"
    publish(broker, [(topic, json.dumps(normalized)), (batch, json.dumps(twice))])
    wait_until(settled(ingestor, 3))
    assert history(platform, tenant, eid) == [(t0, 50), (t1, 61)]
    metrics = ingestor.metrics()
    assert (metrics["duplicates"], metrics["duplicate_readings"], metrics["committed"]) == (1, 2, 2)


def test_another_value_at_a_held_instant_is_a_correction_stored_beside_it(
    hub: tuple[Platform, MqttIngestor], broker: Broker, tenant: str, los_loop: DatasetLoad
) -> None:
    platform, ingestor = hub
    ingest(platform.store, tenant, los_loop)
    topic = f"polis/{tenant}/TrafficFlowObserved/{SENSOR}"
    publish(broker, [(topic, json.dumps({"averageVehicleSpeed": 12.5, "dateObserved": "2012-03-01T08:05:00Z"}))])
    wait_until(settled(ingestor, 1))
    assert history(platform, tenant)[:4] == [
        ("2012-03-01T08:00:00Z", 64.375),
        ("2012-03-01T08:05:00Z", 62.66666667),
        ("2012-03-01T08:05:00Z", 12.5),
        ("2012-03-01T08:10:00Z", 64),
    ]
    assert platform.store.history_count(tenant) == LOS_LOOP_READINGS + 1
    assert (ingestor.metrics()["committed"], ingestor.metrics()["duplicates"]) == (1, 0)
    # the current value stays the newest reading (the week's last): a correction of an old one is history
    terms = ingestor.parser.terms
    current = platform.entities.retrieve(tenant, SENSOR, terms, fmt="concise")["averageVehicleSpeed"]
    assert current["observedAt"] == "2012-03-08T07:55:00Z"
    # `polis ingest` again adds nothing: the file's value is held; and the correction again is a duplicate
    assert ingest(platform.store, tenant, los_loop).observations_added == 0
    normalized = {"averageVehicleSpeed": {"value": 12.5, "observedAt": "2012-03-01T08:05:00Z"}}
    publish(broker, [(topic, json.dumps(normalized))])
    wait_until(settled(ingestor, 2))
    assert ingestor.metrics()["duplicates"] == 1 and platform.store.history_count(tenant) == LOS_LOOP_READINGS + 1


def test_live_readings_newer_than_the_history_are_stored_without_a_look(
    hub: tuple[Platform, MqttIngestor], broker: Broker, tenant: str, los_loop: DatasetLoad, monkeypatch: Any
) -> None:
    """The cheap path: readings after each entity's newest held instant never reach `held_readings`."""
    platform, ingestor = hub
    ingest(platform.store, tenant, los_loop)
    looked: list[int] = []
    original = platform.store.held_readings

    def counting(t: str, readings: Any) -> dict[int, Any]:
        looked.append(len(readings))
        return original(t, readings)

    monkeypatch.setattr(platform.store, "held_readings", counting)
    replay(  # the week's last three steps again, observed after it: what a live sensor sends
        "los-loop", platform.settings.datasets_dir, broker.url, 0, tenant=tenant, limit=621,
        start="2012-03-08T07:45:00Z", rebase=datetime(2012, 3, 8, 8, 0, tzinfo=UTC),
    )
    wait_until(settled(ingestor, 621), what="the live readings")
    assert looked == [] and ingestor.metrics()["committed"] == 621
    assert platform.store.history_count(tenant) == LOS_LOOP_READINGS + 621


# -- the store: the rule belongs to ingest, not to NGSI-LD writes ---------------------------------------------


def _columns(values: list[float], hours: list[int]) -> HistoryColumns:
    return HistoryColumns(
        np.array([SENSOR] * len(values), dtype=object),
        np.array([SPEED] * len(values), dtype=object),
        np.array([np.datetime64(f"2024-01-01T{h:02d}:00", "us") for h in hours]),
        np.array(values, dtype=np.float64),
        "KMH",
    )


def test_bulk_history_skips_the_same_value_and_adds_another_beside_it() -> None:
    store = DuckDBStore(None)
    try:
        assert store.bulk_history("", _columns([1.0, 2.0, 3.0], [0, 1, 2])) == 3
        assert store.bulk_history("", _columns([1.0, 2.0, 3.0], [0, 1, 2])) == 0
        assert store.bulk_history("", _columns([1.0, 20.0, 3.0, 4.0], [0, 1, 2, 3])) == 2
        rows = store.connection().execute("SELECT num FROM history ORDER BY observed_at, instance_id").fetchall()
        assert [num for (num,) in rows] == [1.0, 2.0, 20.0, 3.0, 4.0]
        assert store.bulk_history("", _columns([1.0, 20.0, 3.0, 4.0], [0, 1, 2, 3])) == 0
    finally:
        store.close()


def test_api_writes_keep_every_instance_and_held_readings_finds_only_the_same_value() -> None:
    store = DuckDBStore(None)
    try:
        at = datetime(2024, 1, 1, tzinfo=UTC)
        plain = {"type": "Property", "value": 5, "observedAt": "2024-01-01T00:00:00Z"}
        text = {"type": "Property", "value": "open", "observedAt": "2024-01-01T00:00:00Z"}
        note = "https://uri.etsi.org/ngsi-ld/default-context/note"
        # NGSI-LD: two instances at one instant are two instances (instanceId tells them apart)
        two = [HistoryInstance(SENSOR, SPEED, at, plain)] * 2
        store.write("", history=[*two, HistoryInstance(SENSOR, note, at, text)])
        assert store.history_count("") == 3
        probe = [
            HistoryInstance(SENSOR, SPEED, at, {**plain, "value": 5.0, "unitCode": "KMH"}),  # the same reading
            HistoryInstance(SENSOR, SPEED, at, {**plain, "value": 6}),  # a correction
            HistoryInstance(SENSOR, note, at, dict(reversed(text.items()))),  # members in another order
            HistoryInstance(SENSOR, note, at, {**text, "value": "closed"}),
            HistoryInstance(SENSOR, SPEED, at, plain, "urn:ngsi-ld:Dataset:other"),  # another instance: new
            HistoryInstance("urn:ngsi-ld:Thing:none", SPEED, at, plain),  # no history at all
        ]
        assert store.held_readings("", probe) == {0, 2}
    finally:
        store.close()


def test_newest_history_is_an_upper_bound_kept_up_by_every_write() -> None:
    store = DuckDBStore(None)
    try:
        assert store.newest_history("", [SENSOR]) == {}  # no history: nothing can be held
        assert store.bulk_history("", _columns([1.0, 2.0], [0, 5])) == 2
        assert store.newest_history("", [SENSOR]) == {SENSOR: datetime(2024, 1, 1, 5, tzinfo=UTC)}
        later = datetime(2024, 1, 1, 9, tzinfo=UTC)
        store.write("", history=[HistoryInstance(SENSOR, SPEED, later, {"type": "Property", "value": 3})])
        assert store.newest_history("", [SENSOR])[SENSOR] == later  # raised in memory by the commit
        store.delete_history("", SENSOR)
        assert store.newest_history("", [SENSOR])[SENSOR] >= later  # still an upper bound
        new = "urn:ngsi-ld:Thing:new"
        store.write("", history=[HistoryInstance(new, SPEED, later, {"type": "Property", "value": 3})])
        assert store.newest_history("", [new]) == {new: later}
    finally:
        store.close()


# -- the hub's files: private to their owner (placed here: this change's tests share this file) ----------------


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_hub_database_and_its_directory_are_private_and_still_open_read_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "polis.duckdb"
    store = DuckDBStore(path)
    store.bulk_history("", _columns([1.0, 2.0], [0, 1]))
    assert (_mode(path.parent), _mode(path)) == (0o700, 0o600)  # the .wal, made by DuckDB, is inside
    store.close()
    reader = DuckDBStore(path, read_only=True)  # the same user, as `polis epidemic` or `flows` open it
    try:
        assert reader.history_count("") == 2
    finally:
        reader.close()


def test_the_platform_made_directory_of_a_new_hub_is_private_too(tmp_path: Path) -> None:
    platform = Platform(Settings(data_dir=tmp_path / "hub"))  # it makes the directory, then the store the file
    try:
        data = platform.settings.data_dir
        assert (_mode(data), _mode(platform.settings.database_path)) == (0o700, 0o600)
    finally:
        platform.close()


def test_a_directory_holding_other_things_is_left_as_its_owner_set_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "notes.txt").write_text("not the hub's")
    DuckDBStore(shared / "polis.duckdb").close()
    assert (_mode(shared), _mode(shared / "polis.duckdb")) == (0o755, 0o600)
