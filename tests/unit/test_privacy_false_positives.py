"""False positives of the identifying-field name rules, and the line they keep.

The rule (refusal.py): a name is refused for what its value may hold. "mobile" names a phone only as a noun
(`mobilePhone`, `mobileNumber`, a trailing `contactMobile`), not as an adjective (`isMobile`, `mobileUnit`);
a yes/no value (a JSON boolean) holds no identifier whatever its field is called. Phone-number fields stay
refused by name even where the number may be a facility's (`emergencyPhone`, `contactPoint.telephone`): the
gate cannot tell a public service's number from a person's, and a phone-number value is refused anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from polis.domain.errors import PersonalDataRefused
from polis.privacy.refusal import find_identifying, refuse_personal_data, sent_name_rule


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


# Names that are not personal, sent with values that are not booleans (so the name rule alone decides).
_MOBILE_ADJECTIVES = [
    ("isMobile", "yes"),
    ("isMobile", 1),
    ("mobileUnit", "van 3"),
    ("mobileStation", "MS-12"),
    ("nonMobile", "fixed"),
    ("mobility", "high"),
    ("automobileCount", 12),
    ("automobile", "sedan"),
]

# Names of a phone number: refused by name whatever the value (text that is no number, or a JSON number).
_PHONE_NAMES = [
    "mobilePhone", "mobileNumber", "mobile_phone", "mobileNo", "mobile", "contactMobile", "phoneNumber", "telephone",
    "msisdn",
]  # fmt: skip


@pytest.mark.parametrize(("name", "value"), _MOBILE_ADJECTIVES, ids=[f"{n}={v!r}" for n, v in _MOBILE_ADJECTIVES])
def test_mobile_as_an_adjective_is_not_a_phone_name(name: str, value: Any) -> None:
    assert find_identifying({name: _prop(value)}) is None
    assert find_identifying({name: value}) is None


@pytest.mark.parametrize("name", _PHONE_NAMES)
@pytest.mark.parametrize("value", ["x", 447911123456], ids=["text", "json-number"])
def test_mobile_as_a_noun_and_every_phone_word_is_still_refused_by_name(name: str, value: Any) -> None:
    found = find_identifying({name: _prop(value)})
    assert found is not None and (found.field, found.rule, found.by) == (name, "phone-number", "name")


@pytest.mark.parametrize("value", ["x", 356938035643809])
def test_imei_is_still_refused_by_name(value: Any) -> None:
    found = find_identifying({"imei": _prop(value)})
    assert found is not None and (found.rule, found.by) == ("device-identifier", "name")


def test_a_count_of_mobile_phones_still_passes() -> None:
    assert find_identifying({"mobilePhoneCount": 40, "numberOfPhones": 3}) is None


# Smart Data Models attributes that the name rules refused although their values are yes/no flags or
# categories (found by scanning the schema, context and example names in shared/data/smart-data-models
# through the rules); the model and type are the data model's own.
_SDM_NOT_PERSONAL: list[tuple[str, dict[str, Any]]] = [
    ("isMobile (boolean: the device is mobile)", {"isMobile": _prop(True)}),
    (
        "TransportStation.services (booleans: emergency phones, public-address devices on site)",
        {"services": _prop({"emergencyPhone": True, "voiceDevice": True, "defibrillator": False})},
    ),
    ("AnprFlowObserved.vehiclePlateNotRead (boolean)", {"vehiclePlateNotRead": _prop(False)}),
    ("plateColor (a category of vehicles, not the plate)", {"plateColor": _prop("yellow")}),
    (
        "a flag in the expanded form the store keeps",
        {
            "https://smartdatamodels.org/dataModel.Transportation/emergencyPhone": [
                {
                    "@type": ["https://uri.etsi.org/ngsi-ld/Property"],
                    "https://uri.etsi.org/ngsi-ld/hasValue": [{"@value": True}],
                }
            ]
        },
    ),
]


@pytest.mark.parametrize("body", [b for _, b in _SDM_NOT_PERSONAL], ids=[k for k, _ in _SDM_NOT_PERSONAL])
def test_smart_data_models_flags_and_categories_refused_by_mistake_now_pass(body: dict[str, Any]) -> None:
    assert find_identifying(body) is None
    refuse_personal_data(body)  # raises nothing


@pytest.mark.parametrize("name", ["faceImage", "licensePlate", "telephone", "voicePrint", "surname", "email"])
def test_a_yes_no_flag_passes_whatever_its_name(name: str) -> None:
    """True or false holds no face, number, name or plate: one bit names nobody."""
    assert find_identifying({name: True}) is None
    assert find_identifying({name: _prop(False)}) is None
    assert find_identifying({name: [_prop(True), _prop(False)]}) is None


def test_a_flag_does_not_excuse_a_field_name_that_is_itself_an_identifier() -> None:
    found = find_identifying({"https://example.org/ann.smith@example.org": True})
    assert found is not None and found.rule == "e-mail"
    found = find_identifying({"https://example.org/+12015550143": _prop(True)})
    assert found is not None and found.rule == "phone-number"


@pytest.mark.parametrize(
    "body",
    [
        {"emergencyPhone": {"type": "Property", "value": True, "note": _prop("dial 0201 555 0100")}},
        {"faceImage": {"type": "Property", "value": True, "url": _prop("https://cam.example.org/1.png")}},
        {
            "https://example.org/faceImage": [
                {
                    "https://uri.etsi.org/ngsi-ld/hasValue": [{"@value": True}],
                    "https://uri.etsi.org/ngsi-ld/default-context/url": [{"@value": "https://cam.example.org/1.png"}],
                }
            ]
        },
    ],
    ids=["emergencyPhone-with-a-note", "faceImage-with-a-url", "expanded-faceImage-with-a-default-context-url"],
)
def test_a_flag_excuses_only_an_attribute_that_is_nothing_but_the_flag(body: dict[str, Any]) -> None:
    """Sub-attributes of the sender's own beside the flag keep the name's verdict: they may hold the thing."""
    found = find_identifying(body)
    assert found is not None and found.field in ("emergencyPhone", "faceImage") and found.by == "name", found


def test_a_phone_number_value_is_refused_under_any_name() -> None:
    """The value rule still runs where the name passes: `isMobile` is no licence to carry a number."""
    for name in ("isMobile", "mobileUnit", "plateColor", "description"):
        found = find_identifying({name: _prop("+1 201-555-0143")})
        assert found is not None and (found.rule, found.by) == ("phone-number", "value"), name


@pytest.mark.parametrize(
    "body",
    [
        {"emergencyPhone": _prop("0201 555 0100")},
        {"emergencyPhone": _prop("112")},
        {"contactPoint": _prop({"contactType": "public service", "telephone": "311"})},
        {"contactPoint": _prop({"faxNumber": "x", "email": "info at city", "name": "Parks"})},
    ],
    ids=["emergencyPhone-number", "emergencyPhone-short-code", "contactPoint.telephone", "contactPoint.fax-email"],
)
def test_a_facility_phone_number_is_still_refused_conservatively_by_name(body: dict[str, Any]) -> None:
    """A public service's number is not a person's, but nothing in the message says which one it is."""
    with pytest.raises(PersonalDataRefused):
        refuse_personal_data(body)


def test_a_name_sent_under_another_iri_follows_the_same_rules() -> None:
    """entity_codec asks sent_name_rule when the @context maps a name to an IRI named otherwise."""
    assert sent_name_rule("isMobile", "https://example.org/m", "yes") is None
    assert sent_name_rule("emergencyPhone", "https://example.org/e", True) is None
    assert sent_name_rule("emergencyPhone", "https://example.org/e", _prop(True)) is None
    assert sent_name_rule("mobilePhone", "https://example.org/p", "x") == "phone-number"
    assert sent_name_rule("emergencyPhone", "https://example.org/e", "112") == "phone-number"


@pytest.mark.parametrize(
    ("field", "rule"),
    [
        ("faceMatched", "face"),
        ("faceRecognised", "face"),
        ("knownFace", "face"),
        ("fingerprintVerified", "biometric"),
        ("voiceIdentified", "voice-audio"),
        ("plateOnWatchlist", "licence-plate"),
        ("wantedPlate", "licence-plate"),
    ],
)
def test_a_flag_that_reports_a_recognition_is_refused(field: str, rule: str) -> None:
    """One bit that says "this face, voice or plate matched someone" is the output of the identification Polis
    refuses: the yes/no exemption does not cover it, bare or as an NGSI-LD Property, nor named through @context."""
    for value in (True, {"type": "Property", "value": False}):
        found = find_identifying({field: value})
        assert found is not None and found.rule == rule, (field, value, found)
    assert sent_name_rule(field, "https://example.org/x", True) == rule


@pytest.mark.parametrize("field", ["faceDetected", "voiceDevice", "vehiclePlateNotRead", "isMobile", "hitCount"])
def test_a_flag_that_reports_no_recognition_passes(field: str) -> None:
    assert find_identifying({field: True}) is None
