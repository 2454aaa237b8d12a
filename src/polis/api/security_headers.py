"""Security headers on every response: what a browser needs to be told so that the dashboard's page cannot be
turned against the department signed in to it.

- every response (an unhandled error's 500 too, through `headers_for`): `X-Content-Type-Options: nosniff` (a
  JSON body holding client text is never sniffed into HTML or script) and `Referrer-Policy: no-referrer` (no URL
  of the hub leaves with a link);
- the pages (the dashboard at `/` and its assets, the API docs): a Content-Security-Policy and
  `X-Frame-Options: DENY`. The dashboard's policy allows only its own scripts, styles and API on the same
  origin, no inline script and no framing (clickjacking): text written through the API is already put into the
  page as text, never as HTML, and the policy is what still holds if some future code forgets. The
  Swagger page is generated with an inline script, so the docs get the same policy with inline script and
  style allowed.

A pure ASGI middleware rather than Starlette's BaseHTTPMiddleware: the latter buffers each response through a
task, which the subscription streams (server-sent events) and the batch writes would pay for.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def headers_for(path: str) -> dict[str, str]:
    """The headers this middleware adds to a response for `path`, for answers made outside it (an unhandled
    error's 500 is answered by Starlette's outermost middleware, around this one)."""
    extra = dict((name.decode(), value.decode()) for name, value in _ALWAYS)
    policy = page_policy(path)
    if policy is not None:
        extra.update({"content-security-policy": policy, "x-frame-options": "DENY"})
    return extra


def page_policy(path: str) -> str | None:
    """The Content-Security-Policy for a path, None for the API (its responses are data, not pages)."""
    if path == "/" or path.startswith("/dashboard/"):
        return _PAGE_POLICY
    if path == "/docs" or path.startswith("/docs-assets/"):
        return _DOCS_POLICY
    return None


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = page_policy(scope["path"])
        extra = list(_ALWAYS)
        if policy is not None:
            extra += [(b"content-security-policy", policy.encode()), (b"x-frame-options", b"DENY")]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_missing(message, extra)
            await send(message)

        await self.app(scope, receive, with_headers)


def _add_missing(message: MutableMapping[str, Any], extra: list[tuple[bytes, bytes]]) -> None:
    headers = list(message.get("headers", []))
    present = {name.lower() for name, _ in headers}
    headers += [(name, value) for name, value in extra if name not in present]
    message["headers"] = headers
