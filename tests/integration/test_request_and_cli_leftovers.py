"""Behaviour a user relies on that earlier fuzzing noted but left open: a query parameter given twice is refused
rather than silently answered for its last value, reading commands pointed at a directory with no hub say so
instead of creating one there, commands that open a hub a server holds say so, and an alert rule's scope is
bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import THRESHOLD_RULE, Server, hub_client, problem, start_server, stop_server

POLIS = Path(sys.executable).with_name("polis")
RULES = "/polis/v1/alerts/rules"
SENSOR = {
    "id": "urn:ngsi-ld:CrowdFlowObserved:repeat-1",
    "type": "CrowdFlowObserved",
    "peopleCount": {"type": "Property", "value": 12},
}


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `polis serve` for the tests that need its files held."""
    server = start_server(tmp_path_factory.mktemp("served") / "hub")
    yield server
    stop_server(server.process)


@pytest.mark.parametrize(
    "path",
    [
        "/ngsi-ld/v1/entities?type=CrowdFlowObserved&type=TrafficFlowObserved",
        "/ngsi-ld/v1/entities?type=CrowdFlowObserved&limit=5&limit=500",
        "/ngsi-ld/v1/temporal/entities?type=CrowdFlowObserved&lastN=1&lastN=2",
        "/polis/v1/alerts?status=all&status=active",
    ],
)
def test_a_query_parameter_given_twice_is_refused_naming_it(hub: tuple[TestClient, Platform], path: str) -> None:
    client, _ = hub
    name = path.rsplit("&", 1)[1].split("=")[0]
    problem(client.get(path), 400, "BadRequestData", f"'{name}'", "more than once")


def test_each_parameter_once_is_answered(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    assert client.post("/ngsi-ld/v1/entities", json=SENSOR).status_code == 201
    r = client.get("/ngsi-ld/v1/entities?type=CrowdFlowObserved&limit=5&options=keyValues")
    assert r.status_code == 200, r.text
    assert [e["peopleCount"] for e in r.json()] == [12]


def test_a_repeated_parameter_writes_nothing(hub: tuple[TestClient, Platform]) -> None:
    client, platform = hub
    r = client.post("/ngsi-ld/v1/entities?options=keyValues&options=keyValues", json=SENSOR)
    problem(r, 400, "BadRequestData", "'options'")
    assert platform.store.entity_count("") == 0


def _polis(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("POLIS_DATA_DIR", None)
    return subprocess.run(
        [str(POLIS), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd, check=False
    )


@pytest.mark.parametrize("command", [["archive"], ["admin", "list"]])
def test_reading_commands_on_a_missing_hub_fail_and_create_nothing(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-such-hub"
    result = _polis(tmp_path, *command, "--data-dir", str(missing))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert f"no hub at {missing}" in " ".join(output.split()), output
    assert not missing.exists()  # nothing was created: no database, no admin key


def test_admin_list_on_an_existing_hub_still_lists(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    assert _polis(tmp_path, "admin", "department", "transport", "--data-dir", str(hub)).returncode == 0
    result = _polis(tmp_path, "admin", "list", "--data-dir", str(hub))
    assert result.returncode == 0, result.stderr
    assert "transport" in result.stdout


@pytest.mark.parametrize(
    ("scope", "field"),
    [
        ({"ids": [f"urn:ngsi-ld:CrowdFlowObserved:{i}" for i in range(10_001)]}, "scope.ids"),
        ({"ids": ["urn:ngsi-ld:CrowdFlowObserved:" + "x" * 2_000]}, "scope.ids.0"),
        ({"idPattern": "a" * 2_000}, "scope.idPattern"),
    ],
)
def test_an_alert_rule_scope_is_bounded(hub: tuple[TestClient, Platform], scope: dict[str, Any], field: str) -> None:
    """A rule is evaluated on every write of its type: an unbounded id list is a cost on every write."""
    client, _ = hub
    r = client.post(RULES, json={**THRESHOLD_RULE, "scope": {"type": "CrowdFlowObserved", **scope}})
    assert problem(r, 400, "BadRequestData", f"'{field}'")["field"] == field
    assert client.get(RULES).json() == []


def test_an_alert_rule_scope_within_the_bounds_is_kept(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    ids = [f"urn:ngsi-ld:CrowdFlowObserved:{i}" for i in range(10_000)]
    r = client.post(RULES, json={**THRESHOLD_RULE, "scope": {"type": "CrowdFlowObserved", "ids": ids}})
    assert r.status_code == 201, r.text[:300]
    assert client.get(f"{RULES}/busy-corner").json()["scope"]["ids"] == ids


@pytest.mark.parametrize(
    "command",
    [
        ["ingest", "los-loop"],
        ["archive"],
        ["flows", "--day", "2017-02-01"],
        ["privacy", "budget"],
        ["serve", "--port", "0"],
    ],
)
def test_commands_that_open_a_served_hub_say_a_server_holds_it(
    tmp_path: Path, command: list[str], served: Server
) -> None:
    """DuckDB lets one process open a database: while `polis serve` runs, a command that opens its files gets
    one clear line naming the file and what holds it, not DuckDB's traceback."""
    result = _polis(tmp_path, *command, "--data-dir", str(served.data_dir))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, output[-1500:]
    assert "Traceback" not in output, output[-1500:]
    assert f"{served.data_dir / 'polis.duckdb'} is locked by process {served.process.pid}" in output, output[-800:]
    assert "running `polis serve`" in output


def _sensors(n: int) -> list[dict[str, Any]]:
    return [{**SENSOR, "id": f"urn:ngsi-ld:CrowdFlowObserved:batch-{k}"} for k in range(n)]


@pytest.mark.parametrize("op", ["create", "upsert", "update", "delete"])
def test_a_batch_over_the_entity_limit_is_refused_whole(op: str) -> None:
    for client, platform in hub_client(max_batch_entities=3):
        assert client.post("/ngsi-ld/v1/entityOperations/create", json=_sensors(3)).status_code == 201
        items: list[Any] = _sensors(4) if op != "delete" else [s["id"] for s in _sensors(4)]
        r = client.post(f"/ngsi-ld/v1/entityOperations/{op}", json=items)
        problem(r, 400, "BadRequestData", "holds 4 entities", "more than the 3", "POLIS_MAX_BATCH_ENTITIES")
        assert platform.store.entity_count("") == 3  # nothing of it was written (or deleted)


def test_a_post_query_over_the_entity_limit_is_refused() -> None:
    for client, _ in hub_client(max_batch_entities=3):
        selectors = [{"type": "CrowdFlowObserved", "id": s["id"]} for s in _sensors(4)]
        r = client.post("/ngsi-ld/v1/entityOperations/query", json={"type": "Query", "entities": selectors})
        problem(r, 400, "BadRequestData", "Query.entities holds 4")
        r = client.post("/ngsi-ld/v1/entityOperations/query", json={"type": "Query", "entities": selectors[:3]})
        assert r.status_code == 200, r.text
