"""Grants: a department may do an action on one tier of one dataset. Anything not granted is denied.

A grant names a dataset (or `*`, every dataset), a tier (or `*`) and an action (or `*`). Wildcards exist
for the bootstrap `admin` department; ordinary grants name all three.

Tiers run from the finest to the coarsest, each made from the one before it: raw-pseudonymous ->
aggregate -> public. Reading a tier therefore includes reading the coarser tiers the same dataset is
served at (a department that may read Citi Bike flows may read the public summary of the same trips).
Only `read`: writing or administering one tier says nothing about another."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from polis.access.datasets import known_datasets, served_tiers

Tier = Literal["raw-pseudonymous", "aggregate", "public"]
Action = Literal["read", "write", "subscribe", "administer"]
TIERS: tuple[str, ...] = get_args(Tier)  # finest first
ACTIONS: tuple[str, ...] = get_args(Action)
ANY = "*"
READ = "read"


def _coarser(tier: str, than: str) -> bool:
    return tier in TIERS and than in TIERS and TIERS.index(tier) > TIERS.index(than)


@dataclass(frozen=True, slots=True)
class Grant:
    dataset: str
    tier: str
    action: str

    def covers(self, dataset: str, tier: str, action: str) -> bool:
        if self.dataset not in (ANY, dataset) or self.action not in (ANY, action):
            return False
        if self.tier in (ANY, tier):
            return True
        return action == READ and _coarser(tier, than=self.tier) and tier in served_tiers(dataset)

    def __str__(self) -> str:
        return f"{self.action} {self.dataset}/{self.tier}"


def check_grant(dataset: str, tier: str, action: str) -> Grant:
    """A grant with known tier and action names and a well-formed dataset name (`never_applies` checks
    that the dataset is held at that tier)."""
    if tier != ANY and tier not in TIERS:
        raise ValueError(f"unknown tier '{tier}'; tiers are {', '.join(TIERS)} (or *)")
    if action != ANY and action not in ACTIONS:
        raise ValueError(f"unknown action '{action}'; actions are {', '.join(ACTIONS)} (or *)")
    if not dataset or any(c.isspace() for c in dataset):
        raise ValueError(f"a dataset name is non-empty without spaces, got '{dataset}'")
    return Grant(dataset, tier, action)


def never_applies(grant: Grant) -> str | None:
    """Why `grant` could never allow anything (None: it can). Wildcards apply to whatever there is."""
    if grant.dataset == ANY:
        return None
    tiers = [t for t in TIERS if t in served_tiers(grant.dataset)]
    if not tiers:
        return f"no dataset '{grant.dataset}'; datasets are {', '.join(known_datasets())} (or *)"
    if grant.tier != ANY and grant.tier not in tiers:
        return (
            f"dataset '{grant.dataset}' has no tier '{grant.tier}', so the grant would never apply; "
            f"its tiers: {', '.join(tiers)}"
        )
    return None


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one department may do, asked by (dataset, tier, action): its own grants, and those of the
    `public` department, which every department holds too (a key never gives less than no key)."""

    department: str
    grants: frozenset[Grant]  # its own
    inherited: frozenset[Grant] = field(default_factory=frozenset)  # the public department's

    def allows(self, dataset: str, tier: str, action: str) -> bool:
        return self.why(dataset, tier, action) is not None

    def why(self, dataset: str, tier: str, action: str) -> str | None:
        """The grant that allows this, as the audit log records it; None: denied."""
        for grant in self.grants:
            if grant.covers(dataset, tier, action):
                return f"grant {grant}"
        for grant in self.inherited:
            if grant.covers(dataset, tier, action):
                return f"grant {grant} of public"
        return None

    def datasets_for(self, action: str, tier_of: dict[str, str], known: Iterable[str]) -> frozenset[str]:
        """Of the `known` datasets, those this department may `action` at the tier each is held at."""
        return frozenset(d for d in known if self.allows(d, tier_of.get(d, "aggregate"), action))

    def has_any(self, action: str) -> bool:
        return any(g.action in (ANY, action) for g in self.grants | self.inherited)
