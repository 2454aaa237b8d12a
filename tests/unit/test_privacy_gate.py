"""The gate on trips and pings: identifiers become daily pseudonyms, quasi-identifiers are gone, times
are generalised to the hour and places to H3 cells, by the declared policy."""

from __future__ import annotations

import dataclasses

import h3
import numpy as np
import pytest

from polis.mobility.aggregate import count_trips
from polis.mobility.schema import PingBatch, Places, TripBatch
from polis.privacy.gate import gate_pings, gate_trips
from polis.privacy.policy import TRIP_POLICY, Action, action_for
from polis.privacy.pseudonyms import Pseudonymiser

GROVE = (40.71958612, -74.04311746)
NEWPORT = (40.7287448, -74.0321082)


def trips(n: int = 4) -> TripBatch:
    start = np.array(["2017-02-01T05:06:33", "2017-02-01T05:59:59", "2017-02-02T14:00:01", "2017-02-02T23:30:00"])
    end = np.array(["2017-02-01T05:13:49", "2017-02-01T06:10:00", "2017-02-02T14:20:00", "2017-02-03T00:10:00"])
    lat = np.array([GROVE[0], GROVE[0], NEWPORT[0], GROVE[0]])
    lon = np.array([GROVE[1], GROVE[1], NEWPORT[1], GROVE[1]])
    return TripBatch(
        dataset="t",
        start_time=start.astype("datetime64[s]")[:n],
        end_time=end.astype("datetime64[s]")[:n],
        start=Places(np.array(["3186", "3186", "3199", "3186"], dtype=object)[:n], lat[:n], lon[:n]),
        end=Places(np.array(["3199", "3199", "3186", "3199"], dtype=object)[:n], lat[::-1][:n], lon[::-1][:n]),
        identifiers={"bike_id": np.array(["24493", "24493", "24493", "26232"], dtype=object)[:n]},
        quasi_identifiers={"birth_year": np.array(["1988", "1962", "1972", "1990"], dtype=object)[:n]},
    )


def test_gated_trips_hold_no_identifier_quasi_identifier_or_exact_time() -> None:
    gated = gate_trips(trips(), Pseudonymiser(b"k" * 32), resolution=8, od_resolution=7, zone="America/New_York")
    fields = {f.name for f in dataclasses.fields(gated)}
    assert not fields & {"bike_id", "birth_year", "gender", "user_type", "start_time", "end_time"}
    assert gated.start_hour.dtype == np.dtype("datetime64[h]")
    assert str(gated.start_hour[0]) == "2017-02-01T05" and str(gated.end_hour[1]) == "2017-02-01T06"
    pseudonyms = gated.pseudonym.cast("string").to_pylist()
    assert pseudonyms[0] == pseudonyms[1]  # same bike, same local day
    assert pseudonyms[0] != pseudonyms[2]  # same bike, next day: unlinkable
    assert not any("24493" in p or "26232" in p for p in pseudonyms)
    assert gated.start_cell.cast("string").to_pylist()[0] == h3.latlng_to_cell(*GROVE, 8)
    assert gated.start_area.cast("string").to_pylist()[0] == h3.latlng_to_cell(*GROVE, 7)
    # 23:30 EST is 04:30 UTC the next day; the local day and window come from New York time.
    assert str(gated.start_day[3]) == "2017-02-02" and gated.start_window.tolist() == [0, 0, 1, 2]


def test_counts_follow_the_gated_records() -> None:
    counts = count_trips(gate_trips(trips(), Pseudonymiser(b"k" * 32), resolution=8, od_resolution=7, zone="UTC"))
    rows = counts.flows.to_pylist()
    grove_departures = [
        r for r in rows if r["unit"] == "station" and r["direction"] == "departures" and r["area"] == "3186"
    ]
    assert sorted(r["trips"] for r in grove_departures) == [1, 2]  # two in the 05:00 hour, one at 23:00
    assert sum(r["trips"] for r in counts.od.to_pylist()) == 4


def test_the_policy_declares_every_field_and_drops_unknown_ones() -> None:
    assert action_for("birth_year") is Action.DROP and action_for("gender") is Action.DROP
    assert action_for("bike_id") is Action.PSEUDONYMISE
    assert action_for("a_new_column_nobody_declared") is Action.DROP
    assert {r.field for r in TRIP_POLICY} >= {"bike_id", "birth_year", "gender", "start_time", "end_time"}


def test_an_identifier_the_policy_does_not_know_is_refused() -> None:
    batch = dataclasses.replace(trips(), identifiers={"passport": np.array(["X"] * 4, dtype=object)})
    with pytest.raises(ValueError, match="not declared as pseudonymised"):
        gate_trips(batch, Pseudonymiser(b"k" * 32), resolution=8, od_resolution=7, zone="UTC")


def test_pings_are_pseudonymised_and_generalised() -> None:
    pings = PingBatch(
        dataset="p",
        time=np.array(["2024-05-01T08:15:00", "2024-05-01T08:45:00"], dtype="datetime64[s]"),
        lat=np.array([GROVE[0], NEWPORT[0]]),
        lon=np.array([GROVE[1], NEWPORT[1]]),
        device=np.array(["+12015550143", "+12015550143"], dtype=object),
    )
    gated = gate_pings(pings, Pseudonymiser(b"k" * 32), resolution=9, zone="UTC")
    assert gated.hour.tolist() == [np.datetime64("2024-05-01T08", "h").astype(object)] * 2
    names = gated.pseudonym.cast("string").to_pylist()
    assert names[0] == names[1] and "2015550143" not in names[0]
    assert gated.cell.cast("string").to_pylist() == [h3.latlng_to_cell(*GROVE, 9), h3.latlng_to_cell(*NEWPORT, 9)]
