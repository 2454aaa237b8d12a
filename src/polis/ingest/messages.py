"""Sensor messages in: the MQTT topic scheme and payload forms, parsed into typed writes or a refusal.

Topic scheme
------------
    polis/<tenant>/<entityType>/<entityId>      one entity's readings
    polis/<tenant>/<entityType>/_batch          a gateway's readings of many entities

- `<tenant>`: `default` is the default tenant (the one the API uses without an NGSILD-Tenant header);
  any other name is that tenant (1-64 letters, digits, '_' or '-', as the header allows).
- `<entityType>`: a type term of the Smart Data Models Transportation @context (TrafficFlowObserved,
  CrowdFlowObserved, ...), the context every payload is read with; other types are refused.
- `<entityId>`: the entity's id, a URI such as urn:ngsi-ld:CrowdFlowObserved:melbourne-pedestrians:4.

Payloads (UTF-8 JSON, at most `max_payload_bytes`)
-------------------------------------------------
(a) an NGSI-LD attribute fragment, normalized or concise:
        {"peopleCount": {"type": "Property", "value": 5, "observedAt": "2022-10-31T12:00:00Z"}}
(b) Smart Data Models key-values; `dateObserved` (or `observedAt`) is the observedAt of every value:
        {"peopleCount": 5, "dateObserved": "2022-10-31T12:00:00Z"}
(c) a JSON array of (a)/(b) items. Each item may carry its own "id" and "type" (on a `_batch` topic the
    id is required); without them an item is about the topic's entity, so one sensor can also send a
    run of its own readings in one message.
Names are expanded with the Smart Data Models Transportation @context, so `peopleCount` lands on the
same IRI the dataset loaders and the API use. Every value must end up with an observedAt (its own, or
the item's dateObserved/observedAt): a reading without a time is refused, because history is keyed
by it and a redelivered message must be recognisable as the same reading. The item's dateObserved is
also kept as the entity's `dateObserved` attribute, as the dataset loaders do.

Refused (a dead letter with the reason): a payload over the size limit; invalid UTF-8 or JSON; a
topic outside the scheme; an unknown type or an id that is not a URI; a payload id or type that
contradicts the topic; more readings in one message than `max_readings`; a value of the wrong JSON
type for a Smart Data Models attribute whose published schema says number, integer or boolean;
anything the entity codec's validation rejects (`expand_fragment`, the same checks the API applies);
fields named in PRIVACY_FIELDS or found identifying by `polis.privacy.refusal` (by name or by value:
e-mail, phone, media data, embeddings); and, as the API refuses them, entities whose id or type (in the topic
or the payload) stands for one person (`urn:ngsi-ld:Person:alice`, rule `person-record`). Such a dead letter
keeps the reason but not the payload.

Privacy: Polis counts, it never watches. A field whose name (the last segment of its name, case,
'_' and '-' ignored) is in PRIVACY_FIELDS is refused with a reason starting "privacy:", at any depth of
the payload. The list is short on purpose: media (image, photo, video, audio, face) and direct
identifiers of people or their devices (licence plates, phone numbers, e-mail addresses, personal
names, IMEI/IMSI, MAC addresses). `name` is not on it: Smart Data Models use it for the sensor.

Parsing is pure: no I/O, no clock (the caller passes `now`). `load_value_types` (setup, reads the
shipped schemas once) is the only function here that touches files.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from polis.domain.entity import EXACT_INT_LIMIT, VALUE_MEMBER, Instance
from polis.domain.errors import BadRequestData
from polis.domain.json_depth import MAX_DEPTH, STORED_DEPTH, nests_deeper_than
from polis.domain.tenant import tenant_problem
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entity_codec import NULL_MARKER, expand_fragment, normalize_datetime, validate_entity_id
from polis.privacy.refusal import RULES, find_identifying, refusal_reason

TOPIC_ROOT = "polis"
DEFAULT_TENANT_SEGMENT = "default"
BATCH_SEGMENT = "_batch"
TRANSPORTATION_CONTEXT_URL = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
)
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS = 10_000
SHOWN_PAYLOAD_CHARS = 4096  # what a dead letter keeps of the payload

PRIVACY_FIELDS = frozenset(
    {
        # media
        "image", "images", "photo", "picture", "video", "audio", "voice", "face", "faces", "faceid",
        # people and their devices
        "licenseplate", "licenceplate", "plate", "platenumber", "numberplate",
        "phone", "phonenumber", "telephone", "msisdn", "email", "emailaddress",
        "personname", "fullname", "firstname", "lastname", "givenname", "familyname", "surname",
        "imei", "imsi", "macaddress",
    }
)  # fmt: skip

_MEMO_LIMIT = 1 << 16
_NAME_TAIL = re.compile(r"[/#:]")
_ITEM_MEMBERS = frozenset({"id", "type", "@context", "dateObserved", "observedAt"})
_PLAIN = (int, float)  # exact types: bool is not a plain number here
_JSON_TYPES = {"number": "a number", "integer": "an integer", "boolean": "true or false"}


class MessageRejected(Exception):
    """Why a message cannot be stored; becomes a dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)  # not frozen: one is built per reading, and a frozen init costs 5x (gateway messages)
class Reading:
    """What one message (or one item of a batch) writes to one entity."""

    tenant: str
    entity_id: str
    type_iri: str
    attributes: dict[str, list[Instance]]  # expanded names, internal instances, each with observedAt
    date_observed: str | None = None  # the item's dateObserved, normalized (kept as the entity's attribute)
    # Every attribute holds one plain numeric Property observed at `date_observed` (the layout fast path):
    # ingest may merge and store such readings column-wise.
    plain: bool = False


@dataclass(frozen=True, slots=True)
class Topic:
    tenant: str
    type_iri: str
    type_term: str
    entity_id: str | None  # None on a `_batch` topic


def topic_for(tenant: str, type_term: str, entity_id: str) -> str:
    """The topic a sensor publishes on; tenant "" (the default tenant) is `default`."""
    return f"{TOPIC_ROOT}/{tenant or DEFAULT_TENANT_SEGMENT}/{type_term}/{entity_id}"


def shown_payload(payload: bytes) -> str:
    """The payload as a dead letter keeps it: decoded with replacement, bounded in size."""
    text = payload[: SHOWN_PAYLOAD_CHARS * 4].decode("utf-8", errors="replace")
    if len(text) > SHOWN_PAYLOAD_CHARS:
        return text[:SHOWN_PAYLOAD_CHARS] + f"... [{len(payload)} bytes]"
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class MessageParser:
    """Topic + payload -> readings. Holds the resolved @context and the limits; safe to share between threads."""

    def __init__(
        self,
        terms: TermMap,
        known_types: Iterable[str],
        *,
        value_types: Mapping[str, Mapping[str, str]] | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_readings: int = MAX_READINGS,
    ) -> None:
        """`known_types`: type terms (or IRIs) accepted in topics and payloads; `value_types`: per type IRI,
        attribute IRI -> "number" | "integer" | "boolean" (see `load_value_types`)."""
        self.terms = terms
        self.known_type_iris = frozenset(terms.expand_type(t) for t in known_types)
        self.value_types = {t: dict(v) for t, v in (value_types or {}).items()}
        self.max_payload_bytes = max_payload_bytes
        self.max_readings = max_readings
        # Sensors publish on the same few topics again and again: remember each topic's verdict.
        self._topics: dict[str, Topic | MessageRejected] = {}
        # Item layouts (type, keys) whose names the codec accepted with plain numbers as values; see _plain.
        self._shapes: dict[tuple[str, tuple[str, ...]], list[tuple[str, str, bool]]] = {}
        self._good_ids: set[str] = set()
        self._good_types: set[str] = set()  # type names that passed the privacy gate (_refuse_entity)

    # -- topic ---------------------------------------------------------------------------------

    def topic(self, topic: str) -> Topic:
        known = self._topics.get(topic)
        if known is None:
            try:
                known = self._topic(topic)
            except MessageRejected as why:
                known = why
            if len(self._topics) >= _MEMO_LIMIT:
                self._topics.clear()
            self._topics[topic] = known
        if isinstance(known, MessageRejected):
            raise MessageRejected(known.reason)
        return known

    def _topic(self, topic: str) -> Topic:
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != TOPIC_ROOT:
            raise MessageRejected(
                f"wrong topic {_short(topic)}: expected {TOPIC_ROOT}/<tenant>/<entityType>/<entityId> "
                f"or {TOPIC_ROOT}/<tenant>/<entityType>/{BATCH_SEGMENT}"
            )
        _, tenant_part, type_term, id_part = parts
        problem = tenant_problem(tenant_part)
        if problem is not None:
            why, rule = problem
            if rule is not None:  # the reason is kept with the dead letter: it names the rule, not the tenant
                raise MessageRejected(f"privacy: the tenant in the topic {why}")
            raise MessageRejected(f"wrong topic: tenant {_short(tenant_part)} {why}")
        tenant = "" if tenant_part == DEFAULT_TENANT_SEGMENT else tenant_part
        type_iri = self._known_type(type_term, "topic")
        entity_id = None if id_part == BATCH_SEGMENT else self._entity_id(id_part, "topic")
        return Topic(tenant, type_iri, type_term, entity_id)

    def _known_type(self, term: Any, where: str) -> str:
        if not isinstance(term, str) or not term:
            raise MessageRejected(f"invalid entity type {_short(term)} in the {where}: expected a type name")
        iri = self.terms.expand_type(term)
        if term not in self._good_types:
            # Before the known-type check, so a person type is refused as HTTP refuses it (`person-record`),
            # whatever types this parser was given; by the name as sent and by its IRI, as the API does.
            _refuse_entity("type", term, where)
            _refuse_entity("type", iri, where)
            if len(self._good_types) >= _MEMO_LIMIT:
                self._good_types.clear()
            self._good_types.add(term)
        if iri not in self.known_type_iris:
            raise MessageRejected(
                f"unknown entity type {_short(term)} in the {where}: not a type of the Smart Data Models "
                "Transportation @context that MQTT ingest accepts"
            )
        return iri

    def _entity_id(self, value: Any, where: str) -> str:
        if isinstance(value, str) and value in self._good_ids:  # a gateway names the same sensors each time
            return value
        try:
            validate_entity_id(value)
        except BadRequestData as error:
            raise MessageRejected(f"invalid entity id in the {where}: {error.detail}") from None
        # A topic's id skips the payload's scan, and plain readings skip it all: the id is judged here, by its
        # value and as a person record (urn:ngsi-ld:Person:alice), and only an id that passed is remembered.
        _refuse_entity("id", value, where)
        if len(self._good_ids) >= _MEMO_LIMIT:
            self._good_ids.clear()
        self._good_ids.add(value)
        return str(value)

    # -- payload -------------------------------------------------------------------------------

    def parse(self, topic: str, payload: bytes, now: str) -> list[Reading]:
        """The readings of one message, or MessageRejected with the reason (nothing of it is stored)."""
        if len(payload) > self.max_payload_bytes:
            raise MessageRejected(f"payload too large: {len(payload)} bytes, the limit is {self.max_payload_bytes}")
        where = self.topic(topic)
        body = _decode(payload)
        if isinstance(body, dict):
            items: list[Any] = [body]
        elif isinstance(body, list):
            if not body:
                raise MessageRejected("empty batch: the JSON array holds no items")
            if len(body) > self.max_readings:
                raise MessageRejected(f"too many readings: {len(body)} items, at most {self.max_readings} per message")
            items = body
        else:
            raise MessageRejected(f"the payload must be a JSON object or array, got {type(body).__name__}")
        readings: list[Reading] = []
        count = 0
        times: dict[str, str | None] = {}  # a gateway's items share one observation time: normalize it once
        for index, item in enumerate(items):
            try:
                reading = self._item(where, item, now, times)
            except MessageRejected as why:
                if len(items) == 1:
                    raise
                raise MessageRejected(f"item {index}: {why.reason}") from None
            if reading.plain:
                count += len(reading.attributes)
            else:
                count += sum(len(instances) for instances in reading.attributes.values())
            if count > self.max_readings:
                raise MessageRejected(f"too many readings: more than {self.max_readings} values in one message")
            readings.append(reading)
        return readings

    def _item(self, where: Topic, item: Any, now: str, times: dict[str, str | None]) -> Reading:
        if not isinstance(item, dict):
            raise MessageRejected(f"each reading must be a JSON object, got {type(item).__name__}")
        entity_id = self._item_id(where, item)
        type_iri = self._item_type(where, item)
        context = item.get("@context")
        if context is not None and context not in (TRANSPORTATION_CONTEXT_URL, [TRANSPORTATION_CONTEXT_URL]):
            raise MessageRejected(
                f"unsupported @context {_short(context)}: MQTT payloads are read with the Smart Data Models "
                "Transportation @context; leave @context out"
            )
        raw_time = item.get("dateObserved", item.get("observedAt"))
        if type(raw_time) is str and "dateObserved" in item:
            when = times.get(raw_time)
            if when is None:
                when = times[raw_time] = _item_time(item)
        else:
            when = _item_time(item)
        shape_key = (type_iri, tuple(item))
        shape = self._shapes.get(shape_key) if when is not None else None
        if shape is not None:
            plain = _plain(item, shape, when, now)  # type: ignore[arg-type]
            if plain is not None:
                return Reading(where.tenant, entity_id, type_iri, plain, when, plain=True)
        _refuse_personal(item)
        _check_privacy(item, 0)
        body = {k: v for k, v in item.items() if k not in _ITEM_MEMBERS}
        if not body:
            raise MessageRejected("no readings: the payload holds no attributes")
        try:
            attributes = expand_fragment(body, self.terms, now)
        except BadRequestData as error:
            raise MessageRejected(error.detail) from None
        expected = self.value_types.get(type_iri, {})
        for iri, instances in attributes.items():
            for instance in instances:
                self._check_instance(iri, instance, when, expected.get(iri))
        if when is not None and shape is None and all(type(v) in _PLAIN for v in body.values()):
            # Every value passed as a plain number, so no key's schema type is boolean.
            if len(self._shapes) >= _MEMO_LIMIT:
                self._shapes.clear()
            iris = [(k, self.terms.expand(k)) for k in body]
            self._shapes[shape_key] = [(k, iri, expected.get(iri) == "integer") for k, iri in iris]
        return Reading(where.tenant, entity_id, type_iri, attributes, when)

    def _item_id(self, where: Topic, item: dict[str, Any]) -> str:
        if "id" not in item:
            if where.entity_id is None:
                raise MessageRejected(f"a reading on a {BATCH_SEGMENT} topic needs its entity 'id'")
            return where.entity_id
        entity_id = self._entity_id(item["id"], "payload")
        if where.entity_id is not None and entity_id != where.entity_id:
            raise MessageRejected(f"the payload's id {_short(entity_id)} differs from the topic's {where.entity_id}")
        return entity_id

    def _item_type(self, where: Topic, item: dict[str, Any]) -> str:
        if "type" not in item:
            return where.type_iri
        raw = item["type"]
        if isinstance(raw, list) and len(raw) == 1:
            raw = raw[0]
        type_iri = self._known_type(raw, "payload")
        if where.entity_id is not None and type_iri != where.type_iri:
            raise MessageRejected(f"the payload's type {_short(raw)} differs from the topic's {where.type_term}")
        return type_iri

    def _check_instance(self, iri: str, instance: Instance, when: str | None, expected: str | None) -> None:
        name = self.terms.compact(iri)
        kind = instance.get("type", "Property")
        value = instance.get(VALUE_MEMBER.get(kind, "value"))
        if value == NULL_MARKER:
            raise MessageRejected(f"attribute '{name}': deleting attributes is not supported over MQTT")
        if "observedAt" not in instance:
            if when is None:
                raise MessageRejected(
                    f"missing observedAt: attribute '{name}' has none and the message has no dateObserved/observedAt"
                )
            instance["observedAt"] = when
        if expected is not None and kind == "Property" and not _has_json_type(value, expected):
            raise MessageRejected(
                f"wrong value type: '{name}' must be {_JSON_TYPES[expected]} (Smart Data Models schema), "
                f"got {type(value).__name__} {_short(value)}"
            )


def _plain(
    item: dict[str, Any], shape: list[tuple[str, str, bool]], when: str, now: str
) -> dict[str, list[Instance]] | None:
    """The codec's result for an item of a layout it already accepted, when every value is a plain number.

    For a number the codec's output depends on the attribute's name only (a Property holding the number),
    and the names of this layout passed the codec, the privacy check and the schema types once; so the
    instances are built directly. Any other value (a string, an object, a fraction where the schema wants
    an integer) returns None and takes the full path, which gives the verdict and the reason. Equivalence
    is a tested property."""
    out: dict[str, list[Instance]] = {}
    for key, iri, integer in shape:
        value = item[key]
        kind = type(value)
        if kind is int:
            if not -EXACT_INT_LIMIT <= value <= EXACT_INT_LIMIT:  # kept exactly, as a document
                return None
        elif kind is not float or (integer and not value.is_integer()):
            return None
        out[iri] = [{"type": "Property", "value": value, "createdAt": now, "modifiedAt": now, "observedAt": when}]
    return out


def _decode(payload: bytes) -> Any:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise MessageRejected(f"invalid UTF-8 at byte {bad.start}") from None
        raise MessageRejected(f"invalid JSON: {error}") from None
    # As over HTTP (polis.domain.json_depth): deeper failed only in the store, and its whole batch was then
    # retried one message at a time (3,000 readings acknowledged in 54 s instead of 0.5 s).
    if nests_deeper_than(body, raw=payload):
        raise MessageRejected(f"the payload nests arrays and objects more than {MAX_DEPTH} levels deep")
    return body


def _item_time(item: dict[str, Any]) -> str | None:
    """The item-wide observation time: dateObserved (any NGSI-LD form) or observedAt, normalized."""
    raw = item.get("dateObserved", item.get("observedAt"))
    if raw is None:
        return None
    label = "dateObserved" if "dateObserved" in item else "observedAt"
    if isinstance(raw, dict) and "value" in raw:  # normalized: {"type": "Property", "value": ...}
        raw = raw["value"]
    if isinstance(raw, dict) and "@value" in raw:  # typed literal: {"@type": "DateTime", "@value": ...}
        raw = raw["@value"]
    try:
        return normalize_datetime(raw, label)
    except BadRequestData as error:
        raise MessageRejected(error.detail) from None


def _has_json_type(value: Any, expected: str) -> bool:
    if expected == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)


_private_keys: dict[str, bool] = {}


def _is_private(key: str) -> bool:
    known = _private_keys.get(key)
    if known is None:
        tail = _NAME_TAIL.split(key)[-1]
        known = tail.replace("_", "").replace("-", "").lower() in PRIVACY_FIELDS
        if len(_private_keys) >= _MEMO_LIMIT:
            _private_keys.clear()
        _private_keys[key] = known
    return known


def _refuse_entity(member: str, value: str, where: str) -> None:
    """MessageRejected where the entity's `id` or `type` alone is refused by polis.privacy.refusal, with the
    verdict the API gives an entity holding it: by its value (an e-mail, a phone number) or as one person's
    record (`urn:ngsi-ld:Person:alice`, type `PersonTrace`). The reason names the rule, never the value."""
    found = find_identifying({member: value})
    if found is not None:
        why = RULES.get(found.rule, found.rule)
        raise MessageRejected(f"privacy: the entity {member} in the {where} is refused by rule '{found.rule}' ({why})")


def _refuse_personal(item: dict[str, Any]) -> None:
    """polis.privacy.refusal: identifying fields by name and by value (e-mail, phone, media, embeddings)."""
    reason = refusal_reason(item)
    if reason is not None:
        raise MessageRejected(reason)


def _check_privacy(node: Any, depth: int) -> None:
    # The bound of polis.privacy.refusal's scan, which runs first: every level a stored document can have is
    # looked at, and nothing deeper is passed unseen (a name once hid below 16 levels here, 32 there).
    if depth > STORED_DEPTH:
        raise MessageRejected(f"privacy: fields nested more than {STORED_DEPTH} levels deep are not scanned, nor taken")
    if isinstance(node, dict):
        for key, value in node.items():
            if _is_private(key):
                raise MessageRejected(
                    f"privacy: field '{key}' carries media or a personal identifier, which Polis does not take "
                    "(it counts, it never watches)"
                )
            if isinstance(value, dict | list):
                _check_privacy(value, depth + 1)
    elif isinstance(node, list):
        for value in node:
            if isinstance(value, dict):  # lists of numbers (coordinates) hold no names
                _check_privacy(value, depth + 1)


# -- setup (reads the shipped files once) ---------------------------------------------------------


def transportation_type_terms(context_path: Path) -> list[str]:
    """The entity type terms of the shipped Transportation @context (Smart Data Models capitalise types)."""
    context = orjson.loads(context_path.read_bytes())["@context"]
    return sorted(t for t in context if t[:1].isupper() and t != "URL")


def load_value_types(
    models_dir: Path, terms: TermMap, types: Collection[str] | None = None
) -> dict[str, dict[str, str]]:
    """Per type IRI, attribute IRI -> JSON type, for every attribute a shipped Smart Data Models schema
    declares as number, integer or boolean. A model without a schema file simply has no checks."""
    out: dict[str, dict[str, str]] = {}
    for schema_path in sorted(models_dir.glob("*/schema.json")):
        type_term = schema_path.parent.name
        if types is not None and type_term not in types:
            continue
        schema = orjson.loads(schema_path.read_bytes())
        declared: dict[str, str] = {}
        for part in schema.get("allOf", []):
            for name, spec in part.get("properties", {}).items():
                if isinstance(spec, dict) and spec.get("type") in _JSON_TYPES:
                    declared[terms.expand(name)] = spec["type"]
        if declared:
            out[terms.expand_type(type_term)] = declared
    return out
