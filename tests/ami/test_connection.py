"""AmiLink against a loopback AMI server: login, resync, backoff, keepalive, stop.

Every panoramisk 1.4 sharp edge the link owns has a test here or in test_connection_wire.py
(framing and routing) and test_connection_actions.py (sending actions).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from ami.actions import build_action
from ami.connection import AmiLink, Resync, backoff_delay
from ami.settings import AmiServerSettings
from tests.ami.fake_ami import FakeAmi


def make_settings(port: int, **kw: Any) -> AmiServerSettings:
    base: dict[str, Any] = {
        "name": "t1",
        "host": "127.0.0.1",
        "port": port,
        "username": "cti",
        "secret": SecretStr("s3cret"),
        "ping_interval": 5.0,
        "ping_timeout": 1.0,
        "connect_timeout": 1.0,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "reconnect_jitter": 0.1,
        "action_timeout": 2.0,
    }
    base.update(kw)
    base["reconnect_max"] = max(base["reconnect_max"], base["reconnect_min"])
    return AmiServerSettings(**base)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.resyncs: list[Resync] = []
        self.states: list[str] = []
        #: everything in arrival order: ("msg", Event name) or ("resync", n channels)
        self.timeline: list[tuple[str, str]] = []

    def on_message(self, msg: dict[str, str], at: float) -> None:
        self.messages.append(msg)
        self.timeline.append(("msg", msg.get("Event", "")))

    def on_resync(self, r: Resync) -> None:
        self.resyncs.append(r)
        self.timeline.append(("resync", str(len(r.channels))))

    def on_state(self, state: str) -> None:
        self.states.append(state)

    def events(self, name: str) -> list[dict[str, str]]:
        return [m for m in self.messages if m.get("Event") == name]

    def link(self, settings: AmiServerSettings) -> AmiLink:
        return AmiLink(
            settings,
            on_message=self.on_message,
            on_resync=self.on_resync,
            on_state=self.on_state,
        )


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmi]:
    async with FakeAmi() as server:
        yield server


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CHANNEL = {
    "Channel": "Local/800@inbound-0000004d;1",
    "ChannelState": "6",
    "ChannelStateDesc": "Up",
    "Uniqueid": "1795343677.154",
    "Linkedid": "1795343677.154",
    "BridgeId": "",
}


# -- login and resync ----------------------------------------------------------------------
async def test_connected_only_after_login_and_resync(ami: FakeAmi) -> None:
    ami.login_delay = 0.3
    ami.channels = [CHANNEL]
    ami.queue_params = [{"Queue": "support", "Calls": "1"}]
    ami.queue_members = [{"Queue": "support", "Name": "Agent One", "Status": "2"}]
    ami.queue_entries = [{"Queue": "support", "Position": "1", "Channel": "x;2"}]
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        # start() returned and TCP is open, but the login answer is still 0.3 s away
        await ami.wait_for(lambda: ami.count("Login") == 1)
        assert not link.connected
        assert await link.wait_connected(0.1) is False
        assert rec.resyncs == []
        assert await link.wait_connected(2.0) is True
        assert link.connected
        # the resync ran before wait_connected turned true
        assert len(rec.resyncs) == 1
        r = rec.resyncs[0]
        assert r.channels[0]["Channel"] == CHANNEL["Channel"]
        assert r.channels[0]["BridgeId"] == ""
        assert [p["Queue"] for p in r.queue_params] == ["support"]
        assert r.queue_members[0]["Name"] == "Agent One"
        assert r.queue_entries[0]["Position"] == "1"
        assert abs(r.at - time.time()) < 5
        assert ami.count("QueueStatus") == 1 and ami.count("CoreShowChannels") == 1
        assert rec.states == ["connecting", "connected"]
        login = ami.actions("Login")[0]
        assert login["Username"] == "cti" and login["Secret"] == "s3cret"
        assert login["Events"] == "on"
    finally:
        await link.stop()
    assert rec.states[-1] == "stopped"


async def test_resync_after_every_reconnect(ami: FakeAmi) -> None:
    ami.channels = [CHANNEL]
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        ami.channels = []  # the call ended while we were away
        ami.drop_all()
        await ami.wait_for(lambda: len(rec.resyncs) == 2)
        assert await link.wait_connected(2)
        assert [len(r.channels) for r in rec.resyncs] == [1, 0]
        assert link.stats.reconnects == 1
        assert ami.connections == 2
        assert rec.states == ["connecting", "connected", "disconnected", "connecting", "connected"]
    finally:
        await link.stop()


async def test_events_during_resync_keep_stream_order(ami: FakeAmi) -> None:
    """Events that arrive between the snapshot's pieces reach on_message in order, and
    on_resync runs exactly where the channel snapshot completed in the stream."""
    ami.channels = [CHANNEL]

    async def queuestatus(s: Any, msg: dict[str, str]) -> None:
        aid = msg["ActionID"]
        s.write(
            b"Response: Success\r\nActionID: " + aid.encode() + b"\r\nEventList: start\r\n"
            b"Message: Queue status will follow\r\n\r\n"
        )
        s.event("Newchannel", Channel="A", Uniqueid="1")
        s.event("QueueParams", Queue="support", ActionID=aid)
        s.event("Newstate", Channel="A", Uniqueid="1")
        s.event("QueueStatusComplete", ActionID=aid, EventList="Complete", ListItems="1")
        await s.drain()

    async def coreshowchannels(s: Any, msg: dict[str, str]) -> None:
        aid = msg["ActionID"]
        s.write(
            b"Response: Success\r\nActionID: " + aid.encode() + b"\r\nEventList: start\r\n"
            b"Message: Channels will follow\r\n\r\n"
        )
        s.event("Hangup", Channel="B", Uniqueid="2")
        s.event("CoreShowChannel", ActionID=aid, **CHANNEL)
        s.event("CoreShowChannelsComplete", ActionID=aid, EventList="Complete", ListItems="1")
        s.event("DialBegin", Channel="A", Uniqueid="1")  # same read, after the snapshot
        await s.drain()

    ami.handlers["queuestatus"] = queuestatus
    ami.handlers["coreshowchannels"] = coreshowchannels
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(2)
        await ami.wait_for(lambda: len(rec.events("DialBegin")) == 1)
        names = [n for kind, n in rec.timeline if kind == "resync" or n != "FullyBooted"]
        assert names == [
            "Newchannel",
            "QueueParams",
            "Newstate",
            "QueueStatusComplete",
            "Hangup",
            "CoreShowChannel",
            "1",  # on_resync, with one channel
            "CoreShowChannelsComplete",
            "DialBegin",
        ]
        assert rec.resyncs[0].queue_params == [
            {
                "Event": "QueueParams",
                "Queue": "support",
                "ActionID": ami.actions("QueueStatus")[0]["ActionID"],
            }
        ]
    finally:
        await link.stop()


async def test_resync_refused_still_connects_without_resync(ami: FakeAmi) -> None:
    """A manager.conf user without read permission for QueueStatus: the link comes up, no
    half-empty snapshot is delivered (it would end every live call), the error is logged."""

    def refuse(s: Any, msg: dict[str, str]) -> None:
        s.write(
            b"Response: Error\r\nActionID: "
            + msg["ActionID"].encode()
            + b"\r\nMessage: Permission denied\r\n\r\n"
        )

    ami.handlers["queuestatus"] = refuse
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        link = rec.link(make_settings(ami.port))
        await link.start()
        try:
            assert await link.wait_connected(2)
            assert rec.resyncs == []
        finally:
            await link.stop()
    refused = [e for e in logs if e["event"] == "ami_resync_refused"]
    assert refused and refused[0]["actions"] == ["QueueStatus"]


# -- backoff -------------------------------------------------------------------------------
def test_backoff_delay_grows_to_cap_with_bounded_jitter() -> None:
    rnd = random.Random(7)
    plain = [backoff_delay(n, 0.5, 30.0, 0.0, rnd) for n in range(10)]
    assert plain == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    jittered = [backoff_delay(n, 0.5, 30.0, 0.2, rnd) for n in range(200)]
    for n, d in enumerate(jittered):
        base = min(30.0, 0.5 * 2**n)
        assert base * 0.8 <= d <= base * 1.2
    assert len({round(d, 6) for d in jittered[10:]}) > 100  # really spread
    assert backoff_delay(10_000, 0.5, 30.0, 0.0, rnd) == 30.0  # no overflow


async def test_failed_login_backs_off_and_reports_auth_failed_once(ami: FakeAmi) -> None:
    ami.secret = "the-real-one"
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        link = rec.link(make_settings(ami.port, reconnect_min=0.05, reconnect_max=5.0))
        await link.start()
        try:
            await asyncio.sleep(2.0)
            attempts = ami.count("Login")
            assert 3 <= attempts <= 6, attempts  # panoramisk: one every reconnect_timeout
            assert not link.connected
            assert link.stats.auth_failures == attempts
            assert await link.wait_connected(0.05) is False
        finally:
            await link.stop()
    assert rec.states == ["connecting", "auth_failed", "stopped"]
    state_logs = [e for e in logs if e["event"] == "ami_state" and e["state"] == "auth_failed"]
    assert len(state_logs) == 1
    assert state_logs[0]["reason"] == "Authentication failed"
    assert state_logs[0]["log_level"] == "warning"
    # backoff: gaps between attempts grow
    t = ami.connect_times
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert gaps == sorted(gaps) or gaps[-1] > gaps[0] * 2


async def test_refused_connect_backs_off() -> None:
    port = free_port()
    rec = Recorder()
    link = rec.link(make_settings(port, reconnect_min=0.05, reconnect_max=5.0))
    await link.start()
    try:
        await asyncio.sleep(1.0)
        assert 2 <= link.stats.connect_attempts <= 5
        assert rec.states == ["connecting", "backoff"]
    finally:
        await link.stop()


async def test_recovers_when_server_appears_after_failures() -> None:
    port = free_port()
    rec = Recorder()
    link = rec.link(make_settings(port, reconnect_min=0.05, reconnect_max=0.1))
    await link.start()
    try:
        await asyncio.sleep(0.3)
        assert rec.states == ["connecting", "backoff"]
        server = FakeAmi()
        server_obj = await asyncio.start_server(server._serve, "127.0.0.1", port)
        try:
            assert await link.wait_connected(2)
            assert rec.states == ["connecting", "backoff", "connected"]
        finally:
            server_obj.close()
            await link.stop()
            await server.stop()
    finally:
        await link.stop()


async def test_auth_failure_then_fixed_secret_connects(ami: FakeAmi) -> None:
    ami.login_ok = False
    rec = Recorder()
    link = rec.link(make_settings(ami.port, reconnect_min=0.05, reconnect_max=0.1))
    await link.start()
    try:
        await ami.wait_for(lambda: ami.count("Login") >= 2)
        ami.login_ok = True  # the admin fixed manager.conf
        assert await link.wait_connected(2)
        assert rec.states == ["connecting", "auth_failed", "connected"]
        assert link.stats.reconnects == 0  # first successful login
    finally:
        await link.stop()


async def test_secret_is_never_logged(ami: FakeAmi, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Zq9-very-distinctive-SECRET-42"
    caplog.set_level("DEBUG")
    with structlog.testing.capture_logs() as logs:
        # a failing login first, then a good one, then a drop: every log path around login
        ami.secret = secret
        rec = Recorder()
        link = rec.link(make_settings(ami.port, secret=SecretStr("wrong-" + secret)))
        await link.start()
        await ami.wait_for(lambda: ami.count("Login") >= 1)
        await link.stop()
        link = rec.link(make_settings(ami.port, secret=SecretStr(secret)))
        await link.start()
        assert await link.wait_connected(2)
        ami.drop_all()
        await ami.wait_for(lambda: link.stats.reconnects == 1)
        assert await link.wait_connected(2)
        await link.stop()
    assert logs, "the link logs its state changes"
    assert secret not in repr(logs)
    assert secret not in caplog.text
    assert any(m.get("Secret") == secret for m in ami.received)  # it was really used


async def test_invalid_secret_text_is_refused_without_leaking() -> None:
    async with FakeAmi() as ami:
        rec = Recorder()
        with structlog.testing.capture_logs() as logs:
            link = rec.link(make_settings(ami.port, secret=SecretStr("abc\r\nAction: Originate")))
            await link.start()
            await asyncio.sleep(0.3)
            await link.stop()
        assert ami.count("Login") == 0 and ami.count("Originate") == 0
        assert rec.states[:2] == ["connecting", "auth_failed"]
        assert "Originate" not in repr(logs)


# -- keepalive -----------------------------------------------------------------------------
async def test_silent_peer_is_detected_and_link_reestablished(ami: FakeAmi) -> None:
    rec = Recorder()
    link = rec.link(make_settings(ami.port, ping_interval=0.1, ping_timeout=0.3))
    await link.start()
    try:
        assert await link.wait_connected(2)
        await asyncio.sleep(0.35)
        assert ami.count("Ping") >= 2 and ami.connections == 1  # answered pings: stays up
        ami.answer_pings = False  # TCP stays open, nothing answers
        await ami.wait_for(lambda: ami.connections == 2, 3)
        assert link.stats.pings_missed >= 1
        ami.answer_pings = True
        assert await link.wait_connected(2)
        assert "disconnected" in rec.states and rec.states[-1] == "connected"
        assert len(rec.resyncs) == 2
    finally:
        await link.stop()


async def test_silent_peer_during_login_times_out(ami: FakeAmi) -> None:
    ami.answer_login = False
    rec = Recorder()
    link = rec.link(make_settings(ami.port, connect_timeout=0.2, reconnect_min=0.05))
    await link.start()
    try:
        await ami.wait_for(lambda: ami.connections >= 2, 3)
        assert not link.connected
        assert rec.states == ["connecting", "backoff"]
        ami.answer_login = True
        assert await link.wait_connected(3)
    finally:
        await link.stop()


# -- stop ----------------------------------------------------------------------------------
async def test_stop_logs_off_and_leaves_no_task(ami: FakeAmi) -> None:
    before = other_tasks()
    rec = Recorder()
    link = rec.link(make_settings(ami.port, ping_interval=0.05))
    await link.start()
    assert await link.wait_connected(2)
    await asyncio.sleep(0.1)
    await link.stop()
    assert ami.count("Logoff") == 1
    assert not link.connected
    assert rec.states[-1] == "stopped"
    # only the fake server's own session tasks may remain (they end with the fixture)
    assert other_tasks() - before - ami.server_tasks == set()


async def test_stop_during_backoff_is_quick_and_clean() -> None:
    before = other_tasks()
    rec = Recorder()
    link = rec.link(make_settings(free_port(), reconnect_min=5.0, reconnect_max=10.0))
    await link.start()
    await asyncio.sleep(0.1)
    assert rec.states[-1] == "backoff"
    t0 = time.monotonic()
    await link.stop()
    assert time.monotonic() - t0 < 0.5
    assert other_tasks() - before == set()
    assert rec.states[-1] == "stopped"


async def test_stop_before_start_and_twice() -> None:
    link = Recorder().link(make_settings(free_port()))
    await link.stop()
    await link.stop()
    assert not link.connected


async def test_start_stop_start_again(ami: FakeAmi) -> None:
    link = Recorder().link(make_settings(ami.port))
    await link.start()
    assert await link.wait_connected(2)
    await link.stop()
    await link.start()
    assert await link.wait_connected(2)
    resp = await link.send(build_action("Ping"))
    assert resp.headers["Ping"] == "Pong"
    await link.stop()
    assert ami.count("Logoff") == 2


async def test_flapping_link_backs_off_too(ami: FakeAmi) -> None:
    """A PBX that accepts the login and then drops us at once must not be hammered either:
    only a link that stayed up a while resets the backoff."""

    def drop_after_snapshot(s: Any, msg: dict[str, str]) -> None:
        aid = msg["ActionID"]
        s.write(
            f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
            f"Message: Channels will follow\r\n\r\nEvent: CoreShowChannelsComplete\r\n"
            f"ActionID: {aid}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n".encode()
        )
        asyncio.get_running_loop().call_later(0.01, s.abort)

    ami.handlers["coreshowchannels"] = drop_after_snapshot
    rec = Recorder()
    link = rec.link(make_settings(ami.port, reconnect_min=0.05, reconnect_max=5.0))
    await link.start()
    try:
        await asyncio.sleep(1.5)
        assert 3 <= ami.connections <= 6, ami.connections
        assert len(rec.resyncs) == ami.connections
    finally:
        await link.stop()


async def test_stop_while_login_pending_is_clean(ami: FakeAmi) -> None:
    ami.answer_login = False
    before = other_tasks()
    rec = Recorder()
    link = rec.link(make_settings(ami.port, connect_timeout=5.0))
    await link.start()
    await ami.wait_for(lambda: ami.count("Login") == 1)
    t0 = time.monotonic()
    await link.stop()
    assert time.monotonic() - t0 < 0.5
    assert other_tasks() - before - ami.server_tasks == set()
    assert rec.states == ["connecting", "stopped"]
    assert ami.count("Logoff") == 0  # never logged in: nothing to log off


async def test_drop_during_resync_delivers_no_partial_snapshot(ami: FakeAmi) -> None:
    ami.channels = [CHANNEL]
    calls = 0

    def half_then_drop(s: Any, msg: dict[str, str]) -> None:
        nonlocal calls
        calls += 1
        aid = msg["ActionID"]
        s.write(
            f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
            f"Message: Channels will follow\r\n\r\nEvent: CoreShowChannel\r\n"
            f"ActionID: {aid}\r\nChannel: half\r\n\r\n".encode()
        )
        if calls == 1:
            s.abort()
        else:
            ami.handlers.pop("coreshowchannels")
            s.write(
                f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                f"EventList: Complete\r\nListItems: 1\r\n\r\n".encode()
            )

    ami.handlers["coreshowchannels"] = half_then_drop
    rec = Recorder()
    link = rec.link(make_settings(ami.port))
    await link.start()
    try:
        assert await link.wait_connected(3)
        assert ami.connections == 2
        assert [[c["Channel"] for c in r.channels] for r in rec.resyncs] == [["half"]]
        assert rec.states == ["connecting", "backoff", "connected"]
    finally:
        await link.stop()


async def test_resync_that_never_completes_times_out_and_retries(ami: FakeAmi) -> None:
    ami.handlers["coreshowchannels"] = lambda s, m: None
    rec = Recorder()
    link = rec.link(make_settings(ami.port, action_timeout=0.2))
    await link.start()
    try:
        await ami.wait_for(lambda: ami.connections >= 2, 3)
        assert not link.connected and rec.resyncs == []
        ami.handlers.pop("coreshowchannels")
        assert await link.wait_connected(3)
        assert len(rec.resyncs) == 1
    finally:
        await link.stop()


async def test_stop_racing_the_login_answer_never_hangs() -> None:
    """Regression: a stop() that lands while the login/resync answers are arriving used to be
    swallowed by Python 3.11's wait_for, leaving the link up with nobody to stop it. The PBX
    simulator answers as fast as Asterisk, which is what exposed it."""
    from ami.settings import SimulatorSettings
    from ami.simulator import PbxSimulator

    sim = PbxSimulator(SimulatorSettings(port=0, inbound_per_minute=0, secret=SecretStr("s")))
    await sim.start()
    before = other_tasks()
    try:
        for i in range(40):
            rec = Recorder()
            settings = make_settings(sim.port, connect_timeout=5.0).model_copy(
                update={"username": "cti", "secret": SecretStr("s")}
            )
            link = rec.link(settings)
            await link.start()
            for _ in range(i % 8):  # land anywhere in connect, login or resync
                await asyncio.sleep(0)
            t0 = time.monotonic()
            async with asyncio.timeout(5):  # the bug this guards against hung forever
                await link.stop()
            assert time.monotonic() - t0 < 1.5, f"stop took too long at step {i}"
            assert not rec.states or rec.states[-1] == "stopped"
            assert not link.connected
        await asyncio.sleep(0.05)
        assert {t for t in other_tasks() - before if not t.get_name().startswith("sim")} == set()
    finally:
        await sim.stop()
