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
]


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
        self._next_seq = int(con.execute("SELECT COALESCE(max(seq), 0) + 1 FROM notification_outbox").fetchall()[0][0])
        self._next_position = int(
            con.execute("SELECT COALESCE(max(position), 0) + 1 FROM subscriptions").fetchall()[0][0]
        )

    # -- subscriptions -------------------------------------------------------------------------------

    def load(self) -> list[tuple[Subscription, DeliveryStatus]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT doc, times_sent, times_failed, last_notification, last_success, last_failure, "
                "last_failure_reason FROM subscriptions ORDER BY position"
            ).fetchall()
        return [
            (Subscription.from_doc(orjson.loads(doc)), DeliveryStatus(sent, failed, last, ok, bad, why))
            for doc, sent, failed, last, ok, bad, why in rows
        ]

    def insert(self, sub: Subscription) -> None:
        with self._lock:
            self._con.execute(
                "INSERT INTO subscriptions (tenant, id, doc, position) VALUES (?, ?, ?, ?)",
                [sub.tenant, sub.id, orjson.dumps(sub.to_doc()).decode(), self._next_position],
            )
            self._next_position += 1

    def update(self, sub: Subscription) -> None:
        with self._lock:
            self._con.execute(
                "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ?",
                [orjson.dumps(sub.to_doc()).decode(), sub.tenant, sub.id],
            )

    def delete(self, tenant: str, sub_id: str) -> None:
        """The subscription and its undelivered notifications, in one transaction."""
        with self._lock, self._transaction():
            self._con.execute("DELETE FROM subscriptions WHERE tenant = ? AND id = ?", [tenant, sub_id])
            self._con.execute(
                "DELETE FROM notification_outbox WHERE tenant = ? AND subscription_id = ?", [tenant, sub_id]
            )

    # -- outbox --------------------------------------------------------------------------------------

    def enqueue(
        self, drafts: Sequence[tuple[str, str, str, str, Sequence[Change]]], con: duckdb.DuckDBPyConnection
    ) -> list[OutboxItem]:
        """(tenant, subscription id, notification id, notifiedAt, changes) -> stored items, written on `con`
        inside its caller's transaction (the entity commit); their `seq` follows every earlier one (a commit
        that rolls back leaves a gap, never a repeat)."""
        with self._lock:
            items = []
            for tenant, sub_id, notification_id, notified_at, changes in drafts:
                items.append(OutboxItem(self._next_seq, tenant, sub_id, notification_id, notified_at, tuple(changes)))
                self._next_seq += 1
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

    def pending(self) -> list[OutboxItem]:
        with self._lock:
            rows = self._con.execute(
                "SELECT seq, tenant, subscription_id, notification_id, notified_at, changes "
                "FROM notification_outbox ORDER BY seq"
            ).fetchall()
        return [
            OutboxItem(seq, tenant, sid, nid, at, tuple(Change.from_json(c) for c in orjson.loads(changes)))
            for seq, tenant, sid, nid, at, changes in rows
        ]

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


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.execute("BEGIN TRANSACTION")

    def __exit__(self, kind: object, *_: object) -> None:
        self._con.execute("COMMIT" if kind is None else "ROLLBACK")
