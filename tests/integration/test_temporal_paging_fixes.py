"""206 + Content-Range over several series (§6.3.10): the range ends where the first cut series ends (starts
where the last one starts, with lastN) and every series is trimmed to it, so a client that pages by it gets
every instance once; aggregatedValues over a cut answer give only the periods they aggregate in full."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client, problem

T = "/ngsi-ld/v1/temporal/entities"
R1, R2 = "urn:ngsi-ld:R:1", "urn:ngsi-ld:R:2"


def at(hour: int, minute: int = 0) -> str:
    return f"2026-01-01T{hour:02d}:{minute:02d}:00Z"


def reading(value: float, observed: str) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": observed}


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TestClient, Platform]]:
    """At most 3 instances per attribute in one answer. R:1 reads speed hourly from 00:00 to 05:00 and temp at
    00:30 and 04:30; R:2 reads speed hourly from 10:00 to 15:00."""
    for client, platform in hub_client(max_temporal_instances=3):
        for body in (
            {"id": R1, "type": "R", "speed": [reading(h, at(h)) for h in range(6)],
             "temp": [reading(20, at(0, 30)), reading(24, at(4, 30))]},
            {"id": R2, "type": "R", "speed": [reading(h, at(h)) for h in range(10, 16)]},
        ):
            r = client.post(T, json=body)
            assert r.status_code == 201, r.text
        yield client, platform


def pairs(entity: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(entity id, attribute, observedAt) of every instance of a temporalValues entity."""
    return {(entity["id"], name, when) for name, series in entity.items() if name not in ("id", "type")
            for _, when in series["values"]}


def test_paging_by_content_range_reaches_every_instance_once(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    expected = ({(R1, "speed", at(h)) for h in range(6)} | {(R1, "temp", at(0, 30)), (R1, "temp", at(4, 30))}
                | {(R2, "speed", at(h)) for h in range(10, 16)})
    seen: list[tuple[str, str, str]] = []
    time_at, ranges = "2025-01-01T00:00:00Z", []
    for _ in range(10):
        r = client.get(T, params={"type": "R", "options": "temporalValues", "timerel": "after", "timeAt": time_at})
        assert r.status_code in (200, 206), r.text
        seen += [p for entity in r.json() for p in sorted(pairs(entity))]
        if r.status_code == 200:
            break
        ranges.append(r.headers["Content-Range"])
        time_at = r.headers["Content-Range"].split(" ")[1].split("/")[0][len(at(0)) + 1:]  # the range's end
    assert sorted(seen) == sorted(expected)  # none skipped, none twice
    # R:1's speed is cut first (at 02:00): R:2's speed and R:1's temp wait for the pages that reach them.
    assert ranges[0] == f"date-time {at(0)}-{at(2)}/*"


def test_one_entity_with_a_cut_attribute_trims_the_others(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.get(f"{T}/{R1}", params={"options": "temporalValues"})
    assert r.status_code == 206 and r.headers["Content-Range"] == f"date-time {at(0)}-{at(2)}/*"
    body = r.json()
    assert body["speed"]["values"] == [[0, at(0)], [1, at(1)], [2, at(2)]]
    assert body["temp"]["values"] == [[20, at(0, 30)]]  # 04:30 comes with the next page, not with this one


def test_last_n_range_starts_where_the_last_cut_series_starts(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.get(T, params={"type": "R", "options": "temporalValues", "attrs": "speed", "lastN": "4"})
    assert r.status_code == 206, r.text
    assert r.headers["Content-Range"] == f"date-time {at(13)}-{at(15)}/4"
    by_id = {e["id"]: e for e in r.json()}
    assert "speed" not in by_id[R1]  # all of R:1's speed is older than the range: the next page has it
    assert by_id[R2]["speed"]["values"] == [[13, at(13)], [14, at(14)], [15, at(15)]]
    r = client.get(T, params={"type": "R", "options": "temporalValues", "attrs": "speed", "lastN": "4",
                              "timerel": "before", "timeAt": at(13)})
    assert r.status_code == 206 and r.headers["Content-Range"] == f"date-time {at(3)}-{at(12)}/4"
    by_id = {e["id"]: e for e in r.json()}
    assert by_id[R1]["speed"]["values"] == [[3, at(3)], [4, at(4)], [5, at(5)]]
    assert by_id[R2]["speed"]["values"] == [[10, at(10)], [11, at(11)], [12, at(12)]]


def _aggregated(client: TestClient, **params: str) -> Any:
    return client.get(f"{T}/{R1}", params={"attrs": "speed", "options": "aggregatedValues",
                                            "aggrMethods": "totalCount,sum", **params})


def test_aggregation_of_a_cut_answer_gives_only_complete_periods(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = _aggregated(client, aggrPeriodDuration="PT1H")
    # The range ends at the last instance aggregated (01:00), as an instance answer's does.
    assert r.status_code == 206 and r.headers["Content-Range"] == f"date-time {at(0)}-{at(1)}/*"
    assert r.json()["speed"]["totalCount"] == [[1, at(0), at(1)], [1, at(1), at(2)]]
    # The next page is the one after that instance, as for instances.
    r = _aggregated(client, aggrPeriodDuration="PT1H", timerel="after", timeAt=at(1))
    assert r.status_code == 206 and r.headers["Content-Range"] == f"date-time {at(2)}-{at(3)}/*"
    assert r.json()["speed"]["sum"] == [[2, at(2), at(3)], [3, at(3), at(4)]]
    # One period over the whole range: it ends where the instances aggregated end, and says so.
    r = _aggregated(client, timerel="between", timeAt=at(0), endTimeAt="2026-01-02T00:00:00Z")
    assert r.status_code == 206 and r.headers["Content-Range"] == f"date-time {at(0)}-{at(2)}/*"
    assert r.json()["speed"]["totalCount"] == [[3, at(0), at(2)]]
    # A day-long period holds more instances than one answer: no period can be complete.
    problem(_aggregated(client, aggrPeriodDuration="P1D"), 403, "TooManyResults", "aggrPeriodDuration")


def test_aggregation_within_the_cap_is_whole(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = _aggregated(client, aggrPeriodDuration="P1D", timerel="between", timeAt=at(3), endTimeAt=at(6))
    assert r.status_code == 200 and "Content-Range" not in r.headers
    assert [count for count, *_ in r.json()["speed"]["totalCount"]] == [3]
