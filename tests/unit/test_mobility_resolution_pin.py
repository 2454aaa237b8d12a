"""A dataset's cells keep the H3 resolutions of its first load: loading it again under another
POLIS_H3_RESOLUTION or POLIS_OD_H3_RESOLUTION is refused before anything is written, since counts at two
resolutions could be subtracted from each other for what suppression hides."""

from __future__ import annotations

from collections.abc import Iterator

import h3
import pytest

from polis.mobility.citibike import DATASET, ZONE
from polis.mobility.ingest import ingest_trips
from polis.mobility.store import MobilityStore
from polis.store.duckdb_ import DuckDBStore
from tests.unit.test_mobility_walkthrough_fixes import settings, synthetic_trips


@pytest.fixture
def store() -> Iterator[DuckDBStore]:
    s = DuckDBStore(None)
    ingest_trips(settings(), s, synthetic_trips(), ZONE)  # the defaults: cells at 8, OD areas at 7
    yield s
    s.close()


def _stored_cells(store: DuckDBStore) -> tuple[set[int], int]:
    mobility = MobilityStore(store)
    cells = {h3.get_resolution(a.area) for unit in ("cell", "od") for a in mobility.areas(DATASET, unit)}
    rows = store.connection().execute("SELECT count(*) FROM mobility_flows").fetchone()
    assert rows is not None
    return cells, int(rows[0])


def test_the_first_load_fixes_the_resolutions(store: DuckDBStore) -> None:
    assert MobilityStore(store).resolutions(DATASET) == {"cell": 8, "od": 7}
    assert MobilityStore(store).resolutions("another-dataset") == {}


@pytest.mark.parametrize(
    ("override", "named"),
    [({"h3_resolution": 9}, "POLIS_H3_RESOLUTION=8"), ({"od_h3_resolution": 6}, "POLIS_OD_H3_RESOLUTION=7")],
)
def test_a_load_at_another_resolution_is_refused_and_writes_nothing(
    store: DuckDBStore, override: dict[str, int], named: str
) -> None:
    before = _stored_cells(store)
    with pytest.raises(ValueError, match=named) as refused:
        ingest_trips(settings(**override), store, synthetic_trips(), ZONE)
    assert "new hub" in str(refused.value)
    assert _stored_cells(store) == before == ({7, 8}, before[1])


def test_a_load_at_the_same_resolutions_still_replaces_its_days(store: DuckDBStore) -> None:
    before = _stored_cells(store)
    ingest_trips(settings(), store, synthetic_trips(), ZONE)
    assert _stored_cells(store) == before
