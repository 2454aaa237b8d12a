"""The alerts engine: rules evaluated on every committed change, alerts raised, updated and cancelled,
each message a CAP 1.2 document and an upsert of the incident's NGSI-LD `Alert` entity.

The bus listener runs inside the writer's commit, so it only filters (is any rule watching this entity
type? is it one of our own Alert entities?) and queues; a worker thread does the evaluation and the
writes. Our own `Alert` writes come back through the bus and are dropped by that filter, and rules may
not watch `Alert` entities at all, so alerts never trigger alerts.

Every message is appended to `alerts/messages.jsonl` under the data directory (the CAP feed and each
alert's history survive a restart) and the rules live in `alerts/rules.json`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from polis.alerts.cap import build_cap, cap_time, identifier_for, validate_cap
from polis.alerts.entity import ALERT_CONTEXT, ALERT_ID_PREFIX, alert_entity
from polis.alerts.evaluate import DEFAULT_CONTEXT, CompiledRule, Observation, RuleIndex
from polis.alerts.lifecycle import Phase
from polis.alerts.model import AlertRecord, Member, SentMessage, distance_m, iso, parse_iso
from polis.alerts.rulebook import RuleBook
from polis.alerts.rules import AnyRule, BurstRule, load_rules_file, parse_rule, rule_json, template_problem
from polis.domain.errors import BadRequestData, NgsiError, ResourceNotFound
from polis.ngsi_ld.events import EntityChange
from polis.store.base import TemporalQuery

log = logging.getLogger(__name__)

BACKFILL_STEP = timedelta(days=1)  # history scanned per worker turn, so live changes are never held up long


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
            for rule in load_rules_file(settings.alert_rules_file):
                self.book.put("", rule)
        for tenant, rule in self.book.all():
            try:
                self._install(tenant, rule)
            except NgsiError as error:  # e.g. its @context is unreachable right now
                log.warning("alert rule %s (tenant %r) not active: %s", rule.id, tenant, error.detail)
        platform.bus.subscribe_batch(self._on_commit)

    # -- rules ---------------------------------------------------------------------------------

    def put_rule(self, tenant: str, body: Any, rule_id: str | None = None) -> tuple[AnyRule, bool]:
        """Validate and install a rule; (rule, created). Replacing a rule cancels its open alerts."""
        rule = parse_rule(body, rule_id=rule_id)
        with self._lock:
            compiled = self._compile(tenant, rule)  # raises (e.g. an unreachable @context) before anything changes
            if compiled.watches_records:
                _refuse_person_records(compiled)
            held = self.book.get(tenant, str(rule.id)) if rule.id is not None else None
            running = held is not None and (not held.enabled or str(held.id) in self.index.by_tenant.get(tenant, {}))
            if held is not None and running and _fingerprint(rule_json(held)) == _fingerprint(compiled.json):
                # the same definition again (a GET put back): its alerts go on as they were. Not a rule that failed
                # to install at start (an unreachable @context then): putting it back is how it gets going.
                return held, False
            existed = held is not None
            if rule.id is not None:
                self._retire(tenant, str(rule.id), "the rule was replaced")
            rule = self.book.put(tenant, rule)
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

    def _compile(self, tenant: str, rule: AnyRule) -> CompiledRule:
        context = rule.context if rule.context is not None else DEFAULT_CONTEXT
        terms = self.platform.contexts.resolve(list(context) if isinstance(context, tuple) else context)
        settings = self.platform.settings
        compiled = CompiledRule(
            tenant, rule, terms, self.platform.store, settings.datasets_dir, suppression_k=settings.suppression_k
        )
        if compiled.type_iri == "https://smartdatamodels.org/dataModel.Alert/Alert":
            raise BadRequestData(
                "rule field 'scope.type': rules cannot watch Alert entities", field="scope.type", reason="loop"
            )
        return compiled

    def _install(self, tenant: str, rule: AnyRule) -> None:
        compiled = self._compile(tenant, rule)
        if isinstance(rule, BurstRule):
            compiled.prime_bursts()
        for record in self.records.values():  # alerts still open from before a restart
            if record.tenant == tenant and record.rule_id == rule.id and record.status == "active":
                for key in record.members:
                    tracker = compiled.tracker(key)
                    tracker.phase, tracker.since, tracker.updated_at = Phase.ACTIVE, record.onset, record.effective
                    compiled.membership[key] = record.id
        with self._lock:
            if rule.enabled:
                self.index.by_tenant.setdefault(tenant, {})[str(rule.id)] = compiled
            self.index.rebuild_watched()
        if rule.enabled and rule.backfill is not None:
            start = self._backfilled_to(tenant, compiled, rule.backfill.start)
            if start < rule.backfill.end:
                self._enqueue(Backfill(tenant, str(rule.id), start, rule.backfill.end, compiled))

    def _backfill_marks(self) -> dict[str, Any]:
        path = self.folder / "backfilled.json"
        return dict(orjson.loads(path.read_bytes())) if path.is_file() else {}

    def _backfilled_to(self, tenant: str, compiled: CompiledRule, start: datetime) -> datetime:
        """Where this very rule's (same definition's) backfill is to go on from: a restart must not raise the
        same historical alerts again, so each day done is recorded (`_mark_backfilled`). A mark from before
        progress was recorded (the fingerprint alone) means the whole backfill was done."""
        mark = self._backfill_marks().get(f"{tenant}/{compiled.rule_id}")
        fingerprint = _fingerprint(compiled.json)
        if mark == fingerprint:
            return datetime.max.replace(tzinfo=UTC)
        if isinstance(mark, dict) and mark.get("rule") == fingerprint:
            return max(start, parse_iso(str(mark["to"])))
        return start

    def _mark_backfilled(self, tenant: str, compiled: CompiledRule, to: datetime) -> None:
        marks = self._backfill_marks()
        marks[f"{tenant}/{compiled.rule_id}"] = {"rule": _fingerprint(compiled.json), "to": iso(to)}
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
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="polis-alerts", daemon=True)
                self._thread.start()
        self._queue.put(item)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
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
            tenants: dict[str, list[EntityChange]] = {}
            for change in changes:
                tenants.setdefault(change.tenant, []).append(change)
            for tenant, items in tenants.items():
                for compiled in list(self.index.by_tenant.get(tenant, {}).values()):
                    pairs = [
                        (c.entity, c.previous) for c in items if c.entity is not None and compiled.in_scope(c.entity)
                    ]
                    if not pairs:
                        continue
                    for observation in compiled.evaluate(pairs, self.platform):
                        self._apply(compiled, observation)

    def _backfill(self, job: Backfill) -> None:
        """One day of stored history through the rule, as if it arrived now; the rest goes back in the queue."""
        stop = min(job.end, job.start + BACKFILL_STEP)
        with self._lock:
            compiled = self.index.by_tenant.get(job.tenant, {}).get(job.rule_id)
            if compiled is None or compiled.attr_iri is None or self._closed:
                return  # the rule went away meanwhile
            if job.compiled is not None and job.compiled is not compiled:
                return  # replaced meanwhile: the new install runs its own backfill
            entities = {e["id"]: e for e in compiled.scope_entities()}
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
                for observation in compiled.evaluate(pairs, self.platform):
                    self._apply(compiled, observation)
            self._mark_backfilled(job.tenant, compiled, stop)  # under the lock, with the day's messages written
        if stop < job.end and not self._closed:
            self._enqueue(Backfill(job.tenant, job.rule_id, stop, job.end, compiled))

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
        elif decision == "update" and record is not None:
            record.members[obs.subject] = member
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
        elif record is not None and tracker.phase is Phase.ACTIVE and not compiled.person_related(obs.subject):
            # Fresh values for the JSON view, no message. Not for people's events: there each refresh would publish
            # one more event's count and time to anyone polling; their counts go out with the messages only (at
            # most one per updateIntervalS), so the JSON view, the CAP message and the Alert entity agree.
            record.members[obs.subject] = member

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
        )
        self.records[record.id] = record
        return record

    def _emit(
        self, record: AlertRecord, msg_type: str, member: Member, at: datetime, *, retired: str | None = None
    ) -> None:
        rule = record.rule
        record.effective = max(at, record.onset)
        record.expires = record.effective + timedelta(seconds=float(rule.get("validityS", 3600.0)))
        record.headline, record.description = self._texts(record, member)
        if retired is not None:  # withdrawn by an operator: the condition may well still hold
            record.description = f"Withdrawn: {record.rule.get('name')} at {member.name}: {retired}"
        elif msg_type == "Cancel":  # the rule's message describes the condition, which no longer holds
            record.description = self._cleared(record, member)
        sent = cap_time(datetime.now(UTC))
        if record.messages and record.messages[-1].sent >= sent:  # strictly increasing, whole seconds
            sent = cap_time(datetime.fromisoformat(record.messages[-1].sent) + timedelta(seconds=1))
        message = SentMessage(identifier_for(record, len(record.messages) + 1), sent, msg_type)
        if not record.issued_at:
            record.issued_at = sent
        xml = build_cap(record, message, list(record.messages), self.sender)
        try:
            validate_cap(xml)
        except ValueError:
            self.invalid_cap += 1
            log.exception("CAP message %s failed the schema check", message.identifier)
        record.messages.append(message)
        self.caps.setdefault(record.id, []).append(xml)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as handle:
            handle.write(orjson.dumps({"record": record.to_json(), "cap": xml.decode()}) + b"\n")
        self._write_entity(record)

    def _texts(self, record: AlertRecord, member: Member) -> tuple[str, str]:
        rule = record.rule
        members = list(record.members.values())
        names = ", ".join(m.name for m in members[:3]) + (f" and {len(members) - 3} more" if len(members) > 3 else "")
        headline = f"{rule.get('name')}: {names}"[:160]
        if isinstance(member.value, float) and math.isnan(member.value):  # a count below k: never published
            k = self.platform.settings.suppression_k
            return headline, f"{rule.get('name')}: {member.name}: now under {k} events (smaller counts are unpublished)"
        details = member.details
        fields: dict[str, object] = {
            "rule": rule.get("name"),
            "entity": member.key,
            "entityName": member.name,
            "entities": len(members),
            "attribute": rule.get("attribute") or rule.get("groupBy") or "",
            "value": member.value,
            "threshold": member.threshold,
            "expected": float(details.get("expected", math.nan)),
            "score": float(details.get("score", math.nan)),
            "count": int(details.get("count", member.value)),
            "group": member.key,
            "observedAt": iso(member.observed_at),
            "crossingAt": str(details.get("crossingAt", "")),
        }
        message = str(rule.get("message", ""))
        try:
            if template_problem(message):  # a snapshot kept from before the template checks (huge widths)
                raise ValueError(message)
            description = message.format(**fields)
        except (ValueError, KeyError, IndexError):  # validated on submission; a bad value must not lose the alert
            description = f"{rule.get('name')}: {member.name} value {member.value:.6g}"
        return headline, description

    def _cleared(self, record: AlertRecord, member: Member) -> str:
        """What an all-clear says: the condition ended, and the value it ended on (a count below k stays
        unpublished; the time is the message's effective time, coarse for people's events)."""
        name = record.rule.get("name")
        if isinstance(member.value, float) and math.isnan(member.value):
            return f"Ended: {name} no longer holds at {member.name}"
        attribute = record.rule.get("attribute") or record.rule.get("groupBy") or "value"
        return f"Ended: {name} no longer holds at {member.name} ({attribute} now {member.value:.6g})"

    def _write_entity(self, record: AlertRecord) -> None:
        terms = self.platform.contexts.resolve(ALERT_CONTEXT)
        body = alert_entity(record, f"/polis/v1/alerts/{record.id}/cap")
        result = self.platform.entities.batch(record.tenant, "upsert", [body], lambda _item: terms)
        for _, error in result.errors:
            log.error("could not write Alert entity %s: %s", record.id, error.detail)

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
        self.alert(tenant, alert_id)
        return list(self.caps.get(alert_id, []))

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
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.warning("skipping a damaged line of %s", self._log_path)  # e.g. cut by a crash
                    continue
                self.records[record.id] = record
                self.caps.setdefault(record.id, []).append(item["cap"].encode())

    def close(self) -> None:
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(10)


def _fingerprint(rule: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(rule, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _refuse_person_records(compiled: CompiledRule) -> None:
    """A rule on single entities may not watch people's records (a 911 call, a trip): each alert would name one
    record and publish its value. Refused when the scope names one or its type holds them now; records stored
    later are skipped by `CompiledRule.in_scope`."""
    record = compiled.first_person_record()
    if record is not None:
        raise BadRequestData(
            f"rule {compiled.rule.id or ''} would watch people's records (e.g. {record}, held at the "
            f"raw-pseudonymous tier): an alert on one record would publish it; count them with a burst rule",
            field="scope",
            reason="person records",
        )
