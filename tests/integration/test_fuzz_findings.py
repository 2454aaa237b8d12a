"""Defects found by fuzzing the in-process API with hostile input (2026-11-28), one test per defect. Each test
states the behaviour the product rule asks for: a specific NGSI-LD problem with the right 4xx status, quickly,
and nothing written. They fail until the defects are fixed."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import ERR, THRESHOLD_RULE, hub_client, problem

ENTITIES = "/ngsi-ld/v1/entities"
TEMPORAL = "/ngsi-ld/v1/temporal/entities"
RULES = "/polis/v1/alerts/rules"
JSONLD_REL = "http://www.w3.org/ns/json-ld#context"
RULE = THRESHOLD_RULE


@pytest.fixture
def small() -> Iterator[tuple[TestClient, Platform]]:
    """A hub that takes bodies of at most 256 bytes."""
    yield from hub_client(max_body_bytes=256)


@pytest.fixture
def impatient() -> Iterator[tuple[TestClient, Platform]]:
    """A hub that waits at most 0.3 s for a remote @context (so 0.6 s for the whole download)."""
    yield from hub_client(context_fetch_timeout_s=0.3)


# -- @context fetching: a server that trickles its headers holds the request forever --------------------------


HEAD_TRICKLE = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000
BODY_TRICKLE = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 100_000


class TricklingServer:
    """An HTTP(S) server on a free port that sends `reply` one byte every 0.1 s, never ending it, until stopped:
    each read gets a byte well within the read timeout, so only an overall deadline ends the download. With
    `tls`, the connection is TLS first (https), where the socket that reads is a wrapped one."""

    def __init__(self, reply: bytes, tls: ssl.SSLContext | None = None) -> None:
        self._reply = reply
        self._tls = tls
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.05)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _trickle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(0.5)
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            conn.recv(65536)
            for byte in self._reply:
                if self._stop.wait(0.1):
                    break
                conn.sendall(bytes([byte]))
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        self._sock.close()


@pytest.fixture
def tls_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A certificate for 127.0.0.1 from a throwaway CA that the hub's @context fetches trust (SSL_CERT_FILE)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(("reply", "what"), [(HEAD_TRICKLE, "headers"), (BODY_TRICKLE, "body")])
def test_a_context_server_trickling_its_answer_gets_ld_context_not_available_fast(
    impatient: tuple[TestClient, Platform],
    tls_server_context: ssl.SSLContext,
    scheme: str,
    reply: bytes,
    what: str,
) -> None:
    """GET /ngsi-ld/v1/entities?type=V with Link: <http(s)://127.0.0.1:PORT/ctx.jsonld> where that server sends
    its headers (or its body) one byte at a time: httpx's timeouts are per read, so only an overall deadline
    ends it; without one the request hangs as long as the server keeps sending (and holds the URL's fetch lock
    for every other request naming it). It must answer 503 LdContextNotAvailable within the deadline, over TLS
    too (where the socket that reads is not the one first connected)."""
    client, platform = impatient
    server = TricklingServer(reply, tls_server_context if scheme == "https" else None)
    url = f"{scheme}://127.0.0.1:{server.port}/ctx.jsonld"
    link = {"Link": f'<{url}>; rel="{JSONLD_REL}"; type="application/ld+json"'}
    answers: list[Any] = []
    started = time.monotonic()
    request = threading.Thread(
        target=lambda: answers.append(client.get(ENTITIES, params={"type": "Vehicle"}, headers=link)), daemon=True
    )
    request.start()
    request.join(timeout=2.0)
    elapsed = time.monotonic() - started
    server.stop()  # ends the trickle, so a request still hanging returns before teardown
    request.join(timeout=5.0)
    assert elapsed < 2.0, f"no answer after {elapsed:.1f} s: the {what} trickle is not bounded by a deadline"
    problem(answers[0], 503, "LdContextNotAvailable", url)
    assert platform.store.entity_count("") == 0


# -- alert rules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("{value:>1000000000000000.1f}", id="width-1e15-memoryerror-500"),
        pytest.param("{entityName:>99999999999999}", id="width-1e14-on-a-string-memoryerror-500"),
        pytest.param("{value:.100000000f}", id="precision-1e8-accepted-100MB-per-message"),
        pytest.param("{value:>100000000.1f}", id="width-1e8-accepted-100MB-per-message"),
    ],
)
def test_an_alert_message_template_with_a_huge_format_width_is_400(
    client: TestClient, platform: Platform, message: str
) -> None:
    """POST /polis/v1/alerts/rules {"kind": "threshold", ..., "message": "{value:>1000000000000000.1f}"}:
    RuleBase._template checks the template by formatting it (rules.py, `value.format(**_SAMPLE)`), which
    raises MemoryError for a huge width: a 500 InternalError. A width or precision of 10**8 passes and every
    alert message the rule raises is then 100 MB; a precision of 10**9 is accepted after ~14 s of formatting on
    the event loop (create_rule calls parse_rule there), which stalls every other request meanwhile.
    The template must be refused as BadRequestData naming the message field, and no rule stored."""
    r = client.post(RULES, json={**RULE, "message": message})
    problem(r, 400, "BadRequestData", "message")
    assert client.get(RULES).json() == []
    assert list(platform.alerts.book.all()) == []


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_an_alert_rule_body_over_the_size_limit_is_413(small: tuple[TestClient, Platform], method: str) -> None:
    """POST /polis/v1/alerts/rules (or PUT .../rules/busy-corner) with a 1.1 kB valid rule on a hub whose
    max_body_bytes is 256: the alert routes read the body with `request.body()` rather than
    ld_http.read_body, so the limit is never applied (201, the rule is stored). The NGSI-LD routes answer 413
    for the same size; so must these, storing nothing. (POST /polis/v1/epidemic/{country}/scenario reads its
    body the same way and has the same defect.)"""
    client, platform = small
    body = {**RULE, "instruction": "x" * 900}
    path = RULES if method == "POST" else f"{RULES}/busy-corner"
    r = client.request(method, path, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
    problem(r, 413, "BadRequestData", "256")
    assert list(platform.alerts.book.all()) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_an_alert_rule_with_an_unsupported_content_type_is_415(
    client: TestClient, platform: Platform, method: str, content_type: str
) -> None:
    """POST /polis/v1/alerts/rules with Content-Type: text/plain (or application/xml) and a JSON rule as the
    body: the alert routes never look at Content-Type and store the rule (201). Every NGSI-LD route answers
    415 for these; so must the alert routes, storing nothing. (The epidemic scenario route has the same
    defect.)"""
    path = RULES if method == "POST" else f"{RULES}/busy-corner"
    r = client.request(method, path, content=orjson.dumps(RULE), headers={"Content-Type": content_type})
    assert r.status_code == 415, r.text[:300]
    assert r.json()["type"].startswith(ERR) and "Content-Type" in r.json()["detail"]
    assert list(platform.alerts.book.all()) == []


# -- query parameters that are accepted and then ignored -------------------------------------------------------


def test_a_scope_query_is_applied_or_refused_never_ignored(client: TestClient) -> None:
    """GET /ngsi-ld/v1/entities?type=S&scopeQ=/paris: `scopeQ` is in QUERY_PARAMS, so it passes check_known,
    but nothing reads it: the answer holds every entity of the type, the Madrid one too, and a malformed
    scopeQ such as '(' gets 200. Entities do store `scope`. A scope query must filter (or be refused as not
    supported); a malformed one must be 400 BadRequestData."""
    for eid, scope in (("urn:ngsi-ld:S:madrid", "/madrid/gardens"), ("urn:ngsi-ld:S:paris", "/paris")):
        assert client.post(ENTITIES, json={"id": eid, "type": "S", "scope": scope, "n": 1}).status_code == 201
    problem(client.get(ENTITIES, params={"type": "S", "scopeQ": "("}), 400, "BadRequestData", "scopeQ")
    r = client.get(ENTITIES, params={"type": "S", "scopeQ": "/paris"})
    assert r.status_code in (200, 400, 422, 501), r.text
    if r.status_code == 200:
        assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:S:paris"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        pytest.param({"local": "maybe"}, "local", id="local-not-a-boolean"),
        pytest.param({"datasetId": "not a uri"}, "datasetId", id="datasetId-not-a-uri"),
    ],
)
def test_invalid_values_of_accepted_query_parameters_are_400(
    client: TestClient, params: dict[str, str], name: str
) -> None:
    """GET /ngsi-ld/v1/entities?type=V&local=maybe (or datasetId=not a uri): both names are in QUERY_PARAMS
    and their values are never checked (200 with every entity), while count=yes is 400. A malformed value
    must be 400 BadRequestData naming the parameter."""
    assert client.post(ENTITIES, json={"id": "urn:ngsi-ld:V:1", "type": "V", "n": 1}).status_code == 201
    problem(client.get(ENTITIES, params={"type": "V", **params}), 400, "BadRequestData", name)
    problem(client.get(TEMPORAL, params={"type": "V", **params}), 400, "BadRequestData", name)


# pick keeps only what it names, as on /entities (id and type too are named to be kept)
@pytest.mark.parametrize(("param", "kept"), [("pick", {"a"}), ("omit", {"id", "type", "b"})])
def test_pick_and_omit_on_a_temporal_query_are_applied_or_refused(
    client: TestClient, param: str, kept: set[str]
) -> None:
    """GET /ngsi-ld/v1/temporal/entities?type=P&pick=a: routes_temporal shares QUERY_PARAMS with /entities,
    so pick and omit pass check_known, but render_temporal_entity never sees them: every attribute's history
    comes back, as if the parameter were absent (the retrieve route refuses pick as unknown). The projection
    must be applied, or the parameter refused with 400."""
    observed = {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"}
    entity = {"id": "urn:ngsi-ld:P:1", "type": "P", "a": observed, "b": {**observed, "value": 2}}
    assert client.post(ENTITIES, json=entity).status_code == 201
    r = client.get(TEMPORAL, params={"type": "P", param: "a"})
    if r.status_code == 400:
        assert r.json()["type"].startswith(ERR) and param in r.json()["detail"], r.text
        return
    assert r.status_code == 200, r.text
    assert set(r.json()[0]) == kept, r.json()
