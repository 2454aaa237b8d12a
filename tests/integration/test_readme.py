"""The README's tour runs, in order, against a real server holding the demo city."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from polis.ingest.datasets import ingest, load_dataset
from polis.ngsi_ld.entities import utc_now
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore
from tests.conftest import Server, start_server, stop_server

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_URL = "http://127.0.0.1:8000"


def tour_commands() -> list[str]:
    """Every command of the `sh` blocks in the tour section, continuation lines joined."""
    text = README.read_text()
    tour = text.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", tour, flags=re.S):
        # A command starts at a line beginning with `curl`; what follows (continuations, multi-line JSON) is its own.
        for line in block.splitlines(keepends=True):
            if line.startswith("curl ") or not commands:
                commands.append(line)
            else:
                commands[-1] += line
    commands = [c.strip() for c in commands]
    return commands


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("demo")
    settings = Settings()
    store = DuckDBStore(data_dir / "polis.duckdb")
    for name in ("los-loop", "melbourne-pedestrians"):
        ingest(store, "", load_dataset(name, settings.datasets_dir, utc_now()))
    store.close()
    srv = start_server(data_dir)
    yield srv
    stop_server(srv.process)


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().split("## ", 1)[0]
    assert "make run" in head and "make test" in head


def test_tour_commands_all_succeed(demo_server: Server) -> None:
    commands = tour_commands()
    assert len(commands) >= 8, "the tour lost its examples"
    outputs = []
    # What the tour's `export POLIS_API_KEY=$(cat polis-data/admin.key)` does, for this server's data dir.
    env = {**os.environ, "POLIS_API_KEY": (demo_server.data_dir / "admin.key").read_text().strip()}
    for command in commands:
        assert command.startswith("curl "), command
        done = subprocess.run(
            ["bash", "-c", command.replace(DEFAULT_URL, demo_server.url)],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert done.returncode == 0, f"{command}\n-> {done.returncode} {done.stdout} {done.stderr}"
        outputs.append(json.loads(done.stdout) if done.stdout.strip() else None)
    by_command = dict(zip(commands, outputs, strict=True))
    types = next(o for c, o in by_command.items() if c.endswith("/types'"))
    assert {"TrafficFlowObserved", "CrowdFlowObserved"} <= {t.rsplit("/", 1)[-1] for t in types["typeList"]}
    slow = next(o for c, o in by_command.items() if "averageVehicleSpeed<50" in c)
    assert 0 < len(slow) <= 5 and all(e["averageVehicleSpeed"] < 50 for e in slow)
    week = next(o for c, o in by_command.items() if "lastN=36" in c)
    assert len(week["averageVehicleSpeed"]["values"]) == 36
    aggregated = next(o for c, o in by_command.items() if "aggregatedValues" in c)
    assert len(aggregated) == 1 and len(aggregated[0]["peopleCount"]["avg"]) == 4
    keyvalues = next(o for c, o in by_command.items() if "options=keyValues'" in c)
    assert keyvalues["peopleCount"] == 812
    problem = outputs[-1]
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData" and problem["status"] == 400
