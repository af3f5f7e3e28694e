"""The PBX simulator over real TCP: login, actions, call flows, robustness, determinism."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from ami.simulator import PbxSimulator, run_simulator

from .test_simulator_helpers import Client, Msg, client, settings, start_sim


async def _add(c: Client, iface: str, name: str, queue: str = "support") -> None:
    resp = await c.action("QueueAdd", {"Queue": queue, "Interface": iface, "MemberName": name})
    assert resp["Response"] == "Success", resp


def _names(msgs: list[Msg], **match: str) -> list[Msg]:
    return [m for m in msgs if all(m.get(k) == v for k, v in match.items())]


# ---------------------------------------------------------------------- login and actions


async def test_banner_login_ping_and_unknown_action() -> None:
    sim = await start_sim()
    try:
        c = await Client().connect(sim.port)
        resp = await c.action("Ping")
        assert (resp["Response"], resp["Message"]) == ("Error", "Permission denied")
        assert c.parser.banner == "Asterisk Call Manager/11.0.0"
        await c.login()
        await c.wait_event("FullyBooted")
        pong = await c.action("Ping", {"ActionID": "ping-7"})
        assert pong["Response"] == "Success" and pong["Ping"] == "Pong"
        assert pong["ActionID"] == "ping-7"
        assert abs(float(pong["Timestamp"]) - time.time()) < 5
        bad = await c.action("NoSuchAction")
        assert bad["Response"] == "Error"
        assert bad["Message"].startswith("Invalid/unknown command: NoSuchAction")
        bye = await c.action("Logoff")
        assert bye["Response"] == "Goodbye"
        await asyncio.wait_for(c.closed.wait(), 2)
    finally:
        await sim.stop()


async def test_failed_login_answers_late_and_closes() -> None:
    sim = await start_sim(login_fail_delay=0.3, time_scale=1.0)
    try:
        c = await Client().connect(sim.port)
        t0 = time.monotonic()
        resp = await c.action("Login", {"Username": "cti", "Secret": "wrong"})
        elapsed = time.monotonic() - t0
        assert (resp["Response"], resp["Message"]) == ("Error", "Authentication failed")
        assert 0.25 <= elapsed < 2.0
        await asyncio.wait_for(c.closed.wait(), 2)
        # the server still serves others
        ok = await client(sim)
        assert (await ok.action("Ping"))["Response"] == "Success"
        await ok.close()
    finally:
        await sim.stop()


async def test_events_off_at_login_and_events_action() -> None:
    sim = await start_sim()
    try:
        quiet = await client(sim, events="off")
        loud = await client(sim)
        await _add(loud, "PJSIP/1001", "Anna")
        await loud.wait_event("QueueMemberAdded")
        await quiet.settle(0.05)
        assert quiet.events == []
        resp = await quiet.action("Events", {"EventMask": "on"})
        assert resp["Events"] == "On"
        await _add(loud, "PJSIP/1002", "Ben")
        await quiet.wait_event("QueueMemberAdded", Interface="PJSIP/1002")
        # a class mask: only agent events
        await quiet.action("Events", {"EventMask": "agent"})
        sim.inbound_call("+4930111", hangup_after=1.0)
        await loud.wait_event("Hangup")
        await quiet.settle(0.05)
        assert quiet.events and all(
            m["Event"].startswith(("Queue", "Agent")) for m in quiet.events[2:]
        )
        await quiet.close()
        await loud.close()
    finally:
        await sim.stop()


async def test_queue_member_management_like_trace_13() -> None:
    sim = await start_sim()
    try:
        c = await client(sim)
        r = await c.action(
            "QueueAdd",
            {
                "Queue": "support",
                "Interface": "PJSIP/1004",
                "MemberName": "Agent Four",
                "Penalty": 1,
            },
        )
        assert r["Message"] == "Added interface to queue"
        added = await c.wait_event("QueueMemberAdded")
        assert (added["MemberName"], added["Interface"], added["Penalty"]) == (
            "Agent Four",
            "PJSIP/1004",
            "1",
        )
        r = await c.action(
            "QueuePause",
            {"Queue": "support", "Interface": "PJSIP/1004", "Paused": "true", "Reason": "lunch"},
        )
        assert r["Message"] == "Interface paused successfully"
        p = await c.wait_event("QueueMemberPause", Paused="1")
        assert p["PausedReason"] == "lunch"
        r = await c.action("QueuePause", {"Interface": "PJSIP/1004", "Paused": "false"})
        assert r["Message"] == "Interface unpaused successfully"
        await c.wait_event("QueueMemberPause", Paused="0")
        r = await c.action(
            "QueuePenalty", {"Interface": "PJSIP/1004", "Penalty": 2, "Queue": "support"}
        )
        assert r["Message"] == "Interface penalty set successfully"
        assert (await c.wait_event("QueueMemberPenalty"))["Penalty"] == "2"
        assert sim.members["support"][0].penalty == 2
        r = await c.action("QueueRemove", {"Queue": "support", "Interface": "PJSIP/1004"})
        assert r["Message"] == "Removed interface from queue"
        await c.wait_event("QueueMemberRemoved")
        r = await c.action("QueueRemove", {"Queue": "support", "Interface": "PJSIP/1004"})
        assert (r["Response"], r["Message"]) == ("Error", "Unable to remove interface: Not there")
        r = await c.action("QueueAdd", {"Queue": "nosuch", "Interface": "PJSIP/1004"})
        assert r["Response"] == "Error"
        assert sim.members["support"] == []
        await c.close()
    finally:
        await sim.stop()


# ---------------------------------------------------------------------- originate


async def _originate(c: Client, number: str, **fields: str) -> tuple[Msg, str]:
    aid = c.send(
        "Originate",
        {
            "Channel": f"PJSIP/{number}@trunk",
            "Context": "cti-dialer",
            "Exten": "connect",
            "CallerID": '"Campaign" <+4930999000>',
            "Async": "true",
            **fields,
        },
        variables={"__CAMPAIGN": "c1", "__LEAD": "7"},
    )
    resp = await c.wait(lambda m: "Response" in m and m.get("ActionID") == aid)
    assert resp["Message"] == "Originate successfully queued"
    ev = await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == aid)
    return ev, aid


@pytest.mark.parametrize(
    ("number", "response", "reason", "cause", "dial"),
    [
        ("+4930555101", "Success", "4", "16", "ANSWER"),
        ("+4930555201", "Failure", "5", "17", "BUSY"),
        ("+4930555301", "Failure", "3", "19", None),
        ("+4930555401", "Failure", "8", "34", "CONGESTION"),
        ("+4930555517", "Failure", "0", "17", "BUSY"),
        ("+4930555501", "Failure", "0", "1", "NOANSWER"),
    ],
)
async def test_originate_outcomes_by_number(
    number: str, response: str, reason: str, cause: str, dial: str | None
) -> None:
    sim = await start_sim(talk_min=1, talk_max=1, customer_answer_after=1.0)
    try:
        c = await client(sim)
        ev, _ = await _originate(c, number, Timeout="3000", ChannelId=f"att-{number[-3:]}")
        assert (ev["Response"], ev["Reason"]) == (response, reason)
        if response == "Success":
            assert (
                ev["Channel"].startswith("PJSIP/trunk-") and ev["Uniqueid"] == f"att-{number[-3:]}"
            )
        else:
            assert ev["Channel"] == f"PJSIP/{number}@trunk"
            assert ev["Uniqueid"] == f"att-{number[-3:]}"  # ChannelId makes failures matchable
        hang = await c.wait(
            lambda m: m.get("Event") == "Hangup" and m["Uniqueid"].startswith("att-")
        )
        assert hang["Cause"] == cause
        ends = _names(c.events, Event="DialEnd", DestUniqueid=f"att-{number[-3:]}")
        assert [m["DialStatus"] for m in ends] == ([dial] if dial else [])
        await c.close()
    finally:
        await sim.stop()


async def test_originate_failures_without_channelid_and_bad_channel() -> None:
    sim = await start_sim()
    try:
        c = await client(sim)
        ev, _ = await _originate(c, "+4930555201")
        assert ev["Uniqueid"] == "<unknown>"
        aid = c.send(
            "Originate",
            {"Channel": "SIP/nowhere", "Application": "Wait", "Data": 1, "Async": "true"},
        )
        ev = await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == aid)
        assert (ev["Response"], ev["Reason"], ev["Application"]) == ("Failure", "0", "Wait")
        # synchronous Originate: the response waits for the outcome
        r = await c.action(
            "Originate",
            {"Channel": "PJSIP/+4930555401@trunk", "Application": "Wait", "Data": "1"},
        )
        assert (r["Response"], r["Message"]) == ("Error", "Originate failed")
        await c.close()
    finally:
        await sim.stop()


async def test_originate_outcome_mix_is_seeded() -> None:
    async def outcomes(seed: int) -> list[str]:
        sim = await start_sim(
            seed=seed,
            p_answer=0.5,
            p_busy=0.3,
            p_congestion=0.2,
            talk_min=0.5,
            talk_max=0.5,
            customer_answer_after=0.5,
        )
        try:
            c = await client(sim)
            got = []
            for i in range(12):
                ev, _ = await _originate(c, f"+4917{i:07d}", Timeout="2000")
                got.append(ev["Reason"])
            await c.close()
            return got
        finally:
            await sim.stop()

    a, b, other = await outcomes(5), await outcomes(5), await outcomes(6)
    assert a == b
    assert set(a) <= {"4", "5", "8"} and len(set(a)) >= 2
    assert a != other


async def test_dialer_call_joins_queue_with_inherited_variables_and_deadline() -> None:
    sim = await start_sim(agent_answer_after=0.5, customer_answer_after=1.0)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna", queue="sales")
        aid = c.send(
            "Originate",
            {
                "Channel": "PJSIP/+4930555101@trunk",
                "Context": "cti-dialer",
                "Exten": "connect",
                "Async": "true",
            },
            variables={
                "__CAMPAIGN": "c9",
                "__LEAD": "77",
                "QUEUE": "sales",
                "LEAD_PHONE": "+4930555101",
            },
        )
        join = await c.wait_event("QueueCallerJoin")
        assert (join["Queue"], join["Context"], join["Exten"]) == ("sales", "cti-dialer", "connect")
        assert join["CallerIDNum"] == "+4930555101"
        called = await c.wait_event("AgentCalled")
        agent = called["DestChannel"]
        assert agent.startswith("PJSIP/1001-")
        inherited = _names(c.events, Event="VarSet", Channel=agent)
        assert {(m["Variable"], m["Value"]) for m in inherited} >= {
            ("__CAMPAIGN", "c9"),
            ("__LEAD", "77"),
        }
        assert not any(m["Variable"] == "QUEUE" for m in inherited)
        await c.wait_event("AgentConnect")
        ev = await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == aid)
        assert ev["Reason"] == "4"
        # nobody in 'support': the 2 s rule gives up and plays the safe-harbor message
        c.send(
            "Originate",
            {
                "Channel": "PJSIP/+4930555102@trunk",
                "Context": "cti-dialer",
                "Exten": "connect",
                "Async": "true",
            },
            variables={"__CAMPAIGN": "c9", "__LEAD": "78", "QUEUE": "support", "CTI_DEADLINE": "2"},
        )
        leave = await c.wait_event("QueueCallerLeave", Queue="support")
        ue = await c.wait_event("UserEvent")
        assert (ue["UserEvent"], ue["Campaign"], ue["Lead"]) == ("CtiAbandoned", "c9", "78")
        assert ue["Linkedid"] == leave["Linkedid"]
        assert not _names(c.events, Event="QueueCallerAbandon")
        await c.close()
    finally:
        await sim.stop()


async def test_click_to_call_rings_agent_first() -> None:
    sim = await start_sim(agent_answer_after=1.0, customer_answer_after=1.0, talk_min=2, talk_max=2)
    rung: list[tuple[str, str]] = []
    sim.on_agent_ringing = lambda lid, dev: rung.append((lid, dev))
    try:
        c = await client(sim)
        aid = c.send(
            "Originate",
            {
                "Channel": "PJSIP/1001",
                "Context": "cti-click2call",
                "Exten": "+4930555101",
                "CallerID": '"Anna" <1001>',
                "Async": "true",
                "ChannelId": "c2c-1",
            },
        )
        ring = await c.wait_event("Newstate", ChannelStateDesc="Ringing")
        assert ring["Channel"].startswith("PJSIP/1001-")
        assert rung == [("c2c-1", "PJSIP/1001")]
        ok = await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == aid)
        assert (ok["Response"], ok["Reason"], ok["Uniqueid"]) == ("Success", "4", "c2c-1")
        dial = await c.wait(lambda m: m.get("Event") == "DialBegin" and "Channel" in m)
        assert dial["Channel"] == ring["Channel"] and dial["DestChannel"].startswith("PJSIP/trunk-")
        assert dial["DestLinkedid"] == "c2c-1"
        enter = await c.wait_event("BridgeEnter", Channel=dial["DestChannel"])
        assert enter["BridgeNumChannels"] == "2"
        hang = await c.wait_event("Hangup", Channel=dial["DestChannel"])
        assert hang["Cause"] == "16"
        await c.wait_event("Hangup", Channel=ring["Channel"])
        await c.close()
    finally:
        await sim.stop()


# ---------------------------------------------------------------------- inbound and queues


async def test_inbound_call_answered_by_queueadded_agent() -> None:
    sim = await start_sim(agent_answer_after=1.0, talk_min=2, talk_max=2)
    rung: list[tuple[str, str, float]] = []
    sim.on_agent_ringing = lambda lid, dev: rung.append((lid, dev, time.monotonic()))
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna Agent")
        lid = sim.inbound_call(
            "+4930123456", name="Max", variables={"__ACCOUNT": "4711"}, did="800"
        )
        called = await c.wait_event("AgentCalled")
        assert rung and rung[0][:2] == (lid, "PJSIP/1001")
        assert (called["Queue"], called["Interface"], called["MemberName"]) == (
            "support",
            "PJSIP/1001",
            "Anna Agent",
        )
        assert (
            called["Channel"].startswith("PJSIP/trunk-") and called["CallerIDNum"] == "+4930123456"
        )
        assert called["Linkedid"] == lid and called["DestLinkedid"] == lid
        assert any(
            m["Variable"] == "__ACCOUNT"
            for m in _names(c.events, Event="VarSet", Channel=called["DestChannel"])
        )
        conn = await c.wait_event("AgentConnect")
        assert conn["DestChannel"] == called["DestChannel"]
        assert [
            m["ChannelStateDesc"]
            for m in _names(c.events, Event="Newstate", Channel=conn["DestChannel"])
        ] == [
            "Ringing",
            "Up",
        ]
        member = sim.members["support"][0]
        assert member.in_call and not member.paused
        done = await c.wait_event("AgentComplete")
        assert done["Reason"] == "caller" and int(done["TalkTime"]) in (1, 2)
        h = await c.wait_event("Hangup", Channel=called["Channel"])
        assert (h["Cause"], h["Cause-txt"]) == ("16", "Normal Clearing")
        await c.wait_event("QueueMemberStatus", Status="1")
        assert not member.in_call and member.calls_taken == 1
        await c.close()
    finally:
        await sim.stop()


async def test_rrmemory_rotates_and_ringall_rings_everyone() -> None:
    sim = await start_sim(
        agent_answer_after=0.5,
        talk_min=1,
        talk_max=1,
        queue_strategies={"sales": "ringall"},
    )
    try:
        c = await client(sim)
        for q in ("support", "sales"):
            await _add(c, "PJSIP/1001", "Anna", q)
            await _add(c, "PJSIP/1002", "Ben", q)
        # rrmemory: consecutive calls go to the next member
        got = []
        for i in range(3):
            lid = sim.inbound_call(f"+49301000{i}", queue="support")
            ev = await c.wait_event("AgentConnect", Linkedid=lid)
            got.append(ev["Interface"])
            await c.wait_event("Hangup", Channel=ev["DestChannel"])
        assert got == ["PJSIP/1001", "PJSIP/1002", "PJSIP/1001"]
        # ringall: both phones ring, one answers, the other is cancelled (answered elsewhere)
        sim.set_phone("PJSIP/1001", "manual")
        lid = sim.inbound_call("+4930200000", queue="sales")
        await c.wait(
            lambda m: (
                m.get("Event") == "AgentCalled"
                and m["Interface"] == "PJSIP/1002"
                and m["Linkedid"] == lid
            )
        )
        calls = _names(c.events, Event="AgentCalled", Linkedid=lid)
        assert {m["Interface"] for m in calls} == {"PJSIP/1001", "PJSIP/1002"}
        conn = await c.wait_event("AgentConnect", Linkedid=lid)
        assert conn["Interface"] == "PJSIP/1002"
        a1 = next(m["DestChannel"] for m in calls if m["Interface"] == "PJSIP/1001")
        cancel = await c.wait_event("Hangup", Channel=a1)
        assert cancel["Cause"] == "26"
        assert _names(c.events, Event="DialEnd", DestChannel=a1)[0]["DialStatus"] == "CANCEL"
        await c.close()
    finally:
        await sim.stop()


async def test_paused_member_is_not_rung_and_ring_no_answer_moves_on() -> None:
    sim = await start_sim(
        agent_answer_after=0.5, ring_timeout=2.0, queue_retry=1.0, talk_min=1, talk_max=1
    )
    try:
        c = await client(sim)
        for dev in ("PJSIP/1001", "PJSIP/1002", "PJSIP/1003"):
            await _add(c, dev, dev[-4:])
        await c.action(
            "QueuePause", {"Interface": "PJSIP/1001", "Paused": "true", "Reason": "break"}
        )
        sim.set_phone("PJSIP/1002", "never")
        lid = sim.inbound_call("+4930300000")
        noans = await c.wait_event("AgentRingNoAnswer", Linkedid=lid)
        assert noans["Interface"] == "PJSIP/1002" and 1900 <= int(noans["RingTime"]) <= 2600
        conn = await c.wait_event("AgentConnect", Linkedid=lid)
        assert conn["Interface"] == "PJSIP/1003"
        called = {m["Interface"] for m in _names(c.events, Event="AgentCalled", Linkedid=lid)}
        assert called == {"PJSIP/1002", "PJSIP/1003"}
        ends = [
            m["DialStatus"]
            for m in _names(c.events, Event="DialEnd", DestChannel=noans["DestChannel"])
        ]
        assert ends == ["NOANSWER", "CANCEL"]
        await c.close()
    finally:
        await sim.stop()


async def test_manual_phone_answer_and_caller_abandon() -> None:
    sim = await start_sim(talk_min=1, talk_max=1, ring_timeout=600)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna")
        sim.set_phone("PJSIP/1001", "manual")
        with pytest.raises(ValueError):
            sim.set_phone("PJSIP/1001", "sometimes")
        lid = sim.inbound_call("+4930400000")
        await c.wait_event("DialState", Linkedid=lid)
        await asyncio.sleep(0.1)
        assert not _names(c.events, Event="AgentConnect")
        assert sim.answer("PJSIP/1001") is True
        assert sim.answer("PJSIP/1001") is False
        await c.wait_event("AgentConnect", Linkedid=lid)
        await c.wait_event("QueueMemberStatus", Status="1")
        # a caller who gives up while the phone rings
        lid2 = sim.inbound_call("+4930400001", hangup_after=2.0)
        await c.wait_event("DialState", Linkedid=lid2)
        ab = await c.wait_event("QueueCallerAbandon", Linkedid=lid2)
        assert ab["Queue"] == "support" and ab["Position"] == "1"
        h = await c.wait(
            lambda m: (
                m.get("Event") == "Hangup"
                and m["Channel"].startswith("PJSIP/1001")
                and m["Linkedid"] == lid2
            )
        )
        assert h["Cause"] == "0"
        await c.close()
    finally:
        await sim.stop()


async def test_status_lists_during_calls() -> None:
    sim = await start_sim(talk_min=30, talk_max=30, agent_answer_after=0.5, ring_timeout=600)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna")
        await _add(c, "PJSIP/1002", "Ben")
        sim.set_phone("PJSIP/1002", "never")
        a = sim.inbound_call("+4930500001", name="Anna Aktiv")
        await c.wait_event("AgentConnect", Linkedid=a)
        b = sim.inbound_call("+4930500002", name="Bernd Wartend")
        await c.wait_event("DialState", Linkedid=b)
        aid = c.send("QueueStatus", {"Queue": "support"})
        done = await c.wait_event("QueueStatusComplete", ActionID=aid)
        items = [m for m in c.messages if m.get("ActionID") == aid and "Event" in m][:-1]
        params = [m for m in items if m["Event"] == "QueueParams"]
        members = {m["Location"]: m for m in items if m["Event"] == "QueueMember"}
        entries = [m for m in items if m["Event"] == "QueueEntry"]
        assert done["ListItems"] == str(len(items)) == "4"
        assert params[0]["Calls"] == "1" and params[0]["Strategy"] == "rrmemory"
        assert members["PJSIP/1001"]["InCall"] == "1" and members["PJSIP/1001"]["Status"] == "2"
        assert members["PJSIP/1002"]["InCall"] == "0" and members["PJSIP/1002"]["Status"] == "6"
        assert members["PJSIP/1001"]["Name"] == "Anna"
        assert entries[0]["CallerIDNum"] == "+4930500002" and "Linkedid" not in entries[0]
        aid = c.send("CoreShowChannels")
        done = await c.wait_event("CoreShowChannelsComplete", ActionID=aid)
        chans = [
            m for m in c.messages if m.get("Event") == "CoreShowChannel" and m["ActionID"] == aid
        ]
        assert done["ListItems"] == str(len(chans)) == "4"
        by_link: dict[str, int] = {}
        for m in chans:
            by_link[m["Linkedid"]] = by_link.get(m["Linkedid"], 0) + 1
        assert by_link == {a: 2, b: 2}
        bridged = [m for m in chans if m["BridgeId"]]
        assert len(bridged) == 2 and bridged[0]["BridgeId"] == bridged[1]["BridgeId"]
        aid = c.send("Status")
        done = await c.wait_event("StatusComplete", ActionID=aid)
        assert done["Items"] == "4"
        aid = c.send("QueueSummary")
        summ = await c.wait(lambda m: m.get("Event") == "QueueSummary" and m["ActionID"] == aid)
        assert (summ["Queue"], summ["LoggedIn"], summ["Callers"]) == ("support", "2", "1")
        await c.close()
    finally:
        await sim.stop()


# ---------------------------------------------------------------------- transfers and hangups


async def _connected(sim: PbxSimulator, c: Client) -> tuple[str, Msg]:
    await _add(c, "PJSIP/1001", "Agent One", "support")
    await _add(c, "PJSIP/1003", "Agent Three", "sales")
    lid = sim.inbound_call("+4930123460", name="Tina Transfer")
    conn = await c.wait_event("AgentConnect", Linkedid=lid)
    return lid, conn


async def test_redirect_moves_caller_to_another_queue_like_trace_09a() -> None:
    sim = await start_sim(agent_answer_after=1.0, talk_min=6, talk_max=6)
    try:
        c = await client(sim)
        lid, conn = await _connected(sim, c)
        caller, agent1 = conn["Channel"], conn["DestChannel"]
        r = await c.action(
            "Redirect", {"Channel": caller, "Context": "from-trunk", "Exten": "810", "Priority": 1}
        )
        assert r["Message"] == "Redirect successful"
        join = await c.wait_event("QueueCallerJoin", Queue="sales")
        assert (join["Uniqueid"], join["Linkedid"], join["Channel"]) == (
            conn["Uniqueid"],
            lid,
            caller,
        )
        h1 = await c.wait_event("Hangup", Channel=agent1)
        assert h1["Cause"] == "16"
        conn3 = await c.wait_event("AgentConnect", Queue="sales")
        assert conn3["Interface"] == "PJSIP/1003" and conn3["Linkedid"] == lid
        await c.wait(lambda m: len(_names(c.events, Event="AgentComplete")) >= 2)
        completes = _names(c.events, Event="AgentComplete")
        assert [m["Queue"] for m in completes] == ["sales", "support"]
        assert "DestChannel" not in completes[1] and completes[1]["Reason"] == "caller"
        r = await c.action("Redirect", {"Channel": "PJSIP/nobody-00000000", "Exten": "800"})
        assert r["Message"] == "Channel does not exist: PJSIP/nobody-00000000"
        await c.close()
    finally:
        await sim.stop()


async def test_blind_transfer_like_trace_09b() -> None:
    sim = await start_sim(agent_answer_after=1.0, talk_min=6, talk_max=6)
    try:
        c = await client(sim)
        lid, conn = await _connected(sim, c)
        caller, agent1 = conn["Channel"], conn["DestChannel"]
        r = await c.action(
            "BlindTransfer", {"Channel": agent1, "Context": "from-trunk", "Exten": "810"}
        )
        assert r["Message"] == "Transfer succeeded"
        bt = await c.wait_event("BlindTransfer")
        assert (bt["TransfererChannel"], bt["TransfereeChannel"], bt["Extension"]) == (
            agent1,
            caller,
            "810",
        )
        assert bt["Result"] == "Success" and bt["IsExternal"] == "Yes"
        comp = await c.wait_event("AgentComplete", Queue="support")
        assert comp["Reason"] == "transfer"
        join = await c.wait_event("QueueCallerJoin", Queue="sales")
        assert join["Linkedid"] == lid
        await c.wait_event("AgentConnect", Queue="sales", Interface="PJSIP/1003")
        names = [m["Event"] for m in c.events]
        assert names.index("BlindTransfer") < names.index(
            "QueueCallerJoin", names.index("BlindTransfer")
        )
        await c.close()
    finally:
        await sim.stop()


async def test_hangup_action_and_hangup_call() -> None:
    sim = await start_sim(agent_answer_after=0.5, talk_min=60, talk_max=60)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna")
        lid = sim.inbound_call("+4930600001")
        conn = await c.wait_event("AgentConnect", Linkedid=lid)
        r = await c.action("Hangup", {"Channel": conn["DestChannel"]})
        assert r["Message"] == "Channel Hungup"
        done = await c.wait_event("AgentComplete", Linkedid=lid)
        assert done["Reason"] == "agent"
        h = await c.wait_event("Hangup", Channel=conn["Channel"])
        assert h["Cause"] == "16"
        r = await c.action("Hangup", {"Channel": conn["Channel"]})
        assert (r["Response"], r["Message"]) == ("Error", "No such channel")
        lid2 = sim.inbound_call("+4930600002")
        conn2 = await c.wait_event("AgentConnect", Linkedid=lid2)
        assert sim.hangup_call(lid2, cause=16) is True
        assert sim.hangup_call(lid2) is False
        assert (await c.wait_event("AgentComplete", Linkedid=lid2))["Reason"] == "caller"
        await c.wait_event("Hangup", Channel=conn2["DestChannel"])
        await c.close()
    finally:
        await sim.stop()


async def test_getvar_setvar() -> None:
    sim = await start_sim(talk_min=60, talk_max=60)
    try:
        c = await client(sim)
        lid = sim.inbound_call("+4930700001", variables={"__ACCOUNT": "12"})
        chan = (await c.wait_event("Newchannel", Linkedid=lid))["Channel"]
        r = await c.action("Getvar", {"Channel": chan, "Variable": "ACCOUNT"})
        assert (r["Variable"], r["Value"]) == ("ACCOUNT", "12")
        r = await c.action("Setvar", {"Channel": chan, "Variable": "NOTE", "Value": "vip"})
        assert r["Response"] == "Success"
        vs = await c.wait_event("VarSet", Variable="NOTE")
        assert vs["Value"] == "vip" and vs["Channel"] == chan
        r = await c.action("Getvar", {"Channel": chan, "Variable": "CALLERID(num)"})
        assert r["Value"] == "+4930700001"
        r = await c.action("Getvar", {"Channel": "PJSIP/x-00000000", "Variable": "A"})
        assert (r["Response"], r["Message"]) == ("Error", "No such channel")
        await c.close()
    finally:
        await sim.stop()


# ---------------------------------------------------------------------- robustness and determinism


async def test_malformed_input_does_not_hurt_anyone() -> None:
    sim = await start_sim(agent_answer_after=0.5, talk_min=1, talk_max=1)
    try:
        good = await client(sim)
        bad = await client(sim)
        await _add(good, "PJSIP/1001", "Anna")
        bad.send_raw(b"\x00\xff\xfe garbage without colon\r\n\r\n")
        bad.send_raw(b"Action: Ping\nActionID: lf-only\n\n")  # bare LF, as Asterisk accepts
        bad.send_raw(b"no colon at all\r\nAction: Ping\r")
        bad.send_raw(b"\nActionID: mixed\r\n\r\n")  # CRLF split across reads
        pong = await bad.wait(lambda m: m.get("ActionID") == "mixed")
        assert pong["Response"] == "Success"
        assert (await bad.wait(lambda m: m.get("ActionID") == "lf-only"))["Ping"] == "Pong"
        bad.send_raw(b"Key: value\r\n\r\n")
        missing = await bad.wait(lambda m: m.get("Message") == "Missing action in request")
        assert missing["Response"] == "Error"
        bad.send_raw(b"Action: Ping\r\nX: " + b"A" * (2 * 1024 * 1024))  # a huge unterminated frame
        bad.send_raw(b"\r\n\r\nAction: Ping\r\nActionID: after-huge\r\n\r\n")
        lid = sim.inbound_call("+4930800001")
        await good.wait_event("AgentComplete", Linkedid=lid)
        # the bad client is still served
        r = await bad.action("Ping")
        assert r["Response"] == "Success"
        assert (await good.action("Ping"))["Response"] == "Success"
        await good.close()
        await bad.close()
    finally:
        await sim.stop()


async def _sequence(seed: int) -> list[tuple[str, str, str, str]]:
    sim = await start_sim(
        seed=seed,
        inbound_per_minute=60.0,
        time_scale=200.0,
        static_members={
            "support": ["PJSIP/1001|A", "PJSIP/1002|B", "PJSIP/1004|D"],
            "sales": ["PJSIP/1003|C", "PJSIP/1004|D"],
        },
        talk_min=5,
        talk_max=20,
        patience=30,
    )
    try:
        c = await client(sim)
        await c.wait(lambda m: len(c.events) >= 600, 20)
        await c.close()
        # the client logs in after the first calls began: compare from the first call whose
        # creation it saw (Uniqueids are deterministic with a fixed epoch)
        return [
            (m["Event"], m.get("Channel", ""), m.get("Linkedid", ""), m.get("Uniqueid", ""))
            for m in c.events
        ]
    finally:
        await sim.stop()


async def test_same_seed_same_event_sequence() -> None:
    a = await _sequence(11)
    b = await _sequence(11)

    def first_call(seq: list[tuple[str, str, str, str]]) -> str:
        return next(e[2] for e in seq if e[0] == "Newchannel" and e[2] == e[3])

    start = max(first_call(a), first_call(b), key=lambda u: int(u.split(".")[1]))

    def window(seq: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
        i = next(i for i, e in enumerate(seq) if e[0] == "Newchannel" and e[3] == start)
        return seq[i : i + 300]

    a, b = window(a), window(b)
    assert len(a) == 300 and a == b
    assert {"QueueCallerJoin", "AgentCalled", "AgentConnect"} <= {e[0] for e in a}
    other = await _sequence(12)
    assert [e[:2] for e in other[:300]] != [e[:2] for e in a]


async def test_stop_leaves_no_tasks_and_bad_port_exits_3() -> None:
    sim = await start_sim(inbound_per_minute=600.0)
    c = await client(sim)
    await c.wait_event("Newchannel")
    await sim.stop()
    await asyncio.wait_for(c.closed.wait(), 2)
    await c.close()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = await asyncio.to_thread(run_simulator, settings(port=port))
    assert code == 3


async def test_random_operations_never_break_the_pbx() -> None:
    """Seeded random mix of calls, answers, hangups, transfers, pauses and originates: no
    internal error, every call ends, no channel or busy device is left behind."""
    import os
    import random

    sim = await start_sim(
        agent_answer_after=1.0,
        talk_min=2,
        talk_max=8,
        ring_timeout=4,
        queue_retry=1,
        patience=20,
        customer_answer_after=1.0,
        queue_strategies={"sales": "ringall"},
        dial_timeout=10,
    )
    rng = random.Random(int(os.environ.get("SIM_CHAOS_SEED", "3")))
    try:
        c = await client(sim)
        devs = [f"PJSIP/10{i:02d}" for i in range(6)]
        for i, dev in enumerate(devs):
            await _add(c, dev, f"Agent {i}", "support" if i % 2 else "sales")
            if i % 3 == 0:
                await _add(c, dev, f"Agent {i}", "sales" if i % 2 else "support")
        sim.set_phone(devs[1], "manual")
        sim.set_phone(devs[2], "never")
        numbers = ["+4930555101", "+4930555201", "+4930555301", "+4930555401", "+4930555534"]
        for step in range(120):
            op = rng.randrange(10)
            chans = list(sim.engine.chans)
            if op <= 2:
                q = rng.choice(["support", "sales", "PJSIP/1003", ""])
                sim.inbound_call(f"+4930{step:07d}", queue=q, did=rng.choice(["800", "810", "999"]))
            elif op == 3 and chans:
                await c.action("Hangup", {"Channel": rng.choice(chans)})
            elif op == 4 and chans:
                await c.action(
                    "Redirect",
                    {
                        "Channel": rng.choice(chans),
                        "Exten": rng.choice(["810", "support", "1003", "42"]),
                    },
                )
            elif op == 5 and chans:
                await c.action(
                    "BlindTransfer",
                    {"Channel": rng.choice(chans), "Exten": rng.choice(["800", "sales"])},
                )
            elif op == 6:
                await c.action(
                    "QueuePause",
                    {
                        "Interface": rng.choice(devs),
                        "Paused": rng.choice(["true", "false"]),
                        "Reason": "x",
                    },
                )
            elif op == 7:
                fields = {
                    "Async": "true",
                    "Channel": rng.choice([f"PJSIP/{rng.choice(numbers)}@trunk", rng.choice(devs)]),
                }
                if fields["Channel"].count("/") and "@" not in fields["Channel"]:
                    fields.update(Context="cti-click2call", Exten=rng.choice([*numbers, "1005"]))
                else:
                    fields.update(Context="cti-dialer", Exten="connect")
                c.send("Originate", fields, variables={"__CAMPAIGN": "x", "CTI_DEADLINE": "3"})
            elif op == 8:
                sim.answer(rng.choice(devs))
            elif op == 9 and sim.calls:
                sim.hangup_call(rng.choice(list(sim.calls)), rng.choice([16, 17, 21]))
            await asyncio.sleep(rng.random() * 0.02)
        for dev in devs:
            sim.set_phone(dev, "auto")
            await c.action("QueuePause", {"Interface": dev, "Paused": "false"})
        await c.wait(lambda m: not sim.calls, 15)
        await c.settle(0.05)
        eng = sim.engine
        assert eng.step_errors == 0 and sim.bad_input == 0
        assert eng.chans == {} and eng.chan_call == {} and eng.busy == {}
        assert all(not m.in_call and not m.ringing for ms in sim.members.values() for m in ms)
        assert all(not q.waiting for q in eng.queues.values())
        # every channel that was created was hung up exactly once
        created = {m["Uniqueid"] for m in c.events if m["Event"] == "Newchannel"}
        hung = [m["Uniqueid"] for m in c.events if m["Event"] == "Hangup"]
        assert sorted(hung) == sorted(created)
        await c.close()
    finally:
        await sim.stop()


async def test_client_that_stops_reading_is_dropped_without_slowing_others() -> None:
    sim = await start_sim(
        max_client_buffer=65536, agent_answer_after=0.1, talk_min=0.5, talk_max=0.5
    )
    try:
        good = await client(sim)
        await _add(good, "PJSIP/1001", "Anna")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", sim.port))
        raw.setblocking(False)
        _r, w = await asyncio.open_connection(sock=raw)
        w.write(b"Action: Login\r\nUsername: cti\r\nSecret: demo-secret\r\n\r\n")
        await asyncio.sleep(0.05)
        slow = next(cl for cl in sim._clients if cl.peer.endswith(str(raw.getsockname()[1])))
        for i in range(400):  # about 10 MB of events that the slow client never reads
            sim.inbound_call(f"+4930900{i:04d}", variables={"__PAD": "x" * 200})
        await good.wait(lambda m: slow.closing, 20)
        assert slow.transport is not None and slow.transport.is_closing()
        # the reader that keeps up gets everything, up to the last call's end
        await good.wait(lambda m: not sim.calls, 30)
        created = sum(1 for m in good.events if m["Event"] == "Newchannel")
        assert created >= 400
        w.close()
        await good.close()
    finally:
        await sim.stop()


async def test_dialer_amd_machine_and_human() -> None:
    sim = await start_sim(customer_answer_after=1.0, talk_min=5, talk_max=5)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna")
        for number in ("+4930555601", "+4930555101"):
            c.send(
                "Originate",
                {
                    "Channel": f"PJSIP/{number}@trunk",
                    "Context": "cti-dialer",
                    "Exten": "connect",
                    "Async": "true",
                    "ChannelId": f"amd-{number[-3:]}",
                },
                variables={"__CAMPAIGN": "c2", "__LEAD": number[-3:], "AMD": "1"},
            )
        ue = await c.wait_event("UserEvent", UserEvent="CtiMachine")
        assert (ue["Campaign"], ue["Lead"], ue["Linkedid"]) == ("c2", "601", "amd-601")
        await c.wait_event("Hangup", Uniqueid="amd-601")
        status = {m["Linkedid"]: m["Value"] for m in c.events if m.get("Variable") == "AMDSTATUS"}
        assert status == {"amd-601": "MACHINE", "amd-101": "HUMAN"}
        joins = {m["Linkedid"] for m in c.events if m["Event"] == "QueueCallerJoin"}
        assert joins == {"amd-101"}
        await c.close()
    finally:
        await sim.stop()


async def test_direct_dial_to_a_device_without_queue() -> None:
    sim = await start_sim(agent_answer_after=0.5, customer_answer_after=0.5, talk_min=2, talk_max=2)
    rung: list[tuple[str, str]] = []
    sim.on_agent_ringing = lambda lid, dev: rung.append((lid, dev))
    try:
        c = await client(sim)
        sim.set_phone("PJSIP/1007", "auto")  # a known phone that is in no queue
        lid = sim.inbound_call("+4930111222", queue="PJSIP/1007")
        begin = await c.wait(lambda m: m.get("Event") == "DialBegin" and m.get("Linkedid") == lid)
        assert begin["DestChannel"].startswith("PJSIP/1007-") and begin["DialString"] == "1007"
        enter = await c.wait_event("BridgeEnter", Channel=begin["Channel"])
        assert enter["BridgeNumChannels"] == "2"
        await c.wait_event("Hangup", Channel=begin["DestChannel"])
        assert not _names(c.events, Event="AgentCalled") and rung == [(lid, "PJSIP/1007")]
        # an answered Originate whose extension is a device rings that device
        aid = c.send(
            "Originate",
            {
                "Channel": "PJSIP/+4930555102@trunk",
                "Context": "from-internal",
                "Exten": "1007",
                "Async": "true",
            },
        )
        ok = await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == aid)
        assert ok["Reason"] == "4"
        dial = await c.wait(
            lambda m: m.get("Event") == "DialBegin" and m.get("Channel") == ok["Channel"]
        )
        assert dial["DestChannel"].startswith("PJSIP/1007-")
        await c.wait_event("BridgeEnter", Channel=ok["Channel"])
        await c.close()
    finally:
        await sim.stop()
