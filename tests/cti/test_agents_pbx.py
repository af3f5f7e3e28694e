"""The agent service against the PBX simulator over real TCP: queue membership and pause on
the PBX side, and the state machine driven by the tracker's events from a real queue call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from ami.actions import build_action
from ami.connection import AmiLink
from ami.events import AgentStateChange, AgentStatus
from ami.settings import AmiServerSettings, SimulatorSettings
from ami.simulator import PbxSimulator
from ami.tracker import CallTracker
from cti.agents import AgentService
from cti.settings import AgentSettings

S = AgentStatus


@dataclass
class Rig:
    sim: PbxSimulator
    link: AmiLink
    svc: AgentService
    changes: list[AgentStateChange]

    async def wait(self, cond: Callable[[], Any], within: float = 5.0) -> Any:
        deadline = time.monotonic() + within
        while not (v := cond()):
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            self.svc.tick(time.time())
            await asyncio.sleep(0.01)
        return v


@asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    sim = PbxSimulator(
        SimulatorSettings(
            port=0,
            secret=SecretStr("sim-secret"),
            inbound_per_minute=0,
            time_scale=10.0,
            phone_mode="manual",
        )
    )
    await sim.start()
    tracker = CallTracker(server="pbx1")
    services: list[AgentService] = []

    def on_message(msg: dict[str, str], at: float) -> None:
        for ev in tracker.feed(msg, at):
            services[0].on_call_event(ev)

    link = AmiLink(
        AmiServerSettings(name="pbx1", port=sim.port, secret=SecretStr("sim-secret")),
        on_message=on_message,
    )
    svc = AgentService(
        AgentSettings(
            pause_reasons=["lunch", "break"],
            wrap_up_seconds={"default": 0.4},
            pause_during_wrap_up=True,
        ),
        {"pbx1": link},
    )
    services.append(svc)
    changes: list[AgentStateChange] = []
    svc.subscribe(changes.append)
    await link.start()
    try:
        assert await link.wait_connected(5)
        yield Rig(sim, link, svc, changes)
    finally:
        await link.stop()
        await sim.stop()


async def queue_members(link: AmiLink) -> list[dict[str, str]]:
    resp = await link.send(build_action("QueueStatus"))
    return [i for i in resp.items if i.get("Event") == "QueueMember"]


async def test_login_pause_and_a_queue_call_through_the_simulator() -> None:
    async with rig() as r:
        await r.svc.login("a1", name="Anna Agent", device="PJSIP/1001", queues=["support"])
        members = await queue_members(r.link)
        (m,) = [x for x in members if x["Location"] == "PJSIP/1001"]
        assert m["Queue"] == "support" and m["Name"] == "Anna Agent" and m["Paused"] == "0"

        await r.svc.pause("a1", "lunch")
        (m,) = [x for x in await queue_members(r.link) if x["Location"] == "PJSIP/1001"]
        assert m["Paused"] == "1" and m["PausedReason"] == "lunch"
        # a paused agent gets no queue call; after unpausing the waiting call rings
        lid = r.sim.inbound_call("+4930123456", queue="support")
        await asyncio.sleep(0.5)
        assert r.svc.view("a1").status is S.PAUSED
        await r.svc.unpause("a1")
        (m,) = [x for x in await queue_members(r.link) if x["Location"] == "PJSIP/1001"]
        assert m["Paused"] == "0"
        await r.wait(lambda: r.svc.view("a1").status is S.RINGING)
        assert r.svc.view("a1").calls == (lid,)
        assert r.sim.answer("PJSIP/1001")
        await r.wait(lambda: r.svc.view("a1").status is S.ON_CALL)
        assert r.sim.hangup_call(lid)
        await r.wait(lambda: r.svc.view("a1").status is S.WRAP_UP)
        await r.wait(lambda: r.svc.view("a1").status is S.READY, within=3)
        statuses = [c.status for c in r.changes]
        if statuses[2] is S.RINGING:
            # the PBX rang the waiting call before the unpause's response came back: the
            # agent went from paused straight to ringing, which is what happened
            statuses.insert(2, S.READY)
        assert statuses == [
            S.READY,
            S.PAUSED,
            S.READY,
            S.RINGING,
            S.ON_CALL,
            S.WRAP_UP,
            S.READY,
        ]
        times = [c.at for c in r.changes]
        assert times == sorted(times)
        wrap, ready = r.changes[-2], r.changes[-1]
        assert wrap.status is S.WRAP_UP and wrap.call_id == lid
        assert abs(ready.at - wrap.at - 0.4) < 0.01

        await r.svc.logout("a1")
        assert not [x for x in await queue_members(r.link) if x["Location"] == "PJSIP/1001"]
        assert r.svc.view("a1").status is S.LOGGED_OUT


async def test_no_queue_call_rings_during_wrap_up() -> None:
    async with rig() as r:
        r.svc._settings.wrap_up_seconds["default"] = 1.0
        await r.svc.login("a1", name="Anna", device="PJSIP/1001", queues=["support"])
        lid = r.sim.inbound_call("+4930123456", queue="support")
        await r.wait(lambda: r.svc.view("a1").status is S.RINGING)
        r.sim.answer("PJSIP/1001")
        await r.wait(lambda: r.svc.view("a1").status is S.ON_CALL)
        r.sim.hangup_call(lid)
        await r.wait(lambda: r.svc.view("a1").status is S.WRAP_UP)
        await r.svc.settle()
        (m,) = [x for x in await queue_members(r.link) if x["Location"] == "PJSIP/1001"]
        assert m["Paused"] == "1" and m["PausedReason"] == "wrap-up"
        second = r.sim.inbound_call("+4930654321", queue="support")
        await asyncio.sleep(0.3)
        assert r.svc.view("a1").status is S.WRAP_UP  # the waiting call does not ring
        await r.wait(lambda: r.svc.view("a1").status is S.RINGING, within=4)
        assert r.svc.view("a1").calls == (second,)
        statuses = [c.status for c in r.changes]
        assert statuses[-3:] == [S.WRAP_UP, S.READY, S.RINGING]


async def test_similar_device_names_do_not_mix() -> None:
    async with rig() as r:
        await r.svc.login("a1", name="Ten", device="PJSIP/10", queues=["sales"])
        await r.svc.login("a2", name="Hundred", device="PJSIP/100", queues=["support"])
        lid = r.sim.inbound_call("+4930999999", queue="support")
        await r.wait(lambda: r.svc.view("a2").status is S.RINGING)
        assert r.svc.view("a1").status is S.READY
        r.sim.hangup_call(lid)
        await r.wait(lambda: r.svc.view("a2").status is S.READY)
        assert [c.agent for c in r.changes if c.status is not S.READY] == ["a2"]


async def test_resync_after_the_pbx_lost_the_membership() -> None:
    async with rig() as r:
        await r.svc.login("a1", name="Anna", device="PJSIP/1001", queues=["support"])
        await r.svc.login("a2", name="Bert", device="PJSIP/1002", queues=["support"])
        # someone removes Bert on the PBX (or Asterisk restarted without him)
        await r.link.send(
            build_action("QueueRemove", {"Queue": "support", "Interface": "PJSIP/1002"})
        )
        r.svc.apply_queue_status(await queue_members(r.link), server="pbx1")
        assert r.svc.view("a1").status is S.READY
        assert r.svc.view("a2").status is S.LOGGED_OUT
