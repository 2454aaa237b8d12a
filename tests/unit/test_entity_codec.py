"""The entity codec: validation and expansion of what clients send, compaction of what they read."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polis.domain.entity import LOCATION, NGSI_LD, Entity
from polis.domain.errors import BadRequestData, InvalidRequest
from polis.ngsi_ld.context import DEFAULT_VOCAB, ContextCache, TermMap
from polis.ngsi_ld.entity_codec import (
    NULL_MARKER,
    compact_entity,
    compact_instance,
    expand_attribute_instance,
    expand_entity,
    expand_fragment,
    validate_entity_id,
)
from polis.settings import Settings

DATASETS = Settings().datasets_dir
SDM = DATASETS / "smart-data-models"
SDM_TRANSPORT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
TRANSPORT = "https://smartdatamodels.org/dataModel.Transportation/"
NOW = "2026-11-26T10:00:00.000000Z"
CTX_A = {"ex": "https://example.org/", "speed": "ex:speed", "Car": "ex:Car", "accuracy": "ex:accuracy",
         "owner": "ex:owner", "Person": "ex:Person", "Fast": "ex:Fast"}


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> ContextCache:
    return ContextCache(DATASETS, tmp_path_factory.mktemp("contexts"), fetch_timeout_s=0.5)


@pytest.fixture(scope="module")
def core(contexts: ContextCache) -> TermMap:
    return contexts.core()


@pytest.fixture(scope="module")
def ctx_a(contexts: ContextCache) -> TermMap:
    return contexts.resolve(CTX_A)


def car(**attributes: Any) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:Car:1", "type": "Car", **attributes}


# -- round trips ----------------------------------------------------------------------------------


def test_a_name_created_under_a_context_reads_back_short_only_under_it(ctx_a: TermMap, core: TermMap) -> None:
    entity = expand_entity(car(speed={"type": "Property", "value": 80}), ctx_a, NOW)
    assert entity["type"] == ["https://example.org/Car"]
    assert entity["https://example.org/speed"][0]["value"] == 80
    assert compact_entity(entity, ctx_a) == car(speed={"type": "Property", "value": 80})
    # Without the context the names come back as full IRIs.
    assert compact_entity(entity, core) == {"id": "urn:ngsi-ld:Car:1", "type": "https://example.org/Car",
                                            "https://example.org/speed": {"type": "Property", "value": 80}}


def test_default_vocab_names_compact_back_with_the_core_alone(core: TermMap) -> None:
    entity = expand_entity(car(speed=3), core, NOW)
    assert entity["type"] == [DEFAULT_VOCAB + "Car"]
    assert DEFAULT_VOCAB + "speed" in entity
    assert compact_entity(entity, core, fmt="keyValues") == car(speed=3)


def test_the_smart_data_models_example_round_trips(contexts: ContextCache) -> None:
    body = json.loads((SDM / "TrafficFlowObserved/examples/example-normalized.jsonld").read_text())
    terms = contexts.resolve(body.pop("@context"))
    entity = expand_entity(body, terms, NOW)
    assert entity[TRANSPORT + "intensity"][0]["value"] == 197
    assert entity[LOCATION][0]["type"] == "GeoProperty"
    out = compact_entity(entity, terms)
    # A naive DateTime @value is taken as UTC and normalized; everything else is as sent.
    body["dateObserved"]["value"]["@value"] = "2016-12-07T11:10:00Z"
    assert out == body


def test_the_keyvalues_example_reads_as_concise_input(contexts: ContextCache) -> None:
    body = json.loads((SDM / "Alert/examples/example.jsonld").read_text())
    terms = contexts.resolve(body.pop("@context"))
    entity = expand_entity(body, terms, NOW)
    assert entity[LOCATION][0]["type"] == "GeoProperty"
    assert compact_entity(entity, terms, fmt="keyValues") == body


@settings(deadline=None, max_examples=100)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "type", "value", "object"]),
                                                                 inner, max_size=3),
    max_leaves=6).filter(lambda v: v is not None))
def test_concise_output_reads_back_as_the_same_entity(value: Any) -> None:
    core = _core()
    try:
        entity = expand_entity(car(x={"type": "Property", "value": value, "observedAt": "2024-01-01T00:00:00Z"},
                                   y={"type": "Property", "value": value}), core, NOW)
    except BadRequestData:
        return  # e.g. a value that is itself a malformed typed literal
    concise = compact_entity(entity, core, fmt="concise")
    assert expand_entity(concise, core, NOW) == entity


_CORES: list[TermMap] = []


def _core() -> TermMap:
    if not _CORES:
        _CORES.append(ContextCache(DATASETS, Path("/nonexistent-never-written")).core())
    return _CORES[0]


# -- input forms ----------------------------------------------------------------------------------


def test_concise_input_forms(ctx_a: TermMap) -> None:
    entity = expand_entity(car(
        speed=61.5,
        plain={"value": 2, "unitCode": "KMH"},
        owner={"object": "urn:ngsi-ld:Person:1"},
        name={"languageMap": {"en": "Car", "fr": ["Voiture", "Auto"]}},
        location={"type": "Point", "coordinates": [2.35, 48.85]},
        category={"vocab": "Fast"},
        raw={"json": {"any": ["thing"]}},
        readings={"valueList": [1, 2, 3]},
        friends={"objectList": ["urn:ngsi-ld:Person:2"]},
        address={"type": "PostalAddress", "streetAddress": "Main St"},  # a keyValues object value
    ), ctx_a, NOW)

    def kind(name: str) -> str:
        return str(entity[name][0]["type"])

    assert entity["https://example.org/speed"][0]["value"] == 61.5
    assert kind("https://example.org/speed") == "Property"
    assert kind(DEFAULT_VOCAB + "plain") == "Property"
    assert kind("https://example.org/owner") == "Relationship"
    assert kind(DEFAULT_VOCAB + "name") == "LanguageProperty"
    assert kind(LOCATION) == "GeoProperty"
    assert kind(DEFAULT_VOCAB + "category") == "VocabProperty"
    assert entity[DEFAULT_VOCAB + "category"][0]["vocab"] == "https://example.org/Fast"  # vocab terms expand
    assert kind(DEFAULT_VOCAB + "raw") == "JsonProperty"
    assert kind(DEFAULT_VOCAB + "readings") == "ListProperty"
    assert kind(DEFAULT_VOCAB + "friends") == "ListRelationship"
    assert entity[DEFAULT_VOCAB + "address"][0] == {"type": "Property", "createdAt": NOW, "modifiedAt": NOW,
                                                    "value": {"type": "PostalAddress", "streetAddress": "Main St"}}


def test_geojson_value_makes_a_geoproperty_and_location_must_be_geometry(core: TermMap) -> None:
    entity = expand_entity(car(where={"value": {"type": "Point", "coordinates": [1, 2]}}), core, NOW)
    assert entity[DEFAULT_VOCAB + "where"][0]["type"] == "GeoProperty"
    with pytest.raises(BadRequestData, match="attribute 'location'"):
        expand_entity(car(location="here"), core, NOW)


def test_system_attributes_are_set_and_input_ones_ignored(core: TermMap) -> None:
    entity = expand_entity(car(createdAt="1999-01-01T00:00:00Z", modifiedAt="x",
                               speed={"type": "Property", "value": 1, "createdAt": "1999-01-01T00:00:00Z",
                                      "accuracy": {"type": "Property", "value": 0.9}}), core, NOW)
    assert entity["createdAt"] == entity["modifiedAt"] == NOW
    speed = entity[DEFAULT_VOCAB + "speed"][0]
    assert speed["createdAt"] == speed["modifiedAt"] == NOW
    assert speed[DEFAULT_VOCAB + "accuracy"]["createdAt"] == NOW


def test_sub_attributes_expand_recursively(ctx_a: TermMap) -> None:
    entity = expand_entity(car(speed={"type": "Property", "value": 80, "observedAt": "2024-05-01T12:00:00+02:00",
                                      "unitCode": "KMH",
                                      "accuracy": {"type": "Property", "value": 0.9, "ex:source": "radar"}}),
                           ctx_a, NOW)
    speed = entity["https://example.org/speed"][0]
    assert speed["observedAt"] == "2024-05-01T10:00:00Z"
    assert speed["unitCode"] == "KMH"
    accuracy = speed["https://example.org/accuracy"]
    assert accuracy["value"] == 0.9
    assert accuracy["https://example.org/source"]["value"] == "radar"


def test_datetime_values_are_normalized_to_utc(core: TermMap) -> None:
    entity = expand_entity(car(
        seen={"type": "Property", "value": {"@type": "DateTime", "@value": "2024-05-01T12:00:00.5+02:00"}},
        day={"type": "Property", "value": {"@type": "Date", "@value": "2024-05-01"}},
        observed={"type": "Property", "value": 1, "observedAt": "2024-05-01T10:00:00"}), core, NOW)
    assert entity[DEFAULT_VOCAB + "seen"][0]["value"] == {"@type": "DateTime", "@value": "2024-05-01T10:00:00.500000Z"}
    assert entity[DEFAULT_VOCAB + "day"][0]["value"] == {"@type": "Date", "@value": "2024-05-01"}
    assert entity[DEFAULT_VOCAB + "observed"][0]["observedAt"] == "2024-05-01T10:00:00Z"


def test_scope_and_multiple_types(ctx_a: TermMap) -> None:
    entity = expand_entity({"id": "urn:x:1", "type": ["Car", "Fast", "Car"], "scope": "/Paris/Centre"}, ctx_a, NOW)
    assert entity["type"] == ["https://example.org/Car", "https://example.org/Fast"]
    assert entity["scope"] == ["/Paris/Centre"]
    assert compact_entity(entity, ctx_a) == {"id": "urn:x:1", "type": ["Car", "Fast"], "scope": "/Paris/Centre"}


def test_multiple_instances_by_dataset_id(ctx_a: TermMap) -> None:
    body = car(speed=[{"type": "Property", "value": 80},
                      {"type": "Property", "value": 82, "datasetId": "urn:ngsi-ld:Dataset:gps"}])
    entity = expand_entity(body, ctx_a, NOW)
    assert [i.get("datasetId") for i in entity["https://example.org/speed"]] == [None, "urn:ngsi-ld:Dataset:gps"]
    assert compact_entity(entity, ctx_a) == body
    assert compact_entity(entity, ctx_a, fmt="keyValues")["speed"] == [80, 82]
    assert compact_entity(entity, ctx_a, fmt="concise")["speed"] == [
        {"value": 80}, {"value": 82, "datasetId": "urn:ngsi-ld:Dataset:gps"}]


def test_instances_sharing_a_dataset_id_need_distinct_observed_at(core: TermMap) -> None:
    with pytest.raises(BadRequestData, match="attribute 'speed': two instances have no datasetId"):
        expand_entity(car(speed=[{"type": "Property", "value": 1}, {"type": "Property", "value": 2}]), core, NOW)
    with pytest.raises(BadRequestData, match="datasetId urn:d:1"):
        expand_entity(car(speed=[{"value": 1, "datasetId": "urn:d:1"}, {"value": 2, "datasetId": "urn:d:1"}]),
                      core, NOW)
    # The temporal representation: one attribute's history, told apart by observedAt.
    history = expand_entity(car(speed=[{"value": 1, "observedAt": "2024-01-01T00:00:00Z"},
                                       {"value": 2, "observedAt": "2024-01-01T00:01:00Z"}]), core, NOW)
    assert len(history[DEFAULT_VOCAB + "speed"]) == 2


# -- validation errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ([], "must be a JSON object"),
    ({"type": "Car"}, "no 'id'"),
    ({"id": "urn:ngsi-ld:Car:1"}, "no 'type'"),
    (car(id="not a uri"), "is not a URI"),
    (car(id="urn:ngsi-ld:Car:1 2"), "is not a URI"),
    (car(id=42), "must be a URI string"),
    (car(id="urn:" + "x" * 520), "at most 512"),
    (car(type=""), "invalid entity type"),
    (car(type=[]), "non-empty string or array"),
    (car(type=["Car", 3]), "non-empty string or array"),
    (car(scope="no-slash"), "scope"),
    (car(**{"bad name": 1}), "invalid attribute name 'bad name'"),
    (car(**{"a<b": 1}), "invalid attribute name"),
    (car(**{"@weird": 1}), "invalid attribute name"),
    (car(speed=None), "attribute 'speed': null"),
    (car(speed={"type": "Property"}), "attribute 'speed': a Property needs a 'value'"),
    (car(speed={"type": "Property", "value": None}), "attribute 'speed': the 'value' of a Property must not be null"),
    (car(speed={"type": "Propety", "value": 1}), "attribute 'speed': unknown attribute type 'Propety'"),
    (car(speed={"type": "Property", "value": 1, "object": "urn:x:1"}), "a Property cannot have 'object'"),
    (car(speed={"value": 1, "object": "urn:x:1"}), "both 'value' and 'object'"),
    (car(owner={"type": "Relationship"}), "attribute 'owner': a Relationship needs an 'object'"),
    (car(owner={"type": "Relationship", "object": "Bob"}), "attribute 'owner': a Relationship's 'object' must be a "),
    (car(owner={"type": "Relationship", "object": ["urn:a:1", 3]}), "must be a URI or an array of URIs"),
    (car(location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [500, 0]}}),
     "attribute 'location': "),
    (car(location={"type": "GeoProperty", "value": {"type": "Point"}}), "attribute 'location': "),
    (car(name={"type": "LanguageProperty", "languageMap": "Car"}), "attribute 'name': a languageMap must be an object"),
    (car(name={"type": "LanguageProperty", "languageMap": {"en": 3}}), r"languageMap\['en'\]"),
    (car(name={"type": "LanguageProperty", "languageMap": {"not a tag": "x"}}), "is not a language tag"),
    (car(speed={"type": "Property", "value": 1, "observedAt": "yesterday"}), "attribute 'speed': observedAt"),
    (car(speed={"type": "Property", "value": 1, "observedAt": "2024-01-01"}), "observedAt must be an ISO 8601"),
    (car(speed={"type": "Property", "value": 1, "datasetId": "not a uri"}), "datasetId must be a URI"),
    (car(speed={"type": "Property", "value": 1, "unitCode": 5}), "unitCode must be a non-empty string"),
    (car(speed={"type": "Property", "value": {"@type": "DateTime", "@value": "nope"}}), "DateTime @value"),
    (car(speed={"type": "Property", "value": 1, "accuracy": {"type": "Property"}}),
     "attribute 'speed.accuracy': a Property needs a 'value'"),
    (car(speed={"type": "Property", "value": 1, "bad name": 1}), "sub-attribute name in attribute 'speed'"),
    (car(speed=[{"type": "Property", "value": 1}, 5]), "either attribute instances"),
    (car(readings={"type": "ListProperty", "valueList": 3}), "must be an array"),
    (car(friends={"type": "ListRelationship", "objectList": ["bob"]}), "objectList items must be URIs"),
    (car(category={"type": "VocabProperty", "vocab": 3}), "'vocab' must be a term"),
    (car(speed=1, **{DEFAULT_VOCAB + "speed": 2}), "given twice"),
])
def test_invalid_entities_are_bad_request_data(core: TermMap, body: Any, message: str) -> None:
    with pytest.raises(BadRequestData, match=message):
        expand_entity(body, core, NOW)


def test_sub_attribute_nesting_is_limited(core: TermMap) -> None:
    nested: dict[str, Any] = {"type": "Property", "value": 0}
    for _ in range(12):
        nested = {"type": "Property", "value": 0, "inner": nested}
    with pytest.raises(BadRequestData, match="nest more than"):
        expand_entity(car(deep=nested), core, NOW)


def test_validate_entity_id() -> None:
    assert validate_entity_id("urn:ngsi-ld:Car:1") == "urn:ngsi-ld:Car:1"
    assert validate_entity_id("https://example.org/cars/1") == "https://example.org/cars/1"
    for bad in ["", "car1", ":x", "1urn:x", "urn:", "urn:a b", "urn:a<b", None]:
        with pytest.raises(BadRequestData):
            validate_entity_id(bad)


def test_id_and_type_are_optional_when_the_caller_says_so(core: TermMap) -> None:
    entity = expand_entity({"speed": 1}, core, NOW, require_id_type=False)
    assert "id" not in entity and "type" not in entity
    assert entity[DEFAULT_VOCAB + "speed"][0]["value"] == 1


def test_the_body_is_not_modified(ctx_a: TermMap) -> None:
    body = car(speed={"type": "Property", "value": 1, "observedAt": "2024-01-01T00:00:00+01:00"}, plain=3)
    before = copy.deepcopy(body)
    expand_entity(body, ctx_a, NOW)
    assert body == before


# -- fragments and single instances ---------------------------------------------------------------


def test_fragments_hold_attributes_by_iri_and_keep_the_null_marker(ctx_a: TermMap) -> None:
    fragment = expand_fragment({"id": "urn:x:1", "type": "Car", "@context": CTX_A, "speed": 5,
                                "owner": NULL_MARKER, "location": NULL_MARKER,
                                "accuracy": {"type": "Property", "value": NULL_MARKER}}, ctx_a, NOW)
    assert set(fragment) == {"https://example.org/speed", "https://example.org/owner", LOCATION,
                             "https://example.org/accuracy"}
    assert fragment["https://example.org/owner"][0]["value"] == NULL_MARKER
    assert fragment[LOCATION][0]["value"] == NULL_MARKER
    assert fragment["https://example.org/accuracy"][0]["value"] == NULL_MARKER
    with pytest.raises(BadRequestData, match="must be sent as a JSON object"):
        expand_fragment([1], ctx_a, NOW)
    with pytest.raises(BadRequestData, match="a Property needs a 'value'"):
        expand_fragment({"speed": {"type": "Property"}}, ctx_a, NOW)


def test_expand_attribute_instance_full_and_partial(ctx_a: TermMap) -> None:
    full = expand_attribute_instance("speed", {"type": "Property", "value": 3, "accuracy": 0.5}, ctx_a, NOW)
    assert full["value"] == 3 and full["createdAt"] == NOW
    assert full["https://example.org/accuracy"]["value"] == 0.5
    partial = expand_attribute_instance("speed", {"observedAt": "2024-01-01T00:00:00Z"}, ctx_a, NOW)
    assert partial == {"observedAt": "2024-01-01T00:00:00Z", "modifiedAt": NOW}
    geo = expand_attribute_instance("location", {"value": {"type": "Point", "coordinates": [1, 2]}}, ctx_a, NOW)
    assert geo["type"] == "GeoProperty"
    with pytest.raises(BadRequestData, match="attribute 'owner'"):
        expand_attribute_instance("owner", {"type": "Relationship", "object": 3}, ctx_a, NOW)


# -- output ---------------------------------------------------------------------------------------


@pytest.fixture
def stored(ctx_a: TermMap) -> Entity:
    return expand_entity(car(
        speed={"type": "Property", "value": 80, "unitCode": "KMH", "accuracy": {"type": "Property", "value": 0.9}},
        plain=3,
        owner={"type": "Relationship", "object": "urn:ngsi-ld:Person:1", "objectType": "Person"},
        location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}},
        name={"type": "LanguageProperty", "languageMap": {"en": "Car", "fr": "Voiture", "@none": "Auto"}},
        category={"type": "VocabProperty", "vocab": "Fast"},
    ), ctx_a, NOW)


def test_normalized_output_compacts_every_name(stored: Entity, ctx_a: TermMap) -> None:
    out = compact_entity(stored, ctx_a)
    assert out["speed"] == {"type": "Property", "value": 80, "unitCode": "KMH",
                            "accuracy": {"type": "Property", "value": 0.9}}
    assert out["owner"] == {"type": "Relationship", "object": "urn:ngsi-ld:Person:1", "objectType": "Person"}
    assert out["category"] == {"type": "VocabProperty", "vocab": "Fast"}
    assert "createdAt" not in out and "createdAt" not in out["speed"]


def test_concise_output(stored: Entity, ctx_a: TermMap) -> None:
    out = compact_entity(stored, ctx_a, fmt="concise")
    assert out["plain"] == 3
    assert out["speed"] == {"value": 80, "unitCode": "KMH", "accuracy": 0.9}
    assert out["owner"] == {"object": "urn:ngsi-ld:Person:1", "objectType": "Person"}
    assert out["location"] == {"type": "Point", "coordinates": [2.35, 48.85]}
    assert out["name"] == {"languageMap": {"en": "Car", "fr": "Voiture", "@none": "Auto"}}
    assert out["category"] == {"vocab": "Fast"}
    # Concise is lossless: it reads back as the same entity.
    assert expand_entity(out, ctx_a, NOW) == stored


def test_keyvalues_output(stored: Entity, ctx_a: TermMap) -> None:
    out = compact_entity(stored, ctx_a, fmt="keyValues")
    assert out == {"id": "urn:ngsi-ld:Car:1", "type": "Car", "speed": 80, "plain": 3,
                   "owner": "urn:ngsi-ld:Person:1", "location": {"type": "Point", "coordinates": [2.35, 48.85]},
                   "name": {"en": "Car", "fr": "Voiture", "@none": "Auto"}, "category": "Fast"}
    assert compact_entity(stored, ctx_a, fmt="simplified") == out


def test_sys_attrs(stored: Entity, ctx_a: TermMap) -> None:
    out = compact_entity(stored, ctx_a, sys_attrs=True)
    assert out["createdAt"] == out["modifiedAt"] == NOW
    assert out["speed"]["createdAt"] == NOW
    assert out["speed"]["accuracy"]["modifiedAt"] == NOW
    assert compact_entity(stored, ctx_a, fmt="concise", sys_attrs=True)["plain"] == {
        "value": 3, "createdAt": NOW, "modifiedAt": NOW}


def test_pick_and_omit(stored: Entity, ctx_a: TermMap) -> None:
    speed = "https://example.org/speed"
    assert compact_entity(stored, ctx_a, fmt="keyValues", pick={"id", speed}) == {"id": "urn:ngsi-ld:Car:1",
                                                                                   "speed": 80}
    out = compact_entity(stored, ctx_a, fmt="keyValues", omit={"type", speed, LOCATION})
    assert set(out) == {"id", "plain", "owner", "name", "category"}


def test_lang_turns_a_language_property_into_a_property(stored: Entity, ctx_a: TermMap) -> None:
    assert compact_entity(stored, ctx_a, lang="fr")["name"] == {"type": "Property", "value": "Voiture", "lang": "fr"}
    assert compact_entity(stored, ctx_a, lang="de,en-GB")["name"]["value"] == "Car"
    assert compact_entity(stored, ctx_a, lang="de")["name"] == {"type": "Property", "value": "Auto"}
    assert compact_entity(stored, ctx_a, lang="fr", fmt="keyValues")["name"] == "Voiture"
    assert compact_entity(stored, ctx_a, lang="*")["name"]["type"] == "LanguageProperty"


def test_compact_instance(stored: Entity, ctx_a: TermMap) -> None:
    speed = stored["https://example.org/speed"][0]
    assert compact_instance(speed, ctx_a, fmt="keyValues") == 80
    assert compact_instance(speed, ctx_a)["accuracy"] == {"type": "Property", "value": 0.9}
    with pytest.raises(InvalidRequest):
        compact_instance(speed, ctx_a, fmt="fancy")


def test_an_ambiguous_property_value_keeps_its_type_in_concise(core: TermMap) -> None:
    entity = expand_entity(car(shape={"type": "Property", "value": {"type": "Point", "coordinates": [1, 2]}}),
                           core, NOW)
    out = compact_entity(entity, core, fmt="concise")
    assert out["shape"] == {"type": "Property", "value": {"type": "Point", "coordinates": [1, 2]}}
    assert expand_entity(out, core, NOW) == entity


def test_core_names_stay_short_under_any_context(ctx_a: TermMap, core: TermMap) -> None:
    entity = expand_entity(car(location={"type": "Point", "coordinates": [0, 0]}), ctx_a, NOW)
    assert LOCATION == NGSI_LD + "location" and LOCATION in entity
    assert "location" in compact_entity(entity, core)
