"""live_calls() and caller_channel() under load: they run on the event loop (agent snapshots
on a websocket reconnect, the dialer's safe-harbor redirect), so their cost must follow the
number of live calls, not calls x channels."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path

from ami.trace import read_trace
from ami.tracker import CallTracker, LiveCall
from tests.ami.expected.traces import LAB_ENDPOINTS
from tests.ami.test_tracker_pbx import Pbx

TRACES = Path(__file__).resolve().parent.parent / "traces"


def load(n: int) -> Pbx:
    """n inbound calls on one server: even ones talking to an agent phone, odd ones ringing
    one (a queue's worth of parked callers), every third with a variable for the pop."""
    p = Pbx()
    for i in range(n):
        trunk = f"PJSIP/trunk-{i:08x}"
        phone = f"PJSIP/{1000 + i % 500}-{i:08x}"
        p.new(trunk, num=f"+4930{i:07d}", cname=f"Caller {i}", exten="+4930800", state=4)
        p.state(trunk, 6)
        if i % 3 == 0:
            p.send("VarSet", **p.snap(trunk), Variable="__LEAD", Value=str(i))
        p.new(phone, linked=trunk, num=p.ch[trunk].num, exten="+4930800")
        p.dial(trunk, phone)
        p.state(phone, 5)
        if i % 2 == 0:
            p.answer(trunk, phone)
            p.bridge(f"b{i}", phone, trunk)
    return p


def old_live_calls(t: CallTracker) -> list[LiveCall]:
    """live_calls() as first written: each call's channels found by scanning every channel of
    the server. The reference the O(live calls) version must match exactly."""
    out: list[LiveCall] = []
    for call in sorted(t._calls.values(), key=lambda c: c.seq):
        caller = call.caller
        if call.ended or caller is None or not caller.alive:
            continue
        chans = [c for c in t._chans.values() if c.call is call]
        ringing = tuple(t._party(c) for c in chans if c.ring_open and c.alive and c.endpoint)
        connected = t._connected(caller)
        up = len(connected) == 1
        out.append(
            LiveCall(
                call_id=call.id,
                caller=t._caller_party(call),
                state="up" if up else "ringing",
                ringing=ringing,
                callee=t._party(connected[0]) if up else None,
                queue=call.queue,
                variables=t._caller_vars(call, None),
            )
        )
    return out


def best_of(fn: Callable[[], object], runs: int = 7) -> float:
    best = float("inf")
    gc.disable()  # a collection inside one timing would say nothing about live_calls
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        gc.enable()
    return best


def test_live_calls_under_load_same_answer_and_linear_cost() -> None:
    big = load(1500)
    t = big.tracker
    assert len(t._chans) == 3000
    live = t.live_calls()
    assert live == old_live_calls(t)
    assert len(live) == 1500
    assert [c.state for c in live[:4]] == ["up", "ringing", "up", "ringing"]
    assert live[1].ringing[0].channel == "PJSIP/1001-00000001" and live[1].callee is None
    assert live[3].variables == {"LEAD": "3"}
    # after half the callers hung up, the snapshot still matches and names only live calls
    for i in range(0, 1500, 2):
        big.hangup(f"PJSIP/trunk-{i:08x}")
    assert t.live_calls() == old_live_calls(t)
    assert len(t.live_calls()) == 750
    # cost follows the number of calls: 15x the calls may cost ~15x, not ~15x15x
    # (scanning every channel for each call measured 60-90x here)
    small = load(100).tracker
    ratio = best_of(load(1500).tracker.live_calls) / best_of(small.live_calls)
    assert ratio < 40, ratio


def test_caller_channel_names_the_live_callers_channel() -> None:
    p = load(4)
    t = p.tracker
    for c in t.live_calls():
        assert t.caller_channel(c.call_id) == c.caller.channel
    first = t.live_calls()[0].call_id
    assert t.caller_channel(first) == "PJSIP/trunk-00000000"
    assert t.caller_channel("no-such-call") is None
    p.hangup("PJSIP/trunk-00000000")  # the caller hangs up: no longer a live call
    assert t.caller_channel(first) is None
    assert first not in {c.call_id for c in t.live_calls()}


def test_caller_channel_follows_a_transfer() -> None:
    """trace 09b: after the blind transfer the caller stays the queue caller's phone."""
    t = CallTracker(local_endpoints=LAB_ENDPOINTS)
    msgs = read_trace(TRACES / "09b-blind-transfer-action.ami")
    call_id = None
    for at, m in msgs:
        for e in t.feed(m, at):
            if e.to_dict()["event"] == "transfer":
                call_id = e.call_id
                assert t.caller_channel(call_id) == e.to_dict()["caller"]["channel"]
    assert call_id is not None and t.caller_channel(call_id) is None  # all hung up


def test_per_call_channel_bookkeeping_is_cleaned_on_hangup() -> None:
    """Many calls come and go on a long-lived link: no call keeps channels it no longer has
    and the per-call sets hold exactly the server's live channels."""
    p = Pbx()
    t = p.tracker
    for i in range(300):
        trunk = f"PJSIP/trunk-{i:08x}"
        phone = f"PJSIP/2000-{i:08x}"
        p.new(trunk, num="+4930123", exten="+4930800", state=4)
        p.state(trunk, 6)
        p.new(phone, linked=trunk, exten="+4930800")
        p.dial(trunk, phone)
        p.state(phone, 5)
        if i % 3:
            p.answer(trunk, phone)
            p.bridge(f"b{i}", phone, trunk)
        per_call = [c for call in t._calls.values() for c in call.chans.values()]
        assert sorted(c.uid for c in per_call) == sorted(t._chans)
        assert len(t._calls) == 1
        call = t._calls[p.ch[trunk].linkedid]
        assert len(call.chans) == 2
        # the call ends in a different order each time: callee first, caller first, ...
        order = [phone, trunk] if i % 2 else [trunk, phone]
        for n in order:
            p.hangup(n)
            if i % 5 == 0:
                p.hangup(n)  # a repeated Hangup changes nothing
        assert call.chans == {}
    assert t._chans == {} and t._calls == {}
    assert t.stats.errors == 0
    assert sum(1 for e in p.events if e.to_dict()["event"] == "hangup") == 300
