"""API keys: `polis_<key-id>.<secret>`, shown once at creation, stored only as an argon2id hash and a SHA-256.

Verifying an argon2 hash costs tens of milliseconds by design, too much for every request. The key id
finds the one stored hash to check (no scan over all keys), and a verified key is remembered in memory
for a short time (`api_key_cache_s`), keyed by a SHA-256 of the presented key so that the process does
not keep the secret either. Any change to keys or grants (a revocation by `polis admin` included) clears
what is remembered (`AccessControl._refresh`), so a revoked key stops working at once.

Anyone who saw a key id (audit output names them) could otherwise make every request cost a check, with a
new wrong secret each time. So a refused key is remembered too (in a bounded LRU, by its SHA-256), and the
checks of one key id draw on a small token bucket (`api_key_failed_checks_per_s`, a burst of
`CHECK_BURST`): a check that took a token and succeeds gives it back, so only wrong secrets use it up.
Beyond it a check is refused at once (`Throttled`), except for the holder's key: the store keeps the
SHA-256 of each key beside its hash (from its creation, or from its first verification for a key created
before that), and a presented key with that digest is checked without drawing on the bucket, so that
someone guessing at a key id never locks its holder out, even in a process that has not seen the key yet
(after a restart). Concurrent checks of one presented key share one argon2 run."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

KEY_PREFIX = "polis_"
_KEY = re.compile(r"^polis_([a-z0-9]{12})\.([A-Za-z0-9_\-]{43})$")
_CACHE_MAX = 10_000
CHECK_BURST = 5.0  # checks a key id gets at once before `failed_checks_per_s` applies
_REFUSED_S = 600.0  # a refused key stays refused; remembered this long (or until keys or grants change)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_key: str  # the whole key to hand to the department: shown once, never stored
    hash: str
    digest: bytes  # `key_digest(secret_key)`: stored to tell the holder's key from guesses (`check_limited`)


@dataclass(frozen=True, slots=True)
class Verified:
    key_id: str
    department: str


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    m = _KEY.match(presented)
    return (m.group(1), m.group(2)) if m else None


class Throttled(Exception):
    """Too many wrong secrets were checked for this key id of late: not checked now."""

    def __init__(self, key_id: str, retry_after_s: int) -> None:
        super().__init__(f"key {key_id}: retry after {retry_after_s} s")
        self.key_id = key_id
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when `tokens` was last brought up to date (time.monotonic)


@dataclass(slots=True)
class _Flight:
    """One argon2 run that checks of the same presented key, arriving meanwhile, wait for."""

    done: threading.Event = field(default_factory=threading.Event)
    result: Verified | None = None


class KeyHasher:
    def __init__(self, *, time_cost: int, memory_kib: int, cache_s: float, failed_checks_per_s: float = 2.0) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self.cache_s = cache_s
        self.failed_checks_per_s = failed_checks_per_s
        # Verified keys and refused ones apart: a flood of distinct bad keys evicts only bad ones.
        self._cache: dict[bytes, tuple[Verified, float]] = {}
        self._refused: OrderedDict[bytes, float] = OrderedDict()  # digest -> until (LRU)
        # Kept across `forget`: it decides only whether argon2 runs now, never whether a key is accepted.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # key id -> its checks (LRU)
        self._flights: dict[bytes, _Flight] = {}
        self._lock = threading.Lock()

    def new_key(self) -> NewKey:
        key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = secrets.token_urlsafe(32)  # 256 bits: 43 url-safe characters, never a '.'
        whole = f"{KEY_PREFIX}{key_id}.{secret}"
        return NewKey(key_id, whole, self._hasher.hash(secret), key_digest(whole))

    def cached(self, presented: str) -> tuple[bool, Verified | None]:
        """(found, result): a remembered verification (positive or negative) that has not expired."""
        digest = key_digest(presented)
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[1] >= time.monotonic():
                return True, hit[0]
            return (True, None) if self._refused_now(digest) else (False, None)

    def check(self, presented: str, stored_hash: str, department: str) -> Verified | None:
        """Check `presented` against its stored hash (slow; argon2 compares in constant time); remembers nothing:
        the caller decides whether the answer is still current (`AccessControl.verify`)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        try:
            self._hasher.verify(stored_hash, parsed[1])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return Verified(parsed[0], department)

    def check_limited(
        self, presented: str, stored_hash: str, department: str, holder_digest: bytes | None = None
    ) -> Verified | None:
        """`check`, within the key id's budget of checks (`Throttled` beyond it), unless `presented` is the key
        whose digest the store keeps (`holder_digest`): its holder's, never held back (and still checked). A check
        of the same presented key already running is waited for instead of run again."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, digest = parsed[0], key_digest(presented)
        holder = holder_digest is not None and hmac.compare_digest(digest, holder_digest)
        took = False  # whether this check drew a token from the key id's bucket
        with self._lock:
            if self._refused_now(digest):  # refused by a check that ended after the caller's `cached`
                return None
            flight = self._flights.get(digest)
            leader = flight is None
            if flight is None:
                if not holder:
                    self._take_check(key_id)
                    took = True
                flight = self._flights[digest] = _Flight()
        if not leader:
            flight.done.wait()
            return flight.result
        try:
            flight.result = self.check(presented, stored_hash, department)
        finally:
            with self._lock:
                del self._flights[digest]
                if flight.result is None:
                    # remembered before the flight ends, or a check arriving now would run argon2 again; a
                    # refusal is safe to keep whatever changed meanwhile (a `forget` drops it like any other)
                    self._refuse(digest)
                elif took:  # a right key whose digest was not stored yet (an older Polis made it): token back
                    self._give_back_check(key_id)
            flight.done.set()
        return flight.result

    def _take_check(self, key_id: str) -> None:
        """Take a token from the key id's bucket (under the lock); `Throttled` when it has none."""
        now = time.monotonic()
        bucket = self._buckets.pop(key_id, None) or _Bucket(CHECK_BURST, now)
        bucket.tokens = min(CHECK_BURST, bucket.tokens + (now - bucket.at) * self.failed_checks_per_s)
        bucket.at = now
        self._buckets[key_id] = bucket  # most recently used last
        if len(self._buckets) > _CACHE_MAX:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            raise Throttled(key_id, max(1, math.ceil((1 - bucket.tokens) / self.failed_checks_per_s)))
        bucket.tokens -= 1

    def _give_back_check(self, key_id: str) -> None:
        """Return the token `_take_check` took for a check that succeeded (under the lock)."""
        bucket = self._buckets.get(key_id)
        if bucket is not None:
            bucket.tokens = min(CHECK_BURST, bucket.tokens + 1)

    def _refused_now(self, digest: bytes) -> bool:
        """Whether this key is remembered as refused (under the lock)."""
        until = self._refused.get(digest)
        return until is not None and until >= time.monotonic()

    def remember(self, presented: str, result: Verified | None) -> None:
        digest = key_digest(presented)
        with self._lock:
            if result is None:
                self._refuse(digest)
                return
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # only verified keys get here: as many as there are live keys
            self._cache[digest] = (result, time.monotonic() + self.cache_s)

    def _refuse(self, digest: bytes) -> None:
        """Remember a refused key (under the lock)."""
        self._refused[digest] = time.monotonic() + _REFUSED_S
        self._refused.move_to_end(digest)
        if len(self._refused) > _CACHE_MAX:
            self._refused.popitem(last=False)  # bounded: the oldest refusal goes first

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._refused.clear()


def key_digest(presented: str) -> bytes:
    """What is remembered of a presented key, and stored of a live one: never the key itself. A fast hash is
    enough: the secret is 256 random bits, so no search can find a key from its SHA-256 (argon2's slowness
    protects guessable secrets, and these are not), and the digest opens nothing: a request must send the key."""
    return hashlib.sha256(presented.encode()).digest()
