"""AmiLink.send against a loopback AMI server: deadlines, link down, no double Originate,
matching by ActionID, EventList actions, OriginateResponse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ami.actions import build_action
from ami.connection import (
    AmiError,
    AmiLink,
    AmiOutcomeUnknown,
    AmiTimeout,
    AmiUnavailable,
)
from tests.ami.fake_ami import FakeAmi, FakeSession, frame, response
from tests.ami.test_connection import Recorder, free_port, make_settings


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmi]:
    async with FakeAmi() as server:
        yield server


@pytest.fixture
async def up(ami: FakeAmi) -> AsyncIterator[tuple[AmiLink, Recorder]]:
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    assert await link.wait_connected(2)
    try:
        yield link, rec
    finally:
        await link.stop()


def originate(action_id: str | None = None) -> Any:
    fields: dict[str, object] = {
        "Channel": "Local/+4930555101@pstn",
        "Context": "dialer",
        "Exten": "connect",
        "Priority": 1,
        "Async": "true",
    }
    if action_id:
        fields["ActionID"] = action_id
    return build_action("Originate", fields, variables={"__CAMPAIGN": "c1"})


# -- link down -----------------------------------------------------------------------------
async def test_non_idempotent_action_while_down_fails_at_once() -> None:
    link = Recorder().link(make_settings(free_port(), reconnect_min=1.0, reconnect_max=1.0))
    await link.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(AmiUnavailable, match="Originate"):
            await link.send(originate(), timeout=5)
        assert time.monotonic() - t0 < 0.1
    finally:
        await link.stop()


async def test_idempotent_action_while_down_waits_until_its_deadline() -> None:
    link = Recorder().link(make_settings(free_port(), reconnect_min=1.0, reconnect_max=1.0))
    await link.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(AmiUnavailable):
            await link.send(build_action("CoreStatus"), timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 1.0
    finally:
        await link.stop()


async def test_default_deadline_applies_when_no_timeout_given() -> None:
    settings = make_settings(free_port(), action_timeout=0.2, reconnect_min=1.0, reconnect_max=1.0)
    link = Recorder().link(settings)
    await link.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(AmiUnavailable):
            await link.send(build_action("Ping"))
        assert time.monotonic() - t0 < 1.0
    finally:
        await link.stop()


async def test_idempotent_action_waits_for_the_link_to_come_up(ami: FakeAmi) -> None:
    ami.login_delay = 0.3
    link = Recorder().link(make_settings(ami.port))
    await link.start()
    try:
        resp = await link.send(build_action("Ping"), timeout=3)
        assert resp.ok and resp.headers["Ping"] == "Pong"
        assert link.connected
    finally:
        await link.stop()


async def test_unanswered_action_on_live_link_times_out_and_link_stays_up(ami: FakeAmi) -> None:
    ami.handlers["corestatus"] = lambda s, m: None  # never answered
    rec = Recorder()
    link = rec.link(make_settings(ami.port, action_timeout=0.2))
    await link.start()
    try:
        assert await link.wait_connected(2)
        t0 = time.monotonic()
        with pytest.raises(AmiTimeout):
            await link.send(build_action("CoreStatus"))
        assert 0.15 <= time.monotonic() - t0 < 1.0
        assert link.connected and ami.connections == 1
        assert (await link.send(build_action("Ping"))).ok
    finally:
        await link.stop()


async def test_late_response_after_timeout_is_ignored(ami: FakeAmi) -> None:
    held: list[dict[str, str]] = []
    ami.handlers["corestatus"] = lambda s, m: held.append(m)
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        with pytest.raises(AmiTimeout):
            await link.send(build_action("CoreStatus"), timeout=0.1)
        await ami.push(response(held[0], CoreCurrentCalls="0"))
        await ami.push(frame({"Event": "Marker"}))
        await ami.wait_for(lambda: bool(rec.events("Marker")))
        assert link.stats.unmatched_responses == 1
        assert link.connected
    finally:
        await link.stop()


# -- never twice ---------------------------------------------------------------------------
async def test_unanswered_originate_is_not_resent_after_reconnect(ami: FakeAmi) -> None:
    """The PBX got the Originate, then the link broke before the answer: the caller learns the
    outcome is unknown, and the new session never sees that Originate again."""

    def swallow_and_drop(s: FakeSession, msg: dict[str, str]) -> None:
        s.abort()

    ami.handlers["originate"] = swallow_and_drop
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        with pytest.raises(AmiOutcomeUnknown, match="not re-sent"):
            await link.send(originate("dialer-c1-42"), timeout=3)
        await ami.wait_for(lambda: ami.connections == 2 and link.connected)
        # a few keepalive rounds and another action on the new session
        assert (await link.send(build_action("Ping"))).ok
        await asyncio.sleep(0.2)
        assert ami.count("Originate") == 1
        assert [m["ActionID"] for m in ami.sessions[1].received if m["Action"] == "Originate"] == []
    finally:
        await link.stop()


async def test_unanswered_idempotent_action_is_sent_again_after_reconnect(ami: FakeAmi) -> None:
    calls = 0

    def drop_first_time(s: FakeSession, msg: dict[str, str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            s.abort()
        else:
            s.write(response(msg, CoreCurrentCalls="3"))

    ami.handlers["corestatus"] = drop_first_time
    link = Recorder().link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        resp = await link.send(build_action("CoreStatus"), timeout=3)
        assert resp.headers["CoreCurrentCalls"] == "3"
        assert ami.count("CoreStatus") == 2 and ami.connections == 2
    finally:
        await link.stop()


async def test_stop_fails_waiting_and_in_flight_sends() -> None:
    async with FakeAmi() as ami:
        ami.handlers["originate"] = lambda s, m: None
        link = Recorder().link(make_settings(ami.port))
        await link.start()
        assert await link.wait_connected(2)
        in_flight = asyncio.create_task(link.send(originate(), timeout=10))
        await ami.wait_for(lambda: ami.count("Originate") == 1)
        await link.stop()
        with pytest.raises(AmiOutcomeUnknown):
            await in_flight

    link = Recorder().link(make_settings(free_port(), reconnect_min=5.0))
    await link.start()
    waiting = asyncio.create_task(link.send(build_action("Ping"), timeout=10))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await link.stop()
    with pytest.raises(AmiUnavailable):
        await waiting
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(AmiUnavailable):
        await link.send(build_action("Ping"), timeout=1)


# -- responses -----------------------------------------------------------------------------
async def test_error_response_raises_with_asterisk_message(
    up: tuple[AmiLink, Recorder], ami: FakeAmi
) -> None:
    link, _ = up
    with pytest.raises(AmiError, match="Invalid/unknown command") as info:
        await link.send(build_action("NoSuchAction"))
    assert info.value.response is not None and info.value.response.ok is False
    assert link.connected


async def test_originate_response_reaches_on_message(ami: FakeAmi) -> None:
    """panoramisk hands OriginateResponse to the Originate's future (its handlers never see
    it); here the Originate completes on its Response and the event goes to on_message."""

    async def queued_then_answered(s: FakeSession, msg: dict[str, str]) -> None:
        s.write(response(msg, message="Originate successfully queued"))
        await s.drain()
        await asyncio.sleep(0.05)
        s.event(
            "OriginateResponse",
            ActionID=msg["ActionID"],
            Response="Success",
            Channel="Local/+4930555101@pstn-00000001;1",
            Reason="4",
            Uniqueid="1795343700.1",
        )
        await s.drain()

    ami.handlers["originate"] = queued_then_answered
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        resp = await link.send(originate("dialer-c1-42"))
        assert resp.ok and resp.message == "Originate successfully queued" and resp.items == []
        await ami.wait_for(lambda: bool(rec.events("OriginateResponse")))
        ev = rec.events("OriginateResponse")[0]
        assert ev["ActionID"] == "dialer-c1-42" and ev["Reason"] == "4"
    finally:
        await link.stop()


async def test_responses_matched_by_action_id_out_of_order_among_events(ami: FakeAmi) -> None:
    """Two actions answered in reverse order, with unrelated events around them and the
    Response coming after the events the action caused (like a failed sync Originate)."""
    held: list[tuple[FakeSession, dict[str, str]]] = []

    async def hold(s: FakeSession, msg: dict[str, str]) -> None:
        held.append((s, msg))
        if len(held) < 2:
            return
        (_, m1), (_, m2) = held
        s.event("Newchannel", Channel="Local/123@nonexistent", Uniqueid="9")
        s.event("Hangup", Channel="Local/123@nonexistent", Uniqueid="9", Cause="0")
        s.write(response(m2, False, "Channel does not exist"))
        s.event("Cdr", Disposition="FAILED")
        s.write(response(m1, False, "Originate failed"))
        await s.drain()

    ami.handlers["originate"] = hold
    ami.handlers["hangup"] = hold
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        first = asyncio.create_task(link.send(originate()))
        await ami.wait_for(lambda: len(held) == 1)
        second = asyncio.create_task(link.send(build_action("Hangup", {"Channel": "nope"})))
        with pytest.raises(AmiError, match="Originate failed"):
            await first
        with pytest.raises(AmiError, match="Channel does not exist"):
            await second
        assert [m.get("Event") for m in rec.messages[-3:]] == ["Newchannel", "Hangup", "Cdr"]
        ids = [m["ActionID"] for _, m in held]
        assert len(set(ids)) == 2 and all(i.startswith("cti-t1-") for i in ids)
    finally:
        await link.stop()


async def test_callers_action_id_is_kept(up: tuple[AmiLink, Recorder], ami: FakeAmi) -> None:
    link, _ = up
    await link.send(originate("dialer-c1-42"))
    assert ami.actions("Originate")[0]["ActionID"] == "dialer-c1-42"
    assert ami.actions("Originate")[0]["Variable"] == "__CAMPAIGN=c1"


async def test_same_action_id_twice_in_flight_is_refused(ami: FakeAmi) -> None:
    ami.handlers["originate"] = lambda s, m: None
    link = Recorder().link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        first = asyncio.create_task(link.send(originate("dup-1"), timeout=0.5))
        await ami.wait_for(lambda: ami.count("Originate") == 1)
        with pytest.raises(AmiError, match="already in flight"):
            await link.send(originate("dup-1"))
        assert ami.count("Originate") == 1
        with pytest.raises(AmiTimeout):
            await first
    finally:
        await link.stop()


async def test_eventlist_items_collected_until_complete(ami: FakeAmi) -> None:
    async def status(s: FakeSession, msg: dict[str, str]) -> None:
        aid = msg["ActionID"]
        s.write(response(msg, message="Channel status will follow", EventList="start"))
        s.event("Newexten", Channel="X", AppData="")  # unrelated, between items
        s.event("Status", Channel="A;1", ActionID=aid)
        await s.drain()
        await asyncio.sleep(0.05)  # the list spans several reads
        s.event("Status", Channel="A;2", ActionID=aid)
        s.event("Status", Channel="B", ActionID="someone-else")  # not ours
        s.event("StatusComplete", ActionID=aid, EventList="Complete", ListItems="2")
        await s.drain()

    ami.handlers["status"] = status
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        resp = await link.send(build_action("Status"))
        assert resp.ok and resp.message == "Channel status will follow"
        assert [i["Channel"] for i in resp.items] == ["A;1", "A;2"]
        assert resp.headers["EventList"] == "start"
        # every event, list items included, also reached on_message in order
        assert [m["Event"] for m in rec.messages[-5:]] == [
            "Newexten",
            "Status",
            "Status",
            "Status",
            "StatusComplete",
        ]
        assert rec.messages[-5]["AppData"] == ""
    finally:
        await link.stop()


async def test_send_refuses_unvalidated_actions(up: tuple[AmiLink, Recorder]) -> None:
    link, _ = up
    with pytest.raises(TypeError, match="build_action"):
        await link.send({"Action": "Originate"})  # type: ignore[arg-type]


async def test_cancelled_send_leaves_nothing_pending(
    up: tuple[AmiLink, Recorder], ami: FakeAmi
) -> None:
    link, _ = up
    ami.handlers["corestatus"] = lambda s, m: None
    task = asyncio.create_task(link.send(build_action("CoreStatus", {"ActionID": "c-1"})))
    await ami.wait_for(lambda: ami.count("CoreStatus") == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the same ActionID can be used again: nothing stale is kept
    ami.handlers.pop("corestatus")
    with pytest.raises(AmiError, match="unknown"):
        await link.send(build_action("CoreStatus", {"ActionID": "c-1"}))


async def test_non_positive_timeout_is_refused_before_anything_is_sent(
    up: tuple[AmiLink, Recorder], ami: FakeAmi
) -> None:
    link, _ = up
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            await link.send(originate(), timeout=bad)
    assert ami.count("Originate") == 0
