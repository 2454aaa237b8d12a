"""API keys: `polis_<key-id>.<secret>`, shown once at creation, stored only as an argon2id hash.

Verifying an argon2 hash costs tens of milliseconds by design, too much for every request. The key id
finds the one stored hash to check (no scan over all keys), and a verified key is remembered in memory
for a short time (`api_key_cache_s`), keyed by a SHA-256 of the presented key so that the process does
not keep the secret either. Any change to keys or grants (a revocation by `polis admin` included) clears
what is remembered (`AccessControl._refresh`), so a revoked key stops working at once."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

KEY_PREFIX = "polis_"
_KEY = re.compile(r"^polis_([a-z0-9]{12})\.([A-Za-z0-9_\-]{43})$")
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_key: str  # the whole key to hand to the department: shown once, never stored
    hash: str


@dataclass(frozen=True, slots=True)
class Verified:
    key_id: str
    department: str


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    m = _KEY.match(presented)
    return (m.group(1), m.group(2)) if m else None


class KeyHasher:
    def __init__(self, *, time_cost: int, memory_kib: int, cache_s: float) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self.cache_s = cache_s
        self._cache: dict[bytes, tuple[Verified | None, float]] = {}
        self._lock = threading.Lock()

    def new_key(self) -> NewKey:
        key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        secret = secrets.token_urlsafe(32)  # 256 bits: 43 url-safe characters, never a '.'
        return NewKey(key_id, f"{KEY_PREFIX}{key_id}.{secret}", self._hasher.hash(secret))

    def cached(self, presented: str) -> tuple[bool, Verified | None]:
        """(found, result): a remembered verification (positive or negative) that has not expired."""
        digest = hashlib.sha256(presented.encode()).digest()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def verify(self, presented: str, stored_hash: str, department: str) -> Verified | None:
        """Check `presented` against its stored hash (slow) and remember the answer for `cache_s`."""
        result = self.check(presented, stored_hash, department)
        self.remember(presented, result)
        return result

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

    def remember(self, presented: str, result: Verified | None) -> None:
        digest = hashlib.sha256(presented.encode()).digest()
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # bounded: a flood of distinct bad keys cannot grow memory
            self._cache[digest] = (result, time.monotonic() + self.cache_s)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
