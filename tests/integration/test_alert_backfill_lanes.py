"""A backfill (a new rule run over stored history) while the same sensors keep reporting live: the history must
still be replayed in full (a live reading made every stored reading look "late"), and the replayed history
must not end or touch the alert the live readings hold."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from polis.platform import Platform
from polis.settings import Settings
from tests.conftest import SDM_TRANSPORT
from tests.integration.test_alert_rule_lifecycle_fixes import CHEAP, DAY, T0_DAY, _three_days_of_crowds
from tests.integration.test_alerts_api import RULE, SENSOR, at


def at_time(minutes: float) -> datetime:
    return datetime.fromisoformat(at(minutes).replace("Z", "+00:00"))


def _live(platform: Platform, count: int) -> datetime:
    """A reading of the sensor now, as a live gateway sends it."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    entity = {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": {
        "type": "Property", "value": count, "observedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    result = platform.entities.batch("", "upsert", [entity], lambda _item: platform.contexts.resolve(SDM_TRANSPORT))
    assert not result.errors
    return now


def _backfill_a_crowd(platform: Platform, when: Callable[[float], str]) -> None:
    """A crowd from minute 10 still there at minute 15 (`when(minutes)`: the time stamps), then a rule
    backfilled over the hour, the crowd left open at its end."""
    history = {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": [
        {"type": "Property", "value": v, "observedAt": when(m)} for m, v in ((5, 50), (10, 150), (15, 160))]}
    platform.temporal.create_or_add("", history, platform.contexts.resolve(SDM_TRANSPORT))
    rule = {**RULE, "minDurationS": 0, "validityS": 7 * 86400, "backfill": {"from": when(0), "to": when(60)}}
    platform.alerts.put_rule("", rule)
    assert platform.alerts.flush(30)


def test_a_live_reading_during_a_backfill_leaves_the_history_to_be_replayed(tmp_path: Path) -> None:
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        _three_days_of_crowds(platform)  # one crowd a day, each above 100 for 10 minutes
        rule = {**RULE, "minDurationS": 0, "backfill": {"from": at(0), "to": at(3 * DAY)}}
        with platform.alerts._lock:  # the worker waits here: the backfill's first day is queued, then a live reading
            platform.alerts.put_rule("", rule)
            _live(platform, 40)
        assert platform.alerts.flush(30)
        found = platform.alerts.alerts("", active_only=False)
        assert sorted(a.onset.day for a in found) == [T0_DAY, T0_DAY + 1, T0_DAY + 2]  # each day's crowd
        assert all(a.status == "cancelled" for a in found)
    finally:
        platform.close()


def test_replayed_history_does_not_end_the_live_alert(tmp_path: Path) -> None:
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        _three_days_of_crowds(platform)
        rule = {**RULE, "minDurationS": 0, "backfill": {"from": at(0), "to": at(3 * DAY)}}
        with platform.alerts._lock:
            platform.alerts.put_rule("", rule)
            now = _live(platform, 500)  # a crowd right now, while the history of three days ago is replayed
        assert platform.alerts.flush(30)
        [live] = platform.alerts.alerts("", active_only=True)
        assert live.onset == now and [m.msg_type for m in live.messages] == ["Alert"]
        history = [a for a in platform.alerts.alerts("", active_only=False) if a.id != live.id]
        assert sorted(a.onset.day for a in history) == [T0_DAY, T0_DAY + 1, T0_DAY + 2]
        assert all(a.effective < now for a in history)
        # the live lifecycle goes on as before: the crowd clears, the live alert ends
        _live(platform, 20)
        assert platform.alerts.flush(10)
        assert platform.alerts.alerts("", active_only=True) == []
        assert platform.alerts.alert("", live.id).status == "cancelled"
    finally:
        platform.close()


def test_an_alert_open_when_the_backfill_ends_goes_on_with_the_live_readings(tmp_path: Path) -> None:
    """With no live reading meanwhile, the replayed history hands over: the crowd still there at the end of the
    stored history is the alert the first live reading updates or ends (as before the lanes were separate)."""
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)  # recent history

    def recent(minutes: float) -> str:
        return (base + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    try:
        _backfill_a_crowd(platform, recent)
        [open_alert] = platform.alerts.alerts("", active_only=True)
        assert open_alert.onset == base + timedelta(minutes=10)
        platform.temporal.create_or_add("", {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": [
            {"type": "Property", "value": 20, "observedAt": recent(70)}]}, platform.contexts.resolve(SDM_TRANSPORT))
        _live(platform, 20)  # the first live reading: the crowd is gone
        assert platform.alerts.flush(10)
        assert platform.alerts.alerts("", active_only=True) == []
        ended = platform.alerts.alert("", open_alert.id)
        assert ended.status == "cancelled" and [m.msg_type for m in ended.messages] == ["Alert", "Update", "Cancel"]
    finally:
        platform.close()


def test_a_backfill_alert_the_live_readings_overtook_lapses(tmp_path: Path) -> None:
    """The live readings already know the sensor when the backfill ends with its alert open: the history's
    alert is the older news. It lapses (expired) rather than being ended by, or joined to, the live state."""
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        readings = ((5, 50), (DAY + 10, 150), (DAY + 15, 160))  # the crowd of the second day still there at its end
        history = {"id": SENSOR, "type": "CrowdFlowObserved", "peopleCount": [
            {"type": "Property", "value": v, "observedAt": at(m)} for m, v in readings]}
        platform.temporal.create_or_add("", history, platform.contexts.resolve(SDM_TRANSPORT))
        backfill = {"from": at(0), "to": at(DAY + 60)}  # two worker turns: the live reading comes between them
        rule = {**RULE, "minDurationS": 0, "validityS": 7 * 86400, "backfill": backfill}
        with platform.alerts._lock:
            platform.alerts.put_rule("", rule)
            _live(platform, 40)
        assert platform.alerts.flush(30)
        [replayed] = platform.alerts.alerts("", active_only=False)
        assert replayed.onset == at_time(DAY + 10) and replayed.status == "expired"
        assert platform.alerts.alerts("", active_only=True) == []
        _live(platform, 500)  # a live crowd afterwards is an alert of its own
        assert platform.alerts.flush(10)
        [live] = platform.alerts.alerts("", active_only=True)
        assert live.id != replayed.id
    finally:
        platform.close()


def test_an_alert_left_open_by_last_years_history_lapses_when_the_backfill_ends(tmp_path: Path) -> None:
    """A backfill over history long past (the demo's crowds of 2022) ends with an alert open: its validity ran
    out long before now, so it is expired, not listed as active until some wall-clock sweep gets to it."""
    platform = Platform(Settings(data_dir=tmp_path, **CHEAP))
    try:
        _backfill_a_crowd(platform, at)
        assert platform.alerts.alerts("", active_only=True) == []
        [lapsed] = platform.alerts.alerts("", active_only=False)
        assert lapsed.onset == at_time(10) and lapsed.status == "expired"
    finally:
        platform.close()
