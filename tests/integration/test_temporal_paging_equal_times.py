"""Paging a temporal answer by its Content-Range (§6.3.10) reaches every instance and every aggregation period
exactly once: instances that share the observedAt where the cap cuts all come on the same page (more of them at
one instant than the cap is 403 TooManyResults, as that cannot be paged), and the rule is the same for
instances and aggregatedValues: without lastN, ask `timerel=after&timeAt=<range end>`; with lastN,
`timerel=before&timeAt=<range start>`. GET /temporal/entities and POST /temporal/entityOperations/query."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import hub_client, problem

T = "/ngsi-ld/v1/temporal/entities"
POST_QUERY = "/ngsi-ld/v1/temporal/entityOperations/query"
EQ, AG, AH = "urn:ngsi-ld:Eq:1", "urn:ngsi-ld:Ag:1", "urn:ngsi-ld:Ag:2"
MX, MY = "urn:ngsi-ld:Mix:x", "urn:ngsi-ld:Mix:y"


def at(hour: int, minute: int = 0) -> str:
    return f"2026-01-01T{hour:02d}:{minute:02d}:00Z"


def reading(value: float, observed: str) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": observed}


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TestClient, Platform]]:
    """At most 3 instances per attribute in one answer. Eq:1 reads 1 at 01:00, 2, 3 and 4 at 02:00, 5 at 03:00.
    Ag:1 reads hourly 00:00–05:00; Ag:2 at half past, 00:30–05:30 (its periods start on the half hour).
    Mix:x reads at 00:30, 01:40, 02:10 and 03:00, Mix:y at 00:00, 01:10 and 01:50."""
    for client, platform in hub_client(max_temporal_instances=3):
        for value, when in ((1, at(1)), (2, at(2)), (3, at(2)), (4, at(2)), (5, at(3))):  # one by one, as sent
            r = client.post(T, json={"id": EQ, "type": "Eq", "speed": [reading(value, when)]})
            assert r.status_code in (201, 204), r.text
        mix = ((MX, (at(0, 30), at(1, 40), at(2, 10), at(3))), (MY, (at(0), at(1, 10), at(1, 50))))
        for eid, times in mix:
            r = client.post(T, json={"id": eid, "type": "Mix", "speed": [reading(1, when) for when in times]})
            assert r.status_code == 201, r.text
        for eid, minute in ((AG, 0), (AH, 30)):
            r = client.post(T, json={"id": eid, "type": "Ag", "speed": [reading(h, at(h, minute)) for h in range(6)]})
            assert r.status_code == 201, r.text
        yield client, platform


Ask = Callable[[dict[str, str]], Any]


def _get(client: TestClient, etype: str) -> Ask:
    return lambda params: client.get(T, params={"type": etype, **params})


def _post(client: TestClient, etype: str) -> Ask:
    """The same query as POST /temporal/entityOperations/query: temporalQ in the body, the rest in the URL."""

    def ask(params: dict[str, str]) -> Any:
        temporal_q = {k: params[k] for k in ("timerel", "timeAt", "endTimeAt") if k in params}
        url = {k: v for k, v in params.items() if k not in temporal_q}
        body = {"type": "Query", "entities": [{"type": etype}], "temporalQ": temporal_q}
        return client.post(POST_QUERY, params=url, json=body)

    return ask


def _range(r: Any) -> tuple[str, str]:
    first, last = r.headers["Content-Range"].removeprefix("date-time ").split("/")[0].split("Z-")
    return first + "Z", last


def _page_all(ask: Ask, params: dict[str, str], backward: bool = False) -> tuple[list[Any], list[str]]:
    """Every page of the answer, moving the window past each Content-Range as a client does."""
    pages, ranges = [], []
    for _ in range(10):
        r = ask(params)
        assert r.status_code in (200, 206), r.text
        pages.append(r.json())
        if r.status_code == 200:
            return pages, ranges
        ranges.append(r.headers["Content-Range"])
        first, last = _range(r)
        params = {**params, "timerel": "before" if backward else "after", "timeAt": first if backward else last}
    raise AssertionError(f"still 206 after 10 pages: {ranges}")


def _values(pages: list[Any]) -> list[int]:
    return sorted(v for page in pages for entity in page for v, _ in entity.get("speed", {}).get("values", []))


@pytest.mark.parametrize("how", [_get, _post], ids=["GET", "POST query"])
def test_instances_at_the_cut_instant_all_come_on_one_page(hub: tuple[TestClient, Platform], how: Any) -> None:
    client, _ = hub
    pages, ranges = _page_all(how(client, "Eq"), {"options": "temporalValues"})
    assert _values(pages) == [1, 2, 3, 4, 5]  # none lost, none twice
    # 02:00 holds three instances, the fourth kept would be 02:00 too: the first page stops before that instant.
    assert ranges == [f"date-time {at(1)}-{at(1)}/*", f"date-time {at(2)}-{at(2)}/*"]


@pytest.mark.parametrize("how", [_get, _post], ids=["GET", "POST query"])
def test_last_n_pages_back_over_an_instant_cut_in_two(hub: tuple[TestClient, Platform], how: Any) -> None:
    client, _ = hub
    pages, ranges = _page_all(how(client, "Eq"), {"options": "temporalValues", "lastN": "5"}, backward=True)
    assert _values(pages) == [1, 2, 3, 4, 5]
    assert ranges == [f"date-time {at(3)}-{at(3)}/5", f"date-time {at(2)}-{at(2)}/5"]


def test_more_instances_at_one_instant_than_the_cap_is_403(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    eid = "urn:ngsi-ld:Eq:crowded"
    for value, when in ((0, at(7)), (1, at(7)), (2, at(7)), (3, at(7)), (9, at(8))):  # one body takes one per instant
        r = client.post(T, json={"id": eid, "type": "Crowded", "speed": [reading(value, when)]})
        assert r.status_code in (201, 204), r.text
    for params in ({}, {"timerel": "before", "timeAt": at(8), "lastN": "4"}, {"timerel": "after", "timeAt": at(6)}):
        problem(client.get(f"{T}/{eid}", params=params), 403, "TooManyResults", "at one instant")
    # The instant after it still pages.
    r = client.get(f"{T}/{eid}", params={"timerel": "after", "timeAt": at(7), "options": "temporalValues"})
    assert r.status_code == 200 and r.json()["speed"]["values"] == [[9, at(8)]]


def _periods(pages: list[Any]) -> list[tuple[str, float, int]]:
    """(entity id, sum, totalCount) of every period of every page."""
    out = []
    for page in pages:
        for entity in page:
            series = entity.get("speed", {})
            for (total, lo, _), (count, lo2, _) in zip(
                series.get("sum", []), series.get("totalCount", []), strict=True
            ):
                assert lo == lo2
                out.append((entity["id"], total, count))
    return out


@pytest.mark.parametrize("how", [_get, _post], ids=["GET", "POST query"])
def test_aggregated_pages_by_the_instances_rule_reach_every_instance_once(
    hub: tuple[TestClient, Platform], how: Any
) -> None:
    client, _ = hub
    params = {"options": "aggregatedValues", "aggrMethods": "sum,totalCount", "aggrPeriodDuration": "PT1H"}
    pages, ranges = _page_all(how(client, "Ag"), params)
    periods = _periods(pages)
    for eid in (AG, AH):  # every reading in exactly one period: readings 0..5 sum to 15
        assert sum(count for who, _, count in periods if who == eid) == 6, periods
        assert sum(total for who, total, _ in periods if who == eid) == 15, periods
    # The range ends at the last instance aggregated, as an instance range does, not at its period's end.
    assert ranges[0] == f"date-time {at(0)}-{at(1)}/*"


def test_aggregated_range_of_one_entity_ends_at_its_last_instance(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    params = {"options": "aggregatedValues", "aggrMethods": "sum", "aggrPeriodDuration": "PT1H"}
    r = client.get(f"{T}/{AG}", params=params)
    assert r.status_code == 206 and r.headers["Content-Range"] == f"date-time {at(0)}-{at(1)}/*"
    assert r.json()["speed"]["sum"] == [[0, at(0), at(1)], [1, at(1), at(2)]]
    # `after` the range end starts with the period of the next instance: 02:00 is not lost.
    r = client.get(f"{T}/{AG}", params={**params, "timerel": "after", "timeAt": at(1)})
    assert r.status_code == 206 and r.json()["speed"]["sum"][0] == [2, at(2), at(3)]
    # With lastN the range starts at the first instance aggregated: `before` it pages back.
    pages, ranges = _page_all(lambda p: client.get(f"{T}/{AG}", params=p), {**params, "lastN": "6"}, backward=True)
    assert sorted(v for page in pages for v, *_ in page["speed"]["sum"]) == [0, 1, 2, 3, 4, 5]
    assert ranges[0] == f"date-time {at(3)}-{at(5)}/6"


def test_aggregated_page_ends_before_what_another_series_left_out(hub: tuple[TestClient, Platform]) -> None:
    """Mix:x is cut after 02:10; its periods start on the half hour, Mix:y's on the hour. Mix:y's 01:00–02:00 is
    whole, but Mix:x's 01:40 is in its 01:30–02:30, which is not: a page holding Mix:y's 01:00–02:00 would skip
    Mix:x's 01:40 on the next one, and one holding only Mix:y's 01:10 would give a part of that period."""
    client, _ = hub
    params = {"options": "aggregatedValues", "aggrMethods": "sum,totalCount", "aggrPeriodDuration": "PT1H"}
    pages, ranges = _page_all(_get(client, "Mix"), params)
    assert ranges[0] == f"date-time {at(0)}-{at(0, 30)}/*"
    first = {entity["id"]: entity["speed"]["totalCount"] for entity in pages[0]}
    assert first == {MX: [[1, at(0, 30), at(1, 30)]], MY: [[1, at(0), at(1)]]}
    periods = _periods(pages)
    for eid, readings in ((MX, 4), (MY, 3)):
        assert sum(count for who, _, count in periods if who == eid) == readings, periods
