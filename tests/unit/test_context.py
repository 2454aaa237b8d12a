"""@context resolution: shipped contexts, inline contexts, the registry and remote fetching."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.domain.errors import BadRequestData, LdContextNotAvailable, PersonalDataRefused, ResourceNotFound
from polis.ngsi_ld.context import CORE_CONTEXT_URL, DEFAULT_VOCAB, ContextCache, TermMap
from polis.settings import Settings

DATASETS = Settings().datasets_dir
NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
SDM_TRANSPORT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
SDM_ALERT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld"
CORE_ALIAS = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


@pytest.fixture
def cache(tmp_path: Path) -> ContextCache:
    # A short timeout: nothing in these tests may wait on the real network.
    return ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)


# -- a tiny context server ------------------------------------------------------------------------


class ContextServer:
    """Serves {path: (status, body bytes)} on 127.0.0.1 and counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                status, body = routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", body.decode())
                    body = b""
                self.send_header("Content-Type", "application/ld+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client hanging up on an oversized document is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, path: str, document: Any, status: int = 200) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.routes[path] = (status, body)
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[ContextServer]:
    srv = ContextServer()
    yield srv
    srv.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the core context -----------------------------------------------------------------------------


def test_core_terms_expand_and_unknown_terms_use_the_default_vocab(cache: ContextCache) -> None:
    core = cache.core()
    assert core.expand("location") == NGSI_LD + "location"
    assert core.expand("observedAt") == NGSI_LD + "observedAt"
    assert core.expand("description") == "http://purl.org/dc/terms/description"
    assert core.expand("speed") == DEFAULT_VOCAB + "speed"
    assert core.expand_type("Building") == DEFAULT_VOCAB + "Building"
    assert core.urls == (CORE_CONTEXT_URL,)


def test_compact_iris_and_absolute_iris_expand_as_iris(cache: ContextCache) -> None:
    core = cache.core()
    assert core.expand("ngsi-ld:foo") == NGSI_LD + "foo"
    assert core.expand("geojson:Point") == "https://purl.org/geojson/vocab#Point"
    assert core.expand("urn:ngsi-ld:Thing:1") == "urn:ngsi-ld:Thing:1"
    assert core.expand("https://example.org/speed") == "https://example.org/speed"


def test_compact_prefers_terms_then_vocab_suffix_then_the_iri(cache: ContextCache) -> None:
    core = cache.core()
    assert core.compact(NGSI_LD + "location") == "location"
    assert core.compact(DEFAULT_VOCAB + "speed") == "speed"
    assert core.compact("https://example.org/speed") == "https://example.org/speed"
    # A vocab suffix that is itself a term (meaning something else) cannot stand for the IRI.
    assert core.compact(DEFAULT_VOCAB + "location") == DEFAULT_VOCAB + "location"


@pytest.mark.parametrize("url", [
    CORE_CONTEXT_URL,
    CORE_ALIAS,
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.0.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
])
def test_every_core_url_is_the_shipped_core_and_never_fetched(cache: ContextCache, url: str) -> None:
    terms = cache.resolve(url)
    assert terms.expand("location") == NGSI_LD + "location"
    assert terms.expand("speed") == DEFAULT_VOCAB + "speed"
    assert cache.registered() == []  # nothing was fetched or cached


def test_none_is_the_core(cache: ContextCache) -> None:
    assert cache.resolve(None) is cache.core()


# -- shipped Smart Data Models contexts -----------------------------------------------------------


def test_smart_data_models_contexts_come_from_the_shipped_files(cache: ContextCache) -> None:
    terms = cache.resolve(SDM_TRANSPORT)
    assert terms.expand_type("TrafficFlowObserved") == (
        "https://smartdatamodels.org/dataModel.Transportation/TrafficFlowObserved")
    assert terms.expand("intensity") == "https://smartdatamodels.org/dataModel.Transportation/intensity"
    assert terms.compact("https://smartdatamodels.org/dataModel.Transportation/intensity") == "intensity"
    assert terms.urls == (SDM_TRANSPORT,)
    assert cache.registered() == []


def test_a_list_of_core_and_domain_urls_combines_them(cache: ContextCache) -> None:
    terms = cache.resolve([CORE_ALIAS, SDM_ALERT])
    assert terms.expand_type("Alert") == "https://smartdatamodels.org/dataModel.Alert/Alert"
    assert terms.expand("location") == NGSI_LD + "location"
    assert terms.urls == (CORE_CONTEXT_URL, SDM_ALERT)  # for Link headers: core URLs all name the v1.9 file


# -- inline contexts ------------------------------------------------------------------------------


def test_inline_terms_prefixes_and_expanded_definitions(cache: ContextCache) -> None:
    terms = cache.resolve({
        "ex": "https://example.org/",
        "speed": "ex:speed",
        "temp": {"@id": "ex:temperature", "@type": "@id"},
        "Sensor": "https://example.org/types/Sensor",
        "later": "alias",  # refers to a term defined further down the same object
        "alias": "ex:aliased",
    })
    assert terms.expand("speed") == "https://example.org/speed"
    assert terms.expand("temp") == "https://example.org/temperature"
    assert terms.expand("ex:other") == "https://example.org/other"
    assert terms.expand_type("Sensor") == "https://example.org/types/Sensor"
    assert terms.expand("later") == "https://example.org/aliased"
    assert terms.compact("https://example.org/speed") == "speed"
    assert terms.urls == ()


def test_user_vocab_applies_to_unknown_terms(cache: ContextCache) -> None:
    terms = cache.resolve({"@vocab": "https://example.org/v/"})
    assert terms.expand("speed") == "https://example.org/v/speed"
    assert terms.compact("https://example.org/v/speed") == "speed"
    assert terms.expand("location") == NGSI_LD + "location"  # core terms are untouched


def test_null_definition_removes_an_earlier_term(cache: ContextCache) -> None:
    terms = cache.resolve([{"speed": "https://example.org/speed"}, {"speed": None}])
    assert terms.expand("speed") == DEFAULT_VOCAB + "speed"


def test_core_terms_are_protected(cache: ContextCache) -> None:
    terms = cache.resolve({"location": "https://example.org/loc", "observedAt": "https://example.org/when"})
    assert terms.expand("location") == NGSI_LD + "location"
    assert terms.expand("observedAt") == NGSI_LD + "observedAt"
    assert terms.compact(NGSI_LD + "location") == "location"


def test_compact_picks_the_shortest_user_term(cache: ContextCache) -> None:
    terms = cache.resolve({"averageSpeed": "https://example.org/s", "avgS": "https://example.org/s"})
    assert terms.compact("https://example.org/s") == "avgS"
    assert terms.expand("averageSpeed") == terms.expand("avgS") == "https://example.org/s"


@pytest.mark.parametrize("context, message", [
    ({"speed": 42}, "term 'speed'"),
    ({"a": "b", "b": "a"}, "cyclic"),
    ({"speed": {"@id": ["x"]}}, "@id of term 'speed'"),
    ({"@vocab": "relative"}, "@vocab"),
    ({"": "https://example.org/x"}, "empty"),
    ([["nested"]], "arrays"),
    ([42], "entries"),
])
def test_invalid_inline_contexts_are_bad_request_data(cache: ContextCache, context: Any, message: str) -> None:
    with pytest.raises(BadRequestData, match=message):
        cache.resolve(context)


@pytest.mark.parametrize("context", ["ftp://example.org/ctx.jsonld", "not a url", "/relative/ctx.jsonld"])
def test_non_http_urls_are_bad_request_data(cache: ContextCache, context: str) -> None:
    with pytest.raises(BadRequestData, match="http"):
        cache.resolve(context)


def test_a_context_that_is_not_a_url_object_or_array_is_bad_request_data(cache: ContextCache) -> None:
    with pytest.raises(BadRequestData):
        cache.resolve(42)  # type: ignore[arg-type]


def test_resolving_a_seen_context_is_cached_and_fast(cache: ContextCache) -> None:
    inline = {"speed": "https://example.org/speed"}
    first = cache.resolve(inline)
    assert cache.resolve({"speed": "https://example.org/speed"}) is first
    assert cache.cached(SDM_TRANSPORT) is None  # not resolved yet: the caller must resolve (maybe fetching)
    assert cache.cached(None) is cache.core()
    assert cache.cached(cache.resolve(SDM_TRANSPORT).urls[0]) is cache.resolve(SDM_TRANSPORT)
    assert cache.resolve(SDM_TRANSPORT) is cache.resolve(SDM_TRANSPORT)
    start = time.perf_counter()
    for _ in range(10_000):
        cache.resolve(SDM_TRANSPORT)
    # Tens of microseconds each at the very worst (it is a dict lookup); a rebuild would take milliseconds.
    assert time.perf_counter() - start < 0.5


@settings(deadline=None, max_examples=150)
@given(name=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters=":"),
                    min_size=1, max_size=20))
def test_any_plain_name_round_trips_through_the_core(name: str) -> None:
    core = _shared_core()
    assert core.compact(core.expand(name)) == name


_CORE: list[TermMap] = []


def _shared_core() -> TermMap:
    if not _CORE:
        _CORE.append(ContextCache(DATASETS, Path("/nonexistent-never-written")).core())
    return _CORE[0]


# -- remote contexts ------------------------------------------------------------------------------


def test_remote_context_is_fetched_once_and_kept_on_disk(tmp_path: Path, server: ContextServer) -> None:
    url = server.serve("/ctx.jsonld", {"@context": {"speed": "https://example.org/speed"}})
    cache = ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)
    assert cache.resolve(url).expand("speed") == "https://example.org/speed"
    assert cache.resolve([url, {"x": "https://example.org/x"}]).expand("speed") == "https://example.org/speed"
    assert server.hits == {"/ctx.jsonld": 1}
    [entry] = cache.registered()
    assert entry["url"] == url and entry["kind"] == "Cached" and entry["numberOfHits"] == 2
    assert list((tmp_path / "contexts").rglob("*.json"))
    # A fresh process reads the disk copy: no second request.
    again = ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)
    assert again.resolve(url).expand("speed") == "https://example.org/speed"
    assert server.hits == {"/ctx.jsonld": 1}


def test_remote_contexts_nest_and_cycles_are_refused(cache: ContextCache, server: ContextServer) -> None:
    inner = server.serve("/inner.jsonld", {"@context": {"ex": "https://example.org/", "speed": "ex:speed"}})
    outer = server.serve("/outer.jsonld", {"@context": [inner, {"temp": "ex:temperature"}]})
    terms = cache.resolve(outer)
    assert terms.expand("speed") == "https://example.org/speed"
    assert terms.expand("temp") == "https://example.org/temperature"
    server.serve("/a.jsonld", {"@context": [server.base + "/b.jsonld"]})
    server.serve("/b.jsonld", {"@context": [server.base + "/a.jsonld"]})
    with pytest.raises(BadRequestData, match="includes itself"):
        cache.resolve(server.base + "/a.jsonld")


def test_redirects_are_followed(cache: ContextCache, server: ContextServer) -> None:
    target = server.serve("/target.jsonld", {"@context": {"speed": "https://example.org/speed"}})
    moved = server.serve("/moved.jsonld", target.encode(), status=301)
    assert cache.resolve(moved).expand("speed") == "https://example.org/speed"


@pytest.mark.parametrize("document, status, reason", [
    ({"@context": {}}, 404, "HTTP 404"),
    (b"<html>not json</html>", 200, "not JSON"),
    ({"terms": {}}, 200, "no @context"),
    (b"{\"@context\": {\"x\": \"" + b"a" * (1 << 20) + b"\"}}", 200, "larger than"),
])
def test_unusable_remote_documents_are_ld_context_not_available(
        cache: ContextCache, server: ContextServer, document: Any, status: int, reason: str) -> None:
    url = server.serve("/bad.jsonld", document, status=status)
    with pytest.raises(LdContextNotAvailable, match=reason) as caught:
        cache.resolve(url)
    assert f"could not retrieve @context from {url}" in caught.value.detail


def test_refused_connection_fails_fast_naming_the_url(cache: ContextCache) -> None:
    url = f"http://127.0.0.1:{_free_port()}/ctx.jsonld"
    start = time.perf_counter()
    with pytest.raises(LdContextNotAvailable) as caught:
        cache.resolve(url)
    assert time.perf_counter() - start < 2.0
    assert url in caught.value.detail
    assert caught.value.status == 503


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ctx.jsonld"
        cache = ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)
        start = time.perf_counter()
        with pytest.raises(LdContextNotAvailable, match=r"no answer within 0\.5 s") as caught:
            cache.resolve(url)
        elapsed = time.perf_counter() - start
    assert 0.4 < elapsed < 2.0
    assert url in caught.value.detail


# -- the registry ---------------------------------------------------------------------------------


def test_registered_contexts_are_served_and_resolved_without_fetching(tmp_path: Path) -> None:
    cache = ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)
    context_id = cache.register({"@context": {"speed": "https://example.org/speed"}})
    path = cache.hosted_url(context_id)
    assert path == f"/ngsi-ld/v1/jsonldContexts/{context_id}"
    assert "urn:" not in path
    assert cache.get_registered(context_id) == {"@context": {"speed": "https://example.org/speed"}}
    # By its path, and by the absolute URL a client builds from the broker's address.
    assert cache.resolve(path).expand("speed") == "https://example.org/speed"
    assert cache.resolve("http://broker.invalid:1026" + path).expand("speed") == "https://example.org/speed"
    [entry] = cache.registered()
    assert entry["id"] == context_id and entry["kind"] == "Hosted" and entry["url"] == path
    assert entry["numberOfHits"] == 2 and "createdAt" in entry
    # It survives a restart.
    assert ContextCache(DATASETS, tmp_path / "contexts").get_registered(context_id)["@context"] == {
        "speed": "https://example.org/speed"}


def test_deleting_a_registered_context(cache: ContextCache) -> None:
    context_id = cache.register({"@context": {"speed": "https://example.org/speed"}})
    cache.resolve(cache.hosted_url(context_id))
    cache.delete_registered(context_id)
    assert cache.registered() == []
    with pytest.raises(ResourceNotFound):
        cache.get_registered(context_id)
    with pytest.raises(ResourceNotFound):
        cache.delete_registered(context_id)
    with pytest.raises(BadRequestData):  # its path is no longer a context
        cache.resolve(cache.hosted_url(context_id))


@pytest.mark.parametrize("body", [[], "https://example.org/ctx", {"terms": {}}, {"@context": 42},
                                  {"@context": {"speed": 42}}])
def test_registering_an_invalid_context_is_bad_request_data(cache: ContextCache, body: Any) -> None:
    with pytest.raises(BadRequestData):
        cache.register(body)
    assert cache.registered() == []


@pytest.mark.parametrize(
    ("ctx", "fragment"),
    [
        ({"a b": "https://example.org/a b"}, "term 'a b' maps to 'https://example.org/a b'"),
        ({"a b": {}}, "term 'a b' maps to '" + DEFAULT_VOCAB + "a b'"),  # a term with no @id names itself
        ({"speed": "https://example.org/<speed>"}, "which is not an IRI"),
        ({"@vocab": "https://example.org/x y/"}, "term '@vocab'"),
    ],
)
def test_a_term_that_maps_to_no_iri_is_refused_at_registration(
    cache: ContextCache, ctx: dict[str, Any], fragment: str
) -> None:
    """No attribute could ever expand to such a "IRI": the operator hears it when registering, not from every
    entity that uses the context later."""
    with pytest.raises(BadRequestData, match=re.escape(fragment)):
        cache.register({"@context": ctx})
    assert cache.registered() == []


def test_terms_that_map_to_iris_are_registered(cache: ContextCache) -> None:
    cache.register({"@context": {"weird name": "https://example.org/ok", "speed": "https://example.org/a%20b"}})
    terms = cache.resolve({"weird name": "https://example.org/ok", "speed": "https://example.org/a%20b"})
    assert terms.expand("speed") == "https://example.org/a%20b"


def test_the_datasets_dir_is_never_written(tmp_path: Path, server: ContextServer) -> None:
    def listing() -> list[tuple[str, float]]:
        return sorted((str(p), p.stat().st_mtime) for d in ("ngsi-ld", "smart-data-models")
                      for p in (DATASETS / d).rglob("*"))

    before = listing()
    cache = ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)
    cache.resolve(server.serve("/c.jsonld", {"@context": {"a": "https://example.org/a"}}))
    cache.resolve(SDM_TRANSPORT)
    cache.register({"@context": {"b": "https://example.org/b"}})
    assert listing() == before


def test_a_fetched_context_that_names_someone_is_not_kept(tmp_path: Path, server: ContextServer) -> None:
    # Cached contexts are listed and served to anyone (GET /jsonldContexts): what names a person stays out.
    url = server.serve("/leaky.jsonld", {"@context": {"contact": "mailto:ann.smith@example.org"}})
    cache = ContextCache(DATASETS, tmp_path / "contexts", fetch_timeout_s=0.5)
    with pytest.raises(PersonalDataRefused) as refused:
        cache.resolve(url)
    assert "ann.smith" not in refused.value.detail
    assert cache.registered() == [] and not list((tmp_path / "contexts").rglob("*.json"))


def test_a_context_url_scheme_is_case_insensitive(cache: ContextCache) -> None:
    """RFC 3986 §3.1: HTTPS://x is https://x, in a Link header (tests/integration) and in a body's @context."""
    upper = SDM_TRANSPORT.replace("https://", "HTTPS://", 1)
    assert cache.resolve([upper]).expand("averageVehicleSpeed") == cache.resolve(SDM_TRANSPORT).expand(
        "averageVehicleSpeed"
    )
    assert cache.resolve("HTTPS://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld").expand("location") == (
        cache.core().expand("location")
    )
