"""Grants: a department may do an action on one tier of one dataset. Anything not granted is denied.

A grant names a dataset (or `*`, every dataset), a tier (or `*`) and an action (or `*`). Wildcards exist
for the bootstrap `admin` department; ordinary grants name all three."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

Tier = Literal["raw-pseudonymous", "aggregate", "public"]
Action = Literal["read", "write", "subscribe", "administer"]
TIERS: tuple[str, ...] = get_args(Tier)
ACTIONS: tuple[str, ...] = get_args(Action)
ANY = "*"


@dataclass(frozen=True, slots=True)
class Grant:
    dataset: str
    tier: str
    action: str

    def covers(self, dataset: str, tier: str, action: str) -> bool:
        return (
            self.dataset in (ANY, dataset) and self.tier in (ANY, tier) and self.action in (ANY, action)
        )

    def __str__(self) -> str:
        return f"{self.action} {self.dataset}/{self.tier}"


def check_grant(dataset: str, tier: str, action: str) -> Grant:
    """A grant with known tier and action names (datasets are open-ended: a city adds its own)."""
    if tier != ANY and tier not in TIERS:
        raise ValueError(f"unknown tier '{tier}'; tiers are {', '.join(TIERS)} (or *)")
    if action != ANY and action not in ACTIONS:
        raise ValueError(f"unknown action '{action}'; actions are {', '.join(ACTIONS)} (or *)")
    if not dataset or any(c.isspace() for c in dataset):
        raise ValueError(f"a dataset name is non-empty without spaces, got '{dataset}'")
    return Grant(dataset, tier, action)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one department may do: its grants, asked by (dataset, tier, action)."""

    department: str
    grants: frozenset[Grant]

    def allows(self, dataset: str, tier: str, action: str) -> bool:
        return any(g.covers(dataset, tier, action) for g in self.grants)

    def datasets_for(self, action: str, tier_of: dict[str, str], known: Iterable[str]) -> frozenset[str]:
        """Of the `known` datasets, those this department may `action` at the tier each is held at."""
        return frozenset(d for d in known if self.allows(d, tier_of.get(d, "aggregate"), action))

    def has_any(self, action: str) -> bool:
        return any(g.action in (ANY, action) for g in self.grants)
