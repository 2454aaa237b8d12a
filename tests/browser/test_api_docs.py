"""The OpenAPI docs page `make run` points at, in a real headless Chromium: it renders every operation of the
API from the hub's own files (FastAPI writes OpenAPI 3.1, which the Swagger UI 4 the hub shipped could not
render: the page said "Unable to render this definition"), under its Content-Security-Policy, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from polis.localserver import Server, start_server, stop_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(Path(tmp_path_factory.mktemp("docs")) / "hub")
    yield srv
    stop_server(srv.process)


def test_the_docs_render_every_operation_offline(browser: Any, server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    origin = server.url + "/"
    page.on("request", lambda r: None if r.url.startswith((origin, "data:")) else errors.append(f"fetched {r.url}"))
    try:
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() == operations
        assert "Unable to render" not in page.content()
        assert errors == []
    finally:
        page.close()
