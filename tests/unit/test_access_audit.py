"""The audit log is a hash chain: any change to a past entry (edit, deletion, insertion, reordering) is found
by `verify`, and cutting off the end is found against a recorded head."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from polis.access.audit import AuditLog, verify


def _log(path: Path, n: int) -> list[dict[str, object]]:
    log = AuditLog(path)
    entries = [
        log.append(who=f"dept{i % 3}", action="read", dataset="los-loop", tier="aggregate", what=f"GET /x/{i}",
                   decision="allow" if i % 2 else "deny", key=f"k{i}")
        for i in range(n)
    ]
    log.close()
    return entries


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_untouched_log_verifies_and_reports_its_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entries = _log(path, 20)
    result = verify(path)
    assert result.ok and result.entries == 20 and result.head == entries[-1]["hash"]
    assert verify(path, expected_head=str(entries[-1]["hash"])).ok


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("field,value", [("decision", "allow"), ("who", "admin"), ("dataset", "montgomery-911"),
                                         ("at", "2020-01-01T00:00:00Z"), ("what", "GET /elsewhere")])
def test_editing_any_field_of_a_past_entry_is_detected(tmp_path: Path, field: str, value: str) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 10)
    lines = _lines(path)
    entry = orjson.loads(lines[4])
    entry[field] = value if entry[field] != value else value + "!"
    lines[4] = orjson.dumps(entry) + b"\n"
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok and result.entries == 4 and "line 5" in (result.problem or "")


def test_an_edit_that_recomputes_its_own_hash_still_breaks_the_next_link(tmp_path: Path) -> None:
    from polis.access.audit import entry_hash

    path = tmp_path / "audit.jsonl"
    _log(path, 10)
    lines = _lines(path)
    entry = orjson.loads(lines[3])
    entry["decision"] = "allow" if entry["decision"] == "deny" else "deny"
    entry["hash"] = entry_hash(entry["prev"], entry)
    lines[3] = orjson.dumps(entry) + b"\n"
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok and "line 5" in (result.problem or "")


def test_deleting_an_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 10)
    lines = _lines(path)
    del lines[6]
    _rewrite(path, lines)
    result = verify(path)
    assert not result.ok and result.entries == 6 and "line 7" in (result.problem or "")


def test_reordering_entries_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 10)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _rewrite(path, lines)
    assert not verify(path).ok


def test_inserting_a_forged_entry_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 5)
    lines = _lines(path)
    lines.insert(2, lines[1])
    _rewrite(path, lines)
    assert not verify(path).ok


def test_cutting_off_the_end_is_detected_against_a_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entries = _log(path, 10)
    _rewrite(path, _lines(path)[:7])
    assert verify(path).ok  # a shorter chain is still a chain...
    result = verify(path, expected_head=str(entries[-1]["hash"]))
    assert not result.ok and "cut off" in (result.problem or "")  # ...but not the one recorded


def test_a_garbage_line_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _log(path, 3)
    path.write_bytes(path.read_bytes() + b"{not json\n")
    result = verify(path)
    assert not result.ok and result.entries == 3 and "line 4" in (result.problem or "")


def test_two_writers_on_one_file_keep_one_chain(tmp_path: Path) -> None:
    """The server and `polis admin` append to the same file: each sees what the other wrote."""
    path = tmp_path / "audit.jsonl"
    a, b = AuditLog(path), AuditLog(path)
    for i in range(10):
        (a if i % 3 else b).append(who="x", action="read", dataset="d", tier="public", what=str(i), decision="allow")
    a.close()
    b.close()
    result = verify(path)
    assert result.ok and result.entries == 10
    assert [orjson.loads(line)["what"] for line in _lines(path)] == [str(i) for i in range(10)]


def test_the_log_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    _log(path, 1)
    assert path.stat().st_mode & 0o077 == 0


def test_a_request_naming_someone_is_logged_without_the_name(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    kept = log.append(who="d", action="read", dataset="x", tier="aggregate", decision="deny",
                      what="GET /ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:erin@example.org/attrs")
    plain = log.append(who="d", action="read", dataset="x", tier="aggregate", decision="allow",
                       what="GET /ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:1")
    log.close()
    assert "erin" not in (tmp_path / "audit.jsonl").read_text() and "e-mail" in kept["what"]
    assert plain["what"] == "GET /ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:1"
    assert verify(tmp_path / "audit.jsonl").ok
