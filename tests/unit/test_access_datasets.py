"""Which dataset an entity belongs to: declared rules on its id, the same in Python and in the store's SQL."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.access.datasets import DATASETS, OTHER, TYPE_DATASETS, dataset_of, dataset_sql


@pytest.mark.parametrize(
    "entity_id,dataset",
    [
        ("urn:ngsi-ld:TrafficFlowObserved:los-loop:773869", "los-loop"),
        ("urn:ngsi-ld:TrafficFlowObserved:sz-taxi:12", "sz-taxi"),  # same type, other dataset: the id decides
        ("urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:4", "melbourne-pedestrians"),
        ("urn:ngsi-ld:EmergencyCall:montgomery-911:ab12", "montgomery-911"),
        ("urn:ngsi-ld:Alert:rule-1:2026", "alerts"),  # by the type named in the id
        ("urn:ngsi-ld:Alert:x", "alerts"),
        ("urn:ngsi-ld:Sensor:tour-2", OTHER),
        ("urn:ngsi-ld:TrafficFlowObserved:los-loop", OTHER),  # no local part after the dataset
        ("URN:NGSI-LD:TrafficFlowObserved:los-loop:1", OTHER),  # exact spelling only, as in SQL
        ("urn:ngsi-ld:TrafficFlowObserved:Los-Loop:1", OTHER),
        ("https://example.org/los-loop:1", OTHER),
        ("urn:ngsi-ld:Alert", OTHER),
    ],
)
def test_dataset_of_follows_the_declared_rules(entity_id: str, dataset: str) -> None:
    assert dataset_of(entity_id) == dataset


_pieces = st.sampled_from([*DATASETS, *TYPE_DATASETS, "urn", "ngsi-ld", "", "x", "Sensor", "LOS-LOOP", "a'b", "é"])
_ids = st.lists(_pieces, min_size=1, max_size=7).map(":".join) | st.text(max_size=40)


@settings(max_examples=25, deadline=None)
@given(st.lists(_ids, min_size=1, max_size=400))
def test_sql_and_python_agree_on_every_id(ids: list[str]) -> None:
    """Queries are narrowed in SQL and single entities checked in Python: the two must never disagree."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT i, {dataset_sql('i')} FROM (SELECT unnest(?::VARCHAR[]) AS i)", [ids]
        ).fetchall()
    finally:
        con.close()
    assert {i: d for i, d in rows} == {i: dataset_of(i) for i in ids}
