"""Alert rules as declared by users (API body or file), validated on submission.

Four kinds, each with a scope (entity type, ids or id pattern, area), CAP severity/urgency/certainty,
a message template, and the lifecycle knobs every kind shares (hysteresis, minimum duration, cooldown):

- `threshold`: an attribute above/below a value (optionally a fraction of the sensor's free-flow level);
- `forecast`: the attribute's latest forecast crosses the value within N minutes;
- `anomaly`: a detector's score (crowd gathering, sudden speed drop) reaches a level;
- `burst`: events matching a filter, counted per group (e.g. township) in a sliding window, far above
  their expected rate (Poisson tail probability below `maxPValue`).

Errors are `BadRequestData` naming the field and why, so the API answers 400 and `polis alerts load`
prints the same sentence.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from polis.domain.errors import BadRequestData
from polis.ngsi_ld.q import pattern_problem

Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
CapCategory = Literal[
    "Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra", "CBRNE", "Other"
]
AlertCategory = Literal["traffic", "naturalDisaster", "weather", "environment", "health", "security", "agriculture"]

# The placeholders a message template may use; anything else is refused at submission, not at 3 a.m.
TEMPLATE_FIELDS = frozenset(
    {
        "rule",  # the rule's name
        "entity",  # the (first) entity id
        "entityName",  # its `name` attribute, else its id
        "entities",  # how many entities the alert groups
        "attribute",
        "value",  # the observed / predicted value, the score, or the event count
        "threshold",  # the effective threshold (after relativeTo), the level, or the expected count
        "expected",  # the expected count (crowd, burst) or free-flow level
        "score",
        "count",
        "group",  # the burst's group value (e.g. township)
        "observedAt",
        "crossingAt",  # forecast: when the predicted value crosses
    }
)
_SAMPLE: dict[str, object] = {name: 1.5 for name in TEMPLATE_FIELDS} | {
    "entities": 2,
    "count": 2,
    "rule": "r",
    "entity": "urn:x",
    "entityName": "n",
    "attribute": "a",
    "group": "g",
    "observedAt": "t",
    "crossingAt": "t",
}
RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: `$` would let a trailing newline through
# A placeholder's width and precision are bounded before the sample is formatted: Python allocates the whole
# padded string, so `{value:>1000000000000000}` is a MemoryError (a 500) and `{value:.100000000f}` a 100 MB
# message on every alert. 200 is wider than any line of alert text and more digits than a float holds
# (17 significant), so no sensible template is refused; a message (<= 1000 characters) then renders to at
# most a few hundred characters per placeholder.
MAX_FORMAT_WIDTH = 200
# Python's format-spec grammar (3.11): [[fill]align][sign][z][#][0][width][grouping][.precision][type].
# It only pulls out width and precision; the type and the rest are still checked by formatting the sample.
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d*))?.?", re.DOTALL)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
ALERT_TYPE_TERMS = frozenset({"Alert", "https://smartdatamodels.org/dataModel.Alert/Alert"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class Area(_Model):
    """A GeoJSON Polygon, or a Point with `radiusM` (a circle)."""

    type: Literal["Polygon", "Point"]
    coordinates: Any
    radius_m: float | None = Field(default=None, gt=0, le=100_000)

    @model_validator(mode="after")
    def _shape(self) -> Area:
        from shapely.geometry import shape

        if self.type == "Point":
            if self.radius_m is None:
                raise ValueError("a Point area needs radiusM (metres): it is a circle")
            c = self.coordinates
            if not (isinstance(c, list) and len(c) == 2 and all(isinstance(v, int | float) for v in c)):
                raise ValueError("a Point area's coordinates are [longitude, latitude]")
            if not (-180 <= c[0] <= 180 and -90 <= c[1] <= 90):
                raise ValueError("a Point area's coordinates are [longitude, latitude] in degrees")
            return self
        if self.radius_m is not None:
            raise ValueError("radiusM only goes with a Point area")
        try:
            polygon = shape({"type": "Polygon", "coordinates": self.coordinates})
        except Exception as error:  # shapely raises several types for malformed rings
            raise ValueError(f"not a GeoJSON Polygon: {error}") from None
        if polygon.is_empty or not polygon.is_valid:
            raise ValueError("the Polygon is empty or self-intersecting")
        return self


class Backfill(_Model):
    """A span of stored history to run through the rule when it is installed (alerts carry the
    observations' own times): the demo city's recorded crowds, or a rule tried on last month."""

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")

    @model_validator(mode="after")
    def _span(self) -> Backfill:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("'from' and 'to' need a time zone (e.g. 2022-03-14T00:00:00Z)")
        if not timedelta(0) < self.end - self.start <= timedelta(days=400):  # no sum: 9999-12-31 + 400 days overflows
            raise ValueError("'to' must come after 'from', at most 400 days later")
        if self.end > datetime.now(UTC) + timedelta(days=1):  # a day of slack for clocks; the year 9999 overflowed
            raise ValueError("'to' lies in the future: a backfill replays stored history")
        return self


# Bounds on what one rule may list: a rule is evaluated on every write of its type, so a scope of a million ids
# (or of megabyte-long ones) would be a cost on every write, not a mistake to find later.
MAX_SCOPE_IDS = 10_000
MAX_MATCH_TERMS = 32
EntityIdText = Annotated[str, Field(min_length=1, max_length=1024)]


class Scope(_Model):
    type: str = Field(min_length=1, max_length=256)
    ids: tuple[EntityIdText, ...] = Field(default=(), max_length=MAX_SCOPE_IDS)
    id_pattern: str | None = Field(default=None, max_length=1024)
    area: Area | None = None

    @field_validator("type")
    @classmethod
    def _not_alerts(cls, value: str) -> str:
        if value in ALERT_TYPE_TERMS:
            raise ValueError("rules cannot watch Alert entities: each alert written would trigger the rules again")
        return value

    @field_validator("id_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            problem = pattern_problem(value)
            if problem:
                raise ValueError(f"the regular expression {problem}")
        return value


class _RuleBase(_Model):
    id: str | None = None
    name: str = Field(min_length=1, max_length=160)
    scope: Scope
    severity: Severity = "Moderate"
    urgency: Urgency = "Expected"
    certainty: Certainty = "Observed"
    cap_category: CapCategory = "Other"
    alert_category: AlertCategory | None = None
    sub_category: str | None = Field(default=None, max_length=64)
    message: str = Field(default="{rule}: {attribute} is {value:.1f} at {entityName}", max_length=1000)
    instruction: str | None = Field(default=None, max_length=1000)
    # Bounded like every threshold (MAX_THRESHOLD): a band of 1e308 below a threshold of 1 never clears.
    hysteresis: float = Field(default=0.0, ge=0, le=1e12)
    min_duration_s: float = Field(default=0.0, ge=0, le=7 * 86400)
    cooldown_s: float = Field(default=0.0, ge=0, le=7 * 86400)
    update_interval_s: float = Field(default=300.0, ge=0, le=86400)
    validity_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    group_within_m: float = Field(default=0.0, ge=0, le=50_000)
    radius_m: float = Field(default=500.0, gt=0, le=100_000)
    context: str | tuple[str, ...] | None = None
    enabled: bool = True
    backfill: Backfill | None = None

    @field_validator("name", "message", "instruction", "sub_category")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # These go into every CAP message (XML): control characters other than tab and newline are refused
        # here rather than lost from an alert later.
        if value is not None and _CONTROL.search(value):
            raise ValueError("holds a control character (only tab and newline are allowed)")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not RULE_ID.match(value):
            raise ValueError("1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("message", "instruction")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = template_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def template_problem(template: str) -> str | None:
    """Why a message template cannot be rendered safely (None: it can). Rules are checked on submission;
    the alert engine checks again before rendering a rule snapshot kept from before a check existed."""
    try:
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if field not in TEMPLATE_FIELDS:
                known = ", ".join(sorted(TEMPLATE_FIELDS))
                return f"unknown placeholder {{{field}}}; known: {known}"
            if conversion is not None or (spec and "{" in spec):
                return f"placeholder {{{field}}}: only a format spec such as :.1f is allowed"
            problem = _spec_problem(spec)
            if problem:
                return f"placeholder {{{field}}}: {problem}"
        template.format(**_SAMPLE)
    except (ValueError, IndexError, KeyError) as error:
        return str(error)
    return None


def _spec_problem(spec: str | None) -> str | None:
    """Why a placeholder's format spec is refused (None: fine). Nested fields (`{value:{width}}`) are refused
    by the caller; here the width and precision must be at most MAX_FORMAT_WIDTH."""
    if not spec:
        return None
    m = _FORMAT_SPEC.fullmatch(spec)
    if m is None:  # Python would refuse it too; refusing here means no unparsed spec is ever formatted
        return f"':{spec[:40]}' is not a format spec such as :.1f or :>8"
    for part in ("width", "precision"):
        digits = m.group(part)
        # The digits lie in a template of at most 1000 characters: int() is cheap.
        if digits and int(digits) > MAX_FORMAT_WIDTH:
            return f"{part} {digits[:20]} in ':{spec[:40]}' is over {MAX_FORMAT_WIDTH}"
    return None


# The shortest updateIntervalS a rule may be declared with (`rule_problems`); rules saved before it run with a
# warning (polis.alerts.rulebook).
MIN_UPDATE_INTERVAL_S = 60.0
MAX_THRESHOLD = 1e12  # larger than any count, speed or level a city measures; 1e308 would never be crossed


class _Crossing(_Model):
    attribute: str = Field(min_length=1, max_length=256)
    above: float | None = Field(default=None, ge=-MAX_THRESHOLD, le=MAX_THRESHOLD)
    below: float | None = Field(default=None, ge=-MAX_THRESHOLD, le=MAX_THRESHOLD)
    relative_to: Literal["freeFlow"] | None = None

    @model_validator(mode="after")
    def _one_side(self) -> _Crossing:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' and 'below'")
        if self.relative_to is not None and not 0 < (self.above if self.above is not None else self.below or 0) <= 2:
            raise ValueError("with relativeTo the threshold is a fraction of the reference level, in (0, 2]")
        hysteresis = getattr(self, "hysteresis", 0.0)
        if self.relative_to is not None and hysteresis > 2:
            raise ValueError("with relativeTo the hysteresis is a fraction of the reference level too, at most 2")
        return self


class ThresholdRule(_RuleBase, _Crossing):
    kind: Literal["threshold"]


class ForecastRule(_RuleBase, _Crossing):
    kind: Literal["forecast"]
    within_minutes: float = Field(gt=0, le=7 * 1440)
    bound: Literal["value", "lower", "upper"] = "value"
    certainty: Certainty = "Likely"
    urgency: Urgency = "Expected"


class AnomalyRule(_RuleBase):
    kind: Literal["anomaly"]
    attribute: str = Field(min_length=1, max_length=256)
    detector: Literal["crowd-gathering", "speed-drop"]
    level: float = Field(gt=0, le=1e6)  # a score (crowd: standard deviations; speed drop: a fraction)
    timezone: str = "UTC"  # crowd-gathering: the sensors' local time, for the hour-of-week profile
    # Redefining a field drops the base's constraints: the 1000-character cap is restated.
    message: str = Field(
        default="{rule}: score {score:.1f} at {entityName} ({value:.0f} vs {expected:.0f})", max_length=1000
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class BurstRule(_RuleBase):
    kind: Literal["burst"]
    backfill: None = Field(default=None, description="bursts count events as they are created; no backfill")
    match: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=MAX_MATCH_TERMS
    )
    group_by: str = Field(min_length=1, max_length=256)
    time_attribute: str = "dateObserved"
    window_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    min_count: int = Field(default=3, ge=2)
    max_p_value: float = Field(default=0.001, gt=0, le=0.5)
    min_history_days: int = Field(default=7, ge=0, le=3650)  # observed days before the expected rate is trusted
    # Redefining a field drops the base's constraints: the 1000-character cap is restated.
    message: str = Field(
        default="{rule}: {count:.0f} events in {group} within the window (expected {expected:.2f})", max_length=1000
    )
    # Bursts count people's records (911 calls): an update per event would publish each one's time and place
    # (its group) as the count steps up by one; at most one update per 5 minutes, the grid alert times are on
    # (polis.alerts.place.PERSON_TIME_STEP_S).
    update_interval_s: float = Field(default=300.0, ge=300, le=86400)


Rule = Annotated[ThresholdRule | ForecastRule | AnomalyRule | BurstRule, Field(discriminator="kind")]
AnyRule = ThresholdRule | ForecastRule | AnomalyRule | BurstRule


class _Envelope(BaseModel):
    rule: Rule


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc[1:]]  # loc[0] is the envelope's "rule"
    if len(parts) >= 1 and parts[0] in ("threshold", "forecast", "anomaly", "burst"):
        parts = parts[1:]  # the discriminated union's tag
    return ".".join(parts) or "(rule)"


def _whole_rule_field(reason: str) -> str:
    """Checks across fields (one of above/below) name the fields they are about."""
    for names in (("above", "below"), ("relativeTo",)):
        if all(n in reason for n in names):
            return "/".join(names)
    return "(rule)"


def rule_problems(rule: AnyRule) -> list[tuple[str, str]]:
    """(field, reason) for each combination of a rule's fields that cannot work as meant, each field being
    valid alone. Refused on submission (`parse_rule`); a rule saved before a check existed runs, with a
    warning (polis.alerts.rulebook)."""
    problems: list[tuple[str, str]] = []
    update, validity = rule.update_interval_s, rule.validity_s
    if update >= validity:
        # Each CAP message expires validityS after it is sent and the next one goes out updateIntervalS later
        # at the earliest: a receiver would drop the still-open alert between two updates.
        problems.append(
            (
                "updateIntervalS/validityS",
                f"updateIntervalS ({_seconds(rule, 'update_interval_s')}) must be below validityS "
                f"({_seconds(rule, 'validity_s')}): each CAP message expires validityS after it is sent, so a "
                "receiver would see the open alert as expired before its next update",
            )
        )
    if validity < 1:
        # CAP times are whole seconds: `expires` could read as the very second the message takes effect.
        problems.append(("validityS", f"{validity:g} s is under a second, the resolution of CAP times"))
    if update < MIN_UPDATE_INTERVAL_S:
        # Every reading of an alerting sensor would be a CAP message: a sensor sending every second floods every
        # feed reader, the message log and the engine (each message is built, checked against the schema, logged).
        problems.append(
            (
                "updateIntervalS",
                f"{update:g} s is below {MIN_UPDATE_INTERVAL_S:g} s: at most one update a minute goes out per alert",
            )
        )
    if isinstance(rule, BurstRule) and rule.hysteresis > 0:
        # A burst clears as soon as the window's count is no longer one: there is no band to stay inside.
        problems.append(("hysteresis", "burst rules do not use hysteresis: a burst clears when its count does"))
    if isinstance(rule, AnomalyRule) and rule.detector != "crowd-gathering" and rule.timezone != "UTC":
        problems.append(("timezone", f"only the crowd-gathering detector uses a time zone, not {rule.detector}"))
    return problems


def _seconds(rule: AnyRule, name: str) -> str:
    """A duration field's value for an error message, saying when it is the default (the user never wrote it)."""
    value = f"{getattr(rule, name):g} s"
    return value if name in rule.model_fields_set else f"{value}, the default"


def parse_rule(body: Any, *, rule_id: str | None = None, stored: bool = False) -> AnyRule:
    """A validated rule from a JSON object; `rule_id` (from a URL) overrides or fills the body's id.
    `stored`: a rule the hub saved earlier, whose field combinations (`rule_problems`) are not refused."""
    rule = _validated(body, rule_id)
    if not stored:
        require_workable(rule)
    return rule


def require_workable(rule: AnyRule) -> None:
    """BadRequestData listing the rule's `rule_problems`, if it has any."""
    problems = rule_problems(rule)
    if problems:
        raise _refusal(problems)


def _refusal(problems: list[tuple[str, str]]) -> BadRequestData:
    """One 400 for a rule's (field, reason) problems: the first in its detail, all of them in `errors`."""
    first_field, first_reason = problems[0]
    return BadRequestData(
        f"rule field '{first_field}': {first_reason}",
        field=first_field,
        reason=first_reason,
        errors=[{"field": f, "reason": r} for f, r in problems],
    )


def _validated(body: Any, rule_id: str | None) -> AnyRule:
    """The rule with each field checked (types, bounds, templates), not yet their combinations."""
    if not isinstance(body, dict):
        raise BadRequestData("a rule is a JSON object", field="(rule)", reason="a rule is a JSON object")
    kind = body.get("kind")
    if kind not in ("threshold", "forecast", "anomaly", "burst"):
        reason = f"must be one of threshold, forecast, anomaly, burst (got {kind!r})"
        raise BadRequestData(f"rule field 'kind': {reason}", field="kind", reason=reason)
    if rule_id is not None:
        if body.get("id") not in (None, rule_id):
            reason = f"{body['id']!r} does not match the URL's {rule_id!r}"
            raise BadRequestData(f"rule field 'id': {reason}", field="id", reason=reason)
        body = {**body, "id": rule_id}
    try:
        # JSON mode, strict: a rule's fields take their own JSON types only ("yes" is not a boolean, true not a
        # number, "NaN" not a threshold), while arrays still make tuples and strings date-times.
        document = orjson.dumps({"rule": body})
    except TypeError as error:  # a rules file (YAML) can hold what JSON cannot
        reason = f"holds a value that is not JSON: {error}"
        raise BadRequestData(f"a rule {reason}", field="(rule)", reason=reason) from None
    try:
        return _Envelope.model_validate_json(document, strict=True).rule
    except ValidationError as error:
        problems = []
        for e in error.errors():
            reason = e["msg"].removeprefix("Value error, ")
            where = _field(tuple(e["loc"]))
            problems.append((_whole_rule_field(reason) if where == "(rule)" else where, reason))
        raise _refusal(problems) from None


def rule_json(rule: AnyRule) -> dict[str, Any]:
    return rule.model_dump(by_alias=True, exclude_none=True, mode="json")


def parse_rules_document(document: Any, *, stored: bool = False) -> list[AnyRule]:
    """A rules file: a list of rules or {"rules": [...]}; an error names the rule by position. `stored`: as
    `parse_rule`'s (field combinations not refused)."""
    items = document.get("rules") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise BadRequestData('a rules file holds a list of rules, or {"rules": [...]}')
    rules: list[AnyRule] = []
    for index, item in enumerate(items):
        try:
            rules.append(parse_rule(item, stored=stored))
        except BadRequestData as error:
            raise BadRequestData(f"rule #{index + 1}: {error.detail}", **error.extra) from None
        if rules[-1].id is None:
            raise BadRequestData(f"rule #{index + 1}: a rule in a file needs an 'id'", field="id", reason="missing")
    ids = [r.id for r in rules]
    duplicates = sorted({i for i in ids if ids.count(i) > 1 and i is not None})
    if duplicates:
        raise BadRequestData(f"rule ids repeat in the file: {', '.join(duplicates)}", field="id", reason="duplicate")
    return rules


class RulesFileError(Exception):
    """The operator's rules file (POLIS_ALERT_RULES_FILE) cannot be read or holds a rule Polis refuses: the hub
    does not start on it, since serving without some of the rules the city wrote down would be a silent gap."""


def load_rules_file(path: Any, *, stored: bool = False) -> list[AnyRule]:
    """Rules from a YAML (.yaml/.yml, needs PyYAML) or JSON file; `stored` as `parse_rules_document`'s."""
    from pathlib import Path

    import orjson

    file = Path(path)
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise BadRequestData(f"{file}: YAML rules need PyYAML; write the rules as JSON instead") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise BadRequestData(f"{file}: not valid YAML: {error}") from None
    else:
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise BadRequestData(f"{file}: not valid JSON: {error}") from None
    return parse_rules_document(document, stored=stored)


@dataclass(frozen=True, slots=True)
class RuleOwner:
    """Who declared a rule, and the datasets whose entities it may watch (None: every dataset).

    Kept beside the rule, never in it: the hub records it from the request that saved the rule (the declaring
    department and what it may read, `polis.api.routes_alerts`), so a client cannot set it. A rule publishes what
    it watches to every alerts reader and the public CAP feed: it must not watch what its department may not read.
    """

    department: str | None  # None: the operator (POLIS_ALERT_RULES_FILE, `polis alerts load`, the demo)
    datasets: frozenset[str] | None

    def to_json(self) -> dict[str, Any]:
        return {"department": self.department, "datasets": None if self.datasets is None else sorted(self.datasets)}

    @classmethod
    def from_json(cls, data: Any) -> RuleOwner:
        """ValueError when `data` is not what `to_json` writes."""
        if not isinstance(data, dict):
            raise ValueError("an owner is a JSON object")
        department, datasets = data.get("department"), data.get("datasets")
        if department is not None and not isinstance(department, str):
            raise ValueError("an owner's department is a string or null")
        if datasets is not None and not (isinstance(datasets, list) and all(isinstance(d, str) for d in datasets)):
            raise ValueError("an owner's datasets are a list of names or null")
        return cls(department, None if datasets is None else frozenset(datasets))


OPERATOR = RuleOwner(None, None)
