"""A saved rule that today's checks refuse (logged and not run, kept in rules.json) can be replaced by a valid
rule of the same id, or deleted: before, it stayed in the file for good, a DELETE answered 404, and a PUT left
two rules of one id in the file, the outcome of the next start depending on their order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import THRESHOLD_RULE, admin_headers

CHEAP = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64}
# An older Polis's rule kind this one no longer knows: refused at start, kept as it is.
STALE: dict[str, Any] = {"tenant": "", "rule": {**THRESHOLD_RULE, "id": "old-corner", "kind": "retired-kind"}}


def _saved(data_dir: Path) -> list[dict[str, Any]]:
    return orjson.loads((data_dir / "alerts" / "rules.json").read_bytes())  # type: ignore[no-any-return]


def _hub(data_dir: Path) -> Platform:
    (data_dir / "alerts").mkdir(parents=True, exist_ok=True)
    (data_dir / "alerts" / "rules.json").write_bytes(orjson.dumps([STALE]))
    return Platform(Settings(data_dir=data_dir, **CHEAP))


def test_a_valid_rule_of_the_same_id_replaces_the_refused_one(tmp_path: Path) -> None:
    platform = _hub(tmp_path)
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            assert client.get("/polis/v1/alerts/rules").json() == []  # refused: not run
            replaced = client.put("/polis/v1/alerts/rules/old-corner", json={**THRESHOLD_RULE, "id": "old-corner"})
            assert replaced.status_code == 201
        saved = _saved(tmp_path)
        assert [item["rule"]["id"] for item in saved] == ["old-corner"]
        assert saved[0]["rule"]["kind"] == THRESHOLD_RULE["kind"]
    finally:
        platform.close()


def test_a_refused_rule_can_be_deleted(tmp_path: Path) -> None:
    platform = _hub(tmp_path)
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            assert client.delete("/polis/v1/alerts/rules/old-corner").status_code == 204
            assert client.delete("/polis/v1/alerts/rules/old-corner").status_code == 404
        assert _saved(tmp_path) == []
    finally:
        platform.close()
