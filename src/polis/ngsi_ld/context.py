"""JSON-LD @context handling for NGSI-LD: an offline-first context cache and resolved term maps.

The hub never runs a JSON-LD processor on payloads. It resolves the request's @context once into a
`TermMap` (term -> IRI plus the reverse map), and the entity codec expands and compacts names with
plain dict lookups. Resolution follows the JSON-LD 1.1 context processing rules that NGSI-LD
contexts use: simple and expanded term definitions, compact IRIs, `@vocab`, `null` definitions,
arrays of contexts and remote contexts nested inside remote contexts. Scoped contexts, `@reverse`,
`@import`, `@base` and containers carry no meaning for names, so they are ignored.

The core context (every version's URL) and the Smart Data Models contexts are read from the shipped
files and never fetched. Contexts an operator registers (POST /jsonldContexts) are kept on disk under
`cache_dir`, and so is every remote context fetched once, but only once the whole context it was fetched for
resolves: a document that includes itself, or leads to one that cannot be had or used, is not kept.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from polis.domain.errors import BadRequestData, LdContextNotAvailable, ResourceNotFound
from polis.domain.json_depth import MAX_DEPTH, nests_deeper_than
from polis.privacy.refusal import refuse_identifying_strings

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
CORE_CONTEXT_ALIAS = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
HOSTED_PATH = "/ngsi-ld/v1/jsonldContexts/"

CORE_CONTEXT_FILE = ("ngsi-ld", "ngsi-ld-core-context-v1.9.jsonld")
# The Smart Data Models contexts shipped in datasets_dir, under the URLs their examples cite.
SDM_CONTEXT_FILES = {
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld": (
        "smart-data-models",
        "contexts",
        "dataModel.Transportation-context.jsonld",
    ),
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld": (
        "smart-data-models",
        "contexts",
        "dataModel.Alert-context.jsonld",
    ),
}

MAX_CONTEXT_BYTES = 1 << 20
MAX_NESTING = 8  # remote contexts inside remote contexts
MAX_REDIRECTS = 3
TERM_MAP_CACHE_SIZE = 256
_MEMO_LIMIT = 1 << 16  # names memoised per TermMap; a flood of random names cannot grow it without bound

_CORE_URL = re.compile(r"https?://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context(?:-v1\.\d(?:\.\d+)?)?\.jsonld")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_GEN_DELIMS = frozenset(":/?#[]@")
_ACCEPT = "application/ld+json, application/json;q=0.9, */*;q=0.1"

log = logging.getLogger(__name__)


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")  # RFC 3986 §3.1


def lower_scheme(url: str) -> str:
    """The URL with its scheme in lowercase, the rest as sent: schemes are case-insensitive (RFC 3986 §3.1), and
    the cache and the http(s) check compare the text, so HTTPS://x and https://x must be one key. The host and
    path are left alone (a path is case-sensitive)."""
    m = _URL_SCHEME.match(url)
    return m.group(1).lower() + url[m.end(1) :] if m else url


def is_core_context_url(url: str) -> bool:
    """Any published core context URL, versioned or not: all of them mean the shipped v1.9 file."""
    return _CORE_URL.fullmatch(url) is not None


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- term maps ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Active:
    """The active context while a @context is being processed (core terms plus user terms so far)."""

    terms: dict[str, str]
    prefixes: dict[str, str]  # terms usable as the prefix of a compact IRI
    vocab: str
    user: set[str] = field(default_factory=set)  # terms that came from user contexts

    def copy(self) -> _Active:
        return _Active(dict(self.terms), dict(self.prefixes), self.vocab, set(self.user))


def _reverse(terms: dict[str, str], names: Any) -> dict[str, str]:
    """IRI -> the shortest (then alphabetically first) of `names` that maps to it."""
    best: dict[str, str] = {}
    for name in names:
        iri = terms[name]
        held = best.get(iri)
        if held is None or (len(name), name) < (len(held), held):
            best[iri] = name
    return best


class TermMap:
    """A resolved active context: the user's terms over the protected core terms.

    Immutable in meaning; the memo dicts inside only remember answers already computed.
    """

    __slots__ = ("_cmp", "_exp", "_prefixes", "_reverse", "_terms", "_vocab", "plans", "urls")

    def __init__(
        self,
        terms: dict[str, str],
        prefixes: dict[str, str],
        vocab: str,
        reverse: dict[str, str],
        urls: tuple[str, ...] = (),
    ) -> None:
        self._terms = terms
        self._prefixes = prefixes
        self._vocab = vocab
        self._reverse = reverse
        self._exp: dict[str, str] = dict(terms)
        self._cmp: dict[str, str] = {}
        self.urls = urls
        # Batch plans made for this context, by item shape (polis.ngsi_ld.batch_plan; None: no plan fits).
        self.plans: dict[Any, Any] = {}

    @classmethod
    def _from_active(cls, active: _Active, core_reverse: dict[str, str], urls: tuple[str, ...]) -> TermMap:
        reverse = dict(core_reverse)
        reverse.update(_reverse(active.terms, active.user))  # the user's own names win over core names
        return cls(active.terms, active.prefixes, active.vocab, reverse, urls)

    @property
    def vocab(self) -> str:
        return self._vocab

    def expand(self, term: str) -> str:
        """A short name, compact IRI or IRI -> IRI; a name found nowhere expands under @vocab."""
        iri = self._exp.get(term)
        if iri is None:
            iri = self._expand_uncached(term)
            if len(self._exp) >= _MEMO_LIMIT:
                self._exp = dict(self._terms)
            self._exp[term] = iri
        return iri

    # Entity types follow the same vocabulary-relative rules as attribute names.
    expand_type = expand

    def compact(self, iri: str) -> str:
        """IRI -> the user's shortest term, else the core term, else the @vocab suffix, else the IRI itself."""
        term = self._cmp.get(iri)
        if term is None:
            term = self._compact_uncached(iri)
            if len(self._cmp) >= _MEMO_LIMIT:
                self._cmp = {}
            self._cmp[iri] = term
        return term

    def _expand_uncached(self, term: str) -> str:
        prefix, colon, suffix = term.partition(":")
        if colon and prefix:
            if prefix == "_":  # blank node identifier
                return term
            if not suffix.startswith("//"):
                base = self._prefixes.get(prefix)
                if base is not None:
                    return base + suffix
            if _SCHEME.match(prefix):
                return term  # already an absolute IRI (urn:…, https://…)
        return self._vocab + term

    def _compact_uncached(self, iri: str) -> str:
        term = self._reverse.get(iri)
        if term is not None:
            return term
        for vocab in (self._vocab, DEFAULT_VOCAB):
            if len(iri) > len(vocab) and iri.startswith(vocab):
                candidate = iri[len(vocab) :]
                # Only a suffix that expands back to the same IRI is a faithful short name.
                if self.expand(candidate) == iri:
                    return candidate
        return iri

    def __repr__(self) -> str:
        return f"TermMap(urls={self.urls!r}, terms={len(self._terms)}, vocab={self._vocab!r})"


# -- processing one context object ------------------------------------------------------------------


# Characters RFC 3987 never allows in an IRI: a term mapping to one of these could never name an attribute that
# expands to it, so the context is refused when it is registered or first used, not entity by entity later.
_NOT_IN_IRI = re.compile(r'[\s<>"{}|\\^`\x00-\x1f\x7f]')


def _check_iri(term: str, iri: str) -> None:
    bad = _NOT_IN_IRI.search(iri)
    if bad is not None:
        raise BadRequestData(
            f"@context: term '{term[:100]}' maps to '{iri[:200]}', which is not an IRI (it holds {bad.group()!r})"
        )


class _ObjectProcessor:
    """Applies one local context object to an active context (JSON-LD 1.1 'create term definition')."""

    def __init__(self, ctx: dict[str, Any], active: _Active, protected: frozenset[str]) -> None:
        self.active = active
        self.protected = protected
        self.local = {k: v for k, v in ctx.items() if not k.startswith("@")}
        self.done: dict[str, str | None] = {}
        self.prefix_ok: set[str] = set()
        self.pending: list[str] = []
        if "@vocab" in ctx:
            self.vocab = self._vocab_iri(ctx["@vocab"])
        else:
            self.vocab = active.vocab

    def run(self) -> None:
        for term in self.local:
            self.define(term)
        active = self.active
        active.vocab = self.vocab
        for term, iri in self.done.items():
            if term in self.protected:
                continue
            if iri is None:
                active.terms.pop(term, None)
                active.prefixes.pop(term, None)
                active.user.discard(term)
                continue
            active.terms[term] = iri
            active.user.add(term)
            if term in self.prefix_ok:
                active.prefixes[term] = iri
            else:
                active.prefixes.pop(term, None)

    def _vocab_iri(self, value: Any) -> str:
        if value is None:
            return DEFAULT_VOCAB
        if not isinstance(value, str) or ":" not in value:
            raise BadRequestData(f"@context: @vocab must be an absolute or compact IRI, got {value!r}")
        prefix, _, suffix = value.partition(":")
        base = self.active.prefixes.get(prefix)
        iri = base + suffix if base is not None and not suffix.startswith("//") else value
        _check_iri("@vocab", iri)
        return iri

    def define(self, term: str) -> str | None:
        """The IRI `term` maps to in this context object (None: a null or keyword definition)."""
        if term in self.done:
            return self.done[term]
        if term in self.protected:  # core terms are @protected: a user context cannot change them
            return self.active.terms.get(term)
        if term in self.pending:
            raise BadRequestData(f"@context: cyclic IRI mapping for term '{term}' ({' -> '.join(self.pending)})")
        if not term:
            raise BadRequestData("@context: a term must not be an empty string")
        self.pending.append(term)
        raw = self.local[term]
        iri: str | None
        if raw is None:
            iri = None
        elif isinstance(raw, str):
            iri = self.iri_of(raw, term)
            if iri is not None and iri[-1] in _GEN_DELIMS:
                self.prefix_ok.add(term)
        elif isinstance(raw, dict):
            iri = self._expanded_definition(term, raw)
        else:
            raise BadRequestData(f"@context: the definition of term '{term}' must be a string, an object or null")
        self.pending.pop()
        if iri is not None:
            _check_iri(term, iri)
        self.done[term] = iri
        return iri

    def _expanded_definition(self, term: str, raw: dict[str, Any]) -> str | None:
        if "@id" not in raw:
            # No @id: the term names itself (a compact IRI, an IRI, or a word under @vocab).
            iri = self.iri_of(term, term) if ":" in term else self.vocab + term
        elif raw["@id"] is None:
            return None
        elif isinstance(raw["@id"], str):
            iri = self.iri_of(raw["@id"], term)
        else:
            raise BadRequestData(f"@context: the @id of term '{term}' must be a string")
        if iri is not None and (raw.get("@prefix") is True or iri[-1] in _GEN_DELIMS):
            self.prefix_ok.add(term)
        return iri

    def iri_of(self, value: str, current: str) -> str | None:
        """Expand a term definition's value; None when it is a keyword alias such as "@id"."""
        if value.startswith("@"):
            return None
        prefix, colon, suffix = value.partition(":")
        if colon:
            if prefix == "_" or suffix.startswith("//") or not prefix:
                return value
            base = self._prefix(prefix, current)
            return base + suffix if base is not None else value
        if value == current:
            return self.vocab + value
        if value in self.local and value not in self.protected:
            iri = self.define(value)
            return iri if iri is not None else self.vocab + value
        return self.active.terms.get(value, self.vocab + value)

    def _prefix(self, prefix: str, current: str) -> str | None:
        if prefix != current and prefix in self.local and prefix not in self.protected:
            iri = self.define(prefix)
            return iri if prefix in self.prefix_ok else None
        return self.active.prefixes.get(prefix)


# -- the cache --------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Record:
    """A context the registry knows: operator-hosted or fetched and cached."""

    id: str
    url: str
    kind: str  # Hosted | Cached
    created_at: str
    context: Any  # the document's @context member
    hits: int = 0
    last_usage: float | None = None

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "kind": self.kind,
            "createdAt": self.created_at,
            "numberOfHits": self.hits,
        }
        if self.last_usage is not None:
            out["lastUsage"] = datetime.fromtimestamp(self.last_usage, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "kind": self.kind,
            "createdAt": self.created_at,
            "@context": self.context,
        }


class _Unavailable(Exception):
    """Why a remote context could not be had; becomes LdContextNotAvailable with the URL."""


class _Deadline:
    """Cuts every connection of one download when its time is up. httpx's timeouts are per read, so a server
    sending one byte of headers every tenth of a second would hold the request (and the URL's fetch lock)
    forever; shutting the sockets down from a timer ends the blocked read with an error at the deadline.
    The sockets are learnt from httpx's documented `trace` request extension, redirects included."""

    def __init__(self, seconds: float) -> None:
        self.expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        # https wraps the TCP socket for TLS, detaching the first object: the wrapped one is what reads
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        sock = info["return_value"].get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.append(sock)
            if self.expired.is_set():  # connected just as time ran out
                _shut(sock)

    def _expire(self) -> None:
        self.expired.set()
        with self._lock:
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for a TLS socket: SSLSocket's own would drop its TLS state under
        # the thread reading from it; this only wakes that read with an error.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed, or detached when wrapped for TLS
        pass


class ContextCache:
    """Resolves @context values to TermMaps: shipped files, registered contexts, then the network (once)."""

    def __init__(self, datasets_dir: Path, cache_dir: Path, fetch_timeout_s: float = 2.0) -> None:
        self._datasets_dir = Path(datasets_dir)
        self._cache_dir = Path(cache_dir)
        self._timeout = fetch_timeout_s
        self._lock = threading.RLock()
        self._maps: OrderedDict[str | bytes, tuple[TermMap, tuple[_Record, ...]]] = OrderedDict()
        self._core: TermMap | None = None
        self._core_active: _Active | None = None
        self._core_reverse: dict[str, str] = {}
        self._protected: frozenset[str] = frozenset()
        self._shipped: dict[str, Any] = {}  # url -> @context of a shipped file
        self._records: dict[str, _Record] | None = None  # id -> record; loaded from disk on first use
        self._cached_ids: dict[str, str] = {}  # remote url -> record id
        # remote url -> a record downloaded for a resolution still under way: kept (_keep) once that
        # resolution succeeds, forgotten (_forget) if it fails; meanwhile concurrent resolutions use it too.
        self._fetched: dict[str, _Record] = {}
        self._keeping: dict[str, _Record] = {}  # remote url -> a record of a resolved context being written
        self._fetch_locks: dict[str, threading.Lock] = {}

    # -- resolution ---------------------------------------------------------------------------------

    def core(self) -> TermMap:
        if self._core is None:
            with self._lock:
                if self._core is None:
                    self._load_core()
        assert self._core is not None
        return self._core

    def resolve(self, context: str | dict[str, Any] | list[Any] | None) -> TermMap:
        """The TermMap for a request's @context: None (core), a URL, an inline object, or an array."""
        if context is None:
            return self.core()
        key: str | bytes
        if isinstance(context, str):
            key = context
        elif isinstance(context, dict | list):
            try:
                key = orjson.dumps(context, option=orjson.OPT_SORT_KEYS)
            except TypeError as error:
                raise BadRequestData(f"@context is not valid JSON: {error}") from None
        else:
            raise BadRequestData(f"@context must be a URL, an object or an array, got {type(context).__name__}")
        found = self._lookup(key)
        if found is not None:
            return found
        entry = self._build(context)  # outside the lock: this may wait on the network
        with self._lock:
            self._maps[key] = entry
            while len(self._maps) > TERM_MAP_CACHE_SIZE:
                self._maps.popitem(last=False)
        return self._count(entry)

    def cached(self, context: str | None) -> TermMap | None:
        """The TermMap of a context resolved before, else None; never does I/O, so an event loop may call it."""
        if context is None:
            return self._core
        return self._lookup(context)

    def _lookup(self, key: str | bytes) -> TermMap | None:
        with self._lock:
            entry = self._maps.get(key)
            if entry is None:
                return None
            self._maps.move_to_end(key)
        return self._count(entry)

    @staticmethod
    def _count(entry: tuple[TermMap, tuple[_Record, ...]]) -> TermMap:
        terms, used = entry
        if used:  # registry statistics (numberOfHits, lastUsage); exactness under races does not matter
            now = time.time()
            for record in used:
                record.hits += 1
                record.last_usage = now
        return terms

    def _build(self, context: Any) -> tuple[TermMap, tuple[_Record, ...]]:
        core = self.core()
        assert self._core_active is not None
        if isinstance(context, str) and is_core_context_url(context):
            return core, ()
        active = self._core_active.copy()
        used: list[_Record] = []
        try:
            self._apply(context, active, (), used)
        except BaseException:
            self._forget(used)  # a refused context (cyclic, unavailable, unusable) leaves the registry as it was
            raise
        self._keep(used)
        if isinstance(context, str):
            urls: tuple[str, ...] = (context,)
        elif isinstance(context, list):
            # Every core URL is the one core: name it once, by its current URL, for Link headers.
            urls = tuple(
                dict.fromkeys(CORE_CONTEXT_URL if is_core_context_url(c) else c for c in context if isinstance(c, str))
            )
        else:
            urls = ()
        return TermMap._from_active(active, self._core_reverse, urls), tuple(dict.fromkeys(used))

    def _apply(self, ctx: Any, active: _Active, stack: tuple[str, ...], used: list[_Record]) -> None:
        if ctx is None:  # JSON-LD: null resets to the initial context, which for NGSI-LD is the core
            assert self._core_active is not None
            fresh = self._core_active.copy()
            active.terms, active.prefixes, active.vocab, active.user = (
                fresh.terms,
                fresh.prefixes,
                fresh.vocab,
                fresh.user,
            )
        elif isinstance(ctx, str):
            ctx = lower_scheme(ctx)
            if is_core_context_url(ctx):
                return  # the core is already the base of every active context
            if ctx in stack:
                raise BadRequestData(f"@context {ctx} includes itself (via {' -> '.join(stack)})")
            if len(stack) >= MAX_NESTING:
                raise BadRequestData(f"@context nests remote contexts more than {MAX_NESTING} levels deep at {ctx}")
            self._apply(self._document(ctx, used), active, (*stack, ctx), used)
        elif isinstance(ctx, list):
            for item in ctx:
                if isinstance(item, list):
                    raise BadRequestData("@context arrays must not contain arrays")
                self._apply(item, active, stack, used)
        elif isinstance(ctx, dict):
            _ObjectProcessor(ctx, active, self._protected).run()
        else:
            raise BadRequestData(f"@context entries must be URLs, objects or arrays, got {ctx!r}")

    def _load_core(self) -> None:
        path = self._datasets_dir.joinpath(*CORE_CONTEXT_FILE)
        try:
            document = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise RuntimeError(
                f"the NGSI-LD core context is missing or broken at {path} ({error}); "
                "point POLIS_DATASETS_DIR at the shipped data"
            ) from None
        active = _Active({}, {}, DEFAULT_VOCAB)
        _ObjectProcessor(document["@context"], active, frozenset()).run()
        self._protected = frozenset(active.terms)
        active.user = set()
        self._core_active = active
        self._core_reverse = _reverse(active.terms, active.terms)
        self._core = TermMap(active.terms, active.prefixes, active.vocab, self._core_reverse, (CORE_CONTEXT_URL,))

    # -- documents ----------------------------------------------------------------------------------

    def _document(self, url: str, used: list[_Record]) -> Any:
        """The @context member of the document at `url`."""
        hosted = self._hosted(url)
        if hosted is not None:
            used.append(hosted)
            return hosted.context
        if not url.startswith(("http://", "https://")):
            raise BadRequestData(f"@context must be an http(s) URL, an object or an array; got '{url}'")
        shipped = SDM_CONTEXT_FILES.get(url)
        if shipped is not None:
            return self._shipped_context(url, shipped)
        record = self._remote(url)
        used.append(record)
        return record.context

    def _shipped_context(self, url: str, parts: tuple[str, ...]) -> Any:
        found = self._shipped.get(url)
        if found is None:
            path = self._datasets_dir.joinpath(*parts)
            try:
                found = orjson.loads(path.read_bytes())["@context"]
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as error:
                raise LdContextNotAvailable(
                    f"could not retrieve @context from {url}: shipped copy {path} unreadable ({error})"
                ) from None
            self._shipped[url] = found
        return found

    def _hosted(self, url: str) -> _Record | None:
        at = url.find(HOSTED_PATH)
        if at < 0 or (at > 0 and not url.startswith(("http://", "https://"))):
            return None
        record = self._registry().get(url[at + len(HOSTED_PATH) :])
        return record if record is not None and record.kind == "Hosted" else None

    def _remote(self, url: str) -> _Record:
        """The record of a remote context: cached, being resolved by another request, or downloaded now.
        A download is not kept here: `_build` keeps it (`_keep`) once the whole context resolves."""
        records = self._registry()
        found = self._known(url, records)
        if found is not None:
            return found
        with self._lock:
            url_lock = self._fetch_locks.setdefault(url, threading.Lock())
        try:
            with url_lock:  # concurrent first requests for one URL fetch it once
                found = self._known(url, records)
                if found is not None:
                    return found
                refuse_identifying_strings(url, "@context URL")  # cached contexts are listed, URL and all, to anyone
                try:
                    context = self._fetch(url)
                except _Unavailable as why:
                    raise LdContextNotAvailable(f"could not retrieve @context from {url}: {why}") from None
                refuse_identifying_strings(context, "@context")
                record = _Record(str(uuid.uuid5(uuid.NAMESPACE_URL, url)), url, "Cached", _utc_now(), context)
                with self._lock:
                    self._fetched[url] = record
                return record
        finally:
            with self._lock:  # clients naming endless bad URLs must not grow this map
                if self._fetch_locks.get(url) is url_lock:
                    del self._fetch_locks[url]

    def _known(self, url: str, records: dict[str, _Record]) -> _Record | None:
        """The cached record of `url`, else one downloaded for a resolution still under way, else None."""
        with self._lock:
            known = self._cached_ids.get(url)
            if known is not None and known in records:
                return records[known]
            return self._fetched.get(url) or self._keeping.get(url)

    def _keep(self, used: list[_Record]) -> None:
        """Cache (in the registry and on disk) the downloads of a context that resolved."""
        records = self._registry()
        for record in dict.fromkeys(used):
            with self._lock:
                if self._fetched.get(record.url) is not record:
                    continue  # hosted, cached before, or being kept by a concurrent resolution
                del self._fetched[record.url]
                self._keeping[record.url] = record  # still found by _known while it is written
            try:
                self._save(record)  # first: a record that cannot be written must not be half kept
                with self._lock:
                    records[record.id] = record
                    self._cached_ids[record.url] = record.id
            finally:
                with self._lock:
                    if self._keeping.get(record.url) is record:
                        del self._keeping[record.url]

    def _forget(self, used: list[_Record]) -> None:
        """Drop the downloads of a context that did not resolve: the next request fetches them again."""
        with self._lock:
            for record in used:
                if self._fetched.get(record.url) is record:
                    del self._fetched[record.url]

    def _fetch(self, url: str) -> Any:
        import httpx  # only needed when a client names a context we do not have

        timeout = self._timeout
        watchdog = _Deadline(2 * timeout)  # the read timeout is per read: a server dripping bytes never trips it
        try:
            with (
                watchdog,
                httpx.Client(
                    timeout=httpx.Timeout(timeout),
                    follow_redirects=True,
                    max_redirects=MAX_REDIRECTS,
                    headers={"Accept": _ACCEPT},
                ) as client,
                client.stream("GET", url, extensions={"trace": watchdog.trace}) as response,
            ):
                if response.status_code != 200:
                    raise _Unavailable(f"HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > MAX_CONTEXT_BYTES:
                    raise _Unavailable(f"document is larger than {MAX_CONTEXT_BYTES} bytes")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_CONTEXT_BYTES:
                        raise _Unavailable(f"document is larger than {MAX_CONTEXT_BYTES} bytes")
                    if watchdog.expired.is_set():  # a second guard, should a socket have escaped the watchdog
                        raise _Unavailable(f"download took longer than {2 * timeout:g} s")
        except httpx.TimeoutException:
            raise _Unavailable(f"no answer within {timeout:g} s") from None
        except httpx.TooManyRedirects:
            raise _Unavailable(f"more than {MAX_REDIRECTS} redirects") from None
        except httpx.HTTPError as error:
            if watchdog.expired.is_set():  # the watchdog cut the connection
                raise _Unavailable(f"download took longer than {2 * timeout:g} s") from None
            raise _Unavailable(f"{type(error).__name__}: {error}") from None
        except (httpx.InvalidURL, ValueError) as error:  # a bad port or host (http://a:b/, http://[::1)
            raise BadRequestData(f"the @context URL {url} is not a valid URL: {error}") from None
        try:
            document = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            raise _Unavailable("the response is not JSON") from None
        if nests_deeper_than(document):
            raise _Unavailable(f"the document nests arrays and objects more than {MAX_DEPTH} levels deep")
        if not isinstance(document, dict) or "@context" not in document:
            raise _Unavailable("the document has no @context member")
        return document["@context"]

    # -- the registry (POST/GET/DELETE /jsonldContexts) ---------------------------------------------

    def register(self, body: Any) -> str:
        """Host an operator's context; returns its id. The context must resolve cleanly."""
        if not isinstance(body, dict) or "@context" not in body:
            raise BadRequestData("a context to register must be a JSON object with an '@context' member")
        context = body["@context"]
        if not isinstance(context, dict | list | str):
            raise BadRequestData("'@context' must be an object, an array or a URL")
        refuse_identifying_strings(context, "@context")  # a hosted context is served to anyone, keys or not
        self._build(context)  # raises BadRequestData / LdContextNotAvailable for a context that cannot be used
        context_id = str(uuid.uuid4())
        record = _Record(context_id, self.hosted_url(context_id), "Hosted", _utc_now(), context)
        records = self._registry()
        self._save(record)  # first: a record that cannot be written must not be half kept
        with self._lock:
            records[context_id] = record
        return context_id

    def registered(self) -> list[dict[str, Any]]:
        records = self._registry()
        with self._lock:
            return [r.details() for r in sorted(records.values(), key=lambda r: (r.created_at, r.id))]

    def get_registered(self, context_id: str) -> dict[str, Any]:
        record = self._registry().get(context_id)
        if record is None:
            raise ResourceNotFound(f"no @context with id {context_id}")
        return {"@context": record.context}

    def delete_registered(self, context_id: str) -> None:
        records = self._registry()
        with self._lock:
            record = records.pop(context_id, None)
            if record is None:
                raise ResourceNotFound(f"no @context with id {context_id}")
            if self._cached_ids.get(record.url) == context_id:
                del self._cached_ids[record.url]
            self._maps.clear()  # term maps built from it must not outlive it
        try:
            self._record_path(record).unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not delete the stored @context %s: %s", context_id, error)

    def hosted_url(self, context_id: str) -> str:
        return HOSTED_PATH + context_id

    def _registry(self) -> dict[str, _Record]:
        records = self._records
        if records is None:
            with self._lock:
                if self._records is None:
                    self._records = self._load_records()
                records = self._records
        return records

    def _record_path(self, record: _Record) -> Path:
        return self._cache_dir / record.kind.lower() / f"{record.id}.json"

    def _load_records(self) -> dict[str, _Record]:
        records: dict[str, _Record] = {}
        for kind in ("Hosted", "Cached"):
            folder = self._cache_dir / kind.lower()
            if not folder.is_dir():
                continue
            for path in folder.glob("*.json"):
                try:
                    raw = orjson.loads(path.read_bytes())
                    record = _Record(raw["id"], raw["url"], kind, raw["createdAt"], raw["@context"])
                except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as error:
                    log.warning("ignoring unreadable stored @context %s: %s", path, error)
                    continue
                records[record.id] = record
                if kind == "Cached":
                    self._cached_ids[record.url] = record.id
        return records

    def _save(self, record: _Record) -> None:
        """Write through to disk; a read-only or full disk only costs the copy across restarts."""
        path = self._record_path(record)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".tmp")
            partial.write_bytes(orjson.dumps(record.to_json()))
            os.replace(partial, path)
        except OSError as error:
            log.warning("could not store @context %s under %s: %s", record.url, path, error)
