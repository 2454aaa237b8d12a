"""The in-process event bus: everything committed is published to whoever listens (rules, detectors,
forecasters, subscriptions). Listeners run after the commit, so a failing listener never undoes a write."""

from __future__ import annotations

import logging
from collections.abc import Callable
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


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, change: EntityChange) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # a listener's bug must not fail the write that already committed
                log.exception("event listener %r failed on %s %s", listener, change.kind, change.entity_id)
