"""The alerts engine: rules evaluated on every committed change, alerts raised, updated and cancelled,
each message a CAP 1.2 document and an upsert of the incident's NGSI-LD `Alert` entity.

The bus listener runs inside the writer's commit, so it only filters (is any rule watching this entity
type? is it one of our own Alert entities?) and queues; a worker thread does the evaluation and the
writes. Our own `Alert` writes come back through the bus and are dropped by that filter, and rules may
not watch `Alert` entities at all, so alerts never trigger alerts.

Every message is appended to `alerts/messages.jsonl` under the data directory (the CAP feed and each
alert's history survive a restart), the rules live in `alerts/rules.json`, and what the rules remember between
alerts (each sensor's latest reading time, cooldowns) in `alerts/state.json` (polis.alerts.state).

An alert unconfirmed for the rule's validityS (no reading has kept it open; messages go out only every
updateIntervalS) has lapsed: its sensors went quiet. Past it by the rule's own readings (the time of its other
sensors, as every lifecycle time here) or, when all of them are quiet, by the wall clock since its last reading
or message; it is then "expired", no longer listed, fed or published as active, and its sensor's next crowd is
a new alert.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from polis.alerts.cap import build_cap, cap_time, identifier_for, validate_cap
from polis.alerts.entity import ALERT_CONTEXT, ALERT_ID_PREFIX, alert_entity
from polis.alerts.evaluate import DEFAULT_CONTEXT, CompiledRule, Observation, RuleIndex
from polis.alerts.lifecycle import Phase
from polis.alerts.model import KEPT_MESSAGES, AlertRecord, Member, SentMessage, distance_m, iso, parse_iso
from polis.alerts.place import person_entity
from polis.alerts.rulebook import RuleBook
from polis.alerts.rules import (
    OPERATOR,
    AnyRule,
    BurstRule,
    RuleOwner,
    RulesFileError,
    load_rules_file,
    parse_rule,
    require_workable,
    rule_json,
    rule_problems,
)
from polis.alerts.state import StateFile, fingerprint, lane_state, restore_lane, state_key
from polis.alerts.texts import alert_texts, cleared_text
from polis.domain.errors import BadRequestData, NgsiError, ResourceNotFound
from polis.ngsi_ld.events import EntityChange
from polis.store.base import TemporalQuery

if TYPE_CHECKING:
    from polis.access.control import AccessControl

log = logging.getLogger(__name__)

BACKFILL_STEP = timedelta(days=1)  # history scanned per worker turn, so live changes are never held up long
# How often the worker looks for alerts lapsed by the wall clock (a rule whose sensors all went quiet): how long
# such an alert can still be listed, fed and published as active after its validity ran out.
SWEEP_S = 5.0
# How often what the rules remember is written to alerts/state.json while readings flow: every batch rewrote the
# whole file (megabytes for a city of sensors) under the engine's lock. A crash loses at most this much; a
# shutdown writes it all.
STATE_SAVE_S = 1.0


@dataclass(frozen=True, slots=True)
class Backfill:
    tenant: str
    rule_id: str
    start: datetime
    end: datetime
    # The install this backfill belongs to: a rule replaced (or deleted and made again) meanwhile has its own
    # backfill, and the old one's next day must not run through the new rule nor move its progress mark.
    compiled: CompiledRule | None = None


class AlertEngine:
    def __init__(self, platform: Any) -> None:
        self.platform = platform
        settings = platform.settings
        self.folder = settings.data_dir / "alerts"
        self.sender = settings.alert_sender
        self.book = RuleBook(self.folder / "rules.json")
        self._log_path = self.folder / "messages.jsonl"
        self._state = StateFile(self.folder / "state.json")
        # alert id -> (the latest reading that kept it open, the wall clock then): messages go out only every
        # updateIntervalS, so an alert lapses by its sensors' silence, not by the time since its last message.
        self._confirmed: dict[str, tuple[datetime, datetime]] = {}
        self._unsaved: dict[int, CompiledRule] = {}  # lanes evaluated since state.json was last written
        self._saved_at = 0.0  # time.monotonic() of that write
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # the wall clock (tests set their own)
        self.sweep_s = SWEEP_S
        self._lock = threading.RLock()
        self.records: dict[str, AlertRecord] = {}
        self.caps: dict[str, list[bytes]] = {}
        self.index = RuleIndex()
        self.invalid_cap = 0  # messages that failed the schema check (a bug if ever > 0)
        self._queue: queue.SimpleQueue[list[EntityChange] | Backfill | None] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._load_log()
        if settings.alert_rules_file is not None:
            for rule in _operator_rules(settings.alert_rules_file):
                self.book.put("", rule)
        self._decide_legacy_owners()
        for tenant, rule in self.book.all():
            try:
                self._install(tenant, rule)
            except NgsiError as error:  # e.g. its @context is unreachable right now
                log.warning("alert rule %s (tenant %r) not active: %s", rule.id, tenant, error.detail)
        platform.bus.subscribe_batch(self._on_commit)
        if any(r.status == "active" for r in self.records.values()):
            self._start_worker()  # alerts open from before the restart lapse even if no reading ever comes

    # -- rules ---------------------------------------------------------------------------------

    def put_rule(
        self, tenant: str, body: Any, rule_id: str | None = None, owner: RuleOwner = OPERATOR
    ) -> tuple[AnyRule, bool]:
        """Validate and install a rule; (rule, created). Replacing a rule cancels its open alerts. `owner`: the
        department declaring it and the datasets it may watch (polis.api.routes_alerts); the operator's by default."""
        # Field combinations are checked below, after the comparison with the rule held: a rule saved before a
        # check existed runs (polis.alerts.rulebook), and putting it back unchanged must stay the no-op it was.
        rule = parse_rule(body, rule_id=rule_id, stored=True)
        with self._lock:
            # raises (e.g. an unreachable @context) before anything changes
            compiled = self._compile(tenant, rule, owner)
            if compiled.watches_records:
                _refuse_person_records(compiled)
            held = self.book.get(tenant, str(rule.id)) if rule.id is not None else None
            running = held is not None and (not held.enabled or str(held.id) in self.index.by_tenant.get(tenant, {}))
            held_owner = self.book.owner(tenant, str(held.id)) if held is not None else None
            # watching the same datasets as before (a rule put back by a department that may read other datasets
            # is a new rule: it watches what that department may read)
            same_reach = held_owner is not None and held_owner.datasets == owner.datasets
            unchanged = held is not None and fingerprint(rule_json(held)) == fingerprint(compiled.json)
            if held is not None and running and same_reach and unchanged:
                # the same definition again (a GET put back): its alerts go on as they were. Not a rule that failed
                # to install at start (an unreachable @context then): putting it back is how it gets going.
                if held_owner != owner:  # the department that put it back answers for it now
                    self.book.set_owners({(tenant, str(held.id)): owner})
                    live = self.index.by_tenant.get(tenant, {}).get(str(held.id))
                    if live is not None:
                        live.owner = owner
                        if live.replay is not None:
                            live.replay.owner = owner
                return held, False
            require_workable(rule)
            existed = held is not None
            if rule.id is not None:
                self._retire(tenant, str(rule.id), "the rule was replaced")
            rule = self.book.put(tenant, rule, owner)
            self._install(tenant, rule)
        return rule, not existed

    def rules(self, tenant: str) -> list[AnyRule]:
        return self.book.of(tenant)

    def rule(self, tenant: str, rule_id: str) -> AnyRule:
        found = self.book.get(tenant, rule_id)
        if found is None:
            raise ResourceNotFound(f"alert rule {rule_id} was not found")
        return found

    def delete_rule(self, tenant: str, rule_id: str) -> None:
        with self._lock:
            if not self.book.delete(tenant, rule_id):
                raise ResourceNotFound(f"alert rule {rule_id} was not found")
            self._retire(tenant, rule_id, "the rule was deleted")
            self._save_state([])  # its saved state goes with it: the same rule made again starts afresh

    def _compile(self, tenant: str, rule: AnyRule, owner: RuleOwner) -> CompiledRule:
        context = rule.context if rule.context is not None else DEFAULT_CONTEXT
        terms = self.platform.contexts.resolve(list(context) if isinstance(context, tuple) else context)
        settings = self.platform.settings
        compiled = CompiledRule(
            tenant,
            rule,
            terms,
            self.platform.store,
            settings.datasets_dir,
            suppression_k=settings.suppression_k,
            owner=owner,
        )
        compiled.datasets = self._reach(owner)
        if compiled.type_iri == "https://smartdatamodels.org/dataModel.Alert/Alert":
            raise BadRequestData(
                "rule field 'scope.type': rules cannot watch Alert entities", field="scope.type", reason="loop"
            )
        return compiled

    def _reach(self, owner: RuleOwner) -> frozenset[str] | None:
        """The datasets a rule of `owner` watches now (None: all): those recorded when it was declared, less any its
        department may no longer read. A revoked grant stops the rule watching that dataset at once, as it stops the
        department's own reads and its subscriptions' notifications (AccessControl.notification_allows)."""
        if owner.department is None:
            return owner.datasets
        readable = self.platform.access.entity_filter(owner.department)
        return readable if owner.datasets is None else owner.datasets & readable

    def _narrow(
        self, compiled: CompiledRule, reaches: dict[RuleOwner, frozenset[str] | None] | None = None
    ) -> None:
        """Before an evaluation: the rule (and its backfill lane) watch what its department may read now
        (`reaches`: the owners' reaches already looked up for this batch, ~20 µs a lookup)."""
        if reaches is None:
            compiled.datasets = self._reach(compiled.owner)
        else:
            if compiled.owner not in reaches:
                reaches[compiled.owner] = self._reach(compiled.owner)
            compiled.datasets = reaches[compiled.owner]
        if compiled.replay is not None:
            compiled.replay.datasets = compiled.datasets

    def _decide_legacy_owners(self) -> None:
        """Rules an older Polis saved record no owner: decide theirs once (`legacy_owner`) and record it."""
        unowned = self.book.unowned()
        if not unowned:
            return
        owner = legacy_owner(self.platform.access)
        self.book.set_owners({(tenant, str(rule.id)): owner for tenant, rule in unowned})
        for tenant, rule in unowned:
            if owner.datasets is not None:
                log.warning(
                    "alert rule %s (tenant %r) was saved without who declared it, while departments other than "
                    "the operator's could declare rules: it watches only the datasets all of them may read (%s). "
                    "PUT it again with its department's key (or the admin key) to change that",
                    rule.id, tenant, ", ".join(sorted(owner.datasets - {"alerts"})) or "none: it watches no data",
                )

    def _install(self, tenant: str, rule: AnyRule) -> None:
        compiled = self._compile(tenant, rule, self.book.owner(tenant, str(rule.id)) or OPERATOR)
        if isinstance(rule, BurstRule):
            compiled.prime_bursts()
        restore_lane(compiled, self._state.get(state_key(compiled)))  # readings seen and cooldowns, before a restart
        backfill = None
        if rule.enabled and rule.backfill is not None:
            start = self._backfilled_to(tenant, compiled, rule.backfill.start)
            if start < rule.backfill.end:
                compiled.replay = compiled.replay_lane()
                backfill = Backfill(tenant, str(rule.id), start, rule.backfill.end, compiled)
        for record in self.records.values():  # alerts still open from before a restart
            if record.tenant == tenant and record.rule_id == rule.id and record.status == "active":
                lane = compiled.replay if record.replayed and compiled.replay is not None else compiled
                for key in record.members:
                    tracker = lane.tracker(key)
                    tracker.phase, tracker.since, tracker.updated_at = Phase.ACTIVE, record.onset, record.effective
                    lane.membership[key] = record.id
        with self._lock:
            if rule.enabled:
                self.index.by_tenant.setdefault(tenant, {})[str(rule.id)] = compiled
            self.index.rebuild_watched()
        if backfill is not None:
            self._enqueue(backfill)

    def _backfill_marks(self) -> dict[str, Any]:
        path = self.folder / "backfilled.json"
        return dict(orjson.loads(path.read_bytes())) if path.is_file() else {}

    def _backfilled_to(self, tenant: str, compiled: CompiledRule, start: datetime) -> datetime:
        """Where this very rule's (same definition's) backfill is to go on from: a restart must not raise the
        same historical alerts again, so each day done is recorded (`_mark_backfilled`). A mark from before
        progress was recorded (the fingerprint alone) means the whole backfill was done."""
        mark = self._backfill_marks().get(f"{tenant}/{compiled.rule_id}")
        definition = fingerprint(compiled.json)
        if mark == definition:
            return datetime.max.replace(tzinfo=UTC)
        if isinstance(mark, dict) and mark.get("rule") == definition:
            return max(start, parse_iso(str(mark["to"])))
        return start

    def _mark_backfilled(self, tenant: str, compiled: CompiledRule, to: datetime) -> None:
        marks = self._backfill_marks()
        marks[f"{tenant}/{compiled.rule_id}"] = {"rule": fingerprint(compiled.json), "to": iso(to)}
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "backfilled.json"
        staged = path.with_suffix(".json.tmp")
        staged.write_bytes(orjson.dumps(marks))
        staged.replace(path)  # a kill mid-write leaves the old marks, never half a file

    def _retire(self, tenant: str, rule_id: str, why: str) -> None:
        """Drop a rule's live state and cancel its open alerts, saying why (not that the condition cleared)."""
        self.index.by_tenant.get(tenant, {}).pop(rule_id, None)
        self.index.rebuild_watched()
        for record in list(self.records.values()):
            if record.tenant == tenant and record.rule_id == rule_id and record.status == "active":
                record.status = "cancelled"
                self._emit(record, "Cancel", next(iter(record.members.values())), record.effective, retired=why)

    # -- the event path -------------------------------------------------------------------------------

    def _on_commit(self, changes: Sequence[EntityChange]) -> None:
        watched = self.index.watched
        if not watched or self._closed:
            return
        picked = [
            c
            for c in changes
            if c.entity is not None
            and not c.entity_id.startswith(ALERT_ID_PREFIX)
            and not watched.isdisjoint(c.entity.get("type", ()))
        ]
        if picked:
            self._enqueue(picked)

    def _enqueue(self, item: list[EntityChange] | Backfill) -> None:
        with self._idle:
            self._pending += 1
        self._start_worker()
        self._queue.put(item)

    def _start_worker(self) -> None:
        with self._idle:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="polis-alerts", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        sweep_at = time.monotonic() + self.sweep_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, sweep_at - time.monotonic()))
            except queue.Empty:
                item = []  # time for a sweep, nothing to evaluate
            if item is None:
                return
            if time.monotonic() >= sweep_at:  # also under a steady stream of changes (the queue is never empty)
                self._sweep()
                sweep_at = time.monotonic() + self.sweep_s
            if not isinstance(item, Backfill) and not item:  # only a sweep was due
                continue
            if isinstance(item, Backfill):
                try:
                    self._backfill(item)
                except Exception:
                    log.exception("alert backfill of rule %s failed", item.rule_id)
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
                continue
            batch, done = list(item), 1
            while True:  # whatever else is queued goes in the same evaluation (a replay step's readings)
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None or isinstance(more, Backfill):
                    self._queue.put(more)  # to the back: live changes first, then history
                    break
                batch.extend(more)
                done += 1
            try:
                self.process(batch)
            except Exception:
                log.exception("alert evaluation failed on %d changes", len(batch))
            with self._idle:
                self._pending -= done
                self._idle.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued change has been evaluated (tests, benchmarks, a clean shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def process(self, changes: Sequence[EntityChange]) -> None:
        with self._lock:
            now = self.clock()
            tenants: dict[str, list[EntityChange]] = {}
            for change in changes:
                tenants.setdefault(change.tenant, []).append(change)
            evaluated = []
            reaches: dict[RuleOwner, frozenset[str] | None] = {}  # one grant lookup per owner and batch
            for tenant, items in tenants.items():
                for compiled in list(self.index.by_tenant.get(tenant, {}).values()):
                    self._narrow(compiled, reaches)
                    pairs = [
                        (c.entity, c.previous) for c in items if c.entity is not None and compiled.in_scope(c.entity)
                    ]
                    if not pairs:
                        continue
                    # One rule's failure (a detector's bug, an odd reading) costs that rule this batch, not the
                    # rules after it: a threshold alert must not wait on a crowd model.
                    try:
                        for observation in compiled.evaluate(pairs, self.platform, now):
                            self._apply(compiled, observation)
                        self._expire_lapsed(compiled)
                    except Exception:
                        log.exception(
                            "alert rule %s of tenant %r failed on %d changes", compiled.rule_id, tenant, len(pairs)
                        )
                    evaluated.append(compiled)
            for compiled in evaluated:
                self._unsaved[id(compiled)] = compiled
            if self._unsaved and time.monotonic() - self._saved_at >= STATE_SAVE_S:
                self._flush_state()

    @property
    def readings_ahead(self) -> int:
        """Readings the installed rules refused as dated too far ahead of the clock (a sensor's broken clock)."""
        with self._lock:
            lanes = [c for rules in self.index.by_tenant.values() for c in rules.values()]
            return sum(c.ahead + (c.replay.ahead if c.replay is not None else 0) for c in lanes)

    def _flush_state(self) -> None:
        """Write the lanes evaluated since the last write (the engine's lock held)."""
        lanes, self._unsaved, self._saved_at = list(self._unsaved.values()), {}, time.monotonic()
        self._save_state(lanes)

    def _save_state(self, evaluated: list[CompiledRule]) -> None:
        kept = {f"{tenant}/{rule.id}" for tenant, rule in self.book.all()}
        try:
            # a lane evaluated before its rule was deleted or replaced is not written back
            current = [c for c in evaluated if self.index.by_tenant.get(c.tenant, {}).get(c.rule_id) is c]
            self._state.save({state_key(c): lane_state(c) for c in current}, kept)
        except OSError:  # a full disk must not stop the alerts; a restart then forgets this batch's readings
            log.exception("could not save the alert rules' state")

    def _backfill(self, job: Backfill) -> None:
        """One day of stored history through the rule's replay lane, as if it arrived now; the rest goes back in
        the queue. The lane has its own clocks and lifecycles: live readings meanwhile go on beside it."""
        stop = min(job.end, job.start + BACKFILL_STEP)
        with self._lock:
            compiled = self.index.by_tenant.get(job.tenant, {}).get(job.rule_id)
            if compiled is None or compiled.attr_iri is None or self._closed:
                return  # the rule went away meanwhile
            if job.compiled is not None and job.compiled is not compiled:
                return  # replaced meanwhile: the new install runs its own backfill
            lane = compiled.replay
            if lane is None:
                return
            self._narrow(compiled)
            now = self.clock()
            entities = {e["id"]: e for e in lane.scope_entities()}
            query = TemporalQuery(
                attrs=(compiled.attr_iri,), timerel="between", time_at=job.start, end_time_at=stop, max_instances=10**7
            )
            steps: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for entity_id, attrs in self.platform.store.temporal(job.tenant, list(entities), query).items():
                slot = attrs.get(compiled.attr_iri)
                for instance in slot.instances if slot else []:
                    steps.setdefault(instance["observedAt"], []).append((entity_id, instance))
            for observed in sorted(steps, key=parse_iso):
                pairs: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
                for entity_id, instance in steps[observed]:
                    reading = {k: v for k, v in instance.items() if k != "instanceId"}
                    pairs.append(({**entities[entity_id], compiled.attr_iri: [reading]}, None))
                for observation in lane.evaluate(pairs, self.platform, now):
                    self._apply(lane, observation)
                self._expire_lapsed(lane)
            self._mark_backfilled(job.tenant, compiled, stop)  # under the lock, with the day's messages written
            if stop >= job.end:
                self._hand_over(compiled, lane)
        if stop < job.end and not self._closed:
            self._enqueue(Backfill(job.tenant, job.rule_id, stop, job.end, compiled))

    def _hand_over(self, compiled: CompiledRule, lane: CompiledRule) -> None:
        """The backfill is done. An alert it leaves open goes on with the live readings, as if they had followed
        the history; unless the live readings already know one of its sensors (their view is the newer one), or
        it expired before now by the wall clock (history of long ago, e.g. last year's crowds: no live reading
        can still confirm or end it). Then it lapses (expired) rather than being ended or joined by them."""
        now = self.clock()
        for alert_id in set(lane.membership.values()):
            record = self.records.get(alert_id)
            if record is None or record.status != "active":
                continue
            overtaken = any(key in compiled.last_at or key in compiled.membership for key in record.members)
            if overtaken or self._valid_until(record) < now:
                self._expire(record, lane)
                continue
            for key in record.members:
                compiled.trackers[key] = lane.tracker(key)
                compiled.membership[key] = record.id
                if key in lane.last_at:
                    compiled.last_at[key] = lane.last_at[key]
        if lane.clock is not None and compiled.clock is None:
            compiled.clock = lane.clock
        compiled.replay = None
        self._save_state([compiled])

    # -- lifecycle -----------------------------------------------------------------------------------

    def _apply(self, compiled: CompiledRule, obs: Observation) -> None:
        tracker = compiled.tracker(obs.subject)
        decision = tracker.step(obs.at, obs.signal)
        alert_id = compiled.membership.get(obs.subject)
        record = self.records.get(alert_id) if alert_id else None
        previous = record.members.get(obs.subject) if record is not None else None
        point, cell_m = obs.point, obs.cell_m
        if previous is not None and (previous.cell_m > 0 or point is None):
            # A person-related place (a grid cell) is the one the alert was raised with, for the alert's whole life:
            # places re-derived per update could be differenced to find the events in between (polis.alerts.place).
            # No place in the observation (a burst whose count is hidden gives none): the member keeps its own.
            point, cell_m = previous.point, previous.cell_m
        member = Member(
            obs.subject,
            obs.name,
            point,
            obs.signal.value,
            obs.signal.threshold,
            obs.at,
            dict(obs.signal.details),
            cell_m,
        )
        if decision == "raise":
            joined = self._joinable(compiled, obs.point)
            if joined is None:
                joined = self._new_record(compiled, tracker.since or obs.at, obs.at)
                joined.members[obs.subject] = member
                compiled.membership[obs.subject] = joined.id
                self._emit(joined, "Alert", member, obs.at)
            else:
                joined.members[obs.subject] = member
                compiled.membership[obs.subject] = joined.id
                self._emit(joined, "Update", member, obs.at)
            self._confirm(joined, obs.at)
        elif decision == "update" and record is not None:
            record.members[obs.subject] = member
            self._confirm(record, obs.at)
            if (obs.at - record.effective).total_seconds() >= compiled.rule.update_interval_s:
                self._emit(record, "Update", member, obs.at)
        elif decision == "cancel" and record is not None:
            del compiled.membership[obs.subject]
            if len(record.members) > 1:
                del record.members[obs.subject]
                self._emit(record, "Update", next(iter(record.members.values())), obs.at)
            else:
                record.members[obs.subject] = member
                record.status = "cancelled"
                self._emit(record, "Cancel", member, obs.at)
        elif record is not None and tracker.phase is Phase.ACTIVE:
            self._confirm(record, obs.at)
            if not compiled.person_related(obs.subject):
                # Fresh values for the JSON view, no message. Not for people's events: there each refresh would
                # publish one more event's count and time to anyone polling; their counts go out with the messages
                # only (at most one per updateIntervalS), so the JSON view, the CAP message and the Alert entity agree.
                record.members[obs.subject] = member

    def _confirm(self, record: AlertRecord, at: datetime) -> None:
        """A reading at `at` kept `record` open (see `_confirmed`)."""
        seen = self._confirmed.get(record.id)
        self._confirmed[record.id] = (at if seen is None else max(at, seen[0]), self.clock())

    def _valid_until(self, record: AlertRecord) -> datetime:
        """Until when (readings' time) an open alert holds: its validity after the latest reading that kept it open,
        or after its last message."""
        seen = self._confirmed.get(record.id)
        if seen is None:
            return record.expires
        return max(record.expires, seen[0] + _validity(record))

    def _joinable(self, compiled: CompiledRule, point: tuple[float, float] | None) -> AlertRecord | None:
        """An open alert of the same rule with a member within groupWithinM: neighbours make one event."""
        radius = compiled.rule.group_within_m
        if radius <= 0 or point is None:
            return None
        for alert_id in set(compiled.membership.values()):
            record = self.records.get(alert_id)
            active = record is not None and record.status == "active"
            if active and record is not None and any(distance_m(point, p) <= radius for p in record.points()):
                return record
        return None

    def _new_record(self, compiled: CompiledRule, onset: datetime, at: datetime) -> AlertRecord:
        prefix = f"{ALERT_ID_PREFIX}{compiled.rule_id}:"
        numbers = [
            int(r.id[len(prefix) :])
            for r in self.records.values()
            if r.tenant == compiled.tenant and r.id.startswith(prefix)
        ]
        record = AlertRecord(
            id=f"{prefix}{max(numbers, default=0) + 1}",
            tenant=compiled.tenant,
            rule_id=compiled.rule_id,
            rule=compiled.json,
            onset=onset,
            effective=at,
            expires=at,
            replayed=compiled.replaying,
        )
        self.records[record.id] = record
        return record

    def _emit(
        self, record: AlertRecord, msg_type: str, member: Member, at: datetime, *, retired: str | None = None
    ) -> None:
        if msg_type == "Cancel":
            self._confirmed.pop(record.id, None)
        # Never back in time: each member has its own clock, so a neighbour's late reading joining the alert is
        # older than the message before it, and CAP readers take the latest `effective` as the current state.
        record.effective = max(at, record.onset, record.effective)
        record.expires = record.effective + _validity(record)
        record.headline, record.description = alert_texts(record, member, self.platform.settings.suppression_k)
        if retired is not None:  # withdrawn by an operator: the condition may well still hold
            record.description = f"Withdrawn: {record.rule.get('name')} at {member.name}: {retired}"
        elif msg_type == "Cancel":  # the rule's message describes the condition, which no longer holds
            record.description = cleared_text(record, member)
        sent = cap_time(datetime.now(UTC))
        if record.messages and record.messages[-1].sent >= sent:  # strictly increasing, whole seconds
            sent = cap_time(datetime.fromisoformat(record.messages[-1].sent) + timedelta(seconds=1))
        message = SentMessage(identifier_for(record, record.sent_count + 1), sent, msg_type)
        xml = build_cap(record, message, record.messages, self.sender)
        try:
            validate_cap(xml)
        except ValueError:
            self.invalid_cap += 1
            log.exception("CAP message %s failed the schema check", message.identifier)
        record.add_message(message)
        self._keep_caps(record, xml)
        self._log(record, xml)
        self._write_entity(record)

    def _keep_caps(self, record: AlertRecord, xml: bytes) -> None:
        """Keep `xml` with the alert's CAP messages, as many as its record keeps (its first and the latest)."""
        caps = self.caps.setdefault(record.id, [])
        caps.append(xml)
        surplus = len(caps) - max(len(record.messages), 1)
        if surplus > 0:
            del caps[1 : 1 + surplus]

    def _log(self, record: AlertRecord, xml: bytes | None) -> None:
        """The record as it is now, with the CAP message that made it so (None: a change without one, a lapse)."""
        line: dict[str, Any] = {"record": record.to_json()}
        if xml is not None:
            line["cap"] = xml.decode()
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as handle:
            handle.write(orjson.dumps(line) + b"\n")

    def _write_entity(self, record: AlertRecord) -> None:
        terms = self.platform.contexts.resolve(ALERT_CONTEXT)
        body = alert_entity(record, f"/polis/v1/alerts/{record.id}/cap")
        result = self.platform.entities.batch(record.tenant, "upsert", [body], lambda _item: terms)
        for _, error in result.errors:
            log.error("could not write Alert entity %s: %s", record.id, error.detail)

    # -- lapsing ---------------------------------------------------------------------------------------

    def _expire_lapsed(self, lane: CompiledRule) -> None:
        """The lane's open alerts its readings have passed the validity of (`_valid_until`: each member's sensor
        quiet that long)."""
        clock = lane.clock
        if clock is None:
            return
        for alert_id in set(lane.membership.values()):
            record = self.records.get(alert_id)
            if record is not None and record.status == "active" and self._valid_until(record) < clock:
                self._expire(record, lane)

    def _lapsed(self, record: AlertRecord, now: datetime) -> bool:
        """Whether an open alert has gone unconfirmed for its validity of wall-clock time since its last message
        or the last reading that kept it open: the fallback when no reading of its rule comes in to tell
        (polis.alerts.engine's docstring)."""
        if record.status != "active" or not record.messages:
            return False
        last = datetime.fromisoformat(record.messages[-1].sent)
        seen = self._confirmed.get(record.id)
        return now > (last if seen is None else max(last, seen[1])) + _validity(record)

    def _sweep(self) -> None:
        """Every `sweep_s` on the worker: alerts lapsed by the wall clock are marked expired, in the listing, the
        feed and the Alert entity at once (they all read the record)."""
        try:
            with self._lock:
                now = self.clock()
                for record in [r for r in self.records.values() if self._lapsed(r, now)]:
                    self._expire(record, self._lane_of(record))
                if self._unsaved:  # readings that came in a burst and then stopped
                    self._flush_state()
        except Exception:
            log.exception("alert expiry sweep failed")

    def _lane_of(self, record: AlertRecord) -> CompiledRule | None:
        compiled = self.index.by_tenant.get(record.tenant, {}).get(record.rule_id)
        if compiled is not None and record.replayed and compiled.replay is not None:
            return compiled.replay
        return compiled

    def _expire(self, record: AlertRecord, lane: CompiledRule | None) -> None:
        """Mark an open alert expired: no CAP message (a CAP reader drops it at `expires` by itself), the record
        logged and the Alert entity rewritten; its members' lifecycles start over (`Tracker.lapse`)."""
        record.status = "expired"
        self._confirmed.pop(record.id, None)
        if lane is not None:
            for key in record.members:
                if lane.membership.get(key) == record.id:
                    del lane.membership[key]
                    lane.tracker(key).lapse()
        self._log(record, None)
        self._write_entity(record)

    # -- reading -----------------------------------------------------------------------------------------

    def alerts(self, tenant: str, *, active_only: bool = True, rule_id: str | None = None) -> list[AlertRecord]:
        with self._lock:
            found = [
                r
                for r in self.records.values()
                if r.tenant == tenant
                and (not active_only or r.status == "active")
                and (rule_id is None or r.rule_id == rule_id)
            ]
        # Newest first: alerts updated together share their effective time, and then the one whose latest message
        # went out last comes first (the order the feed's reader saw them in), not the order they were raised in
        return sorted(found, key=lambda r: (r.effective, r.messages[-1].sent if r.messages else ""), reverse=True)

    def alert(self, tenant: str, alert_id: str) -> AlertRecord:
        record = self.records.get(alert_id)
        if record is None or record.tenant != tenant:
            raise ResourceNotFound(f"alert {alert_id} was not found")
        return record

    def cap_messages(self, tenant: str, alert_id: str) -> list[bytes]:
        """The alert's CAP messages kept: its first and the latest (KEPT_MESSAGES in all)."""
        self.alert(tenant, alert_id)
        return list(self.caps.get(alert_id, []))

    def cap_message(self, tenant: str, alert_id: str, number: int) -> bytes:
        """The alert's CAP message `number` (from 1); ResourceNotFound saying why when it is not (or no longer) kept."""
        record = self.alert(tenant, alert_id)
        with self._lock:
            caps = self.caps.get(alert_id, [])
            index = record.kept_index(number)
            if number > record.sent_count:
                raise ResourceNotFound(f"alert {alert_id} has {record.sent_count} messages, not {number}")
            if index is None or index >= len(caps):
                oldest = record.sent_count - len(record.messages) + 2
                raise ResourceNotFound(
                    f"message {number} of alert {alert_id} is no longer kept: an alert keeps its first message and "
                    f"its latest {KEPT_MESSAGES - 1} (here {oldest} to {record.sent_count})"
                )
            return caps[index]

    # -- persistence ------------------------------------------------------------------------------------

    def _load_log(self) -> None:
        if not self._log_path.is_file():
            return
        with self._log_path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    item = orjson.loads(line)
                    record = AlertRecord.from_json(item["record"])
                    cap = item.get("cap")  # none on a line that records a lapse
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    log.warning("skipping a damaged line of %s", self._log_path)  # e.g. cut by a crash
                    continue
                self.records[record.id] = record
                if isinstance(cap, str):
                    self._keep_caps(record, cap.encode())

    def close(self) -> None:
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(10)
        with self._lock:
            if self._unsaved:
                self._flush_state()


def _validity(record: AlertRecord) -> timedelta:
    """How long a message of the alert holds (its rule's validityS, the CAP `expires` after `effective`)."""
    return timedelta(seconds=float(record.rule.get("validityS", 3600.0)))


def legacy_owner(access: AccessControl) -> RuleOwner:
    """The owner of rules an older Polis saved without one. Any department holding administer on alerts/aggregate
    could declare them over the API, not only the operator's, and which one did is not known: such a rule watches
    only the datasets every one of those departments may read, no more than its author could, whoever it was.
    Where only departments that read everything administer alerts (the bootstrap admin alone, as a hub starts),
    that is every dataset: the operator's rules go on as they were."""
    from polis.access.datasets import DATASETS, entity_tier

    reach = frozenset(DATASETS)
    tiers = {name: entity_tier(name) for name in DATASETS}
    for name, _ in access.departments.departments():
        perms = access.permissions(name)  # the public department's grants too
        if perms.allows("alerts", "aggregate", "administer"):
            reach &= perms.datasets_for("read", tiers, DATASETS)
    return RuleOwner(None, None if reach >= frozenset(DATASETS) else reach)


def _refuse_person_records(compiled: CompiledRule) -> None:
    """A rule on single entities may not watch people's records (a 911 call, a trip): each alert would name one
    record and publish its value. Refused when the scope names one or its type holds them now; records stored
    later are skipped by `CompiledRule.in_scope`."""
    named = next((i for i in sorted(compiled.ids) if person_entity(i)), None)
    dataset = compiled.person_records_dataset()
    if dataset is not None:
        # A stored record's id is never named: it can say whose record it is, and the department may not read it.
        # An id the scope names is the client's own words.
        held = f"names {named}, a record" if named is not None else "holds records"
        raise BadRequestData(
            f"rule {compiled.rule.id or ''} would watch people's records: its scope {held} of dataset {dataset} "
            "(held at the raw-pseudonymous tier), and an alert on one record would publish it; count them with a "
            "burst rule",
            field="scope",
            reason="person records",
        )


def _operator_rules(path: Path) -> list[AnyRule]:
    """The rules of POLIS_ALERT_RULES_FILE, or RulesFileError naming the setting, the file and what is wrong
    (the CLI prints it as one line instead of a traceback)."""
    try:
        # Re-read at every start: a check added since the operator wrote the file (a field combination, the
        # updateIntervalS floor) warns, as for a rule saved earlier (polis.alerts.rulebook), rather than keep
        # a hub that ran yesterday from starting today. A field that is not valid at all still stops it.
        rules = load_rules_file(path, stored=True)
    except BadRequestData as error:
        named = error.detail if error.detail.startswith(f"{path}: ") else f"{path}: {error.detail}"
        raise RulesFileError(f"POLIS_ALERT_RULES_FILE {named}") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise RulesFileError(f"POLIS_ALERT_RULES_FILE {path} cannot be read: {reason}") from None
    for rule in rules:
        for field, problem in rule_problems(rule):
            log.warning("alert rule %r of POLIS_ALERT_RULES_FILE runs but would be refused now: %s: %s",
                        rule.id, field, problem)
    return rules
