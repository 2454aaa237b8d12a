"""NGSI-LD subscriptions (§5.2.12–5.2.15): the typed subscription, parsed and validated from a request body
or a PATCH fragment, and rendered back for a client with that client's @context.

Names are kept expanded (IRIs) so that matching never depends on who asks. `q` is the one member kept as
text, with the context it was written in: a q path mixes attribute and sub-attribute names, which have
no fully expanded spelling, so it is compiled again (with that context) whenever it is loaded.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from polis.domain.errors import BadRequestData, OperationNotSupported, PersonalDataRefused
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.entity_codec import check_attribute_name, validate_entity_id
from polis.ngsi_ld.geoquery import GeoQuery, parse_geoquery
from polis.ngsi_ld.params import parse_datetime, parse_type_selector
from polis.ngsi_ld.q import QExpr, parse_q, pattern_problem
from polis.privacy.refusal import find_identifying, refuse_identifying_strings
from polis.store.base import TypeSelector

ID_PREFIX = "urn:ngsi-ld:Subscription:"
SSE_URI = "urn:polis:sse"  # endpoint.uri of a subscription read through GET /subscriptions/{id}/stream
ACCEPTS = ("application/json", "application/ld+json", "application/geo+json")
FORMATS = ("normalized", "concise", "keyValues")
TRIGGERS = frozenset(
    {"entityCreated", "entityUpdated", "entityDeleted", "attributeCreated", "attributeUpdated", "attributeDeleted"}
)
DEFAULT_TRIGGERS = frozenset({"attributeCreated", "attributeUpdated"})
READ_ONLY = frozenset({"status", "createdAt", "modifiedAt", "deletedAt"})
NOTIFICATION_READ_ONLY = frozenset(
    {"status", "timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess"}
)
UNSUPPORTED = {
    "timeInterval": "periodic subscriptions (timeInterval) are not supported; subscribe to changes instead",
    "temporalQ": "temporalQ applies to context source registrations, which Polis does not have",
    "csf": "csf applies to context source registrations, which Polis does not have",
    "scopeQ": "scopeQ is not supported on subscriptions",
    "datasetId": "datasetId is not supported on subscriptions",
}
# The longest notification.endpoint.timeout a client may ask for, in milliseconds like the member (NGSI-LD
# endpoint timeout). A subscription's notifications go one at a time, so an attempt holds its delivery worker
# (and every notification queued behind it) for up to this long; hours would let one endpoint that accepts and
# never answers pin a worker. A constant like the other bounds on what a client sends here (MAX_URI, MAX_TEXT),
# not a setting: the operator's knob is POLIS_NOTIFY_TIMEOUT_S, the default for an endpoint that names none.
MAX_ENDPOINT_TIMEOUT_MS = 60_000
MAX_URI = 2048
MAX_TEXT = 4096
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]{0,4096}")  # printable ASCII: what an HTTP client sends as it is
_FORBIDDEN_HEADERS = frozenset({"content-length", "host", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class Selector:
    """One item of `entities`: the types (expanded, DNF as in queries) and an id or an idPattern."""

    types: TypeSelector
    id: str | None = None
    id_pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    uri: str
    accept: str = "application/json"
    timeout_ms: float | None = None
    cooldown_ms: float | None = None
    receiver_info: tuple[tuple[str, str], ...] = ()
    notifier_info: tuple[tuple[str, str], ...] = ()

    @property
    def transport(self) -> str:
        """http | mqtt | sse: which transport delivers to this endpoint."""
        if self.uri == SSE_URI:
            return "sse"
        return "mqtt" if self.uri.split(":", 1)[0].lower() in ("mqtt", "mqtts") else "http"


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as Polis holds it: names expanded, times in UTC 'YYYY-MM-DDTHH:MM:SS.ffffffZ'."""

    id: str
    tenant: str
    endpoint: Endpoint
    context: Any  # the @context it was created with: compacts notifications unless jsonldContext is set
    created_at: str
    modified_at: str
    name: str | None = None
    description: str | None = None
    entities: tuple[Selector, ...] = ()
    watched: tuple[str, ...] = ()
    triggers: frozenset[str] = DEFAULT_TRIGGERS
    q_text: str | None = None
    q_context: Any = None
    geo: dict[str, Any] | None = None  # georel, geometry, coordinates as given; geoproperty expanded
    attributes: tuple[str, ...] = ()
    fmt: str = "normalized"
    sys_attrs: bool = False
    show_changes: bool = False
    throttling: float | None = None
    expires_at: str | None = None
    is_active: bool = True
    jsonld_context: str | None = None
    lang: str | None = None
    department: str | None = None  # the creating department, when the request carried one (access control)

    def status(self, now: datetime | None = None) -> str:
        """active | paused | expired (§5.2.12)."""
        if self.expires_at is not None and parse_time(self.expires_at) <= (now or datetime.now(UTC)):
            return "expired"
        return "active" if self.is_active else "paused"

    def compiled_q(self, terms: TermMap) -> QExpr | None:
        return parse_q(self.q_text, terms.expand) if self.q_text is not None else None

    def compiled_geo(self) -> GeoQuery | None:
        if self.geo is None:
            return None
        g = self.geo
        return parse_geoquery(g.get("georel"), g.get("geometry"), g.get("coordinates"), g.get("geoproperty"))

    # -- persistence ------------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        """The JSON document the repository stores (expanded names; inverse of `from_doc`)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "endpoint": {
                "uri": self.endpoint.uri,
                "accept": self.endpoint.accept,
                "timeout": self.endpoint.timeout_ms,
                "cooldown": self.endpoint.cooldown_ms,
                "receiverInfo": [list(p) for p in self.endpoint.receiver_info],
                "notifierInfo": [list(p) for p in self.endpoint.notifier_info],
            },
            "context": self.context,
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "name": self.name,
            "description": self.description,
            "entities": [
                {"types": [list(g) for g in s.types.any_of], "id": s.id, "idPattern": s.id_pattern}
                for s in self.entities
            ],
            "watched": list(self.watched),
            "triggers": sorted(self.triggers),
            "q": self.q_text,
            "qContext": self.q_context,
            "geo": self.geo,
            "attributes": list(self.attributes),
            "format": self.fmt,
            "sysAttrs": self.sys_attrs,
            "showChanges": self.show_changes,
            "throttling": self.throttling,
            "expiresAt": self.expires_at,
            "isActive": self.is_active,
            "jsonldContext": self.jsonld_context,
            "lang": self.lang,
            "department": self.department,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Subscription:
        e = doc["endpoint"]
        return cls(
            id=doc["id"],
            tenant=doc["tenant"],
            endpoint=Endpoint(
                uri=e["uri"],
                accept=e["accept"],
                timeout_ms=e.get("timeout"),
                cooldown_ms=e.get("cooldown"),
                receiver_info=tuple((k, v) for k, v in e.get("receiverInfo") or ()),
                notifier_info=tuple((k, v) for k, v in e.get("notifierInfo") or ()),
            ),
            context=doc.get("context"),
            created_at=doc["createdAt"],
            modified_at=doc["modifiedAt"],
            name=doc.get("name"),
            description=doc.get("description"),
            entities=tuple(
                Selector(TypeSelector(tuple(tuple(g) for g in s["types"])), s.get("id"), s.get("idPattern"))
                for s in doc.get("entities") or ()
            ),
            watched=tuple(doc.get("watched") or ()),
            triggers=frozenset(doc.get("triggers") or DEFAULT_TRIGGERS),
            q_text=doc.get("q"),
            q_context=doc.get("qContext"),
            geo=doc.get("geo"),
            attributes=tuple(doc.get("attributes") or ()),
            fmt=doc.get("format", "normalized"),
            sys_attrs=bool(doc.get("sysAttrs")),
            show_changes=bool(doc.get("showChanges")),
            throttling=doc.get("throttling"),
            expires_at=doc.get("expiresAt"),
            is_active=bool(doc.get("isActive", True)),
            jsonld_context=doc.get("jsonldContext"),
            lang=doc.get("lang"),
            department=doc.get("department"),
        )


@dataclass(slots=True)
class DeliveryStatus:
    """The notification status fields of §5.2.14, kept by the delivery workers."""

    times_sent: int = 0
    times_failed: int = 0
    last_notification: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    last_failure_reason: str | None = None

    @property
    def state(self) -> str | None:
        if self.last_notification is None:
            return None
        return "failed" if self.last_failure is not None and self.last_failure == self.last_notification else "ok"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_subscription_id(prefix: str = ID_PREFIX) -> str:
    return f"{prefix}{uuid.uuid4()}"


def department_id_prefix(department: str) -> str:
    """The ids a department that does not administer `subscriptions` may give its subscriptions. Ids are one
    namespace for all departments, and client-chosen ids say what they watch: were they shared, a 409 where an
    unused id is 201 would tell a department which ids the others chose. A department name is lowercase
    letters, digits, '_' and '-' (polis.access.departments), so the prefix is a valid URI as it is."""
    return f"{ID_PREFIX}{department}:"


def prefix_department(sub_id: str) -> str | None:
    """The department whose namespace (`department_id_prefix`) an id lies in, were one of that name to exist:
    `police` for `urn:ngsi-ld:Subscription:police:raids`; None for an id of no such shape."""
    if not sub_id.startswith(ID_PREFIX):
        return None
    name, colon, _ = sub_id[len(ID_PREFIX):].partition(":")
    return name if colon and name else None


# -- parsing -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """The members being assembled from a body (create) or a fragment over an existing subscription (PATCH)."""

    values: dict[str, Any] = field(default_factory=dict)


def parse_subscription(
    body: Any,
    terms: TermMap,
    context: Any,
    *,
    tenant: str,
    now: datetime,
    department: str | None = None,
    id_prefix: str | None = None,
) -> Subscription:
    """A Subscription from a create request's body (the @context already taken out); BadRequestData naming
    the member and the reason when it is not a valid one. `id_prefix`: the id, chosen or generated, must
    start with it (`department_id_prefix`); None: any URI."""
    if not isinstance(body, dict):
        raise BadRequestData("a subscription must be a JSON object")
    if "type" not in body:
        raise BadRequestData('type: a subscription needs "type": "Subscription"')
    if "notification" not in body:
        raise BadRequestData("notification: a subscription needs a notification member with an endpoint")
    fields = _members(body, terms, context, now, patch=False)  # first: it refuses personal data
    raw_id = body.get("id")
    if raw_id is None:
        sub_id = new_subscription_id(id_prefix or ID_PREFIX)
    else:
        sub_id = _uri(raw_id, "id")
        if id_prefix is not None and not sub_id.startswith(id_prefix):
            raise BadRequestData(f"id: this department's subscription ids start with {id_prefix}, got {_show(raw_id)}")
    stamp = utc_text(now)
    sub = Subscription(
        id=sub_id,
        tenant=tenant,
        endpoint=fields.pop("endpoint"),
        context=context,
        created_at=stamp,
        modified_at=stamp,
        department=department,
        **fields,
    )
    return _checked(sub)


def apply_patch(sub: Subscription, fragment: Any, terms: TermMap, context: Any, *, now: datetime) -> Subscription:
    """§5.8.2: the members in the fragment replace the subscription's; `notification` is merged member by
    member (an endpoint given replaces the endpoint)."""
    if not isinstance(fragment, dict):
        raise BadRequestData("a subscription fragment must be a JSON object")
    if not fragment:
        raise BadRequestData("the subscription fragment is empty")
    fields = _members(fragment, terms, context, now, patch=True, current=sub)  # first: it refuses personal data
    if "id" in fragment and fragment["id"] != sub.id:
        raise BadRequestData(f"id: the fragment's id {_show(fragment['id'])} is not the subscription's {sub.id}")
    updated = replace(sub, modified_at=utc_text(now), **fields)
    return _checked(updated)


def _checked(sub: Subscription) -> Subscription:
    """Rules over several members."""
    if not sub.entities and not sub.watched:
        raise BadRequestData("entities: a subscription needs entities or watchedAttributes (or both)")
    if sub.show_changes and sub.fmt == "keyValues":
        raise BadRequestData("notification.showChanges cannot be true when notification.format is keyValues")
    return sub


def _members(
    body: dict[str, Any],
    terms: TermMap,
    context: Any,
    now: datetime,
    *,
    patch: bool,
    current: Subscription | None = None,
) -> dict[str, Any]:
    """The members of a create body or a PATCH fragment, parsed and validated, after the privacy refusal."""
    _refuse_personal_data(body, context, patch=patch)
    out: dict[str, Any] = {}
    for key, raw in body.items():
        if key in ("id", "@context"):
            continue
        if key == "type":
            if raw != "Subscription":
                raise BadRequestData(f'type must be "Subscription", got {_show(raw)}')
        elif key in READ_ONLY:
            continue  # set by the broker; a client echoing a retrieved subscription back is not an error
        elif key in UNSUPPORTED:
            raise OperationNotSupported(f"{key}: {UNSUPPORTED[key]}")
        elif key == "subscriptionName":
            out["name"] = _text(raw, key, optional=True)
        elif key == "description":
            out["description"] = _text(raw, key, optional=True)
        elif key == "entities":
            out["entities"] = _selectors(raw, terms)
        elif key == "watchedAttributes":
            out["watched"] = _names(raw, terms, key, allow_null=patch)
        elif key == "notificationTrigger":
            out["triggers"] = _triggers(raw)
        elif key == "q":
            if raw is None and patch:
                out["q_text"], out["q_context"] = None, None
                continue
            text = _text(raw, "q")
            assert text is not None
            try:
                parse_q(text, terms.expand)
            except BadRequestData as error:
                raise BadRequestData(f"q: {error.detail}") from None
            out["q_text"], out["q_context"] = text, context
        elif key == "geoQ":
            out["geo"] = _geo(raw, terms) if raw is not None or not patch else None
        elif key == "notification":
            out.update(_notification(raw, terms, current))
        elif key == "throttling":
            out["throttling"] = None if raw is None and patch else _positive(raw, key)
        elif key == "expiresAt":
            out["expires_at"] = None if raw is None and patch else _future(raw, key, now)
        elif key == "isActive":
            if not isinstance(raw, bool):
                raise BadRequestData(f"isActive must be true or false, got {_show(raw)}")
            out["is_active"] = raw
        elif key == "jsonldContext":
            out["jsonld_context"] = None if raw is None and patch else _uri(raw, key)
        elif key == "lang":
            out["lang"] = _text(raw, key, optional=True)
        else:
            raise BadRequestData(f"{key}: unknown subscription member")
    if not patch and "endpoint" not in out:
        raise BadRequestData("notification.endpoint: a subscription needs an endpoint with a uri")
    return out


def _refuse_personal_data(body: dict[str, Any], context: Any, *, patch: bool) -> None:
    """PersonalDataRefused (422, naming the member and the rule, never the value) when a create body or a
    PATCH fragment holds anything identifying, anywhere: subscriptionName, description, q, entity ids and
    patterns, the endpoint URI (its query string too), receiverInfo / notifierInfo, jsonldContext, lang, or
    the @context it is written in (kept as the subscription's context, and as q's). A subscription is stored
    and served back by GET /subscriptions, and its endpoint headers are sent with every notification: the same
    scan as an entity write (polis.privacy.refusal), before any member is parsed, so that nothing of the
    request is stored, changed or quoted back in a 400."""
    found = find_identifying(body, entities=False)
    if found is not None:
        outcome = "nothing of this subscription was changed" if patch else "no subscription was created"
        raise PersonalDataRefused(
            f"subscription: {found.reason()}. Polis counts, it never watches: {outcome}",
            field=found.field,
            rule=found.rule,
        )
    refuse_identifying_strings(context, "@context")  # its keys are terms, not data: judged by value only


def _selectors(raw: Any, terms: TermMap) -> tuple[Selector, ...]:
    if not isinstance(raw, list) or not raw:
        raise BadRequestData(f"entities must be a non-empty array of entity selectors, got {_show(raw)}")
    out = []
    for index, item in enumerate(raw):
        where = f"entities[{index}]"
        if not isinstance(item, dict):
            raise BadRequestData(f"{where} must be an object with a type, got {_show(item)}")
        unknown = set(item) - {"type", "id", "idPattern"}
        if unknown:
            raise BadRequestData(f"{where}: unknown member(s) {', '.join(sorted(unknown))}")
        if not isinstance(item.get("type"), str):
            raise BadRequestData(f"{where}.type is required and must be a string, got {_show(item.get('type'))}")
        try:
            types = parse_type_selector(item["type"], terms)
        except BadRequestData as error:
            raise BadRequestData(f"{where}.{error.detail}") from None
        assert types is not None
        entity_id = None
        if item.get("id") is not None:
            try:
                entity_id = validate_entity_id(item["id"])
            except BadRequestData as error:
                raise BadRequestData(f"{where}.id: {error.detail}") from None
        pattern = item.get("idPattern")
        if pattern is not None:
            _check_pattern(pattern, f"{where}.idPattern")
        # §5.2.33: the id takes precedence over idPattern
        out.append(Selector(types, entity_id, None if entity_id is not None else pattern))
    return tuple(out)


def _check_pattern(pattern: Any, where: str) -> None:
    if not isinstance(pattern, str) or not pattern:
        raise BadRequestData(f"{where} must be a non-empty regular expression string, got {_show(pattern)}")
    if len(pattern) > MAX_TEXT:
        raise BadRequestData(f"{where} is longer than {MAX_TEXT} characters")
    problem = pattern_problem(pattern)
    if problem:
        raise BadRequestData(f"{where} {problem}")


def _names(raw: Any, terms: TermMap, where: str, *, allow_null: bool = False) -> tuple[str, ...]:
    if raw is None and allow_null:
        return ()
    if not isinstance(raw, list) or not raw:
        raise BadRequestData(f"{where} must be a non-empty array of attribute names, got {_show(raw)}")
    names = []
    for name in raw:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_URI:
            raise BadRequestData(f"{where}: {_show(name)} is not an attribute name")
        try:  # the names an entity may have: a watched "a b" could never match anything
            check_attribute_name(name.strip())
        except BadRequestData as bad:
            raise BadRequestData(f"{where}: {bad.detail}") from None
        names.append(terms.expand(name.strip()))
    return tuple(dict.fromkeys(names))


def _triggers(raw: Any) -> frozenset[str]:
    if not isinstance(raw, list) or not raw:
        raise BadRequestData(f"notificationTrigger must be a non-empty array, got {_show(raw)}")
    for item in raw:
        if not isinstance(item, str) or item not in TRIGGERS:  # a list or object item is not hashable
            raise BadRequestData(
                f"notificationTrigger: {_show(item)} is not one of {', '.join(sorted(TRIGGERS))}"
            )
    return frozenset(raw)


def _geo(raw: Any, terms: TermMap) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequestData(f"geoQ must be an object with georel, geometry and coordinates, got {_show(raw)}")
    unknown = set(raw) - {"georel", "geometry", "coordinates", "geoproperty"}
    if unknown:
        raise BadRequestData(f"geoQ: unknown member(s) {', '.join(sorted(unknown))}")
    for key in ("georel", "geometry", "coordinates"):
        if raw.get(key) is None:
            raise BadRequestData(f"geoQ.{key} is required")
    geoproperty = raw.get("geoproperty")
    if geoproperty is not None and (not isinstance(geoproperty, str) or not geoproperty.strip()):
        raise BadRequestData(f"geoQ.geoproperty must be an attribute name, got {_show(geoproperty)}")
    try:
        query = parse_geoquery(raw["georel"], raw["geometry"], raw["coordinates"], geoproperty, terms.expand)
    except BadRequestData as error:
        raise BadRequestData(f"geoQ: {error.detail}") from None
    except (ValueError, TypeError, RecursionError) as error:  # defensive: odd coordinates must stay a 400
        raise BadRequestData(f"geoQ: unusable geometry ({type(error).__name__})") from None
    assert query is not None
    return {
        "georel": raw["georel"],
        "geometry": raw["geometry"],
        "coordinates": raw["coordinates"],
        "geoproperty": query.geoproperty,
    }


def _notification(raw: Any, terms: TermMap, current: Subscription | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequestData(f"notification must be an object with an endpoint, got {_show(raw)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"notification.{key}"
        if key in NOTIFICATION_READ_ONLY:
            continue
        if key == "attributes":
            out["attributes"] = _names(value, terms, where, allow_null=True)
        elif key == "format":
            fmt = "keyValues" if value == "simplified" else value
            if fmt not in FORMATS:
                raise BadRequestData(f"{where} must be one of {', '.join(FORMATS)}, got {_show(value)}")
            out["fmt"] = fmt
        elif key in ("sysAttrs", "showChanges"):
            if not isinstance(value, bool):
                raise BadRequestData(f"{where} must be true or false, got {_show(value)}")
            out["sys_attrs" if key == "sysAttrs" else "show_changes"] = value
        elif key == "endpoint":
            out["endpoint"] = _endpoint(value)
        else:
            raise BadRequestData(f"{where}: unknown notification member")
    if current is None and "endpoint" not in out:
        raise BadRequestData("notification.endpoint: a subscription needs an endpoint with a uri")
    return out


def _endpoint(raw: Any) -> Endpoint:
    if not isinstance(raw, dict):
        raise BadRequestData(f"notification.endpoint must be an object with a uri, got {_show(raw)}")
    unknown = set(raw) - {"uri", "accept", "timeout", "cooldown", "receiverInfo", "notifierInfo"}
    if unknown:
        raise BadRequestData(f"notification.endpoint: unknown member(s) {', '.join(sorted(unknown))}")
    uri = _endpoint_uri(raw.get("uri"))
    accept = raw.get("accept", "application/json")
    if accept not in ACCEPTS:
        raise BadRequestData(f"notification.endpoint.accept must be one of {', '.join(ACCEPTS)}, got {_show(accept)}")
    timeout = None if raw.get("timeout") is None else _timeout(raw["timeout"])
    cooldown = None if raw.get("cooldown") is None else _positive(raw["cooldown"], "notification.endpoint.cooldown")
    receiver = _pairs(raw.get("receiverInfo"), "notification.endpoint.receiverInfo", headers=True)
    notifier = _pairs(raw.get("notifierInfo"), "notification.endpoint.notifierInfo", headers=False)
    for key, value in notifier:
        if key == "MQTT-QoS" and value not in ("0", "1", "2"):
            raise BadRequestData(f"notification.endpoint.notifierInfo: MQTT-QoS must be 0, 1 or 2, got {_show(value)}")
    return Endpoint(uri, accept, timeout, cooldown, receiver, notifier)


def _endpoint_uri(raw: Any) -> str:
    where = "notification.endpoint.uri"
    if not isinstance(raw, str) or not raw:
        raise BadRequestData(f"{where} is required and must be an absolute URI, got {_show(raw)}")
    if len(raw) > MAX_URI or any(c.isspace() or ord(c) < 32 for c in raw):
        raise BadRequestData(f"{where} is not a usable URI: {_show(raw)}")
    if raw == SSE_URI:
        return raw
    try:
        parts = urlsplit(raw)
    except ValueError as error:
        raise BadRequestData(f"{where} is not a valid URI ({error}): {_show(raw)}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "mqtt", "mqtts"):
        raise BadRequestData(
            f"{where}: scheme {_show(parts.scheme or '(none)')} is not supported; use http://, https://, "
            f"mqtt://host:port/topic or {SSE_URI} (a server-sent-events stream)"
        )
    if not parts.hostname:
        raise BadRequestData(f"{where} must be absolute with a host, got {_show(raw)}")
    # Credentials in a webhook URI are shown to every reader of the subscription and sent wherever the host
    # points; receiverInfo headers carry a token instead. MQTT keeps user:password@, its only way to log in.
    if "@" in parts.netloc and not scheme.startswith("mqtt"):
        raise BadRequestData(
            f"{where} must not contain user:password@ credentials; send them as a receiverInfo header "
            "(e.g. Authorization)"
        )
    _check_port(parts.netloc, where)
    if scheme.startswith("mqtt"):
        topic = parts.path.lstrip("/")
        if not topic or "+" in topic or "#" in topic:
            raise BadRequestData(f"{where}: an MQTT endpoint needs a topic without wildcards (mqtt://host:port/topic)")
    return raw


def _check_port(netloc: str, where: str) -> None:
    """A port, when given, must be 1-65535 in ASCII digits: port 0 means "any port" to a socket API, and
    urlsplit's own error ("could not be cast to integer") does not say which rule was broken."""
    host_port = netloc.rpartition("@")[2]
    if host_port.startswith("["):
        host_port = host_port.partition("]")[2]
    _, colon, port = host_port.rpartition(":")
    if not colon or port == "":
        return
    if not port.isascii() or not port.isdigit():
        raise BadRequestData(f"{where}: port {_show(port)} is not a number from 1 to 65535")
    if not 1 <= int(port) <= 65535:
        raise BadRequestData(f"{where}: port {int(port)} is out of range; use a port from 1 to 65535")


def _pairs(raw: Any, where: str, *, headers: bool) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadRequestData(f"{where} must be an array of {{key, value}} objects, got {_show(raw)}")
    out = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"key", "value"}:
            raise BadRequestData(f"{where}: each item must be {{\"key\": ..., \"value\": ...}}, got {_show(item)}")
        key, value = item["key"], item["value"]
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadRequestData(f"{where}: key and value must be strings, got {_show(item)}")
        if headers:
            if not _HEADER_NAME.fullmatch(key) or key.lower() in _FORBIDDEN_HEADERS:
                raise BadRequestData(f"{where}: {_show(key)} cannot be sent as an HTTP header name")
            if not _HEADER_VALUE.fullmatch(value):
                raise BadRequestData(f"{where}: the value of {key} cannot be sent as an HTTP header value")
        out.append((key, value))
    return tuple(out)


def _positive(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0 or raw == float("inf"):
        raise BadRequestData(f"{where} must be a number greater than 0, got {_show(raw)}")
    if raw > 10**9:
        raise BadRequestData(f"{where} is too large: {_show(raw)}")
    return float(raw)


def _timeout(raw: Any) -> float:
    where = "notification.endpoint.timeout"
    timeout = _positive(raw, where)
    if timeout > MAX_ENDPOINT_TIMEOUT_MS:
        raise BadRequestData(
            f"{where} is at most {MAX_ENDPOINT_TIMEOUT_MS} (milliseconds, {MAX_ENDPOINT_TIMEOUT_MS // 1000} s), "
            f"got {_show(raw)}"
        )
    return timeout


def _future(raw: Any, where: str, now: datetime) -> str:
    if not isinstance(raw, str):
        raise BadRequestData(f"{where} must be an ISO 8601 date-time string, got {_show(raw)}")
    moment = parse_datetime(raw, where)
    if moment <= now:
        raise BadRequestData(f"{where} must lie in the future, got {raw}")
    return utc_text(moment)


def _uri(raw: Any, where: str) -> str:
    try:
        return validate_entity_id(raw)
    except BadRequestData:
        raise BadRequestData(f"{where} must be a URI (scheme:rest, at most 512 characters), got {_show(raw)}") from None


def _text(raw: Any, where: str, *, optional: bool = False) -> str | None:
    if raw is None and optional:
        return None
    if not isinstance(raw, str) or not raw:
        raise BadRequestData(f"{where} must be a non-empty string, got {_show(raw)}")
    if len(raw) > MAX_TEXT:
        raise BadRequestData(f"{where} is longer than {MAX_TEXT} characters")
    return raw


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- rendering ---------------------------------------------------------------------------------------


def render(sub: Subscription, status: DeliveryStatus, terms: TermMap, *, sys_attrs: bool = False) -> dict[str, Any]:
    """The subscription as GET returns it, names compacted with the request's context."""
    out: dict[str, Any] = {"id": sub.id, "type": "Subscription"}
    if sub.name is not None:
        out["subscriptionName"] = sub.name
    if sub.description is not None:
        out["description"] = sub.description
    if sub.entities:
        out["entities"] = [_render_selector(s, terms) for s in sub.entities]
    if sub.watched:
        out["watchedAttributes"] = [terms.compact(a) for a in sub.watched]
    out["notificationTrigger"] = sorted(sub.triggers)
    if sub.q_text is not None:
        out["q"] = sub.q_text
    if sub.geo is not None:
        geo = {k: sub.geo[k] for k in ("georel", "geometry", "coordinates")}
        geo["geoproperty"] = terms.compact(sub.geo["geoproperty"])
        out["geoQ"] = geo
    endpoint: dict[str, Any] = {"uri": sub.endpoint.uri, "accept": sub.endpoint.accept}
    if sub.endpoint.timeout_ms is not None:
        endpoint["timeout"] = sub.endpoint.timeout_ms
    if sub.endpoint.cooldown_ms is not None:
        endpoint["cooldown"] = sub.endpoint.cooldown_ms
    if sub.endpoint.receiver_info:
        endpoint["receiverInfo"] = [{"key": k, "value": v} for k, v in sub.endpoint.receiver_info]
    if sub.endpoint.notifier_info:
        endpoint["notifierInfo"] = [{"key": k, "value": v} for k, v in sub.endpoint.notifier_info]
    notification: dict[str, Any] = {}
    if sub.attributes:
        notification["attributes"] = [terms.compact(a) for a in sub.attributes]
    notification.update({"format": sub.fmt, "sysAttrs": sub.sys_attrs, "showChanges": sub.show_changes})
    notification["endpoint"] = endpoint
    if status.state is not None:
        notification["status"] = status.state
    notification["timesSent"] = status.times_sent
    notification["timesFailed"] = status.times_failed
    for key, value in (
        ("lastNotification", status.last_notification),
        ("lastSuccess", status.last_success),
        ("lastFailure", status.last_failure),
    ):
        if value is not None:
            notification[key] = value
    out["notification"] = notification
    if sub.throttling is not None:
        out["throttling"] = _number(sub.throttling)
    if sub.expires_at is not None:
        out["expiresAt"] = sub.expires_at
    out["isActive"] = sub.is_active
    out["status"] = sub.status()
    if sub.jsonld_context is not None:
        out["jsonldContext"] = sub.jsonld_context
    if sub.lang is not None:
        out["lang"] = sub.lang
    if sys_attrs:
        out["createdAt"] = sub.created_at
        out["modifiedAt"] = sub.modified_at
    return out


def _render_selector(selector: Selector, terms: TermMap) -> dict[str, Any]:
    groups = selector.types.any_of
    parts = [";".join(terms.compact(t) for t in g) for g in groups]
    text = ",".join(f"({p})" if ";" in p and len(parts) > 1 else p for p in parts)
    out: dict[str, Any] = {"type": text}
    if selector.id is not None:
        out["id"] = selector.id
    if selector.id_pattern is not None:
        out["idPattern"] = selector.id_pattern
    return out


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value
