"""Subscriptions and their notification outbox in the hub's DuckDB database (own tables, own connection).

- `subscriptions`: one row per (tenant, id): the subscription document (expanded names) and its delivery
  status counters, so `timesSent`/`lastSuccess`/... survive a restart.
- `notification_outbox`: one row per notification not yet delivered, in `seq` order. A row is written in
  the same transaction as the entity change it reports (`enqueue` runs on the store's connection, inside
  `DuckDBStore.write`), so a write that was acknowledged always has its notifications stored, and a write
  that failed has none; the row is deleted once its endpoint accepted it: rows still here when the process
  stops are delivered after it starts again.

Everything else (subscriptions, acknowledgements, status counters) uses its own connection
(`DuckDBStore.connection()`) and lock, so it never waits on the entity store's lock.

A subscription id can be deleted and created again, by another department too: each creation takes a fresh
`min_seq` from the outbox's sequence (the incarnation), and an outbox row for that id with a lower `seq` was
owed to an earlier incarnation and is never delivered to this one. `enqueue` writes a notification only for
the incarnation it was matched for, so a commit matched before a deletion and written after a re-creation
cannot carry the old subscription's notification over to the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import orjson

from polis.subscriptions.model import DeliveryStatus, Subscription
from polis.subscriptions.notification import Change, OutboxItem

SCHEMA_KEY = "subscriptions_schema_version"
SCHEMA_VERSION = "1"
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS subscriptions (
        tenant VARCHAR NOT NULL, id VARCHAR NOT NULL, doc VARCHAR NOT NULL, position BIGINT NOT NULL,
        times_sent BIGINT NOT NULL DEFAULT 0, times_failed BIGINT NOT NULL DEFAULT 0,
        last_notification VARCHAR, last_success VARCHAR, last_failure VARCHAR, last_failure_reason VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS notification_outbox (
        seq BIGINT NOT NULL, tenant VARCHAR NOT NULL, subscription_id VARCHAR NOT NULL,
        notification_id VARCHAR NOT NULL, notified_at VARCHAR NOT NULL, changes VARCHAR NOT NULL)""",
    # Added after version 1 (additive: an older Polis ignores it): the incarnation of the subscription row.
    "ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS min_seq BIGINT DEFAULT 0",
]

Key = tuple[str, str]  # (tenant, subscription id)
# (tenant, subscription id, the incarnation it was matched for, notification id, notifiedAt, changes)
Draft = tuple[str, str, int, str, str, Sequence[Change]]


class SubscriptionRepository:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._lock = threading.Lock()
        for ddl in _SCHEMA:
            con.execute(ddl)
        rows = con.execute("SELECT value FROM meta WHERE key = ?", [SCHEMA_KEY]).fetchall()
        if rows and rows[0][0] != SCHEMA_VERSION:
            raise RuntimeError(f"subscriptions schema version {rows[0][0]}; this Polis reads {SCHEMA_VERSION}")
        con.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", [SCHEMA_KEY, SCHEMA_VERSION])
        # Past every row and every incarnation: a seq is never reused, so a new incarnation's min_seq is above
        # whatever was owed to an older one, even after the outbox emptied and the hub restarted.
        self._next_seq = int(con.execute(
            "SELECT greatest((SELECT COALESCE(max(seq), 0) FROM notification_outbox), "
            "(SELECT COALESCE(max(min_seq), 0) FROM subscriptions)) + 1"
        ).fetchall()[0][0])
        self._next_position = int(
            con.execute("SELECT COALESCE(max(position), 0) + 1 FROM subscriptions").fetchall()[0][0]
        )
        self._live: dict[Key, int] = {}  # the incarnation (min_seq) of every subscription that exists

    # -- subscriptions -------------------------------------------------------------------------------

    def load(self) -> list[tuple[Subscription, DeliveryStatus, int]]:
        """Every subscription with its delivery status and incarnation (min_seq)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT doc, times_sent, times_failed, last_notification, last_success, last_failure, "
                "last_failure_reason, COALESCE(min_seq, 0) FROM subscriptions ORDER BY position"
            ).fetchall()
            loaded = [
                (Subscription.from_doc(orjson.loads(doc)), DeliveryStatus(sent, failed, last, ok, bad, why), int(low))
                for doc, sent, failed, last, ok, bad, why, low in rows
            ]
            self._live = {(sub.tenant, sub.id): low for sub, _, low in loaded}
        return loaded

    def insert(self, sub: Subscription) -> int:
        """Store a new subscription; returns its incarnation (min_seq), unique to this creation."""
        with self._lock:
            min_seq = self._next_seq
            self._con.execute(
                "INSERT INTO subscriptions (tenant, id, doc, position, min_seq) VALUES (?, ?, ?, ?, ?)",
                [sub.tenant, sub.id, orjson.dumps(sub.to_doc()).decode(), self._next_position, min_seq],
            )
            self._next_position += 1
            self._next_seq += 1  # taken: the next creation of this id gets another incarnation
            self._live[(sub.tenant, sub.id)] = min_seq
        return min_seq

    def incarnation(self, tenant: str, sub_id: str) -> int:
        """The min_seq of the subscription as it exists now (-1: it does not)."""
        with self._lock:
            return self._live.get((tenant, sub_id), -1)

    def update(self, sub: Subscription) -> None:
        with self._lock:
            self._con.execute(
                "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ?",
                [orjson.dumps(sub.to_doc()).decode(), sub.tenant, sub.id],
            )

    def delete(self, tenant: str, sub_id: str) -> None:
        """The subscription and its undelivered notifications, in one transaction."""
        with self._lock, self._transaction():
            self._live.pop((tenant, sub_id), None)
            self._con.execute("DELETE FROM subscriptions WHERE tenant = ? AND id = ?", [tenant, sub_id])
            self._con.execute(
                "DELETE FROM notification_outbox WHERE tenant = ? AND subscription_id = ?", [tenant, sub_id]
            )

    # -- outbox --------------------------------------------------------------------------------------

    def enqueue(self, drafts: Sequence[Draft], con: duckdb.DuckDBPyConnection) -> list[OutboxItem]:
        """Drafts -> stored items, written on `con` inside its caller's transaction (the entity commit); their
        `seq` follows every earlier one (a commit that rolls back leaves a gap, never a repeat). A draft whose
        subscription was deleted (or deleted and created again) since it was matched is left out."""
        with self._lock:
            items = []
            for tenant, sub_id, incarnation, notification_id, notified_at, changes in drafts:
                if self._live.get((tenant, sub_id)) != incarnation:
                    continue
                items.append(OutboxItem(self._next_seq, tenant, sub_id, notification_id, notified_at, tuple(changes)))
                self._next_seq += 1
            if not items:
                return items
            rows = [
                [
                    i.seq,
                    i.tenant,
                    i.subscription_id,
                    i.notification_id,
                    i.notified_at,
                    orjson.dumps([c.to_json() for c in i.changes]).decode(),
                ]
                for i in items
            ]
            # One statement: DuckDB's executemany is slower for a few rows.
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows))
            con.execute(f"INSERT INTO notification_outbox VALUES {values}", [v for row in rows for v in row])
        return items

    def pending(self, per_subscription: int | None = None) -> list[OutboxItem]:
        """Undelivered notifications in seq order: all of them, or the first `per_subscription` of each
        subscription (what the workers hold in memory; the rest wait here, see `pending_after`)."""
        sql = "SELECT seq, tenant, subscription_id, notification_id, notified_at, changes FROM notification_outbox"
        params: list[Any] = []
        if per_subscription is not None:
            sql += " QUALIFY row_number() OVER (PARTITION BY tenant, subscription_id ORDER BY seq) <= ?"
            params.append(per_subscription)
        with self._lock:
            rows = self._con.execute(sql + " ORDER BY seq", params).fetchall()
        return [_item(row) for row in rows]

    def pending_after(self, tenant: str, sub_id: str, after_seq: int, limit: int) -> list[OutboxItem]:
        """The next `limit` undelivered notifications of one subscription after `after_seq`, in seq order."""
        with self._lock:
            rows = self._con.execute(
                "SELECT seq, tenant, subscription_id, notification_id, notified_at, changes FROM notification_outbox "
                "WHERE tenant = ? AND subscription_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                [tenant, sub_id, after_seq, limit],
            ).fetchall()
        return [_item(row) for row in rows]

    def count_pending(self, tenant: str, sub_id: str) -> int:
        with self._lock:
            row = self._con.execute(
                "SELECT count(*) FROM notification_outbox WHERE tenant = ? AND subscription_id = ?", [tenant, sub_id]
            ).fetchone()
        return int(row[0]) if row else 0

    def acknowledge(self, seqs: Sequence[int], statuses: Sequence[tuple[str, str, DeliveryStatus]]) -> None:
        """Delivered notifications leave the outbox and the subscriptions' status counters are saved, in one
        transaction."""
        with self._lock, self._transaction():
            if seqs:
                self._con.execute(
                    "DELETE FROM notification_outbox WHERE seq IN (SELECT unnest(?::BIGINT[]))", [list(seqs)]
                )
            for tenant, sub_id, status in statuses:
                self._save_status(tenant, sub_id, status)

    def _save_status(self, tenant: str, sub_id: str, s: DeliveryStatus) -> None:
        self._con.execute(
            "UPDATE subscriptions SET times_sent = ?, times_failed = ?, last_notification = ?, last_success = ?, "
            "last_failure = ?, last_failure_reason = ? WHERE tenant = ? AND id = ?",
            [s.times_sent, s.times_failed, s.last_notification, s.last_success, s.last_failure,
             s.last_failure_reason, tenant, sub_id],
        )

    def _transaction(self) -> Any:
        return _Transaction(self._con)

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _item(row: tuple[Any, ...]) -> OutboxItem:
    seq, tenant, sid, nid, at, changes = row
    return OutboxItem(seq, tenant, sid, nid, at, tuple(Change.from_json(c) for c in orjson.loads(changes)))


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.execute("BEGIN TRANSACTION")

    def __exit__(self, kind: object, *_: object) -> None:
        self._con.execute("COMMIT" if kind is None else "ROLLBACK")
