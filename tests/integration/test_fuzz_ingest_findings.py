"""Defects found by fuzzing the non-HTTP ingest paths (MQTT messages handed to the ingestor in process, and
the person-level trip files of `polis ingest citibike-jersey-city`). Each test states the documented
behaviour; they fail until the defect is fixed."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from pydantic import SecretStr

from polis.ingest.mqtt import MqttIngestor, ReceivedMessage
from polis.mobility.ingest import ingest_mobility
from polis.platform import Platform
from polis.settings import Settings
from polis.store.duckdb_ import DuckDBStore

AT = "2024-05-01T08:00:00Z"
CROWD = "urn:ngsi-ld:CrowdFlowObserved:fuzz"
TOPIC = f"polis/default/CrowdFlowObserved/{CROWD}"


# -- MQTT: messages handed straight to a never-started ingestor, as test_mqtt_columnar does ---------------


@pytest.fixture
def hub() -> Iterator[tuple[Platform, MqttIngestor]]:
    platform = Platform.in_memory()
    try:
        yield platform, MqttIngestor(platform, "mqtt://127.0.0.1:1")  # never started: groups are handed in
    finally:
        platform.close()


def _handle(ingestor: MqttIngestor, *messages: tuple[str, bytes]) -> None:
    ingestor._handle([ReceivedMessage(t, p, mid, 1, 0, time.time()) for mid, (t, p) in enumerate(messages, 1)])


def _nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "hidden",
    [{"contact": "gina.smith@example.org"}, {"licensePlate": "AB12CDE"}],
    ids=["e-mail-by-value", "licence-plate-by-name"],
)
def test_an_identifying_field_nested_below_the_privacy_scan_depth_is_refused(
    hub: tuple[Platform, MqttIngestor], hidden: dict[str, str]
) -> None:
    """messages.py: identifying fields are refused "at any depth of the payload". Payloads may nest 100
    levels (json_depth.MAX_DEPTH) but the refusal scan stops at 32 (refusal.MAX_DEPTH), so at 40 levels an
    e-mail address or a licence plate is stored in the entity and its history."""
    platform, ingestor = hub
    payload = orjson.dumps({"peopleCount": 40, "note": _nested(hidden, 40), "dateObserved": AT})
    _handle(ingestor, (TOPIC, payload))
    assert not platform.store.get("", [CROWD]), "the identifying payload was stored"
    [letter] = platform.store.dead_letters("mqtt")
    assert letter.reason.startswith("privacy:"), letter.reason
    assert next(iter(hidden.values())) not in letter.payload


@pytest.mark.parametrize("field", ["telephoneNumber", "mobileNumber", "contactPhoneNumber"])
def test_a_phone_number_sent_as_a_json_number_is_refused(hub: tuple[Platform, MqttIngestor], field: str) -> None:
    """refusal.py: phone numbers are refused by name; only a count or a level passes as a number. A phone
    field ending in "Number" is taken for a count (`_COUNT_TAIL`), so the number itself is stored."""
    platform, ingestor = hub
    _handle(ingestor, (TOPIC, orjson.dumps({"peopleCount": 40, field: 447911123456, "dateObserved": AT})))
    assert not platform.store.get("", [CROWD]), f"{field}: 447911123456 was stored"
    [letter] = platform.store.dead_letters("mqtt")
    assert letter.reason.startswith("privacy:") and field in letter.reason, letter.reason


_JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2).decode()


@pytest.mark.parametrize(
    ("payload", "secret"),
    [
        (b'{"peopleCount": 3, "licensePlate": "AB12CDE",}', "AB12CDE"),  # a trailing comma
        (b'{"peopleCount": 3, "personName": "Gina Smith\xff"}', "Gina Smith"),  # invalid UTF-8
        (b'{"peopleCount": 3, "image": "' + _JPEG.encode() + b'"', _JPEG[:40]),  # truncated
    ],
    ids=["plate-bad-json", "name-bad-utf8", "jpeg-truncated-json"],
)
def test_a_dead_letter_keeps_nothing_identifying_of_a_payload_that_is_not_json(
    hub: tuple[Platform, MqttIngestor], payload: bytes, secret: str
) -> None:
    """privacy.refusal.kept_payload: a dead letter keeps nothing of a message that would have been refused
    for privacy "had it not failed on something else first" (dead letters are read back through the API).
    For a payload that is not valid JSON only the value rules run over the raw text, so a licence plate,
    a person's name or a base64 image named by its field is kept verbatim."""
    platform, ingestor = hub
    _handle(ingestor, (TOPIC, payload))
    [letter] = platform.store.dead_letters("mqtt")
    assert letter.reason.startswith(("invalid JSON", "invalid UTF-8")), letter.reason
    assert secret not in letter.payload, letter.payload[:120]


# -- trip files (`polis ingest citibike-jersey-city`) through the privacy gate ----------------------------

_HEADER = (
    "tripduration,starttime,stoptime,start station id,start station name,start station latitude,"
    "start station longitude,end station id,end station name,end station latitude,end station longitude,"
    "bikeid,usertype,birth year,gender\n"
)


def _trip(
    start: str = "2017-02-01 08:06:33",
    end: str = "2017-02-01 08:16:33",
    station: str = "3186",
    name: str = "Grove St PATH",
    bike: str = "24493",
) -> str:
    return (
        f'600,{start},{end},{station},"{name}",40.71958612,-74.04311746,3199,"Newport PATH",'
        f"40.7287448,-74.0321082,{bike},Subscriber,1988,1\n"
    )


def _ingest_file(tmp_path: Path, extra_row: str, rows: str | None = None) -> tuple[Path, Any]:
    """Thirty ordinary trips (or `rows`) plus `extra_row` as a one-month trip file; (the hub's DuckDB file, the
    summary or the exception the ingest raised)."""
    folder = tmp_path / "datasets" / "mobility" / "citibike-jersey-city"
    folder.mkdir(parents=True)
    rows = rows if rows is not None else "".join(_trip(bike=str(20000 + n)) for n in range(30))
    (folder / "JC-201702-citibike-tripdata.csv").write_text(_HEADER + rows + extra_row)
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir, datasets_dir=tmp_path / "datasets", pseudonym_secret=SecretStr("s" * 32))
    store = DuckDBStore(data_dir / "polis.duckdb")
    outcome: Any
    try:
        outcome = ingest_mobility(settings, store, "citibike-jersey-city")
    except Exception as error:
        outcome = error
    finally:
        store.close()
    return data_dir / "polis.duckdb", outcome


def _assert_clear_or_ingested(outcome: Any, trips: int) -> None:
    """Either the file is ingested, or the error is a ValueError naming the file (not a library's internals)."""
    if isinstance(outcome, Exception):
        assert type(outcome) is ValueError and "JC-201702-citibike-tripdata.csv" in str(outcome), repr(outcome)
    else:
        assert outcome.trips == trips


def test_a_trip_without_a_station_id_does_not_crash_the_aggregation(tmp_path: Path) -> None:
    """schema.Places: the station is "" where the source has none. An empty (or NULL) station id is read as a
    null; the dictionary's null index becomes NaN in aggregate._codes (aggregate.py:27, a RuntimeWarning, an
    error under this suite's filterwarnings) and count_trips then fails with ArrowIndexError 'Index
    -9223372036854775808 out of bounds' (aggregate.py:38)."""
    _, outcome = _ingest_file(tmp_path, _trip(station=""))
    _assert_clear_or_ingested(outcome, 31)


def test_a_trip_without_a_bike_id_does_not_crash_the_pseudonymiser(tmp_path: Path) -> None:
    """A trip whose bikeid is empty/NULL fails in the gate with ArrowInvalid 'Needed to copy 1 chunks with 1
    nulls, but zero_copy_only was True' (pseudonyms.py:80): it should be gated (or refused with a clear error)."""
    _, outcome = _ingest_file(tmp_path, _trip(bike="NULL"))
    _assert_clear_or_ingested(outcome, 31)


@pytest.mark.parametrize(
    "when",
    [("0001-01-01 00:00:00", "0001-01-01 00:10:00"), ("9999-12-31 23:00:00", "9999-12-31 23:59:59")],
    ids=["year-1", "year-9999"],
)
def test_a_trip_time_at_the_ends_of_the_calendar_gets_a_clear_error(tmp_path: Path, when: tuple[str, str]) -> None:
    """Year 1 fails with ValueError 'ordinal must be >= 1' (pseudonyms.py:93); year 9999 with DuckDB's
    ConversionException 'Unimplemented type for cast (BIGINT -> TIMESTAMP)' (mobility/store.py:141, rolled
    back). Neither says which file or value is wrong."""
    _, outcome = _ingest_file(tmp_path, _trip(start=when[0], end=when[1]))
    _assert_clear_or_ingested(outcome, 31)


def test_an_unreadable_trip_time_is_named_in_the_error(tmp_path: Path) -> None:
    """citibike._utc_seconds reports a column in no known format with `text[0]`, the file's first time, which
    is a good one ('e.g. 2017-02-01 08:06:33'), not the value that failed."""
    _, outcome = _ingest_file(tmp_path, _trip(start="yesterday"))
    assert isinstance(outcome, ValueError), repr(outcome)
    assert "yesterday" in str(outcome), str(outcome)


@pytest.mark.parametrize(
    ("row", "secret"),
    [
        (_trip(station="9999", name="Gina Smith gina.smith@example.org"), "example.org"),
        (_trip(station="a4:5e:60:12:9b:01"), "a4:5e:60"),
    ],
    ids=["e-mail-in-station-name", "mac-address-as-station-id"],
)
def test_identifying_station_ids_and_names_are_not_stored(tmp_path: Path, row: str, secret: str) -> None:
    """The gate keeps stations as public infrastructure, verbatim: an e-mail address in a station name lands in
    mobility_areas.name, a MAC address as a station id in mobility_areas, mobility_flows and mobility_trips
    (released by the flows API). Identifiers are refused at the door on every path; nothing of them may be
    stored (refusing the file, or withholding the value, are both fine)."""
    database, _ = _ingest_file(tmp_path, row)
    con = duckdb.connect(str(database), read_only=True)
    try:
        found = []
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            for column, kind, *_ in con.execute(f'DESCRIBE "{table}"').fetchall():
                if kind == "VARCHAR":
                    sql = f'SELECT count(*) FROM "{table}" WHERE "{column}" LIKE ?'
                    if con.execute(sql, [f"%{secret}%"]).fetchall()[0][0]:
                        found.append(f"{table}.{column}")
    finally:
        con.close()
    assert found == [], f"{secret!r} stored in {found}"


def test_trip_times_with_fractions_of_a_second_are_read(tmp_path: Path) -> None:
    """Newer Citi Bike files write times such as 2017-02-01 08:06:33.4340: the CSV reader types the column as
    a timestamp with fractions, which the conversion to whole seconds must take (truncating), not refuse."""
    rows = "".join(
        _trip(start="2017-02-01 08:06:33.4340", end="2017-02-01 08:16:33.9990", bike=str(20000 + n)) for n in range(30)
    )
    _, outcome = _ingest_file(tmp_path, "", rows=rows)
    assert not isinstance(outcome, Exception), repr(outcome)
    assert outcome.trips == 30
