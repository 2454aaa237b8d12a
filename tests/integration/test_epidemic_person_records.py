"""The epidemic module takes region-level counts and region-to-region flows only, on every write path: an
entity of the `epidemic` dataset (`urn:ngsi-ld:<Type>:epidemic:...`) that is a person's record, or a region
given a person's field, is refused (422 PersonalDataRefused) and nothing of it is stored; what the module's
own ingest writes still passes, and may be written again through the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.epidemic.hub import region_id
from polis.ingest.datasets import ingest, load_dataset
from polis.ngsi_ld.entities import utc_now
from polis.platform import Platform
from polis.privacy.refusal import find_identifying
from polis.settings import Settings
from tests.conftest import admin_headers

TENANT = "health"
ENTITIES = "/ngsi-ld/v1/entities"
CASE_ID = "urn:ngsi-ld:CovidCase:epidemic:covid-europe-2020:Italy:case-1"
REGION_ID = region_id("Italy", "test_region")


def _case(entity_id: str = CASE_ID, kind: str = "CovidCase") -> dict[str, Any]:
    """One patient: the record the module must never hold."""
    return {
        "id": entity_id,
        "type": kind,
        "age": {"type": "Property", "value": 71},
        "sex": {"type": "Property", "value": "F"},
        "symptomOnset": {"type": "Property", "value": "2020-03-02"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [9.19, 45.46]}},
    }


def _region(entity_id: str = REGION_ID) -> dict[str, Any]:
    return {
        "id": entity_id,
        "type": "AdministrativeArea",
        "name": {"type": "Property", "value": "test_region"},
        "newConfirmedCases": {"type": "Property", "value": 12, "observedAt": "2020-03-01T00:00:00Z"},
    }


@pytest.fixture(scope="module")
def hub() -> Iterator[Platform]:
    platform = Platform.in_memory()
    yield platform
    platform.close()


@pytest.fixture(scope="module")
def client(hub: Platform) -> Iterator[TestClient]:
    headers = {**admin_headers(hub), "NGSILD-Tenant": TENANT}
    with TestClient(create_app(hub), raise_server_exceptions=False, headers=headers) as c:
        yield c


def _refused(answer: Any, field: str) -> None:
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"].endswith("PersonalDataRefused"), problem
    assert field in problem["detail"] and "epidemic" in problem["detail"], problem


def _absent(client: TestClient, entity_id: str) -> None:
    assert client.get(f"{ENTITIES}/{entity_id}").status_code == 404
    assert client.get(f"/ngsi-ld/v1/temporal/entities/{entity_id}").status_code == 404


def test_a_case_record_is_refused_on_create(client: TestClient) -> None:
    _refused(client.post(ENTITIES, json=_case()), "CovidCase")
    _absent(client, CASE_ID)
    # typed as a region, it still carries a person's fields
    disguised = _case(region_id("Italy", "case-2"), "AdministrativeArea")
    _refused(client.post(ENTITIES, json=disguised), "age")
    _absent(client, disguised["id"])


def test_a_batch_upsert_with_a_case_record_after_a_region_stores_neither(client: TestClient) -> None:
    legit = _region(region_id("Italy", "batch_region"))
    _refused(client.post(f"{ENTITIES[:-9]}/entityOperations/upsert", json=[legit, _case()]), "CovidCase")
    _absent(client, CASE_ID)
    _absent(client, legit["id"])
    # the same region alone is what the module stores: it passes
    assert client.post(f"{ENTITIES[:-9]}/entityOperations/upsert", json=[legit]).status_code in (201, 204)


def test_appending_a_person_field_to_a_region_is_refused(client: TestClient) -> None:
    assert client.post(ENTITIES, json=_region()).status_code == 201
    for attrs in (
        {"age": {"type": "Property", "value": 71}},
        {"patients": {"type": "Property", "value": 3}},  # not a field the module stores
        {"newConfirmedCases": {"type": "Property", "value": 3, "age": {"type": "Property", "value": 71}}},
    ):
        _refused(client.post(f"{ENTITIES}/{REGION_ID}/attrs", json=attrs), "epidemic")
    # an update changes attributes the region has: a person's field hidden inside one is refused too
    _refused(client.patch(f"{ENTITIES}/{REGION_ID}/attrs", json=attrs), "epidemic")
    held = client.get(f"{ENTITIES}/{REGION_ID}").json()
    assert set(held) == {"id", "type", "name", "newConfirmedCases"}, held
    assert "age" not in str(held)


def test_a_case_record_is_refused_by_the_temporal_api(client: TestClient) -> None:
    case = _case()
    for name in ("age", "sex", "symptomOnset", "location"):
        case[name]["observedAt"] = "2020-03-02T00:00:00Z"
    _refused(client.post("/ngsi-ld/v1/temporal/entities", json=case), "CovidCase")
    _absent(client, CASE_ID)
    extra = {"age": [{"type": "Property", "value": 71, "observedAt": "2020-03-02T00:00:00Z"}]}
    _refused(client.post(f"/ngsi-ld/v1/temporal/entities/{REGION_ID}/attrs", json=extra), "age")
    assert "age" not in str(client.get(f"/ngsi-ld/v1/temporal/entities/{REGION_ID}").json())


def test_entities_of_other_datasets_are_judged_as_before(client: TestClient) -> None:
    other = _case("urn:ngsi-ld:Survey:other:record-1", "Survey")
    del other["location"]
    assert find_identifying(other) is None  # an age alone is not identifying outside the epidemic module
    assert client.post(ENTITIES, json=other).status_code == 201


def test_what_the_module_ingests_passes_and_can_be_written_again(hub: Platform, client: TestClient) -> None:
    load = load_dataset("covid-europe-2020", Settings().datasets_dir, utc_now())
    assert all(find_identifying(e) is None for e in load.entities)
    ingest(hub.store, TENANT, load)
    italy = client.get("/polis/v1/epidemic/Italy/risk")
    assert italy.status_code == 200, italy.text
    milano = client.get(f"{ENTITIES}/{region_id('Italy', 'milano')}", params={"options": "keyValues"})
    assert milano.status_code == 200, milano.text
    patch = {"newConfirmedCases": {"type": "Property", "value": 5, "observedAt": "2020-05-13T00:00:00Z"}}
    assert client.patch(f"{ENTITIES}/{region_id('Italy', 'milano')}/attrs", json=patch).status_code == 204


def test_a_case_record_of_a_shape_already_planned_is_refused_in_a_batch(client: TestClient) -> None:
    # The first item (another dataset: an age alone names nobody there) makes the plan for this shape.
    first = _case("urn:ngsi-ld:CovidCase:other:survey-1")
    _refused(client.post(f"{ENTITIES[:-9]}/entityOperations/upsert", json=[first, _case()]), "CovidCase")
    _absent(client, CASE_ID)


def test_a_department_named_epidemic_subscribes_under_its_own_prefix(client: TestClient) -> None:
    """The shape check is for the dataset's entities: a subscription of a department called `epidemic` has an id
    of that form (urn:ngsi-ld:Subscription:epidemic:...) and is no record of the dataset."""
    body = {"id": "urn:ngsi-ld:Subscription:epidemic:regions", "type": "Subscription",
            "entities": [{"type": "AdministrativeArea"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
    assert client.post("/ngsi-ld/v1/subscriptions", json=body).status_code == 201
