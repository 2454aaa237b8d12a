"""The store interface every backend implements (embedded DuckDB today; PostgreSQL or a distributed
engine later). It knows entities as documents plus the indexes queries need; NGSI-LD semantics
(merging, validation, representations) live in the services above it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from polis.domain.entity import Entity, HistoryInstance, Instance, is_plain_number
from polis.ngsi_ld.events import Staged

if TYPE_CHECKING:
    from polis.ngsi_ld.geoquery import GeoQuery
    from polis.ngsi_ld.q import QExpr
    from polis.ngsi_ld.scope_q import ScopeExpr
    from polis.store.attr_index import IndexColumns

DEFAULT_TENANT = ""


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """Which entities: every field narrows (AND); all names are expanded IRIs."""

    ids: tuple[str, ...] = ()
    id_pattern: str | None = None
    types: TypeSelector | None = None
    # Several §5.2.23 entity selectors (POST /entityOperations/query): an entity matches any one of them;
    # narrows like the fields above (which a query with selectors leaves empty).
    selectors: tuple[EntitySelector, ...] = ()
    attrs: tuple[str, ...] = ()  # entity must have at least one of these
    q: QExpr | None = None
    geo: GeoQuery | None = None
    scope_q: ScopeExpr | None = None  # §4.19 scopeQ over the entities' `scope`
    datasets: tuple[str, ...] | None = None  # access control: only entities of these datasets (polis.access)
    limit: int | None = 20
    offset: int = 0
    count: bool = False


@dataclass(frozen=True, slots=True)
class EntitySelector:
    """One entity selector: its types, and optionally its ids or an id pattern (all must hold)."""

    types: TypeSelector
    ids: tuple[str, ...] = ()
    id_pattern: str | None = None


@dataclass(frozen=True, slots=True)
class TypeSelector:
    """§4.17 type selection in disjunctive normal form: any of the groups, each group needs all its types."""

    any_of: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class QueryResult:
    entities: list[Entity]
    count: int | None = None  # total matches, when asked


@dataclass(frozen=True, slots=True)
class TemporalQuery:
    """Which instances of the selected entities' attributes (§4.11)."""

    attrs: tuple[str, ...] = ()  # empty = all attributes
    timerel: Literal["before", "after", "between"] | None = None
    time_at: datetime | None = None
    end_time_at: datetime | None = None
    last_n: int | None = None
    max_instances: int = 10_000
    dataset_ids: tuple[str | None, ...] | None = None  # only instances of these (None: the default instance)


@dataclass(slots=True)
class TemporalAttribute:
    instances: list[dict[str, Any]]  # each an Instance plus observedAt and instanceId, oldest first
    truncated: bool = False
    # When truncated: the observedAt of the nearest instance left out (the one after the last kept; with lastN,
    # the one before the first kept). Kept instances at that same time must not end a page (polis.ngsi_ld.temporal).
    cut_at: datetime | None = None
    # Every instance is a plain numeric Property (type, value, unitCode, datasetId, observedAt, instanceId),
    # already in its output shape: a renderer may pass the list on as it is (a week is 2,016 of them).
    plain: bool = False


@dataclass(slots=True)
class TemporalEntity:
    id: str
    types: list[str]
    attributes: dict[str, TemporalAttribute] = field(default_factory=dict)


@dataclass(slots=True)
class HistoryColumns:
    """Numeric observations in columns, for bulk loads that must not build a dict per row."""

    entity_id: np.ndarray  # str (object)
    attribute: np.ndarray  # str (object), expanded IRI
    observed_at: np.ndarray  # datetime64[us], UTC
    value: np.ndarray  # float64; NaN rows are skipped (missing readings)
    unit_code: str | None = None
    unit_codes: np.ndarray | None = None  # str or None per row (object); overrides unit_code when given

    def __len__(self) -> int:
        return int(self.value.shape[0])


# Members that do not make two instances at one (entity, attribute, datasetId, observedAt) different readings:
# system members, the key itself, and the unit (a key-values reading carries none and takes the attribute's).
_NOT_THE_VALUE = frozenset({"createdAt", "modifiedAt", "instanceId", "observedAt", "datasetId", "unitCode"})
# An instance with no members but these and a plain number value is kept as a bare number (`num`).
PLAIN_MEMBERS = frozenset({"type", "value", "observedAt", "unitCode", "createdAt", "modifiedAt", "datasetId"})


def reading_value(instance: Instance) -> Any:
    """What ingest compares to tell the same reading again (same value at the same (entity, attribute,
    datasetId, observedAt)) from a correction (another value there, which ingest stores beside it)."""
    if is_plain_number(instance, PLAIN_MEMBERS):
        return float(instance["value"])  # 5 and 5.0 are one reading: history keeps numbers as doubles
    return {k: v for k, v in instance.items() if k not in _NOT_THE_VALUE}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message an ingest source could not take, kept with the reason so nothing vanishes silently."""

    source: str  # e.g. "mqtt"
    topic: str
    payload: str  # as received (decoded with replacement), truncated to a bounded size
    reason: str
    received_at: datetime
    id: int | None = None  # assigned by the store


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type: str
    entity_count: int
    attributes: dict[str, set[str]]  # attribute IRI -> attribute kinds seen


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    attribute: str
    entity_count: int  # entities that hold it
    attribute_count: int  # its instances (an entity holds one per datasetId): the Attribute's attributeCount
    kinds: set[str]
    types: set[str]


class Store(Protocol):
    def tenants(self) -> list[str]: ...

    def ensure_tenant(self, tenant: str) -> None: ...

    def has_tenant(self, tenant: str) -> bool: ...

    def entity_count(self, tenant: str) -> int: ...

    def get(self, tenant: str, ids: Sequence[str]) -> dict[str, Entity]:
        """Current state of the entities that exist among `ids`."""
        ...

    def write(
        self,
        tenant: str,
        upserts: Sequence[Entity] = (),
        deletes: Sequence[str] = (),
        history: Sequence[HistoryInstance] = (),
        receipts: Sequence[tuple[str, str]] = (),
        history_columns: HistoryColumns | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        staged: Sequence[Staged] = (),
        index_columns: IndexColumns | None = None,
    ) -> None:
        """In one transaction: replace (or insert) whole entity documents, delete entities, add
        temporal instances (as instances and/or as numeric columns, all kept; NaN values skipped),
        keep dead letters, record (source, key) receipts of the messages these writes came from (so a
        message is stored, or dead-lettered, exactly once), and the rows of staged listeners (the
        subscriptions' outbox, `EventBus.stage`). Nothing is written if anything fails. `index_columns`
        may carry the `attr_index` rows of some upserts, already built (a store may ignore it)."""
        ...

    def prepare(
        self,
        tenant: str,
        upserts: Sequence[Entity] = (),
        deletes: Sequence[str] = (),
        history: Sequence[HistoryInstance] = (),
        receipts: Sequence[tuple[str, str]] = (),
        history_columns: HistoryColumns | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        *,
        index_columns: IndexColumns | None = None,
    ) -> Any:
        """`write` in two steps: this builds what to store (opaque to the caller) without holding the store;
        `apply` stores it. Whoever prepares without holding its own write lock must check `unchanged_since`
        under that lock before `apply`."""
        ...

    def apply(self, prepared: Any, staged: Sequence[Staged] = ()) -> None: ...

    def commit_number(self) -> int:
        """A counter of committed writes, for `unchanged_since`."""
        ...

    def unchanged_since(self, tenant: str, ids: Iterable[str], snapshot: int) -> bool:
        """Whether no write committed after `commit_number()` returned `snapshot` touched these entities."""
        ...

    def seen(self, source: str, keys: Sequence[str]) -> set[str]:
        """Which of these message receipts are already committed (redeliveries to store only once)."""
        ...

    def prune_receipts(self, source: str, before: datetime) -> int: ...

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None: ...

    def dead_letters(self, source: str | None = None, limit: int = 100, offset: int = 0) -> list[DeadLetter]: ...

    def dead_letter_count(self, source: str | None = None) -> int: ...

    def query(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    def temporal(
        self, tenant: str, ids: Sequence[str], query: TemporalQuery
    ) -> dict[str, dict[str, TemporalAttribute]]:
        """Instances per entity id and attribute IRI, oldest first."""
        ...

    def delete_history(
        self,
        tenant: str,
        entity_id: str,
        attribute: str | None = None,
        instance_id: str | None = None,
        *,
        dataset_ids: tuple[str | None, ...] | None = None,
    ) -> int:
        """Delete instances, how many; `dataset_ids` only those of these datasets (None in it: the default
        instances, without a datasetId), every dataset's when not given."""
        ...

    def history_instance(self, tenant: str, entity_id: str, attribute: str, instance_id: str) -> dict[str, Any] | None:
        """One stored temporal instance (with observedAt and instanceId); None when it does not exist."""
        ...

    def replace_instance(
        self,
        tenant: str,
        entity_id: str,
        attribute: str,
        instance_id: str,
        instance: dict[str, Any],
        observed_at: datetime,
    ) -> bool:
        """Overwrite one stored temporal instance; False when it does not exist."""
        ...

    def bulk_history(self, tenant: str, columns: HistoryColumns) -> int:
        """Append numeric observations (no datasetId) as ingest does: one that history holds already at its
        (entity, attribute, observedAt) with the same value is skipped (so a re-ingest adds nothing), one with
        another value there is a correction and is added beside it; returns how many were added."""
        ...

    def newest_history(self, tenant: str, entity_ids: Sequence[str]) -> dict[str, datetime]:
        """For the entities among these that have history, an instant none of their instances is later than
        (the newest, or later after deletions): a reading after it cannot be held already. Cheap: ingest asks
        it for every group of readings, and looks closer (`held_readings`) only at those not after it."""
        ...

    def held_readings(self, tenant: str, readings: Sequence[HistoryInstance]) -> set[int]:
        """The positions among `readings` of those that history holds already: an instance at the same (entity,
        attribute, datasetId, observedAt) with the same value (`reading_value`). Set-based, one query."""
        ...

    def types(self, tenant: str, datasets: Sequence[str] | None = None) -> list[TypeInfo]:
        """Entity types held, counted over the entities of `datasets` only when given (access control)."""
        ...

    def attributes(self, tenant: str, datasets: Sequence[str] | None = None) -> list[AttributeInfo]: ...

    def history_count(self, tenant: str) -> int: ...

    def archive(self, destination: Path) -> list[Path]:
        """Export all history to Parquet partitioned by tenant and day; returns the files written."""
        ...

    def close(self) -> None: ...


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
