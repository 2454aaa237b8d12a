"""`GET /polis/v1/alerts` is newest first: alerts updated by the same observation share their effective time,
and then the one whose latest message went out last comes first, not the one raised first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from polis.alerts.model import AlertRecord, SentMessage
from polis.platform import Platform


def test_alerts_updated_together_list_the_last_message_first() -> None:
    platform = Platform.in_memory()
    try:
        at = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)

        def record(rule: str, sent: str, effective: datetime = at) -> AlertRecord:
            r = AlertRecord(f"urn:ngsi-ld:Alert:polis:{rule}:1", "", rule, {}, effective, effective, effective)
            r.messages.append(SentMessage(f"id-{rule}", sent, "Update"))
            return r

        older = record("jam-forecast", "2026-11-29T08:00:01-00:00")
        newer = record("congestion", "2026-11-29T08:00:05-00:00")
        latest = record("crowding", "2026-11-29T07:00:00-00:00", at + timedelta(minutes=5))
        for r in (older, newer, latest):
            platform.alerts.records[r.id] = r
        assert [r.rule_id for r in platform.alerts.alerts("")] == ["crowding", "congestion", "jam-forecast"]
    finally:
        platform.close()
