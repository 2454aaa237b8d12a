"""Defects found by fuzzing the /polis/v1 routes (alerts, forecasts, epidemic, access, operations) and the
`polis` CLI with hostile input (2026-11-29), one test per defect. Each test states the behaviour the product
rules ask for: a malformed request gets a specific NGSI-LD problem with the right 4xx status and writes
nothing, never a 500; a CLI mistake gets a clear one-line error and a non-zero exit code, never a traceback.
They fail until the defects are fixed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.conftest import LINK_SDM, THRESHOLD_RULE, free_port, hub_client
from tests.conftest import problem as ngsi_problem

RULES = "/polis/v1/alerts/rules"
SENSOR = "urn:ngsi-ld:CrowdFlowObserved:fuzz-polis-1"
RULE = THRESHOLD_RULE
POLIS = Path(sys.executable).with_name("polis")


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client()


def problem(r: Any, status: int, *fragments: str) -> dict[str, Any]:
    """The response is an NGSI-LD problem of any type with this status whose detail names every fragment."""
    return ngsi_problem(r, status, None, *fragments)


# -- alert rules ----------------------------------------------------------------------------------------------


def test_an_alert_rule_id_ending_in_a_newline_is_refused(hub: tuple[TestClient, Platform]) -> None:
    """POST /polis/v1/alerts/rules with {"id": "busy-corner\\n", ...} (or PUT /polis/v1/alerts/rules/busy-corner%0A)
    answers 201 and stores a rule whose id ends in a newline, and the 201's Location header carries that raw
    newline. Cause: RULE_ID (src/polis/alerts/rules.py:66) is matched with `$`, which also matches before a
    trailing "\\n". Ids are "letters, digits, '.', '_' or '-'": the rules require a 400 naming 'id', nothing
    stored."""
    client, _ = hub
    problem(client.post(RULES, json={**RULE, "id": "busy-corner\n"}), 400, "id")
    body = {k: v for k, v in RULE.items() if k != "id"}
    problem(client.put(f"{RULES}/busy-corner%0A", json=body), 400, "id")
    assert client.get(RULES).json() == [], "a rule with a newline in its id was stored"


@pytest.mark.parametrize(
    "field",
    [{"above": "NaN"}, {"above": "1e309"}, {"hysteresis": "inf"}],
    ids=["nan-threshold", "overflowing-threshold", "infinite-hysteresis"],
)
def test_an_alert_rule_with_a_non_finite_number_is_refused(
    hub: tuple[TestClient, Platform], field: dict[str, str]
) -> None:
    """POST /polis/v1/alerts/rules with "above": "NaN" / "1e309" or "hysteresis": "inf" answers 201 and stores
    a rule whose threshold is NaN or infinity (it reads back as "above": null): a rule that can never fire or
    never clear. JSON itself refuses NaN and 1e309 (400), but the rule model (src/polis/alerts/rules.py:235,
    `above: float | None`, and :167 `hysteresis`) takes the same numbers as strings. Required: 400 naming
    the field, nothing stored."""
    client, _ = hub
    name = next(iter(field))
    problem(client.post(RULES, json={**RULE, **field}), 400, name)
    assert client.get(RULES).json() == [], "a rule with a non-finite number was stored"


@pytest.mark.parametrize(
    "field", [{"enabled": "yes"}, {"above": True}], ids=["string-for-boolean", "boolean-for-number"]
)
def test_an_alert_rule_field_of_the_wrong_json_type_is_refused(
    hub: tuple[TestClient, Platform], field: dict[str, Any]
) -> None:
    """POST /polis/v1/alerts/rules with "enabled": "yes" or "above": true answers 201: the rule model
    (src/polis/alerts/rules.py:79, pydantic in lax mode) silently coerces a string to a boolean and a boolean
    to the threshold 1.0. A field of the wrong JSON type is malformed input: 400 naming the field, nothing
    stored."""
    client, _ = hub
    name = next(iter(field))
    problem(client.post(RULES, json={**RULE, **field}), 400, name)
    assert client.get(RULES).json() == [], "a rule with a wrongly typed field was stored"


def test_an_alert_rule_name_with_a_control_character_is_refused(hub: tuple[TestClient, Platform]) -> None:
    """POST /polis/v1/alerts/rules with "name": "Busy\\u0000corner" answers 201 (src/polis/alerts/rules.py:157
    checks only the length). The name goes into every CAP message, and XML cannot hold NUL or control
    characters: when the rule fires, build_cap (src/polis/alerts/engine.py:350) raises "All strings must be
    XML compatible", the whole evaluation batch is dropped, and the alert is left without a CAP message.
    Required: the rule refused at submission with 400 naming 'name', nothing stored."""
    client, _ = hub
    problem(client.post(RULES, json={**RULE, "name": "Busy\u0000corner"}), 400, "name")
    assert client.get(RULES).json() == [], "a rule whose name XML cannot hold was stored"


def test_an_entity_name_with_a_control_character_still_gets_a_cap_message(hub: tuple[TestClient, Platform]) -> None:
    """A sensor whose `name` is "Corner\\u0001" (accepted by POST /ngsi-ld/v1/entities) crosses a valid rule's
    threshold: the alert record is kept (src/polis/alerts/engine.py:336) but build_cap (engine.py:350) raises on
    the control character in the headline, so the alert is listed as active with no CAP message, and
    GET /polis/v1/alerts/{id}/cap (and GET /polis/v1/alerts/{id} with Accept: application/cap+xml) answers 500
    IndexError (src/polis/api/routes_alerts.py:159 and :145 index an empty list). Required: the alert's CAP
    message is built from data XML can hold (the character dropped or replaced) and served with 200."""
    client, platform = hub
    assert client.post(RULES, json=RULE).status_code == 201
    entity = {
        "id": SENSOR,
        "type": "CrowdFlowObserved",
        "name": {"type": "Property", "value": "Corner\u0001"},
        "peopleCount": {"type": "Property", "value": 150, "observedAt": "2026-03-02T08:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [144.9631, -37.8136]}},
    }
    assert client.post("/ngsi-ld/v1/entities", json=entity, headers={"Link": LINK_SDM}).status_code == 201
    assert platform.alerts.flush(10)
    [alert] = client.get("/polis/v1/alerts", params={"status": "all"}).json()
    cap = client.get(f"/polis/v1/alerts/{alert['id']}/cap")
    assert cap.status_code == 200, cap.text[:300]
    assert cap.headers["content-type"].startswith("application/cap+xml")
    assert alert["messages"], "the alert was raised without a CAP message"


# -- query parameters -----------------------------------------------------------------------------------------


def test_a_query_parameter_validation_error_is_a_sentence_not_a_python_repr(hub: tuple[TestClient, Platform]) -> None:
    """GET /polis/v1/alerts?status=bogus answers 400 whose detail is str() of pydantic's error list:
    "[{'type': 'string_pattern_mismatch', 'loc': ('query', 'status'), 'msg': ..., 'input': 'bogus', ...}]"
    (src/polis/api/app.py:95). The same for a missing ?type= on /polis/v1/forecasts or a bad ?message= on
    /cap. The rules ask for a clear, specific error: a sentence naming the parameter and what it accepts,
    not a Python data structure."""
    client, _ = hub
    for url in ("/polis/v1/alerts?status=bogus", "/polis/v1/forecasts", "/polis/v1/alerts/x/cap?message=0"):
        detail = problem(client.get(url), 400)["detail"]
        assert "{'type':" not in detail and "'loc':" not in detail, (url, detail)


@pytest.mark.parametrize(
    "url",
    ["/polis/v1/epidemic?countrie=France", "/polis/v1/epidemic?limit=1"],
)
def test_the_epidemic_routes_refuse_unknown_query_parameters(hub: tuple[TestClient, Platform], url: str) -> None:
    """GET /polis/v1/epidemic?countrie=France answers 200 as if the parameter were not there: the epidemic
    router (src/polis/api/routes_epidemic.py:37) has no `declared_query_only` dependency and `held` (and
    `risk`, and the scenario POST) never check their query parameters, where every other /polis/v1 router
    answers 400 for an unknown one (a misspelt parameter must not silently give the default answer)."""
    client, _ = hub
    problem(client.get(url), 400, url.split("?")[1].split("=")[0])


def test_metrics_refuses_unknown_query_parameters(hub: tuple[TestClient, Platform]) -> None:
    """GET /metrics?source=mqtt answers 200 with every source's metrics: the route
    (src/polis/api/routes_operations.py:18) never checks its query string, while its neighbour
    /polis/v1/deadletters answers 400 for an unknown parameter. Required: 400 naming the parameter."""
    client, _ = hub
    problem(client.get("/metrics", params={"source": "mqtt"}), 400, "source")


def test_forecasts_of_a_type_refuse_a_bad_format_even_when_none_match(hub: tuple[TestClient, Platform]) -> None:
    """GET /polis/v1/forecasts?type=TrafficFlowObserved&format=xml answers 200 [] when no forecast matches: the
    format is only checked while rendering each forecast (src/polis/api/routes_forecasts.py:63, `_render`),
    so a bad value is accepted and ignored until data arrives, then the same request turns into a 400.
    Required: 400 naming 'format' whatever the data."""
    client, _ = hub
    problem(client.get("/polis/v1/forecasts", params={"type": "TrafficFlowObserved", "format": "xml"}), 400, "format")


@pytest.mark.parametrize("raw", ["1_0", " 5", "+5"])
def test_forecast_accuracy_window_minutes_must_be_plain_digits(hub: tuple[TestClient, Platform], raw: str) -> None:
    """GET /polis/v1/forecast-accuracy?window_minutes=1_0 (or " 5", "+5") answers 200: the parameter is a
    FastAPI `int` (src/polis/api/routes_forecasts.py:85), parsed like Python's int(), which takes underscores,
    spaces and signs. Other integer parameters of the hub (`parse_int`, the epidemic `horizons`) accept plain
    ASCII digits only and answer 400 otherwise; so must this one."""
    client, _ = hub
    problem(client.get("/polis/v1/forecast-accuracy", params={"window_minutes": raw}), 400, "window_minutes")


@pytest.mark.parametrize("head", ["zz", "", "\u0000"], ids=["not-hex", "empty", "nul"])
def test_audit_verify_refuses_a_malformed_head(hub: tuple[TestClient, Platform], head: str) -> None:
    """GET /polis/v1/access/audit/verify?head=zz answers 200 {"ok": false, "problem": "the chain ends at …, not
    at the expected head zz… (entries were cut off the end)"}: a malformed head (not 64 hex digits, even an
    empty one) is reported as evidence that the audit log was truncated (src/polis/api/routes_access.py:28 passes
    it unchecked to src/polis/access/audit.py:143). `polis audit verify --head zz` says "audit log broken" the
    same way. Required: 400 naming 'head'."""
    client, _ = hub
    problem(client.get("/polis/v1/access/audit/verify", params={"head": head}), 400, "head")


# -- the CLI --------------------------------------------------------------------------------------------------


def _polis(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLIS_DATA_DIR": str(tmp_path / "default-hub"), "COLUMNS": "200"}
    env.pop("POLIS_API_KEY", None)
    return subprocess.run(
        [str(POLIS), *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False
    )


def _clear_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-1500:]
    assert "Traceback" not in output, output[-1500:]
    for fragment in fragments:
        assert fragment in output, (fragment, output[-1500:])


@pytest.mark.parametrize(
    "args",
    [["deadletters"], ["admin", "list"], ["flows", "--day", "2017-04-12"]],
    ids=["deadletters", "admin-list", "flows"],
)
def test_cli_with_a_data_dir_that_is_a_file_gives_a_clear_error(tmp_path: Path, args: list[str]) -> None:
    """`polis deadletters --data-dir FILE` (also `polis admin list`, `polis flows`, `polis archive`, `polis ingest`)
    where FILE is a regular file exits 1 with a full Python traceback ending in FileExistsError (from
    src/polis/store/duckdb_.py:201 or src/polis/access/departments.py:56, `path.parent.mkdir`, called from
    src/polis/cli.py:326 and the access CLI). Required: a one-line error naming the path, non-zero exit."""
    not_a_dir = tmp_path / "hub-file"
    not_a_dir.write_text("not a directory\n")
    _clear_failure(_polis(tmp_path, *args, "--data-dir", str(not_a_dir)), "hub-file")


def test_cli_deadletters_does_not_create_a_hub_at_a_mistyped_path(tmp_path: Path) -> None:
    """`polis deadletters --data-dir NO/SUCH/DIR` exits 0 with an empty table after creating NO/SUCH/DIR and a new
    polis.duckdb in it (src/polis/cli.py:326 opens DuckDBStore, which makes the directories): a mistyped path
    reads as "no dead letters" and leaves an empty hub behind. `polis epidemic risk` on the same path says
    "no hub database at …" and exits 1. Required: that clear error, non-zero exit, nothing created."""
    missing = tmp_path / "no" / "such" / "hub"
    _clear_failure(_polis(tmp_path, "deadletters", "--data-dir", str(missing)), str(missing))
    assert not (tmp_path / "no").exists(), "a read-only command created a hub at the mistyped path"


@pytest.mark.parametrize(
    "args",
    [["alerts", "list"], ["alerts", "rules"], ["deadletters"]],
    ids=["alerts-list", "alerts-rules", "deadletters"],
)
def test_cli_with_no_hub_at_the_url_gives_a_clear_error(tmp_path: Path, args: list[str]) -> None:
    """`polis alerts list --url http://127.0.0.1:PORT` with nothing listening (also `polis alerts rules --url`,
    `polis alerts load FILE --url` and `polis deadletters --url`) exits 1 with two chained tracebacks ending in
    httpx.ConnectError (src/polis/alerts/cli.py:120 and :97, src/polis/cli.py:316 call httpx with no error
    handling). `polis epidemic risk --url` shows what is required: "no hub answers at URL: …", non-zero exit."""
    url = f"http://127.0.0.1:{free_port()}"
    _clear_failure(_polis(tmp_path, *args, "--url", url), url.removeprefix("http://"))
