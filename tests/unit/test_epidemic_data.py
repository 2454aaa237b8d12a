"""Loading covid-europe-2020: Italy's extra columns, days without a movement file, names that match."""

from __future__ import annotations

import numpy as np

from polis.epidemic.data import load_country
from polis.settings import Settings


def test_italy_drops_its_index_and_id_columns() -> None:
    italy = load_country(Settings().datasets_dir, "Italy")
    assert italy.n_regions == 105 and italy.n_days == 103  # 2020-02-24 .. 2020-06-05; '' and 'id' are no days
    assert italy.regions[0] == "agrigento" and str(italy.dates[-1]) == "2020-06-05"


def test_days_without_a_movement_file_carry_flows_explicitly() -> None:
    spain = load_country(Settings().datasets_dir, "Spain")
    assert spain.n_days == 122 and int(spain.flow_observed.sum()) == 62
    first = int(np.argmax(spain.flow_observed))
    assert first == 21  # 2020-03-12, the first graph file: earlier days take its flows
    assert np.array_equal(spain.flows[0], spain.flows[first])
    gaps = np.flatnonzero(~spain.flow_observed[first:]) + first
    assert np.array_equal(spain.flows[gaps[0]], spain.flows[gaps[0] - 1])  # carried forward, not zero
    assert "carry the previous day's flows forward" in spain.flow_note()
    england = load_country(Settings().datasets_dir, "England")
    assert england.flow_observed.all() and england.flows.sum() > 0
