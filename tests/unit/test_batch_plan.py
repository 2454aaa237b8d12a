"""Batch plans (polis.ngsi_ld.batch_plan) give exactly what the generic reader and index give, or step aside."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.domain.errors import NgsiError, PersonalDataRefused
from polis.ngsi_ld.batch_plan import expand_batch, signature
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entities import EntityService
from polis.ngsi_ld.entity_codec import expand_entity
from polis.ngsi_ld.events import EventBus
from polis.store.attr_index import attr_index_rows
from polis.store.duckdb_ import DuckDBStore
from tests.threads import errors_from_threads

NOW = "2026-11-27T08:00:00.000000Z"


def _terms() -> TermMap:
    # A fresh TermMap per test: plans live in it, so no test sees another's plans.
    return TermMap({"speed": "https://example.org/speed"}, {"ex": "https://example.org/"}, "https://example.org/v#", {})


def sensor(i: int, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"urn:ngsi-ld:TrafficFlowObserved:{i}",
        "type": "TrafficFlowObserved",
        "speed": {"type": "Property", "value": 50.5 + i, "observedAt": "2024-05-01T10:00:00+02:00", "unitCode": "KMH"},
        "intensity": {"type": "Property", "value": 7 * i, "observedAt": "2024-05-01T08:00:00Z"},
        "status": {"type": "Property", "value": "free", "datasetId": "urn:ngsi-ld:Dataset:a"},
        "congested": {"type": "Property", "value": False},
        "refRoad": {"type": "Relationship", "object": "urn:ngsi-ld:Road:1", "observedAt": "2024-05-01T08:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-118.25 + i / 1000, 34.05]}},
    }
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def generic(item: Any, terms: TermMap) -> Any:
    try:
        return expand_entity(copy.deepcopy(item), terms, NOW)
    except NgsiError as error:
        return (type(error), error.detail)


def check_same_as_generic(items: list[Any]) -> None:
    """Each item as the generic reader has it; the plans' index rows as attr_index_rows has them."""
    terms = _terms()
    expected = [generic(item, terms) for item in items]
    out = expand_batch(items, lambda _item: terms, NOW)
    got = [(type(e), e.detail) if isinstance(e, NgsiError) else e for e in out.entities]
    assert got == expected
    if out.index is not None:
        by_owner: dict[int, list[Any]] = {}
        for owner, path, num, txt, flag in out.index.rows():
            by_owner.setdefault(owner, []).append((path, num, txt, flag))
        for k, entity in enumerate(out.index.entities):
            wanted = sorted((r[1:] for r in attr_index_rows(entity, 0)), key=repr)
            assert sorted(by_owner.get(k, []), key=repr) == wanted


def test_a_sensor_batch_goes_by_plan_and_matches_the_generic_path() -> None:
    items = [sensor(i) for i in range(20)]
    terms = _terms()
    out = expand_batch(items, lambda _item: terms, NOW)
    assert out.index is not None and len(out.index.entities) == 20  # every item went by the plan
    assert len(out.cleared) == 20
    check_same_as_generic(items)


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "not a uri"},
        {"id": 5},
        {"id": "urn:" + "x" * 600},
        {"speed": {"type": "Property", "value": 1.0, "observedAt": "yesterday"}},
        {"speed": {"type": "Property", "value": 1.0, "observedAt": None}},
        {"speed": {"type": "Property", "value": 1.0, "unitCode": ""}},
        {"speed": {"type": "Property", "value": 1.0, "unitCode": 3}},
        {"speed": {"type": "Property", "value": None}},
        {"speed": {"type": "Property", "value": 10**400}},
        {"speed": {"type": "Property", "value": float("inf")}},
        {"speed": {"type": "Property", "value": [1, 2]}},
        {"speed": {"type": "Property", "value": {"@type": "DateTime", "@value": "2024-05-01T10:00:00Z"}}},
        {"speed": {"type": "Property", "value": 1, "createdAt": "2020-01-01T00:00:00Z"}},
        {"speed": {"type": "Property", "value": 1, "sub": {"type": "Property", "value": 2}}},
        {"speed": {"value": 1}},
        {"speed": 3},
        {"status": {"type": "Property", "value": "x", "datasetId": "not a uri"}},
        {"refRoad": {"type": "Relationship", "object": "no uri"}},
        {"refRoad": {"type": "Relationship", "object": ["urn:a:1", "urn:b:2"]}},
        {"refRoad": {"type": "Relationship", "object": "urn:a:1", "unitCode": "X"}},
        {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [200.0, 10.0]}}},
        {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [10.0, -95.0]}}},
        {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [True, 10.0]}}},
        {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0, 3.0]}}},
        {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0]}}},
        {"location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}},
        {"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2], "bbox": [1, 2]}}},
        {"type": "Bad Type"},
        {"type": ["A", "B"]},
        {"type": None},
        {"scope": "/a/b"},
        {"createdAt": {"type": "Property", "value": 1}},
        {"bad name": {"type": "Property", "value": 1}},
        {"ex:speed": {"type": "Property", "value": 2}},  # the same IRI as `speed`: given twice
        {"speed": {"type": "Unknown", "value": 1}},
        {"@context": "https://example.org/ctx.jsonld"},
    ],
)
def test_items_the_plans_do_not_cover_or_refuse_get_the_generic_answer(changes: dict[str, Any]) -> None:
    # The odd item sits among good ones of the usual shape, and also leads its own batch (the item a plan
    # for its shape would be made from).
    check_same_as_generic([sensor(0), sensor(1, **changes), sensor(2)])
    check_same_as_generic([sensor(1, **changes), sensor(2, **changes), sensor(3)])


def test_a_plan_is_made_once_per_shape_and_context() -> None:
    terms = _terms()
    expand_batch([sensor(i) for i in range(3)], lambda _item: terms, NOW)
    assert signature(sensor(0)) in terms.plans and terms.plans[signature(sensor(0))] is not None
    assert len(terms.plans) == 1
    compound = {"id": "urn:a:1", "type": "T", "x": {"type": "Property", "value": {"a": 1}}}
    expand_batch([compound], lambda _item: terms, NOW)
    assert terms.plans[signature(compound)] is None  # remembered: no plan for a compound value
    assert signature({"id": "urn:a:1", "type": "T", "x": [{"type": "Property", "value": 1}]}) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"status": {"type": "Property", "value": "jane.doe@example.org"}},
        {"status": {"type": "Property", "value": "00:1A:2B:3C:4D:5E"}},
        {"status": {"type": "Property", "value": "+61 3 9658 9658"}},
        {"id": "urn:ngsi-ld:Person:jane.doe@example.org"},
        {"refRoad": {"type": "Relationship", "object": "mailto:jane.doe@example.org"}},
        {"status": {"type": "Property", "value": "free", "datasetId": "urn:x:jane.doe@example.org"}},
        {"faceImage": {"type": "Property", "value": "x"}},
        {"licencePlate": {"type": "Property", "value": "ABC123"}},
    ],
)
def test_identifying_items_are_left_to_the_privacy_gate(changes: dict[str, Any]) -> None:
    terms = _terms()
    items = [sensor(0), sensor(1, **changes)]
    out = expand_batch(items, lambda _item: terms, NOW)
    flagged = out.entities[1]
    assert isinstance(flagged, dict) and id(flagged) not in out.cleared
    assert id(out.entities[0]) in out.cleared
    service = EntityService(DuckDBStore(None), EventBus(), clock=lambda: NOW)
    with pytest.raises(PersonalDataRefused):
        service.batch("", "upsert", items, lambda _item: terms)
    assert service.store.entity_count("") == 0  # the whole batch is refused, nothing stored


_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=30),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    speeds=st.lists(_values, min_size=1, max_size=6),
    lon=st.floats(-200, 200),
    lat=st.floats(-100, 100),
    when=st.sampled_from(["2024-05-01T10:00:00Z", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z", "x"]),
    unit=st.sampled_from(["KMH", "", "M/S"]),
)
def test_random_values_in_a_known_shape(speeds: list[Any], lon: float, lat: float, when: str, unit: str) -> None:
    items = [sensor(0)] + [
        sensor(
            k + 1,
            speed={"type": "Property", "value": v, "observedAt": when, "unitCode": unit},
            location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
        )
        for k, v in enumerate(speeds)
    ]
    check_same_as_generic(items)


def _index(store: Any) -> list[tuple[Any, ...]]:
    return (
        store.connection()
        .execute(
            "SELECT e.id, p.path, a.num, a.txt, a.bool FROM attr_index a"
            " JOIN entities e USING (tenant, ver) JOIN attr_paths p ON p.id = a.path ORDER BY ALL"
        )
        .fetchall()
    )


def test_the_store_holds_the_same_index_whichever_path_built_it() -> None:
    terms = _terms()
    items = [sensor(i) for i in range(30)] + [sensor(3, status={"type": "Property", "value": "duplicate id"})]
    planned = EntityService(DuckDBStore(None), EventBus(), clock=lambda: NOW)
    result = planned.batch("", "upsert", copy.deepcopy(items), lambda _item: terms)
    assert len(result.success) == 30 and [eid for eid, _ in result.errors] == [items[3]["id"]]
    plain = DuckDBStore(None)
    plain.write("", upserts=[expand_entity(copy.deepcopy(item), terms, NOW) for item in items[:30]])
    assert _index(planned.store) == _index(plain)
    assert not [row for row in _index(planned.store) if row[3] == "duplicate id"]  # the refused item is not indexed
    # An update by plan of entities indexed by plan replaces their rows.
    items[5]["speed"]["value"] = 99.0
    planned.batch("", "upsert", copy.deepcopy(items[:30]), lambda _item: terms)
    plain.write("", upserts=[expand_entity(copy.deepcopy(item), terms, NOW) for item in items[:30]])
    assert _index(planned.store) == _index(plain)


def test_merge_and_update_do_not_use_the_plans_rows() -> None:
    terms = _terms()
    service = EntityService(DuckDBStore(None), EventBus(), clock=lambda: NOW)
    service.batch("", "upsert", [sensor(i) for i in range(5)], lambda _item: terms)
    later = EntityService(service.store, EventBus(), clock=lambda: "2026-11-28T00:00:00.000000Z")
    later.batch("", "update", [sensor(i, speed=None) for i in range(5)], lambda _item: terms)
    plain = DuckDBStore(None)
    stored = service.store.get("", [sensor(i)["id"] for i in range(5)])
    plain.write("", upserts=list(stored.values()))
    assert _index(service.store) == _index(plain)


def _history(store: Any) -> list[tuple[Any, ...]]:
    return (
        store.connection()
        .execute("SELECT eid, attr, dataset_id, observed_at, num, doc, unit_code FROM history ORDER BY ALL")
        .fetchall()
    )


def test_a_batch_stores_the_history_the_generic_path_stores() -> None:
    from polis.ngsi_ld.entities import _changed, history_of

    terms = _terms()
    first = [sensor(i) for i in range(6)] + [
        sensor(
            9,
            status={
                "type": "Property",
                "value": 3,
                "observedAt": "2024-05-01T08:00:00Z",
                "datasetId": "urn:ngsi-ld:Dataset:b",
            },
        )
    ]
    second = [
        sensor(i, intensity={"type": "Property", "value": 1000 + i, "observedAt": "2024-05-01T08:05:00Z"})
        for i in range(6)
    ]
    service = EntityService(DuckDBStore(None), EventBus(), clock=lambda: NOW)
    plain = DuckDBStore(None)
    for batch in (first, second):
        service.batch("", "upsert", copy.deepcopy(batch), lambda _item: terms)
        news = [expand_entity(copy.deepcopy(item), terms, NOW) for item in batch]
        olds = plain.get("", [e["id"] for e in news])
        history = [h for e in news for h in history_of(e, _changed(olds[e["id"]], e) if e["id"] in olds else None)]
        plain.write("", upserts=news, history=history)
    rows = _history(service.store)
    assert rows == _history(plain)
    # Numbers, strings, relationships, a dataset's reading; the repeated speed of the second batch is not new.
    assert len(rows) == 7 * 3 + 1 + 6


class _InterleavingStore(DuckDBStore):
    """The real store, with a hook run right after a write is prepared: another writer gets in there."""

    hook: Any = None

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        prepared = super().prepare(*args, **kwargs)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return prepared


def test_a_batch_prepared_outside_the_lock_is_redone_when_another_write_got_in_first() -> None:
    terms = _terms()
    store = _InterleavingStore(None)
    service = EntityService(store, EventBus(), clock=lambda: NOW)
    service.batch("", "upsert", [sensor(i) for i in range(3)], lambda _item: terms)
    concurrent = sensor(1, speed={"type": "Property", "value": 777.0, "observedAt": "2024-05-01T08:01:00Z"})
    newcomer = sensor(7)
    store.hook = lambda: service.batch("", "upsert", [copy.deepcopy(concurrent), sensor(7)], lambda _item: terms)
    ours = [sensor(i, speed={"type": "Property", "value": 5.0, "observedAt": "2024-05-01T08:02:00Z"}) for i in (0, 1)]
    result = service.batch("", "upsert", [*ours, copy.deepcopy(newcomer)], lambda _item: terms)
    assert result.success == [ours[0]["id"], ours[1]["id"], newcomer["id"]]
    assert result.created == []  # redone: the newcomer had been created by the other write meanwhile
    speeds = store.connection().execute(
        "SELECT observed_at::VARCHAR, num FROM history WHERE eid = ? AND attr = ? ORDER BY observed_at",
        [ours[1]["id"], "https://example.org/speed"],
    ).fetchall()
    assert [num for _, num in speeds] == [51.5, 777.0, 5.0]  # nothing lost, nothing twice
    keys = store.connection().execute("SELECT eid, count(DISTINCT hkey) FROM history GROUP BY eid").fetchall()
    assert all(count == 1 for _, count in keys) and len(keys) == 4


def test_concurrent_batches_keep_documents_history_and_index_consistent() -> None:
    import random

    terms = _terms()
    store = DuckDBStore(None)
    service = EntityService(store, EventBus(), clock=lambda: NOW)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for round_ in range(15):
            ids = rng.sample(range(40), 12)
            when = f"2024-05-01T{seed:02d}:{round_:02d}:00Z"
            batch = [
                sensor(i, speed={"type": "Property", "value": float(seed * 100 + round_), "observedAt": when})
                for i in ids
            ]
            service.batch("", "upsert", batch, lambda _item: terms)

    assert not errors_from_threads(client, 4)
    docs = store.get("", [sensor(i)["id"] for i in range(40)])
    rebuilt = DuckDBStore(None)
    rebuilt.write("", upserts=list(docs.values()))
    assert _index(store) == _index(rebuilt)  # the index says what the documents say
    keys = store.connection().execute("SELECT eid, count(DISTINCT hkey) FROM history GROUP BY eid").fetchall()
    assert all(count == 1 for _, count in keys)
    written = store.connection().execute("SELECT count(*) FROM history WHERE attr = 'https://example.org/speed'")
    assert written.fetchall()[0][0] == 4 * 15 * 12  # every reading of every batch, once


def test_a_shape_refused_by_a_field_name_stays_refused_whatever_its_values() -> None:
    terms = _terms()
    service = EntityService(DuckDBStore(None), EventBus(), clock=lambda: NOW)

    def kiosk(i: int, value: str) -> dict[str, Any]:
        return {"id": f"urn:ngsi-ld:Kiosk:{i}", "type": "Kiosk", "contactEmail": {"type": "Property", "value": value}}

    for body in ([kiosk(1, "alice@example.org")], [kiosk(2, "see the desk")], [kiosk(3, "see the desk")]):
        with pytest.raises(PersonalDataRefused):
            service.batch("", "upsert", body, lambda _item: terms)
    assert service.store.entity_count("") == 0


def test_integers_beyond_double_precision_are_stored_as_the_generic_path_stores_them() -> None:
    terms = _terms()
    big = 1_700_000_000_000_000_000  # epoch nanoseconds: over 2^53
    items = [sensor(i, intensity={"type": "Property", "value": big + i}) for i in range(3)]
    planned = EntityService(DuckDBStore(None), EventBus(), clock=lambda: NOW)
    planned.batch("", "upsert", copy.deepcopy(items), lambda _item: terms)
    plain = DuckDBStore(None)
    plain.write("", upserts=[expand_entity(copy.deepcopy(item), terms, NOW) for item in items])
    assert _index(planned.store) == _index(plain)
    assert planned.store.get("", [items[0]["id"]])[items[0]["id"]]["https://example.org/v#intensity"][0]["value"] == big


@pytest.mark.parametrize("replace", [True, False])
def test_a_batch_redone_after_a_delete_recreates_the_entity_afresh(replace: bool) -> None:
    terms = _terms()
    store = _InterleavingStore(None)
    clock = ["2020-01-01T00:00:00.000000Z"]
    service = EntityService(store, EventBus(), clock=lambda: clock[0])
    service.batch("", "upsert", [sensor(1)], lambda _item: terms)
    clock[0] = NOW
    eid = sensor(1)["id"]
    store.hook = lambda: service.batch("", "delete", [eid], lambda _item: terms)
    result = service.batch("", "upsert", [sensor(1)], lambda _item: terms, replace=replace)
    assert result.created == [eid]
    doc = store.get("", [eid])[eid]
    assert doc["createdAt"] == NOW and doc["https://example.org/speed"][0]["createdAt"] == NOW
    rebuilt = DuckDBStore(None)
    rebuilt.write("", upserts=[doc])
    assert _index(store) == _index(rebuilt)


def test_a_write_of_only_missing_readings_keeps_its_receipts() -> None:
    import numpy as np

    from polis.store.base import HistoryColumns

    store = DuckDBStore(None)
    nan = HistoryColumns(
        entity_id=np.array(["urn:a:1"], dtype=object),
        attribute=np.array(["https://example.org/speed"], dtype=object),
        observed_at=np.array(["2024-05-01T00:00:00"], dtype="datetime64[us]"),
        value=np.array([np.nan]),
    )
    store.write("", history_columns=nan, receipts=[("mqtt", "k1")])
    assert store.seen("mqtt", ["k1"]) == {"k1"} and store.history_count("") == 0


def test_a_write_prepared_against_an_older_state_is_refused_not_stored_twice() -> None:
    store = DuckDBStore(None)
    entity = {"id": "urn:a:1", "type": ["T"], "createdAt": NOW, "modifiedAt": NOW}
    prepared = store.prepare("", upserts=[dict(entity)])
    store.write("", upserts=[dict(entity)])
    with pytest.raises(RuntimeError, match="prepare it again"):
        store.apply(prepared)
    assert store.entity_count("") == 1


def test_the_memory_of_past_writes_is_bounded_and_errs_on_the_safe_side(monkeypatch: pytest.MonkeyPatch) -> None:
    import polis.store.duckdb_ as duckdb_store

    monkeypatch.setattr(duckdb_store, "LAST_WRITES_KEPT", 5)
    store = DuckDBStore(None)
    entity = {"id": "urn:a:0", "type": ["T"], "createdAt": NOW, "modifiedAt": NOW}
    store.write("", upserts=[dict(entity)])
    old_snapshot = store.commit_number()
    for k in range(1, 40):  # entities created and deleted again: nothing of them stays in the directory
        store.write("", upserts=[{**entity, "id": f"urn:a:{k}"}])
        store.write("", deletes=[f"urn:a:{k}"])
    assert len(store._last_write) <= 2 * 1 + 5 + 2
    assert not store.unchanged_since("", ["urn:a:0"], old_snapshot)  # forgotten: not taken as unchanged
    assert store.unchanged_since("", ["urn:a:0"], store.commit_number())
