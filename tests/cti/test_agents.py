"""The agent service: login/logout/pause through the real AMI link to a queue-keeping AMI
server over TCP, and the state machine driven by plain call events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ami.actions import build_action
from ami.connection import AmiLink
from ami.events import (
    AgentStateChange,
    AgentStatus,
    Hangup,
    Party,
    Ringing,
    RingingEnd,
    Transfer,
    Up,
)
from cti.agents import AgentError, AgentService
from cti.settings import AgentSettings
from tests.cti.test_agents_support import QueuePbx, pbx_and_link

S = AgentStatus
CALLER = Party(channel="PJSIP/trunk-00000001", uniqueid="c.1", linkedid="c.1", number="+4930123")


def party(channel: str, uid: str = "u") -> Party:
    return Party(channel=channel, uniqueid=uid, linkedid="c.1")


class Clock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


class Env:
    def __init__(self, pbx: QueuePbx, link: AmiLink) -> None:
        self.pbx = pbx
        self.link = link
        self.clock = Clock()
        self.svc = AgentService(
            AgentSettings(
                pause_reasons=["break", "lunch"],
                wrap_up_seconds={"default": 30.0, "support": 5.0, "winter-campaign": 2.0},
                pause_during_wrap_up=True,
            ),
            {"pbx1": link},
            clock=self.clock,
        )
        self.changes: list[AgentStateChange] = []
        self.svc.subscribe(self.changes.append)

    def statuses(self, agent: str) -> list[tuple[str, float, str | None]]:
        return [(c.status.value, c.at, c.reason) for c in self.changes if c.agent == agent]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with pbx_and_link() as (pbx, link):
        yield Env(pbx, link)


async def test_login_adds_queue_membership_with_the_agents_name(env: Env) -> None:
    view = await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support", "sales"])
    assert view.status is S.READY and view.queues == ("support", "sales")
    adds = env.pbx.actions("QueueAdd")
    assert [(a["Queue"], a["Interface"], a["MemberName"], a["StateInterface"]) for a in adds] == [
        ("support", "PJSIP/1001", "Alice", "PJSIP/1001"),
        ("sales", "PJSIP/1001", "Alice", "PJSIP/1001"),
    ]
    assert set(env.pbx.members) == {("support", "PJSIP/1001"), ("sales", "PJSIP/1001")}
    assert env.statuses("a1") == [("ready", 5000.0, None)]
    assert env.svc.agent_for_device("PJSIP/1001") == "a1"
    assert env.svc.agent_for_channel("PJSIP/1001-0000002a") == "a1"


@pytest.mark.parametrize(
    "device",
    [
        "SIP/10\r\nAction: Originate",
        "PJSIP/1001\n",
        "PJSIP/1001-0000002a",  # a channel, not a device
        "PJSIP",
        "",
        "PJSIP/10 01",
        "PJSIP/1001&PJSIP/1002",
    ],
)
async def test_bad_devices_are_refused_before_any_action(env: Env, device: str) -> None:
    with pytest.raises(AgentError) as e:
        await env.svc.login("a1", name="A", device=device, queues=["support"])
    assert e.value.code == "bad_device"
    assert env.pbx.actions("QueueAdd") == []
    assert env.svc.view("a1").status is S.LOGGED_OUT


async def test_cr_lf_in_name_or_queue_refused(env: Env) -> None:
    with pytest.raises(AgentError) as e:
        await env.svc.login("a1", name="Eve\r\nAction: Hangup", device="PJSIP/1", queues=["q"])
    assert e.value.code == "bad_name"
    with pytest.raises(AgentError) as e:
        await env.svc.login("a1", name="Eve", device="PJSIP/1", queues=["q\r\nX: y"])
    assert e.value.code == "bad_queue"
    assert env.pbx.actions("QueueAdd") == []


async def test_device_used_by_another_agent_is_refused(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    with pytest.raises(AgentError) as e:
        await env.svc.login("b2", name="Bob", device="PJSIP/1001", queues=["sales"])
    assert e.value.code == "device_in_use"
    assert len(env.pbx.actions("QueueAdd")) == 1
    # a device that merely starts the same is a different device
    await env.svc.login("b2", name="Bob", device="PJSIP/10010", queues=["sales"])
    assert env.svc.agent_for_channel("PJSIP/10010-00000001") == "b2"
    assert env.svc.agent_for_channel("PJSIP/1001-00000001") == "a1"


async def test_failed_login_rolls_back(env: Env) -> None:
    env.pbx.refuse_queues.add("broken")
    with pytest.raises(AgentError) as e:
        await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support", "broken"])
    assert e.value.code == "ami_failed" and "No such queue" in str(e.value)
    assert env.pbx.members == {}
    assert env.svc.view("a1").status is S.LOGGED_OUT
    assert env.svc.agent_for_device("PJSIP/1001") is None
    assert env.changes == []


async def test_relogin_moves_queues_and_logout_removes(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support", "sales"])
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["sales", "vip"])
    assert set(env.pbx.members) == {("sales", "PJSIP/1001"), ("vip", "PJSIP/1001")}
    await env.svc.login("a1", name="Alice", device="PJSIP/2002", queues=["vip"])
    assert set(env.pbx.members) == {("vip", "PJSIP/2002")}
    assert env.svc.agent_for_device("PJSIP/1001") is None
    env.clock.t = 5100.0
    await env.svc.logout("a1")
    assert env.pbx.members == {}
    assert env.svc.view("a1").status is S.LOGGED_OUT
    assert env.statuses("a1")[-1] == ("logged_out", 5100.0, None)
    await env.svc.logout("a1")  # twice is fine
    # the device is free again
    await env.svc.login("b2", name="Bob", device="PJSIP/2002", queues=["vip"])


async def test_pause_and_unpause(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support", "sales"])
    env.clock.t = 5010.0
    view = await env.svc.pause("a1", "lunch")
    assert view.status is S.PAUSED and view.reason == "lunch"
    (pause,) = env.pbx.actions("QueuePause")
    assert pause["Interface"] == "PJSIP/1001" and pause["Paused"] == "true"
    assert pause["Reason"] == "lunch" and "Queue" not in pause
    assert all(m.paused and m.reason == "lunch" for m in env.pbx.members.values())
    for bad in ("coffee", "lunch\r\nAction: Hangup", ""):
        with pytest.raises(AgentError) as e:
            await env.svc.pause("a1", bad)
        assert e.value.code == "bad_reason"
    await env.svc.pause("a1", "break")  # switching reason is a new state change
    env.clock.t = 5020.0
    view = await env.svc.unpause("a1")
    assert view.status is S.READY and view.reason is None
    assert not any(m.paused for m in env.pbx.members.values())
    assert env.statuses("a1") == [
        ("ready", 5000.0, None),
        ("paused", 5010.0, "lunch"),
        ("paused", 5010.0, "break"),
        ("ready", 5020.0, None),
    ]
    with pytest.raises(AgentError) as e:
        await env.svc.pause("nobody", "lunch")
    assert e.value.code == "not_logged_in"


async def test_ami_refusal_leaves_state_unchanged(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    env.pbx.refuse.add("queuepause")
    with pytest.raises(AgentError) as e:
        await env.svc.pause("a1", "lunch")
    assert e.value.code == "ami_failed"
    assert env.svc.view("a1").status is S.READY


async def test_queue_call_cycle_with_wrap_up_timer(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    agent = party("PJSIP/1001-0000000a", "u.2")
    env.svc.on_call_event(
        Ringing(call_id="c.1", at=6000.0, caller=CALLER, targets=(agent,), queue="support")
    )
    assert env.svc.view("a1").status is S.RINGING
    assert env.svc.view("a1").calls == ("c.1",)
    # a repeated ringing changes nothing
    env.svc.on_call_event(
        Ringing(call_id="c.1", at=6000.5, caller=CALLER, targets=(agent,), queue="support")
    )
    env.svc.on_call_event(
        RingingEnd(call_id="c.1", at=6002.0, caller=CALLER, targets=(agent,), reason="answer")
    )
    env.svc.on_call_event(Up(call_id="c.1", at=6002.1, caller=CALLER, callee=agent))
    assert env.svc.view("a1").status is S.ON_CALL
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=6060.0, caller=CALLER, reason="completed", cause=16)
    )
    v = env.svc.view("a1")
    assert v.status is S.WRAP_UP and v.wrap_up_until == 6065.0 and v.calls == ()
    env.svc.tick(6064.9)
    assert env.svc.view("a1").status is S.WRAP_UP
    env.svc.tick(6066.0)
    assert env.svc.view("a1").status is S.READY
    assert env.statuses("a1") == [
        ("ready", 5000.0, None),
        ("ringing", 6000.0, None),
        ("on_call", 6002.0, None),
        ("wrap_up", 6060.0, None),
        ("ready", 6065.0, None),
    ]
    wrap = next(c for c in env.changes if c.status is S.WRAP_UP)
    assert wrap.call_id == "c.1"


async def test_device_matching_is_exact(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="SIP/10", queues=["support"])
    env.svc.on_call_event(
        Ringing(call_id="c.1", at=1.0, caller=CALLER, targets=(party("SIP/100-00000001"),))
    )
    assert env.svc.view("a1").status is S.READY
    env.svc.on_call_event(
        Ringing(call_id="c.2", at=2.0, caller=CALLER, targets=(party("SIP/10-00000002"),))
    )
    assert env.svc.view("a1").status is S.RINGING
    # an event from another Asterisk server is not about this agent's device
    await env.svc.login("b2", name="Bob", device="SIP/20", queues=["support"])
    env.svc.on_call_event(
        Ringing(
            call_id="c.3",
            at=3.0,
            caller=CALLER,
            targets=(party("SIP/20-00000003"),),
            server="pbx2",
        )
    )
    assert env.svc.view("b2").status is S.READY


async def test_ringall_others_return_to_ready(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    await env.svc.login("b2", name="Bob", device="PJSIP/1002", queues=["support"])
    await env.svc.pause("b2", "break")
    a, b = party("PJSIP/1001-00000001", "u.a"), party("PJSIP/1002-00000002", "u.b")
    env.svc.on_call_event(Ringing(call_id="c.1", at=10.0, caller=CALLER, targets=(a, b)))
    assert env.svc.view("a1").status is S.RINGING and env.svc.view("b2").status is S.RINGING
    env.svc.on_call_event(Up(call_id="c.1", at=12.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        RingingEnd(call_id="c.1", at=12.0, caller=CALLER, targets=(b,), reason="cancel")
    )
    assert env.svc.view("a1").status is S.ON_CALL
    vb = env.svc.view("b2")
    assert vb.status is S.PAUSED and vb.reason == "break" and vb.wrap_up_until is None
    assert env.statuses("b2")[-1] == ("paused", 12.0, "break")


async def test_pause_during_wrap_up_and_end_wrap_up(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["sales"])
    a = party("PJSIP/1001-00000001")
    env.svc.on_call_event(Up(call_id="c.1", at=10.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=20.0, caller=CALLER, reason="completed", cause=16)
    )
    assert env.svc.view("a1").wrap_up_until == 50.0  # default 30 s
    env.clock.t = 25.0
    assert env.svc.end_wrap_up("a1").status is S.READY
    assert env.svc.end_wrap_up("a1").status is S.READY  # nothing to end: no change
    env.svc.on_call_event(Up(call_id="c.2", at=30.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        Hangup(call_id="c.2", at=40.0, caller=CALLER, reason="completed", cause=16)
    )
    env.clock.t = 41.0
    v = await env.svc.pause("a1", "lunch")
    assert v.status is S.PAUSED and v.wrap_up_until is None
    env.svc.tick(1000.0)
    assert env.svc.view("a1").status is S.PAUSED
    assert [s for s, _, _ in env.statuses("a1")] == [
        "ready",
        "on_call",
        "wrap_up",
        "ready",
        "on_call",
        "wrap_up",
        "paused",
    ]


async def test_calls_the_agent_places_count(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    me = party("PJSIP/1001-00000001")
    other = party("PJSIP/trunk-00000002")
    env.svc.on_call_event(Ringing(call_id="c.9", at=10.0, caller=me, targets=(other,)))
    assert env.svc.view("a1").status is S.ON_CALL
    # never answered: no wrap-up
    env.svc.on_call_event(Hangup(call_id="c.9", at=30.0, caller=me, reason="no-answer", cause=19))
    assert env.svc.view("a1").status is S.READY
    env.svc.on_call_event(Ringing(call_id="c.10", at=40.0, caller=me, targets=(other,)))
    env.svc.on_call_event(Up(call_id="c.10", at=45.0, caller=me, callee=other))
    env.svc.on_call_event(Hangup(call_id="c.10", at=90.0, caller=me, reason="completed", cause=16))
    v = env.svc.view("a1")
    assert v.status is S.WRAP_UP and v.wrap_up_until == 120.0


async def test_campaign_wrap_up_and_campaign_in_changes(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    a = party("PJSIP/1001-00000001")
    env.svc.on_call_event(
        Ringing(
            call_id="c.1",
            at=10.0,
            caller=CALLER,
            targets=(a,),
            queue="support",
            variables={"CAMPAIGN": "winter-campaign", "LEAD": "42"},
        )
    )
    env.svc.on_call_event(Up(call_id="c.1", at=11.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=20.0, caller=CALLER, reason="completed", cause=16)
    )
    assert env.svc.view("a1").wrap_up_until == 22.0  # the campaign's setting wins
    assert {c.campaign for c in env.changes if c.status is not S.READY} == {"winter-campaign"}


async def test_blind_transfer_moves_the_call(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    await env.svc.login("b2", name="Bob", device="PJSIP/1002", queues=["support"])
    a, b = party("PJSIP/1001-00000001"), party("PJSIP/1002-00000002")
    env.svc.on_call_event(
        Ringing(call_id="c.1", at=10.0, caller=CALLER, targets=(a,), queue="support")
    )
    env.svc.on_call_event(Up(call_id="c.1", at=11.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        Transfer(call_id="c.1", at=20.0, kind="blind", caller=CALLER, transferer=a, targets=(b,))
    )
    va, vb = env.svc.view("a1"), env.svc.view("b2")
    assert va.status is S.WRAP_UP and va.wrap_up_until == 25.0 and va.calls == ()
    assert vb.status is S.RINGING and vb.calls == ("c.1",)
    env.svc.on_call_event(Ringing(call_id="c.1", at=20.1, caller=CALLER, targets=(b,)))
    env.svc.on_call_event(Up(call_id="c.1", at=22.0, caller=CALLER, callee=b))
    assert env.svc.view("b2").status is S.ON_CALL
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=40.0, caller=CALLER, reason="completed", cause=16)
    )
    vb = env.svc.view("b2")
    assert vb.status is S.WRAP_UP and vb.wrap_up_until == 45.0  # the call's queue follows it


async def test_attended_transfer_replaces_the_consultation_call(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    await env.svc.login("b2", name="Bob", device="PJSIP/1002", queues=["support"])
    a, b = party("PJSIP/1001-00000001"), party("PJSIP/1002-00000002")
    a2 = party("PJSIP/1001-00000003")  # Alice's second line for the consultation
    env.svc.on_call_event(Up(call_id="c.1", at=10.0, caller=CALLER, callee=a))
    env.svc.on_call_event(Ringing(call_id="c.2", at=15.0, caller=a2, targets=(b,)))
    env.svc.on_call_event(Up(call_id="c.2", at=16.0, caller=a2, callee=b))
    assert env.svc.view("b2").status is S.ON_CALL
    env.svc.on_call_event(
        Transfer(call_id="c.1", at=30.0, kind="attended", caller=CALLER, transferer=a, targets=(b,))
    )
    assert env.svc.view("a1").status is S.WRAP_UP and env.svc.view("a1").calls == ()
    vb = env.svc.view("b2")
    assert vb.status is S.ON_CALL and vb.calls == ("c.1",)
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=60.0, caller=CALLER, reason="completed", cause=16)
    )
    assert env.svc.view("b2").status is S.WRAP_UP and env.svc.view("b2").calls == ()


async def test_queue_status_reconciles_after_resync(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support", "sales"])
    await env.svc.login("b2", name="Bob", device="PJSIP/1002", queues=["support"])
    # a supervisor paused Alice from the Asterisk console; Bob's membership vanished (restart)
    for m in env.pbx.members.values():
        if m.interface == "PJSIP/1001":
            m.paused, m.reason = True, "meeting"
    del env.pbx.members[("support", "PJSIP/1002")]
    resp = await env.link.send(build_action("QueueStatus"))
    members = [i for i in resp.items if i.get("Event") == "QueueMember"]
    env.clock.t = 7000.0
    env.svc.apply_queue_status(members)
    va = env.svc.view("a1")
    assert va.status is S.PAUSED and va.reason == "meeting"
    assert env.svc.view("b2").status is S.LOGGED_OUT
    assert env.svc.agent_for_device("PJSIP/1002") is None
    # and the other way round: unpaused on the PBX
    for m in env.pbx.members.values():
        m.paused, m.reason = False, ""
    resp = await env.link.send(build_action("QueueStatus"))
    env.svc.apply_queue_status([i for i in resp.items if i.get("Event") == "QueueMember"])
    assert env.svc.view("a1").status is S.READY


async def test_a_failing_listener_does_not_stop_others(env: Env) -> None:
    def boom(change: AgentStateChange) -> None:
        raise RuntimeError("listener bug")

    env.svc.subscribe(boom)
    seen: list[AgentStatus] = []
    env.svc.subscribe(lambda c: seen.append(c.status))
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    assert seen == [S.READY]


async def test_wrap_up_pauses_the_queues_and_ending_it_unpauses(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support", "sales"])
    a = party("PJSIP/1001-00000001")
    env.svc.on_call_event(Up(call_id="c.1", at=10.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=20.0, caller=CALLER, reason="completed", cause=16)
    )
    await env.svc.settle()
    (p,) = env.pbx.actions("QueuePause")
    assert (p["Interface"], p["Paused"], p["Reason"]) == ("PJSIP/1001", "true", "wrap-up")
    assert all(m.paused and m.reason == "wrap-up" for m in env.pbx.members.values())
    # the PBX's wrap-up pause is not an agent pause
    resp = await env.link.send(build_action("QueueStatus"))
    env.svc.apply_queue_status([i for i in resp.items if i.get("Event") == "QueueMember"])
    assert env.svc.view("a1").status is S.WRAP_UP
    env.svc.tick(50.0)
    await env.svc.settle()
    assert env.svc.view("a1").status is S.READY
    assert env.pbx.actions("QueuePause")[-1]["Paused"] == "false"
    assert not any(m.paused for m in env.pbx.members.values())


async def test_pause_during_wrap_up_keeps_the_pbx_paused_with_the_agents_reason(env: Env) -> None:
    await env.svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    a = party("PJSIP/1001-00000001")
    env.svc.on_call_event(Up(call_id="c.1", at=10.0, caller=CALLER, callee=a))
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=20.0, caller=CALLER, reason="completed", cause=16)
    )
    await env.svc.pause("a1", "lunch")
    await env.svc.settle()
    env.svc.tick(1000.0)
    await env.svc.settle()
    pauses = [(p["Paused"], p.get("Reason")) for p in env.pbx.actions("QueuePause")]
    assert pauses[-1] == ("true", "lunch")
    assert ("false", None) not in pauses
    (m,) = env.pbx.members.values()
    assert m.paused and m.reason == "lunch"


async def test_wrap_up_pause_can_be_switched_off(env: Env) -> None:
    svc = AgentService(
        AgentSettings(wrap_up_seconds={"default": 5.0}, pause_during_wrap_up=False),
        {"pbx1": env.link},
    )
    await svc.login("a1", name="Alice", device="PJSIP/1001", queues=["support"])
    a = party("PJSIP/1001-00000001")
    svc.on_call_event(Up(call_id="c.1", at=10.0, caller=CALLER, callee=a))
    svc.on_call_event(Hangup(call_id="c.1", at=20.0, caller=CALLER, reason="completed", cause=16))
    await svc.settle()
    assert svc.view("a1").status is S.WRAP_UP
    assert env.pbx.actions("QueuePause") == []


async def test_hangup_ends_the_legs_of_that_call_only_and_follows_moves(env: Env) -> None:
    """Hangups reach agents through the call index: every agent on the call ends its leg
    (ringall, transfer), nobody else changes, and an agent who logged in again on another
    device mid-call is not touched by the old call's end."""
    for i in range(30):
        await env.svc.login(f"x{i}", name=f"X{i}", device=f"PJSIP/3{i:03d}", queues=["sales"])
    legs = tuple(party(f"PJSIP/3{i:03d}-0000{i:04d}", f"u.{i}") for i in range(3))
    env.svc.on_call_event(
        Ringing(call_id="c.1", at=10.0, caller=CALLER, targets=legs, queue="support")
    )
    env.svc.on_call_event(Up(call_id="c.1", at=11.0, caller=CALLER, callee=legs[0]))
    env.svc.on_call_event(
        RingingEnd(call_id="c.1", at=11.0, caller=CALLER, targets=legs[1:2], reason="cancel")
    )
    # x2 is still ringing (a missed RingingEnd); x5 rings for another call
    other = party("PJSIP/3005-00000099", "u.5")
    env.svc.on_call_event(Ringing(call_id="c.2", at=11.5, caller=CALLER, targets=(other,)))
    # x1 moves to another device while c.1 is still up for x0
    await env.svc.login("x1", name="X1", device="PJSIP/4001", queues=["sales"])
    before = len(env.changes)
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=20.0, caller=CALLER, reason="completed", cause=16)
    )
    changed = {c.agent: c.status for c in env.changes[before:]}
    assert changed == {"x0": S.WRAP_UP, "x2": S.READY}
    assert env.svc.view("x5").status is S.RINGING and env.svc.view("x5").calls == ("c.2",)
    assert env.svc.next_deadline() == 25.0
    env.svc.tick(26.0)
    assert env.svc.view("x0").status is S.READY and env.svc.next_deadline() is None
    # a second hangup of the same call changes nothing
    before = len(env.changes)
    env.svc.on_call_event(
        Hangup(call_id="c.1", at=30.0, caller=CALLER, reason="completed", cause=16)
    )
    env.svc.on_call_event(
        Hangup(call_id="c.2", at=31.0, caller=CALLER, reason="completed", cause=16)
    )
    assert [(c.agent, c.status) for c in env.changes[before:]] == [("x5", S.READY)]
