"""Compliance rules and the retry policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialer.compliance import (
    CallingWindow,
    ComplianceError,
    redial_blocked_until,
    zones_for_number,
)
from dialer.retry import RetryPolicy


def test_calling_window_in_the_called_partys_local_time() -> None:
    w = CallingWindow.parse("08:00", "21:00")
    zones = zones_for_number("+4930123456")
    assert zones == ("Europe/Berlin",)
    # 06:30 UTC is 07:30 in Berlin (winter): closed; 07:00 UTC is 08:00: open
    assert not w.is_open(datetime(2026, 11, 23, 6, 30, tzinfo=UTC), zones)
    assert w.is_open(datetime(2026, 11, 23, 7, 0, tzinfo=UTC), zones)
    assert not w.is_open(datetime(2026, 11, 23, 20, 0, tzinfo=UTC), zones)  # 21:00 local
    nxt = w.next_open(datetime(2026, 11, 23, 20, 0, tzinfo=UTC), zones)
    assert nxt == datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


def test_ambiguous_zones_need_the_window_open_everywhere() -> None:
    w = CallingWindow.parse("08:00", "21:00")
    zones = ("America/New_York", "America/Los_Angeles")
    # 13:00 UTC = 08:00 New York but 05:00 Los Angeles
    assert not w.is_open(datetime(2026, 11, 23, 13, 0, tzinfo=UTC), zones)
    assert w.next_open(datetime(2026, 11, 23, 13, 0, tzinfo=UTC), zones) == datetime(
        2026, 11, 23, 16, 0, tzinfo=UTC
    )


def test_bad_window_and_zone_are_clear_errors() -> None:
    with pytest.raises(ComplianceError, match="HH:MM"):
        CallingWindow.parse("8am", "21:00")
    with pytest.raises(ComplianceError, match="before"):
        CallingWindow.parse("21:00", "08:00")
    with pytest.raises(ComplianceError, match="unknown time zone"):
        CallingWindow.parse("08:00", "21:00").is_open(datetime.now(UTC), ("Mars/Olympus",))


def test_no_redial_after_abandon_and_machine_rules() -> None:
    t = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert redial_blocked_until(None, None, abandon_hours=72, machine_hours=24) is None
    until = redial_blocked_until(t, None, abandon_hours=72, machine_hours=24)
    assert until == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def test_retry_policy_per_outcome_caps_rotation_and_daily_cap() -> None:
    p = RetryPolicy()
    d = p.decide("busy", now=1000.0, attempts_with_outcome=1, attempts_today=1)
    assert (d.kind, d.at) == ("retry", 1300.0)
    assert p.decide("busy", now=0, attempts_with_outcome=5, attempts_today=1).kind == "done"
    assert p.decide("answered", now=0, attempts_with_outcome=1, attempts_today=1).kind == "done"
    rot = p.decide(
        "no-answer", now=0, attempts_with_outcome=1, attempts_today=1, number_index=0, numbers=2
    )
    assert (rot.kind, rot.number_index, rot.at) == ("retry", 1, 7200.0)
    capped = p.decide(
        "congestion", now=0, attempts_with_outcome=1, attempts_today=4, next_day_start=50_000
    )
    assert (capped.kind, capped.at) == ("retry", 50_000)
    inv = p.decide("invalid", now=5, attempts_with_outcome=1, attempts_today=1, numbers=1)
    assert inv.kind == "done"


def test_retry_policy_from_campaign_json_validates() -> None:
    p = RetryPolicy.from_mapping({"busy": {"delay_seconds": 60, "max_attempts": 2}, "daily_cap": 2})
    assert p.rules["busy"].delay_seconds == 60 and p.daily_cap == 2
    with pytest.raises(ValueError, match="unknown outcome"):
        RetryPolicy.from_mapping({"bored": {}})
    with pytest.raises(ValueError, match="delay_seconds"):
        RetryPolicy.from_mapping({"busy": {"delay_seconds": -1}})
