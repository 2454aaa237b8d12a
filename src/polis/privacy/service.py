"""The privacy side of the platform in one object: the mobility store, the ε ledger and the products,
built from settings (cheap; tables are created on first use)."""

from __future__ import annotations

from datetime import date
from typing import Any

from polis.domain.errors import ResourceNotFound
from polis.mobility.ingest import dataset_zone
from polis.mobility.products import DayTables, MobilityProducts, Unit, day_ranges
from polis.mobility.store import MobilityStore, ReleaseConfiguration
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
            pin_configuration=True,  # every release of the hub comes from here: one configuration per dataset
        )

    def release_configuration(self, dataset: str) -> ReleaseConfiguration:
        """What the dataset's releases are cut under: the configuration its first release pinned (a release under
        the settings is refused while they differ from it), else the settings'."""
        pinned = self.mobility.pinned_configuration(dataset)
        return pinned.configuration if pinned is not None else self.products(dataset).configuration

    def raw_trips(self, dataset: str, day: date) -> list[dict[str, Any]]:
        """The raw-pseudonymous tier: the gated trips that started on `day`, while retention keeps them; a day
        it does not hold (purged, or never held) is ResourceNotFound saying which days it still holds."""
        trips = self.mobility.raw_trips(dataset, day)
        if not trips:
            days = self.mobility.raw_days(dataset)
            raise ResourceNotFound(
                f"{dataset} holds no raw pseudonymous trips of {day}: raw trips are kept "
                f"{self.settings.raw_retention_days:g} days counted back from the newest data "
                f"({self.mobility.newest(dataset)} UTC; POLIS_RAW_RETENTION_DAYS), and those of {day_ranges(days)} "
                "are held now (the first of them in part); /flows and /od cover every day ingested"
            )
        return trips
