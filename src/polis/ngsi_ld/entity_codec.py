"""Entities in and out: validate and expand what clients send, compact what the hub returns.

Incoming bodies may be normalized, concise or keyValues-looking (NGSI-LD 1.6+ concise rules): a bare
value is a Property, `{"value": …}` a Property, `{"object": …}` a Relationship, `{"languageMap": …}` a
LanguageProperty (and likewise `vocab`, `json`, `valueList`, `objectList`), and a GeoJSON geometry is a
GeoProperty. Everything becomes the internal shape described in `polis.domain.entity`.

Both directions run once per entity on bulk paths, so they are plain loops over dicts: no JSON-LD
processor, no deep copies (values are shared with the parsed body, which the caller owns).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Any

from polis.domain.entity import (
    ATTRIBUTE_KINDS,
    ENTITY_MEMBERS,
    LOCATION,
    NGSI_LD,
    OBSERVATION_SPACE,
    OPERATION_SPACE,
    RESERVED_ATTRIBUTE_MEMBERS,
    SYSTEM_MEMBERS,
    VALUE_MEMBER,
    Entity,
    Instance,
)
from polis.domain.errors import BadRequestData, InvalidRequest
from polis.ngsi_ld.context import TermMap
from polis.privacy.refusal import sent_name_refused, sent_name_rule, sent_type_refused

__all__ = [
    "FORMATS",
    "MAX_ID_LENGTH",
    "NULL_MARKER",
    "check_attribute_name",
    "compact_entity",
    "compact_instance",
    "expand_attribute_instance",
    "expand_entity",
    "expand_fragment",
    "expand_types",
    "is_null",
    "is_uri",
    "normalize_datetime",
    "validate_dataset_id",
    "validate_entity_id",
]

# NGSI-LD Null: in a value member it means "no such attribute". The reader keeps it as the value it stands
# in; expand_* drop it where it can only mean "absent", and leave the rest to the caller (see is_null).
NULL_MARKER = "urn:ngsi-ld:null"
MAX_ID_LENGTH = 512
MAX_DEPTH = 8  # attribute nesting (properties of properties …)
FORMATS = {"normalized": "normalized", "concise": "concise", "keyValues": "keyValues", "simplified": "keyValues"}
GEO_ATTRIBUTES = frozenset({LOCATION, OBSERVATION_SPACE, OPERATION_SPACE})
GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
SCOPE = NGSI_LD + "scope"

_VALUE_MEMBERS = tuple(dict.fromkeys(VALUE_MEMBER.values()))
_KIND_OF_MEMBER = {member: kind for kind, member in VALUE_MEMBER.items() if kind != "GeoProperty"}
# Members the broker sets itself (or that only appear in notifications): ignored in input.
_IGNORED_MEMBERS = frozenset(
    {"createdAt", "modifiedAt", "deletedAt", "instanceId", "previousValue", "previousObject", "previousLanguageMap"}
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`\x00-\x1f\x7f]+\Z")
# A name (attribute or type, as sent and as its @context expands it) must not hold what the query
# language or a parameter list would read as syntax: ',' separates type=/attrs=/pick=/omit= lists and '|'
# alternatives in type= and q, so a name holding one could never be selected.
_BAD_NAME = re.compile(r"[\s<>\"'=;(),|\x00-\x1f\x7f]")
_BAD_NAME_RULE = "must not contain whitespace or any of <>\"'=;(),|"
_LANG_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*\Z")
_SCOPE = re.compile(r"(?:/[^/\s]+)+\Z")
_MEMO_LIMIT = 1 << 16

_good_names: set[str] = set()  # attribute names and IRIs that passed _usable_name
_good_types: set[str] = set()  # entity type names and IRIs that passed _usable_type
_datetimes: dict[str, str] = {}  # bulk loads repeat the same observedAt many times


# -- small validators ---------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_entity_id(value: Any) -> str:
    """An entity id (body or path): a URI string, scheme:rest, at most 512 characters."""
    if not isinstance(value, str):
        raise BadRequestData(f"an entity id must be a URI string, got {_show(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequestData(f"an entity id must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not _URI.match(value):
        raise BadRequestData(f"entity id {_show(value)} is not a URI (expected scheme:rest, e.g. urn:ngsi-ld:Type:1)")
    return value


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _URI.match(value) is not None


def validate_dataset_id(value: Any, name: str) -> str:
    """A datasetId member of attribute `name`: a URI string."""
    if not is_uri(value):
        raise BadRequestData(f"attribute '{name}': datasetId must be a URI, got {_show(value)}")
    return value  # type: ignore[no-any-return]


def check_attribute_name(name: str) -> None:
    """An attribute name as sent: BadRequestData unless it is a usable name."""
    _check_name(name, None)


def _usable_name(name: str) -> bool:
    """Whether `name` (as sent, or the IRI a @context expands it to) is an attribute name the API can serve
    and query. Good names are memoised: bulk bodies repeat the same few."""
    if name in _good_names:
        return True
    if not name or name[0] == "@" or _BAD_NAME.search(name):
        return False
    if len(_good_names) >= _MEMO_LIMIT:
        _good_names.clear()
    _good_names.add(name)
    return True


def _what(parent: str | None) -> str:
    return f"sub-attribute name in attribute '{parent}'" if parent else "attribute name"


def _check_name(name: str, parent: str | None) -> None:
    if name not in _good_names and not _usable_name(name):
        raise BadRequestData(
            f"invalid {_what(parent)} {_show(name)}: a name must be non-empty, must not start with '@' "
            f"and {_BAD_NAME_RULE}"
        )


def _check_expanded_name(name: str, iri: str, parent: str | None) -> None:
    """The IRI the @context gives a name passes the same rule as the name: a context must not smuggle in
    a name the API refuses when it is sent directly."""
    if iri not in _good_names and not _usable_name(iri):
        raise BadRequestData(
            f"invalid {_what(parent)} {_show(name)}: the @context expands it to {_show(iri)}, and a name must "
            f"be non-empty, must not start with '@' and {_BAD_NAME_RULE}"
        )


def _usable_type(name: str) -> bool:
    """Whether `name` (as sent, or as expanded) is an entity type the API can serve and select; memoised."""
    if name in _good_types:
        return True
    if not name or _BAD_NAME.search(name):
        return False
    if len(_good_types) >= _MEMO_LIMIT:
        _good_types.clear()
    _good_types.add(name)
    return True


def normalize_datetime(value: Any, what: str) -> str:
    """An ISO 8601 date-time -> UTC 'YYYY-MM-DDTHH:MM:SS(.ffffff)Z'; a time without offset is taken as UTC."""
    if isinstance(value, str):
        known = _datetimes.get(value)
        if known is not None:
            return known
        if "T" in value or "t" in value:
            try:
                moment = datetime.fromisoformat(value)
                moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
            except (ValueError, OverflowError):
                pass
            else:
                text = moment.replace(tzinfo=None).isoformat() + "Z"
                if len(_datetimes) >= _MEMO_LIMIT:
                    _datetimes.clear()
                _datetimes[value] = text
                return text
    raise BadRequestData(f"{what} must be an ISO 8601 date-time such as 2024-05-01T10:00:00Z, got {_show(value)}")


def _looks_like_instance(value: dict[str, Any]) -> bool:
    kind = value.get("type")
    if isinstance(kind, str) and kind in ATTRIBUTE_KINDS:
        return True
    return any(member in value for member in _VALUE_MEMBERS)


def _is_geometry(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    return isinstance(kind, str) and kind in GEOMETRY_TYPES and ("coordinates" in value or "geometries" in value)


@functools.cache
def _geometry_validator() -> Callable[[Any], Any]:
    # Imported on first use: geoquery pulls in shapely, which entity parsing without geometry never needs.
    from polis.ngsi_ld.geoquery import validate_geometry

    return validate_geometry


# -- expansion ------------------------------------------------------------------------------------------


def expand_types(value: Any, terms: TermMap) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise BadRequestData(f"the entity type must be a non-empty string or array of strings, got {_show(value)}")
    out: list[str] = []
    for name in names:
        if not _usable_type(name):
            raise BadRequestData(f"invalid entity type {_show(name)}: it must be non-empty and {_BAD_NAME_RULE}")
        iri = terms.expand_type(name)
        if iri != name and not (_usable_type(iri) and iri[0] != "@"):
            raise BadRequestData(
                f"invalid entity type {_show(name)}: the @context expands it to {_show(iri)}, and a type must be "
                f"non-empty, must not start with '@' and {_BAD_NAME_RULE}"
            )
        refused = sent_type_refused(name, iri)
        if refused is not None:
            raise refused
        if iri not in out:
            out.append(iri)
    return out


def _scopes(value: Any) -> list[str]:
    scopes = [value] if isinstance(value, str) else value
    if not isinstance(scopes, list) or not scopes:
        raise BadRequestData(f"scope must be a string or a non-empty array of strings, got {_show(value)}")
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE.match(scope):
            raise BadRequestData(f"scope {_show(scope)} is not a scope path such as /City/District")
    return list(scopes)


class _Reader:
    """Turns one request's attributes into internal instances; holds what every level needs.

    A value member that is the null marker is taken as it is, for any kind (its shape is not checked), and
    `saw_null` tells the caller to look for it. `deletes`: the marker deletes here (only changes a message)."""

    __slots__ = ("deletes", "now", "saw_null", "terms")

    def __init__(self, terms: TermMap, now: str, deletes: bool) -> None:
        self.terms = terms
        self.now = now
        self.deletes = deletes
        self.saw_null = False

    def _null(self, value: Any) -> bool:
        """Whether `value` is the null marker (and then note that one was seen)."""
        if value == NULL_MARKER:
            self.saw_null = True
            return True
        return False

    def attributes(self, body: dict[str, Any], into: dict[str, Any]) -> None:
        for key, raw in body.items():
            if key in ENTITY_MEMBERS:
                continue
            _check_name(key, None)
            iri = self.terms.expand(key)
            if iri not in _good_names:
                _check_expanded_name(key, iri, None)
            rule = sent_name_rule(key, iri, raw)
            if rule is not None:
                raise sent_name_refused(key, rule)
            if iri in into:
                raise BadRequestData(f"attribute '{key}' is given twice (another name in the body also means {iri})")
            into[iri] = self.attribute(key, iri, raw)

    def attribute(self, name: str, iri: str, raw: Any) -> list[Instance]:
        if isinstance(raw, list) and raw and any(isinstance(x, dict) and _looks_like_instance(x) for x in raw):
            if not all(isinstance(x, dict) and _looks_like_instance(x) for x in raw):
                raise BadRequestData(
                    f"attribute '{name}': an array must hold either attribute instances "
                    "(one per datasetId) or plain values, not both"
                )
            instances = [self.instance(name, iri, x, 0) for x in raw]
            if len(instances) > 1:
                _check_datasets(name, instances)
            return instances
        return [self.instance(name, iri, raw, 0)]

    def instance(self, name: str, iri: str, raw: Any, depth: int, *, partial: bool = False) -> Instance:
        if raw is None:
            raise BadRequestData(
                f"attribute '{name}': null is not a valid attribute"
                + (f" (send '{NULL_MARKER}' to delete it)" if self.deletes else "")
            )
        if isinstance(raw, dict) and (partial or _looks_like_instance(raw)):
            return self._instance_object(name, iri, raw, depth, partial)
        # Concise or keyValues input: the bare value.
        if iri in GEO_ATTRIBUTES or _is_geometry(raw):
            inst: Instance = {"type": "GeoProperty", "value": self._geo(name, raw)}
        else:
            inst = {"type": "Property", "value": self._property_value(name, raw)}
        inst["createdAt"] = self.now
        inst["modifiedAt"] = self.now
        return inst

    def _instance_object(self, name: str, iri: str, raw: dict[str, Any], depth: int, partial: bool) -> Instance:
        kind = raw.get("type")
        present = [m for m in _VALUE_MEMBERS if m in raw]
        if kind is None and present:
            if len(present) > 1:
                raise BadRequestData(
                    f"attribute '{name}': give it a type; it has both '{present[0]}' and '{present[1]}'"
                )
            kind = _KIND_OF_MEMBER[present[0]]
            if kind == "Property" and (iri in GEO_ATTRIBUTES or _is_geometry(raw["value"])):
                kind = "GeoProperty"
        elif kind is not None and not (isinstance(kind, str) and kind in ATTRIBUTE_KINDS):
            raise BadRequestData(
                f"attribute '{name}': unknown attribute type {_show(kind)}; expected one of {', '.join(VALUE_MEMBER)}"
            )
        inst: Instance = {}
        if kind is not None:
            inst["type"] = kind
            member = VALUE_MEMBER[kind]
            for other in present:
                if other != member:
                    raise BadRequestData(f"attribute '{name}': a {kind} cannot have '{other}' (it carries '{member}')")
            if member in raw:
                inst[member] = self._value(kind, member, name, raw[member])
            elif not partial:
                article = "an" if member[0] in "aeiou" else "a"
                raise BadRequestData(f"attribute '{name}': a {kind} needs {article} '{member}'")
        for key, value in raw.items():
            if key in RESERVED_ATTRIBUTE_MEMBERS:
                if key != "type" and key not in _KIND_OF_MEMBER and key not in _IGNORED_MEMBERS:
                    inst[key] = self._reserved(name, key, value)
            else:
                self._sub_attribute(name, inst, key, value, depth)
        if kind is not None:
            inst["createdAt"] = self.now
        inst["modifiedAt"] = self.now
        return inst

    def _sub_attribute(self, parent: str, inst: Instance, key: str, raw: Any, depth: int) -> None:
        _check_name(key, parent)
        if depth + 1 >= MAX_DEPTH:
            raise BadRequestData(f"attribute '{parent}': sub-attributes nest more than {MAX_DEPTH} levels deep")
        iri = self.terms.expand(key)
        if iri not in _good_names:
            _check_expanded_name(key, iri, parent)
        rule = sent_name_rule(key, iri, raw)
        if rule is not None:
            raise sent_name_refused(f"{parent}.{key}", rule)
        if iri in inst:
            raise BadRequestData(f"attribute '{parent}': sub-attribute '{key}' is given twice")
        label = f"{parent}.{key}"
        if isinstance(raw, list) and raw and all(isinstance(x, dict) and _looks_like_instance(x) for x in raw):
            if len(raw) != 1:
                raise BadRequestData(f"attribute '{label}': a sub-attribute holds one instance, not {len(raw)}")
            raw = raw[0]
        inst[iri] = self.instance(label, iri, raw, depth + 1)

    def _reserved(self, name: str, key: str, value: Any) -> Any:
        if key == "observedAt":
            return normalize_datetime(value, f"attribute '{name}': observedAt")
        if key == "unitCode":
            if not isinstance(value, str) or not value:
                raise BadRequestData(f"attribute '{name}': unitCode must be a non-empty string, got {_show(value)}")
            return value
        if key == "datasetId":
            return validate_dataset_id(value, name)
        if key == "objectType":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise BadRequestData(
                    f"attribute '{name}': objectType must be a type name or an array of them, got {_show(value)}"
                )
            expanded = [self.terms.expand_type(n) for n in names]
            return expanded[0] if isinstance(value, str) else expanded
        if key == "lang" and not isinstance(value, str):
            raise BadRequestData(f"attribute '{name}': lang must be a language tag, got {_show(value)}")
        return value

    def _value(self, kind: str, member: str, name: str, value: Any) -> Any:
        if value is None:
            raise BadRequestData(f"attribute '{name}': the '{member}' of a {kind} must not be null")
        if self._null(value):
            return value
        if kind == "Property":
            return self._property_value(name, value)
        if kind == "GeoProperty":
            return self._geo(name, value)
        if kind == "Relationship":
            return _objects(name, value)
        if kind == "LanguageProperty":
            return _language_map(name, value)
        if kind == "VocabProperty":
            return self._vocab(name, value)
        if kind in ("ListProperty", "ListRelationship") and not isinstance(value, list):
            raise BadRequestData(f"attribute '{name}': a {kind}'s '{member}' must be an array, got {_show(value)}")
        if kind == "ListRelationship":
            for item in value:
                target = item.get("object") if isinstance(item, dict) else item
                if not is_uri(target):
                    raise BadRequestData(f"attribute '{name}': objectList items must be URIs, got {_show(item)}")
        return value  # JsonProperty and ListProperty hold any JSON

    def _property_value(self, name: str, value: Any) -> Any:
        if self._null(value):
            return value
        if isinstance(value, dict) and "@type" in value and "@value" in value:
            return _typed_literal(name, value)
        return value

    def _geo(self, name: str, value: Any) -> Any:
        if self._null(value):
            return value
        try:
            _geometry_validator()(value)
        except BadRequestData as error:
            raise BadRequestData(f"attribute '{name}': {error.detail}") from None
        return value

    def _vocab(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and value:
            return self.terms.expand_type(value)
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return [self.terms.expand_type(v) for v in value]
        raise BadRequestData(f"attribute '{name}': 'vocab' must be a term or an array of terms, got {_show(value)}")


def _check_datasets(name: str, instances: list[Instance]) -> None:
    """One instance per datasetId. Instances that share one are accepted only when each has its own
    observedAt: that is the temporal representation (an attribute's history), which reuses this parser."""
    seen: dict[str | None, set[str | None]] = {}
    for inst in instances:
        dataset = inst.get("datasetId")
        observed = inst.get("observedAt")
        times = seen.setdefault(dataset, set())
        if times and (observed is None or observed in times or None in times):
            which = f"datasetId {dataset}" if dataset else "no datasetId (the default instance)"
            raise BadRequestData(f"attribute '{name}': two instances have {which}")
        times.add(observed)


def _typed_literal(name: str, value: dict[str, Any]) -> dict[str, Any]:
    kind = value["@type"]
    if isinstance(kind, str) and kind.startswith(NGSI_LD):
        kind = kind[len(NGSI_LD) :]
    literal = value["@value"]
    if kind == "DateTime":
        return {"@type": "DateTime", "@value": normalize_datetime(literal, f"attribute '{name}': the DateTime @value")}
    # an @type that is not a string (a list, an object) is no literal type of NGSI-LD's: the value as sent
    parse: Callable[[str], Any] | None = (
        {"Date": date.fromisoformat, "Time": time.fromisoformat}.get(kind) if isinstance(kind, str) else None
    )
    if parse is None:
        return value
    try:
        if not isinstance(literal, str):
            raise ValueError
        parse(literal)
    except ValueError:
        raise BadRequestData(f"attribute '{name}': {_show(literal)} is not an ISO 8601 {kind}") from None
    return {"@type": kind, "@value": literal}


def _objects(name: str, value: Any) -> Any:
    if is_uri(value):
        return value
    if isinstance(value, list) and value and all(is_uri(v) for v in value):
        return value
    raise BadRequestData(
        f"attribute '{name}': a Relationship's 'object' must be a URI or an array of URIs, got {_show(value)}"
    )


def _language_map(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestData(
            f"attribute '{name}': a languageMap must be an object of language tag -> text, got {_show(value)}"
        )
    for tag, text in value.items():
        if tag != "@none" and not _LANG_TAG.match(tag):
            raise BadRequestData(f"attribute '{name}': {_show(tag)} is not a language tag")
        if not isinstance(text, str) and not (
            isinstance(text, list) and text and all(isinstance(t, str) for t in text)
        ):
            raise BadRequestData(
                f"attribute '{name}': languageMap['{tag}'] must be a string or an array of strings, got {_show(text)}"
            )
    return value


def is_null(instance: Instance) -> bool:
    """Whether an expanded instance is the NGSI-LD null: its kind's value member (value, object, languageMap,
    valueList, objectList, json, vocab) is the null marker. Where it is written it deletes, else it is absent."""
    return bool(instance.get(VALUE_MEMBER.get(instance.get("type", "Property"), "value")) == NULL_MARKER)


def without_null_sub_attributes(instance: Instance) -> Instance:
    """`instance` less its sub-attributes (at any depth) that are the null marker: the instance itself when it
    has none, else a copy (the reader's output may be shared with a batch that is redone)."""
    out = instance
    for key, sub in instance.items():
        if key in RESERVED_ATTRIBUTE_MEMBERS or not isinstance(sub, dict):
            continue
        kept = None if is_null(sub) else without_null_sub_attributes(sub)
        if kept is not sub:
            if out is instance:
                out = dict(instance)
            if kept is None:
                del out[key]
            else:
                out[key] = kept
    return out


def _drop_nulls(attributes: dict[str, Any], *, keep_attributes: bool) -> None:
    """Drop null sub-attributes and, unless `keep_attributes`, null instances (an attribute left with none goes)
    from expanded attributes, in place. Entity members are skipped."""
    for name in [k for k in attributes if k not in ENTITY_MEMBERS]:
        kept = [without_null_sub_attributes(i) for i in attributes[name] if keep_attributes or not is_null(i)]
        if kept:
            attributes[name] = kept
        else:
            del attributes[name]


def expand_entity(
    body: Any, terms: TermMap, now: str, *, require_id_type: bool = True, keep_nulls: bool = False
) -> Entity:
    """A client's entity (normalized, concise or keyValues-looking) -> the internal shape, validated.

    An attribute instance that is the null marker is left out (a new entity has nothing to delete), as is a
    null sub-attribute; with `keep_nulls`, null instances stay for the caller (a batch update deletes with
    them; `is_null` finds them)."""
    if not isinstance(body, dict):
        raise BadRequestData(f"an entity must be a JSON object, got {type(body).__name__}")
    entity: Entity = {}
    if "id" in body or require_id_type:
        if "id" not in body:
            raise BadRequestData("the entity has no 'id'")
        entity["id"] = validate_entity_id(body["id"])
    if "type" in body or require_id_type:
        if "type" not in body:
            raise BadRequestData("the entity has no 'type'")
        entity["type"] = expand_types(body["type"], terms)
    if "scope" in body:
        entity["scope"] = _scopes(body["scope"])
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    reader = _Reader(terms, now, deletes=keep_nulls)
    reader.attributes(body, entity)
    if reader.saw_null:  # the usual entity has none: no second walk
        _drop_nulls(entity, keep_attributes=keep_nulls)
    return entity


def expand_fragment(
    body: Any, terms: TermMap, now: str, *, keep_null_sub_attributes: bool = False
) -> dict[str, list[Instance]]:
    """The attributes of an append/update/merge body, keyed by IRI. Entity members (id, type, scope,
    @context, system attributes) are skipped: checking them is the caller's job.

    Instances that are the null marker are kept (they delete: `is_null` finds them); null sub-attributes are
    dropped unless `keep_null_sub_attributes` (a merge, which combines the instance with the stored one first)."""
    if not isinstance(body, dict):
        raise BadRequestData(f"attributes must be sent as a JSON object, got {type(body).__name__}")
    out: dict[str, list[Instance]] = {}
    reader = _Reader(terms, now, deletes=True)
    reader.attributes(body, out)
    if reader.saw_null and not keep_null_sub_attributes:
        _drop_nulls(out, keep_attributes=True)
    return out


def expand_attribute_instance(name: str, body: Any, terms: TermMap, now: str, *, partial: bool = True) -> Instance:
    """One instance for PATCH (`partial`) or PUT (not `partial`) /entities/{id}/attrs/{attrId}.

    With `partial`, a body without type or value member is a partial instance: it has no 'type' and no
    'createdAt', only the members sent plus 'modifiedAt'. Without it, the body is a whole attribute, read as
    on create: a kind needs its value member, and an object with neither is a concise Property's value.
    An instance that is the null marker is returned as such (it deletes: `is_null`); null sub-attributes are
    dropped (a PATCH combines the body with the stored members before it comes here)."""
    _check_name(name, None)
    iri = terms.expand(name)
    if iri not in _good_names:
        _check_expanded_name(name, iri, None)
    if isinstance(body, list):
        if len(body) != 1:
            raise BadRequestData(f"attribute '{name}': send one instance, not an array of {len(body)}")
        body = body[0]
    reader = _Reader(terms, now, deletes=True)
    instance = reader.instance(name, iri, body, 0, partial=partial)
    return without_null_sub_attributes(instance) if reader.saw_null else instance


# -- compaction -----------------------------------------------------------------------------------------


def _mode(fmt: str) -> str:
    mode = FORMATS.get(fmt)
    if mode is None:
        raise InvalidRequest(f"unsupported representation {fmt!r}; use normalized, concise or keyValues")
    return mode


def _compact_names(value: Any, terms: TermMap) -> Any:
    if isinstance(value, str):
        return terms.compact(value)
    if isinstance(value, list):
        return [terms.compact(v) if isinstance(v, str) else v for v in value]
    return value


def compact_entity(
    entity: Entity,
    terms: TermMap,
    *,
    fmt: str = "normalized",
    sys_attrs: bool = False,
    pick: set[str] | None = None,
    omit: set[str] | None = None,
    lang: str | None = None,
    dataset_ids: tuple[str | None, ...] | None = None,
) -> dict[str, Any]:
    """The internal entity -> the representation a client asked for, names compacted with `terms`.

    `pick`/`omit` hold attribute IRIs and the member names "id", "type" (and "scope"); with `pick`,
    only what it names is returned, id and type included. `dataset_ids` (the `datasetId` parameter) keeps
    only the instances with those datasetIds, None standing for the default instance.
    """
    mode = _mode(fmt)
    if lang == "*":
        lang = None

    def wanted(*keys: str) -> bool:
        return (pick is None or any(k in pick for k in keys)) and (omit is None or not any(k in omit for k in keys))

    out: dict[str, Any] = {}
    if "id" in entity and wanted("id"):
        out["id"] = entity["id"]
    types = entity.get("type")
    if types and wanted("type"):
        out["type"] = terms.compact(types[0]) if len(types) == 1 else [terms.compact(t) for t in types]
    scope = entity.get("scope")
    if scope and wanted("scope", SCOPE):
        out["scope"] = scope[0] if len(scope) == 1 else list(scope)
    if sys_attrs:
        for member in ("createdAt", "modifiedAt", "deletedAt"):
            if member in entity:
                out[member] = entity[member]
    for key, instances in entity.items():
        if key in ENTITY_MEMBERS or not instances:
            continue
        if (pick is not None and key not in pick) or (omit is not None and key in omit):
            continue
        if dataset_ids is not None:
            instances = [i for i in instances if i.get("datasetId") in dataset_ids]
            if not instances:
                continue
        if len(instances) == 1:
            out[terms.compact(key)] = _compact(instances[0], terms, mode, sys_attrs, lang, True)
        else:
            out[terms.compact(key)] = [_compact(i, terms, mode, sys_attrs, lang, False) for i in instances]
    return out


def compact_instance(instance: Instance, terms: TermMap, *, fmt: str = "normalized", sys_attrs: bool = False) -> Any:
    """One attribute instance in the asked representation (a bare value for keyValues)."""
    return _compact(instance, terms, _mode(fmt), sys_attrs, None, True)


def _compact(inst: Instance, terms: TermMap, mode: str, sys_attrs: bool, lang: str | None, bare_ok: bool) -> Any:
    kind = inst.get("type", "Property")
    if lang is not None and kind == "LanguageProperty":
        inst = _in_language(inst, lang)
        kind = "Property"
    if mode == "keyValues":
        value = inst.get(VALUE_MEMBER.get(kind, "value"))
        return _compact_names(value, terms) if kind == "VocabProperty" else value
    out: dict[str, Any] = {}
    for key, value in inst.items():
        if key in RESERVED_ATTRIBUTE_MEMBERS:
            if key in SYSTEM_MEMBERS:
                if sys_attrs:
                    out[key] = value
            elif key == "objectType" or (key == "vocab" and kind == "VocabProperty"):
                out[key] = _compact_names(value, terms)
            else:
                out[key] = value
        else:
            out[terms.compact(key)] = _compact(value, terms, mode, sys_attrs, lang, True)
    return _concise(out, kind, bare_ok) if mode == "concise" else out


def _concise(out: dict[str, Any], kind: str, bare_ok: bool) -> Any:
    """§4.5: drop 'type' where the shape tells the kind; a Property or GeoProperty with nothing else
    becomes its bare value. 'type' stays where dropping it would make the value read back differently."""
    if kind == "Property" and _ambiguous(out.get("value")):
        return out
    if bare_ok and kind in ("Property", "GeoProperty") and len(out) == 2 and "value" in out and "type" in out:
        return out["value"]
    out.pop("type", None)
    return out


def _ambiguous(value: Any) -> bool:
    if isinstance(value, dict):
        return _looks_like_instance(value) or _is_geometry(value)
    if isinstance(value, list):
        return any(isinstance(v, dict) and _looks_like_instance(v) for v in value)
    return False


def _in_language(inst: Instance, lang: str) -> Instance:
    """§4.15: a LanguageProperty read with `lang` becomes a Property holding the best-matching text."""
    texts = inst.get("languageMap")
    tag = _choose_language(texts, lang) if isinstance(texts, dict) else None
    out: Instance = {"type": "Property", "value": texts[tag] if tag is not None and texts else None}
    if tag is not None and tag != "@none":
        out["lang"] = tag
    for key, value in inst.items():
        if key not in ("type", "languageMap"):
            out[key] = value
    return out


def _choose_language(texts: dict[str, Any], lang: str) -> str | None:
    """The first listed language present (exact tag, else same primary language); q-weights are not
    ranked, the list order is the preference. Falls back to @none, then to any text."""
    for wanted in (part.split(";", 1)[0].strip() for part in lang.split(",")):
        if not wanted:
            continue
        if wanted == "*" or wanted in texts:
            return wanted if wanted in texts else next(iter(texts), None)
        primary = wanted.lower().split("-", 1)[0]
        for tag in texts:
            if tag.lower().split("-", 1)[0] == primary:
                return tag
    return "@none" if "@none" in texts else next(iter(texts), None)
