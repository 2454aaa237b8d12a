"""Shared fixtures: an in-memory platform with an in-process client, and a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.ingest.broker import Broker, start_broker
from polis.localserver import Server, free_port, start_server, stop_server
from polis.platform import Platform

__all__ = [
    "ERR", "LINK_SDM", "THRESHOLD_RULE", "Server", "admin_headers", "free_port", "hub_client", "key_headers", "problem",
    "start_server", "stop_server",
]

SDM_TRANSPORT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
LINK_SDM = f'<{SDM_TRANSPORT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
# The smallest valid alert rule (polis.alerts): tests that send rules change one member of it.
THRESHOLD_RULE: dict[str, Any] = {
    "id": "busy-corner",
    "kind": "threshold",
    "name": "Busy corner",
    "scope": {"type": "CrowdFlowObserved"},
    "attribute": "peopleCount",
    "above": 100,
}


@pytest.fixture
def platform() -> Iterator[Platform]:
    p = Platform.in_memory()
    yield p
    p.close()


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    # Enforcement is on: the client acts as the bootstrap admin department (tests/*/test_access_* cover the rest).
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as c:
        yield c


def admin_headers(platform: Platform) -> dict[str, str]:
    """The bootstrap admin key of this hub, as a request header."""
    return {"Authorization": f"Bearer {platform.access.admin_key()}"}


def key_headers(data_dir: Path) -> dict[str, str]:
    """The admin key a `polis serve` on `data_dir` wrote on first start; none before it did."""
    key_file = data_dir / "admin.key"
    return {"Authorization": f"Bearer {key_file.read_text().strip()}"} if key_file.is_file() else {}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto on a free loopback port, one per test module that asks for it."""
    b = start_broker(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "hub")
    yield srv
    stop_server(srv.process)


def hub_client(**overrides: object) -> Iterator[tuple[TestClient, Platform]]:
    """An in-memory hub with these settings and an admin client on it (for fixtures: `yield from`)."""
    platform = Platform.in_memory(**overrides)
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        yield client, platform
    platform.close()


def problem(r: Any, status: int, name: str | None, *fragments: str) -> dict[str, Any]:
    """The response is an NGSI-LD problem (of type `name`, if given) whose detail names every fragment."""
    assert r.status_code == status, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    assert isinstance(body.get("type"), str) and body["type"].startswith(ERR), body
    if name is not None:
        assert body["type"] == ERR + name, body
    assert body.get("title")
    detail = body["detail"]
    assert isinstance(detail, str) and detail
    for fragment in fragments:
        assert fragment.lower() in detail.lower(), (fragment, detail)
    return body  # type: ignore[no-any-return]
