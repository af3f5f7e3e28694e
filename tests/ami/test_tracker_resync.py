"""Resync after an AMI outage on calls the tracker already knew: what happened while the link
was down (an answer, a ring that stopped, a new party rung) is reported at resync, so no
screen stays "ringing" and a call answered meanwhile ends 'completed', not 'cancelled'."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ami.events import CallEvent
from ami.trace import read_trace
from ami.tracker import CallTracker
from tests.ami.expected.traces import EXPECTED, LAB_ENDPOINTS
from tests.ami.test_replay_traces import compact
from tests.ami.test_tracker_pbx import P100, TRUNK, Pbx, inbound
from tests.ami.test_tracker_pbx import compact as pbx_compact

TRACES = Path(__file__).resolve().parent.parent / "traces"
T01 = "01-inbound-queue-agent1-answers.ami"
T02 = "02-inbound-queue-ringnoanswer-agent2-answers.ami"

SNAPSHOT_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)


def core_show_channels(msgs: Sequence[tuple[float, Mapping[str, str]]]) -> list[dict[str, str]]:
    """The CoreShowChannel items Asterisk would list after `msgs`: every channel not hung up,
    with its latest snapshot fields (from any event that carries them, also as Dest*/LocalOne*/
    LocalTwo*) and the bridge it is in (BridgeEnter without a later BridgeLeave)."""
    chans: dict[str, dict[str, str]] = {}
    bridges: dict[str, str] = {}
    dead: set[str] = set()  # events can mention a channel after its Hangup
    for _, m in msgs:
        ev = m.get("Event")
        for prefix in ("", "Dest", "LocalOne", "LocalTwo"):
            uid = m.get(prefix + "Uniqueid")
            if not uid or not m.get(prefix + "Channel") or (prefix + "ChannelState") not in m:
                continue
            if uid in dead:
                continue
            snap = chans.setdefault(uid, {})
            for f in SNAPSHOT_FIELDS:
                if prefix + f in m:
                    snap[f] = m[prefix + f]
        uid = m.get("Uniqueid", "")
        if ev == "Hangup":
            dead.add(uid)
            chans.pop(uid, None)
            bridges.pop(uid, None)
        elif ev == "BridgeEnter":
            bridges[uid] = m["BridgeUniqueid"]
        elif ev == "BridgeLeave":
            bridges.pop(uid, None)
    return [
        {
            "Event": "CoreShowChannel",
            "ActionID": "resync-1",
            **snap,
            "Application": "AppQueue",
            "ApplicationData": "",
            "Duration": "00:00:03",
            "BridgeId": bridges.get(uid, ""),
        }
        for uid, snap in chans.items()
    ]


def lab() -> CallTracker:
    return CallTracker(local_endpoints=LAB_ENDPOINTS, server="lab")


def with_outage(
    name: str, down: float, up: float
) -> tuple[list[CallEvent], list[CallEvent], list[CallEvent], list[dict[str, str]]]:
    """Replay a trace with the link down from `down` to `up` (message time): the events before,
    those resync returns on reconnect, and those after; plus the snapshot used."""
    msgs = read_trace(TRACES / name)
    t = lab()
    before = [e for at, m in msgs if at <= down for e in t.feed(m, at)]
    snapshot = core_show_channels([(at, m) for at, m in msgs if at <= up])
    during = t.resync(snapshot, up)
    after = [e for at, m in msgs if at > up for e in t.feed(m, at)]
    after += t.flush()
    assert t.stats.errors == 0
    assert t.live_calls() == []
    return before, during, after, snapshot


def compacts(events: Sequence[CallEvent]) -> list[tuple[object, ...]]:
    return [compact(e.to_dict()) for e in events]


def test_call_answered_during_the_outage_is_up_then_completed() -> None:
    """Trace 01: the link drops while agent1 rings and comes back after the answer (caller and
    agent bridged). Resync says the ring ended with an answer and the call is up; the hangup
    is 'completed'. Altogether the same story as without the outage, and no false cancel."""
    before, during, after, snapshot = with_outage(T01, 1.0, 3.0)
    # the snapshot is what Asterisk lists at 3.0 s: four Up channels, two of them bridged
    assert [(c["Channel"], c["ChannelState"]) for c in snapshot] == [
        ("Local/800@inbound-00000002;1", "6"),
        ("Local/800@inbound-00000002;2", "6"),
        ("Local/agent1@agents-00000003;1", "6"),
        ("Local/agent1@agents-00000003;2", "6"),
    ]
    assert snapshot[1]["BridgeId"] == snapshot[2]["BridgeId"] != ""
    assert snapshot[0]["BridgeId"] == snapshot[3]["BridgeId"] == ""
    assert [e.to_dict()["event"] for e in before] == ["originate_result", "ringing"]
    assert compacts(during) == [
        ("ringing_end", ("Local/agent1@agents-00000003;2",), "answer"),
        ("up", "Local/800@inbound-00000002;1", "Local/agent1@agents-00000003;2"),
    ]
    assert {e.at for e in during} == {3.0}
    assert compacts(after) == [
        ("hangup", "Local/800@inbound-00000002;1", "+4930123456", "completed", 0),
    ]
    assert compacts(before + during + after) == EXPECTED[T01]


def test_resync_twice_reports_the_answer_once() -> None:
    msgs = read_trace(TRACES / T01)
    t = lab()
    for at, m in msgs:
        if at <= 1.0:
            t.feed(m, at)
    snapshot = core_show_channels([(at, m) for at, m in msgs if at <= 3.0])
    assert len(t.resync(snapshot, 3.0)) == 2
    assert t.resync(snapshot, 3.5) == []  # a second reconnect: nothing new happened
    [live] = t.live_calls()
    assert live.state == "up" and live.ringing == ()
    assert live.callee is not None and live.callee.channel == "Local/agent1@agents-00000003;2"


def test_rung_agent_vanished_during_the_outage_stops_ringing() -> None:
    """Trace 02: agent1 rings when the link drops; while it is down agent1 gives up (its
    channels hang up) and agent2 starts ringing. Resync ends agent1's ring (cancel: the real
    NOANSWER was never seen) and rings agent2; the rest of the call is reported as usual."""
    before, during, after, snapshot = with_outage(T02, 1.0, 7.0)
    assert [c["Channel"] for c in snapshot] == [
        "Local/800@inbound-00000004;1",
        "Local/800@inbound-00000004;2",
        "Local/agent2@agents-00000006;1",
        "Local/agent2@agents-00000006;2",
    ]
    a1, a2 = "Local/agent1@agents-00000005;2", "Local/agent2@agents-00000006;2"
    assert compacts(before)[-1] == (
        "ringing",
        "Local/800@inbound-00000004;1",
        "+4930123457",
        (a1,),
        "support",
    )
    assert compacts(during) == [
        ("ringing_end", (a1,), "cancel"),
        ("ringing", "Local/800@inbound-00000004;1", "+4930123457", (a2,), "support"),
    ]
    assert compacts(after) == [
        ("ringing_end", (a2,), "answer"),
        ("up", "Local/800@inbound-00000004;1", a2),
        ("hangup", "Local/800@inbound-00000004;1", "+4930123457", "completed", 0),
    ]


def test_outage_covering_a_whole_ring_and_the_answer() -> None:
    """Trace 02 with the link down from agent1's ring until agent2 talks: every ring that was
    or is open gets its end, agent2 answered, the call is up and ends completed."""
    _, during, after, _ = with_outage(T02, 1.0, 10.0)
    a1, a2 = "Local/agent1@agents-00000005;2", "Local/agent2@agents-00000006;2"
    assert compacts(during) == [
        ("ringing_end", (a1,), "cancel"),
        ("ringing", "Local/800@inbound-00000004;1", "+4930123457", (a2,), "support"),
        ("ringing_end", (a2,), "answer"),
        ("up", "Local/800@inbound-00000004;1", a2),
    ]
    assert [e.to_dict()["reason"] for e in after] == ["completed"]


# ----------------------------------------------------------------------------- PJSIP


def listing(p: Pbx, bridges: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """The CoreShowChannel items for what the Pbx says is alive now; like the AMI link does,
    they also go through feed (as the Events they are) before the resync."""
    items = [
        {"Event": "CoreShowChannel", **p.snap(n), "BridgeId": (bridges or {}).get(n, "")}
        for n in p.ch
    ]
    for it in items:
        assert p.tracker.feed(it, p.now) == []
    return items


def pbx_resync(
    p: Pbx, bridges: Mapping[str, str] | None = None, items: list[dict[str, str]] | None = None
) -> list[CallEvent]:
    """Resync the Pbx's tracker with what the Pbx says is alive now (or with `items`)."""
    out = p.tracker.resync(listing(p, bridges) if items is None else items, p.now)
    p.events += out
    return out


def outage(p: Pbx) -> CallTracker:
    """From now on the Pbx's messages go nowhere (the link is down); returns the real tracker."""
    real = p.tracker
    p.tracker = CallTracker(server="void")
    return real


def test_pjsip_call_answered_during_the_outage() -> None:
    p = Pbx()
    inbound(p)
    p.new(P100, linked=TRUNK, num="+4930123456", exten="+4930800")
    p.dial(TRUNK, P100)
    p.state(P100, 5)
    assert [e[0] for e in p.compact()] == ["ringing"]
    real, n = outage(p), len(p.events)
    p.tick(2)
    p.answer(TRUNK, P100)
    p.bridge("b1", P100, TRUNK)
    p.tracker, p.events = real, p.events[:n]
    p.tick(1)
    during = pbx_resync(p, {P100: "b1", TRUNK: "b1"})
    assert [pbx_compact(e.to_dict()) for e in during] == [
        ("ringing_end", (P100,), "answer"),
        ("up", TRUNK, P100),
    ]
    assert [c.state for c in real.live_calls()] == ["up"]
    p.tick(5)
    p.leave("b1", TRUNK)
    p.hangup(TRUNK, 16)
    p.hangup(P100, 16)
    assert p.compact()[-1] == ("hangup", TRUNK, "completed", 16)
    assert [c[0] for c in p.compact()] == ["ringing", "ringing_end", "up", "hangup"]
    assert real.live_calls() == [] and real.stats.errors == 0


def test_pjsip_dialled_and_answered_entirely_during_the_outage() -> None:
    """The caller was known (in the IVR) before the outage; the phone it reached was dialled and
    answered while the link was down. Resync tells the whole story: ringing, answer, up."""
    p = Pbx()
    inbound(p)
    real, n = outage(p), len(p.events)
    p.new(P100, linked=TRUNK, num="+4930123456", exten="+4930800")
    p.dial(TRUNK, P100)
    p.state(P100, 5)
    p.tick(2)
    p.answer(TRUNK, P100)
    p.bridge("b1", P100, TRUNK)
    p.tracker, p.events = real, p.events[:n]
    # the phone's channel is new to the tracker: the snapshot adopts it
    during = pbx_resync(p, {P100: "b1", TRUNK: "b1"})
    assert [pbx_compact(e.to_dict()) for e in during] == [
        ("ringing", TRUNK, (P100,)),
        ("ringing_end", (P100,), "answer"),
        ("up", TRUNK, P100),
    ]
    p.hangup(TRUNK, 16)
    p.hangup(P100, 16)
    assert p.compact()[-1] == ("hangup", TRUNK, "completed", 16)


@pytest.mark.parametrize("cause", [16, 0])
def test_pjsip_rung_phone_gone_during_the_outage(cause: int) -> None:
    """The phone rang, then (link down) the dial gave up and its channel hung up: resync ends
    the ring; the caller, still waiting, hangs up later 'cancelled'."""
    p = Pbx()
    inbound(p)
    p.new(P100, linked=TRUNK, num="+4930123456", exten="+4930800")
    p.dial(TRUNK, P100)
    p.state(P100, 5)
    real, n = outage(p), len(p.events)
    p.tick(20)
    p.dialend(TRUNK, P100, "NOANSWER")
    p.hangup(P100, 19)
    del p.ch[P100]
    p.tracker, p.events = real, p.events[:n]
    during = pbx_resync(p)
    assert [pbx_compact(e.to_dict()) for e in during] == [("ringing_end", (P100,), "cancel")]
    [live] = real.live_calls()
    assert live.state == "ringing" and live.ringing == ()
    p.hangup(TRUNK, cause)
    assert p.compact()[-1] == ("hangup", TRUNK, "cancelled" if cause == 0 else "no-answer", cause)


def test_pjsip_nothing_changed_means_no_events() -> None:
    p = Pbx()
    inbound(p)
    p.new(P100, linked=TRUNK, num="+4930123456", exten="+4930800")
    p.dial(TRUNK, P100)
    p.state(P100, 5)
    before: Any = [c.to_dict() for c in p.tracker.live_calls()]
    assert pbx_resync(p) == []
    assert [c.to_dict() for c in p.tracker.live_calls()] == before
    p.tick(2)
    p.answer(TRUNK, P100)
    p.bridge("b1", P100, TRUNK)
    assert pbx_resync(p, {P100: "b1", TRUNK: "b1"}) == []
    assert [c[0] for c in p.compact()] == ["ringing", "ringing_end", "up"]


def test_originated_leg_still_ringing_at_resync_is_no_caller() -> None:
    """Trace 07 seen first in a snapshot (the link came up while the dialer's customer rang):
    the ringing customer leg is not taken for a caller, so it produces no hangup of its own;
    the Originate's result is reported as without the outage."""
    before, during, after, snapshot = with_outage("07-outbound-no-answer.ami", 0.0, 1.0)
    assert before == [] and during == []
    assert [c["ChannelState"] for c in snapshot] == ["5", "4"]  # ;1 Ringing, ;2 Ring
    assert compacts(after) == EXPECTED["07-outbound-no-answer.ami"]


ALL_TRACES = sorted(p.name for p in TRACES.glob("*.ami"))


def _replay(
    msgs: Sequence[tuple[float, Mapping[str, str]]], outage: tuple[float, float] | None
) -> tuple[list[dict[str, Any]], int, CallTracker]:
    """Events of a replay (resync's marked), with the link down over `outage`; also how many
    came before the outage."""
    t = lab()
    if outage is None:
        events = [e.to_dict() for at, m in msgs for e in t.feed(m, at)]
        return events + [e.to_dict() for e in t.flush()], 0, t
    down, up = outage
    events = [e.to_dict() for at, m in msgs if at <= down for e in t.feed(m, at)]
    n_before = len(events)
    snapshot = core_show_channels([(at, m) for at, m in msgs if at <= up])
    for item in snapshot:  # list items reach feed too, as the AMI link hands them over
        assert t.feed(item, up) == []
    events += [dict(e.to_dict(), resync=True) for e in t.resync(snapshot, up)]
    events += [e.to_dict() for at, m in msgs if at > up for e in t.feed(m, at)]
    return events + [e.to_dict() for e in t.flush()], n_before, t


@pytest.mark.parametrize("name", ALL_TRACES)
def test_any_outage_keeps_the_promises(name: str) -> None:
    """Every real trace with the link down over every window of a 1 s grid, resynced with the
    snapshot Asterisk would give: no errors; one ringing per target and every ringing ends
    once; one hangup per call, and every call that rang or was up ends; no live call is left;
    a call known before the outage and up without it is reported up (or ended at resync); the
    hangups and ring ends that come from real events after the outage say what they say
    without it."""
    msgs = read_trace(TRACES / name)
    base, _, _ = _replay(msgs, None)
    base_hangup = {e["call_id"]: e["reason"] for e in base if e["event"] == "hangup"}
    base_ring_end = {
        e["targets"][0]["uniqueid"]: e["reason"] for e in base if e["event"] == "ringing_end"
    }
    base_up = {e["call_id"] for e in base if e["event"] == "up"}
    cuts = [float(i) for i in range(int(msgs[-1][0]) + 2)]
    windows = [(a, b) for a in cuts for b in cuts if b > a]
    for window in windows:
        events, n_before, t = _replay(msgs, window)
        where = f"{name} down {window}"
        assert t.stats.errors == 0, where
        assert t.live_calls() == [], where
        rung = [e["targets"][0]["uniqueid"] for e in events if e["event"] == "ringing"]
        ended = [e["targets"][0]["uniqueid"] for e in events if e["event"] == "ringing_end"]
        assert len(rung) == len(set(rung)), where
        assert len(ended) == len(set(ended)), where
        assert set(rung) <= set(ended), where  # no screen stays ringing
        hangups = [e for e in events if e["event"] == "hangup"]
        assert len(hangups) == len({e["call_id"] for e in hangups}), where
        active = {e["call_id"] for e in events if e["event"] in ("ringing", "up")}
        assert active <= {e["call_id"] for e in hangups}, where
        known = {e["call_id"] for e in events[:n_before]}
        ups = {e["call_id"] for e in events if e["event"] == "up"}
        ended_at_resync = {e["call_id"] for e in hangups if e.get("resync")}
        assert (base_up & known) - ended_at_resync <= ups, where
        for e in events:
            if e.get("resync"):
                continue
            if e["event"] == "hangup":
                assert e["reason"] == base_hangup.get(e["call_id"]), where
            elif e["event"] == "ringing_end":
                assert e["reason"] == base_ring_end[e["targets"][0]["uniqueid"]], where


def test_vanished_target_seen_answering_ends_with_answer() -> None:
    """The link drops right after both halves of agent1's Local pair went Up (the answer) but
    before DialEnd; on reconnect the whole call is gone. The ring ends 'answer', not 'cancel'."""
    t = lab()
    for at, m in read_trace(TRACES / T01):
        t.feed(m, at)
        if m.get("Event") == "Newstate" and m.get("Channel", "").startswith("Local/agent1"):
            if m.get("Channel", "").endswith(";1") and m.get("ChannelState") == "6":
                break
    [live] = t.live_calls()
    assert [p.channel for p in live.ringing] == ["Local/agent1@agents-00000003;2"]
    out = t.resync([], 10.0)
    assert [e.to_dict()["event"] for e in out] == ["ringing_end", "hangup"]
    assert out[0].to_dict()["reason"] == "answer"
    assert t.live_calls() == []


def test_events_newer_than_the_listing_are_not_undone() -> None:
    """The phone answers and is bridged between its CoreShowChannel item (listed Ringing, no
    bridge) and the end of the list: those events reached feed after the item, so they are
    newer than the snapshot, and the resync must not put the call back to ringing."""
    p = Pbx()
    inbound(p)
    p.new(P100, linked=TRUNK, num="+4930123456", exten="+4930800")
    p.dial(TRUNK, P100)
    p.state(P100, 5)
    items = listing(p)  # P100 Ringing, nobody bridged
    p.tick(0.01)
    p.answer(TRUNK, P100)
    p.bridge("b1", P100, TRUNK)
    assert [c[0] for c in p.compact()] == ["ringing", "ringing_end", "up"]
    assert pbx_resync(p, items=items) == []
    [live] = p.tracker.live_calls()
    assert live.state == "up" and live.callee is not None and live.callee.channel == P100
    p.tick(5)
    p.hangup(TRUNK, 16)
    assert p.compact()[-1] == ("hangup", TRUNK, "completed", 16)


def test_answer_before_bridging_is_not_undone_by_an_older_listing() -> None:
    """As above, but only the answer is newer than the listing; the bridge comes after the
    resync and must still make the call up."""
    p = Pbx()
    inbound(p)
    p.new(P100, linked=TRUNK, num="+4930123456", exten="+4930800")
    p.dial(TRUNK, P100)
    p.state(P100, 5)
    items = listing(p)
    p.answer(TRUNK, P100)
    assert pbx_resync(p, items=items) == []
    p.bridge("b1", P100, TRUNK)
    assert [c[0] for c in p.compact()] == ["ringing", "ringing_end", "up"]
