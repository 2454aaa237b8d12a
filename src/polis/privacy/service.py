"""The privacy side of the platform in one object: the mobility store, the ε ledger and the products,
built from settings (cheap; tables are created on first use)."""

from __future__ import annotations

from typing import Any

from polis.mobility.ingest import dataset_zone
from polis.mobility.products import DayTables, MobilityProducts, Unit
from polis.mobility.store import MobilityStore
from polis.privacy.dp import BudgetLedger
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore


class PrivacyService:
    def __init__(self, store: DuckDBStore, settings: Settings) -> None:
        self.settings = settings
        self.mobility = MobilityStore(store)
        self.ledger = BudgetLedger(store, settings.dp_epsilon_budget)
        self._day_tables: dict[Any, DayTables] = {}  # joint suppression results, see MobilityProducts.day_tables

    def products(self, dataset: str) -> MobilityProducts:
        return MobilityProducts(
            self.mobility,
            self.ledger,
            k=self.settings.suppression_k,
            zone=dataset_zone(dataset),
            flows_unit=Unit(self.settings.flows_unit),
            od_window_hours=self.settings.od_window_hours,
            cache=self._day_tables,
        )
