"""The in-process event bus: everything committed is published to whoever listens (rules, detectors,
forecasters). Listeners run after the commit, so a failing listener never undoes a write.

A *staged* listener (the subscriptions' outbox) runs before the commit instead: it returns rows that the
store writes in the same transaction as the entities, so an acknowledged write can never lose the
notifications it owes (no crash window between the entity commit and the outbox insert). Every writer
therefore commits through `EventBus.commit`: stage, write (with what was staged), publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EntityChange:
    tenant: str
    kind: str  # created | replaced | updated | batch | deleted | temporal
    entity_id: str
    entity: dict[str, Any] | None  # the new state (None when deleted)
    previous: dict[str, Any] | None  # the state before (None when created)


class Staged(Protocol):
    """Rows a staged listener adds to a commit."""

    def write(self, con: Any) -> None:
        """Inside the commit's transaction, on the store's connection; raising rolls the whole commit back."""

    def committed(self) -> None:
        """After the commit, still under the store's write lock (so hand-overs happen in commit order)."""


Listener = Callable[[EntityChange], None]
BatchListener = Callable[[Sequence[EntityChange]], None]
Stager = Callable[[Sequence[EntityChange]], Staged | None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._batch_listeners: list[BatchListener] = []
        self._stagers: list[Stager] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def subscribe_batch(self, listener: BatchListener) -> None:
        """Called once per commit with all its changes: a listener that writes (the subscriptions' outbox)
        then pays one transaction per commit, not one per entity."""
        self._batch_listeners.append(listener)

    def subscribe_staged(self, stager: Stager) -> None:
        """Called with a commit's changes before it is written; what it returns is written with them."""
        self._stagers.append(stager)

    def stage(self, changes: Sequence[EntityChange]) -> list[Staged]:
        """What the staged listeners add to the commit of `changes` (pass it to `Store.write(staged=...)`).
        A stager's bug is logged and skips its rows, as a failing listener did: the write itself goes on."""
        staged: list[Staged] = []
        if not changes:
            return staged
        for stager in self._stagers:
            try:
                rows = stager(changes)
            except Exception:
                log.exception("staged listener %r failed on a commit of %d changes", stager, len(changes))
                continue
            if rows is not None:
                staged.append(rows)
        return staged

    def commit(self, changes: Sequence[EntityChange], write: Callable[[Sequence[Staged]], None]) -> None:
        """Write `changes` with what the staged listeners add (`write` calls `Store.write(..., staged=...)`),
        then tell the other listeners."""
        write(self.stage(changes))
        self.publish_many(changes)

    def publish(self, change: EntityChange) -> None:
        self.publish_many((change,))

    def publish_many(self, changes: Sequence[EntityChange]) -> None:
        """The changes of one commit, in order."""
        for change in changes:
            for listener in self._listeners:
                try:
                    listener(change)
                except Exception:  # a listener's bug must not fail the write that already committed
                    log.exception("event listener %r failed on %s %s", listener, change.kind, change.entity_id)
        if not changes:
            return
        for batch_listener in self._batch_listeners:
            try:
                batch_listener(changes)
            except Exception:
                log.exception("event listener %r failed on a commit of %d changes", batch_listener, len(changes))
