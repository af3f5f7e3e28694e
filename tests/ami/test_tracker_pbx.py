"""The default path: a PJSIP-style PBX with real endpoints and no Local endpoint patterns.

Messages are built by hand the way Asterisk 13-22 sends them (channel snapshot fields on every
channel event, Dest* for the dialled side, Transferee*/TransferTarget* only on newer versions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ami.events import CallEvent
from ami.tracker import CallTracker

STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}


@dataclass
class Ch:
    name: str
    uid: str
    linkedid: str
    num: str = ""
    cname: str = ""
    exten: str = "s"
    context: str = "default"
    state: int = 0


class Pbx:
    """Plays a PBX's AMI output into a tracker; keeps every call event it returned."""

    def __init__(self, tracker: CallTracker | None = None) -> None:
        self.tracker = tracker or CallTracker(server="pbx1")
        self.now = 1000.0
        self.seq = 0
        self.ch: dict[str, Ch] = {}
        self.events: list[CallEvent] = []

    # -- plumbing
    def tick(self, dt: float = 0.5) -> None:
        self.now += dt

    def send(self, event: str, **fields: str) -> list[CallEvent]:
        msg = {"Event": event, "Privilege": "call,all", **fields}
        out = self.tracker.feed(msg, self.now)
        self.events += out
        return out

    def snap(self, name: str, prefix: str = "") -> dict[str, str]:
        c = self.ch[name]
        return {
            f"{prefix}Channel": c.name,
            f"{prefix}ChannelState": str(c.state),
            f"{prefix}ChannelStateDesc": STATE_DESC.get(c.state, "Unknown"),
            f"{prefix}CallerIDNum": c.num or "<unknown>",
            f"{prefix}CallerIDName": c.cname or "<unknown>",
            f"{prefix}ConnectedLineNum": "<unknown>",
            f"{prefix}ConnectedLineName": "<unknown>",
            f"{prefix}Language": "en",
            f"{prefix}AccountCode": "",
            f"{prefix}Context": c.context,
            f"{prefix}Exten": c.exten,
            f"{prefix}Priority": "1",
            f"{prefix}Uniqueid": c.uid,
            f"{prefix}Linkedid": c.linkedid,
        }

    # -- channel life
    def new(
        self,
        name: str,
        *,
        num: str = "",
        cname: str = "",
        exten: str = "s",
        state: int = 0,
        linked: str | None = None,
        uid: str | None = None,
    ) -> Ch:
        self.seq += 1
        uid = uid or f"1700000000.{self.seq}"
        linkedid = self.ch[linked].linkedid if linked else uid
        c = Ch(name, uid, linkedid, num, cname, exten, "default", state)
        self.ch[name] = c
        self.send("Newchannel", **self.snap(name))
        return c

    def local(self, base: str, *, linked: str) -> tuple[str, str]:
        one, two = f"{base};1", f"{base};2"
        self.new(one, linked=linked, exten=base.split("/")[1].split("@")[0])
        self.new(two, linked=linked, state=4, exten=base.split("/")[1].split("@")[0])
        self.send(
            "LocalBridge",
            **self.snap(one, "LocalOne"),
            **self.snap(two, "LocalTwo"),
            Context="x",
            Exten="x",
            LocalOptimization="Yes",
        )
        return one, two

    def state(self, name: str, st: int) -> list[CallEvent]:
        self.ch[name].state = st
        return self.send("Newstate", **self.snap(name))

    def callerid(self, name: str, num: str, cname: str = "", pres: str = "0") -> None:
        c = self.ch[name]
        c.num, c.cname = num, cname
        self.send("NewCallerid", **self.snap(name), **{"CID-CallingPres": pres})

    def dial(self, src: str | None, dest: str) -> list[CallEvent]:
        fields = self.snap(dest, "Dest")
        if src:
            fields.update(self.snap(src))
        return self.send("DialBegin", DialString=dest, **fields)

    def dialend(self, src: str | None, dest: str, status: str) -> list[CallEvent]:
        fields = self.snap(dest, "Dest")
        if src:
            fields.update(self.snap(src))
        return self.send("DialEnd", DialStatus=status, **fields)

    def bridge(self, bid: str, *names: str) -> None:
        self.send(
            "BridgeCreate", BridgeUniqueid=bid, BridgeType="basic", BridgeTechnology="simple_bridge"
        )
        for n in names:
            self.enter(bid, n)

    def enter(self, bid: str, name: str) -> list[CallEvent]:
        return self.send(
            "BridgeEnter",
            BridgeUniqueid=bid,
            BridgeType="basic",
            BridgeTechnology="simple_bridge",
            **self.snap(name),
        )

    def leave(self, bid: str, name: str) -> list[CallEvent]:
        return self.send(
            "BridgeLeave",
            BridgeUniqueid=bid,
            BridgeType="basic",
            BridgeTechnology="simple_bridge",
            **self.snap(name),
        )

    def hangup(self, name: str, cause: int = 16) -> list[CallEvent]:
        return self.send("Hangup", **self.snap(name), Cause=str(cause), **{"Cause-txt": "x"})

    def answer(self, src: str | None, dest: str) -> None:
        """dest answers; Dial then answers the calling channel too (as app_dial does)."""
        self.state(dest, 6)
        self.dialend(src, dest, "ANSWER")
        if src and self.ch[src].state != 6:
            self.state(src, 6)

    # -- results
    def compact(self) -> list[tuple[object, ...]]:
        return [compact(e.to_dict()) for e in self.events]


def compact(d: dict[str, Any]) -> tuple[object, ...]:
    ev = d["event"]
    if ev == "originate_result":
        return (ev, d["action_id"], d["result"], d["cause"])
    if ev == "ringing":
        return (ev, d["caller"]["channel"], tuple(t["channel"] for t in d["targets"]))
    if ev == "ringing_end":
        return (ev, tuple(t["channel"] for t in d["targets"]), d["reason"])
    if ev == "up":
        return (ev, d["caller"]["channel"], d["callee"]["channel"])
    if ev == "transfer":
        tr = d["transferer"]
        return (
            ev,
            d["kind"],
            d["caller"]["channel"],
            tr and tr["channel"],
            tuple(t["channel"] for t in d["targets"]),
        )
    if ev == "hangup":
        return (ev, d["caller"]["channel"], d["reason"], d["cause"])
    if ev == "queue_abandon":
        return (ev, d["caller"]["channel"], d["queue"])
    return (ev,)


P100, P200, P1001, P1002, P300 = (
    "PJSIP/100-00000001",
    "PJSIP/200-00000002",
    "PJSIP/1001-00000003",
    "PJSIP/1002-00000004",
    "PJSIP/300-00000005",
)
TRUNK = "PJSIP/trunk-0000000a"


def inbound(p: Pbx, exten: str = "+4930800") -> None:
    p.new(TRUNK, num="+4930123456", cname="Max", exten=exten, state=4)
    p.state(TRUNK, 6)


def connect(p: Pbx, src: str, dest: str, bid: str = "b1") -> None:
    """dest rings for src and answers; both end up in one bridge."""
    p.new(dest, linked=src, num=p.ch[src].num, exten=p.ch[src].exten)
    p.dial(src, dest)
    p.state(dest, 5)
    p.tick(2)
    p.answer(src, dest)
    p.bridge(bid, dest, src)


# ----------------------------------------------------------------------------- basic calls


def test_direct_dial_answered_and_hung_up() -> None:
    p = Pbx()
    p.new(P100, num="100", cname="Alice", exten="200", state=4)
    p.new(P200, linked=P100, num="100", cname="Alice", exten="200")
    p.dial(P100, P200)
    p.state(P200, 5)
    p.tick(3)
    p.answer(P100, P200)
    p.bridge("b1", P200, P100)
    p.tick(30)
    p.hangup(P200, 16)
    p.hangup(P100, 16)
    assert p.compact() == [
        ("ringing", P100, (P200,)),
        ("ringing_end", (P200,), "answer"),
        ("up", P100, P200),
        ("hangup", P100, "completed", 16),
    ]
    ring = p.events[0].to_dict()
    assert ring["caller"] == {
        "channel": P100,
        "uniqueid": "1700000000.1",
        "linkedid": "1700000000.1",
        "number": "100",
        "name": "Alice",
        "exten": "200",
        "cid_calling_pres": None,
    }
    assert ring["at"] == 1000.0 and p.events[2].at == 1003.0
    assert all(e.server == "pbx1" for e in p.events)
    assert "queue" not in ring and "variables" not in ring


def test_busy_and_the_hangup_reason_map() -> None:
    p = Pbx()
    p.new(P100, num="100", exten="200", state=4)
    p.new(P200, linked=P100)
    p.dial(P100, P200)
    p.state(P200, 7)
    p.dialend(P100, P200, "BUSY")
    p.hangup(P200, 17)
    p.hangup(P100, 17)
    assert p.compact() == [
        ("ringing", P100, (P200,)),
        ("ringing_end", (P200,), "busy"),
        ("hangup", P100, "busy", 17),
    ]


def test_hangup_reasons_for_each_cause() -> None:
    expected = {
        16: "no-answer",
        17: "busy",
        18: "no-answer",
        19: "no-answer",
        21: "rejected",
        26: "answered-elsewhere",
        0: "cancelled",
        127: "cancelled",
        34: "failed",
        1: "failed",
    }
    for cause, reason in expected.items():
        p = Pbx()
        p.new(P100, num="100", exten="200", state=4)
        p.new(P200, linked=P100)
        p.dial(P100, P200)
        p.hangup(P100, cause)
        assert p.compact()[-1] == ("hangup", P100, reason, cause), cause
    # connected: 16, 0 and 127 are a completed call
    for cause in (16, 0, 127):
        p = Pbx()
        p.new(P100, num="100", exten="200", state=4)
        p.state(P100, 6)
        connect(p, P100, P200)
        p.hangup(P100, cause)
        assert p.compact()[-1] == ("hangup", P100, "completed", cause)


def test_caller_hangs_up_while_ringing() -> None:
    p = Pbx()
    p.new(P100, num="100", exten="200", state=4)
    p.new(P200, linked=P100)
    p.dial(P100, P200)
    p.hangup(P100, 0)
    p.dialend(P100, P200, "CANCEL")
    p.hangup(P200, 0)
    assert p.compact() == [
        ("ringing", P100, (P200,)),
        ("hangup", P100, "cancelled", 0),
        ("ringing_end", (P200,), "cancel"),
    ]


# ----------------------------------------------------------------------------- queues, groups


def _queue_ringall(p: Pbx, *, queue_events: bool) -> None:
    inbound(p)
    if queue_events:
        p.send("QueueCallerJoin", **p.snap(TRUNK), Queue="support", Position="1", Count="1")
        p.send("VarSet", **p.snap(TRUNK), Variable="ACCOUNT", Value="A-77")
    for dest in (P1001, P1002):
        p.new(dest, linked=TRUNK, num="+4930123456", exten="+4930800")
        if queue_events:
            p.send(
                "AgentCalled",
                **p.snap(TRUNK),
                **p.snap(dest, "Dest"),
                Queue="support",
                Interface=dest.rsplit("-", 1)[0],
                MemberName=dest,
            )
        p.dial(TRUNK, dest)
        p.state(dest, 5)
    p.tick(4)
    p.answer(TRUNK, P1002)
    p.dialend(TRUNK, P1001, "CANCEL")
    p.hangup(P1001, 26)
    if queue_events:
        p.send("QueueCallerLeave", **p.snap(TRUNK), Queue="support")
        p.send("AgentConnect", **p.snap(TRUNK), **p.snap(P1002, "Dest"), Queue="support")
    p.bridge("b1", P1002, TRUNK)
    p.tick(60)
    p.hangup(TRUNK, 16)
    p.leave("b1", P1002)
    p.hangup(P1002, 16)
    if queue_events:
        p.send("AgentComplete", **p.snap(TRUNK), Queue="support", Reason="caller")


QUEUE_CALL = [
    ("ringing", TRUNK, (P1001,)),
    ("ringing", TRUNK, (P1002,)),
    ("ringing_end", (P1002,), "answer"),
    ("ringing_end", (P1001,), "cancel"),
    ("up", TRUNK, P1002),
    ("hangup", TRUNK, "completed", 16),
]


def test_queue_ringall_with_queue_events_enriches() -> None:
    p = Pbx()
    _queue_ringall(p, queue_events=True)
    assert p.compact() == QUEUE_CALL
    ring = p.events[0].to_dict()
    assert ring["queue"] == "support"
    assert ring["variables"] == {"ACCOUNT": "A-77"}
    assert ring["caller"]["number"] == "+4930123456" and ring["caller"]["exten"] == "+4930800"


def test_queue_ringall_without_queue_events_gives_the_same_calls() -> None:
    """Queue events only enrich: a PBX that filters them out gets the same ringing/up/hangup."""
    p = Pbx()
    _queue_ringall(p, queue_events=False)
    assert p.compact() == QUEUE_CALL
    assert "queue" not in p.events[0].to_dict()


def test_ring_group_through_local_channels_and_local_optimization() -> None:
    """Dial(Local/grp@ringgroup) whose ;2 dials two phones; Local halves are plumbing, the
    caller is still the trunk; after answer the Local pair optimizes away without events."""
    p = Pbx()
    inbound(p)
    one, two = p.local("Local/grp@ringgroup-00000001", linked=TRUNK)
    p.dial(TRUNK, one)
    p.state(one, 5)
    for dest in (P1001, P1002):
        p.new(dest, linked=TRUNK)
        p.dial(two, dest)
        p.state(dest, 5)
    p.tick(3)
    p.answer(two, P1001)
    p.dialend(two, P1002, "CANCEL")
    p.hangup(P1002, 26)
    p.state(two, 6)
    p.bridge("b2", P1001, two)
    p.answer(TRUNK, one)
    p.bridge("b1", one, TRUNK)
    up_at = len(p.events)
    # optimization: the phone is swapped into the trunk's bridge, the pair hangs up
    p.send("LocalOptimizationBegin", **p.snap(one, "LocalOne"), **p.snap(two, "LocalTwo"))
    p.leave("b2", P1001)
    p.enter("b1", P1001)
    p.leave("b1", one)
    p.hangup(one, 16)
    p.hangup(two, 16)
    p.send("LocalOptimizationEnd", **p.snap(one, "LocalOne"), **p.snap(two, "LocalTwo"))
    assert p.events[up_at:] == []
    p.tick(20)
    p.hangup(P1001, 16)
    p.hangup(TRUNK, 16)
    assert p.compact() == [
        ("ringing", TRUNK, (P1001,)),
        ("ringing", TRUNK, (P1002,)),
        ("ringing_end", (P1001,), "answer"),
        ("ringing_end", (P1002,), "cancel"),
        ("up", TRUNK, P1001),
        ("hangup", TRUNK, "completed", 16),
    ]
    assert p.tracker.live_calls() == []


def test_call_forward_rings_the_new_target() -> None:
    """200 forwards (302) to 300: app_dial hangs up 200's channel and dials 300 itself."""
    p = Pbx()
    p.new(P100, num="100", exten="200", state=4)
    p.new(P200, linked=P100)
    p.dial(P100, P200)
    p.send(
        "DialState",
        **p.snap(P100),
        **p.snap(P200, "Dest"),
        DialStatus="PROGRESS",
        Forward="PJSIP/300",
    )
    p.hangup(P200, 16)
    p.new(P300, linked=P100)
    p.dial(P100, P300)
    p.state(P300, 5)
    p.answer(P100, P300)
    p.bridge("b1", P100, P300)
    p.hangup(P100, 16)
    assert p.compact() == [
        ("ringing", P100, (P200,)),
        ("ringing_end", (P200,), "cancel"),
        ("ringing", P100, (P300,)),
        ("ringing_end", (P300,), "answer"),
        ("up", P100, P300),
        ("hangup", P100, "completed", 16),
    ]


@pytest.mark.parametrize("masquerade", [True, False])
def test_pickup_callee_is_the_picking_phone(masquerade: bool) -> None:
    """300 picks up 200's ringing. Asterisk 12+ swaps the identities of the picking channel and
    the picked one (masquerade): the dial then ends on the picker's channel and the picked
    channel hangs up as a zombie; older versions end the dial on the picked channel."""
    p = Pbx()
    p.new(P100, num="100", exten="200", state=4)
    p.state(P100, 6)
    p.new(P200, linked=P100)
    p.dial(P100, P200)
    p.state(P200, 5)
    p.tick(2)
    p.new(P300, num="300", exten="*8", state=4)
    p.state(P300, 6)
    p.send("Pickup", **p.snap(P300), **p.snap(P200, "Target"))
    if masquerade:
        p.dialend(P100, P300, "ANSWER")
        p.ch[P200].name = P200 + "<ZOMBIE>"
        p.hangup(P200, 16)
    else:
        p.dialend(P100, P200, "ANSWER")
        p.hangup(P200, 26)
    p.bridge("b1", P100, P300)
    p.tick(10)
    p.hangup(P300, 16)
    p.hangup(P100, 16)
    assert p.compact() == [
        ("ringing", P100, (P200,)),
        ("ringing_end", (P200,), "pickup"),
        ("up", P100, P300),
        ("hangup", P100, "completed", 16),  # one hangup: the picking phone's own call is absorbed
    ]


# ----------------------------------------------------------------------------- transfers


def _inbound_connected_to_1001(p: Pbx) -> None:
    inbound(p)
    connect(p, TRUNK, P1001)


def test_blind_transfer_event() -> None:
    p = Pbx()
    _inbound_connected_to_1001(p)
    p.send(
        "BlindTransfer",
        Result="Success",
        **p.snap(P1001, "Transferer"),
        **p.snap(TRUNK, "Transferee"),
        BridgeUniqueid="b1",
        IsExternal="Yes",
        Context="default",
        Extension="1002",
    )
    p.leave("b1", TRUNK)
    p.leave("b1", P1001)
    p.hangup(P1001, 16)
    p.tick(1)
    p.new(P1002, linked=TRUNK)
    p.dial(TRUNK, P1002)
    p.tick(2)
    p.answer(TRUNK, P1002)
    p.bridge("b2", P1002, TRUNK)
    p.hangup(TRUNK, 16)
    assert p.compact() == [
        ("ringing", TRUNK, (P1001,)),
        ("ringing_end", (P1001,), "answer"),
        ("up", TRUNK, P1001),
        ("transfer", "blind", TRUNK, P1001, (P1002,)),
        ("ringing", TRUNK, (P1002,)),
        ("ringing_end", (P1002,), "answer"),
        ("up", TRUNK, P1002),
        ("hangup", TRUNK, "completed", 16),
    ]
    assert p.events[-1].to_dict()["caller"]["exten"] == "1002"


def test_blind_transfer_of_older_asterisk_without_transferee_fields() -> None:
    p = Pbx()
    _inbound_connected_to_1001(p)
    p.send(
        "BlindTransfer",
        Result="Success",
        **p.snap(P1001, "Transferer"),
        BridgeUniqueid="b1",
        IsExternal="Yes",
        Context="default",
        Extension="1002",
    )
    p.leave("b1", P1001)
    p.hangup(P1001, 16)
    p.leave("b1", TRUNK)
    p.new(P1002, linked=TRUNK)
    p.dial(TRUNK, P1002)
    assert p.compact()[-2:] == [
        ("transfer", "blind", TRUNK, P1001, (P1002,)),
        ("ringing", TRUNK, (P1002,)),
    ]


def test_redirect_of_the_caller_is_a_blind_transfer() -> None:
    """AMI Redirect moves the connected caller away while its callee is still in the bridge;
    a new endpoint is then dialled for it."""
    p = Pbx()
    _inbound_connected_to_1001(p)
    p.ch[TRUNK].exten = "1002"
    p.leave("b1", TRUNK)
    p.new(P1002, linked=TRUNK)
    p.dial(TRUNK, P1002)
    p.leave("b1", P1001)
    p.hangup(P1001, 16)
    p.answer(TRUNK, P1002)
    p.bridge("b2", P1002, TRUNK)
    p.hangup(P1002, 16)
    p.hangup(TRUNK, 16)
    assert p.compact()[3:] == [
        ("transfer", "blind", TRUNK, P1001, (P1002,)),
        ("ringing", TRUNK, (P1002,)),
        ("ringing_end", (P1002,), "answer"),
        ("up", TRUNK, P1002),
        ("hangup", TRUNK, "completed", 16),
    ]
    assert p.events[3].to_dict()["caller"]["exten"] == "1002"


def test_callee_hangs_up_first_is_no_transfer() -> None:
    p = Pbx()
    _inbound_connected_to_1001(p)
    p.leave("b1", P1001)
    p.hangup(P1001, 16)
    p.leave("b1", TRUNK)
    p.new(P1002, linked=TRUNK)  # e.g. a survey or a second dial from the dialplan
    p.dial(TRUNK, P1002)
    assert [e[0] for e in p.compact()] == ["ringing", "ringing_end", "up", "ringing"]


def _consult(p: Pbx, *, answer: bool) -> tuple[str, str]:
    """1001 (talking to the trunk in b1) puts it on hold and calls 1002 from a second channel
    of its phone: its own call."""
    a2 = "PJSIP/1001-0000000b"
    p.send("Hold", **p.snap(P1001))
    p.new(a2, num="1001", cname="Agent", exten="1002", state=4)
    p.state(a2, 6)
    p.new(P1002, linked=a2, num="1001", exten="1002")
    p.dial(a2, P1002)
    p.state(P1002, 5)
    if answer:
        p.tick(2)
        p.answer(a2, P1002)
        p.bridge("b2", P1002, a2)
    return a2, P1002


def _attended(p: Pbx, a2: str, *, fields: bool, dest_type: str = "Bridge") -> None:
    extra: dict[str, str] = {}
    if fields:
        extra = {**p.snap(TRUNK, "Transferee"), **p.snap(P1002, "TransferTarget")}
    p.send(
        "AttendedTransfer",
        Result="Success",
        **p.snap(P1001, "OrigTransferer"),
        OrigBridgeUniqueid="b1",
        **p.snap(a2, "SecondTransferer"),
        SecondBridgeUniqueid="b2",
        DestType=dest_type,
        DestBridgeUniqueid="b1",
        IsExternal="No",
        **extra,
    )


def _finish_attended(p: Pbx, a2: str) -> None:
    p.leave("b1", P1001)
    p.hangup(P1001, 16)
    p.leave("b2", a2)
    p.hangup(a2, 16)
    p.leave("b2", P1002)
    p.enter("b1", P1002)
    p.tick(30)
    p.hangup(TRUNK, 16)
    p.hangup(P1002, 16)


def test_attended_transfer_between_two_calls() -> None:
    p = Pbx()
    _inbound_connected_to_1001(p)
    a2, _ = _consult(p, answer=True)
    _attended(p, a2, fields=True)
    _finish_attended(p, a2)
    assert p.compact() == [
        ("ringing", TRUNK, (P1001,)),
        ("ringing_end", (P1001,), "answer"),
        ("up", TRUNK, P1001),
        ("ringing", a2, (P1002,)),  # the consult call of 1001's phone
        ("ringing_end", (P1002,), "answer"),
        ("up", a2, P1002),
        ("transfer", "attended", TRUNK, P1001, (P1002,)),
        ("hangup", TRUNK, "completed", 16),  # one hangup: the consult call ends silently
    ]
    consult_id = p.events[3].call_id
    main_id = p.events[0].call_id
    assert consult_id != main_id and p.events[-1].call_id == main_id
    assert p.events[-1].to_dict()["caller"]["exten"] == "1002"


def test_attended_transfer_without_transferee_fields_uses_bridges() -> None:
    p = Pbx()
    _inbound_connected_to_1001(p)
    a2, _ = _consult(p, answer=True)
    _attended(p, a2, fields=False)
    _finish_attended(p, a2)
    assert ("transfer", "attended", TRUNK, P1001, (P1002,)) in p.compact()
    assert p.compact()[-1] == ("hangup", TRUNK, "completed", 16)


def test_blonde_transfer_then_up_when_the_target_answers() -> None:
    p = Pbx()
    _inbound_connected_to_1001(p)
    a2, _ = _consult(p, answer=False)
    _attended(p, a2, fields=True, dest_type="App")
    p.leave("b1", P1001)
    p.hangup(P1001, 16)
    p.hangup(a2, 16)
    p.tick(3)
    p.state(P1002, 6)
    p.enter("b1", P1002)
    p.hangup(TRUNK, 16)
    assert p.compact()[3:] == [
        ("ringing", a2, (P1002,)),
        ("transfer", "blonde", TRUNK, P1001, (P1002,)),
        ("up", TRUNK, P1002),
        ("hangup", TRUNK, "completed", 16),
    ]


# ----------------------------------------------------------------------------- originate


def test_click_to_dial_the_answering_phone_becomes_the_caller() -> None:
    p = Pbx()
    p.send("VarSet", Uniqueid="nobody", Variable="X", Value="1")  # noise for nobody
    p.new(P1001, num="+4930999", cname="Sales", uid="c2d-1", exten="s")
    p.send("VarSet", **p.snap(P1001), Variable="__CAMPAIGN", Value="c9")
    p.dial(None, P1001)  # Originate's dial has no calling channel
    p.state(P1001, 5)
    assert p.events == []  # the originated leg rings nobody
    p.tick(2)
    p.state(P1001, 6)
    p.dialend(None, P1001, "ANSWER")
    p.send(
        "OriginateResponse",
        ActionID="c2d-7",
        Response="Success",
        Reason="4",
        Channel=P1001,
        Uniqueid="c2d-1",
        Context="internal",
        Exten="+4930555",
    )
    out = TRUNK
    p.send("Newexten", **{**p.snap(P1001), "Context": "internal", "Exten": "+4930555"})
    p.new(out, linked=P1001, exten="+4930555")
    p.dial(P1001, out)
    p.tick(5)
    p.answer(P1001, out)
    p.bridge("b1", out, P1001)
    p.hangup(out, 16)
    p.hangup(P1001, 16)
    assert p.compact() == [
        ("originate_result", "c2d-7", "answered", None),
        ("ringing", P1001, (TRUNK,)),
        ("ringing_end", (TRUNK,), "answer"),
        ("up", P1001, TRUNK),
        ("hangup", P1001, "completed", 16),
    ]
    assert p.events[0].to_dict()["variables"] == {"CAMPAIGN": "c9"}
    assert p.events[1].to_dict()["variables"] == {"CAMPAIGN": "c9"}
    # the Originate's channel started in "s"; as a caller it shows the number it dials
    assert p.events[1].to_dict()["caller"]["exten"] == "+4930555"
    assert p.events[1].to_dict()["caller"]["number"] == "+4930999"


def test_originate_failure_waits_for_the_evidence() -> None:
    p = Pbx()
    chan = "PJSIP/trunk-00000020"
    p.new(chan, num="+4930999")
    p.send("VarSet", **p.snap(chan), Variable="__LEAD", Value="7")
    p.dial(None, chan)
    # Reason 0 comes first; the cause only with the Hangup
    assert (
        p.send(
            "OriginateResponse",
            ActionID="d-1",
            Response="Failure",
            Reason="0",
            Channel="PJSIP/+4930555@trunk",
            Uniqueid="<unknown>",
        )
        == []
    )
    p.dialend(None, chan, "CHANUNAVAIL")
    out = p.hangup(chan, 1)
    assert [compact(e.to_dict()) for e in out] == [("originate_result", "d-1", "failed", 1)]
    assert out[0].to_dict()["variables"] == {"LEAD": "7"}
    assert out[0].at == 1000.0


def test_originate_failure_without_channels_reports_after_a_grace_period() -> None:
    p = Pbx()
    assert (
        p.send(
            "OriginateResponse",
            ActionID="x-1",
            Response="Failure",
            Reason="0",
            Channel="SIP/nowhere",
            Uniqueid="<unknown>",
        )
        == []
    )
    p.tick(0.2)
    assert p.send("FullyBooted", Status="Fully Booted") == []
    assert p.tracker.expire(1000.5) == []  # still within the grace period
    p.tick(5)
    out = p.send("Newexten", Channel="X", Uniqueid="y")  # any later message moves time on
    assert [compact(e.to_dict()) for e in out] == [("originate_result", "x-1", "failed", None)]
    assert out[0].at == 1000.0  # when Asterisk reported it
    # on a quiet link a timer does the same
    p.send(
        "OriginateResponse",
        ActionID="x-3",
        Response="Failure",
        Reason="0",
        Channel="SIP/nowhere",
        Uniqueid="<unknown>",
    )
    assert [e.to_dict()["action_id"] for e in p.tracker.expire(p.now + 2)] == ["x-3"]
    # and flush reports whatever is still pending
    p.send(
        "OriginateResponse",
        ActionID="x-2",
        Response="Failure",
        Reason="8",
        Channel="SIP/nowhere",
        Uniqueid="<unknown>",
    )
    flushed = p.tracker.flush()
    assert [compact(e.to_dict()) for e in flushed] == [
        ("originate_result", "x-2", "congestion", 34)
    ]


def test_originate_busy_before_or_after_hangups_is_the_same() -> None:
    def run(order: str) -> list[tuple[object, ...]]:
        p = Pbx()
        chan = "PJSIP/trunk-00000021"
        p.new(chan)
        p.dial(None, chan)
        resp = {
            "ActionID": "d-2",
            "Response": "Failure",
            "Reason": "5",
            "Channel": "PJSIP/+4930555@trunk",
            "Uniqueid": "<unknown>",
        }
        if order == "first":
            p.send("OriginateResponse", **resp)
        p.dialend(None, chan, "BUSY")
        p.hangup(chan, 17)
        if order == "last":
            p.send("OriginateResponse", **resp)
        return p.compact()

    assert run("first") == run("last") == [("originate_result", "d-2", "busy", 17)]


# ----------------------------------------------------------------------------- odd input


def test_messages_in_odd_orders_and_after_hangup() -> None:
    p = Pbx()
    p.send("FullyBooted", Status="Fully Booted")
    p.new(P100, num="100", exten="200", state=4)
    p.new(P200, linked=P100)
    # DialEnd before DialBegin, state before dial: no crash, no ghost events
    p.dialend(P100, P200, "ANSWER")
    p.state(P200, 5)
    p.dial(P100, P200)
    p.send("FullyBooted", Status="Fully Booted")
    p.answer(P100, P200)
    p.bridge("b1", P100, P200)
    p.hangup(P100, 16)
    n = len(p.events)
    # after the Hangup: more of the same channel and the bridge
    p.state(P100, 6)
    p.leave("b1", P100)
    p.hangup(P100, 16)
    p.dialend(P100, P200, "CANCEL")
    p.send("NewCallerid", **p.snap(P100))
    p.send("BridgeDestroy", BridgeUniqueid="b1")
    p.send("BridgeDestroy", BridgeUniqueid="b1")
    p.hangup(P200, 16)
    p.send("FullyBooted", Status="Fully Booted")
    assert p.events[n:] == []
    assert p.compact() == [
        ("ringing", P100, (P200,)),
        ("ringing_end", (P200,), "answer"),
        ("up", P100, P200),
        ("hangup", P100, "completed", 16),
    ]
    assert p.tracker.stats.errors == 0


def test_channels_never_seen_started_mid_call() -> None:
    """We connect while a call is up: its channels first appear in BridgeEnter."""
    p = Pbx()
    p.ch[P100] = Ch(P100, "1699.1", "1699.1", "100", "Alice", "200", "default", 6)
    p.ch[P200] = Ch(P200, "1699.2", "1699.1", "100", "", "200", "default", 6)
    p.send("BridgeEnter", BridgeUniqueid="bx", **p.snap(P200))
    p.send("BridgeEnter", BridgeUniqueid="bx", **p.snap(P100))
    p.hangup(P200, 16)
    p.hangup(P100, 16)
    assert p.compact() == [("up", P100, P200), ("hangup", P100, "completed", 16)]


def test_user_event_and_timestamp() -> None:
    p = Pbx()
    p.new(P100, num="100", exten="200", state=4)
    out = p.send(
        "UserEvent", UserEvent="CrmNote", Note="vip", Timestamp="1700000123.250000", **p.snap(P100)
    )
    assert [e.to_dict() for e in out] == [
        {
            "event": "user_event",
            "call_id": p.ch[P100].linkedid,
            "at": 1700000123.25,
            "caller": out[0].to_dict()["caller"],
            "fields": {"UserEvent": "CrmNote", "Note": "vip"},
        }
    ]
    assert out[0].to_dict()["caller"]["channel"] == P100
    bare = p.send("UserEvent", UserEvent="Ping")
    assert bare[0].to_dict()["caller"] is None and bare[0].call_id == ""


def test_an_exception_inside_is_counted_and_feed_returns_empty() -> None:
    t = CallTracker()

    def boom(m: object, at: float) -> None:
        raise RuntimeError("bug")

    t._handlers["Newchannel"] = boom  # the error boundary, not the logic, is under test
    assert t.feed({"Event": "Newchannel"}, 1.0) == []
    assert t.feed({"Event": "Newchannel"}, 2.0) == []
    assert t.stats.errors == 2 and t.stats.messages == 2
