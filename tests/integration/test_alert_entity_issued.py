"""The NGSI-LD Alert entity's dates as the Smart Data Models Alert schema defines them
(../shared/data/smart-data-models/Alert, `Common-Alert`): `dateIssued` is "the date and time the item was
issued", i.e. when the hub sent the alert (its first CAP message's `sent`), not when the condition began; the
onset is the start of the alert's validity, `validFrom` (the schema has no onset attribute of its own). Readings
replayed from last March show the difference: onset in March, issued now."""

from __future__ import annotations

from datetime import datetime

from fastapi.testclient import TestClient

from polis.platform import Platform
from tests.integration.test_alerts_api import LINK_ALERT, RULE, at, make_sensor, observe


def test_date_issued_is_when_the_alert_was_sent_and_valid_from_its_onset(
    client: TestClient, platform: Platform
) -> None:
    assert client.post("/polis/v1/alerts/rules", json=RULE).status_code == 201
    make_sensor(client)
    for minute, count in ((5, 150), (10, 160), (15, 170), (20, 175)):  # raised at 15 (onset 5), updated at 20
        observe(client, platform, minute, count)
    [alert] = client.get("/polis/v1/alerts").json()
    assert [m["msgType"] for m in alert["messages"]] == ["Alert", "Update"]
    first_sent = datetime.fromisoformat(alert["messages"][0]["sent"])
    entity = client.get(f"/ngsi-ld/v1/entities/{alert['id']}", params={"options": "keyValues"},
                        headers={"Link": LINK_ALERT}).json()
    assert datetime.fromisoformat(entity["dateIssued"]["@value"].replace("Z", "+00:00")) == first_sent
    assert entity["validFrom"]["@value"] == at(5) == alert["onset"]
