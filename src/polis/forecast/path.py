"""The shape of one issued forecast, shared with consumers such as the alerts engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ForecastPath", "ForecastPoint"]


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """One step of a forecast: the predicted value at ``valid_at`` and its 80 % interval."""

    valid_at: datetime
    value: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True)
class ForecastPath:
    """Every step a model predicted for one attribute of one entity, issued at ``issued_at``."""

    entity_id: str
    attribute: str
    model: str
    issued_at: datetime
    points: tuple[ForecastPoint, ...]
