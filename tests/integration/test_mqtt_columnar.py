"""Plain numeric readings (the gateway fast path) are merged once per attribute and stored as history
columns. This holds that path to the row-at-a-time one: the same groups give the same entities and the
same history, late readings, inherited units, new entities and mixed forms included."""

from __future__ import annotations

import time
from typing import Any

import orjson

from polis.ingest.mqtt import MqttIngestor, ReceivedMessage
from polis.platform import Platform
from polis.store.base import TemporalQuery

SDM = "https://smartdatamodels.org/dataModel.Transportation/"
SPEED = SDM + "averageVehicleSpeed"
INTENSITY = SDM + "intensity"
IDS = [f"urn:ngsi-ld:TrafficFlowObserved:col-{k}" for k in range(4)]


class _NoMemo(dict[Any, Any]):
    """A parser layout memo that never remembers: every reading takes the full, row-at-a-time path."""

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


def _at(minute: int) -> str:
    return f"2024-05-01T08:{minute:02d}:00Z"


def _groups() -> list[list[tuple[str, bytes]]]:
    batch = "polis/default/TrafficFlowObserved/_batch"

    def gateway(minute: int, speed: float) -> tuple[str, bytes]:
        items = [
            {"id": i, "averageVehicleSpeed": speed + k, "intensity": k, "dateObserved": _at(minute)}
            for k, i in enumerate(IDS)
        ]
        return batch, orjson.dumps(items)

    unit = {"averageVehicleSpeed": {"type": "Property", "value": 50.5, "unitCode": "KMH", "observedAt": _at(0)}}
    return [
        # the unit is set by a normalized message first; key-values readings inherit it
        [(f"polis/default/TrafficFlowObserved/{IDS[0]}", orjson.dumps(unit)), gateway(1, 40.0)],
        # newest first, then a late reading (history only), then a tie
        [gateway(5, 30.0), gateway(3, 60.0), gateway(5, 31.0)],
        # plain readings, then a normalized one for the same entity in the same group, then plain again
        [
            gateway(6, 20.0),
            (
                f"polis/default/TrafficFlowObserved/{IDS[1]}",
                orjson.dumps(
                    {
                        "averageVehicleSpeed": {
                            "type": "Property",
                            "value": 99.0,
                            "observedAt": _at(7),
                            "unitCode": "KMH",
                        }
                    }
                ),
            ),
            gateway(8, 10.0),
        ],
    ]


def _run(fast: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    platform = Platform.in_memory()
    try:
        ingestor = MqttIngestor(platform, "mqtt://127.0.0.1:1")  # never started: groups are handed in
        if not fast:
            ingestor.parser._shapes = _NoMemo()
        for group in _groups():
            # (the parser learns a layout from a gateway message's first item; the fast path takes the rest)
            ingestor._handle([ReceivedMessage(t, p, mid, 1, 0, time.time()) for mid, (t, p) in enumerate(group)])
        entities = platform.store.get("", IDS)
        found = platform.store.temporal("", IDS, TemporalQuery(attrs=(SPEED, INTENSITY)))
        history = {
            eid: {
                attr: [{k: v for k, v in i.items() if k != "instanceId"} for i in slot.instances]
                for attr, slot in attrs.items()
            }
            for eid, attrs in found.items()
        }
        assert ingestor.metrics()["readings"] == sum(len(v) for a in history.values() for v in a.values())
        return _without_system_times(entities), history
    finally:
        platform.close()


def _without_system_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_system_times(v) for k, v in value.items() if k not in ("createdAt", "modifiedAt")}
    if isinstance(value, list):
        return [_without_system_times(v) for v in value]
    return value


def test_plain_readings_give_the_same_state_and_history_as_the_row_path() -> None:
    fast_entities, fast_history = _run(fast=True)
    slow_entities, slow_history = _run(fast=False)
    assert fast_entities == slow_entities
    assert fast_history == slow_history
    # and what the state is: the newest reading wins, a late one only joins history, units are inherited
    first = fast_entities[IDS[0]][SPEED][0]
    assert (first["value"], first["observedAt"], first["unitCode"]) == (10.0, _at(8), "KMH")
    speeds = [(i["observedAt"], i["value"]) for i in fast_history[IDS[0]][SPEED]]
    assert (_at(3), 60.0) in speeds and speeds.count((_at(5), 30.0)) == 1 and len(speeds) == 7
    assert all(i.get("unitCode") == "KMH" for i in fast_history[IDS[0]][SPEED])
    assert fast_entities[IDS[1]][SPEED][0]["value"] == 11.0  # the gateway at minute 8 is newer than 99 at 7
