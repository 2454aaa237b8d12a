"""Every attribute of an ingested 911 call reads and queries by its short name with the Smart Data Models
Transportation @context, the context the README's examples use (and the alert rules' default); `title` is
the core context's term (Dublin Core), which no context can redefine. A hub holding calls ingested under the
old name is rewritten by the next `polis ingest montgomery-911`, which still adds nothing the second time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from polis.alerts.evaluate import DEFAULT_CONTEXT as RULE_CONTEXT
from polis.api.app import create_app
from polis.ingest.datasets import DatasetLoad, ingest, load_dataset
from polis.platform import Platform
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import LINK_SDM, SDM_TRANSPORT, admin_headers

NOW = "2024-01-01T00:00:00.000000Z"
OLD_TITLE = "https://uri.etsi.org/ngsi-ld/default-context/title"
TITLE = "http://purl.org/dc/terms/title"
SHORT_NAMES = {"id", "type", "category", "title", "township", "location", "dateObserved", "dataProvider"}


@pytest.fixture(scope="module")
def calls() -> DatasetLoad:
    return load_dataset("montgomery-911", Settings().datasets_dir, NOW)


@pytest.fixture(scope="module")
def hub(calls: DatasetLoad) -> Iterator[tuple[Platform, TestClient]]:
    platform = Platform.in_memory()
    ingest(platform.store, "", calls)
    with TestClient(create_app(platform), raise_server_exceptions=False, headers=admin_headers(platform)) as client:
        yield platform, client
    platform.close()


def _count(client: TestClient, q: str, link: bool = True) -> int:
    headers = {"Link": LINK_SDM} if link else {}
    r = client.get("/ngsi-ld/v1/entities", params={"type": "EmergencyCall", "q": q, "count": "true", "limit": 1},
                   headers=headers)
    assert r.status_code == 200, r.text
    return int(r.headers["NGSILD-Results-Count"])


def test_every_attribute_of_a_call_is_stored_under_the_name_the_transportation_context_gives_it(
    hub: tuple[Platform, TestClient], calls: DatasetLoad
) -> None:
    platform, client = hub
    terms = platform.contexts.resolve(SDM_TRANSPORT)
    for entity in calls.entities:
        names = {terms.compact(key) for key in entity if key not in ("createdAt", "modifiedAt")}
        assert names <= SHORT_NAMES, names - SHORT_NAMES
    assert all(TITLE in e and OLD_TITLE not in e for e in calls.entities)
    r = client.get("/ngsi-ld/v1/entities", params={"type": "EmergencyCall", "limit": 100, "options": "keyValues"},
                   headers={"Link": LINK_SDM})
    assert r.status_code == 200, r.text
    assert {key for call in r.json() for key in call} == SHORT_NAMES


def test_every_attribute_of_a_call_is_queryable_by_its_short_name(
    hub: tuple[Platform, TestClient], calls: DatasetLoad
) -> None:
    _, client = hub
    titles = Counter(e.get(TITLE, e.get(OLD_TITLE))[0]["value"] for e in calls.entities)
    assert titles["ABDOMINAL PAINS"] > 0
    assert _count(client, 'title=="ABDOMINAL PAINS"') == titles["ABDOMINAL PAINS"]
    assert _count(client, 'title=="ABDOMINAL PAINS"', link=False) == titles["ABDOMINAL PAINS"]  # a core term
    assert _count(client, 'township=="UPPER MERION"') == _count(client, 'township=="UPPER MERION"', link=False) > 0
    categories = _count(client, 'category=="EMS"') + _count(client, 'category=="Fire"')
    assert 0 < categories + _count(client, 'category=="Traffic"') <= len(calls.entities)
    assert _count(client, 'dataProvider=="montcoalert.org (ODbL)"') == len(calls.entities)
    assert 0 < _count(client, "dateObserved>=2018-01-01T00:00:00Z") < len(calls.entities)


def test_the_burst_rules_names_for_calls_are_the_stored_ones(calls: DatasetLoad) -> None:
    """A 911 burst rule (`match` category, `groupBy` township, `timeAttribute` dateObserved) is read with the
    rules' default context: its names must expand to the IRIs the calls are stored under."""
    platform = Platform.in_memory()
    try:
        terms = platform.contexts.resolve(RULE_CONTEXT)
        for name in ("category", "township", "dateObserved", "title"):
            assert all(terms.expand(name) in e for e in calls.entities), name
        assert terms.expand("EmergencyCall") == calls.entities[0]["type"][0]
    finally:
        platform.close()


def test_reingest_rewrites_calls_stored_under_the_old_title_and_adds_nothing(calls: DatasetLoad) -> None:
    store = DuckDBStore(None)
    try:
        old_created = "2020-01-01T00:00:00.000000Z"
        old = [{**{OLD_TITLE if k == TITLE else k: v for k, v in e.items()}, "createdAt": old_created}
               for e in calls.entities]
        store.write("", upserts=old)
        summary = ingest(store, "", calls)
        assert (summary.new_entities, summary.entities_written) == (0, len(calls.entities))
        assert store.entity_count("") == len(calls.entities)
        docs = store.get("", [e["id"] for e in calls.entities])
        assert all(TITLE in d and OLD_TITLE not in d and d["createdAt"] == old_created for d in docs.values())
        assert ingest(store, "", calls).new_entities == 0 and store.entity_count("") == len(calls.entities)
    finally:
        store.close()
