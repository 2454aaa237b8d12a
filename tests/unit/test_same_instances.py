"""`same_instances` decides which attributes of an update enter the history and trigger subscriptions."""

from __future__ import annotations

from polis.domain.entity import same_instances

READING = {"type": "Property", "value": 42.0, "observedAt": "2024-05-01T10:00:00Z", "unitCode": "KMH"}


def test_only_the_system_timestamps_are_ignored() -> None:
    stored = [{**READING, "createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-05-01T10:00:01Z"}]
    assert same_instances(stored, [READING])
    assert same_instances(stored, [{**READING, "modifiedAt": "2026-01-01T00:00:00Z"}])
    assert not same_instances(stored, [{**READING, "value": 43.0}])
    assert not same_instances(stored, [{**READING, "observedAt": "2024-05-01T10:05:00Z"}])
    assert not same_instances(stored, [{k: v for k, v in READING.items() if k != "unitCode"}])
    assert not same_instances(stored, [{**READING, "datasetId": "urn:ngsi-ld:Dataset:b"}])


def test_instances_compare_in_order_and_in_number() -> None:
    other = {**READING, "datasetId": "urn:ngsi-ld:Dataset:b"}
    assert same_instances([READING, other], [READING, other])
    assert not same_instances([READING, other], [other, READING])
    assert not same_instances([READING], [READING, other])


def test_a_missing_attribute_or_a_non_list_is_compared_as_it_is() -> None:
    assert not same_instances([READING], None)
    assert same_instances(None, None)
    geo = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}
    assert same_instances([geo], [{**geo, "createdAt": "x"}])
    assert not same_instances([geo], [{**geo, "value": {"type": "Point", "coordinates": [1.0, 2.5]}}])
