"""The in-process event bus: everything committed is published to whoever listens (rules, detectors,
forecasters, subscriptions). Listeners run after the commit, so a failing listener never undoes a write."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EntityChange:
    tenant: str
    kind: str  # created | replaced | updated | batch | deleted | temporal
    entity_id: str
    entity: dict[str, Any] | None  # the new state (None when deleted)
    previous: dict[str, Any] | None  # the state before (None when created)


Listener = Callable[[EntityChange], None]
BatchListener = Callable[[Sequence[EntityChange]], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._batch_listeners: list[BatchListener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def subscribe_batch(self, listener: BatchListener) -> None:
        """Called once per commit with all its changes: a listener that writes (the subscriptions' outbox)
        then pays one transaction per commit, not one per entity."""
        self._batch_listeners.append(listener)

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
