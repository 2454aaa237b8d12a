"""The audit log: every access decision, allowed or denied, appended to a hash-chained JSON Lines file.

Each entry carries `seq` (1, 2, ...), `prev` (the previous entry's hash, 64 zeros for the first) and
`hash` = SHA-256 over `prev` and the entry's canonical JSON (sorted keys, without `hash`). Changing,
deleting, inserting or reordering a past entry breaks the chain at that entry, which `verify` reports.
Cutting entries off the end leaves a valid shorter chain: compare `head()` with a copy kept elsewhere
(`polis audit verify --head HASH`) to detect that.

Several processes may append (the server and `polis admin`): an exclusive `flock` around each append,
and a process re-reads the last entry when the file grew under it, keep one chain.

What a client sends is not allowed to decide how big the log gets: a field is kept to MAX_FIELD characters
(a longer one is cut, with its length and SHA-256 noted), and decisions about requests that carry no key are
itemised at most UNAUTHENTICATED_BURST at once and UNAUTHENTICATED_PER_S a second after that; the ones beyond
are counted, and written as one entry per kind of decision (`repeated`: how many, `what`: the first of them)
with the next entry that is written (or when the log is closed). A flood of anonymous requests thus grows the
log at a bounded rate, and every request still counts in it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from polis.domain.errors import BadRequestData
from polis.privacy.refusal import redacted

GENESIS = "0" * 64
_HEAD = re.compile(r"[0-9a-f]{64}")
_TAIL_BYTES = 64 * 1024  # read back at a time when looking for the last entry (an entry may be longer)
MAX_FIELD = 1024  # characters kept of a free-text field (a request path, a reason)
UNAUTHENTICATED_BURST = 100
UNAUTHENTICATED_PER_S = 5.0


def entry_hash(prev: str, fields: dict[str, Any]) -> str:
    body = orjson.dumps({k: v for k, v in fields.items() if k != "hash"}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev.encode() + b"\n" + body).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int  # entries checked and found good
    head: str  # hash of the last good entry
    problem: str | None = None  # what is wrong, at which line


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "r+b", buffering=0)
        self._lock = threading.Lock()
        self._size = -1  # the file size after our last append; another size means someone else appended
        self._seq = 0
        self._prev = GENESIS
        self._tokens = float(UNAUTHENTICATED_BURST)  # itemised unauthenticated entries available now
        self._refilled = time.monotonic()
        self._held: dict[tuple[str, ...], list[Any]] = {}  # counted, not itemised: kind -> [count, first what, at]

    def close(self) -> None:
        with self._lock:
            if self._held:
                self._write_locked([])
            self._file.close()

    def append(
        self,
        *,
        who: str,
        action: str,
        dataset: str,
        tier: str,
        what: str,
        decision: str,
        key: str | None = None,
        reason: str = "",
        unauthenticated: bool = False,
    ) -> dict[str, Any]:
        """Record one decision; returns the entry (as written, or as counted when `unauthenticated` decisions
        come faster than they are itemised). A request naming someone (an e-mail address or a MAC address in
        an id it asked for) is recorded without that name: the chain cannot be redacted later."""
        what, reason = _bounded(redacted(what)), _bounded(redacted(reason))
        now = _now()
        fields: dict[str, Any] = {
            "at": now, "who": who, "key": key, "action": action, "dataset": dataset, "tier": tier, "what": what,
            "decision": decision, "reason": reason,
        }
        with self._lock:
            if unauthenticated and not self._take_token():
                kind = (who, action, dataset, tier, decision, reason)
                held = self._held.setdefault(kind, [0, what, now])
                held[0] += 1
                return fields
            return self._write_locked([fields])[-1]

    def _take_token(self) -> bool:
        clock = time.monotonic()
        self._tokens = min(float(UNAUTHENTICATED_BURST),
                           self._tokens + (clock - self._refilled) * UNAUTHENTICATED_PER_S)
        self._refilled = clock
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _write_locked(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append the counted decisions, then `batch`, under the file lock (self._lock held)."""
        summaries = [
            {"at": at, "who": who, "key": None, "action": action, "dataset": dataset, "tier": tier,
             "what": _bounded(f"{count} unauthenticated requests since {at}, counted rather than itemised; "
                              f"the first: {first}" if count > 1 else first),
             "decision": decision, "reason": reason, "repeated": count}
            for (who, action, dataset, tier, decision, reason), (count, first, at) in self._held.items()
        ]
        self._held = {}
        written = []
        fcntl.flock(self._file, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size != self._size:
                self._seq, self._prev = _tail(self.path, size)
            lines = []
            for fields in [*summaries, *batch]:
                entry: dict[str, Any] = {"seq": self._seq + 1, **fields, "prev": self._prev}
                entry["hash"] = entry_hash(self._prev, entry)
                lines.append(orjson.dumps(entry) + b"\n")
                self._seq, self._prev = entry["seq"], entry["hash"]
                written.append(entry)
            data = b"".join(lines)
            self._file.write(data)
            self._size = size + len(data)
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        return written


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _bounded(text: str) -> str:
    """At most MAX_FIELD characters of `text`, noting what was cut (its length and digest still identify it)."""
    if len(text) <= MAX_FIELD:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[:MAX_FIELD]}… [{len(text)} characters in all, sha256 {digest}…]"


def _tail(path: Path, size: int) -> tuple[int, str]:
    """(seq, hash) of the last entry of the file, read back block by block until a whole entry is found: an
    entry longer than one block (written before fields were bounded) must not read as an empty log."""
    if size == 0:
        return 0, GENESIS
    carry = b""  # the first, maybe partial, line of the block read last
    end = size
    with path.open("rb") as f:
        while end > 0:
            start = max(0, end - _TAIL_BYTES)
            f.seek(start)
            lines = (f.read(end - start) + carry).split(b"\n")
            carry = lines.pop(0) if start > 0 else b""
            for line in reversed(lines):
                if not line.strip():
                    continue
                try:
                    last = orjson.loads(line)
                    return int(last["seq"]), str(last["hash"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a torn line (a crash mid-write): chain on from the last whole entry; `verify` flags it
            end = start
    return 0, GENESIS


def verify(path: Path, expected_head: str | None = None) -> Verification:
    """Walk the chain from the first entry; the first entry that does not follow is the problem."""
    if expected_head is not None and not _HEAD.fullmatch(expected_head):
        # a malformed head is a mistake in the request, not evidence that entries were cut off the end
        raise BadRequestData("head must be the 64 hexadecimal digits of an audit hash, as `polis audit verify` prints")
    prev, seq = GENESIS, 0
    if not path.exists():
        return Verification(False, 0, GENESIS, f"no audit log at {path}")
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                entry = orjson.loads(raw)
                if not isinstance(entry, dict):
                    raise TypeError("not an object")
                stored = entry["hash"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return Verification(False, seq, prev, f"line {number}: not an audit entry")
            if entry.get("seq") != seq + 1:
                return Verification(
                    False, seq, prev, f"line {number}: seq {entry.get('seq')} where {seq + 1} was expected "
                    "(an entry was deleted, inserted or moved)"
                )
            if entry.get("prev") != prev:
                return Verification(False, seq, prev, f"line {number}: does not chain to the entry before it")
            if entry_hash(prev, entry) != stored:
                return Verification(False, seq, prev, f"line {number}: its content was changed after it was written")
            prev, seq = stored, seq + 1
    if expected_head is not None and expected_head != prev:
        return Verification(
            False, seq, prev, f"the chain ends at {prev[:16]}…, not at the expected head {expected_head[:16]}… "
            "(entries were cut off the end)"
        )
    return Verification(True, seq, prev)
