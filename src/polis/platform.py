"""The root object: builds the store, the event bus, the context cache and the services from settings.
Nothing is built at import time; the API, the CLI and the tests all start from a `Platform`."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from polis.access.control import AccessControl
from polis.ngsi_ld.context import ContextCache
from polis.ngsi_ld.entities import EntityService
from polis.ngsi_ld.events import EventBus
from polis.ngsi_ld.temporal import TemporalService
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from polis.subscriptions.service import SubscriptionService

log = logging.getLogger(__name__)

class Source(Protocol):
    """A live ingest source the platform runs (MQTT today): started with the server, stopped with it."""

    def start(self, wait_s: float | None = None) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def metrics(self) -> dict[str, Any]: ...


class Platform:
    def __init__(self, settings: Settings, *, store: DuckDBStore | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = store or DuckDBStore(
            settings.database_path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit
        )
        try:
            self._build(settings)
        except BaseException:  # e.g. an unreadable context cache: the database file is not left locked
            access = getattr(self, "access", None)
            if access is not None:
                access.close()
            self.store.close()
            raise

    def _build(self, settings: Settings) -> None:
        self.bus = EventBus()
        self.contexts = ContextCache(
            settings.datasets_dir, settings.context_cache_dir, fetch_timeout_s=settings.context_fetch_timeout_s
        )
        self.entities = EntityService(self.store, self.bus)
        self.temporal = TemporalService(self.entities)
        from polis.privacy.service import PrivacyService  # mobility products, the ε ledger (tables made on first use)

        self.privacy = PrivacyService(self.store, settings)
        # Subscriptions and their durable outbox; delivery threads start only once a notification waits.
        self.subscriptions = SubscriptionService(self.store, self.bus, self.contexts, settings)
        self.sources: dict[str, Source] = {}
        # Departments, keys, grants and the audit log; before the alert engine, whose rules watch only what their
        # department may read now (a burst rule primes its counts from stored events as it starts).
        self.access = AccessControl(settings)
        from polis.alerts.engine import AlertEngine  # rules -> CAP alerts + Alert entities; worker starts on first use

        self.alerts = AlertEngine(self)
        from polis.forecast.live import ForecastService  # live forecasts; nothing runs until start()/attach()

        self.forecasts = ForecastService(self)
        self.subscriptions.entity_gate = self.access.notification_allows  # notifications: only what may be read
        # an administrator's ids stay out of other departments' namespaces
        self.subscriptions.department_exists = self.access.departments.has_department
        self.subscriptions.start()  # the outbox of the last run, now that every notification meets the gate

    def start_mqtt(self, url: str, wait_s: float | None = None) -> Source:
        """Take sensor streams from the broker at `url` into this hub (see polis.ingest.mqtt); with
        `wait_s`, wait that long for the subscription (TimeoutError without it)."""
        from polis.ingest.mqtt import MqttIngestor

        ingestor = MqttIngestor(self, url)
        ingestor.start(wait_s=wait_s)
        self.sources["mqtt"] = ingestor
        return ingestor

    @classmethod
    def in_memory(cls, **overrides: object) -> Platform:
        """A platform whose store lives in memory and whose files go to a temporary directory (tests)."""
        data_dir = Path(tempfile.mkdtemp(prefix="polis-"))
        # Cheap key hashing for test hubs: keys are random 256-bit secrets, the argon2 cost is defence in depth.
        overrides = {"api_key_hash_time_cost": 1, "api_key_hash_memory_kib": 64, **overrides}
        settings = Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]
        return cls(settings, store=DuckDBStore(None, threads=settings.duckdb_threads))

    def close(self) -> None:
        """Stop every part, in order, even when one of them fails (the first failure is raised after)."""
        steps: list[Callable[[], None]] = [
            *(source.stop for source in self.sources.values()),  # commit and acknowledge what they hold
            self.forecasts.close,  # its refresh thread reads the store
            self.alerts.close,  # before the store: its worker may be writing an Alert entity
            self.subscriptions.close,  # workers stop; undelivered notifications stay in the outbox
            self.store.close,
            self.access.close,
        ]
        self.sources.clear()
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as error:
                log.exception("closing the platform: %r failed", step)
                failure = failure or error
        if failure is not None:
            raise failure
