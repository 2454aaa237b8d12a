"""`polis ingest` on damaged copies of the public files: every one is refused with a line naming the file (and,
for text, the line), never a traceback or a bare parser message; a byte-order mark is no damage; a file that
parses but cannot be the published table (a flat speed array, a point off the globe) is refused too, not
ingested. Each test damages a small copy in tmp_path: a few lines of each real file and the two contexts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from polis.ingest.datasets import load_dataset
from polis.settings import Settings

NOW = "2026-01-01T00:00:00.000000Z"
LOS = Path("traffic/los-loop")
SPEEDS, LOCATIONS = LOS / "los_speed.csv", LOS / "sensor_locations.csv"
SZ = Path("traffic/sz-taxi/SZ_taxi.npz")
MEL = Path("crowd/melbourne-pedestrians")
COUNTS, SENSORS = MEL / "counts.csv", MEL / "sensors.csv"
CALLS = Path("emergency/montgomery-911/calls.csv")
DATASET_OF = {SPEEDS: "los-loop", LOCATIONS: "los-loop", SZ: "sz-taxi", COUNTS: "melbourne-pedestrians",
              SENSORS: "melbourne-pedestrians", CALLS: "montgomery-911"}


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    """A datasets folder holding the first lines of each real file (whole small ones) and a small SZ array."""
    shared = Settings().datasets_dir
    if not (shared / SPEEDS).is_file():
        pytest.skip(f"public datasets not found under {shared}")
    folder = tmp_path / "datasets"
    shutil.copytree(shared / "ngsi-ld", folder / "ngsi-ld")
    shutil.copytree(shared / "smart-data-models" / "contexts", folder / "smart-data-models" / "contexts")
    for relative, lines in ((SPEEDS, 5), (LOCATIONS, None), (COUNTS, 5), (SENSORS, None), (CALLS, 5)):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        with (shared / relative).open("rb") as source:
            (folder / relative).write_bytes(b"".join(source.readlines()[:lines]))
    (folder / SZ).parent.mkdir(parents=True)
    np.savez(folder / SZ, data=np.arange(1.0, 13.0).reshape(4, 3, 1))  # 4 steps of 3 roads, as published
    return folder


def _edit_line(path: Path, number: int, edit: Callable[[bytes], bytes]) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = edit(lines[number - 1])
    path.write_bytes(b"".join(lines))


def _cell(line: bytes, index: int, text: bytes) -> bytes:
    fields = line.split(b",")
    fields[index] = text
    return b",".join(fields)


def _refused(datasets: Path, relative: Path, *fragments: str) -> str:
    with pytest.raises(ValueError) as refused:
        load_dataset(DATASET_OF[relative], datasets, NOW)
    message = str(refused.value)
    assert str(datasets / relative) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_the_small_copies_load(datasets: Path) -> None:
    assert len(load_dataset("los-loop", datasets, NOW).history) == 4 * 207
    assert len(load_dataset("sz-taxi", datasets, NOW).history) == 12
    assert len(load_dataset("melbourne-pedestrians", datasets, NOW).entities) == 55
    assert len(load_dataset("montgomery-911", datasets, NOW).entities) == 5


# ---------------------------------------------------------------------------------------------- A: tracebacks


def test_a_location_row_missing_a_field_names_its_line(datasets: Path) -> None:  # was IndexError
    _edit_line(datasets / LOCATIONS, 3, lambda line: line.replace(b",-118.23799", b""))
    _refused(datasets, LOCATIONS, "lines [3] do not have 4 fields")


def test_a_truncated_npz_is_not_a_zip(datasets: Path) -> None:  # was BadZipFile
    path = datasets / SZ
    path.write_bytes(path.read_bytes()[:200])
    _refused(datasets, SZ, "not a NumPy .npz archive")


def test_an_npz_without_data_names_what_it_holds(datasets: Path) -> None:  # was KeyError
    np.savez(datasets / SZ, other=np.zeros(3))
    _refused(datasets, SZ, "no array named 'data'", "other")


def test_sensors_without_a_longitude_column_names_the_header(datasets: Path) -> None:  # was KeyError
    _edit_line(datasets / SENSORS, 1, lambda line: line.replace(b"longitude", b"lng"))
    _refused(datasets, SENSORS, ":1:", "longitude")


def test_an_empty_counts_file_is_refused(datasets: Path) -> None:  # was IndexError
    (datasets / COUNTS).write_bytes(b"")
    _refused(datasets, COUNTS, "empty")


@pytest.mark.parametrize("relative", [SENSORS, SPEEDS, CALLS, COUNTS], ids=["sensors", "speeds", "calls", "counts"])
def test_a_byte_order_mark_is_no_damage(datasets: Path, relative: Path) -> None:  # sensors.csv: was KeyError
    clean = load_dataset(DATASET_OF[relative], datasets, NOW)
    path = datasets / relative
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    marked = load_dataset(DATASET_OF[relative], datasets, NOW)
    assert [e["id"] for e in marked.entities] == [e["id"] for e in clean.entities]
    assert len(marked.history) == len(clean.history)


# ---------------------------------------------------------------------------------------------- B: file and line


@pytest.mark.parametrize(
    ("relative", "line", "edit", "fragments"),
    [
        (SPEEDS, 3, lambda b: _cell(b, 0, b"abc"), ["column '773869' holds 'abc'"]),
        (COUNTS, 4, lambda b: _cell(b, 1, b"abc"), ["column 'Bou292_T' holds 'abc'"]),
        (COUNTS, 5, lambda b: _cell(b, 0, b"notatime"), ["'notatime' is not a date and time"]),
        (LOCATIONS, 3, lambda b: b.replace(b"34.11621", b"north"), ["'north'"]),
        (SENSORS, 2, lambda b: b.replace(b"Bou292_T", b"Bou292\xe9"), ["not UTF-8"]),
        (CALLS, 2, lambda b: b.replace(b"NORRISTOWN", b"NORRIST\xd6WN"), ["not UTF-8"]),
        (CALLS, 3, lambda b: _cell(b, 3, b"yesterday"), ["'yesterday' is not a date and time"]),
        (CALLS, 4, lambda b: b.rstrip(b"\n") + b"A" * 200_000 + b"\n", ["field larger than field limit"]),
        (SPEEDS, 4, lambda b: b[:40] + b"\n", ["do not have 207 fields"]),
    ],
    ids=["speed-text", "count-text", "count-time", "location-text", "sensors-latin1", "calls-latin1", "call-time",
         "call-huge-field", "speeds-truncated"],
)
def test_a_bad_line_is_named_with_its_file(
    datasets: Path, relative: Path, line: int, edit: Callable[[bytes], bytes], fragments: list[str]
) -> None:
    _edit_line(datasets / relative, line, edit)
    message = _refused(datasets, relative, *fragments)
    assert f":{line}:" in message or f"[{line}]" in message, message


def test_a_header_only_speed_file_says_it_has_no_readings(datasets: Path) -> None:  # was "argmax of an empty ..."
    path = datasets / SPEEDS
    path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])
    _refused(datasets, SPEEDS, "no readings")


def test_a_text_file_named_npz_is_not_called_a_pickle(datasets: Path) -> None:
    (datasets / SZ).write_text("hello\n")
    message = _refused(datasets, SZ, "not a NumPy .npz archive")
    assert "pickle" not in message


# ---------------------------------------------------------------------------------------------- C: not the table


@pytest.mark.parametrize("shape", [(12,), (4, 3, 2), (0, 3, 1)])
def test_a_speed_array_of_another_shape_is_refused(datasets: Path, shape: tuple[int, ...]) -> None:
    np.savez(datasets / SZ, data=np.ones(shape))  # (12,) was ingested as one road with no readings
    _refused(datasets, SZ, f"shape {shape}")


@pytest.mark.parametrize(("relative", "line", "old", "new"), [
    (CALLS, 2, b"-75.3383233", b"-975.3"),
    (CALLS, 3, b"40.", b"140."),
    (SENSORS, 2, b"144.96515323", b"444.96515323"),
    (LOCATIONS, 2, b"34.15497", b"nan"),
])
def test_a_point_off_the_globe_is_refused(datasets: Path, relative: Path, line: int, old: bytes, new: bytes) -> None:
    _edit_line(datasets / relative, line, lambda b: b.replace(old, new, 1))
    _refused(datasets, relative, f":{line}:", "off the globe")


# ---------------------------------------------------------------------------------------------- the command


def test_polis_ingest_prints_one_line_not_a_traceback(datasets: Path, tmp_path: Path) -> None:
    _edit_line(datasets / SENSORS, 1, lambda line: line.replace(b"longitude", b"lng"))
    env = {**os.environ, "POLIS_DATASETS_DIR": str(datasets), "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "polis.cli", "ingest", "melbourne-pedestrians", "--data-dir",
                           str(tmp_path / "hub")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().startswith("melbourne-pedestrians: not ingested: ") and str(datasets / SENSORS) in \
        done.stderr, done.stderr
    assert not (tmp_path / "hub").exists()  # a refused load leaves no empty hub behind
