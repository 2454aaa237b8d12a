"""Shared fixtures: an in-memory platform with an in-process client, and a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.localserver import Server, free_port, start_server, stop_server
from polis.platform import Platform

__all__ = ["LINK_SDM", "Server", "admin_headers", "free_port", "key_headers", "start_server", "stop_server"]

SDM_TRANSPORT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
LINK_SDM = f'<{SDM_TRANSPORT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "hub")
    yield srv
    stop_server(srv.process)
