"""Per rule kind: what a committed change means for the rule, as lifecycle `Signal`s per subject.

A `CompiledRule` is a rule bound to a tenant, with its terms expanded and the state its detector keeps
(free-flow levels, the crowd panel, recent speeds, burst counters). Evaluation runs on the alerts worker
thread, never in the write path.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from polis.access.datasets import DATASETS, dataset_of
from polis.alerts.bursts import BurstCounter
from polis.alerts.lifecycle import Signal, Tracker
from polis.alerts.model import distance_m, parse_iso
from polis.alerts.place import PERSON_TIERS, coarse_place, coarse_time, person_entity
from polis.alerts.rules import (
    OPERATOR,
    AnomalyRule,
    AnyRule,
    BurstRule,
    ForecastRule,
    RuleOwner,
    ThresholdRule,
    rule_json,
)
from polis.crowd.gathering import CrowdParams, HourlyPanel, local_hour
from polis.domain.entity import LOCATION, Entity
from polis.ngsi_ld.context import TermMap
from polis.ngsi_ld.q import client_regex
from polis.store.base import EntityQuery, Store, TemporalQuery, TypeSelector
from polis.traffic.incidents import LOS_LOOP_PREFIX, SpeedDropTracker, free_flow, los_loop_neighbours
from polis.traffic.incidents import nearest_neighbours as nearest

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld"
FREE_FLOW_MIN_READINGS = 12
FREE_FLOW_RETRY = 50  # readings between attempts for a sensor without enough history yet
# How far a reading may lie ahead of the hub's wall clock and still count as an observation. NTP-synced sensors
# are within a second; a logger that buffers and stamps readings, or a gateway with a drifting clock, within a
# minute or two. Anything later is a broken clock or a typo (a year 2099): taken, it would become the sensor's
# latest time, and every real reading after it would look late until the hub restarts.
MAX_AHEAD = timedelta(minutes=5)
# The earliest a reading may be dated and still count: a year 0001 or 1900 is a sensor's unset clock, not an
# observation, and an alert dated then would be published as news (and before 1970 no Unix clock stamped it).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
# How often (by the readings' own clock) a speed-drop rule looks for the neighbours of sensors that joined after its
# neighbour map was built: a look reads every sensor in scope, and a sensor that never maps (no location) must not
# cost that on each of its readings.
NEIGHBOURS_REFRESH = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Observation:
    subject: str  # entity id, or "<group>" for bursts
    name: str
    point: tuple[float, float] | None
    at: datetime
    signal: Signal
    # > 0: `point` is the centre of a coarse cell of this circumradius (metres) standing for people's events,
    # and the alert keeps it for its life (polis.alerts.place); 0: an exact, public place (a sensor's).
    cell_m: float = 0.0


def instance_of(entity: Entity, iri: str) -> dict[str, Any] | None:
    instances = entity.get(iri)
    if not isinstance(instances, list) or not instances:
        return None
    return next((i for i in instances if i.get("datasetId") is None), instances[0])


def number_of(entity: Entity | None, iri: str) -> tuple[float, str | None] | None:
    if entity is None:
        return None
    instance = instance_of(entity, iri)
    if instance is None:
        return None
    value = instance.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value), instance.get("observedAt")


def time_of(entity: Entity, iri: str) -> datetime | None:
    instance = instance_of(entity, iri)
    if instance is None:
        return None
    value = instance.get("value")
    if isinstance(value, dict):
        value = value.get("@value")
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            return None
    observed = instance.get("observedAt")
    return parse_iso(observed) if isinstance(observed, str) else None


def point_of(entity: Entity) -> tuple[float, float] | None:
    instance = instance_of(entity, LOCATION)
    if instance is None:
        return None
    geometry = instance.get("value")
    if not isinstance(geometry, dict):
        return None
    if geometry.get("type") == "Point":
        lon, lat = geometry["coordinates"][:2]
        return float(lon), float(lat)
    try:
        from shapely.geometry import shape

        centroid = shape(geometry).centroid
        return float(centroid.x), float(centroid.y)
    except Exception:  # an odd geometry only costs the alert its location
        return None


class CompiledRule:
    def __init__(
        self,
        tenant: str,
        rule: AnyRule,
        terms: TermMap,
        store: Store,
        datasets_dir: Path,
        suppression_k: int = 10,
        owner: RuleOwner = OPERATOR,
    ) -> None:
        self.tenant = tenant
        self.owner = owner
        # The datasets whose entities the rule watches (None: all): its owner's, narrowed by the engine to what the
        # department may still read before each evaluation (AlertEngine._narrow), as a subscription's notifications are.
        self.datasets: frozenset[str] | None = owner.datasets
        self.suppression_k = suppression_k
        self.rule = rule
        self.json = rule_json(rule)
        self.terms = terms
        self.store = store
        self.datasets_dir = datasets_dir
        self.type_iri = terms.expand(rule.scope.type)
        attribute = getattr(rule, "attribute", None)
        self.attr_iri = terms.expand(attribute) if attribute else None
        self.name_iri = terms.expand("name")
        self.ids = frozenset(rule.scope.ids)
        self.pattern = client_regex(rule.scope.id_pattern) if rule.scope.id_pattern else None
        self.area: Any = None
        if rule.scope.area is not None and rule.scope.area.type == "Polygon":
            from shapely.geometry import shape

            self.area = shape({"type": "Polygon", "coordinates": rule.scope.area.coordinates})
        self.trackers: dict[str, Tracker] = {}
        self.last_at: dict[str, datetime] = {}  # per sensor, the latest reading taken: older ones are late
        self.clock: datetime | None = None  # the latest observation this lane has taken (its "now")
        self.ahead = 0  # readings refused as too far ahead of the wall clock (MAX_AHEAD)
        self.behind = 0  # readings refused as dated before EARLIEST (an unset clock)
        self.membership: dict[str, str] = {}  # subject -> alert id
        # A backfill's own lane (`replay_lane`): history evaluated beside live readings, never through their state
        self.replay: CompiledRule | None = None
        self.replaying = False
        self.free: dict[str, float | None] = {}
        self._free_misses: dict[str, int] = {}
        self.panel: HourlyPanel | None = None
        self.speeds = SpeedDropTracker()
        self.neighbours: dict[str, list[str]] | None = None
        self._mapped: frozenset[str] = frozenset()  # the sensors in scope when `neighbours` was built
        self._mapped_at: datetime | None = None  # the newest reading then
        self.bursts: BurstCounter | None = None
        if isinstance(rule, BurstRule):
            self.bursts = BurstCounter(rule.window_s)
            self.match = {terms.expand(k): v for k, v in rule.match.items()}
            self.group_iri = terms.expand(rule.group_by)
            self.time_iri = terms.expand(rule.time_attribute)

    @property
    def rule_id(self) -> str:
        return str(self.rule.id)

    def replay_lane(self) -> CompiledRule:
        """The same rule with its own clocks, lifecycles and detector state, for a backfill: history replayed
        through the live state would be skipped as late once a live reading came in (one clock per sensor),
        would end live alerts with hours-old readings, and would slide the crowd panel back and forth."""
        lane = CompiledRule(
            self.tenant,
            self.rule,
            self.terms,
            self.store,
            self.datasets_dir,
            suppression_k=self.suppression_k,
            owner=self.owner,
        )
        lane.datasets = self.datasets
        lane.replaying = True
        return lane

    def tracker(self, subject: str) -> Tracker:
        found = self.trackers.get(subject)
        if found is None:
            r = self.rule
            found = self.trackers[subject] = Tracker(r.min_duration_s, r.cooldown_s, r.update_interval_s)
        return found

    # -- scope ------------------------------------------------------------------------------------

    def in_scope(self, entity: Entity) -> bool:
        if self.type_iri not in entity.get("type", ()):
            return False
        eid = entity["id"]
        if self.datasets is not None and dataset_of(eid) not in self.datasets:
            return False  # its department may not read it, and an alert would publish it to every reader
        if self.watches_records and person_entity(eid):
            return False  # an alert on one person's record would publish its id and value: only bursts count them
        if self.ids and eid not in self.ids:
            return False
        if self.pattern is not None and not self.pattern.match(eid):
            return False
        area = self.rule.scope.area
        if area is not None:
            point = point_of(entity)
            if point is None:
                return False
            if area.type == "Point":
                center = (float(area.coordinates[0]), float(area.coordinates[1]))
                return distance_m(center, point) <= float(area.radius_m or 0)
            from shapely.geometry import Point

            return bool(self.area.covers(Point(point)))
        return True

    def name(self, entity: Entity) -> str:
        instance = instance_of(entity, self.name_iri)
        value = instance.get("value") if instance else None
        return value if isinstance(value, str) else str(entity["id"])

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(
        self, changes: list[tuple[Entity, Entity | None]], platform: Any, now: datetime | None = None
    ) -> list[Observation]:
        """The observations in these changes; `now` is the wall clock (readings beyond it + MAX_AHEAD are refused)."""
        rule = self.rule
        now = now or datetime.now(UTC)
        if isinstance(rule, BurstRule):
            found = self._bursts(changes, now)
            self.clock = self.bursts.watermark if self.bursts is not None else None
            return found
        fresh = []
        for entity, previous in changes:
            reading = number_of(entity, str(self.attr_iri))
            if reading is None or reading == number_of(previous, str(self.attr_iri)):
                continue  # no new reading of the watched attribute
            value, observed = reading
            at = parse_iso(observed) if observed else now
            if at > now + MAX_AHEAD:
                self._refuse_ahead(entity["id"], at, now)
                continue
            if at < EARLIEST:
                self._refuse_behind(entity["id"], at)
                continue
            last = self.last_at.get(entity["id"])
            if last is not None and at < last:
                continue  # an old reading arriving late does not move the alert backwards
            self.last_at[entity["id"]] = at
            self.clock = at if self.clock is None else max(self.clock, at)
            fresh.append((entity, value, at))
        if isinstance(rule, ThresholdRule):
            return [o for e, v, at in fresh if (o := self._threshold(rule, e, v, at)) is not None]
        if isinstance(rule, ForecastRule):
            return [o for e, v, at in fresh if (o := self._forecast(rule, e, at, platform)) is not None]
        if rule.detector == "crowd-gathering":
            return self._crowd(rule, fresh)
        return self._speed_drop(rule, fresh)

    def _refuse_ahead(self, entity_id: str, at: datetime, now: datetime) -> None:
        self.ahead += 1
        if self.ahead == 1 or self.ahead % 1000 == 0:  # a broken sensor clock repeats on every reading: log sparingly
            log.warning(
                "rule %s: refused a reading of %s dated %s, ahead of the clock (%s); %d so far",
                self.rule_id, entity_id, at.isoformat(), now.isoformat(), self.ahead,
            )

    def _refuse_behind(self, entity_id: str, at: datetime) -> None:
        self.behind += 1
        if self.behind == 1 or self.behind % 1000 == 0:  # as `_refuse_ahead`: an unset clock repeats
            log.warning(
                "rule %s: refused a reading of %s dated %s, before %s; %d so far",
                self.rule_id, entity_id, at.isoformat(), EARLIEST.date(), self.behind,
            )

    @property
    def watches_records(self) -> bool:
        """Whether the rule alerts on single entities (threshold, forecast, anomaly), not on counts (burst)."""
        return not isinstance(self.rule, BurstRule)

    def person_records_dataset(self) -> str | None:
        """The dataset of people's records (polis.alerts.place) this rule's scope names, or of one it would watch now
        (of its type, ids and idPattern, in the datasets it may watch), if any. A dataset, never a record: a record's
        id can say whose it is, and the department asking may not read it."""
        named = sorted({dataset_of(i) for i in self.ids if person_entity(i)})
        if named:
            return named[0]
        held = tuple(
            sorted(
                name
                for name, info in DATASETS.items()
                if info.entity_tier in PERSON_TIERS and (self.datasets is None or name in self.datasets)
            )
        )
        if not held:
            return None
        query = EntityQuery(
            types=TypeSelector(((self.type_iri,),)),
            ids=tuple(sorted(self.ids)),
            id_pattern=self.rule.scope.id_pattern,
            datasets=held,
            limit=1,
        )
        found = self.store.query(self.tenant, query).entities
        return dataset_of(found[0]["id"]) if found else None

    def person_related(self, subject: str) -> bool:
        """Whether alerts on this subject are about people, so their place and time are coarsened and fixed
        (polis.alerts.place says how that is decided)."""
        return isinstance(self.rule, BurstRule) or person_entity(subject)

    def _observation(self, entity: Entity, at: datetime, signal: Signal) -> Observation:
        return self._placed(entity["id"], self.name(entity), point_of(entity), at, signal)

    def _placed(
        self, subject: str, name: str, point: tuple[float, float] | None, at: datetime, signal: Signal
    ) -> Observation:
        """The observation as published: a person-related subject's place snapped to its grid cell and its time
        floored, a sensor's as they are."""
        if not self.person_related(subject):
            return Observation(subject, name, point, at, signal)
        if point is None:
            return Observation(subject, name, None, coarse_time(at), signal)
        centre, cell_m = coarse_place(point)
        return Observation(subject, name, centre, coarse_time(at), signal, cell_m)

    def _reference(self, entity_id: str) -> float | None:
        """The free-flow level of a sensor, from its stored history (cached)."""
        if entity_id in self.free:
            return self.free[entity_id]
        misses = self._free_misses.get(entity_id, 0)
        if misses % FREE_FLOW_RETRY:
            self._free_misses[entity_id] = misses + 1
            return None
        history = self.store.temporal(
            self.tenant, [entity_id], TemporalQuery(attrs=(str(self.attr_iri),), last_n=4032, max_instances=4032)
        )
        slot = history.get(entity_id, {}).get(str(self.attr_iri))
        values = [
            float(i["value"]) for i in (slot.instances if slot else []) if isinstance(i.get("value"), int | float)
        ]
        if len(values) < FREE_FLOW_MIN_READINGS:
            self._free_misses[entity_id] = misses + 1
            return None
        level = free_flow(np.array(values))
        self.free[entity_id] = level
        return level

    def _crossing(self, rule: ThresholdRule | ForecastRule, entity_id: str) -> tuple[float, bool, float, float] | None:
        """(threshold, upward, hysteresis band, scale), scaled to the sensor's free flow when the rule is
        relative to it; None while that reference is not known yet."""
        scale = 1.0
        if rule.relative_to == "freeFlow":
            reference = self._reference(entity_id)
            if reference is None:
                return None
            scale = reference
        if rule.above is not None:
            return rule.above * scale, True, rule.hysteresis * scale, scale
        return float(rule.below or 0.0) * scale, False, rule.hysteresis * scale, scale

    def _threshold(self, rule: ThresholdRule, entity: Entity, value: float, at: datetime) -> Observation | None:
        crossing = self._crossing(rule, entity["id"])
        if crossing is None:
            return None
        threshold, upward, band, scale = crossing
        if upward:
            signal = Signal(value > threshold, value <= threshold - band, value, threshold)
        else:
            signal = Signal(value < threshold, value >= threshold + band, value, threshold)
        if rule.relative_to == "freeFlow":
            signal.details["expected"] = scale
        return self._observation(entity, at, signal)

    def _forecast(self, rule: ForecastRule, entity: Entity, at: datetime, platform: Any) -> Observation | None:
        forecasts = getattr(platform, "forecasts", None)
        if forecasts is None:
            return None  # no forecasting service in this hub: forecast rules stay silent
        path = None
        for name in (str(self.attr_iri), str(rule.attribute)):
            try:
                path = forecasts.latest(entity["id"], name, self.tenant)
            except Exception:  # the forecaster's failure must not stop the other rules
                log.exception("forecasts.latest failed for %s", entity["id"])
                return None
            if path is not None:
                break
        if path is None or not path.points:
            return None
        crossing = self._crossing(rule, entity["id"])
        if crossing is None:
            return None
        threshold, upward, band, _ = crossing
        horizon = at + timedelta(minutes=rule.within_minutes)
        points = [p for p in path.points if at < _aware(p.valid_at) <= horizon]
        if not points:
            return None
        values = [float(getattr(p, rule.bound)) for p in points]
        if upward:
            hits = [i for i, v in enumerate(values) if v > threshold]
            off = all(v <= threshold - band for v in values)
        else:
            hits = [i for i, v in enumerate(values) if v < threshold]
            off = all(v >= threshold + band for v in values)
        first = hits[0] if hits else int(np.argmax(values) if upward else np.argmin(values))
        details = {"crossingAt": _aware(points[first].valid_at).strftime("%Y-%m-%dT%H:%M:%SZ"), "model": path.model}
        signal = Signal(bool(hits), off, values[first], threshold, details)
        return self._observation(entity, at, signal)

    # -- crowd gathering ------------------------------------------------------------------------------

    def _crowd(self, rule: AnomalyRule, fresh: list[tuple[Entity, float, datetime]]) -> list[Observation]:
        if not fresh:
            return []
        zone = ZoneInfo(rule.timezone)
        newest = max(local_hour(at, zone) for _, _, at in fresh)
        panel = self._panel_for(zone, fresh, newest)
        # A reading older than the window (a new counter's first reading, months old) has no history to be scored
        # against, and its row would be pruned below before it was read.
        oldest = panel.oldest(max(newest, max(panel.rows, default=newest)))
        touched: dict[int, list[tuple[Entity, datetime]]] = {}
        for entity, value, at in fresh:
            if local_hour(at, zone) < oldest:
                continue
            hour = panel.add(entity["id"], at, value)
            if hour is not None:
                touched.setdefault(hour, []).append((entity, at))
        panel.prune(newest)
        found = []
        for hour, entities in sorted(touched.items()):
            row = panel.rows.get(hour)
            if row is None:
                continue
            scores = panel.score_hour(hour)
            levels = panel.alarm_level(hour, rule.level)  # the rule's level is the floor of an adaptive one
            for entity, at in entities:
                column = panel.column[entity["id"]]
                if math.isnan(row[column]):
                    continue  # not this batch's count any more: nothing to say about it
                score = float(scores.score[0, column])
                expected = float(scores.expected[0, column])
                count = float(np.expm1(row[column]))
                people = float(round(count))  # expm1(log1p(83)) is 82.99999999999997: shown as 83 people
                level = float(levels[column])
                if math.isnan(score):
                    signal = Signal(False, True, people, level, {"score": float("nan"), "expected": expected})
                else:
                    # Raised only with more people than expected (`polis.crowd.gathering.rising`, which the
                    # benchmark counts with): it only stops a raise, an open alert ends by the score's hysteresis.
                    on = score >= level and count > expected
                    off = score < level - rule.hysteresis
                    signal = Signal(on, off, people, level, {"score": score, "expected": expected})
                found.append(self._observation(entity, at, signal))
        return found

    def _panel_for(self, zone: ZoneInfo, fresh: list[tuple[Entity, float, datetime]], newest: int) -> HourlyPanel:
        """The crowd panel with a column for every sensor of the batch: loaded at most once a batch (at its latest
        reading: a load at an earlier one would lose readings already added), and otherwise grown by the new
        sensors alone (a reload per new counter re-read every counter's ten weeks)."""
        where = {e["id"]: point_of(e) for e, _, _ in fresh}
        latest = max(at for _, _, at in fresh)
        panel = self.panel
        if panel is None or not panel.rows or newest - max(panel.rows) > 24:
            panel = self.panel = self._load_panel(zone, latest, where)
            return panel
        joined = sorted(s for s in where if s not in panel.column)
        if joined:
            panel.extend(joined, [where[s] for s in joined])
            self._add_history(panel, joined, latest)
        return panel

    def scope_entities(self) -> list[Entity]:
        query = EntityQuery(types=TypeSelector(((self.type_iri,),)), limit=None)
        return [e for e in self.store.query(self.tenant, query).entities if self.in_scope(e)]

    def _load_panel(
        self, zone: ZoneInfo, at: datetime, batch: dict[str, tuple[float, float] | None] | None = None
    ) -> HourlyPanel:
        """A panel of every sensor in scope and of the batch's (`batch`: id -> place), with their stored history."""
        params = CrowdParams()
        where = {**(batch or {}), **{e["id"]: point_of(e) for e in self.scope_entities()}}
        sensors = sorted(where)
        panel = HourlyPanel(sensors, zone, params, [where[s] for s in sensors])
        self._add_history(panel, sensors, at)
        return panel

    def _add_history(self, panel: HourlyPanel, sensors: list[str], at: datetime) -> None:
        """The stored readings of these sensors over the panel's window up to `at`."""
        start = at - timedelta(hours=panel.p.history_hours + 1)
        query = TemporalQuery(
            attrs=(str(self.attr_iri),), timerel="between", time_at=start, end_time_at=at, max_instances=10**7
        )
        for entity_id, attrs in self.store.temporal(self.tenant, sensors, query).items():
            slot = attrs.get(str(self.attr_iri))
            for instance in slot.instances if slot else []:
                value = instance.get("value")
                if isinstance(value, int | float):
                    panel.add(entity_id, parse_iso(instance["observedAt"]), float(value))

    # -- sudden speed drops ---------------------------------------------------------------------------

    def _speed_drop(self, rule: AnomalyRule, fresh: list[tuple[Entity, float, datetime]]) -> list[Observation]:
        if not fresh:
            return []
        for entity, value, at in fresh:
            self.speeds.add(entity["id"], at, value)
        if self._neighbours_stale(fresh):
            self.neighbours = self._neighbour_map()
            self._mapped_at = max((at for _, _, at in fresh), default=self._mapped_at)
        assert self.neighbours is not None
        found = []
        for entity, value, at in fresh:
            near = self.neighbours.get(entity["id"], [])
            free = {n: level for n in [entity["id"], *near] if (level := self._reference(n)) is not None}
            score = self.speeds.score(entity["id"], at, free, near)
            if score is None:
                continue
            on, off = score >= rule.level, score < rule.level - rule.hysteresis
            details = {"score": score, "expected": free.get(entity["id"], float("nan"))}
            found.append(self._observation(entity, at, Signal(on, off, value, rule.level, details)))
        return found

    def _neighbours_stale(self, fresh: list[tuple[Entity, float, datetime]]) -> bool:
        """Whether the neighbour map is still to be built, or a sensor it has not seen has come (a sensor added
        after the rule: without this it, and the sensors around it, were never compared), at most once a
        NEIGHBOURS_REFRESH of the readings' time."""
        if self.neighbours is None or self._mapped_at is None:
            return True
        if all(e["id"] in self._mapped for e, _, _ in fresh):
            return False
        return max(at for _, _, at in fresh) >= self._mapped_at + NEIGHBOURS_REFRESH

    def _neighbour_map(self) -> dict[str, list[str]]:
        entities = self.scope_entities()
        self._mapped = frozenset(e["id"] for e in entities)
        mapped: dict[str, list[str]] = {}
        if any(e["id"].startswith(LOS_LOOP_PREFIX) for e in entities):
            try:
                mapped = los_loop_neighbours(self.datasets_dir)
            except OSError:
                log.warning("Los-loop road graph not found under %s; using nearest sensors", self.datasets_dir)
        points = {e["id"]: p for e in entities if e["id"] not in mapped and (p := point_of(e)) is not None}
        mapped.update(nearest(points))
        return mapped

    # -- bursts ---------------------------------------------------------------------------------------------

    def prime_bursts(self) -> None:
        """Count the events already stored, so the expected rate starts from the hub's history."""
        assert self.bursts is not None
        events = sorted(
            (item for e in self.scope_entities() if (item := self._event(e)) is not None), key=lambda x: x[1]
        )
        for group, at, point in events:
            if group is None:
                self.bursts.note_day(at)
            else:
                self.bursts.add(group, at, point)

    def _event(self, entity: Entity) -> tuple[str | None, datetime, tuple[float, float] | None] | None:
        at = time_of(entity, self.time_iri)
        if at is None:
            return None
        for iri, wanted in self.match.items():
            instance = instance_of(entity, iri)
            if instance is None or str(instance.get("value")) != wanted:
                return (None, at, None)  # outside the filter; still shows the day was observed
        instance = instance_of(entity, self.group_iri)
        group = instance.get("value") if instance else None
        return (str(group) if group is not None else None, at, point_of(entity))

    def _bursts(self, changes: list[tuple[Entity, Entity | None]], now: datetime) -> list[Observation]:
        rule = self.rule
        assert isinstance(rule, BurstRule) and self.bursts is not None
        counter = self.bursts
        touched = set()
        for entity, previous in changes:
            if previous is not None:
                continue  # an event counts once, when it is created
            event = self._event(entity)
            if event is None:
                continue
            group, at, point = event
            if at > now + MAX_AHEAD:  # a call typed as 2099 would move the window past every real one
                self._refuse_ahead(entity["id"], at, now)
                continue
            if at < EARLIEST:
                self._refuse_behind(entity["id"], at)
                continue
            if group is None:
                counter.note_day(at)
                continue
            counter.add(group, at, point)
            touched.add(group)
        if counter.watermark is None:
            return []
        # Groups with an alert are re-read at the new watermark so that they clear when the window moves on.
        groups = touched | {g for g in self.membership if g in counter.times}
        found = []
        for group in sorted(groups):
            reading = counter.reading(group)
            enough = counter.observed_days >= rule.min_history_days
            # Events are about people (911 calls): a burst is raised only on at least k of them, and a count
            # below the suppression threshold is never released (NaN: null in JSON, "suppressed" in CAP).
            floor = max(rule.min_count, self.suppression_k)
            on = enough and reading.count >= floor and reading.p_value <= rule.max_p_value
            off = not on
            points = counter.points(group)
            # A hidden count hides what gives it back: its tail probability (solve P(N >= n) for n), the expected
            # count (the history's total less the window's, over the days), and the events' centroid (one call
            # left in the window is that call's place). The alert keeps the place it had (AlertEngine._apply).
            # A shown centroid is only the cell it falls in (_placed), and only the first one an alert gets is
            # ever published: a new mean per event would give each event's place back (polis.alerts.place).
            shown = reading.count >= self.suppression_k
            center = (
                (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))
                if points and shown
                else None
            )
            hidden = math.nan
            details = {
                "expected": reading.expected if shown else hidden,
                "pValue": reading.p_value if shown else hidden,
                "count": float(reading.count) if shown else hidden,
            }
            count = details["count"]
            signal = Signal(on, off, count, float(floor), details)
            found.append(self._placed(group, group, center, counter.watermark, signal))
        return found


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(slots=True)
class RuleIndex:
    """The compiled rules of every tenant, and the entity types any of them watches (the bus listener's
    cheap first filter)."""

    by_tenant: dict[str, dict[str, CompiledRule]] = field(default_factory=dict)
    watched: frozenset[str] = frozenset()

    def rebuild_watched(self) -> None:
        self.watched = frozenset(c.type_iri for rules in self.by_tenant.values() for c in rules.values())
