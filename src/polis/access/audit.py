"""The audit log: every access decision, allowed or denied, appended to a hash-chained JSON Lines file.

Each entry carries `seq` (1, 2, ...), `prev` (the previous entry's hash, 64 zeros for the first) and
`hash` = SHA-256 over `prev` and the entry's canonical JSON (sorted keys, without `hash`). Changing,
deleting, inserting or reordering a past entry breaks the chain at that entry, which `verify` reports.
Cutting entries off the end leaves a valid shorter chain: compare `head()` with a copy kept elsewhere
(`polis audit verify --head HASH`) to detect that.

Several processes may append (the server and `polis admin`): an exclusive `flock` around each append,
and a process re-reads the last entry when the file grew under it, keep one chain."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from polis.domain.errors import BadRequestData
from polis.privacy.refusal import redacted

GENESIS = "0" * 64
_HEAD = re.compile(r"[0-9a-f]{64}")
_TAIL_BYTES = 64 * 1024


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

    def close(self) -> None:
        with self._lock:
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
    ) -> dict[str, Any]:
        """Record one decision; returns the entry as written. A request naming someone (an e-mail address or a
        MAC address in an id it asked for) is recorded without that name: the chain cannot be redacted later."""
        what, reason = redacted(what), redacted(reason)
        with self._lock:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                size = os.fstat(self._file.fileno()).st_size
                if size != self._size:
                    self._seq, self._prev = _tail(self.path, size)
                entry: dict[str, Any] = {
                    "seq": self._seq + 1,
                    "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "who": who,
                    "key": key,
                    "action": action,
                    "dataset": dataset,
                    "tier": tier,
                    "what": what,
                    "decision": decision,
                    "reason": reason,
                    "prev": self._prev,
                }
                entry["hash"] = entry_hash(self._prev, entry)
                line = orjson.dumps(entry) + b"\n"
                self._file.write(line)
                self._size = size + len(line)
                self._seq, self._prev = entry["seq"], entry["hash"]
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        return entry


def _tail(path: Path, size: int) -> tuple[int, str]:
    """(seq, hash) of the last entry of the file."""
    if size == 0:
        return 0, GENESIS
    with path.open("rb") as f:
        f.seek(max(0, size - _TAIL_BYTES))
        lines = f.read(size).splitlines()
    for line in reversed(lines):
        try:
            last = orjson.loads(line)
            return int(last["seq"]), str(last["hash"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a torn line (a crash mid-write): chain on from the last whole entry; `verify` flags it
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
