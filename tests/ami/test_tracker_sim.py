"""The tracker on the default path (no Local endpoints) against the built-in PBX simulator over
real TCP: what the server will see in `cti demo` and against a PJSIP Asterisk."""

from __future__ import annotations

from typing import Any

from ami.tracker import CallTracker

from .test_simulator_helpers import Client, client, start_sim


def track(c: Client) -> list[dict[str, Any]]:
    t = CallTracker(server="sim")
    out = [e.to_dict() for i, m in enumerate(c.messages) for e in t.feed(m, i * 0.001)]
    out += [e.to_dict() for e in t.flush()]
    assert t.stats.errors == 0
    return out


def brief(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for e in events:
        ev = e["event"]
        if ev == "ringing":
            out.append((ev, e["caller"]["number"], e["targets"][0]["channel"].split("-")[0]))
        elif ev == "ringing_end":
            out.append((ev, e["targets"][0]["channel"].split("-")[0], e["reason"]))
        elif ev == "up":
            out.append((ev, e["caller"]["number"], e["callee"]["channel"].split("-")[0]))
        elif ev == "transfer":
            out.append(
                (
                    ev,
                    e["kind"],
                    e["transferer"]["channel"].split("-")[0],
                    e["targets"][0]["channel"].split("-")[0],
                )
            )
        elif ev == "hangup":
            out.append((ev, e["caller"]["number"], e["reason"]))
        elif ev == "originate_result":
            out.append((ev, e["action_id"], e["result"]))
        else:
            out.append((ev,))
    return out


async def _add(c: Client, iface: str, name: str, queue: str) -> None:
    resp = await c.action("QueueAdd", {"Queue": queue, "Interface": iface, "MemberName": name})
    assert resp["Response"] == "Success", resp


async def test_inbound_queue_call_and_redirect_transfer() -> None:
    sim = await start_sim(agent_answer_after=1.0, talk_min=3, talk_max=3)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Agent One", "support")
        await _add(c, "PJSIP/1003", "Agent Three", "sales")
        lid = sim.inbound_call("+4930123460", name="Tina", variables={"__ACCOUNT": "4711"})
        conn = await c.wait_event("AgentConnect", Linkedid=lid)
        await c.action(
            "Redirect",
            {"Channel": conn["Channel"], "Context": "from-trunk", "Exten": "810", "Priority": 1},
        )
        await c.wait_event("AgentConnect", Queue="sales")
        await c.wait_event("Hangup", Channel=conn["Channel"], within=10)
        await c.settle()
        await c.close()
    finally:
        await sim.stop()
    events = track(c)
    assert brief(events) == [
        ("ringing", "+4930123460", "PJSIP/1001"),
        ("ringing_end", "PJSIP/1001", "answer"),
        ("up", "+4930123460", "PJSIP/1001"),
        ("transfer", "blind", "PJSIP/1001", "PJSIP/1003"),
        ("ringing", "+4930123460", "PJSIP/1003"),
        ("ringing_end", "PJSIP/1003", "answer"),
        ("up", "+4930123460", "PJSIP/1003"),
        ("hangup", "+4930123460", "completed"),
    ]
    assert events[0]["queue"] == "support" and events[4]["queue"] == "sales"
    assert events[0]["variables"]["ACCOUNT"] == "4711"
    assert {e["call_id"] for e in events} == {lid}


async def test_dialer_and_click_to_call_originates() -> None:
    sim = await start_sim(agent_answer_after=0.5, customer_answer_after=1.0, talk_min=2, talk_max=2)
    try:
        c = await client(sim)
        await _add(c, "PJSIP/1001", "Anna", "sales")
        dial = c.send(
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
        await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == dial)
        await c.wait_event("AgentComplete", within=10)
        busy = c.send(
            "Originate",
            {
                "Channel": "PJSIP/+4930555201@trunk",
                "Context": "cti-dialer",
                "Exten": "connect",
                "Async": "true",
            },
            variables={"__CAMPAIGN": "c9", "__LEAD": "78"},
        )
        await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == busy)
        c2c = c.send(
            "Originate",
            {
                "Channel": "PJSIP/1001",
                "Context": "cti-click2call",
                "Exten": "+4930555102",
                "CallerID": '"Anna" <1001>',
                "Async": "true",
                "ChannelId": "c2c-1",
            },
        )
        await c.wait(lambda m: m.get("Event") == "OriginateResponse" and m["ActionID"] == c2c)
        await c.wait_event("Hangup", Uniqueid="c2c-1", within=10)
        await c.settle()
        await c.close()
    finally:
        await sim.stop()
    events = track(c)
    got = brief(events)
    dialer = [e for e in got if e[0] != "originate_result"]
    assert ("originate_result", dial, "answered") in got
    assert ("originate_result", busy, "busy") in got
    assert ("originate_result", c2c, "answered") in got
    # the customer is the caller of the dialer call; the agent the caller of the click-to-call
    assert dialer[:4] == [
        ("ringing", "+4930555101", "PJSIP/1001"),
        ("ringing_end", "PJSIP/1001", "answer"),
        ("up", "+4930555101", "PJSIP/1001"),
        ("hangup", "+4930555101", "completed"),
    ]
    c2c_events = [e for e in events if e["call_id"] == "c2c-1" and e["event"] != "originate_result"]
    assert [e["event"] for e in c2c_events] == ["ringing", "ringing_end", "up", "hangup"]
    assert c2c_events[0]["caller"]["channel"].startswith("PJSIP/1001-")
    assert c2c_events[0]["caller"]["exten"] == "+4930555102"
    assert c2c_events[0]["targets"][0]["channel"].startswith("PJSIP/trunk-")
    result = next(e for e in events if e.get("action_id") == dial)
    assert result["variables"]["CAMPAIGN"] == "c9" and result["variables"]["LEAD"] == "77"


async def test_link_down_while_the_agent_answers_resync_reports_it() -> None:
    """Over real TCP: the server's AMI connection drops while agent phone 1001 rings; the
    phone is answered meanwhile; a new connection lists the channels (CoreShowChannels) and
    the tracker's resync reports the answer and the connected call, whose end is then
    'completed' (not 'cancelled')."""
    sim = await start_sim(talk_min=1000, talk_max=1000)
    try:
        sim.set_phone("PJSIP/1001", "manual")
        first = await client(sim)
        lid = sim.inbound_call("+4930123461", queue="PJSIP/1001")
        await first.wait_event("Newstate", ChannelStateDesc="Ringing", Linkedid=lid)
        await first.settle()
        await first.close()  # the link is down from here
        assert sim.answer("PJSIP/1001")
        second = await client(sim)
        aid = second.send("CoreShowChannels")
        done = await second.wait_event("CoreShowChannelsComplete", ActionID=aid)
        assert sim.hangup_call(lid)
        await second.wait_event("Hangup", Linkedid=lid, Uniqueid=lid)
        await second.settle()
        await second.close()
    finally:
        await sim.stop()
    t = CallTracker(server="sim")
    events: list[dict[str, Any]] = []
    at = 0.0
    for m in first.messages:
        at += 0.001
        events += [e.to_dict() for e in t.feed(m, at)]
    assert brief(events) == [("ringing", "+4930123461", "PJSIP/1001")]
    cut = second.messages.index(done)
    for m in second.messages[: cut + 1]:  # the list items reach feed first, as on the link
        at += 0.001
        events += [e.to_dict() for e in t.feed(m, at)]
    items = [
        m
        for m in second.messages[:cut]
        if m.get("Event") == "CoreShowChannel" and m.get("ActionID") == aid
    ]
    assert len(items) == 2 and {m["ChannelStateDesc"] for m in items} == {"Up"}
    events += [e.to_dict() for e in t.resync(items, at)]
    for m in second.messages[cut + 1 :]:
        at += 0.001
        events += [e.to_dict() for e in t.feed(m, at)]
    assert brief(events) == [
        ("ringing", "+4930123461", "PJSIP/1001"),
        ("ringing_end", "PJSIP/1001", "answer"),
        ("up", "+4930123461", "PJSIP/1001"),
        ("hangup", "+4930123461", "completed"),
    ]
    assert t.stats.errors == 0 and t.live_calls() == []
