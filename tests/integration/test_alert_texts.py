"""Numbers in alert texts as a person reads them: a whole number without a trailing ".0", anything else with
a fixed number of decimals, whatever float arithmetic left in the value; a template's own format spec
(`{value:.1f}`) still decides where it gives one."""

from __future__ import annotations

from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.integration.test_alerts_api import RULE, make_sensor, observe


def _description(client: TestClient, status: str = "active") -> str:
    [alert] = client.get("/polis/v1/alerts", params={"status": status}).json()
    return str(alert["description"])


def test_bare_placeholders_read_sensibly(client: TestClient, platform: Platform) -> None:
    rule = {**RULE, "minDurationS": 0, "message": "{entityName}: {value} people, above {threshold}"}
    assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    make_sensor(client)
    observe(client, platform, 5, 150)
    assert _description(client) == "Test corner: 150 people, above 100"
    observe(client, platform, 10, 182.99999999999997)  # type: ignore[arg-type]  # a gateway's average: an Update
    assert _description(client) == "Test corner: 183 people, above 100"
    observe(client, platform, 16, 72.99999999999997)  # type: ignore[arg-type]
    assert _description(client, "all") == "Ended: Busy corner no longer holds at Test corner (peopleCount now 73)"


def test_fractional_values_get_two_decimals_and_the_all_clear_too(client: TestClient, platform: Platform) -> None:
    rule = {**RULE, "minDurationS": 0, "above": 100.5, "message": "{value} over {threshold}"}
    assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    make_sensor(client)
    observe(client, platform, 5, 150.3)  # type: ignore[arg-type]
    assert _description(client) == "150.30 over 100.50"
    observe(client, platform, 6, 12.345678)  # type: ignore[arg-type]
    assert _description(client, "all") == "Ended: Busy corner no longer holds at Test corner (peopleCount now 12.35)"


def test_a_templates_own_format_spec_wins(client: TestClient, platform: Platform) -> None:
    rule = {**RULE, "minDurationS": 0, "message": "{value:.3f} / {threshold:.0f}"}
    assert client.post("/polis/v1/alerts/rules", json=rule).status_code == 201
    make_sensor(client)
    observe(client, platform, 5, 150)
    assert _description(client) == "150.000 / 100"
