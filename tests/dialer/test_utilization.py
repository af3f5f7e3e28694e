"""Agent time accounting: the figures supervisors read must add up to logged-in time."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from ami.events import AgentStateChange, AgentStatus
from dialer.utilization import Utilization

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).timestamp()
DAY = date(2026, 11, 23)


def ch(agent: str, status: AgentStatus, at: float, **kw: str) -> AgentStateChange:
    return AgentStateChange(agent=agent, status=status, at=T0 + at, **kw)


def test_states_sum_exactly_to_logged_in_time_with_pause_reasons_and_campaigns() -> None:
    u = Utilization()
    u.apply_all(
        [
            ch("a1", AgentStatus.READY, 0),
            ch("a1", AgentStatus.RINGING, 30, call_id="c1"),
            ch("a1", AgentStatus.ON_CALL, 35, call_id="c1", campaign="winter"),
            ch("a1", AgentStatus.WRAP_UP, 215, call_id="c1", campaign="winter"),
            ch("a1", AgentStatus.READY, 240),
            ch("a1", AgentStatus.PAUSED, 300, reason="lunch"),
            ch("a1", AgentStatus.READY, 2100),
            ch("a1", AgentStatus.ON_CALL, 2160, call_id="manual-1"),  # dialled by hand
            ch("a1", AgentStatus.WRAP_UP, 2220, call_id="manual-1"),
            ch("a1", AgentStatus.PAUSED, 2230, reason="break"),
            ch("a1", AgentStatus.LOGGED_OUT, 2530),
        ]
    )
    f = u.day("a1", DAY)
    assert f.logged_in == 2530
    assert f.ready == 30 + 60 + 60
    assert f.ringing == 5
    assert f.on_call == 180 + 60
    assert f.wrap_up == 25 + 10
    assert f.paused == {"lunch": 1800, "break": 300}
    assert f.calls == 2
    assert f.campaign_seconds == {"winter": 205, "": 70}
    assert f.occupancy == (240 + 35) / (240 + 35 + 150 + 5)


def test_open_interval_counts_up_to_now_and_logged_out_time_is_not_counted() -> None:
    u = Utilization()
    u.apply(ch("a2", AgentStatus.READY, 0))
    u.apply(ch("a2", AgentStatus.LOGGED_OUT, 100))
    u.apply(ch("a2", AgentStatus.READY, 1000))
    assert u.day("a2", DAY).logged_in == 100
    assert u.day("a2", DAY, now=T0 + 1060).logged_in == 160
    assert u.report(now=T0 + 1060)["a2"][DAY.isoformat()]["ready"] == 160


def test_midnight_split_in_site_time_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 11, 23, 23, 30, tzinfo=berlin).timestamp()
    u = Utilization(berlin)
    u.apply(AgentStateChange(agent="n", status=AgentStatus.ON_CALL, at=start, call_id="x"))
    u.apply(AgentStateChange(agent="n", status=AgentStatus.LOGGED_OUT, at=start + 3600))
    assert u.day("n", date(2026, 11, 23)).on_call == 1800
    assert u.day("n", date(2026, 11, 24)).on_call == 1800


def test_out_of_order_change_never_produces_negative_time() -> None:
    u = Utilization()
    u.apply(ch("a3", AgentStatus.READY, 100))
    u.apply(ch("a3", AgentStatus.ON_CALL, 90, call_id="c"))  # earlier than the previous change
    u.apply(ch("a3", AgentStatus.LOGGED_OUT, 160))
    f = u.day("a3", DAY)
    assert u.out_of_order == 1
    assert f.ready == 0 and f.on_call == 60
    assert f.logged_in == 60
