"""Which dataset a piece of data belongs to, and at which tier its NGSI-LD entities are held.

The rule for an NGSI-LD entity reads only its id, which never changes (a write may add types to an
entity, so a rule on types would let a department move an entity into a dataset it may not write):

1. `urn:ngsi-ld:<Type>:<dataset>:<rest>` where `<dataset>` is a declared dataset (the demo loaders name
   their entities this way, e.g. `urn:ngsi-ld:TrafficFlowObserved:los-loop:773869`) -> that dataset.
   Types alone cannot decide it: Los-loop and SZ-taxi both hold `TrafficFlowObserved`.
2. otherwise `urn:ngsi-ld:<Type>:<rest>` where `<Type>` is declared in `TYPE_DATASETS` (e.g. `Alert`)
   -> that type's dataset;
3. anything else -> `other`, a dataset like any other that must be granted explicitly.

Names are compared exactly (case-sensitive) by the Python rule and by the SQL expression the store
filters queries with; a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

OTHER = "other"


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    entity_tier: str  # the tier its NGSI-LD entities are held at (entity routes check grants at this tier)
    description: str


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("los-loop", "aggregate", "METR-LA loop detectors: 5-minute average speeds"),
        DatasetInfo("sz-taxi", "aggregate", "Shenzhen road speeds from taxi GPS, 15-minute averages"),
        DatasetInfo("melbourne-pedestrians", "aggregate", "City of Melbourne hourly pedestrian counts"),
        DatasetInfo("montgomery-911", "raw-pseudonymous", "Montgomery County 911 calls, one entity per call"),
        DatasetInfo("citibike-jersey-city", "raw-pseudonymous", "Citi Bike Jersey City trips (privacy gate)"),
        DatasetInfo("alerts", "public", "Alerts: NGSI-LD Alert entities and the CAP feed"),
        DatasetInfo("forecasts", "aggregate", "Forecasts made by the hub's models"),
        DatasetInfo("epidemic", "aggregate", "Epidemic scenarios on mobility"),
        DatasetInfo(OTHER, "aggregate", "Entities of no declared dataset"),
    )
}

# Entities whose id carries no dataset segment, by the type named in the id.
TYPE_DATASETS: dict[str, str] = {"Alert": "alerts"}

# Not NGSI-LD data, but access-controlled like datasets: the hub's operation (metrics, dead letters),
# the @context registry, the audit log and every department's subscriptions.
ALERTS = "alerts"
CITIBIKE = "citibike-jersey-city"
OPERATIONS = "operations"
CONTEXTS = "contexts"
AUDIT = "audit"
SUBSCRIPTIONS = "subscriptions"

# The tiers each dataset is served at besides its entities' own: the routes with a fixed need
# (polis.access.enforce; a test keeps the two in step). Datasets are not open-ended: an id naming no
# declared dataset is `other`, so a grant on an undeclared dataset or on a tier it is not served at
# could never apply, and `polis admin grant` refuses it instead of storing a grant that does nothing.
PRODUCT_TIERS: dict[str, frozenset[str]] = {
    CITIBIKE: frozenset({"aggregate", "public"}),  # flows and OD; the summary
    ALERTS: frozenset({"aggregate"}),  # rules and alerts as JSON (CAP messages are public, the entity tier)
    OPERATIONS: frozenset({"aggregate", "raw-pseudonymous"}),  # /metrics; dead letters as received
    CONTEXTS: frozenset({"public"}),
    AUDIT: frozenset({"raw-pseudonymous"}),
    SUBSCRIPTIONS: frozenset({"aggregate"}),  # administer: every department's subscriptions
}

_PREFIX = "urn:ngsi-ld:"


def dataset_of(entity_id: str) -> str:
    if not entity_id.startswith(_PREFIX):
        return OTHER
    parts = entity_id.split(":")
    if len(parts) >= 5 and parts[3] in DATASETS:
        return parts[3]
    if len(parts) >= 4 and parts[2] in TYPE_DATASETS:
        return TYPE_DATASETS[parts[2]]
    return OTHER


def entity_tier(dataset: str) -> str:
    info = DATASETS.get(dataset)
    return info.entity_tier if info is not None else "aggregate"


def served_tiers(dataset: str) -> frozenset[str]:
    """The tiers `dataset` is served at (empty: no such dataset)."""
    info = DATASETS.get(dataset)
    own = frozenset({info.entity_tier}) if info is not None else frozenset()
    return own | PRODUCT_TIERS.get(dataset, frozenset())


def known_datasets() -> list[str]:
    return sorted({*DATASETS, *PRODUCT_TIERS})


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dataset_sql(column: str) -> str:
    """A DuckDB expression giving the dataset of the entity id in `column`, exactly as `dataset_of`."""
    names = ", ".join(_literal(n) for n in DATASETS)
    # parts = colons + 1, counted without building a list per row
    parts = f"(length({column}) - length(replace({column}, ':', '')) + 1)"
    cases = [
        f"WHEN NOT starts_with({column}, {_literal(_PREFIX)}) THEN {_literal(OTHER)}",
        f"WHEN {parts} >= 5 AND split_part({column}, ':', 4) IN ({names}) THEN split_part({column}, ':', 4)",
    ]
    cases += [
        f"WHEN {parts} >= 4 AND split_part({column}, ':', 3) = {_literal(t)} THEN {_literal(d)}"
        for t, d in TYPE_DATASETS.items()
    ]
    return f"(CASE {' '.join(cases)} ELSE {_literal(OTHER)} END)"
