"""Departments, their API keys (hashed) and their grants, in a small SQLite file beside the hub's data.

SQLite rather than the hub's DuckDB file: the server holds DuckDB's file lock while it runs, and
`polis admin` must be able to create keys and change grants of a running hub. The server notices
another process's change through SQLite's `data_version` and reloads the grants."""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from polis.access.grants import Grant, Permissions, check_grant, never_applies

_NAME = re.compile(r"[a-z][a-z0-9_\-]{0,63}")  # whole names only (fullmatch): `$` would let "police\n" through

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS departments (
        name TEXT PRIMARY KEY, description TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, department TEXT NOT NULL REFERENCES departments(name), hash TEXT NOT NULL,
        created_at TEXT NOT NULL, revoked_at TEXT, key_digest BLOB)""",
    """CREATE TABLE IF NOT EXISTS grants (
        department TEXT NOT NULL REFERENCES departments(name), dataset TEXT NOT NULL, tier TEXT NOT NULL,
        action TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (department, dataset, tier, action))""",
]


class AccessError(ValueError):
    """A bad admin request: unknown department, duplicate name, malformed grant or one that could never apply."""


@dataclass(frozen=True, slots=True)
class LiveKey:
    department: str
    hash: str  # argon2id of the secret: what decides whether a presented key is this one
    # SHA-256 of the whole key (`polis.access.keys.key_digest`); None for a key created before it was kept and not
    # verified since. It marks the holder's key so that guesses at the key id never throttle it, and gives nothing
    # usable away: the secret is 256 random bits, too many to search for whatever the hash.
    key_digest: bytes | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    department: str
    created_at: str
    revoked_at: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccessError(f"a department name is 1-64 lowercase letters, digits, '_' or '-', got '{name}'")
    return name


class DepartmentStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._lock = threading.Lock()
        with self._lock:
            self._con.execute("PRAGMA foreign_keys = ON")
            for ddl in _SCHEMA:
                self._con.execute(ddl)
            self._migrate()
        path.chmod(0o600)  # key hashes: not for other users of the machine

    def _migrate(self) -> None:
        """Bring a file written by an older Polis up to `_SCHEMA` (under the lock). In one write transaction, so
        that a server and `polis admin` starting on the same file at once do not both add a column."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._con.execute("PRAGMA table_info(api_keys)")}
            if "key_digest" not in columns:  # keys stored before it get theirs when next verified
                self._con.execute("ALTER TABLE api_keys ADD COLUMN key_digest BLOB")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def data_version(self) -> int:
        """Changes when another connection commits (a `polis admin` command beside the server)."""
        with self._lock:
            return int(self._con.execute("PRAGMA data_version").fetchone()[0])

    # -- departments -----------------------------------------------------------------------------

    def create_department(self, name: str, description: str = "") -> None:
        check_name(name)
        with self._lock:
            try:
                self._con.execute("INSERT INTO departments VALUES (?, ?, ?)", (name, description, _now()))
            except sqlite3.IntegrityError:
                raise AccessError(f"department '{name}' already exists") from None

    def departments(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(r[0], r[1]) for r in self._con.execute("SELECT name, description FROM departments ORDER BY name")]

    def has_department(self, name: str) -> bool:
        with self._lock:
            return self._con.execute("SELECT 1 FROM departments WHERE name = ?", (name,)).fetchone() is not None

    def _require_department(self, name: str) -> None:
        if not self.has_department(name):
            raise AccessError(f"no department '{name}' (create it with `polis admin department create`)")

    # -- keys ------------------------------------------------------------------------------------

    def add_key(self, key_id: str, department: str, key_hash: str, key_digest: bytes) -> None:
        self._require_department(department)
        with self._lock:
            self._con.execute(
                "INSERT INTO api_keys (id, department, hash, created_at, key_digest) VALUES (?, ?, ?, ?, ?)",
                (key_id, department, key_hash, _now(), key_digest),
            )

    def key(self, key_id: str) -> LiveKey | None:
        """A live (not revoked) key."""
        with self._lock:
            row = self._con.execute(
                "SELECT department, hash, key_digest FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,)
            ).fetchone()
        return LiveKey(row[0], row[1], row[2]) if row else None

    def record_key_digest(self, key_id: str, key_digest: bytes) -> None:
        """The digest of a key created before digests were kept, once argon2 has verified it: from then on its
        holder is known to every process at once (`KeyHasher.check_limited`). Never for a revoked key. Other
        processes see a change and drop what they remember (`AccessControl._refresh`): once for each such key."""
        with self._lock:
            self._con.execute(
                "UPDATE api_keys SET key_digest = ? WHERE id = ? AND revoked_at IS NULL AND key_digest IS NULL",
                (key_digest, key_id),
            )

    def revoke_key(self, key_id: str) -> None:
        with self._lock:
            done = self._con.execute(
                "UPDATE api_keys SET revoked_at = ?, key_digest = NULL WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            ).rowcount
        if not done:
            raise AccessError(f"no live key '{key_id}'")

    def keys(self, department: str | None = None) -> list[KeyInfo]:
        sql = "SELECT id, department, created_at, revoked_at FROM api_keys"
        params: tuple[str, ...] = ()
        if department is not None:
            sql, params = sql + " WHERE department = ?", (department,)
        with self._lock:
            return [KeyInfo(*row) for row in self._con.execute(sql + " ORDER BY created_at, id", params)]

    # -- grants ----------------------------------------------------------------------------------

    def grant(self, department: str, dataset: str, tier: str, action: str) -> Grant:
        try:
            grant = check_grant(dataset, tier, action)
        except ValueError as error:
            raise AccessError(str(error)) from None
        self._require_department(department)
        problem = never_applies(grant)
        if problem is not None:  # stored, it would show in `polis admin list` and open nothing
            raise AccessError(problem)
        with self._lock:
            self._con.execute(
                "INSERT OR IGNORE INTO grants VALUES (?, ?, ?, ?, ?)", (department, dataset, tier, action, _now())
            )
        return grant

    def revoke_grant(self, department: str, dataset: str, tier: str, action: str) -> None:
        with self._lock:
            done = self._con.execute(
                "DELETE FROM grants WHERE department = ? AND dataset = ? AND tier = ? AND action = ?",
                (department, dataset, tier, action),
            ).rowcount
        if not done:
            raise AccessError(f"department '{department}' has no grant {action} {dataset}/{tier}")

    def permissions(self, department: str) -> Permissions:
        with self._lock:
            rows = self._con.execute(
                "SELECT dataset, tier, action FROM grants WHERE department = ?", (department,)
            ).fetchall()
        return Permissions(department, frozenset(Grant(*r) for r in rows))
