"""Resync after a reconnect, live_calls snapshots, and garbage input that must never raise."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ami.events import CallEvent
from ami.trace import read_trace
from ami.tracker import CallTracker, LiveCall
from tests.ami.expected.traces import LAB_ENDPOINTS

TRACES = Path(__file__).resolve().parent.parent / "traces"
T11 = read_trace(TRACES / "11-status-snapshot-during-calls.ami")


def lab() -> CallTracker:
    return CallTracker(local_endpoints=LAB_ENDPOINTS, server="lab")


def kinds(events: Sequence[CallEvent]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for e in events:
        d = e.to_dict()
        extra = d.get("reason") or d.get("queue") or ""
        out.append((d["event"], d["call_id"], str(extra)))
    return out


def snapshot_items() -> list[dict[str, str]]:
    return [m for _, m in T11 if m.get("Event") == "CoreShowChannel"]


def test_resync_adopts_calls_started_while_disconnected() -> None:
    """A fresh tracker (we just connected) gets trace 11's CoreShowChannels list: caller A
    talking to agent1, caller B ringing agent2. Later events on them then work."""
    t = lab()
    assert t.resync(snapshot_items(), 2.52) == []
    live = {c.call_id: c for c in t.live_calls()}
    assert set(live) == {"1795343677.154", "1795343679.158"}
    a, b = live["1795343677.154"], live["1795343679.158"]
    assert a.state == "up" and a.caller.channel == "Local/800@inbound-0000004d;1"
    assert a.callee is not None and a.callee.channel == "Local/agent1@agents-0000004e;2"
    assert a.caller.number == "+4930123463" and a.ringing == ()
    assert b.state == "ringing" and b.callee is None
    assert [p.channel for p in b.ringing] == ["Local/agent2@agents-00000050;2"]
    rest = [(at, m) for at, m in T11 if at > 2.521]
    events = [e for at, m in rest for e in t.feed(m, at)]
    assert kinds(events) == [
        ("ringing_end", "1795343679.158", "noanswer"),
        ("hangup", "1795343679.158", "cancelled"),
        ("queue_abandon", "1795343679.158", "support"),
        ("hangup", "1795343677.154", "completed"),
    ]
    assert t.live_calls() == []
    assert t.stats.errors == 0


def test_resync_ends_calls_whose_channels_vanished() -> None:
    up = read_trace(TRACES / "01-inbound-queue-agent1-answers.ami")
    ringing = read_trace(TRACES / "03-inbound-queue-caller-abandons.ami")
    t = lab()
    for at, m in up:
        if at > 3.0:
            break
        t.feed(m, at)
    for at, m in ringing:
        if at > 1.0:
            break
        t.feed(m, at)
    assert [c.state for c in t.live_calls()] == ["up", "ringing"]
    # reconnect: everything is gone; agent1's phone (rung by the second call) stops ringing
    out = t.resync([], 50.0)
    assert [
        (e.to_dict()["event"], e.to_dict()["reason"], e.to_dict().get("cause")) for e in out
    ] == [
        ("ringing_end", "cancel", None),
        ("hangup", "completed", None),
        ("hangup", "cancelled", None),
    ]
    assert out[0].to_dict()["targets"][0]["channel"] == "Local/agent1@agents-00000008;2"
    assert {e.at for e in out} == {50.0}
    assert t.live_calls() == []
    assert t._bridges == {} and t._chans == {}  # nothing of the old picture is kept alive
    # late events of the vanished channels change nothing
    assert [e for at, m in up if at > 3.0 for e in t.feed(m, at)] == []


def test_resync_keeps_calls_that_are_still_there() -> None:
    t = lab()
    for at, m in T11:
        if at > 2.518:
            break
        t.feed(m, at)
    before = [c.to_dict() for c in t.live_calls()]
    assert t.resync(snapshot_items(), 2.6) == []
    assert [c.to_dict() for c in t.live_calls()] == before
    assert [c["state"] for c in before] == ["up", "ringing"]
    assert before[1]["queue"] == "support"
    assert before[1]["variables"] == {"AGENT_NOANSWER": "agent1+agent2"}
    json.dumps(before)


def test_live_call_to_dict_shape() -> None:
    t = lab()
    t.resync(snapshot_items(), 1.0)
    d = t.live_calls()[0].to_dict()
    assert set(d) == {"call_id", "caller", "state", "ringing", "callee", "queue", "variables"}
    assert isinstance(t.live_calls()[0], LiveCall)


# ----------------------------------------------------------------------------- fuzz

EVENTS = [
    "Newchannel",
    "Newstate",
    "NewCallerid",
    "DialBegin",
    "DialEnd",
    "LocalBridge",
    "BridgeCreate",
    "BridgeEnter",
    "BridgeLeave",
    "BridgeMerge",
    "BridgeDestroy",
    "Hangup",
    "VarSet",
    "QueueCallerJoin",
    "AgentCalled",
    "QueueCallerLeave",
    "QueueCallerAbandon",
    "UserEvent",
    "OriginateResponse",
    "BlindTransfer",
    "AttendedTransfer",
    "Cdr",
    "Rename",
    "FullyBooted",
    "Newexten",
    "CoreShowChannel",
    "Pickup",
    "Hold",
    "",
]
CHANNELS = [
    "PJSIP/1-0001",
    "PJSIP/2-0002",
    "Local/a@b-0001;1",
    "Local/a@b-0001;2",
    "Local/c@agents-0002;2",
    "Local/c@agents-0002;1",
    "SIP/x",
    "",
    "<unknown>",
]
UIDS = ["1.1", "1.2", "1.3", "1.4", "1.5", "", "<unknown>"]
PREFIXES = [
    "",
    "Dest",
    "LocalOne",
    "LocalTwo",
    "Transferer",
    "Transferee",
    "TransferTarget",
    "OrigTransferer",
    "SecondTransferer",
    "Target",
]
VALUES = st.sampled_from(
    [
        "0",
        "4",
        "5",
        "6",
        "7",
        "16",
        "17",
        "19",
        "34",
        "-1",
        "abc",
        "",
        "ANSWER",
        "BUSY",
        "NOANSWER",
        "CANCEL",
        "Success",
        "Failure",
        "Bridge",
        "App",
        "b1",
        "b2",
        "support",
        "__CAMPAIGN",
        "1.5",
        "x,y",
    ]
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, str]:
    msg = {"Event": draw(st.sampled_from(EVENTS))}
    for prefix in draw(st.lists(st.sampled_from(PREFIXES), max_size=3)):
        if draw(st.booleans()):
            msg[prefix + "Channel"] = draw(st.sampled_from(CHANNELS))
        msg[prefix + "Uniqueid"] = draw(st.sampled_from(UIDS))
        if draw(st.booleans()):
            msg[prefix + "Linkedid"] = draw(st.sampled_from(UIDS))
        if draw(st.booleans()):
            msg[prefix + "ChannelState"] = draw(VALUES)
    keys = [
        "Cause",
        "DialStatus",
        "Response",
        "Reason",
        "ActionID",
        "Variable",
        "Value",
        "BridgeUniqueid",
        "ToBridgeUniqueid",
        "FromBridgeUniqueid",
        "DestType",
        "Result",
        "Timestamp",
        "Queue",
        "CallerIDNum",
        "Newname",
        "Disposition",
        "Extension",
        "BridgeTechnology",
        "CID-CallingPres",
    ]
    for k in draw(st.lists(st.sampled_from(keys), max_size=6)):
        msg[k] = draw(VALUES)
    for k, v in draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)).items():
        msg[k] = v
    return msg


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msgs=st.lists(messages(), max_size=40),
    lab_mode=st.booleans(),
    resync_at=st.integers(min_value=0, max_value=40),
)
def test_garbage_never_raises_nor_errors(
    msgs: list[dict[str, str]], lab_mode: bool, resync_at: int
) -> None:
    t = CallTracker(local_endpoints=LAB_ENDPOINTS if lab_mode else ())
    at = 0.0
    for i, m in enumerate(msgs):
        if i == resync_at:
            for e in t.resync([m for m in msgs[:i] if m.get("Uniqueid")], at):
                json.dumps(e.to_dict())
        at += 0.3
        for e in t.feed(m, at):
            json.dumps(e.to_dict())
    for e in t.flush():
        json.dumps(e.to_dict())
    for c in t.live_calls():
        json.dumps(c.to_dict())
    assert t.stats.errors == 0
    assert t.stats.messages == len(msgs)


def test_real_traces_shuffled_never_error() -> None:
    """Every shared trace, messages in reverse order and interleaved: still no exception."""
    import random

    rnd = random.Random(7)
    for path in sorted(TRACES.glob("*.ami")):
        msgs = [m for _, m in read_trace(path)]
        for order in (list(reversed(msgs)), rnd.sample(msgs, len(msgs))):
            t = lab()
            for i, m in enumerate(order):
                t.feed(m, float(i))
            t.flush()
            t.live_calls()
            assert t.stats.errors == 0, path.name


def test_originate_results_come_as_soon_as_the_evidence_is_complete() -> None:
    """Held failures are released by the message that completes their evidence (the last
    Hangup of the originated channels, or the OriginateResponse when they are already gone),
    never by the deadline, in every order the traces show."""
    for name in (
        "06-outbound-busy.ami",
        "07-outbound-no-answer.ami",
        "08-outbound-congestion.ami",
        "12-outbound-hangup-causes.ami",
    ):
        t = lab()
        released_by = []
        for at, m in read_trace(TRACES / name):
            for e in t.feed(m, at):
                if e.to_dict()["event"] == "originate_result":
                    released_by.append(m["Event"])
        assert released_by and set(released_by) <= {"Hangup", "OriginateResponse"}, name
        assert t.flush() == []


def test_patterns_declaring_both_local_halves_count_one_party() -> None:
    t = CallTracker(local_endpoints=["Local/*@inbound-*;1", "Local/*@agents-*"])
    events = [
        e.to_dict()
        for at, m in read_trace(TRACES / "01-inbound-queue-agent1-answers.ami")
        for e in t.feed(m, at)
    ]
    assert [e["event"] for e in events] == [
        "originate_result",
        "ringing",
        "ringing_end",
        "up",
        "hangup",
    ]
    assert events[1]["targets"][0]["channel"] == "Local/agent1@agents-00000003;1"
    assert events[3]["callee"]["channel"] == "Local/agent1@agents-00000003;1"


def _events(msgs: list[tuple[float, dict[str, str]]]) -> list[tuple[str, ...]]:
    t = lab()
    out = [e for at, m in msgs for e in t.feed(m, at)] + t.flush()
    return [
        (e.to_dict()["event"], str(e.to_dict().get("reason") or e.to_dict().get("result")))
        for e in out
    ]


def _move(
    msgs: list[tuple[float, dict[str, str]]], pick: int, after: int
) -> list[tuple[float, dict[str, str]]]:
    msgs = list(msgs)
    item = msgs.pop(pick)
    msgs.insert(after, item)
    return msgs


def test_order_variants_seen_in_trial_runs_give_the_same_calls() -> None:
    """05: the OriginateResponse came after QueueCallerJoin/AgentCalled in a trial run;
    01: the caller's Hangup and its side's BridgeLeave swapped."""
    t05 = read_trace(TRACES / "05-outbound-dialer-answered-to-queue.ami")
    resp = next(i for i, (_, m) in enumerate(t05) if m.get("Event") == "OriginateResponse")
    called = next(
        i for i, (_, m) in enumerate(t05) if m.get("Event") == "DialBegin" and m.get("Channel")
    )
    late = _move(t05, resp, called)
    base = _events(t05)
    moved = _events(late)
    assert moved != base  # the result moved ...
    assert sorted(moved) == sorted(base)  # ... and nothing else changed
    assert [e for e in moved if e[0] != "originate_result"] == [
        e for e in base if e[0] != "originate_result"
    ]

    t01 = read_trace(TRACES / "01-inbound-queue-agent1-answers.ami")
    hang = next(
        i
        for i, (_, m) in enumerate(t01)
        if m.get("Event") == "Hangup" and m["Channel"].endswith("inbound-00000002;1")
    )
    leave = next(
        i
        for i, (_, m) in enumerate(t01)
        if m.get("Event") == "BridgeLeave" and m["Channel"].endswith("inbound-00000002;2")
    )
    assert leave > hang
    swapped = _move(t01, leave, hang)
    assert (
        _events(swapped)
        == _events(t01)
        == [
            ("originate_result", "answered"),
            ("ringing", "None"),
            ("ringing_end", "answer"),
            ("up", "None"),
            ("hangup", "completed"),
        ]
    )


ALL_TRACE_MSGS = {
    p.name: [m for _, m in read_trace(p)]
    for p in sorted(TRACES.glob("*.ami"))
    if not p.name.startswith("10-")
}


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(ALL_TRACE_MSGS)),
    edits=st.lists(
        st.tuples(st.sampled_from(["drop", "dup", "swap"]), st.integers(0, 10_000)), max_size=12
    ),
)
def test_damaged_real_traces_keep_the_invariants(name: str, edits: list[tuple[str, int]]) -> None:
    """Real traces with messages dropped, repeated or swapped: never an error, and the
    promises hold: one hangup per call, one ringing per target, a ringing_end only after its
    ringing, at most one originate_result per ActionID."""
    msgs = list(ALL_TRACE_MSGS[name])
    for op, pos in edits:
        if not msgs:
            break
        i = pos % len(msgs)
        if op == "drop":
            msgs.pop(i)
        elif op == "dup":
            msgs.insert(i, msgs[i])
        elif i + 1 < len(msgs):
            msgs[i], msgs[i + 1] = msgs[i + 1], msgs[i]
    t = lab()
    events = [e.to_dict() for i, m in enumerate(msgs) for e in t.feed(m, i * 0.01)]
    events += [e.to_dict() for e in t.flush()]
    assert t.stats.errors == 0
    hangups = [e["call_id"] for e in events if e["event"] == "hangup"]
    assert len(hangups) == len(set(hangups))
    rung = [e["targets"][0]["uniqueid"] for e in events if e["event"] == "ringing"]
    assert len(rung) == len(set(rung))
    ringing: set[str] = set()
    ended: set[str] = set()
    for e in events:
        if e["event"] == "ringing":
            ringing.add(e["targets"][0]["uniqueid"])
        elif e["event"] == "ringing_end":
            uid = e["targets"][0]["uniqueid"]
            assert uid in ringing and uid not in ended
            ended.add(uid)
    results = [e["action_id"] for e in events if e["event"] == "originate_result"]
    assert len(results) == len(set(results))
    json.dumps(events)


def test_state_does_not_grow_over_many_calls() -> None:
    """One tracker for a long-lived link: finished calls leave nothing behind but the bounded
    memory of recent channels."""
    msgs = [m for _, m in read_trace(TRACES / "10-burst-50-originates.ami")]
    t = lab()
    for rnd in range(5):
        for i, m in enumerate(msgs):
            # each round is a fresh set of calls: make ids unique as Asterisk would
            t.feed({k: (f"{v}r{rnd}" if k in UNIQUE_KEYS else v) for k, v in m.items()}, rnd + i)
    assert t._chans == {} and t._calls == {} and t._bridges == {} and t._pending == []
    assert len(t._grave) <= 4096 and t.stats.errors == 0
    assert t.stats.events == 5 * 100


UNIQUE_KEYS = {
    "Uniqueid",
    "Linkedid",
    "DestUniqueid",
    "DestLinkedid",
    "LocalOneUniqueid",
    "LocalTwoUniqueid",
    "LocalOneLinkedid",
    "LocalTwoLinkedid",
    "ActionID",
}
