"""Refusal at the door: fields that identify people are not taken, whatever the path (NGSI-LD API, MQTT).

Camera and microphone systems may send counts only. A message is refused when one of its fields, at any
depth, is identifying by its name or by its value:

- by name (the last segment of a term or IRI, split into words: `faceEmbedding` -> face, embedding):
  face images or embeddings, biometrics, voice or audio, images and video, personal names, phone numbers,
  e-mail addresses, licence plates, home addresses, device identifiers that follow a person (IMEI, IMSI,
  MAC). A numeric field named as a count or a level (`peopleCount`, `faceCount`, `numberOfFaces`,
  `audioLevel`) passes: it counts, it does not identify. A yes/no field (a JSON boolean) passes whatever its
  name: one bit names nobody (Smart Data Models' `isMobile`, TransportStation's `services.emergencyPhone`
  and `voiceDevice`, AnprFlowObserved's `vehiclePlateNotRead`), unless it reports a recognition
  (`faceMatched`, `voiceIdentified`, `plateOnWatchlist`: the output of identification, even as one bit).
  `name`, `stationName`, `address` pass: Smart Data Models use them for places and devices;
- by value: an e-mail address or a phone number in any string, a base64 image/audio/video (data URI or
  raw JPEG/PNG/WAV/MP3/Ogg/FLAC/WebM bytes), a MAC address, and long float vectors (embeddings) on
  fields named like identity features.

The reason names the field (as sent) and the rule, never the value: the refusal itself must not store
what it refused.

Every level is scanned, up to json_depth.STORED_DEPTH (the deepest document Polis can store, far below what
a client may send); anything nested deeper is refused by TOO_DEEP rather than passed unseen.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

import orjson

from polis.domain.errors import PersonalDataRefused
from polis.domain.json_depth import STORED_DEPTH

EMBEDDING_MIN_LENGTH = 16
MEDIA_MIN_CHARS = 64

RULES = {
    "face": "face images and face embeddings identify people",
    "biometric": "biometric templates (embeddings, fingerprints, iris, gait) identify people",
    "voice-audio": "voice and audio recordings identify people; send sound levels or counts",
    "image": "images and video of public space identify people; send counts",
    "person-name": "names of people are personal identifiers",
    "phone-number": "phone numbers are personal identifiers",
    "e-mail": "e-mail addresses are personal identifiers",
    "licence-plate": "licence plates identify vehicle keepers",
    "home-address": "home addresses identify people",
    "device-identifier": "device identifiers (IMEI, IMSI, MAC) follow a person",
    "person-identifier": "identifiers of people (a user, patient or customer id, a passport or social security "
    "number) single them out; send counts",
    "birth-date": "dates of birth single people out (with a place or a day, often uniquely); send counts by age band",
}
# Not one of RULES (nothing identifying was seen): the verdict on what nests deeper than the scan looks. No
# accepted body gets there (they stop at json_depth.MAX_DEPTH), but a field the scan never saw is not passed.
TOO_DEEP = "nesting"
_TOO_DEEP_WHY = f"fields nested more than {STORED_DEPTH} levels deep are not scanned for identifiers, nor taken"

# Members that belong to NGSI-LD itself, not to the sender's data: never scanned as field names.
_SYSTEM_MEMBERS = frozenset(
    {
        "@context", "@id", "@type", "id", "type", "observedAt", "createdAt", "modifiedAt", "deletedAt",
        "datasetId", "unitCode", "value", "object", "objectList", "languageMap", "valueList", "json", "vocab",
        "coordinates", "location", "observationSpace", "operationSpace", "scope", "lang", "instanceId",
    }
)  # fmt: skip

# Members whose values are NGSI-LD machinery (times, coordinates): not scanned. Type names and unit codes are
# scanned like any string: a sender chooses them too (an e-mail address as a unitCode was stored before).
_OPAQUE_MEMBERS = frozenset({"@context", "coordinates", "observedAt", "createdAt", "modifiedAt", "deletedAt"})
# The core @context's own terms, expanded (hasValue, observedAt, unitCode); not the default context's
# (https://uri.etsi.org/ngsi-ld/default-context/x), which are the sender's own terms.
_CORE_TERM = re.compile(r"https://uri\.etsi\.org/ngsi-ld/[A-Za-z]+")
_HAS_VALUE = "https://uri.etsi.org/ngsi-ld/hasValue"
_COUNT_HEAD = frozenset({"number", "num", "count", "total", "n"})
_COUNT_TAIL = frozenset(
    {
        "count", "counts", "total", "number", "level", "levels", "density", "rate", "occupancy", "intensity",
        "ratio", "percentage", "percent", "index", "db", "decibels", "pressure", "detected", "present",
    }
)  # fmt: skip
_FACE = frozenset({"face", "faces", "facial", "faceprint", "faceid", "headshot", "portrait"})
_BIOMETRIC = frozenset(
    {"embedding", "embeddings", "biometric", "biometrics", "fingerprint", "iris", "retina", "gait", "faceprint"}
)
_VOICE = frozenset({"voice", "voices", "voiceprint", "audio", "speech", "recording", "recordings", "transcript"})
_IMAGE = frozenset(
    {"image", "images", "photo", "photos", "photograph", "picture", "pictures", "snapshot", "video", "thumbnail"}
)
# A yes/no field passes the name rules (`_flag`), except one that reports a recognition: "this face, voice or
# plate matched someone" is the output of the identification Polis refuses, even as one bit.
_RECOGNITION = frozenset(
    {
        "match", "matched", "matches", "matching", "recognized", "recognised", "recognition", "identified",
        "identification", "verified", "verification", "known", "enrolled", "watchlist", "blacklist", "wanted",
        "suspect", "hit",
    }
)  # fmt: skip
_NAME_QUALIFIERS = frozenset(
    {
        "person", "personal", "full", "first", "last", "given", "family", "middle", "maiden", "owner", "driver",
        "passenger", "patient", "resident", "contact", "customer", "rider", "citizen", "holder", "cardholder",
        "user", "member", "subscriber", "victim", "caller", "birth",
    }
)  # fmt: skip
_NAME_WORDS = frozenset({"surname", "forename", "nickname", "fullname", "firstname", "lastname", "givenname"})
_PHONE = frozenset({"phone", "telephone", "msisdn", "cellphone", "fax"})
# A phone word followed by a number word names the number itself (`telephoneNumber`, `contactPhoneNumber`,
# `mobileNo`): refused whatever the value's type, where a trailing "number" otherwise counts (Smart Data
# Models' `availableBikeNumber`, `totalLaneNumber`; a number sent as a JSON number is still the number).
_PHONE_OWNERS = _PHONE | {"mobile", "contact", "tel"}
_NUMBER_WORDS = frozenset({"number", "numbers", "num", "no", "nr"})
# "mobile" is not a phone word by itself: as an adjective it describes a thing that moves (`isMobile`, a
# sensor on a vehicle; `mobileUnit`, `mobileStation`). It names a phone where it is the noun: before a phone,
# number or contact word (`mobilePhone`, `mobile_phone`, `mobileNumber`), or last, unless a word that makes
# it an adjective comes right before (`contactMobile`, `mobile` refused; `isMobile`, `nonMobile` pass).
_MOBILE_NOUN_NEXT = _PHONE_OWNERS | _NUMBER_WORDS
_MOBILE_ADJECTIVE_AFTER = frozenset({"is", "are", "was", "were", "be", "not", "non", "semi", "fully"})
_EMAIL = frozenset({"email", "mail", "emailaddress"})
# A VIN (Smart Data Models' Vehicle.vehicleIdentificationNumber) names one vehicle, and so its keeper, as a plate does
_PLATE = frozenset(
    {"plate", "licenseplate", "licenceplate", "numberplate", "registrationplate", "vin", "vehicleidentificationnumber"}
)
# A plate's colour is a category shared by a whole class of vehicles (Smart Data Models' `plateColor`), not
# the plate: a name about the plate that ends in one passes.
_PLATE_TRAITS = frozenset({"color", "colour"})
_HOME = frozenset({"home", "residence", "residential", "domicile", "dwelling"})
_PLACE = frozenset({"address", "location", "position", "coordinates", "place", "street", "geo", "lat", "lon", "point"})
_DEVICE = frozenset({"imei", "imsi", "mac", "macaddress", "bluetooth", "iccid", "idfa", "gaid"})
# A person word right before an identifier word names one person's identifier (`userId`, `patientNumber`,
# `customer_no`, `riderHash`): refused whatever the value's type, as a number can be the id. A count passes
# (`passengerNumber` as a JSON number, `numberOfUsers`, `userCount`): it names no one.
_PERSON = frozenset(
    {
        "person", "patient", "user", "customer", "passenger", "rider", "citizen", "resident", "member", "subscriber",
        "driver", "caller", "victim", "cardholder", "traveller", "traveler", "employee", "student", "pupil", "voter",
        "taxpayer", "beneficiary", "account", "applicant",
    }
)  # fmt: skip
_IDENTIFIER = frozenset(
    {"id", "identifier", "number", "no", "nr", "num", "hash", "code", "key", "token", "uuid", "pseudonym", "ref"}
)
_PERSON_DOCUMENT = frozenset({"ssn", "passport", "nhs", "nino", "socialsecurity", "nationalid"})
_BIRTH = frozenset({"birth", "birthday", "birthdate", "birthyear", "dob"})

_WORD_SPLIT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_TAIL = re.compile(r"[/#:]")
_EMAIL_VALUE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PHONE_VALUE = re.compile(r"\+?\(?\d[\d\s().\-/]{6,20}\d")
# Six hex pairs with one separator throughout, or three dotted quads; not inside a longer run. Pairs of digits
# joined by "-" or "_" are as often a date and a time (Madrid-2024-01-15-10-30-00): those need a hex letter.
_MAC_VALUE = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2}([:\-_])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}(?![0-9A-Fa-f]|[:\-_][0-9A-Fa-f])"
)
_DOTTED_MAC = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")  # its ends are checked after
_HEX_LETTER = re.compile(r"[A-Fa-f]")
_HEX_OR_DOT = re.compile(r"[0-9A-Fa-f.]")
_IMEI_VALUE = re.compile(r"imei\D{0,3}\d{15}", re.IGNORECASE)
# A phone number inside a longer text, or an id: only with its international "+" or a "tel:" scheme, since a
# bare run of digits there is as likely a serial or a count.
_PHONE_IN_TEXT = re.compile(r"(?:(?<![\w.+])\+|tel:)\(?\d[\d\s().\-/]{6,20}\d", re.IGNORECASE)
_ISO6709 = re.compile(r"[+-]\d{2,6}(?:\.\d+)?[+-]\d{3,7}(?:\.\d+)?")  # +40.6892-074.0445/ is a place
# Invisible characters, and every kind of dash, that a sender can put in an identifier to break a pattern.
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"
_UNMASK = str.maketrans({**dict.fromkeys(_INVISIBLE), **dict.fromkeys(_DASHES, "-")})
_MASKING = re.compile(f"[{_INVISIBLE}{_DASHES}]")
_DATA_URI = re.compile(r"\s*data:(image|audio|video)/", re.IGNORECASE)
# Base64 openings of common image/audio/video files (JPEG, PNG, GIF, WebP/WAV (RIFF), MP3 (ID3), Ogg, FLAC,
# WebM/Matroska, MP4 (....ftyp)).
_MEDIA_MAGIC = {
    "/9j/": "image",
    "iVBORw0KGgo": "image",
    "R0lGOD": "image",
    "UklGR": "voice-audio",
    "SUQz": "voice-audio",
    "T2dnUw": "voice-audio",
    "ZkxhQw": "voice-audio",
    "GkXfo": "image",
    "AAAAGGZ0eXA": "image",
    "AAAAIGZ0eXA": "image",
}
# First characters a phone number (+, (, digit), a MAC address (hex digit) or leading blanks can start with.
_PHONE_OR_MAC_START = frozenset("+(0123456789abcdefABCDEF \t")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}")


@dataclass(frozen=True, slots=True)
class Finding:
    field: str  # the path of the field as sent, dotted
    rule: str  # a key of RULES
    by: str  # "name" or "value"

    def reason(self) -> str:
        why = RULES.get(self.rule, _TOO_DEEP_WHY)
        return f"field '{self.field}' is refused by rule '{self.rule}' ({why}; detected by its {self.by})"


def _words(key: str) -> list[str]:
    tail = _TAIL.split(_plain_text(key).rstrip("/#:"))[-1]  # `https://x.org/licensePlate/` names licensePlate
    return [w.lower() for w in _WORD_SPLIT.findall(tail)]


def _plain_text(value: str) -> str:
    """`value` as a reader sees it: percent-escapes decoded (`ann%40example.org`, twice escaped too),
    compatibility forms folded (a full-width `＠`, full-width letters), invisible characters dropped, every
    dash a hyphen. ASCII without a `%` (nearly every string) is returned as it is."""
    for _ in range(3):
        if "%" not in value:
            break
        value = unquote(value)
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)
        if _MASKING.search(value):  # translate() walks every character in Python: only when needed
            value = value.translate(_UNMASK)
    return value


_name_memo: dict[str, str | None] = {}


def rule_for_name(key: str, numeric: bool) -> str | None:
    """The rule a field name breaks (None: it may pass). `numeric`: the field's value is a number, so a
    count or level of faces or voices passes."""
    memo_key = f"{int(numeric)}{key}"
    if memo_key in _name_memo:
        return _name_memo[memo_key]
    words = _words(key)
    joined = "".join(words)
    found = _name_rule(words, joined, numeric)
    if len(_name_memo) > 65536:
        _name_memo.clear()
    _name_memo[memo_key] = found
    return found


def _name_rule(words: list[str], joined: str, numeric: bool) -> str | None:
    if not words:
        return None
    word_set = set(words)
    counting = numeric and (words[-1] in _COUNT_TAIL or words[0] in _COUNT_HEAD)
    if word_set & _BIOMETRIC and not counting:
        return "face" if word_set & _FACE else "biometric"
    if word_set & _FACE and not counting:
        return "face"
    if word_set & _VOICE and not counting:
        return "voice-audio"
    if word_set & _IMAGE and not counting:
        return "image"
    if joined in _NAME_WORDS or word_set & _NAME_WORDS or ("name" in word_set and word_set & _NAME_QUALIFIERS):
        return "person-name"
    if word_set & _EMAIL or "email" in joined:
        return "e-mail"
    if ((word_set & _PHONE or _names_mobile_phone(words)) and not counting) or _names_phone_number(words):
        return "phone-number"
    if (word_set & _PLATE or joined in _PLATE) and words[-1] not in _PLATE_TRAITS:
        return "licence-plate"
    if word_set & _HOME and (word_set & _PLACE or len(words) == 1):
        return "home-address"
    if word_set & _DEVICE or joined in _DEVICE:
        return "device-identifier"
    if not counting and (_names_person_identifier(words) or word_set & _PERSON_DOCUMENT or "socialsecurity" in joined):
        return "person-identifier"
    if word_set & _BIRTH and not counting:
        return "birth-date"
    return None


def _names_person_identifier(words: list[str]) -> bool:
    return any(w in _PERSON and n in _IDENTIFIER for w, n in pairwise(words))


def rule_for_flag(key: str) -> str | None:
    """The rule a field name breaks when its value is a yes/no flag: only a recognition of a face, voice, body or
    plate (`faceMatched`, `voiceIdentified`, `plateOnWatchlist`); `faceDetected`, `voiceDevice` and
    `vehiclePlateNotRead` pass, as a count of faces does."""
    words = set(_words(key))
    if not words & _RECOGNITION:
        return None
    if words & (_FACE | _BIOMETRIC):
        return "face" if words & _FACE else "biometric"
    if words & _VOICE:
        return "voice-audio"
    if words & _PLATE:
        return "licence-plate"
    return None


def _names_phone_number(words: list[str]) -> bool:
    return any(w in _PHONE_OWNERS and n in _NUMBER_WORDS for w, n in pairwise(words))


def _names_mobile_phone(words: list[str]) -> bool:
    """Whether "mobile" is the noun (a mobile phone) somewhere in `words` (see _MOBILE_NOUN_NEXT)."""
    for index, word in enumerate(words):
        if word != "mobile":
            continue
        if index + 1 < len(words):
            if words[index + 1] in _MOBILE_NOUN_NEXT:
                return True
        elif index == 0 or words[index - 1] not in _MOBILE_ADJECTIVE_AFTER:
            return True
    return False


def sent_name_rule(name: str, iri: str, value: Any) -> str | None:
    """The rule a field's name as sent breaks where the @context maps it to an IRI named otherwise
    (`licensePlate` -> https://example.org/p): the stored document keeps only the IRI, whose scan cannot tell."""
    if _TAIL.split(iri)[-1] == _TAIL.split(name)[-1]:  # the scan of the stored document judges the same name
        return None
    if _flag(value):
        return rule_for_flag(name)
    return rule_for_name(name, _numeric(value))


def sent_name_refused(name: str, rule: str) -> PersonalDataRefused:
    return PersonalDataRefused(
        f"field '{name}' is refused by rule '{rule}' ({RULES[rule]}; detected by its name as sent, which the "
        "@context maps to another IRI). Polis counts, it never watches: nothing of this message was stored",
        field=name,
        rule=rule,
    )


def rule_for_value(value: str) -> str | None:
    """The rule a string value breaks, whatever its field is called."""
    value = _plain_text(value)
    if len(value) < 7:
        return None
    first = value[0]
    # Cheap counts decide which of the costlier searches below can match at all.
    mac = value.count(":") >= 5 or value.count("-") >= 5 or value.count("_") >= 5
    dotted = value.count(".") >= 2
    phone = "+" in value or "el:" in value or "EL:" in value
    imei = "mei" in value or "MEI" in value
    if (
        "@" not in value
        and first not in _PHONE_OR_MAC_START
        and len(value) < MEDIA_MIN_CHARS
        and first != "d"
        and not (mac or dotted or phone or imei)
    ):
        return None  # the common case (names, IRIs, times): nothing below can match
    if _DATA_URI.match(value):
        kind = _DATA_URI.match(value).group(1).lower()  # type: ignore[union-attr]
        return "voice-audio" if kind == "audio" else "image"
    if len(value) >= MEDIA_MIN_CHARS:
        head = value.lstrip()[:16]
        for magic, rule in _MEDIA_MAGIC.items():
            if head.startswith(magic) and _BASE64.fullmatch(value[:4096]):
                return rule
    if "@" in value and _EMAIL_VALUE.search(value):
        return "e-mail"
    if mac:  # alone, or in a text or an id (urn:ngsi-ld:Device:a4:5e:60:12:9b:01)
        for found in _MAC_VALUE.finditer(value):
            if found.group(1) == ":" or _HEX_LETTER.search(found.group()):
                return "device-identifier"
    if dotted:
        for found in _DOTTED_MAC.finditer(value):
            before, after = value[found.start() - 1 : found.start()], value[found.end() : found.end() + 1]
            if not _HEX_OR_DOT.match(before) and not _HEX_OR_DOT.match(after) and _HEX_LETTER.search(found.group()):
                return "device-identifier"
    if imei and _IMEI_VALUE.search(value):
        return "device-identifier"
    stripped = value.strip()
    if _PHONE_VALUE.fullmatch(stripped) and not _DATE_LIKE.search(stripped):
        digits = sum(c.isdigit() for c in stripped)
        separated = stripped.startswith("+") or bool(re.search(r"\d[\s.\-)]\d", stripped))
        if 9 <= digits <= 15 and separated:
            return "phone-number"
    if phone:
        for match in _PHONE_IN_TEXT.finditer(value):
            if _ISO6709.match(value, match.start()):
                continue
            if 9 <= sum(c.isdigit() for c in match.group()) <= 15:
                return "phone-number"
    return None


def find_identifying(body: Any) -> Finding | None:
    """The first identifying field of a JSON body (compact or expanded, one entity, a fragment or a list).

    A fast pass (memoised key verdicts, no paths) runs on every write; only a body it flags is scanned
    again to name the field."""
    if not _hit(body, 0, None):
        return None
    return _scan(body, "", 0, None)


_EMBEDDING_OWNERS = frozenset({"vector", "descriptor", "features", "template", "signature"})
_key_info_memo: dict[str, tuple[bool, bool, str | None, str | None, str | None]] = {}


def _key_info(key: str) -> tuple[bool, bool, str | None, str | None, str | None]:
    """(opaque, system, rule if the value is text or anything else, rule if it is a number, rule if it is a
    yes/no flag), memoised per key. Only a key that identifies by its own text is refused over a flag."""
    info = _key_info_memo.get(key)
    if info is None:
        system = key in _SYSTEM_MEMBERS
        if system:
            plain = counted = flagged = None
        elif "@" in key and _EMAIL_VALUE.search(key):
            plain = counted = flagged = "e-mail"
        else:
            by_value = rule_for_value(key)
            flagged = by_value or rule_for_flag(key)
            plain = by_value or rule_for_name(key, False)
            counted = by_value or rule_for_name(key, True)
        info = (key in _OPAQUE_MEMBERS, system, plain, counted, flagged)
        if len(_key_info_memo) > 65536:
            _key_info_memo.clear()
        _key_info_memo[key] = info
    return info


def _hit(node: Any, depth: int, owner: str | None) -> bool:
    if depth > STORED_DEPTH:
        return True  # _scan names it (TOO_DEEP)
    kind = type(node)
    if kind is dict:
        for key, value in node.items():
            if type(key) is not str:
                continue
            opaque, system, plain, counted, flagged = _key_info(key)
            if plain is not None and _refused_over(value, depth + 1, counted, flagged):
                return True
            if not opaque and _hit(value, depth + 1, owner if system else key):
                return True
    elif kind is list:
        if owner is not None and len(node) >= EMBEDDING_MIN_LENGTH and _is_float_vector(node):
            words = set(_words(owner))
            if words & (_FACE | _BIOMETRIC | _VOICE | _EMBEDDING_OWNERS):
                return True
        for value in node:
            if _hit(value, depth + 1, owner):
                return True
    elif kind is str:
        return rule_for_value(node) is not None
    return False


def _scan(node: Any, path: str, depth: int, owner: str | None) -> Finding | None:
    if depth > STORED_DEPTH:
        return Finding(path or "(body)", TOO_DEEP, "depth")
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                continue
            short = _TAIL.split(key.rstrip("/#:"))[-1] if "://" in key else key
            field = f"{path}.{short}" if path else short
            if key not in _SYSTEM_MEMBERS:
                if _EMAIL_VALUE.search(key) or rule_for_value(key) is not None:
                    return Finding(
                        path or "(body)", "e-mail" if "@" in key else rule_for_value(key) or "e-mail", "name"
                    )
                flag = _flag(value, depth + 1)
                rule = rule_for_flag(key) if flag else rule_for_name(key, _numeric(value, depth + 1))
                if rule is not None:
                    return Finding(field, rule, "name")
            if key in _OPAQUE_MEMBERS:
                continue
            found = _scan(value, field, depth + 1, key if key not in _SYSTEM_MEMBERS else owner)
            if found is not None:
                return found
    elif isinstance(node, list):
        if owner is not None and len(node) >= EMBEDDING_MIN_LENGTH and _is_float_vector(node):
            words = set(_words(owner))
            if words & (_FACE | _BIOMETRIC | _VOICE | _EMBEDDING_OWNERS):
                return Finding(path, "face" if words & _FACE else "biometric", "value")
        for index, value in enumerate(node):
            # Instances of an attribute (the expanded form keeps them in a list) are named by the attribute.
            instance = isinstance(value, dict) and any(k in value for k in ("type", "value", "object"))
            where = path if instance and path else (f"{path}[{index}]" if path else f"[{index}]")
            found = _scan(value, where, depth + 1, owner)
            if found is not None:
                return found
    elif isinstance(node, str):
        rule = rule_for_value(node)
        if rule is not None:
            return Finding(path or "(body)", rule, "value")
    return None


def _numeric(value: Any, depth: int = 0) -> bool:
    """A number, or an NGSI-LD instance (or list of instances) whose value is a number. `depth`: the value's
    level in its document; lists nested past the scan's bound are not numbers (so the name rules apply in full),
    and a payload refused for its depth, which a dead letter still scans, cannot exhaust Python's stack here."""
    if depth > STORED_DEPTH:
        return False
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, dict):
        inner = value.get("value", value.get(_HAS_VALUE))
        if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], dict):
            inner = inner[0].get("@value")
        return isinstance(inner, int | float) and not isinstance(inner, bool)
    if isinstance(value, list) and value:
        return all(_numeric(item, depth + 1) for item in value)
    return False


def _flag(value: Any, depth: int = 0) -> bool:
    """A yes/no value: a JSON boolean, or an NGSI-LD instance (or list of instances) that holds one and nothing
    of the sender's own beside it. The name rules refuse a field for what its value may hold (a face, a number,
    a name); true or false holds none of them, whatever the field is called. An instance with sub-attributes
    keeps its name's verdict: `faceImage` true with the picture's address beside it is still a face image.
    `depth` bounds the walk as in `_numeric`."""
    if depth > STORED_DEPTH:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        if not all(isinstance(k, str) and (k in _SYSTEM_MEMBERS or _CORE_TERM.fullmatch(k)) for k in value):
            return False
        inner = value.get("value", value.get(_HAS_VALUE))
        if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], dict):
            inner = inner[0].get("@value")
        return isinstance(inner, bool)
    if isinstance(value, list) and value:
        return all(_flag(item, depth + 1) for item in value)
    return False


def _refused_over(value: Any, depth: int, counted: str | None, flagged: str | None) -> bool:
    """Whether a key that is refused over a text value is refused over `value` too (see `_key_info`)."""
    if _flag(value, depth):
        return flagged is not None
    return counted is not None or not _numeric(value, depth)


def _is_float_vector(values: list[Any]) -> bool:
    return all(isinstance(v, float | int) and not isinstance(v, bool) for v in values) and any(
        isinstance(v, float) and not float(v).is_integer() for v in values
    )


def refuse_personal_data(body: Any) -> None:
    """Raise PersonalDataRefused (422, naming the field and the rule) if `body` identifies people. A list
    (a batch, or the entities of one write) is checked item by item, so the field is named within its item."""
    for item in body if isinstance(body, list | tuple) else [body]:
        found = find_identifying(item)
        if found is None:
            continue
        entity = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        raise PersonalDataRefused(
            f"{found.reason()}"
            + (f" in entity {entity}" if entity and found.field != "id" else "")
            + ". Polis counts, it never watches: nothing of this message was stored",
            field=found.field,
            rule=found.rule,
        )


def refuse_identifying_strings(document: Any, where: str) -> None:
    """PersonalDataRefused if any string of `document` (keys included) is identifying by its value: for
    documents whose keys are not data field names, such as an @context (its terms may well be called
    `licensePlate`: naming a field is not sending one)."""
    stack: list[Any] = [document]  # its own stack, not recursion: every level is looked at, however deep
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            rule = rule_for_value(node)
            if rule is not None:
                raise PersonalDataRefused(
                    f"{where} holds a value refused by rule '{rule}' ({RULES[rule]}); nothing of it was stored",
                    field=where,
                    rule=rule,
                )


def refusal_reason(body: Any) -> str | None:
    """For ingest paths that dead-letter instead of answering: the reason, starting 'privacy:'."""
    found = find_identifying(body)
    return None if found is None else f"privacy: {found.reason()}"


def kept_payload(payload: bytes, reason: str) -> str:
    """What a dead letter keeps of a refused message: the payload as usual, but nothing of one refused for
    privacy (only its size: the reason already names the field and the rule), nor of one that would have been,
    had it not failed on something else first (a dead letter is read back through the API)."""
    if "privacy:" in reason or _identifies(payload):
        return f"[withheld: {len(payload)} bytes refused for privacy]"
    from polis.ingest.messages import shown_payload

    return shown_payload(payload)


def redacted(text: str) -> str:
    """`text` as it may be kept (a dead letter's topic, an audit entry's request path), unless a value rule
    refuses it: then only the rule's name."""
    rule = rule_for_value(text)
    return text if rule is None else f"[withheld by privacy rule '{rule}']"


def kept_reason(reason: str) -> str:
    """What a dead letter keeps of its reason, which may quote the message (an unknown type, an id); a
    privacy refusal's own reason names the field and the rule, never the value."""
    return reason if "privacy:" in reason else redacted(reason)


def _identifies(payload: bytes) -> bool:
    """Whether a payload, JSON or not, holds anything the rules refuse."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _text_identifies(payload)
    return find_identifying(body) is not None


_NAME_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_STRING_LITERAL = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"?', re.DOTALL)  # closed, or cut off by the end


def _text_identifies(payload: bytes) -> bool:
    """Whether a payload that is not JSON may hold anything the rules refuse.

    With no structure to walk, this errs towards withholding: a dead letter then loses only its debugging view
    (its reason still says what failed), while what it keeps is read back through the API. Bytes that are not
    UTF-8 may be a raw image or recording, which no text rule recognises: always withheld. In text, every word
    is judged as a field name (a broken key may have lost its quotes; counts pass, as they would as numbers),
    every quoted string, closed or cut off by the payload's end, by the value rules, and so is the whole text."""
    from polis.ingest.messages import SHOWN_PAYLOAD_CHARS

    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return True
    # Only the shown prefix is ever kept: judging more would let one publisher's 256 KB of words cost a third
    # of a second each; the margin catches a value cut in two by the prefix's end.
    text = text[: SHOWN_PAYLOAD_CHARS + 256]
    if rule_for_value(text) is not None:
        return True
    if any(rule_for_name(word, True) is not None for word in set(_NAME_TOKEN.findall(text))):
        return True
    return any(rule_for_value(_unescaped(literal)) is not None for literal in _STRING_LITERAL.findall(text))


def _unescaped(literal: str) -> str:
    """A JSON string's content with its escapes resolved (`\\u0040` is an `@`); as written if it cannot be."""
    try:
        value = orjson.loads(f'"{literal}"')
    except orjson.JSONDecodeError:
        return literal
    return value if isinstance(value, str) else literal
