"""What the browser is told about every response: the dashboard's page and assets may run only the hub's own
scripts and may not be framed by another site; no response is sniffed into another type or leaks the page's
URL through a Referer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import admin_headers, hub_client


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def _policy(header: str) -> dict[str, str]:
    """A Content-Security-Policy as {directive: its sources}."""
    parts = (part.strip().split(" ", 1) for part in header.split(";") if part.strip())
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


@pytest.mark.parametrize("path", ["/", "/dashboard/main.js", "/dashboard/alerts.js", "/dashboard/dashboard.css"])
def test_the_dashboard_runs_only_its_own_scripts_and_cannot_be_framed(
    hub: tuple[TestClient, Platform], path: str
) -> None:
    client, _ = hub
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code)
    policy = _policy(r.headers["content-security-policy"])
    assert policy["script-src"] == "'self'"  # no inline script, no eval, no other origin
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_the_api_docs_are_framed_by_nobody_and_load_no_other_origin(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.get("/docs")
    assert r.status_code == 200
    policy = _policy(r.headers["content-security-policy"])
    assert policy["frame-ancestors"] == "'none'"
    assert "http" not in policy["script-src"] and "'self'" in policy["script-src"]  # the bundle is served here


@pytest.mark.parametrize(
    ("path", "status"), [("/ngsi-ld/v1/types", 200), ("/ngsi-ld/v1/entities/urn:ngsi-ld:X:missing", 404),
                         ("/polis/v1/alerts/feed", 200), ("/no-such-route", 404)])
def test_api_answers_are_never_sniffed_and_carry_no_page_policy(
    hub: tuple[TestClient, Platform], path: str, status: int
) -> None:
    client, _ = hub
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "content-security-policy" not in r.headers  # data, not a page


def test_an_unhandled_error_is_answered_with_the_headers_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette answers an unhandled exception from its outermost middleware, around the one that adds headers."""
    from polis.api.app import create_app
    from polis.api.security_headers import headers_for

    platform = Platform.in_memory()
    try:
        def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(platform.store, "types", broken)  # a bug behind a real route
        with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
            r = client.get("/ngsi-ld/v1/types")
        assert r.status_code == 500
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
        page = headers_for("/")  # what a page's 500 would carry
        assert page["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page["content-security-policy"]
    finally:
        platform.close()
