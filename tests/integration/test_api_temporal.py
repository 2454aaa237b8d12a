"""The temporal API (/temporal/entities): history written by every entity write that carries
observedAt, timerel/lastN/attrs, temporalValues and aggregatedValues, 206 + Content-Range, deletes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from tests.conftest import LINK_SDM, admin_headers

BASE = "/ngsi-ld/v1"
ENTITIES = BASE + "/entities"
TEMPORAL = BASE + "/temporal/entities"
OPS = BASE + "/entityOperations"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
SDM_HDR = {"Link": LINK_SDM}
EID = "urn:ngsi-ld:TrafficFlowObserved:t1"


def at(hour: int, minute: int = 0) -> str:
    return f"2026-03-01T{hour:02d}:{minute:02d}:00Z"


def speed(value: float, observed: str, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": observed, **extra}


def history(client: TestClient, eid: str = EID, headers: dict[str, str] | None = None, /,
            **params: str) -> dict[str, Any]:
    r = client.get(f"{TEMPORAL}/{eid}", params=params, headers=SDM_HDR if headers is None else headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def values(body: dict[str, Any], attr: str = "averageVehicleSpeed") -> list[tuple[Any, str]]:
    instances = body.get(attr, [])
    if isinstance(instances, dict):
        instances = [instances]
    return [(i["value"], i["observedAt"]) for i in instances]


def temporal_entity(eid: str = EID, points: list[tuple[float, str]] | None = None, **more: Any) -> dict[str, Any]:
    pts = points if points is not None else [(10.0, at(0)), (20.0, at(0, 20)), (30.0, at(0, 40)),
                                             (40.0, at(1, 10)), (50.0, at(2, 30))]
    return {"id": eid, "type": "TrafficFlowObserved",
            "averageVehicleSpeed": [speed(v, t) for v, t in pts], **more}


def post_temporal(client: TestClient, body: dict[str, Any], status: int = 201) -> Any:
    r = client.post(TEMPORAL, json=body, headers=SDM_HDR)
    assert r.status_code == status, r.text
    return r


# -- every write with observedAt is an instance ---------------------------------------------------


def test_every_entity_write_with_observed_at_adds_an_instance(client: TestClient) -> None:
    body = {"id": EID, "type": "TrafficFlowObserved", "averageVehicleSpeed": speed(1, at(0))}
    assert client.post(ENTITIES, json=body, headers=SDM_HDR).status_code == 201
    url = f"{ENTITIES}/{EID}"
    steps = [
        client.patch(f"{url}/attrs", json={"averageVehicleSpeed": speed(2, at(1))}, headers=SDM_HDR),
        client.post(f"{url}/attrs", json={"averageVehicleSpeed": speed(3, at(2))}, headers=SDM_HDR),
        client.patch(f"{url}/attrs/averageVehicleSpeed", json={"value": 4, "observedAt": at(3)}, headers=SDM_HDR),
        client.patch(url, json={"averageVehicleSpeed": speed(5, at(4))}, headers=SDM_HDR),
        client.post(f"{OPS}/upsert", json=[{**body, "averageVehicleSpeed": speed(6, at(5))}],
                    params={"options": "update"}, headers=SDM_HDR),
        client.post(f"{OPS}/upsert", json=[{**body, "averageVehicleSpeed": speed(7, at(6))}], headers=SDM_HDR),
        client.post(f"{OPS}/update", json=[{**body, "averageVehicleSpeed": speed(8, at(7))}], headers=SDM_HDR),
        client.post(f"{OPS}/merge", json=[{**body, "averageVehicleSpeed": speed(9, at(8))}], headers=SDM_HDR),
        client.put(url, json={"averageVehicleSpeed": speed(10, at(9))}, headers=SDM_HDR),
    ]
    assert [r.status_code for r in steps] == [204] * len(steps), [r.text for r in steps]
    assert values(history(client)) == [(v, at(v - 1)) for v in range(1, 11)]


def test_write_of_another_attribute_does_not_duplicate_instances(client: TestClient) -> None:
    body = {"id": EID, "type": "TrafficFlowObserved", "averageVehicleSpeed": speed(1, at(0))}
    client.post(ENTITIES, json=body, headers=SDM_HDR)
    r = client.patch(f"{ENTITIES}/{EID}", json={"intensity": speed(5, at(1))}, headers=SDM_HDR)
    assert r.status_code == 204
    got = history(client)
    assert values(got) == [(1, at(0))]
    assert values(got, "intensity") == [(5, at(1))]


def test_writes_without_observed_at_keep_no_history(client: TestClient) -> None:
    body = {"id": EID, "type": "TrafficFlowObserved", "intensity": {"type": "Property", "value": 1}}
    client.post(ENTITIES, json=body, headers=SDM_HDR)
    assert "intensity" not in history(client)


# -- POST /temporal/entities --------------------------------------------------------------------------


def test_temporal_create_then_add(client: TestClient) -> None:
    r = post_temporal(client, temporal_entity(points=[(1.0, at(0)), (2.0, at(1))]))
    assert r.headers["location"] == f"{TEMPORAL}/{EID}"
    assert r.content == b""
    r = post_temporal(client, temporal_entity(points=[(3.0, at(2))]), status=204)
    assert values(history(client)) == [(1.0, at(0)), (2.0, at(1)), (3.0, at(2))]
    # The entity API shows the newest instance as the current state.
    current = client.get(f"{ENTITIES}/{EID}", headers=SDM_HDR).json()
    assert current["averageVehicleSpeed"] == speed(3.0, at(2))


def test_temporal_add_attributes(client: TestClient) -> None:
    post_temporal(client, temporal_entity(points=[(1.0, at(0))]))
    r = client.post(f"{TEMPORAL}/{EID}/attrs", json={"intensity": [speed(7, at(0)), speed(8, at(1))]},
                    headers=SDM_HDR)
    assert r.status_code == 204, r.text
    assert values(history(client), "intensity") == [(7, at(0)), (8, at(1))]
    r = client.post(f"{TEMPORAL}/urn:ngsi-ld:X:none/attrs", json={"intensity": [speed(7, at(0))]})
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"


def test_temporal_instance_without_observed_at_is_400_and_not_written(client: TestClient) -> None:
    body = {"id": EID, "type": "TrafficFlowObserved",
            "averageVehicleSpeed": [speed(1, at(0)), {"type": "Property", "value": 2}]}
    r = client.post(TEMPORAL, json=body, headers=SDM_HDR)
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
    assert "observedAt" in r.json()["detail"]
    assert client.get(f"{TEMPORAL}/{EID}", headers=SDM_HDR).status_code == 404


# -- retrieval --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded() -> Iterator[TestClient]:
    """Two traffic flows with five speed instances each (different values) and an intensity series."""
    platform = Platform.in_memory()
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        post_temporal(client, temporal_entity(
            intensity=[speed(100, at(0)), speed(200, at(1))],
            congested={"type": "Property", "value": True, "observedAt": at(2, 30)}))
        post_temporal(client, temporal_entity("urn:ngsi-ld:TrafficFlowObserved:t2",
                                              [(v * 2, t) for v, t in [(5.0, at(0)), (6.0, at(1))]]))
        yield client
    platform.close()


def test_retrieve_normalized_history(loaded: TestClient) -> None:
    r = loaded.get(f"{TEMPORAL}/{EID}", headers=SDM_HDR)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == EID and body["type"] == "TrafficFlowObserved"
    instances = body["averageVehicleSpeed"]
    assert [i["value"] for i in instances] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert all(i["type"] == "Property" and i["instanceId"].startswith("urn:") for i in instances)
    assert len({i["instanceId"] for i in instances}) == 5


@pytest.mark.parametrize(("params", "expected"), [
    ({"timerel": "before", "timeAt": at(0, 40)}, [10.0, 20.0]),
    ({"timerel": "after", "timeAt": at(0, 40)}, [40.0, 50.0]),
    ({"timerel": "between", "timeAt": at(0, 20), "endTimeAt": at(1, 10)}, [20.0, 30.0]),
    ({"lastN": "2"}, [40.0, 50.0]),
    ({"timerel": "before", "timeAt": at(1, 30), "lastN": "2"}, [30.0, 40.0]),
])
def test_timerel_and_last_n(loaded: TestClient, params: dict[str, str], expected: list[float]) -> None:
    got = history(loaded, attrs="averageVehicleSpeed", **params)
    assert [v for v, _ in values(got)] == expected
    assert set(got) == {"id", "type", "averageVehicleSpeed"}


def test_attrs_limits_the_history(loaded: TestClient) -> None:
    got = history(loaded, attrs="intensity")
    assert set(got) == {"id", "type", "intensity"}
    assert values(got, "intensity") == [(100, at(0)), (200, at(1))]


def test_temporal_values(loaded: TestClient) -> None:
    got = history(loaded, options="temporalValues", attrs="averageVehicleSpeed,congested")
    assert got["averageVehicleSpeed"] == {"type": "Property", "values": [
        [10.0, at(0)], [20.0, at(0, 20)], [30.0, at(0, 40)], [40.0, at(1, 10)], [50.0, at(2, 30)]]}
    assert got["congested"] == {"type": "Property", "values": [[True, at(2, 30)]]}


def test_aggregated_values_in_hourly_buckets(loaded: TestClient) -> None:
    got = history(loaded, options="aggregatedValues", aggrMethods="avg,max,min,sum,totalCount",
                  aggrPeriodDuration="PT1H", timerel="between", timeAt=at(0), endTimeAt=at(3),
                  attrs="averageVehicleSpeed")
    agg = got["averageVehicleSpeed"]
    assert agg["type"] == "Property"
    assert agg["avg"] == [[20.0, at(0), at(1)], [40.0, at(1), at(2)], [50.0, at(2), at(3)]]
    assert agg["max"] == [[30.0, at(0), at(1)], [40.0, at(1), at(2)], [50.0, at(2), at(3)]]
    assert agg["min"] == [[10.0, at(0), at(1)], [40.0, at(1), at(2)], [50.0, at(2), at(3)]]
    assert agg["sum"] == [[60.0, at(0), at(1)], [40.0, at(1), at(2)], [50.0, at(2), at(3)]]
    assert agg["totalCount"] == [[3, at(0), at(1)], [1, at(1), at(2)], [1, at(2), at(3)]]


def test_aggregated_values_over_the_whole_range(loaded: TestClient) -> None:
    got = history(loaded, options="aggregatedValues", aggrMethods="avg,totalCount,stddev",
                  timerel="between", timeAt=at(0), endTimeAt=at(3), attrs="averageVehicleSpeed")
    agg = got["averageVehicleSpeed"]
    assert agg["avg"] == [[30.0, at(0), at(3)]]
    assert agg["totalCount"] == [[5, at(0), at(3)]]
    assert agg["stddev"][0][0] == pytest.approx(200 ** 0.5)  # population stddev of 10..50


def test_query_across_entities_with_type_q_and_count(loaded: TestClient) -> None:
    r = loaded.get(TEMPORAL, params={"type": "TrafficFlowObserved", "timerel": "after", "timeAt": at(0, 30),
                                     "attrs": "averageVehicleSpeed", "count": "true"}, headers=SDM_HDR)
    assert r.status_code == 200, r.text
    assert r.headers["NGSILD-Results-Count"] == "2"
    by_id = {e["id"]: values(e) for e in r.json()}
    assert by_id == {EID: [(30.0, at(0, 40)), (40.0, at(1, 10)), (50.0, at(2, 30))],
                     "urn:ngsi-ld:TrafficFlowObserved:t2": [(12.0, at(1))]}
    r = loaded.get(TEMPORAL, params={"type": "TrafficFlowObserved", "q": "averageVehicleSpeed<20",
                                     "options": "temporalValues", "attrs": "averageVehicleSpeed"},
                   headers=SDM_HDR)
    assert r.status_code == 200
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:TrafficFlowObserved:t2"]  # current value 12
    assert r.json()[0]["averageVehicleSpeed"]["values"] == [[10.0, at(0)], [12.0, at(1)]]


def test_temporal_query_paginates_entities(loaded: TestClient) -> None:
    first = loaded.get(TEMPORAL, params={"type": "TrafficFlowObserved", "limit": "1"}, headers=SDM_HDR).json()
    second = loaded.get(TEMPORAL, params={"type": "TrafficFlowObserved", "limit": "1", "offset": "1"},
                        headers=SDM_HDR).json()
    assert len(first) == 1 and len(second) == 1 and first[0]["id"] != second[0]["id"]


def test_instances_come_back_as_written(client: TestClient) -> None:
    """Each instance's members, exactly: units and dataset ids only where given, sub-second times, whole
    numbers as integers, and non-numeric or structured instances mixed into a run of plain readings."""
    fractional = "2026-03-01T00:00:00.250Z"
    speeds = [speed(12.0, at(0), unitCode="KMH"), speed(12.5, fractional), speed(13, at(1), datasetId="urn:d:1"),
              speed(14.25, at(2), unitCode="KMH", accuracy={"type": "Property", "value": 0.5}),
              speed(15, at(3), unitCode="KMH")]
    post_temporal(client, temporal_entity(points=[], averageVehicleSpeed=speeds,
                                          state=[{"type": "Property", "value": "free", "observedAt": at(0)}]))
    plain = [speed(7.0, at(0)), speed(8, at(1), unitCode="KMH")]  # plain readings, one without a unit
    post_temporal(client, temporal_entity("urn:ngsi-ld:TrafficFlowObserved:t2", [], averageVehicleSpeed=plain))
    expected = [
        {"type": "Property", "value": 12, "unitCode": "KMH", "observedAt": at(0)},
        {"type": "Property", "value": 12.5, "observedAt": "2026-03-01T00:00:00.250000Z"},
        {"type": "Property", "value": 13, "datasetId": "urn:d:1", "observedAt": at(1)},
        {"type": "Property", "value": 14.25, "unitCode": "KMH", "observedAt": at(2),
         "accuracy": {"type": "Property", "value": 0.5}},
        {"type": "Property", "value": 15, "unitCode": "KMH", "observedAt": at(3)},
    ]
    got = history(client)
    instances = got["averageVehicleSpeed"]
    assert [{k: v for k, v in i.items() if k != "instanceId"} for i in instances] == expected
    assert [type(i["value"]) for i in instances] == [int, float, int, float, int]
    assert len({i["instanceId"] for i in instances}) == 5
    assert [(i["value"], i["observedAt"]) for i in got["state"]] == [("free", at(0))]
    # One attribute alone takes the store's single-series path: the same instances.
    assert history(client, attrs="averageVehicleSpeed")["averageVehicleSpeed"] == instances
    # Written out of time order: given back by observedAt, then in the order written.
    for points in ([speed(2, at(5)), speed(1, at(4))], [speed(3, at(5)), speed(0, at(3))]):
        r = client.post(f"{TEMPORAL}/{EID}/attrs", json={"late": points}, headers=SDM_HDR)
        assert r.status_code == 204, r.text
    for params in ({"attrs": "late"}, {}):
        assert values(history(client, **params), "late") == [(0, at(3)), (1, at(4)), (2, at(5)), (3, at(5))]
    # A query across entities splits the rows by entity and attribute the same way.
    r = client.get(TEMPORAL, params={"type": "TrafficFlowObserved"}, headers=SDM_HDR)
    by_id = {e["id"]: e for e in r.json()}
    assert by_id[EID]["averageVehicleSpeed"] == instances and by_id[EID]["state"] == got["state"]
    assert [{k: v for k, v in i.items() if k != "instanceId"}
            for i in by_id["urn:ngsi-ld:TrafficFlowObserved:t2"]["averageVehicleSpeed"]] == plain


def test_temporal_retrieve_unknown_entity_is_404(loaded: TestClient) -> None:
    r = loaded.get(f"{TEMPORAL}/urn:ngsi-ld:X:missing")
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"


# -- 206 + Content-Range -----------------------------------------------------------------------------


@pytest.fixture
def capped() -> Iterator[TestClient]:
    platform = Platform.in_memory(max_temporal_instances=5)
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        post_temporal(client, temporal_entity(points=[(float(h), at(h)) for h in range(8)]))
        yield client
    platform.close()


def test_over_the_cap_is_206_with_content_range(capped: TestClient) -> None:
    r = capped.get(f"{TEMPORAL}/{EID}", headers=SDM_HDR)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"date-time {at(0)}-{at(4)}/*"
    assert [v for v, _ in values(r.json())] == [0.0, 1.0, 2.0, 3.0, 4.0]
    # The client moves the window past what it got and receives the rest in full.
    r = capped.get(f"{TEMPORAL}/{EID}", params={"timerel": "after", "timeAt": at(4)}, headers=SDM_HDR)
    assert r.status_code == 200 and "Content-Range" not in r.headers
    assert [v for v, _ in values(r.json())] == [5.0, 6.0, 7.0]


def test_at_the_cap_is_200(capped: TestClient) -> None:
    r = capped.get(f"{TEMPORAL}/{EID}", params={"timerel": "before", "timeAt": at(5)}, headers=SDM_HDR)
    assert r.status_code == 200 and "Content-Range" not in r.headers
    assert len(r.json()["averageVehicleSpeed"]) == 5


def test_last_n_above_the_cap_keeps_the_newest_and_says_206(capped: TestClient) -> None:
    r = capped.get(f"{TEMPORAL}/{EID}", params={"lastN": "7"}, headers=SDM_HDR)
    assert r.status_code == 206, r.text
    assert [v for v, _ in values(r.json())] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert r.headers["Content-Range"] == f"date-time {at(3)}-{at(7)}/7"


def test_last_n_within_the_cap_is_200(capped: TestClient) -> None:
    r = capped.get(f"{TEMPORAL}/{EID}", params={"lastN": "3"}, headers=SDM_HDR)
    assert r.status_code == 200 and [v for v, _ in values(r.json())] == [5.0, 6.0, 7.0]


def test_query_over_the_cap_is_206(capped: TestClient) -> None:
    r = capped.get(TEMPORAL, params={"type": "TrafficFlowObserved"}, headers=SDM_HDR)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"date-time {at(0)}-{at(4)}/*"


# -- deletes -----------------------------------------------------------------------------------------


def test_delete_one_instance(client: TestClient) -> None:
    post_temporal(client, temporal_entity(points=[(1.0, at(0)), (2.0, at(1))]))
    first = history(client)["averageVehicleSpeed"][0]["instanceId"]
    url = f"{TEMPORAL}/{EID}/attrs/averageVehicleSpeed/{first}"
    assert client.delete(url, headers=SDM_HDR).status_code == 204
    assert values(history(client)) == [(2.0, at(1))]
    r = client.delete(url, headers=SDM_HDR)
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"


def test_modify_one_instance(client: TestClient) -> None:
    post_temporal(client, temporal_entity(points=[(1.0, at(0)), (2.0, at(1))]))
    first = history(client)["averageVehicleSpeed"][0]["instanceId"]
    r = client.patch(f"{TEMPORAL}/{EID}/attrs/averageVehicleSpeed/{first}",
                     json={"type": "Property", "value": 9.0, "observedAt": at(0)}, headers=SDM_HDR)
    assert r.status_code == 204, r.text
    assert values(history(client)) == [(9.0, at(0)), (2.0, at(1))]


def test_delete_temporal_attribute(client: TestClient) -> None:
    post_temporal(client, temporal_entity(points=[(1.0, at(0))], intensity=[speed(5, at(0))]))
    assert client.delete(f"{TEMPORAL}/{EID}/attrs/intensity", headers=SDM_HDR).status_code == 204
    got = history(client)
    assert "intensity" not in got and values(got) == [(1.0, at(0))]
    r = client.delete(f"{TEMPORAL}/{EID}/attrs/intensity", headers=SDM_HDR)
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"


def test_delete_temporal_entity_removes_entity_and_history(client: TestClient, platform: Platform) -> None:
    post_temporal(client, temporal_entity(points=[(1.0, at(0))]))
    assert client.delete(f"{TEMPORAL}/{EID}").status_code == 204
    assert client.get(f"{TEMPORAL}/{EID}").status_code == 404
    assert client.get(f"{ENTITIES}/{EID}").status_code == 404
    assert platform.store.history_count("") == 0
    r = client.delete(f"{TEMPORAL}/{EID}")
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"
