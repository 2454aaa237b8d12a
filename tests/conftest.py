"""Shared fixtures: an in-memory platform with an in-process client, and a real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.platform import Platform
from polis.settings import Settings

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def headers(self) -> dict[str, str]:
        """The bootstrap admin key (written by the server on first start) as a request header."""
        return key_headers(self.data_dir)


def start_server(data_dir: Path, *, env: dict[str, str] | None = None, timeout: float = 30.0) -> Server:
    """`polis serve` in its own process on a free loopback port; waits until /health answers."""
    port = free_port()
    full_env = {**os.environ, **(env or {}), "POLIS_DATASETS_DIR": str(Settings().datasets_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "polis.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return Server(url, data_dir, process)
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError("server did not start in time")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    if process.stderr:
        process.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "hub")
    yield srv
    stop_server(srv.process)
