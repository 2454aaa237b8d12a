"""History rows carry an integer key per (tenant, entity): reads filter on it (DuckDB keeps only an 8-byte
prefix of strings in its row-group statistics, so a filter on "urn:ngsi-ld:..." ids can skip nothing), and
a database written by the previous schema version is migrated in place, nothing lost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np

from polis.store.base import HistoryColumns, TemporalQuery
from polis.store.duckdb_ import SCHEMA_VERSION, DuckDBStore

SPEED = "https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"
IDS = [f"urn:ngsi-ld:TrafficFlowObserved:sensor-{i}" for i in range(3)]


def _columns(ids: list[str], steps: int) -> HistoryColumns:
    """Entity-major readings: each id's `steps` readings one after the other, value = 100 * id + step."""
    start = np.datetime64("2024-01-01T00:00:00", "us")
    return HistoryColumns(
        entity_id=np.repeat(np.array(ids, dtype=object), steps),
        attribute=np.array([SPEED] * (len(ids) * steps), dtype=object),
        observed_at=np.tile(start + np.arange(steps) * np.timedelta64(300, "s"), len(ids)),
        value=np.concatenate([100.0 * k + np.arange(steps) for k in range(len(ids))]),
    )


def _values(store: DuckDBStore, tenant: str, eid: str) -> list[float]:
    got = store.temporal(tenant, [eid], TemporalQuery(attrs=(SPEED,), max_instances=10_000))
    return [i["value"] for i in got[eid][SPEED].instances] if eid in got else []


def test_each_entity_reads_back_only_its_own_instances_across_tenants(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "hub.duckdb")
    try:
        assert store.bulk_history("", _columns(IDS, 5)) == 15
        assert store.bulk_history("city-b", _columns(IDS[:1], 2)) == 2  # same id, other tenant: own key
        assert _values(store, "", IDS[1]) == [100, 101, 102, 103, 104]
        assert _values(store, "city-b", IDS[0]) == [0, 1]
        assert _values(store, "", "urn:ngsi-ld:TrafficFlowObserved:none") == []
        keys = store._con.execute("SELECT tenant, eid, hkey FROM history_keys ORDER BY hkey").fetchall()
        assert len({k for _, _, k in keys}) == 4 == len(keys)
    finally:
        store.close()
    reopened = DuckDBStore(tmp_path / "hub.duckdb")  # keys are loaded back, new ones continue after them
    try:
        reopened.bulk_history("", _columns(["urn:ngsi-ld:TrafficFlowObserved:new"], 1))
        assert _values(reopened, "", "urn:ngsi-ld:TrafficFlowObserved:new") == [0]
        assert _values(reopened, "", IDS[2]) == [200, 201, 202, 203, 204]
    finally:
        reopened.close()


def test_a_version_3_database_is_migrated_with_every_instance(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    con.execute(
        "CREATE TABLE history (tenant VARCHAR NOT NULL, eid VARCHAR NOT NULL, attr VARCHAR NOT NULL, "
        "dataset_id VARCHAR, observed_at TIMESTAMP NOT NULL, instance_id BIGINT NOT NULL, num DOUBLE, "
        "doc VARCHAR, unit_code VARCHAR)"
    )
    for n in range(6):  # interleaved, as a live stream writes them
        eid = IDS[n % 2]
        con.execute("INSERT INTO history VALUES ('', ?, ?, NULL, ?, ?, ?, NULL, 'KMH')",
                    [eid, SPEED, datetime(2024, 1, 1, 0, n), n + 1, float(n)])
    con.close()
    store = DuckDBStore(path)
    try:
        assert store._scalar("SELECT value FROM meta WHERE key = 'schema_version'") == SCHEMA_VERSION
        assert _values(store, "", IDS[0]) == [0, 2, 4]
        assert _values(store, "", IDS[1]) == [1, 3, 5]
        got = store.temporal("", [IDS[1]], TemporalQuery(attrs=(SPEED,), max_instances=10))
        assert got[IDS[1]][SPEED].instances[0] == {
            "type": "Property", "value": 1, "unitCode": "KMH", "observedAt": "2024-01-01T00:01:00Z",
            "instanceId": "urn:ngsi-ld:Instance:2",
        }
        # a new instance after the migration gets the next instance id and the entity's existing key
        store.bulk_history("", HistoryColumns(
            np.array([IDS[0]], dtype=object), np.array([SPEED], dtype=object),
            np.array([datetime(2024, 1, 2, tzinfo=UTC).replace(tzinfo=None)], dtype="datetime64[us]"),
            np.array([9.0])))
        assert _values(store, "", IDS[0]) == [0, 2, 4, 9]
        assert store._scalar("SELECT count(DISTINCT hkey) FROM history") == 2
    finally:
        store.close()
