"""Alert rules whose fields are each valid but do not work together: an update interval at or above the
validity (each CAP message expires before the next one is sent, so a receiver drops an alert that is still
open), a validity under CAP's one-second resolution, knobs a rule kind never reads. Refused on submission,
naming the fields and values; a rule saved before the check existed still runs, with a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from polis.alerts.demo import DEMO_RULES
from polis.alerts.rulebook import RuleBook
from polis.alerts.rules import parse_rule, parse_rules_document, rule_json
from polis.domain.errors import BadRequestData
from tests.conftest import THRESHOLD_RULE

BURST_RULE: dict[str, Any] = {
    "id": "calls",
    "kind": "burst",
    "name": "Calls",
    "scope": {"type": "EmergencyCall"},
    "groupBy": "township",
}
SPEED_DROP_RULE: dict[str, Any] = {
    "id": "drop",
    "kind": "anomaly",
    "name": "Drop",
    "scope": {"type": "TrafficFlowObserved"},
    "attribute": "averageVehicleSpeed",
    "detector": "speed-drop",
    "level": 0.4,
}
FORECAST_RULE: dict[str, Any] = {**THRESHOLD_RULE, "id": "jam", "kind": "forecast", "withinMinutes": 30}


def refusal(body: dict[str, Any]) -> BadRequestData:
    with pytest.raises(BadRequestData) as caught:
        parse_rule(body)
    return caught.value


@pytest.mark.parametrize(("update", "validity"), [(900, 600), (600, 600)])
def test_updates_at_or_past_the_validity_are_refused_naming_both(update: float, validity: float) -> None:
    error = refusal({**THRESHOLD_RULE, "updateIntervalS": update, "validityS": validity})
    assert error.extra["field"] == "updateIntervalS/validityS"
    assert f"updateIntervalS ({update} s)" in error.detail
    assert f"validityS ({validity} s)" in error.detail
    assert "expired before its next update" in error.detail


def test_an_omitted_field_is_named_as_the_default() -> None:
    # The user wrote one of the two: the message says where the other value came from.
    assert "validityS (3600 s, the default)" in refusal({**THRESHOLD_RULE, "updateIntervalS": 3600}).detail
    assert "updateIntervalS (300 s, the default)" in refusal({**THRESHOLD_RULE, "validityS": 300}).detail
    # A burst rule's own floor (300 s) is its default too: its validity must be longer.
    assert "updateIntervalS (300 s, the default)" in refusal({**BURST_RULE, "validityS": 300}).detail


def test_just_below_the_validity_and_the_defaults_are_accepted() -> None:
    assert parse_rule({**THRESHOLD_RULE, "updateIntervalS": 599, "validityS": 600}).validity_s == 600
    for body in (THRESHOLD_RULE, FORECAST_RULE, SPEED_DROP_RULE, BURST_RULE):
        rule = parse_rule(body)
        assert rule.update_interval_s < rule.validity_s


def test_the_demo_rules_pass() -> None:
    for body in DEMO_RULES:
        parse_rule(body)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**THRESHOLD_RULE, "validityS": 0.5, "updateIntervalS": 0}, "validityS", "under a second"),
        ({**BURST_RULE, "hysteresis": 2}, "hysteresis", "burst rules do not use hysteresis"),
        ({**SPEED_DROP_RULE, "timezone": "America/Los_Angeles"}, "timezone", "only the crowd-gathering"),
    ],
)
def test_fields_that_would_do_nothing_or_nonsense_are_refused(body: dict[str, Any], field: str, words: str) -> None:
    error = refusal(body)
    assert error.extra["field"] == field
    assert words in error.detail


def test_every_problem_is_listed() -> None:
    error = refusal({**BURST_RULE, "hysteresis": 1, "validityS": 300})
    assert [e["field"] for e in error.extra["errors"]] == ["updateIntervalS/validityS", "hysteresis"]


def test_a_rules_file_with_one_bad_rule_is_refused_whole() -> None:
    good = {**THRESHOLD_RULE, "id": "good"}
    bad = {**THRESHOLD_RULE, "id": "bad", "updateIntervalS": 900, "validityS": 600}
    with pytest.raises(BadRequestData) as caught:
        parse_rules_document({"rules": [good, bad, {**good, "id": "also-good"}]})
    assert caught.value.detail.startswith("rule #2: rule field 'updateIntervalS/validityS'")


def _stored(path: Path, *rules: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps([{"tenant": "", "rule": rule} for rule in rules]))


def test_a_rule_saved_before_the_check_still_runs_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What an earlier version saved: every field written out, updates as often as the validity (the demo's
    # crowd rule was so, both an hour). Stopping it would raise no alert at all; it runs and the log says why
    # it would be refused now.
    old = rule_json(parse_rule(THRESHOLD_RULE)) | {"id": "old", "updateIntervalS": 3600.0, "validityS": 3600.0}
    fine = rule_json(parse_rule({**THRESHOLD_RULE, "id": "fine"}))
    path = tmp_path / "rules.json"
    _stored(path, old, fine)
    with caplog.at_level(logging.WARNING, logger="polis.alerts.rulebook"):
        book = RuleBook(path)
    assert sorted(str(r.id) for r in book.of("")) == ["fine", "old"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "'old'" in warned[0] and "updateIntervalS (3600 s)" in warned[0], warned
    # Written back as it was: a later save keeps it, and replacing it is what the warning asks for.
    book.put("", parse_rule({**THRESHOLD_RULE, "id": "new"}))
    assert {item["rule"]["id"] for item in orjson.loads(path.read_bytes())} == {"old", "fine", "new"}
