"""aggregatedValues over the range asked for: `timerel=before` ends its buckets at timeAt (it started them there,
so a bucket ended before it began), two temporal representations are refused rather than one silently winning,
and a period too short to hold is refused rather than read as "the whole range"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client, problem

T = "/ngsi-ld/v1/temporal/entities"
ID = "urn:ngsi-ld:Counter:agg-1"


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TestClient, Platform]]:
    for client, platform in hub_client():
        readings = [{"type": "Property", "value": v, "observedAt": f"2022-02-28T{h:02d}:00:00Z"}
                    for h, v in ((20, 1), (21, 2), (22, 3), (23, 4))]
        r = client.post(T, json={"id": ID, "type": "Counter", "count": readings})
        assert r.status_code == 201, r.text
        yield client, platform


def _aggregated(client: TestClient, **params: str) -> list[list[object]]:
    r = client.get(f"{T}/{ID}", params={"attrs": "count", "options": "aggregatedValues", **params})
    assert r.status_code == 200, r.text
    return list(r.json()["count"]["sum"])


def test_before_aggregates_up_to_time_at(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    buckets = _aggregated(client, timerel="before", timeAt="2022-03-01T00:00:00Z", aggrMethods="sum")
    assert buckets == [[10, "2022-02-28T20:00:00Z", "2022-03-01T00:00:00Z"]]
    hourly = _aggregated(client, timerel="before", timeAt="2022-02-28T22:00:00Z", aggrMethods="sum",
                         aggrPeriodDuration="PT1H")
    assert hourly == [[1, "2022-02-28T20:00:00Z", "2022-02-28T21:00:00Z"],
                      [2, "2022-02-28T21:00:00Z", "2022-02-28T22:00:00Z"]]


def test_after_and_between_start_at_time_at(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    after = _aggregated(client, timerel="after", timeAt="2022-02-28T21:30:00Z", aggrMethods="sum")
    assert after == [[7, "2022-02-28T21:30:00Z", "2022-02-28T23:00:00Z"]]
    between = _aggregated(client, timerel="between", timeAt="2022-02-28T21:00:00Z",
                          endTimeAt="2022-02-28T23:00:00Z", aggrMethods="sum")
    assert between == [[5, "2022-02-28T21:00:00Z", "2022-02-28T23:00:00Z"]]


def test_two_temporal_representations_are_refused(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.get(f"{T}/{ID}", params={"options": "aggregatedValues,temporalValues", "aggrMethods": "sum"})
    problem(r, 400, "InvalidRequest", "aggregatedValues", "temporalValues")


def test_a_period_shorter_than_a_microsecond_is_refused(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.get(f"{T}/{ID}", params={"options": "aggregatedValues", "aggrMethods": "sum",
                                         "aggrPeriodDuration": "PT0.0000001S"})
    problem(r, 400, "BadRequestData", "PT0.0000001S", "microsecond")
