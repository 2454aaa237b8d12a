"""Query parameter parsing: numbers and times take the strict ASCII forms the spec writes, nothing looser."""

from __future__ import annotations

import pytest

from polis.domain.errors import BadRequestData
from polis.ngsi_ld.params import parse_datetime, parse_int
from polis.ngsi_ld.temporal import parse_duration


@pytest.mark.parametrize("raw", ["٣", "१०", "１２", "3.0", "+3", "0x10", ""])
def test_an_integer_parameter_takes_ascii_digits_only(raw: str) -> None:
    with pytest.raises(BadRequestData, match="limit must be an integer"):
        parse_int({"limit": raw}, "limit")
    assert parse_int({"limit": "12"}, "limit") == 12


@pytest.mark.parametrize("raw", ["2026-01-01", "٢٠٢٦-01-01T00:00:00Z", "yesterday", "2026-13-01T00:00:00Z"])
def test_a_time_parameter_must_be_a_date_time(raw: str) -> None:
    with pytest.raises(BadRequestData, match="timeAt must be an ISO 8601 date-time"):
        parse_datetime(raw, "timeAt")
    assert parse_datetime("2026-01-01T01:00:00+01:00", "timeAt").isoformat() == "2026-01-01T00:00:00+00:00"


def test_a_duration_takes_ascii_digits_only() -> None:
    with pytest.raises(BadRequestData):
        parse_duration("PT٣H")
    assert parse_duration("PT3H").total_seconds() == 3 * 3600
