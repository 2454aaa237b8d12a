"""The covid-europe-2020 loaders take counts that are numbers of 0 or more, or refuse the file naming path and
line: a NaN, infinite or negative count (or a labels file cut short) is never ingested silently, nor left
to make a pair of regions vanish, nor to crash the ingest with an IndexError."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from polis.epidemic import hub
from polis.epidemic.data import DATASET_FOLDER, load_country
from polis.settings import Settings

DAYS = [(date(2020, 3, 1) + timedelta(days=k)).isoformat() for k in range(3)]


def _write(root: Path, cases: dict[str, list[str]], flows: dict[str, list[str]]) -> Path:
    """A one-country (Italy) copy of the dataset's layout: labels and one graph file per day in `flows`."""
    folder = root / DATASET_FOLDER / "Italy"
    (folder / "graphs").mkdir(parents=True)
    lines = [",name," + ",".join(DAYS)] + [f"{k},{name}," + ",".join(v) for k, (name, v) in enumerate(cases.items())]
    (folder / "italy_labels.csv").write_text("\n".join(lines) + "\n")
    for day, rows in flows.items():
        (folder / "graphs" / f"IT_{day}.csv").write_text("\n".join(rows) + "\n")
    return folder


CASES = {"parma": ["1", "2", "3"], "lecce": ["0", "4", "5"]}
FLOWS = {d: ["parma,parma,100", "lecce,lecce,80", "lecce,parma,5"] for d in DAYS}


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "-5", "abc"])
def test_a_bad_case_count_is_refused_naming_path_and_line(tmp_path: Path, bad: str) -> None:
    folder = _write(tmp_path, {**CASES, "lecce": ["0", bad, "5"]}, FLOWS)
    with pytest.raises(ValueError, match=rf"italy_labels\.csv:3: case count '{bad}'"):
        load_country(tmp_path, "Italy")
    assert folder.is_dir()


@pytest.mark.parametrize("bad", ["nan", "inf", "-1500", "lots"])
def test_a_bad_flow_count_is_refused_naming_path_and_line(tmp_path: Path, bad: str) -> None:
    flows = {**FLOWS, DAYS[1]: [*FLOWS[DAYS[1]], f"parma,lecce,{bad}"]}
    _write(tmp_path, CASES, flows)
    with pytest.raises(ValueError, match=rf"IT_{DAYS[1]}\.csv:4: flow count '{bad}'"):
        load_country(tmp_path, "Italy")


def test_flows_adding_up_past_a_float_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, CASES, {**FLOWS, DAYS[0]: [*FLOWS[DAYS[0]], "parma,lecce,1e308", "parma,lecce,1e308"]})
    with pytest.raises(ValueError, match=rf"IT_{DAYS[0]}\.csv:5: the flow counts of parma -> lecce add up"):
        load_country(tmp_path, "Italy")


def test_a_pair_moving_on_any_day_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # parma -> lecce moves on the middle day only; an empty cell of cases is 0
    flows = {**FLOWS, DAYS[1]: [*FLOWS[DAYS[1]], "parma,lecce,7"]}
    _write(tmp_path, {**CASES, "parma": ["1", "", "3"]}, flows)
    for contexts in ("smart-data-models", "ngsi-ld"):  # the @contexts the ingest reads its terms from
        (tmp_path / contexts).symlink_to((Settings().datasets_dir / contexts).resolve())
    monkeypatch.setattr(hub, "COUNTRIES", {"Italy": "IT"})  # this copy holds Italy alone
    held = {e["id"] for e in hub.load_covid_europe(tmp_path, "2026-01-01T00:00:00Z").entities}
    assert hub.flow_id("Italy", "parma", "lecce") in held
    assert hub.flow_id("Italy", "lecce", "parma") in held


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"italy_labels\.csv: the file is empty"),
        (",name," + ",".join(DAYS) + "\n", r"italy_labels\.csv: no regions below the header"),
        (",name," + ",".join(DAYS) + "\n0,parma,1,2,3\n1,lecce,0,4", r"italy_labels\.csv:3: 4 field\(s\)"),
    ],
)
def test_an_empty_or_truncated_labels_file_is_a_clean_message(tmp_path: Path, text: str, message: str) -> None:
    folder = _write(tmp_path, CASES, FLOWS)
    (folder / "italy_labels.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_country(tmp_path, "Italy")
