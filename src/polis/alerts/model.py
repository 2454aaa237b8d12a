"""The alerts the engine keeps: one `AlertRecord` per incident, with the CAP messages sent about it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

EARTH_RADIUS_M = 6_371_008.8
# The messages an alert keeps (in memory, in its JSON view, on each line of alerts/messages.jsonl): its first (the
# Alert every later message refers to) and the latest ones, this many in all. An alert updated for days would
# otherwise carry every message it ever sent, each log line and each CAP message's references growing with it.
KEPT_MESSAGES = 20


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (longitude, latitude) points."""
    lon1, lat1, lon2, lat2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def iso(at: datetime) -> str:
    return utc_text(at, "Z")


def utc_text(at: datetime, zone: str) -> str:
    """The instant in UTC as xsd:dateTime, `zone` its suffix ("Z", "-00:00"). The year is always four digits:
    strftime's %Y writes the year 1 as "1", which no schema reads as a date."""
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at:%m-%dT%H:%M:%S}{zone}"


def parse_iso(text: str) -> datetime:
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(slots=True)
class Member:
    """One entity (or burst group) whose condition holds, as last seen."""

    key: str  # entity id, or "<groupBy>=<value>" for a burst
    name: str
    point: tuple[float, float] | None  # (longitude, latitude)
    value: float
    threshold: float
    observed_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    # > 0: `point` is a grid cell's centre standing for people's events, this far (metres) from the cell's farthest
    # corner; the circle covers the whole cell (polis.alerts.place). 0: an exact, public place (a sensor's).
    cell_m: float = 0.0


@dataclass(frozen=True, slots=True)
class SentMessage:
    identifier: str
    sent: str  # CAP form, e.g. 2026-11-26T10:00:00-00:00
    msg_type: str  # Alert | Update | Cancel


@dataclass(slots=True)
class AlertRecord:
    id: str  # the NGSI-LD Alert entity id, urn:ngsi-ld:Alert:polis:<rule>:<n>
    tenant: str
    rule_id: str
    rule: dict[str, Any]  # the rule as it was when the alert was raised (what the messages describe)
    onset: datetime  # when the condition started holding
    effective: datetime  # the observation time of the latest message
    expires: datetime
    members: dict[str, Member] = field(default_factory=dict)
    messages: list[SentMessage] = field(default_factory=list)
    status: str = "active"  # active | cancelled | expired (unconfirmed for its validity: its sensors went quiet)
    headline: str = ""
    description: str = ""
    replayed: bool = False  # raised by a backfill (its own lane of state, polis.alerts.evaluate.replay_lane)
    sent_count: int = 0  # messages ever sent about it (they are numbered from 1); `messages` keeps KEPT_MESSAGES

    def add_message(self, message: SentMessage) -> None:
        """Record a message sent; the oldest but the first goes once KEPT_MESSAGES are kept."""
        self.messages.append(message)
        self.sent_count += 1
        self._trim()

    def _trim(self) -> None:
        if len(self.messages) > KEPT_MESSAGES:
            del self.messages[1 : len(self.messages) - KEPT_MESSAGES + 1]

    def kept_index(self, number: int) -> int | None:
        """Where message `number` (from 1) is in `messages`; None if it is no longer kept (or was never sent)."""
        if not 1 <= number <= self.sent_count or not self.messages:
            return None
        if number == 1:
            return 0
        index = len(self.messages) - 1 - (self.sent_count - number)
        return index if index >= 1 else None

    @property
    def msg_type(self) -> str:
        return self.messages[-1].msg_type if self.messages else "Alert"

    def points(self) -> list[tuple[float, float]]:
        return [m.point for m in self.members.values() if m.point is not None]

    def center(self) -> tuple[float, float] | None:
        points = self.points()
        if not points:
            return None
        return (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))

    def circle(self) -> tuple[tuple[float, float], float] | None:
        """(center, radius in metres) covering every member (a coarse member's whole cell) plus the rule's radius."""
        center = self.center()
        if center is None:
            return None
        spread = max(distance_m(center, m.point) + m.cell_m for m in self.members.values() if m.point is not None)
        return center, spread + float(self.rule.get("radiusM", 500.0))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("onset", "effective", "expires"):
            data[key] = iso(data[key])
        data["members"] = [
            {**asdict(m), "point": list(m.point) if m.point else None, "observed_at": iso(m.observed_at)}
            for m in self.members.values()
        ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AlertRecord:
        members = {
            m["key"]: Member(
                m["key"],
                m["name"],
                tuple(m["point"]) if m["point"] else None,  # type: ignore[arg-type]
                m["value"],
                m["threshold"],
                parse_iso(m["observed_at"]),
                m.get("details", {}),
                float(m.get("cell_m", 0.0)),  # 0 in records written before places were coarsened
            )
            for m in data["members"]
        }
        record = cls(
            id=data["id"],
            tenant=data["tenant"],
            rule_id=data["rule_id"],
            rule=data["rule"],
            onset=parse_iso(data["onset"]),
            effective=parse_iso(data["effective"]),
            expires=parse_iso(data["expires"]),
            members=members,
            messages=[SentMessage(**m) for m in data["messages"]],
            status=data["status"],
            headline=data["headline"],
            description=data["description"],
            replayed=bool(data.get("replayed", False)),
            sent_count=int(data.get("sent_count", len(data["messages"]))),  # records before the count: all were kept
        )
        record._trim()  # a record an older Polis logged with every message it sent
        return record
