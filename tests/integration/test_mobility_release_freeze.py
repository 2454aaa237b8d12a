"""A day's products, once released, are released the same way for good: a load that changes the day's counts
(late data: a trip of the day before that ended on it, a month loaded again) does not change what the hub
releases about it, and `polis ingest` says which released days it changed. Released twice with different counts,
the difference of two totals was a count below k (review of 2026-11-30: 1 March's arrivals released as 758, then
759 after February was loaded; one cell's row 52 then 53, one trip). Real rows of the Citi Bike files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.mobility.citibike import DATASET
from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import admin_headers, key_headers, start_server, stop_server
from tests.integration.test_mobility_backfill import MARCH_1, SECRET, ingest, month_slice

FLOWS = f"/polis/v1/mobility/{DATASET}/flows"
OD = f"/polis/v1/mobility/{DATASET}/od"
REQUESTS: list[tuple[str, dict[str, str]]] = [
    (FLOWS, {"direction": "arrivals"}),
    (FLOWS, {"direction": "departures"}),
    (OD, {}),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """March's first trips alone, then the folder a backfill gives: the last of February's beside them."""
    root = tmp_path_factory.mktemp("freeze")
    month_slice(root / "mar", "201703", last=False)
    month_slice(root / "both", "201702", last=True)
    month_slice(root / "both", "201703", last=False)
    return {"mar": root / "mar", "both": root / "both"}


def one_line(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def released(url: str, headers: dict[str, str], day: str = str(MARCH_1)) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        answers = [client.get(path, params={"day": day, **params}) for path, params in REQUESTS]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    return [a.json() for a in answers]


def test_a_day_released_before_a_backfill_is_released_as_before_after_it(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """The reviewer's case over a real server: March loaded and 1 March served, then February loaded beside it
    (one of its trips ends on 1 March), the server restarted, the same requests again."""
    hub = tmp_path / "hub"
    ingest(hub, folders["mar"])
    env = {"POLIS_PSEUDONYM_SECRET": SECRET}
    server = start_server(hub, env=env)
    try:
        first = released(server.url, key_headers(hub))
    finally:
        stop_server(server.process)
    arrivals = first[0]
    assert arrivals["total"] == first[1]["total"] > 100  # the premise: 1 March's own trips, all ended that day

    said = one_line(ingest(hub, folders["both"]))
    assert "changed the counts of 1 day(s) already released, 2017-03-01" in said, said
    assert "frozen" in said and "2017-02-28" not in said.split("already released")[1], said

    server = start_server(hub, env=env)
    try:
        again = released(server.url, key_headers(hub))
        # A day not released before the load is released with its counts as they are now.
        february = released(server.url, key_headers(hub), day="2017-02-28")
    finally:
        stop_server(server.process)
    assert again == first
    assert february[1]["total"] > 100

    # Loading the same folder again changes no released day's counts: nothing to say.
    assert "already released" not in one_line(ingest(hub, folders["both"]))


@contextmanager
def served(hub: Path) -> Iterator[TestClient]:
    platform = Platform(Settings(data_dir=hub, pseudonym_secret=SECRET, dp_epsilon_budget=10.0))  # type: ignore[call-arg]
    try:
        with TestClient(create_app(platform), headers=admin_headers(platform)) as client:
            yield client
    finally:
        platform.close()


def hidden(body: dict[str, Any]) -> set[tuple[str, int, int]]:
    cells = {("cell", i, j) for i, row in enumerate(body["cells"]) for j, v in enumerate(row) if v is None}
    rows = {("row", i, 0) for i, v in enumerate(body["rowTotals"]) if v is None}
    columns = {("column", 0, j) for j, v in enumerate(body["columnTotals"]) if v is None}
    return cells | rows | columns | ({("total", 0, 0)} if body["total"] is None else set())


def test_a_noisy_release_freezes_its_day_and_noisy_releases_of_a_frozen_day_draw_on_its_frozen_counts(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    exact_hub, noisy_hub = tmp_path / "exact", tmp_path / "noisy"
    params = {"day": str(MARCH_1), "direction": "arrivals"}
    ingest(exact_hub, folders["mar"])
    with served(exact_hub) as api:
        march_only = api.get(FLOWS, params=params).json()  # what 1 March's arrivals were before the backfill

    ingest(noisy_hub, folders["mar"])
    with served(noisy_hub) as api:
        assert api.get(FLOWS, params={**params, "epsilon": "1"}).status_code == 200
    said = one_line(ingest(noisy_hub, folders["both"]))
    assert "already released, 2017-03-01" in said, said
    with served(noisy_hub) as api:
        exact = api.get(FLOWS, params=params).json()
        noisy = api.get(FLOWS, params={**params, "epsilon": "9"}).json()
        spent = api.get(f"/polis/v1/mobility/{DATASET}/summary").json()["epsilonSpent"]
    # The exact release after the backfill is the one the day had when the noisy release froze it.
    assert exact == march_only
    # A noisy release of the frozen day: laid out like it, hiding all it hides, charged its ε like any other.
    assert (noisy["rows"], noisy["columns"]) == (exact["rows"], exact["columns"])
    assert hidden(exact) <= hidden(noisy)
    assert noisy["differentialPrivacy"]["epsilon"] == 9
    assert spent == pytest.approx(10.0)


# -- the ε a release spends is read strictly (review of 2026-11-30: `epsilon=1_0` spent ε = 10, the whole budget) --


@pytest.fixture(scope="module")
def march_hub(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    hub = tmp_path_factory.mktemp("epsilon") / "hub"
    ingest(hub, folders["mar"])
    return hub


NOT_DECIMALS = ["1_0", "0_5", "\u0661", "１", " 1", "1 ", "+1", "0x1", "1.", ".", "1e", "nan", "inf", "1,5"]


def test_the_api_refuses_an_epsilon_that_is_not_a_plain_decimal_and_spends_nothing(march_hub: Path) -> None:
    with served(march_hub) as api:
        for text in NOT_DECIMALS:
            answer = api.get(FLOWS, params={"day": str(MARCH_1), "epsilon": text})
            assert answer.status_code == 400, (text, answer.text)
            assert answer.json()["title"] and repr(text) in answer.json()["detail"], answer.json()
        assert api.get(f"/polis/v1/mobility/{DATASET}/summary").json()["epsilonSpent"] == 0
        for text, spent in (("0.5", 0.5), ("1e-1", 0.6), (".25", 0.85)):  # decimals, an exponent too
            answer = api.get(OD, params={"day": str(MARCH_1), "epsilon": text})
            assert answer.status_code == 200, (text, answer.text)
            assert api.get(f"/polis/v1/mobility/{DATASET}/summary").json()["epsilonSpent"] == pytest.approx(spent)


@pytest.mark.parametrize("text", ["1_0", "\u0661"])
def test_polis_flows_refuses_such_an_epsilon_too(march_hub: Path, text: str) -> None:
    from typer.testing import CliRunner

    from polis.cli import app

    run = CliRunner().invoke(
        app, ["flows", "--day", str(MARCH_1), "--epsilon", text, "--data-dir", str(march_hub)], env={}
    )
    assert run.exit_code == 2, run.output
    assert "--epsilon must be a positive decimal number" in one_line(run.output), run.output


def test_a_noisy_release_refused_for_its_epsilon_does_not_freeze_the_day(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """Review of 2026-11-29: a release refused for budget froze its day anyway, so anyone with aggregate access
    could fix every held day's counts for good without anything being released."""
    hub = tmp_path / "hub"
    ingest(hub, folders["mar"])
    with served(hub) as api:
        for url, params in ((FLOWS, {"direction": "arrivals"}), (OD, {})):
            refused = api.get(url, params={"day": str(MARCH_1), "epsilon": "100000", **params})
            assert refused.status_code == 403 and "budget" in refused.json()["detail"], refused.text
        assert api.get(f"/polis/v1/mobility/{DATASET}/summary").json()["epsilonSpent"] == 0
    said = one_line(ingest(hub, folders["both"]))
    assert "already released" not in said, said  # the backfill changes 1 March's counts: it was never released
    with served(hub) as api:
        assert api.get(FLOWS, params={"day": str(MARCH_1), "direction": "arrivals"}).status_code == 200
