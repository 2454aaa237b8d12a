"""`polis ingest covid-europe-2020`: the four countries' regions and daily movements as NGSI-LD entities.

- Each region is an `AdministrativeArea` entity (default vocabulary: no Smart Data Model in the shipped
  set describes case counts), id `urn:ngsi-ld:AdministrativeArea:epidemic:covid-europe-2020:<country>:<name>`
  (the `epidemic` segment is the access dataset, polis.access.datasets), with `name`, `countryCode` and
  `newConfirmedCases` (unitCode C62), one temporal instance per day, observedAt 00:00Z (files give dates only).
- Movements are Smart Data Models `OriginDestinationFlow` entities, one per (country, origin,
  destination) pair rather than one per pair and day: `flowCount` (daily, `aggregationDateType`
  "daily") carries one temporal instance per day with a graph file, observedAt that day 00:00Z. This is
  the documented equivalent of the model's one-entity-per-day-and-pair ids
  (`...:<origin>:<destination>:<date>`): same attributes, ~6,000 entities instead of ~150,000, and the
  daily values answer temporal queries. `originLocationName` / `destinationLocationName` are the
  region names exactly as in the labels files (the loader refuses a flow naming an unknown region).
- Days with no graph file get no flow instance in the hub: the store keeps only what was published.
  The models' carry-forward of missing days (polis.epidemic.data) is a modelling choice, not data.

`country_from_store` reads a country back from a tenant of the hub into the same `CountryData` the
models take (the API serves what the hub holds, not the files); `HubCountries` caches it per tenant
until the tenant's history changes.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from polis.domain.entity import Entity
from polis.epidemic.data import COUNTRIES, CountryData, UnusableData, fill_flow_gaps, load_country
from polis.ingest.datasets import DatasetLoad, Vocab, _date_time, _prop
from polis.ngsi_ld.entities import parse_observed_at
from polis.store.base import EntityQuery, HistoryColumns, Store, TemporalQuery

NAME = "covid-europe-2020"
PROVIDER = "Facebook Data for Good / national health agencies via Panagopoulos et al., AAAI 2021 (MIT)"


def region_id(country: str, region: str) -> str:
    return f"urn:ngsi-ld:AdministrativeArea:epidemic:{NAME}:{country}:{region}"


def flow_id(country: str, origin: str, destination: str) -> str:
    return f"urn:ngsi-ld:OriginDestinationFlow:epidemic:{NAME}:{COUNTRIES[country]}:{origin}:{destination}"


def load_covid_europe(datasets_dir: Path, now: str) -> DatasetLoad:
    vocab = Vocab.load(datasets_dir)
    entities: list[Entity] = []
    ids: list[np.ndarray] = []
    attrs: list[np.ndarray] = []
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    cases_attr, flow_attr = vocab("newConfirmedCases"), vocab("flowCount")
    for country in COUNTRIES:
        data = load_country(datasets_dir, country)
        days = np.array([np.datetime64(d.isoformat(), "us") for d in data.dates])
        for i, name in enumerate(data.regions):
            entities.append(_region_entity(data, i, name, vocab, now))
            ids.append(np.full(data.n_days, region_id(country, name), dtype=object))
            attrs.append(np.full(data.n_days, cases_attr, dtype=object))
            times.append(days)
            values.append(data.cases[:, i])
        seen = data.flow_observed
        # a pair is kept whenever any observed day counts movement on it
        origin, destination = np.nonzero((data.flows[seen] > 0).any(axis=0))
        for o, d in zip(origin.tolist(), destination.tolist(), strict=True):
            series = data.flows[seen, o, d]
            entities.append(_flow_entity(data, o, d, days[seen], series, vocab, now))
            ids.append(np.full(int(seen.sum()), flow_id(country, data.regions[o], data.regions[d]), dtype=object))
            attrs.append(np.full(int(seen.sum()), flow_attr, dtype=object))
            times.append(days[seen])
            values.append(series)
    history = HistoryColumns(
        entity_id=np.concatenate(ids),
        attribute=np.concatenate(attrs),
        observed_at=np.concatenate(times),
        value=np.concatenate(values).astype(np.float64),
        unit_code="C62",
    )
    regions = sum(1 for e in entities if e["type"] == [vocab("AdministrativeArea")])
    description = (
        f"{regions} AdministrativeArea regions with daily newConfirmedCases and {len(entities) - regions} "
        f"OriginDestinationFlow pairs with daily flowCount, {len(history):,} readings ({', '.join(COUNTRIES)})"
    )
    return DatasetLoad(NAME, entities, history, [], description)


def _region_entity(data: CountryData, i: int, name: str, vocab: Vocab, now: str) -> Entity:
    last = data.dates[-1].isoformat() + "T00:00:00Z"
    return {
        "id": region_id(data.country, name),
        "type": [vocab("AdministrativeArea")],
        "createdAt": now,
        "modifiedAt": now,
        vocab("name"): [_prop(name, now)],
        vocab("countryCode"): [_prop(COUNTRIES[data.country], now)],
        vocab("newConfirmedCases"): [_prop(int(data.cases[-1, i]), now, observedAt=last, unitCode="C62")],
        vocab("dateObserved"): [_prop(_date_time(last), now)],
        vocab("dataProvider"): [_prop(PROVIDER, now)],
    }


def _flow_entity(
    data: CountryData, o: int, d: int, days: np.ndarray, series: np.ndarray, vocab: Vocab, now: str
) -> Entity:
    last = f"{np.datetime_as_string(days[-1], unit='D')}T00:00:00Z"
    origin, destination = data.regions[o], data.regions[d]
    return {
        "id": flow_id(data.country, origin, destination),
        "type": [vocab("OriginDestinationFlow")],
        "createdAt": now,
        "modifiedAt": now,
        vocab("originLocationName"): [_prop(origin, now)],
        vocab("originLocationCode"): [_prop(origin, now)],
        vocab("destinationLocationName"): [_prop(destination, now)],
        vocab("destinationLocationCode"): [_prop(destination, now)],
        vocab("countryCode"): [_prop(COUNTRIES[data.country], now)],
        vocab("aggregationDateType"): [_prop("daily", now)],
        vocab("flowCount"): [_prop(int(series[-1]), now, observedAt=last, unitCode="C62")],
        vocab("dateObserved"): [_prop(_date_time(last), now)],
        vocab("source"): [_prop(PROVIDER, now)],
    }


# -- reading a country back from the hub ------------------------------------------------------------

MAX_DAYS = 2000  # instances read per entity and attribute: years of daily values


def region_prefix(country: str) -> str:
    return f"urn:ngsi-ld:AdministrativeArea:epidemic:{NAME}:{country}:"


def flow_prefix(country: str) -> str:
    return f"urn:ngsi-ld:OriginDestinationFlow:epidemic:{NAME}:{COUNTRIES[country]}:"


def countries_in_store(store: Store, tenant: str) -> list[str]:
    """The countries whose regions this tenant holds (one cheap query per country)."""
    if not store.has_tenant(tenant):
        return []
    return [c for c in COUNTRIES if _ids(store, tenant, region_prefix(c), limit=1)]


COMPLETE_SHARE = 0.95  # a day is complete once this share of the country's regions reported it


def regions_needed(regions: int) -> int:
    """How many of `regions` must have reported a day for it to count as complete: 95 %, rounded up (so
    every region below 20 regions; England's 151 may miss 7)."""
    return max(1, math.ceil(COMPLETE_SHARE * regions - 1e-9))


def country_from_store(store: Store, tenant: str, country: str) -> CountryData | None:
    """The country's daily cases and flows as held by `tenant`, or None when its regions are not there.

    Regions keep the hub's order (the ingest's, which is the labels file's). The calendar runs from the
    first day any region reported to the last complete day: the last day at least `regions_needed` of the
    regions reported. A live hub fills a day region by region; counting the regions not in yet as zero
    cases would read as a sudden fall everywhere (a falsely low R, a forecast refit on zeros), so later
    days wait, listed in `incomplete_days` with how many regions reported them. Inside the calendar a
    region with no value on a day counts zero cases (as an empty cell in the files does). The published
    files are complete, so their calendar is theirs. Days without any flow instance are unobserved and
    filled as the file loader fills them (`fill_flow_gaps`).

    A negative case count or flow is refused here, naming the region and the day (`UnusableData`, a 422):
    the file loader refuses them too, and no model can take one (a negative week reads as R near 0, and
    the projections go negative, then explode). It is refused on reading rather than on writing because
    every write path of the hub (the NGSI-LD and temporal APIs, MQTT, `polis ingest`) is generic and knows
    nothing of what an epidemic attribute may hold, and because readings already held, or written by a
    path that never asked, must be caught anyway: the reader is where every path meets."""
    if country not in COUNTRIES or not store.has_tenant(tenant):
        return None
    region_ids = _ids(store, tenant, region_prefix(country))
    if not region_ids:
        return None
    regions = tuple(i.removeprefix(region_prefix(country)) for i in region_ids)
    cases_by_region = _series(store, tenant, region_ids, "newConfirmedCases")
    _refuse_unusable(
        country,
        "daily case count",
        ((entity_id.removeprefix(region_prefix(country)), series) for entity_id, series in cases_by_region.items()),
    )
    reported = Counter(day for series in cases_by_region.values() for day in series)
    if not reported:
        return None
    needed = regions_needed(len(regions))
    complete = [day for day, count in reported.items() if count >= needed]
    if not complete:
        raise UnusableData(
            f"{country}: no day in the hub has cases from at least {needed} of its {len(regions)} regions "
            f"(the most on any day is {max(reported.values())}); the models need complete days"
        )
    first, last = min(reported), max(complete)
    dates = tuple(first + timedelta(days=k) for k in range((last - first).days + 1))
    cases = np.zeros((len(dates), len(regions)))
    for i, entity_id in enumerate(region_ids):
        for day, value in cases_by_region.get(entity_id, {}).items():
            if day <= last:
                cases[(day - first).days, i] = value
    flows, observed = _flows(store, tenant, country, regions, first, len(dates))
    later = tuple(sorted((day, count) for day, count in reported.items() if day > last))
    return CountryData(country, regions, dates, cases, flows, observed, later)


def _refuse_unusable(country: str, what: str, series: Iterable[tuple[str, dict[date, float]]]) -> None:
    """UnusableData naming the first few negative (or non-finite) values, where and when, if there are any."""
    bad = sorted(
        (day, name, value) for name, values in series for day, value in values.items() if not 0 <= value < math.inf
    )
    if bad:
        named = "; ".join(f"{name} on {day}: {value:g}" for day, name, value in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise UnusableData(
            f"{country}: the hub holds {len(bad)} negative or non-finite {what}(s), which no model can take: "
            f"{named}{more}; correct those readings in the hub"
        )


def _ids(store: Store, tenant: str, prefix: str, limit: int | None = None) -> list[str]:
    found = store.query(tenant, EntityQuery(id_pattern=f"^{re.escape(prefix)}.*", limit=limit))
    return [str(e["id"]) for e in found.entities]


def _series(store: Store, tenant: str, ids: list[str], term: str) -> dict[str, dict[date, float]]:
    """Daily values of the attribute whose IRI ends with `term`, per entity (the IRI depends on the
    @context the data came with, the term does not)."""
    out: dict[str, dict[date, float]] = {}
    history = store.temporal(tenant, ids, TemporalQuery(max_instances=MAX_DAYS))
    for entity_id, attributes in history.items():
        for attribute, series in attributes.items():
            if attribute.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1] != term:
                continue
            values = out.setdefault(entity_id, {})
            for instance in series.instances:
                value = instance.get("value")
                if isinstance(value, int | float) and not isinstance(value, bool) and "observedAt" in instance:
                    values[parse_observed_at(str(instance["observedAt"])).date()] = float(value)
    return out


def _flows(
    store: Store, tenant: str, country: str, regions: tuple[str, ...], first: date, days: int
) -> tuple[np.ndarray, np.ndarray]:
    index = {name: k for k, name in enumerate(regions)}
    n = len(regions)
    flows = np.zeros((days, n, n))
    observed = np.zeros(days, dtype=bool)
    prefix = flow_prefix(country)
    flow_ids = _ids(store, tenant, prefix)
    held = _series(store, tenant, flow_ids, "flowCount")
    _refuse_unusable(country, "flow count", ((i.removeprefix(prefix), s) for i, s in held.items()))
    for entity_id, series in held.items():
        # ids are <prefix><origin>:<destination>; region names hold no ':' in this dataset, checked here
        origin, _, destination = entity_id.removeprefix(prefix).partition(":")
        if origin not in index or destination not in index:
            continue  # a flow naming a region the hub has no cases for: nothing to couple it to
        for day, value in series.items():
            t = (day - first).days
            if 0 <= t < days:
                flows[t, index[origin], index[destination]] += value
                observed[t] = True
    if observed.any():
        fill_flow_gaps(flows, observed)
    else:
        flows[:] = np.eye(n)  # no movement held: every region on its own
    return flows, observed


class HubCountries:
    """`country_from_store` cached per (tenant, country), re-read when the tenant's history count
    changes (an ingest or a new reading), so repeated API calls do not re-read ~150,000 instances (nor
    to refuse the same unusable data again)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # what was read, or why it cannot be used (refused again at once until the history changes)
        self._cache: dict[tuple[str, str], tuple[int, CountryData | str]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, country: str) -> CountryData | None:
        if country not in COUNTRIES or not self.store.has_tenant(tenant):
            return None
        version = self.store.history_count(tenant)
        with self._lock:
            cached = self._cache.get((tenant, country))
            if cached is not None and cached[0] == version:
                held = cached[1]
                if isinstance(held, str):
                    raise UnusableData(held)
                return held
            try:
                data = country_from_store(self.store, tenant, country)
            except UnusableData as refused:
                self._cache[(tenant, country)] = (version, refused.detail)
                raise
            if data is not None:
                self._cache[(tenant, country)] = (version, data)
            return data
