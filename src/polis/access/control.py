"""`AccessControl`: who is asking (API key -> department), what their grants allow, and the audit log of
every decision. The platform holds one; the API, MQTT ingest and subscriptions ask it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from polis.access.audit import AuditLog
from polis.access.datasets import CONTEXTS, DATASETS, OTHER, dataset_of, entity_tier
from polis.access.departments import AccessError, DepartmentStore
from polis.access.grants import ANY, Permissions
from polis.access.keys import KeyHasher, NewKey, Throttled, Verified, key_digest, parse_key
from polis.domain.errors import Forbidden, NgsiError, Unauthorized
from polis.settings import Settings

ADMIN = "admin"
PUBLIC = "public"  # requests without a key act as this department, with only what is granted to it
SENSORS = "sensors"  # MQTT ingest writes as this department

# Sensor datasets the MQTT ingest may write from the start (an operator can revoke any of them).
SENSOR_DATASETS = ("los-loop", "sz-taxi", "melbourne-pedestrians", OTHER)


@dataclass(frozen=True, slots=True)
class Principal:
    department: str
    key_id: str | None  # None: anonymous (the public department) or an internal caller

    @property
    def anonymous(self) -> bool:
        """A request that sent no key: its decisions are itemised in the audit log at a bounded rate."""
        return self.key_id is None and self.department == PUBLIC


class AccessControl:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.departments = DepartmentStore(settings.access_db_path)
        self.audit = AuditLog(settings.audit_log_path)
        self.keys = KeyHasher(
            time_cost=settings.api_key_hash_time_cost,
            memory_kib=settings.api_key_hash_memory_kib,
            cache_s=settings.api_key_cache_s,
            failed_checks_per_s=settings.api_key_failed_checks_per_s,
        )
        self._perm_lock = threading.Lock()
        self._perms: dict[str, Permissions] = {}
        self._version = -1
        self._generation = 0  # bumped whenever `_perms` is dropped: see `permissions`
        self._bootstrap()

    def close(self) -> None:
        self.departments.close()
        self.audit.close()

    # -- bootstrap -------------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """First start: `admin` (every grant, its key in a 0600 file), `public` (the CAP feed) and
        `sensors` (MQTT ingest writes to the sensor datasets)."""
        if self.departments.has_department(ADMIN):
            return
        who = "bootstrap"
        try:
            self.create_department(ADMIN, "operators: every grant", who=who)
        except AccessError:  # another process (a server, `polis admin`) is bootstrapping this data dir now
            return
        self.grant(ADMIN, ANY, ANY, ANY, who=who)
        self.create_department(PUBLIC, "anyone without a key", who=who)
        self.grant(PUBLIC, "alerts", "public", "read", who=who)  # the CAP feed is for everyone
        self.grant(PUBLIC, CONTEXTS, "public", "read", who=who)  # @context documents that Link headers point at
        self.create_department(SENSORS, "MQTT sensor ingest", who=who)
        for dataset in SENSOR_DATASETS:
            self.grant(SENSORS, dataset, entity_tier(dataset), "write", who=who)
        key = self.create_key(ADMIN, who=who)
        write_key_file(self.settings.admin_key_path, key.secret_key)

    def admin_key(self) -> str:
        """The bootstrap admin key, from its file under the data dir."""
        return self.settings.admin_key_path.read_text().strip()

    # -- administration (CLI and tests) ------------------------------------------------------------

    def create_key(self, department: str, *, who: str = "cli") -> NewKey:
        key = self.keys.new_key()
        self.departments.add_key(key.key_id, department, key.hash, key.digest)
        self._administered(who, f"create key {key.key_id} for {department}")
        return key

    def create_department(self, name: str, description: str = "", *, who: str = "cli") -> None:
        self.departments.create_department(name, description)
        self._administered(who, f"create department {name}")

    def grant(self, department: str, dataset: str, tier: str, action: str, *, who: str = "cli") -> None:
        self.departments.grant(department, dataset, tier, action)
        self._administered(who, f"grant {action} {dataset}/{tier} to {department}")

    def revoke_grant(self, department: str, dataset: str, tier: str, action: str, *, who: str = "cli") -> None:
        self.departments.revoke_grant(department, dataset, tier, action)
        self._administered(who, f"revoke {action} {dataset}/{tier} from {department}")

    def revoke_key(self, key_id: str, *, who: str = "cli") -> None:
        self.departments.revoke_key(key_id)
        self._administered(who, f"revoke key {key_id}")

    def _administered(self, who: str, what: str) -> None:
        self.changed()
        self.audit.append(who=who, action="administer", dataset="access", tier="-", what=what, decision="allow")

    def changed(self) -> None:
        """Grants or keys changed in this process: drop what is remembered."""
        with self._perm_lock:
            self._perms.clear()
            self._generation += 1
        self.keys.forget()

    # -- decisions -------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <key>` header (None: the public department).
        Blocking on a cache miss (argon2): call from a worker thread."""
        presented = bearer_key(authorization)
        if presented is None:
            return Principal(PUBLIC, None)
        verified = self.cached(presented)
        if verified is None:
            verified = self.verify(presented)
        return Principal(verified.department, verified.key_id)

    def cached(self, presented: str) -> Verified | None:
        """A remembered verification (raises for a remembered bad key); None when not remembered."""
        self._refresh()
        found, verified = self.keys.cached(presented)
        if found and verified is None:
            raise Unauthorized("the API key is not valid (unknown, revoked or mistyped)")
        return verified

    def verify(self, presented: str) -> Verified:
        parsed = parse_key(presented)
        if parsed is None:
            raise Unauthorized("an API key looks like polis_<key-id>.<secret>; this one does not")
        with self._perm_lock:
            generation = self._generation
        record = self.departments.key(parsed[0])
        try:
            verified = None if record is None else self.keys.check_limited(
                presented, record.hash, record.department, record.key_digest
            )
        except Throttled as error:
            raise KeyChecksThrottled(error.key_id, error.retry_after_s) from None
        if verified is not None and record is not None and record.key_digest is None:
            # a key created before digests were kept: from now on its holder is never held back, in any process
            self.departments.record_key_digest(verified.key_id, key_digest(presented))
        with self._perm_lock:
            # A change noticed while we checked (a revocation by `polis admin` during argon2's tens of ms) dropped
            # what was remembered: remembering this answer now, read before the change, would bring the key back
            # for api_key_cache_s. The request itself began before the revocation and goes through.
            if generation == self._generation:
                self.keys.remember(presented, verified)
        if verified is None:
            raise Unauthorized("the API key is not valid (unknown, revoked or mistyped)")
        return verified

    def _refresh(self) -> None:
        """Another process (`polis admin`) changed grants or keys: forget what is remembered, so that a
        revoked key or grant stops working at once."""
        version = self.departments.data_version()
        with self._perm_lock:
            if version == self._version:
                return
            self._perms.clear()
            self._generation += 1
            self._version = version
        self.keys.forget()

    def permissions(self, department: str) -> Permissions:
        """The department's grants and the public department's: what anyone may do without a key, a key
        never takes away. Cached per department, so any change (a public grant included) drops them all."""
        self._refresh()
        with self._perm_lock:
            perms = self._perms.get(department)
            generation = self._generation
        if perms is None:
            own = self.departments.permissions(department).grants
            public = self.departments.permissions(PUBLIC).grants if department != PUBLIC else frozenset()
            perms = Permissions(department, own, public)
            with self._perm_lock:
                # a change while we read (a revocation) dropped the cache: keeping what we read would revive it
                if generation == self._generation:
                    self._perms[department] = perms
        return perms

    def allows(self, department: str, dataset: str, tier: str, action: str) -> bool:
        return self.permissions(department).allows(dataset, tier, action)

    def decide(
        self, who: Principal, dataset: str, tier: str, action: str, what: str, *, reason: str = ""
    ) -> bool:
        """Decide and audit one (dataset, tier, action); an allowed entry names the grant that allowed it."""
        grant = self.permissions(who.department).why(dataset, tier, action)
        self.audit.append(
            who=who.department, key=who.key_id, action=action, dataset=dataset, tier=tier, what=what,
            decision="deny" if grant is None else "allow", reason=reason or grant or "", unauthenticated=who.anonymous,
        )
        return grant is not None

    def require(self, who: Principal, dataset: str, tier: str, action: str, what: str) -> None:
        if not self.decide(who, dataset, tier, action, what):
            other = sorted(g.tier for g in self.permissions(who.department).grants
                           if g.dataset == dataset and g.action == action)
            held = f" (it holds {action} on '{dataset}' at {', '.join(other)} only)" if other else ""
            raise Forbidden(
                f"department '{who.department}' may not {action} dataset '{dataset}' at tier '{tier}'{held}",
                department=who.department, dataset=dataset, tier=tier, action=action,
            )

    def require_entities(self, who: Principal, entity_ids: Iterable[str], action: str, what: str) -> None:
        """Every dataset the entities belong to must allow `action` at its entity tier (one audit entry each)."""
        for dataset in sorted({dataset_of(i) for i in entity_ids}):
            self.require(who, dataset, entity_tier(dataset), action, what)

    def readable(self, who: Principal, what: str, action: str = "read") -> tuple[str, ...]:
        """The datasets whose entities `who` may read (queries are narrowed to them); 403 when none."""
        perms = self.permissions(who.department)
        datasets = tuple(sorted(perms.datasets_for(action, {d: i.entity_tier for d, i in DATASETS.items()}, DATASETS)))
        self.audit.append(
            who=who.department, key=who.key_id, action=action, dataset=",".join(datasets) or "-", tier="entity",
            what=what, decision="allow" if datasets else "deny", reason="query narrowed to these datasets",
            unauthenticated=who.anonymous,
        )
        if not datasets:
            # name what would be needed (the same for every query: nothing about which entities exist)
            needed = ", ".join(f"{d}/{i.entity_tier}" for d, i in DATASETS.items())
            mismatched = sorted(str(g) for g in perms.grants if g.action == action and g.dataset in DATASETS)
            held = f"; its grants {', '.join(mismatched)} are not at their dataset's entity tier" if mismatched else ""
            raise Forbidden(
                f"department '{who.department}' may not {action} entities of any dataset: each dataset's entities "
                f"need {action} at its entity tier ({needed}){held}",
                department=who.department, action=action,
            )
        return datasets

    def entity_filter(self, department: str, action: str = "read") -> frozenset[str]:
        """The datasets whose entities `department` may `action` (no audit: for notification filtering)."""
        perms = self.permissions(department)
        return perms.datasets_for(action, {d: i.entity_tier for d, i in DATASETS.items()}, DATASETS)

    def notification_allows(self, department: str | None, entity_id: str) -> bool:
        """Whether a subscription of `department` may carry this entity: its dataset must be granted for both
        read and subscribe at the entity tier. None = created in-process by the platform, not over the API.
        Only refusals are audited (the grant was audited when the subscription was created)."""
        if department is None:
            return True
        dataset = dataset_of(entity_id)
        tier = entity_tier(dataset)
        perms = self.permissions(department)
        if perms.allows(dataset, tier, "read") and perms.allows(dataset, tier, "subscribe"):
            return True
        self.audit.append(
            who=department, action="subscribe", dataset=dataset, tier=tier, what=f"notify {entity_id}",
            decision="deny", reason="left out of the notification",
        )
        return False

    def sensor_writable(self, datasets: Iterable[str], what: str) -> set[str]:
        """MQTT ingest writes as the `sensors` department: of these datasets, those it may write. One
        decision (and audit entry) per dataset per ingest group, not per message: groups hold thousands."""
        who = Principal(SENSORS, None)
        return {d for d in sorted(set(datasets)) if self.decide(who, d, entity_tier(d), "write", what)}


class KeyChecksThrottled(NgsiError):
    """HTTP 429: too many wrong secrets were presented for this key id of late, so this key is not checked now.

    The right key is not refused so (its digest is stored beside its hash, `KeyHasher.check_limited`), except a
    key created by an older Polis, before its first verification stores its digest. Not 401 all the same: the
    key was not checked, and 401 would tell that client to give up on it; 429 with Retry-After tells it to come
    back, and costs no argon2 check. It does say that the key id exists, which the time a wrong secret takes to
    refuse says already."""

    name = "TooManyRequests"
    status = 429
    title = "Too many requests"

    def __init__(self, key_id: str, retry_after_s: int) -> None:
        super().__init__(
            f"too many wrong secrets were presented for API key {key_id} just now; "
            f"try again in {retry_after_s} s (a right key is not held back, unless it was created by an older "
            "Polis and has not been verified since)"
        )
        self.headers = {"Retry-After": str(retry_after_s)}


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; a header of another form is 401."""
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    return value.strip()


def client_headers(settings: Settings) -> dict[str, str]:
    """What the CLI sends to a running hub: `POLIS_API_KEY`, else the admin key file of the data dir."""
    key = settings.api_key
    if key is None and settings.admin_key_path.is_file():
        key = settings.admin_key_path.read_text().strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def write_key_file(path: Path, key: str) -> None:
    """A key file only its owner can read, created that way (never world-readable, even for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    path.chmod(0o600)

