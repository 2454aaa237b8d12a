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
- by value: an e-mail address (`ann(at)example.org` too) or a phone number in any string, an image,
  audio or video (a data URI of such a media type, or JPEG/PNG/GIF/WAV/MP3/Ogg/FLAC/WebM/MP4 bytes in
  base64 or hex, in a data URI of any media type, gzip-compressed, or split over a list of strings), a MAC
  address, an IMEI or IMSI after its scheme, and embeddings on fields named like identity features: long
  float vectors, or the same floats packed as base64 bytes;
- by what the entity is: an entity whose type (or the type in its `urn:ngsi-ld:` id) is a person
  (`Person`, `Pedestrian`, `schema:Patient`, `PassengerTrajectory`) is one person's record, a per-person
  profile whatever its fields are called (`person-record`). Types of counts pass (`PeopleCount`,
  `PedestrianFlowObserved`): their last word is not a person.

The reason names the field (as sent) and the rule, never the value: the refusal itself must not store
what it refused.

Members that NGSI-LD itself fills (times, coordinates, a document's @context) are skipped only while they
hold what NGSI-LD puts there; under any other value the name is the sender's own and what it holds is scanned.

Every level is scanned, up to json_depth.STORED_DEPTH (the deepest document Polis can store, far below what
a client may send); anything nested deeper is refused by TOO_DEEP rather than passed unseen.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import zlib
from array import array
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

import orjson

from polis.access.datasets import dataset_of
from polis.domain.errors import PersonalDataRefused
from polis.domain.json_depth import STORED_DEPTH
from polis.epidemic.guard import unstored_shape

EPIDEMIC = "epidemic"  # the access dataset the epidemic module's entities belong to (polis.access.datasets)

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
    "person-record": "an entity that stands for one person (its name, places, times) is a per-person profile; "
    "send counts",
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

# Members whose values are NGSI-LD machinery (times, coordinates, a document's @context): not scanned while
# they hold what NGSI-LD puts there (`_machinery`). The names alone prove nothing: inside a JsonProperty or a
# Property's value they are the sender's own, and were once a hiding place for anything nested below them.
# Type names and unit codes are scanned like any string: a sender chooses them too.
_TIME_MEMBERS = frozenset({"observedAt", "createdAt", "modifiedAt", "deletedAt"})
_OPAQUE_MEMBERS = _TIME_MEMBERS | {"@context", "coordinates"}
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?")
# A document's own @context sits at its top, or at the top of one item of a list (a batch).
_CONTEXT_DEPTH = 1
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
# MFCCs and spectrograms are what speaker recognition reads, and speech can be rebuilt from them.
_VOICE = frozenset(
    {
        "voice", "voices", "voiceprint", "audio", "speech", "recording", "recordings", "transcript", "utterance",
        "utterances", "mfcc", "mfccs", "spectrogram", "spectrograms",
    }
)  # fmt: skip
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
    {
        "plate", "licenseplate", "licenceplate", "numberplate", "registrationplate", "vin",
        "vehicleidentificationnumber", "kennzeichen", "kfzkennzeichen", "nummernschild", "matricula", "immatriculation",
    }
)  # fmt: skip
# A vehicle's registration is its plate (`registration`, `vehicleRegistration`, `regNumber`, `registrationNo`);
# what is said about it passes (`registrationDate`, `registrationStatus`): the word must end the name or come
# right before a number word.
_REGISTRATION = frozenset({"registration", "reg", "rego"})
# A plate's colour is a category shared by a whole class of vehicles (Smart Data Models' `plateColor`), not
# the plate: a name about the plate that ends in one passes.
_PLATE_TRAITS = frozenset({"color", "colour"})
_HOME = frozenset({"home", "residence", "residential", "domicile", "dwelling"})
_PLACE = frozenset({"address", "location", "position", "coordinates", "place", "street", "geo", "lat", "lon", "point"})
# A BSSID is a MAC address (refused by value in any case); `btAddr`, `bleMac`: a Bluetooth radio's address.
_DEVICE = frozenset({"imei", "imsi", "mac", "macaddress", "bluetooth", "iccid", "idfa", "gaid", "bssid", "bdaddr"})
_RADIOS = {"bt": frozenset({"addr", "address", "mac", "id"}), "ble": frozenset({"addr", "address", "mac", "id"})}
_RADIOS |= dict.fromkeys(("wifi", "wlan"), frozenset({"addr", "address", "mac"}))
# A person word right before an identifier word names one person's identifier (`userId`, `patientNumber`,
# `customer_no`, `riderHash`): refused whatever the value's type, as a number can be the id. A count passes
# (`passengerNumber` as a JSON number, `numberOfUsers`, `userCount`): it names no one.
# The nouns for one person; an entity typed by one (its type's last word) is a person record (`_PERSON_TYPES`).
_PERSON_NOUNS = frozenset(
    {
        "person", "patient", "user", "customer", "passenger", "rider", "citizen", "resident", "member", "subscriber",
        "driver", "caller", "victim", "cardholder", "traveller", "traveler", "employee", "student", "pupil", "voter",
        "taxpayer", "beneficiary", "applicant", "visitor", "pedestrian", "cyclist", "commuter", "tourist",
        "individual", "human", "inhabitant", "worker",
    }
)  # fmt: skip
# Also identified through: an account; a transit or payment card (`cardId`, `cardNumber`); a camera tracker's
# track (`trackId`, `trackingId`), which follows one person from frame to frame: the trajectory itself. A
# railway track is better sent as a Relationship (`refTrack`) or its number as a JSON number (`trackNumber`):
# both pass.
# Not "tracker": a vehicle's GPS tracker (`gpsTrackerId`) is a device of the fleet, not a person's track.
_PERSON = _PERSON_NOUNS | {"account", "card", "track", "tracking", "tracklet"}
# A type whose last word is a person noun is a person record; so is one where a person noun comes right before
# a word for what is kept about that one person (`PersonTrace`, `PassengerTrajectory`, `UserProfile`).
# Plurals are not person records by themselves (`Visitors`, `People` may be a count). A trip is not one of
# those words: it is as often an itinerary (schema.org's TouristTrip) or a vehicle's run.
_PERSON_TYPES = _PERSON_NOUNS
_ONE_PERSONS = frozenset(
    {
        "profile", "record", "trace", "traces", "trajectory", "trajectories", "track", "tracks", "journey",
        "journeys", "history", "location", "locations", "position", "positions", "movement", "movements",
    }
)  # fmt: skip
_IDENTIFIER = frozenset(
    {"id", "identifier", "number", "no", "nr", "num", "hash", "code", "key", "token", "uuid", "pseudonym", "ref"}
)
_PERSON_DOCUMENT = frozenset({"ssn", "passport", "nhs", "nino", "socialsecurity", "nationalid", "iban"})
# A card's number names its holder whatever the value's type (`cardNumber` sent as a JSON number too), and so
# does a payment card (`creditCard`) unless counted.
_CARD_KINDS = frozenset({"credit", "debit", "payment", "bank"})
_BIRTH = frozenset({"birth", "birthday", "birthdate", "birthyear", "dob"})
_VEHICLES = frozenset({"vehicle", "car", "motor", "truck", "lorry", "van", "bus", "taxi", "motorcycle", "moped"})
# Names that identity features (embeddings) are kept under, beside the face, biometric and voice words.
# Not "signature" alone: a spectrometer's `spectralSignature` is a measurement (`faceSignature`, `voiceSignature`
# are caught by their face or voice word).
_EMBEDDING_OWNERS = frozenset(
    {"vector", "vectors", "vec", "vecs", "emb", "embs", "descriptor", "descriptors", "features", "template"}
)
# Every word a rule reads: a single word made of two of them (`PERSONID`, `drivername`, `faceimage`) is read
# as the two (`_compound`), so that writing a name in one case does not hide it.
_VOCABULARY = (
    _COUNT_HEAD | _COUNT_TAIL | _FACE | _BIOMETRIC | _VOICE | _IMAGE | _RECOGNITION | _NAME_QUALIFIERS | _NAME_WORDS
    | _PHONE_OWNERS | _NUMBER_WORDS | _EMAIL | _PLATE | _REGISTRATION | _HOME | _PLACE | _DEVICE | frozenset(_RADIOS)
    | _PERSON | _IDENTIFIER | _PERSON_DOCUMENT | _CARD_KINDS | _BIRTH | _EMBEDDING_OWNERS | {"name", "addr"}
)  # fmt: skip

_WORD_SPLIT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_TAIL = re.compile(r"[/#:]")
_EMAIL_VALUE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_PHONE_VALUE = re.compile(r"\+?\(?\d[\d\s().\-/]{6,20}\d")
# Six hex pairs with one separator throughout, or three dotted quads; not inside a longer run (a LoRaWAN
# DevEUI, eight pairs, is a fixed sensor's). Pairs of digits joined by "-" or "_" are as often a date and a time
# (Madrid-2024-01-15-10-30-00): those need a hex letter.
_MAC_VALUE = re.compile(
    r"(?<![0-9A-Fa-f])(?<![:\-_][0-9A-Fa-f]{2}[:\-_])[0-9A-Fa-f]{2}([:\-_])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}(?![0-9A-Fa-f]|[:\-_][0-9A-Fa-f])"
)
_DOTTED_MAC = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")  # its ends are checked after
_HEX_LETTER = re.compile(r"[A-Fa-f]")
_HEX_OR_DOT = re.compile(r"[0-9A-Fa-f.]")
# An IMEI or IMSI after its name or scheme (`imei:490154203237518`, `urn:imsi:310150123456789`); a bare run
# of 15 digits is as likely a serial.
_DEVICE_NUMBER = re.compile(r"im[es]i\D{0,3}\d{14,15}", re.IGNORECASE)
# An e-mail address with its "@" spelled out: `ann(at)example.org`, `ann [at] example [dot] org`. Found by its
# marker first, then judged around it, so that a long run of address characters costs no backtracking.
_AT_MARK = re.compile(r"[(\[{]\s*at\s*[)\]}]", re.IGNORECASE)
_DOT = r"(?:\.|\s*[(\[{]\s*dot\s*[)\]}]\s*)"
_SPELLED_DOMAIN = re.compile(rf"\s*[A-Za-z0-9\-]+(?:{_DOT}[A-Za-z0-9\-]+)*{_DOT}[A-Za-z]{{2,}}", re.IGNORECASE)
_LOCAL_PART = re.compile(r"[A-Za-z0-9._%+\-]\s*$")
# A phone number inside a longer text, or an id: only with its international "+" or a "tel:" scheme, since a
# bare run of digits there is as likely a serial or a count.
_PHONE_IN_TEXT = re.compile(r"(?:(?<![\w.+])\+|tel:)\(?\d[\d\s().\-/]{6,20}\d", re.IGNORECASE)
# A number written as text (a reading `123456.789`, a coordinate `52.3702157`, an epoch `1705314600.123`) or an
# IPv4 address (a Device's `ipAddress`): one decimal point, or four dotted groups of at most three digits.
_NUMBER_TEXT = re.compile(r"[+-]?\d+\.\d+|\d{1,3}(?:\.\d{1,3}){3}")
_ISO6709 = re.compile(r"[+-]\d{2,6}(?:\.\d+)?[+-]\d{3,7}(?:\.\d+)?")  # +40.6892-074.0445/ is a place
# Invisible characters, and every kind of dash, that a sender can put in an identifier to break a pattern.
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"
_UNMASK = str.maketrans({**dict.fromkeys(_INVISIBLE), **dict.fromkeys(_DASHES, "-")})
_MASKING = re.compile(f"[{_INVISIBLE}{_DASHES}]")
_DATA_URI = re.compile(r"data:(image|audio|video)/", re.IGNORECASE)
# The first bytes of common image/audio/video files: JPEG, PNG, GIF, WebM/Matroska; MP3 (ID3), Ogg, FLAC.
# RIFF (WAV, or WebP and AVI) and ISO media (MP4, MOV, HEIC; M4A) are told apart by their brand (`_magic_rule`).
_MEDIA_MAGIC = (
    (b"\xff\xd8\xff", "image"),
    (b"\x89PNG", "image"),
    (b"GIF8", "image"),
    (b"\x1a\x45\xdf\xa3", "image"),
    (b"ID3", "voice-audio"),
    (b"OggS", "voice-audio"),
    (b"fLaC", "voice-audio"),
)
_GZIP_MAGIC = b"\x1f\x8b"
_MEDIA_HEAD_BYTES = 18  # what the magic numbers and brands need
_SCANNED_CHARS = 4096  # how much of a long string is checked to be all base64 or hex
# First characters a phone number (+, (, digit), a MAC address (hex digit), a data URI or leading blanks can
# start with.
_VALUE_START = frozenset("+(0123456789abcdefABCDEF \t\r\ndD")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\-_\s]+")  # the URL-safe alphabet too
_HEX = re.compile(r"(?:0x)?[0-9A-Fa-f\s]+")
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}")


@dataclass(frozen=True, slots=True)
class Finding:
    field: str  # the path of the field as sent, dotted
    rule: str  # a key of RULES
    by: str  # "name" or "value"
    detail: str = ""  # what exactly the rule objects to, where its text alone does not say

    def reason(self) -> str:
        why = self.detail or RULES.get(self.rule, _TOO_DEEP_WHY)
        return f"field '{self.field}' is refused by rule '{self.rule}' ({why}; detected by its {self.by})"


def _words(key: str) -> list[str]:
    tail = _TAIL.split(_plain_text(key).rstrip("/#:"))[-1]  # `https://x.org/licensePlate/` names licensePlate
    words = [w.lower() for w in _WORD_SPLIT.findall(tail)]
    if any(len(w) >= 4 and w not in _VOCABULARY for w in words):
        words = [part for w in words for part in _compound(w)]
    return words


# Ordinary words that happen to be two rule words: a plant's `nameplateCapacity` is its rated power.
_NEVER_SPLIT = frozenset({"nameplate", "nameplates", "faceplate", "faceplates", "birthplace", "birthplaces"})


def _compound(word: str) -> tuple[str, ...]:
    """`word` as two words of the rules' vocabulary where it is exactly two of them (`personid`), else itself.
    Callers memoise per field name, so the splits are tried once per name."""
    if word in _VOCABULARY or word in _NEVER_SPLIT:
        return (word,)
    for cut in range(2, len(word) - 1):
        head, rest = word[:cut], word[cut:]
        if head in _VOCABULARY and rest in _VOCABULARY:
            return head, rest
    return (word,)


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


_MEMO_ENTRIES = 65536
_MEMO_KEY_CHARS = 256  # names, types and times are short: a long string is the sender's own, judged each time


def _remember(memo: dict[str, Any], key: str, value: Any) -> None:
    """Keep `value` for `key`, bounded in entries and in their size: the keys are the senders' strings, and
    memoising every one of them would let a client fill the server's memory with long ones."""
    if len(key) > _MEMO_KEY_CHARS:
        return
    if len(memo) >= _MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


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
    _remember(_name_memo, memo_key, found)
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
    if (word_set & _PLATE or joined in _PLATE or _names_registration(words)) and words[-1] not in _PLATE_TRAITS:
        return "licence-plate"
    if word_set & _HOME and (word_set & _PLACE or len(words) == 1):
        return "home-address"
    if word_set & _DEVICE or joined in _DEVICE or _names_radio_address(words):
        return "device-identifier"
    if _names_card_number(words) or (not counting and _names_person_identifier(words, word_set, joined)):
        return "person-identifier"
    if word_set & _BIRTH and not counting:
        return "birth-date"
    return None


def _names_person_identifier(words: list[str], word_set: set[str], joined: str) -> bool:
    return (
        any((w in _PERSON and n in _IDENTIFIER) or (w in _CARD_KINDS and n == "card") for w, n in pairwise(words))
        or bool(word_set & _PERSON_DOCUMENT)
        or "socialsecurity" in joined
    )


def _names_card_number(words: list[str]) -> bool:
    """A card's number or id (`cardNumber`, `cardId`): refused even as a JSON number, which is still the number."""
    return any(w == "card" and n in _IDENTIFIER for w, n in pairwise(words))


def _names_registration(words: list[str]) -> bool:
    """A vehicle's registration, which is its plate: `registration`, `vehicleRegistration`, `regNo`,
    `registrationNumber`; not `registrationDate` nor a device's or a user's registration."""
    if words[-1] == "registration" and (len(words) == 1 or words[-2] in _VEHICLES):
        return True
    return any(w in _REGISTRATION and n in _NUMBER_WORDS for w, n in pairwise(words))


def _names_radio_address(words: list[str]) -> bool:
    """A radio's hardware address (`btAddr`, `bleMac`, `wifiMac`): the device's, and so its carrier's."""
    return any(n in _RADIOS.get(w, ()) for w, n in pairwise(words))


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


def sent_type_refused(name: str, iri: str) -> PersonalDataRefused | None:
    """The refusal of an entity type that names a person as sent, where the @context maps it to an IRI named
    otherwise (`Person` -> https://example.org/t1): the stored document keeps only the IRI, which
    `find_identifying` cannot tell from any other type."""
    if _TAIL.split(iri)[-1] == _TAIL.split(name)[-1] or not _is_person_type(name):
        return None  # the scan of the stored document judges the same name
    return PersonalDataRefused(
        f"entity type '{name}' is refused by rule 'person-record' ({RULES['person-record']}; detected by the type "
        "as sent, which the @context maps to another IRI). Polis counts, it never watches: nothing of this "
        "message was stored",
        field="type",
        rule="person-record",
    )


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
    # Cheap counts decide which of the costlier searches below can match at all.
    mac = value.count(":") >= 5 or value.count("-") >= 5 or value.count("_") >= 5
    dotted = value.count(".") >= 2
    phone = "+" in value or "el:" in value or "EL:" in value
    device = "mei" in value or "MEI" in value or "msi" in value or "MSI" in value
    spelled = ")" in value or "]" in value or "}" in value  # ann(at)example.org
    if (
        "@" not in value
        and value[0] not in _VALUE_START
        and len(value) < MEDIA_MIN_CHARS
        and not (mac or dotted or phone or device or spelled)
    ):
        return None  # the common case (names, IRIs, times): nothing below can match
    media = _media_rule(value)
    if media is not None:
        return media
    if "@" in value and _EMAIL_VALUE.search(value):
        return "e-mail"
    if spelled and _spelled_email(value):
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
    if device and _DEVICE_NUMBER.search(value):
        return "device-identifier"
    stripped = value.strip()
    if _PHONE_VALUE.fullmatch(stripped) and not _DATE_LIKE.search(stripped) and not _NUMBER_TEXT.fullmatch(stripped):
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


def _spelled_email(value: str) -> bool:
    for mark in _AT_MARK.finditer(value):
        if _LOCAL_PART.search(value, max(0, mark.start() - 8), mark.start()) and _SPELLED_DOMAIN.match(
            value[mark.end() : mark.end() + 256]
        ):
            return True
    return False


def _media_rule(value: str) -> str | None:
    """The rule for an image, audio or video in a string: a data URI of such a media type, or the bytes of a
    known media file, in base64 or hex, plain or gzip-compressed, alone or as the data of a data URI of any
    type (`data:application/octet-stream;base64,/9j/...` is a JPEG all the same)."""
    text = value.strip()
    if text[:5].lower() == "data:":
        if _DATA_URI.match(text):
            return "voice-audio" if text[5:10].lower() == "audio" else "image"
        header, _, text = text.partition(",")
        if ";base64" not in header.lower():
            return None  # percent-encoded data: its text was judged as it is
    elif len(text) < MEDIA_MIN_CHARS:
        return None
    encoding = _binary_encoding(text)
    if encoding is None:
        return None
    head = _decoded(text, encoding, _MEDIA_HEAD_BYTES)
    if head[:2] == _GZIP_MAGIC:
        # Only the first bytes of what the stream holds are inflated: a few microseconds, whatever its size.
        try:
            head = zlib.decompressobj(31).decompress(_decoded(text, encoding, 1024), _MEDIA_HEAD_BYTES)
        except zlib.error:
            return None
    return _magic_rule(head)


def _binary_encoding(text: str) -> str | None:
    """The encoding, hex or base64, when the start of `text` (and its first _SCANNED_CHARS) is all of that alphabet:
    a text that merely begins like a media file is not one."""
    if _HEX.fullmatch(text[:36]) and _HEX.fullmatch(text[:_SCANNED_CHARS]):
        return "hex"
    if _BASE64.fullmatch(text[:24]) and _BASE64.fullmatch(text[:_SCANNED_CHARS]):
        return "base64"
    return None


def _decoded(text: str, encoding: str, size: int) -> bytes:
    """The first bytes (about `size`, from the first few characters only) of base64 or hex `text`; b"" if the
    characters do not decode."""
    try:
        if encoding == "hex":
            digits = "".join(text.removeprefix("0x")[: size * 4].split())[: size * 2]
            return bytes.fromhex(digits[: len(digits) // 2 * 2])
        chars = "".join(text[: size * 2].split()).translate(_URL_SAFE)[: -(-size // 3) * 4]
        return base64.b64decode(chars[: len(chars) // 4 * 4])
    except (binascii.Error, ValueError):
        return b""


_URL_SAFE = str.maketrans("-_", "+/")


def _magic_rule(head: bytes) -> str | None:
    for magic, rule in _MEDIA_MAGIC:
        if head.startswith(magic):
            return rule
    if head[:4] == b"RIFF":
        return "image" if head[8:12] in (b"WEBP", b"AVI ") else "voice-audio"
    if head[4:8] == b"ftyp":
        return "voice-audio" if head[8:11] == b"M4A" else "image"
    return None


def find_identifying(body: Any, *, entities: bool = True) -> Finding | None:
    """The first identifying field of a JSON body (compact or expanded, one entity, a fragment or a list).

    A fast pass (memoised key verdicts, no paths) runs on every write; only a body it flags is scanned
    again to name the field. An entity that is a person record is named by its type (or id) after that: a
    field that identifies by itself is the more precise reason. `entities=False`: the body is no entity (a
    subscription), so what its `id` and `type` say is not judged as an entity's (a department named
    `epidemic` subscribes under `urn:ngsi-ld:Subscription:epidemic:`, which is no record of that dataset)."""
    if _hit(body, 0, None):
        return _scan(body, "", 0, None)
    if not entities:
        return None
    return _person_record(body) or _epidemic_record(body)


def _epidemic_record(body: Any) -> Finding | None:
    """The `person-record` finding for an entity (or a list's entity) of the epidemic dataset that is
    not a shape the module stores (polis.epidemic.guard.unstored_shape): the module's promise that nothing in
    it is about a person holds on every write path, not only at its own ingest."""
    if type(body) is list:
        for index, item in enumerate(body):
            found = _epidemic_member(item)
            if found is not None:
                return Finding(f"[{index}].{found.field}", found.rule, found.by, found.detail)
        return None
    return _epidemic_member(body)


_EPIDEMIC_SEGMENT = f":{EPIDEMIC}:"


def held_to_stored_shapes(entity_id: str) -> bool:
    """Whether an entity with this id must be one of the shapes its module stores (the epidemic dataset's),
    so that a fast path that judged only its shape's names once must show it to `find_identifying` too.
    One substring test for every other id; the dataset rule itself only for ids that may be epidemic."""
    return _EPIDEMIC_SEGMENT in entity_id and dataset_of(entity_id) == EPIDEMIC


def _epidemic_member(entity: Any) -> Finding | None:
    if type(entity) is not dict:
        return None
    entity_id = entity.get("id")
    if entity_id is None:
        entity_id = entity.get("@id")
    if type(entity_id) is not str or not held_to_stored_shapes(entity_id):
        return None
    refused = unstored_shape(entity, entity_id)
    # A person record by what the dataset is: whatever it is called, it is not a region's or a flow's count.
    return None if refused is None else Finding(refused[0], "person-record", "name", refused[1])


def _person_record(body: Any) -> Finding | None:
    """The `person-record` finding for an entity (or a list's entity) that stands for one person."""
    if type(body) is list:
        for index, item in enumerate(body):
            member = _person_member(item)
            if member is not None:
                return Finding(f"[{index}].{member}", "person-record", "name")
        return None
    member = _person_member(body)
    return None if member is None else Finding(member, "person-record", "name")


def _person_member(entity: Any) -> str | None:
    """The member (`type`, `@type`, `id` or `@id`) that shows the entity's type, or the type segment of its
    urn:ngsi-ld: id, to be a person (see _PERSON_TYPES). Only the entity's own: a type deeper down is an
    attribute's kind, or a category in a breakdown of counts (`{"type": "pedestrian", "count": 120}`)."""
    if type(entity) is not dict:
        return None
    member = "type" if "type" in entity else "@type"
    kinds = entity.get(member)
    for kind in (kinds,) if type(kinds) is str else kinds if type(kinds) is list else ():
        if type(kind) is str and _is_person_type(kind):
            return member
    member = "id" if "id" in entity else "@id"
    entity_id = entity.get(member)
    if type(entity_id) is str and (entity_id.startswith("urn:ngsi-ld:") or entity_id[:12].lower() == "urn:ngsi-ld:"):
        return member if _is_person_type(entity_id[12:].partition(":")[0]) else None
    return None


def names_a_person(entity_id: str) -> bool:
    """Whether an entity id's type segment (`urn:ngsi-ld:Person:alice`) makes it a person's record."""
    return _person_member({"id": entity_id}) is not None


def is_person_type(name: str) -> bool:
    """Whether an entity type (`Person`, `PersonTrace`, an IRI ending so) makes its entities person records."""
    return _person_member({"type": name}) is not None


_person_type_memo: dict[str, bool] = {}


def _is_person_type(name: str) -> bool:
    known = _person_type_memo.get(name)  # a few types over and over
    if known is None:
        words = _words(name)
        known = bool(words) and (
            words[-1] in _PERSON_TYPES or (len(words) > 1 and words[-2] in _PERSON_NOUNS and words[-1] in _ONE_PERSONS)
        )
        _remember(_person_type_memo, name, known)
    return known


_key_info_memo: dict[str, tuple[int, bool, str | None, str | None, str | None]] = {}
_TIME, _OTHER_MACHINERY = 1, 2  # what _key_info says of a member named like NGSI-LD machinery (0: it is not)


def _key_info(key: str) -> tuple[int, bool, str | None, str | None, str | None]:
    """(opaque: _TIME, _OTHER_MACHINERY or 0, system, rule if the value is text or anything else, rule if it is
    a number, rule if it is a yes/no flag), memoised per key. Only a key that identifies by its own text is
    refused over a flag."""
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
        opaque = _TIME if key in _TIME_MEMBERS else _OTHER_MACHINERY if key in _OPAQUE_MEMBERS else 0
        info = (opaque, system, plain, counted, flagged)
        _remember(_key_info_memo, key, info)
    return info


def _machinery(key: str, value: Any, depth: int) -> bool:
    """Whether a member named like NGSI-LD machinery (`key`, in a dict at `depth`) holds what NGSI-LD puts
    there: a time a date-time string, coordinates nested numbers, @context a document's own (its top, or the
    top of a batch's item or of an attribute). Anything else is the sender's own and is scanned."""
    if key in _TIME_MEMBERS:
        return type(value) is str and _is_date_time(value)
    if key == "coordinates":
        return _coordinates(value, depth + 1)
    return depth <= _CONTEXT_DEPTH


_date_time_memo: dict[str, bool] = {}


def _is_date_time(value: str) -> bool:
    """Memoised: a batch's entities share their createdAt, and often their observedAt."""
    known = _date_time_memo.get(value)
    if known is None:
        known = _DATE_TIME.fullmatch(value) is not None
        _remember(_date_time_memo, value, known)
    return known


def _coordinates(value: Any, depth: int) -> bool:
    """Whether `value` is a list of numbers, or of such lists (a GeoJSON position, line, ring or polygon)."""
    if type(value) is not list or depth > STORED_DEPTH:
        return False
    for item in value:
        kind = type(item)
        if kind is list:
            if not _coordinates(item, depth + 1):
                return False
        elif kind is not float and kind is not int:
            return False
    return True


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
            if opaque:
                # Times are the common case (several per instance): their memo is read here, without a call.
                if opaque == _TIME and type(value) is str and _date_time_memo.get(value):
                    continue
                if _machinery(key, value, depth):
                    continue
            if _hit(value, depth + 1, owner if system else key):
                return True
    elif kind is list:
        # What _list_rule looks at, checked inline first: nearly every list is neither (instances, a type list).
        whole = len(node) > 1 and (type(node[0]) is str or (owner is not None and len(node) >= EMBEDDING_MIN_LENGTH))
        if whole and _list_rule(node, owner) is not None:
            return True
        for value in node:
            if _hit(value, depth + 1, owner):
                return True
    elif kind is str:
        if rule_for_value(node) is not None:
            return True
        return owner is not None and len(node) >= _PACKED_MIN_CHARS and _string_rule(node, owner) is not None
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
            if key in _OPAQUE_MEMBERS and _machinery(key, value, depth):
                continue
            found = _scan(value, field, depth + 1, key if key not in _SYSTEM_MEMBERS else owner)
            if found is not None:
                return found
    elif isinstance(node, list):
        rule = _list_rule(node, owner)
        if rule is not None:
            return Finding(path or "(body)", rule, "value")
        for index, value in enumerate(node):
            # Instances of an attribute (the expanded form keeps them in a list) are named by the attribute.
            instance = isinstance(value, dict) and any(k in value for k in ("type", "value", "object"))
            where = path if instance and path else (f"{path}[{index}]" if path else f"[{index}]")
            found = _scan(value, where, depth + 1, owner)
            if found is not None:
                return found
    elif isinstance(node, str):
        rule = _string_rule(node, owner)
        if rule is not None:
            return Finding(path or "(body)", rule, "value")
    return None


def _list_rule(values: list[Any], owner: str | None) -> str | None:
    """The rule a list breaks as a whole: a float vector under an identity-feature name (an embedding), or
    strings that are refused once joined (base64 media, or an embedding's bytes, cut into short items)."""
    if owner is not None and len(values) >= EMBEDDING_MIN_LENGTH and _is_float_vector(values):
        rule = _feature_rule(owner)
        if rule is not None:
            return rule
    if len(values) > 1 and type(values[0]) is str and all(type(v) is str for v in values):
        return _string_rule("".join(values), owner)
    return None


def rule_for_field_value(name: str, value: str) -> str | None:
    """The rule a string value breaks under the field `name` (as the scan names its owner: the attribute's
    name or IRI): by its value, or as an embedding packed into base64 under an identity-feature name. For
    checks that see one field's value at a time (polis.ngsi_ld.batch_plan's later items)."""
    return _string_rule(value, name)


def _string_rule(value: str, owner: str | None) -> str | None:
    """The rule a string breaks: by its value (`rule_for_value`), or, under an identity-feature name, as an
    embedding packed into base64 bytes."""
    rule = rule_for_value(value)
    if rule is None and owner is not None and len(value) >= _PACKED_MIN_CHARS:
        rule = _feature_rule(owner)
        if rule is not None and not _packed_floats(value):
            rule = None
    return rule


_feature_memo: dict[str, str | None] = {}


def _feature_rule(owner: str) -> str | None:
    """The rule (face or biometric) when `owner` names identity features (a face, a voice, an embedding or a
    descriptor), whose vectors are the identification itself."""
    if owner in _feature_memo:
        return _feature_memo[owner]
    words = set(_words(owner))
    rule = None
    if words & (_FACE | _BIOMETRIC | _VOICE | _EMBEDDING_OWNERS):
        rule = "face" if words & _FACE else "biometric"
    _remember(_feature_memo, owner, rule)
    return rule


# The base64 of EMBEDDING_MIN_LENGTH float32 (64 bytes), unpadded.
_PACKED_MIN_CHARS = -(-EMBEDDING_MIN_LENGTH * 4 * 4 // 3)
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r"
# Identity features are small, finite numbers; random bytes read as floats are almost never all of them.
_FEATURE_RANGE = (1e-12, 1e4)


def _packed_floats(value: str) -> bool:
    """Whether `value` is base64 of at least EMBEDDING_MIN_LENGTH float32 or float64 (either byte order) that
    all look like features: finite, within _FEATURE_RANGE or zero, not all zero. A token or a signature in
    base64 is not (16 random floats all in range: about one in 10^10), nor is text in base64 (ASCII digits
    read as float32 are all in range)."""
    text = value.strip()
    if not _BASE64.fullmatch(text[:_SCANNED_CHARS]):
        return False
    raw = _decoded(text, "base64", _SCANNED_CHARS * 3 // 4)
    if len(raw) < EMBEDDING_MIN_LENGTH * 4 or not raw.translate(None, _TEXT_BYTES):
        return False
    for numbers in (array("f", raw[: len(raw) // 4 * 4]), array("d", raw[: len(raw) // 8 * 8])):
        if len(numbers) < EMBEDDING_MIN_LENGTH:
            continue
        for _ in range(2):
            if _features(numbers):
                return True
            numbers.byteswap()
    return False


def _features(numbers: array[float]) -> bool:
    low, high = _FEATURE_RANGE
    return any(numbers) and all(x == 0.0 or low <= abs(x) <= high for x in numbers)


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
    refuses it: then only the rule's name. An entity id in it that names one person (`urn:ngsi-ld:Person:alice`,
    refused as a person record) is withheld too: a refusal must not keep what it refused."""
    rule = rule_for_value(text)
    if rule is not None:
        return f"[withheld by privacy rule '{rule}']"
    if "rn:ngsi-ld:" not in text.lower():  # no entity id in it: the common case, one scan
        return text
    return _PERSON_ID.sub(_withheld_person_id, text)


# An NGSI-LD entity id inside a path, topic or message: up to the next separator of those.
_PERSON_ID = re.compile(r"urn:ngsi-ld:[^/\s?#&,;'\"]+", re.IGNORECASE)


def _withheld_person_id(match: re.Match[str]) -> str:
    entity_id = match.group(0)
    return "[withheld by privacy rule 'person-record']" if names_a_person(entity_id) else entity_id


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
