"""Identifiers of people and dates of birth are refused by name: "no identifier ever released" holds for a
`patientId` or a `passportNumber` as for a phone number, while counts of people pass."""

from __future__ import annotations

from typing import Any

import pytest

from polis.domain.errors import PersonalDataRefused
from polis.privacy.refusal import find_identifying, refuse_personal_data


def _entity(name: str, value: Any) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:Thing:1", "type": "Thing", name: {"type": "Property", "value": value}}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("patientId", "NHS-943-476-5919"),
        ("patientId", 4711),  # a number can be the id
        ("userId", 12345),
        ("customer_no", "C-88"),
        ("passengerNumber", "P-123"),  # text: an id, not a count
        ("riderHash", "9f2c1a"),
        ("accountNumber", "DE89370400440532013000"),
        ("passportNumber", "X1234567"),
        ("nhsNumber", "9434765919"),
        ("socialSecurityNumber", "078-05-1120"),
        ("ssn", "078-05-1120"),
    ],
)
def test_a_persons_identifier_is_refused_by_name(name: str, value: Any) -> None:
    found = find_identifying(_entity(name, value))
    assert found is not None and found.rule == "person-identifier" and found.field == name
    with pytest.raises(PersonalDataRefused):
        refuse_personal_data([_entity(name, value)])


@pytest.mark.parametrize(("name", "value"), [("birthYear", 1957), ("dateOfBirth", "1957-03-02"), ("dob", "1957")])
def test_a_date_of_birth_is_refused(name: str, value: Any) -> None:
    found = find_identifying(_entity(name, value))
    assert found is not None and found.rule == "birth-date"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("passengerNumber", 41),  # how many passengers
        ("numberOfUsers", 12),
        ("userCount", 7),
        ("peopleCount", 812),
        ("birthRate", 11.2),
        ("userType", "Subscriber"),  # a category, not an id
        ("stationId", "JC005"),  # a place's id
        ("refDevice", "urn:ngsi-ld:Device:1"),
        ("memberOf", "urn:ngsi-ld:Group:1"),
        ("clientId", "dashboard"),  # a software client
    ],
)
def test_counts_categories_and_ids_of_things_pass(name: str, value: Any) -> None:
    assert find_identifying(_entity(name, value)) is None
