"""The call tracker: raw AMI messages in, call-level events out. Pure and deterministic.

Why it is built this way:

* It reads only core channel events (Newchannel, Newstate, Dial*, LocalBridge, Bridge*,
  Hangup, NewCallerid, transfers). Queue and agent events only enrich, because many PBXs ring
  agents with plain Dial or ring groups and some filter queue events out.
* Calls are keyed by the Linkedid of their first channel; channels by Uniqueid. Local channel
  halves are plumbing: "who talks to whom" is a walk over bridges and Local pairs from the
  caller to the endpoints it reaches, so Local optimization (a channel swapped into the other
  bridge and the pair hung up) changes nothing visible.
* No clock reads: time comes from the message (`Timestamp`) or the caller's `at`. Things that
  must wait for evidence (an OriginateResponse with Reason 0) wait for later messages or a
  deadline measured in message time, so a replay gives the same output every time.
* The hot path is a dict lookup of the Event name; the ~60% noise (Newexten, VarSet of
  channels nobody needs, DeviceStateChange, ...) costs one failed lookup or a few compares.

Decisions worth knowing when reading the output:

* The caller is the endpoint that started the call: an incoming channel (state Ring, not
  dialled by anyone) or, for an Originate, the first endpoint that answers the originated leg
  (the originated leg rings nobody; its fate is the originate_result). A Ringing always names
  the call's caller, also for a consult dial inside the same call (Atxfer).
* Ringing comes from DialBegin (through Local pairs), or from Newstate Ringing/Up of an
  endpoint nobody dialled (Atxfer's target has no DialBegin). Up is computed from bridges and
  Local pairs whenever they change; it is emitted once, and again after a blind or blonde
  transfer when the new party is connected (an attended transfer says who talks already).
* A Local ;2 half declared an endpoint shows the caller ID of its ;1 half (what the other
  side sees for it); a Local ;1 endpoint ignores caller-ID changes once Up (the far end's
  connected line mirrored into it during teardown).
* A failed OriginateResponse is held until the originated channels are gone (Hangup Cause
  first, then DialEnd status, then Cdr disposition decide Reason 0) or ORIGINATE_GRACE passed.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ami.channels import local_peer
from ami.events import (
    CallEvent,
    Hangup,
    OriginateResult,
    Party,
    QueueAbandon,
    Ringing,
    RingingEnd,
    Transfer,
    Up,
    UserEvent,
)

log = structlog.get_logger(__name__)

_DOWN, _RING, _RINGING, _UP = 0, 4, 5, 6
#: what handlers get for a change that no message carries (a resync): time is then `at`
_NO_MESSAGE: Mapping[str, str] = {}

#: Seconds (message time) a failed OriginateResponse waits for the evidence of its channels
#: (Hangup Cause, DialEnd, Cdr) before it is reported with what is known.
ORIGINATE_GRACE = 1.0
#: How many hung-up channels are remembered for late events and originate evidence.
GRAVEYARD_SIZE = 4096

#: Variables Asterisk sets on its own; they are never user data for a screen pop.
_INTERNAL_VARS = frozenset(
    """
    ANSWEREDTIME ANSWEREDTIME_MS DIALEDTIME DIALEDTIME_MS DIALSTATUS DIALEDPEERNUMBER
    DIALEDPEERNAME QUEUEWAIT QUEUEWAIT_MS QUEUEPOSITION QUEUESTATUS QUEUEHOLDTIME BRIDGEPEER
    BRIDGEPVTCALLID MEMBERINTERFACE MEMBERNAME MEMBERCALLS MEMBERLASTCALL MEMBERPENALTY
    MEMBERDYNAMIC MEMBERREALTIME BLINDTRANSFER ATTENDEDTRANSFER TRANSFERERNAME TRANSFER_CONTEXT
    FORWARD_CONTEXT ABANDONED RTPAUDIOQOS RTPAUDIOQOSJITTER RTPAUDIOQOSLOSS RTPAUDIOQOSRTT
    RTPAUDIOQOSBRIDGED RTPAUDIOQOSJITTERBRIDGED RTPAUDIOQOSLOSSBRIDGED RTPAUDIOQOSRTTBRIDGED
    SIPCALLID SIPDOMAIN SIPURI PICKUPMARK MACRO_DEPTH GOSUB_RETVAL SHARED PARKINGSLOT PARKEDLOT
    PARKER PARKERCHANNEL
    """.split()
)

#: Headers of the channel snapshot Asterisk adds to a UserEvent; the rest are the user's fields.
_SNAPSHOT_KEYS = frozenset(
    """
    Event Privilege Timestamp SystemName Channel ChannelState ChannelStateDesc CallerIDNum
    CallerIDName ConnectedLineNum ConnectedLineName Language AccountCode Context Exten Priority
    Uniqueid Linkedid
    """.split()
)

#: Hangup cause of the caller -> hangup reason (None: depends on whether it was connected).
_HANGUP_REASON: dict[int, str | None] = {
    16: None,
    0: None,
    127: None,
    17: "busy",
    18: "no-answer",
    19: "no-answer",
    21: "rejected",
    26: "answered-elsewhere",
}

_ORIGINATE_REASON = {5: "busy", 3: "no-answer", 8: "congestion"}
_CANONICAL_CAUSE = {"busy": 17, "no-answer": 19, "congestion": 34}
_CAUSE_RESULT = {
    17: "busy",
    18: "no-answer",
    19: "no-answer",
    34: "congestion",
    38: "congestion",
    41: "congestion",
    42: "congestion",
    44: "congestion",
}
_STATUS_RESULT = {
    "BUSY": "busy",
    "NOANSWER": "no-answer",
    "NO ANSWER": "no-answer",
    "CONGESTION": "congestion",
    "ANSWER": "answered",
    "ANSWERED": "answered",
}
_RING_END_BY_CAUSE = {17: "busy", 18: "noanswer", 19: "noanswer", 34: "congestion", 21: "cancel"}


def hangup_reason(cause: int | None, connected: bool) -> str:
    """Map the caller's Hangup Cause to the reason agents and reports show."""
    if cause is None:
        return "completed" if connected else "cancelled"
    if cause in _HANGUP_REASON:
        r = _HANGUP_REASON[cause]
        if r is not None:
            return r
        if cause == 16:
            return "completed" if connected else "no-answer"
        return "completed" if connected else "cancelled"
    return "failed"


def _strip_var(name: str) -> str:
    return name.lstrip("_")


def _int(value: str | None, default: int | None = None) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _cid(value: str | None) -> str:
    if not value or value == "<unknown>":
        return ""
    return value


class _Bridge:
    __slots__ = ("holding", "id", "members")

    def __init__(self, bid: str, holding: bool) -> None:
        self.id = bid
        self.members: list[_Chan] = []
        self.holding = holding


class _Call:
    __slots__ = (
        "await_up",
        "callee",
        "caller",
        "caller_exten",
        "chans",
        "connected",
        "ended",
        "id",
        "in_queue",
        "queue",
        "seq",
        "up_with",
        "xfer",
    )

    def __init__(self, cid: str, seq: int) -> None:
        self.id = cid
        self.seq = seq
        self.caller: _Chan | None = None
        self.caller_exten: str | None = None
        self.callee: _Chan | None = None
        self.up_with: _Chan | None = None
        self.connected = False
        self.await_up = False
        #: a pending blind transfer: (transferer endpoint or None, came from a Redirect,
        #: the exten the caller was sent to)
        self.xfer: tuple[_Chan | None, bool, str] | None = None
        self.ended = False
        #: the last queue the call waited in (live_calls) and the one it waits in now (ringing)
        self.queue: str | None = None
        self.in_queue: str | None = None
        #: the call's live channels by Uniqueid, in creation order: live_calls() and resync
        #: walk a call's own channels, never every channel of the server
        self.chans: dict[str, _Chan] = {}


class _Chan:
    __slots__ = (
        "alive",
        "bridge",
        "call",
        "cause",
        "claimed",
        "cname",
        "device",
        "dial_status",
        "dialer",
        "endpoint",
        "exten",
        "linkedid",
        "local",
        "name",
        "number",
        "originated",
        "peer",
        "pres",
        "ring_caller",
        "ring_open",
        "rung",
        "seen",
        "state",
        "uid",
        "vars",
    )

    def __init__(self, name: str, uid: str, linkedid: str, call: _Call, endpoint: bool) -> None:
        self.name = name
        self.uid = uid
        self.linkedid = linkedid
        self.call = call
        self.endpoint = endpoint
        self.local = name.startswith("Local/")
        self.number = ""
        self.cname = ""
        self.exten = ""
        self.pres: str | None = None
        self.state = _DOWN
        self.alive = True
        self.bridge: _Bridge | None = None
        self.peer: _Chan | None = None
        self.dialer: _Chan | None = None
        self.originated = False
        self.vars: dict[str, str] | None = None
        self.ring_caller: Party | None = None
        self.ring_open = False
        self.rung = False
        self.cause: int | None = None
        self.dial_status: str | None = None
        self.claimed = False
        #: number of the message that last changed state or bridge: a resync snapshot listed
        #: before that message is older than what we know
        self.seen = 0
        #: set for the first channel of a call only: what an Originate's dial string names
        self.device = ""


@dataclass(slots=True)
class _PendingOriginate:
    action_id: str
    reason: int
    at: float
    device: str
    uid: str | None
    deadline: float
    chan: _Chan | None = None


@dataclass(slots=True)
class TrackerStats:
    messages: int = 0
    events: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class LiveCall:
    """One call in progress, for re-syncing an agent desktop after a websocket reconnect."""

    call_id: str
    caller: Party
    state: str  # ringing | up
    ringing: tuple[Party, ...] = ()
    callee: Party | None = None
    queue: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller": self.caller.to_dict(),
            "state": self.state,
            "ringing": [p.to_dict() for p in self.ringing],
            "callee": None if self.callee is None else self.callee.to_dict(),
            "queue": self.queue,
            "variables": dict(self.variables),
        }


def _dial_device(dial: str) -> str:
    """The device part of an Originate `Channel:` dial string, comparable with
    `device_of(channel name)`: `PJSIP/1001` stays, `PJSIP/+4930@trunk` -> `PJSIP/trunk`,
    `SIP/trunk/+4930` -> `SIP/trunk`."""
    if dial.startswith("Local/"):
        return dial.split("/n", 1)[0] if dial.endswith("/n") else dial
    tech, sep, rest = dial.partition("/")
    if not sep:
        return dial
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    rest = rest.split("/", 1)[0]
    return f"{tech}/{rest}"


_CHAN_SUFFIX = re.compile(r"-[0-9a-fA-F]+(;[12])?$")


def _device(name: str) -> str:
    return _CHAN_SUFFIX.sub("", name)


Handler = Callable[[Mapping[str, str], float], "list[CallEvent] | None"]


class CallTracker:
    """Feed every AMI message of one Asterisk server; get call-level events back."""

    def __init__(self, local_endpoints: Sequence[str] = (), server: str = "") -> None:
        self.server = server
        self.stats = TrackerStats()
        #: one regex for all patterns: a Local channel's check is a single match call
        self._endpoint_re = (
            re.compile("|".join(fnmatch.translate(p) for p in local_endpoints))
            if local_endpoints
            else None
        )
        self._chans: dict[str, _Chan] = {}
        self._by_name: dict[str, _Chan] = {}
        self._calls: dict[str, _Call] = {}
        self._bridges: dict[str, _Bridge] = {}
        self._grave: OrderedDict[str, _Chan] = OrderedDict()
        self._cdr: OrderedDict[str, str] = OrderedDict()
        self._pending: list[_PendingOriginate] = []
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._next_deadline = float("inf")
        self._seq = 0
        self._logged_errors: set[str] = set()
        #: Uniqueid -> number of the message that listed it (CoreShowChannel items reach feed
        #: too, before the resync they belong to)
        self._listed: dict[str, int] = {}
        self._handlers: dict[str, Handler] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "DialBegin": self._on_dialbegin,
            "DialEnd": self._on_dialend,
            "LocalBridge": self._on_localbridge,
            "BridgeCreate": self._on_bridgecreate,
            "BridgeEnter": self._on_bridgeenter,
            "BridgeLeave": self._on_bridgeleave,
            "BridgeMerge": self._on_bridgemerge,
            "BridgeDestroy": self._on_bridgedestroy,
            "Hangup": self._on_hangup,
            "VarSet": self._on_varset,
            "QueueCallerJoin": self._on_queue,
            "AgentCalled": self._on_queue,
            "QueueCallerAbandon": self._on_abandon,
            "QueueCallerLeave": self._on_queue_leave,
            "UserEvent": self._on_userevent,
            "OriginateResponse": self._on_originate_response,
            "BlindTransfer": self._on_blindtransfer,
            "AttendedTransfer": self._on_attendedtransfer,
            "Cdr": self._on_cdr,
            "Rename": self._on_rename,
            "Newexten": self._on_newexten,
            "Pickup": self._on_pickup,
            "CoreShowChannel": self._on_listed,
        }

    # ------------------------------------------------------------------ public API

    @property
    def events(self) -> frozenset[str]:
        """The AMI events this tracker reads; a link may drop the others unread."""
        return frozenset(self._handlers)

    def feed(self, message: Mapping[str, str], at: float) -> list[CallEvent]:
        """One AMI message exactly as received; `at` its arrival time in seconds."""
        self.stats.messages += 1
        handler = self._handlers.get(message.get("Event", ""))
        if handler is None and at < self._next_deadline:
            return []
        try:
            out = self._expire(message, at) if at >= self._next_deadline else None
            if handler is not None:
                res = handler(message, at)
                if res:
                    out = res if out is None else out + res
        except Exception:
            self.stats.errors += 1
            name = str(message.get("Event") or message.get("Response") or "?")
            if name not in self._logged_errors and len(self._logged_errors) < 256:
                self._logged_errors.add(name)
                _log_safely("tracker failed on a message", ami_event=name, server=self.server)
            return []
        if not out:
            return []
        self.stats.events += len(out)
        return out

    def expire(self, at: float) -> list[CallEvent]:
        """Release originate results whose grace period has passed by `at` (message time).
        Every fed message does this already; call it on a timer when the link is quiet."""
        if at < self._next_deadline:
            return []
        out = self._expire({}, at) or []
        self.stats.events += len(out)
        return out

    def flush(self, at: float | None = None) -> list[CallEvent]:
        """Report every originate still waiting for evidence (end of a replay, shutdown)."""
        out: list[CallEvent] = []
        for p in list(self._pending):
            out.append(self._resolve_originate(p))
        self._pending.clear()
        self._next_deadline = float("inf")
        self.stats.events += len(out)
        return out

    def resync(self, channels: Sequence[Mapping[str, str]], at: float) -> list[CallEvent]:
        """Called after every AMI (re)connect with the CoreShowChannel list items, so that no
        call stays ringing or up forever and nothing that happened meanwhile is lost:

        * a rung target whose channel vanished ends its ring (reason 'cancel', or 'answer' if
          it was seen answering); a vanished caller ends its call (a hangup with reason
          'completed' if connected else 'cancelled', cause None);
        * calls we were reporting take state and bridges from the snapshot and report what
          the missed events would have: a party dialled meanwhile rings, a ring whose target
          is now Up ends with 'answer', and the call is `up` (once) when its caller talks to
          one party; events fed after a channel's list item are newer and win over it;
        * calls first seen here are adopted silently (later events on them work and they
          appear in live_calls()): they already happened."""
        try:
            return self._resync(channels, at)
        except Exception:
            self.stats.errors += 1
            _log_safely("tracker resync failed", server=self.server)
            return []

    def live_calls(self) -> list[LiveCall]:
        """Snapshot for agent re-sync after a websocket reconnect."""
        out: list[LiveCall] = []
        for call in sorted(self._calls.values(), key=lambda c: c.seq):
            caller = call.caller
            if call.ended or caller is None or not caller.alive:
                continue
            ringing = tuple(
                self._party(c)
                for c in self._call_chans(call)
                if c.ring_open and c.alive and c.endpoint
            )
            connected = self._connected(caller)
            callee = None
            state = "ringing"
            if len(connected) == 1:
                state = "up"
                callee = self._party(connected[0])
            out.append(
                LiveCall(
                    call_id=call.id,
                    caller=self._caller_party(call),
                    state=state,
                    ringing=ringing,
                    callee=callee,
                    queue=call.queue,
                    variables=self._caller_vars(call, None),
                )
            )
        return out

    def caller_channel(self, call_id: str) -> str | None:
        """The caller's channel name of a call in progress (what live_calls() would name), in
        O(1): the dialer's safe-harbor redirect needs it on the event loop."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            return None
        caller = call.caller
        if caller is None or not caller.alive:
            return None
        return caller.name

    # ------------------------------------------------------------------ helpers

    def _call_chans(self, call: _Call) -> list[_Chan]:
        return list(call.chans.values())

    def _is_endpoint(self, name: str) -> bool:
        if not name.startswith("Local/"):
            return True
        return self._endpoint_re is not None and self._endpoint_re.match(name) is not None

    def _time(self, m: Mapping[str, str], at: float) -> float:
        ts = m.get("Timestamp")
        if ts:
            try:
                return float(ts)
            except ValueError:
                pass
        return at

    def _get_call(self, cid: str) -> _Call:
        call = self._calls.get(cid)
        if call is None:
            self._seq += 1
            call = self._calls[cid] = _Call(cid, self._seq)
        return call

    def _adopt(self, m: Mapping[str, str], prefix: str = "") -> _Chan | None:
        """The channel a message talks about, created from its snapshot fields if we have
        never seen it (we started mid-call). None if the message names no channel or names one
        that already hung up."""
        uid = m.get(prefix + "Uniqueid")
        if not uid:
            return None
        ch = self._chans.get(uid)
        if ch is not None:
            return ch
        if uid in self._grave:
            return None
        name = m.get(prefix + "Channel")
        if not name:
            return None
        linkedid = m.get(prefix + "Linkedid") or uid
        call = self._get_call(linkedid)
        ch = _Chan(name, uid, linkedid, call, self._is_endpoint(name))
        call.chans[uid] = ch
        ch.number = _cid(m.get(prefix + "CallerIDNum"))
        ch.cname = _cid(m.get(prefix + "CallerIDName"))
        ch.exten = m.get(prefix + "Exten", "")
        ch.state = _int(m.get(prefix + "ChannelState"), _DOWN) or _DOWN
        self._chans[uid] = ch
        self._by_name[name] = ch
        if ch.local:
            peer_name = local_peer(name)
            if peer_name is not None:
                peer = self._by_name.get(peer_name)
                if peer is not None:
                    ch.peer = peer
                    peer.peer = ch
        if uid == linkedid:
            ch.device = _device(name)
            if self._pending:
                self._claim_new(ch)
            if ch.endpoint and call.caller is None and m.get("Event") != "Newchannel":
                # first seen mid-call: the first channel of a call is the one that started it
                call.caller = ch
        return ch

    def _party(self, ch: _Chan, exten: str | None = None) -> Party:
        ident = ch
        if ch.local and ch.peer is not None and ch.name.endswith(";2"):
            # a Local ;2 half declared an endpoint stands for what is behind the pair; the
            # caller ID the other side sees for it is the one of its ;1 half (its own is the
            # calling party's): e.g. an agent's "200N" after the connected-line update, or a
            # dialer customer's number once [dialer] set it on the originated ;1
            ident = ch.peer
        return Party(
            channel=ch.name,
            uniqueid=ch.uid,
            linkedid=ch.linkedid,
            number=ident.number,
            name=ident.cname,
            exten=ch.exten if exten is None else exten,
            # the presentation stays the channel's own: Asterisk reports the caller's
            # restricted presentation only there (trace 04)
            cid_calling_pres=ch.pres,
        )

    def _caller_party(self, call: _Call) -> Party:
        assert call.caller is not None
        return self._party(call.caller, call.caller_exten)

    def _caller_vars(self, call: _Call, src: _Chan | None) -> dict[str, str]:
        out: dict[str, str] = {}
        chans: list[_Chan | None] = []
        caller = call.caller
        if caller is not None:
            chans += [caller, caller.peer]
        if src is not None:
            chans += [src, src.peer]
        for c in chans:
            if c is not None and c.vars:
                for k, v in c.vars.items():
                    out.setdefault(k, v)
        return out

    def _target_of(self, dest: _Chan) -> _Chan | None:
        """The endpoint a dialled channel reaches: itself, or the other half of a Local pair
        declared an endpoint."""
        if dest.endpoint:
            return dest
        peer = dest.peer
        if peer is not None and peer.endpoint:
            return peer
        return None

    def _endpoint_of(self, ch: _Chan | None) -> _Chan | None:
        """The endpoint a (possibly Local) channel stands for, looking away from its own
        bridge: itself, the other half of its Local pair, or what that half is bridged with or
        was dialled by."""
        hops = 0
        while ch is not None and hops < 8:
            hops += 1
            if ch.endpoint:
                return ch
            p = ch.peer
            if p is None:
                return None
            if p.endpoint:
                return p
            nxt = None
            b = p.bridge
            if b is not None:
                for mem in b.members:
                    if mem is not p:
                        nxt = mem
                        break
            ch = nxt if nxt is not None else p.dialer
        return None

    def _connected(self, start: _Chan) -> list[_Chan]:
        """Endpoints talking with `start`: reachable over answered Local pairs and
        (non-holding) bridges without passing through another endpoint."""
        if not start.alive or start.state != _UP:
            return []
        found: list[_Chan] = []
        seen = {start}
        stack = [start]
        while stack:
            c = stack.pop()
            p = c.peer
            b = c.bridge
            nbrs: list[_Chan] = []
            if p is not None:
                nbrs.append(p)
            if b is not None and not b.holding:
                nbrs += b.members
            for n in nbrs:
                if n in seen:
                    continue
                seen.add(n)
                if not n.alive or n.state != _UP:
                    continue
                if n.endpoint:
                    found.append(n)
                else:
                    stack.append(n)
        return found

    def _maybe_caller(self, ch: _Chan) -> None:
        """An endpoint that was not dialled by anyone and is ringing in (Ring) or answered
        (an originated leg) starts its call when the call has no caller yet."""
        call = ch.call
        if call.caller is not None or not ch.endpoint or ch.dialer is not None:
            return
        peer = ch.peer
        if peer is not None and peer.dialer is not None:
            return
        if ch.state == _UP or (
            ch.state == _RING
            and not ch.originated
            and not (peer is not None and peer.originated)
            and not (ch.local and ch.name.endswith(";2"))
        ):
            call.caller = ch

    def _ring(
        self, call: _Call, target: _Chan, src: _Chan | None, at: float, m: Mapping[str, str]
    ) -> list[CallEvent]:
        out: list[CallEvent] = []
        if target.rung or target is call.caller or call.ended:
            return out
        caller = call.caller
        if caller is None:
            return out
        t = self._time(m, at)
        target.rung = True
        target.ring_open = True
        xfer = call.xfer
        if xfer is not None and xfer[1]:
            # a Redirect: the caller's side now dials from the exten it was sent to
            exten = (m.get("Exten") if src is not None else None) or xfer[2]
            if exten:
                call.caller_exten = exten
        cparty = self._caller_party(call)
        target.ring_caller = cparty
        tparty = self._party(target)
        if xfer is not None:
            transferer = xfer[0]
            call.xfer = None
            call.await_up = True
            out.append(
                Transfer(
                    call_id=call.id,
                    at=t,
                    server=self.server,
                    kind="blind",
                    caller=cparty,
                    transferer=None if transferer is None else self._party(transferer),
                    targets=(tparty,),
                )
            )
        out.append(
            Ringing(
                call_id=call.id,
                at=t,
                server=self.server,
                caller=cparty,
                targets=(tparty,),
                queue=call.in_queue,
                variables=self._caller_vars(call, src),
            )
        )
        return out

    def _end_ring(
        self, target: _Chan, reason: str, at: float, m: Mapping[str, str]
    ) -> list[CallEvent]:
        target.ring_open = False
        call = target.call
        caller = target.ring_caller
        if caller is None:
            return []
        return [
            RingingEnd(
                call_id=call.id,
                at=self._time(m, at),
                server=self.server,
                caller=caller,
                targets=(self._party(target),),
                reason=reason,
            )
        ]

    def _check_up(self, calls: list[_Call], at: float, m: Mapping[str, str]) -> list[CallEvent]:
        out: list[CallEvent] = []
        if len(calls) > 1:
            calls = sorted(set(calls), key=lambda c: c.seq)
        for call in calls:
            caller = call.caller
            if call.ended or caller is None:
                continue
            eps = self._connected(caller)
            if len(eps) != 1:
                continue
            x = eps[0]
            other = x.call
            if other is not call and other.caller is x and not other.ended:
                if other.seq < call.seq:
                    continue  # the older call claims this pair
                other.ended = True  # e.g. the picking phone's own call: absorbed, no hangup
            if x is call.up_with:
                if call.xfer is not None and call.xfer[1]:
                    call.xfer = None  # a Redirect that came back (or Local optimization)
                continue
            if call.up_with is not None and not call.await_up and call.xfer is None:
                call.callee = x  # a change we could not name; keep it silent
                continue
            t = self._time(m, at)
            if call.xfer is not None:
                transferer, redirect, exten = call.xfer
                call.xfer = None
                if redirect and exten:
                    call.caller_exten = exten
                out.append(
                    Transfer(
                        call_id=call.id,
                        at=t,
                        server=self.server,
                        kind="blind",
                        caller=self._caller_party(call),
                        transferer=None if transferer is None else self._party(transferer),
                        targets=(self._party(x),),
                    )
                )
            call.await_up = False
            call.up_with = x
            call.callee = x
            call.connected = True
            out.append(
                Up(
                    call_id=call.id,
                    at=t,
                    server=self.server,
                    caller=self._caller_party(call),
                    callee=self._party(x),
                )
            )
        return out

    # ------------------------------------------------------------------ handlers

    def _on_newchannel(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        uid = m.get("Uniqueid")
        if not uid or uid in self._chans:
            return None
        ch = self._adopt(m)
        if ch is None:
            return None
        self._maybe_caller(ch)
        return None

    def _on_newstate(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", "")) or self._adopt(m)
        if ch is None:
            return None
        state = _int(m.get("ChannelState"), None)
        if state is None:
            return None
        ch.state = state
        ch.seen = self.stats.messages
        call = ch.call
        if state == _UP:
            self._maybe_caller(ch)
            out: list[CallEvent] = []
            target = self._target_of(ch) if not ch.endpoint else ch
            if target is not None and not target.rung and self._ringable(target):
                out += self._ring(call, target, None, at, m)
            out += self._check_up([call], at, m)
            return out
        if state == _RINGING:
            target = ch if ch.endpoint else self._target_of(ch)
            if target is not None and not target.rung and self._ringable(target):
                return self._ring(call, target, None, at, m)
            return None
        if state == _RING:
            self._maybe_caller(ch)
        return None

    def _ringable(self, target: _Chan) -> bool:
        """A channel may ring for the caller only if it is not an originated leg (those
        report through originate_result) and not a caller itself."""
        if target.originated or target is target.call.caller:
            return False
        peer = target.peer
        if peer is not None and (peer.originated or (peer.endpoint and peer.rung)):
            return False  # both halves declared endpoints: the pair is one party
        return target.call.caller is not None

    def _on_newcallerid(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", ""))
        if ch is None:
            return None
        if ch.local and ch.endpoint and ch.state == _UP:
            # a Local half mirrors the far end's connected line into its caller ID once the
            # pair is connected; that is not the party changing identity
            return None
        ch.number = _cid(m.get("CallerIDNum"))
        ch.cname = _cid(m.get("CallerIDName"))
        pres = m.get("CID-CallingPres")
        if pres is not None:
            ch.pres = pres
        return None

    def _on_dialbegin(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        dest = self._adopt(m, "Dest")
        if dest is None:
            return None
        src = self._adopt(m) if m.get("Uniqueid") else None
        if src is None:
            if not m.get("Channel"):
                dest.originated = True  # Originate dials without a calling channel
            return None
        dest.dialer = src
        target = self._target_of(dest)
        call = src.call
        if call.caller is None:
            caller = self._endpoint_of(src)
            if caller is not None and caller is not target:
                call.caller = caller
        if target is None or target.rung:
            return None
        return self._ring(call, target, src, at, m)

    def _on_dialend(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        dest = self._chans.get(m.get("DestUniqueid", ""))
        if dest is None:
            dest = self._grave.get(m.get("DestUniqueid", ""))
            if dest is None:
                return None
        status = m.get("DialStatus", "")
        if dest.dial_status is None:
            dest.dial_status = status
        target = self._target_of(dest)
        if target is not None and target.ring_open:
            return self._end_ring(target, status.lower(), at, m)
        return None

    def _on_localbridge(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        one = self._adopt(m, "LocalOne")
        two = self._adopt(m, "LocalTwo")
        if one is None or two is None:
            return None
        one.peer = two
        two.peer = one
        return self._check_up([one.call], at, m)

    def _bridge(self, m: Mapping[str, str]) -> _Bridge | None:
        bid = m.get("BridgeUniqueid")
        if not bid:
            return None
        b = self._bridges.get(bid)
        if b is None:
            holding = m.get("BridgeTechnology") == "holding_bridge" or m.get("BridgeType") in (
                "holding",
                "parking",
            )
            b = self._bridges[bid] = _Bridge(bid, holding)
        return b

    def _on_bridgecreate(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        self._bridge(m)
        return None

    def _on_bridgeenter(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", "")) or self._adopt(m)
        b = self._bridge(m)
        if ch is None or b is None:
            return None
        st = _int(m.get("ChannelState"), None)
        if st is not None:
            ch.state = st
        ch.seen = self.stats.messages
        old = ch.bridge
        if old is not b:
            if old is not None and ch in old.members:
                old.members.remove(ch)
            b.members.append(ch)
            ch.bridge = b
        calls = [mem.call for mem in b.members]
        return self._check_up(calls, at, m)

    def _on_bridgeleave(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", ""))
        if ch is None:
            return None
        b = ch.bridge
        if b is None:
            return None
        if ch in b.members:
            b.members.remove(ch)
        ch.bridge = None
        ch.seen = self.stats.messages
        call = ch.call
        caller = call.caller
        callee = call.callee
        if (
            caller is not None
            and caller.alive
            and callee is not None
            and callee.alive
            and not call.ended
            and call.xfer is None
            and (ch is caller or ch.peer is caller)
        ):
            for mem in b.members:
                if mem.alive and (mem is callee or mem.peer is callee):
                    # the caller was moved out while its callee is still connected: a Redirect
                    call.xfer = (callee, True, m.get("Exten", ""))
                    break
        return None

    def _on_bridgemerge(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        to = self._bridges.get(m.get("ToBridgeUniqueid", ""))
        frm = self._bridges.get(m.get("FromBridgeUniqueid", ""))
        if to is None or frm is None or to is frm:
            return None
        for mem in frm.members:
            mem.bridge = to
            mem.seen = self.stats.messages
            to.members.append(mem)
        frm.members = []
        return self._check_up([mem.call for mem in to.members], at, m)

    def _on_bridgedestroy(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        b = self._bridges.pop(m.get("BridgeUniqueid", ""), None)
        if b is not None:
            for mem in b.members:
                if mem.bridge is b:
                    mem.bridge = None
        return None

    def _on_hangup(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        uid = m.get("Uniqueid", "")
        ch = self._chans.pop(uid, None)
        if ch is None:
            return None
        if self._by_name.get(ch.name) is ch:
            del self._by_name[ch.name]
        ch.alive = False
        ch.cause = _int(m.get("Cause"), None)
        b = ch.bridge
        if b is not None:
            if ch in b.members:
                b.members.remove(ch)
            ch.bridge = None
        self._grave[uid] = ch
        if len(self._grave) > GRAVEYARD_SIZE:
            self._grave.popitem(last=False)
        call = ch.call
        call.chans.pop(uid, None)
        out: list[CallEvent] = []
        if ch.ring_open:
            reason = _RING_END_BY_CAUSE.get(ch.cause or 0, "cancel")
            out += self._end_ring(ch, reason, at, m)
        if ch is call.caller and not call.ended:
            call.ended = True
            out.append(
                Hangup(
                    call_id=call.id,
                    at=self._time(m, at),
                    server=self.server,
                    caller=self._caller_party(call),
                    reason=hangup_reason(ch.cause, call.connected),
                    cause=ch.cause,
                )
            )
        if not call.chans:
            self._calls.pop(call.id, None)
        if self._pending and (ch.claimed or (ch.peer is not None and ch.peer.claimed)):
            out += self._settle_pending()
        return out

    def _on_varset(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", ""))
        if ch is None:
            return None
        name = m.get("Variable")
        if not name or name in _INTERNAL_VARS:
            return None
        if name[0] == "_":
            name = _strip_var(name)
            if name in _INTERNAL_VARS or not name:
                return None
        elif "(" in name:
            return None
        value = m.get("Value", "")
        d = ch.vars
        if d is None:
            d = ch.vars = {}
        d[name] = value
        return None

    def _on_queue(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", "")) or self._adopt(m)
        q = m.get("Queue")
        if ch is not None and q:
            ch.call.queue = ch.call.in_queue = q
        return None

    def _on_queue_leave(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", ""))
        if ch is not None:
            ch.call.in_queue = None
        return None

    def _on_abandon(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", "")) or self._grave.get(m.get("Uniqueid", ""))
        if ch is None:
            return None
        call = ch.call
        if call.caller is None:
            return None
        q = m.get("Queue", "") or call.queue or ""
        return [
            QueueAbandon(
                call_id=call.id,
                at=self._time(m, at),
                server=self.server,
                caller=self._caller_party(call),
                queue=q,
            )
        ]

    def _on_userevent(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        uid = m.get("Uniqueid", "")
        ch = self._chans.get(uid) or self._grave.get(uid) if uid else None
        caller = None
        call_id = m.get("Linkedid", "")
        if ch is not None:
            call_id = ch.call.id
            if ch.call.caller is not None:
                caller = self._caller_party(ch.call)
        fields = {k: v for k, v in m.items() if k not in _SNAPSHOT_KEYS}
        return [
            UserEvent(
                call_id=call_id,
                at=self._time(m, at),
                server=self.server,
                caller=caller,
                fields=fields,
            )
        ]

    def _on_cdr(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        name = m.get("Channel")
        disp = m.get("Disposition")
        if name and disp:
            self._cdr[name] = disp
            if len(self._cdr) > GRAVEYARD_SIZE:
                self._cdr.popitem(last=False)
        return None

    def _on_newexten(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        # the most frequent event: only an originated caller that has not dialled anything
        # yet ("s") learns the number it dials from here
        ch = self._chans.get(m.get("Uniqueid", ""))
        if ch is not None and ch.exten in ("s", "") and ch is ch.call.caller:
            exten = m.get("Exten")
            if exten and exten != "s":
                ch.exten = exten
        return None

    def _on_pickup(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        # the ringing phone was picked up by another one: its ringing ends here (Asterisk then
        # swaps the two channels' identities and hangs up the picked one)
        target = self._chan_by(m, "Target")
        if target is None:
            return None
        t = self._target_of(target)
        if t is not None and t.ring_open:
            return self._end_ring(t, "pickup", at, m)
        return None

    def _on_listed(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        uid = m.get("Uniqueid")
        if uid:
            if len(self._listed) >= 4 * GRAVEYARD_SIZE:
                self._listed.clear()  # lists nobody resynced with (a UI's CoreShowChannels)
            self._listed[uid] = self.stats.messages
        return None

    def _on_rename(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        ch = self._chans.get(m.get("Uniqueid", ""))
        new = m.get("Newname")
        if ch is None or not new:
            return None
        if self._by_name.get(ch.name) is ch:
            del self._by_name[ch.name]
        ch.name = new
        self._by_name[new] = ch
        return None

    # ------------------------------------------------------------------ transfers

    def _chan_by(self, m: Mapping[str, str], prefix: str) -> _Chan | None:
        uid = m.get(prefix + "Uniqueid")
        if uid:
            ch = self._chans.get(uid)
            if ch is not None:
                return ch
        name = m.get(prefix + "Channel")
        if name:
            return self._by_name.get(name)
        return None

    def _on_blindtransfer(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        if m.get("Result", "Success") != "Success":
            return None
        transferer_ch = self._chan_by(m, "Transferer")
        transferee_ch = self._chan_by(m, "Transferee")
        if transferee_ch is None and transferer_ch is not None:
            b = self._bridges.get(m.get("BridgeUniqueid", ""))
            if b is not None:
                for mem in b.members:
                    if mem is not transferer_ch:
                        transferee_ch = mem
                        break
        base = transferee_ch or transferer_ch
        if base is None:
            return None
        call = base.call
        transferer = self._endpoint_of(transferer_ch)
        transferee = self._endpoint_of(transferee_ch) if transferee_ch is not None else None
        if transferee is None:
            transferee = call.caller
            if transferee is transferer:
                transferee = call.callee
        if transferee is None:
            return None
        call.caller = transferee
        call.ended = False
        exten = m.get("Extension", "")
        call.xfer = (transferer, False, exten)
        if exten:
            call.caller_exten = exten
        return None

    def _on_attendedtransfer(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        if m.get("Result", "Success") != "Success":
            return None
        orig = self._chan_by(m, "OrigTransferer")
        second = self._chan_by(m, "SecondTransferer")
        transferee_ch = self._chan_by(m, "Transferee")
        target_ch = self._chan_by(m, "TransferTarget")
        base = transferee_ch or orig or second
        if base is None:
            return None
        call = base.call
        transferer = self._endpoint_of(orig) or self._endpoint_of(second)
        transferee = self._endpoint_of(transferee_ch) if transferee_ch is not None else None
        if transferee is None:
            transferee = call.caller if call.caller is not transferer else call.callee
        if transferee is None:
            return None
        targets: list[_Chan] = []
        target = self._endpoint_of(target_ch) if target_ch is not None else None
        if target is not None:
            targets.append(target)
        else:
            for e in self._connected(transferee):
                if e is not transferer:
                    targets.append(e)
            if not targets and second is not None and second.bridge is not None:
                for mem in second.bridge.members:
                    ep = self._endpoint_of(mem) if mem is not second else None
                    if ep is not None and ep is not transferer:
                        targets.append(ep)
        blonde = m.get("DestType") == "App" or any(t.state != _UP for t in targets)
        kind = "blonde" if blonde else "attended"
        t = self._time(m, at)
        # the consult call (when it had its own linkedid) ends with the transfer, silently
        for x in (orig, second, target_ch):
            if x is not None and x.call is not call and x.call.caller is not transferee:
                x.call.ended = True
        call.caller = transferee
        call.ended = False
        call.xfer = None
        exten = m.get("TransferTargetExten") or (target.exten if target is not None else "")
        if target_ch is not None and target_ch.exten and not m.get("TransferTargetExten"):
            exten = target_ch.exten
        if exten:
            call.caller_exten = exten
        if kind == "attended" and len(targets) == 1:
            call.up_with = targets[0]
            call.callee = targets[0]
            call.connected = True
            call.await_up = False
        else:
            call.await_up = True
        for tg in targets:
            if not tg.rung:
                tg.rung = True
        return [
            Transfer(
                call_id=call.id,
                at=t,
                server=self.server,
                kind=kind,
                caller=self._caller_party(call),
                transferer=None if transferer is None else self._party(transferer),
                targets=tuple(self._party(tg) for tg in targets),
            )
        ]

    # ------------------------------------------------------------------ originate

    def _on_originate_response(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        action_id = m.get("ActionID", "")
        if action_id in self._reported:
            return None  # one result per Originate, even if the response is seen twice
        self._reported[action_id] = None
        if len(self._reported) > GRAVEYARD_SIZE:
            self._reported.popitem(last=False)
        reason = _int(m.get("Reason"), -1)
        assert reason is not None
        uid = m.get("Uniqueid")
        if uid == "<unknown>":
            uid = None
        t = self._time(m, at)
        if m.get("Response") == "Success" or reason == 4:
            ch = (self._chans.get(uid) or self._grave.get(uid)) if uid else None
            variables: dict[str, str] = {}
            if ch is not None:
                ch.originated = True
                ch.claimed = False
                if ch.vars:
                    variables = dict(ch.vars)
            return [
                OriginateResult(
                    call_id=ch.call.id if ch is not None else (uid or ""),
                    at=t,
                    server=self.server,
                    action_id=action_id,
                    result="answered",
                    cause=None,
                    variables=variables,
                )
            ]
        dial = m.get("Channel", "")
        p = _PendingOriginate(
            action_id=action_id,
            reason=reason,
            at=t,
            device=_dial_device(dial),
            uid=uid,
            deadline=at + ORIGINATE_GRACE,
        )
        p.chan = self._find_originated(p)
        if p.chan is not None:
            p.chan.claimed = True
            if self._originate_done(p):
                return [self._resolve_originate(p)]
        self._pending.append(p)
        self._next_deadline = min(self._next_deadline, p.deadline)
        return None

    def _find_originated(self, p: _PendingOriginate) -> _Chan | None:
        if p.uid:
            return self._chans.get(p.uid) or self._grave.get(p.uid)
        live = [c for c in self._chans.values() if c.device == p.device and not c.claimed]
        if live:
            return live[0]
        for c in reversed(self._grave.values()):
            if c.device == p.device and not c.claimed:
                return c
        return None

    def _claim_new(self, ch: _Chan) -> None:
        dev = ch.device
        for p in self._pending:
            if p.chan is None and (p.uid == ch.uid or (p.uid is None and p.device == dev)):
                p.chan = ch
                ch.claimed = True
                return

    def _originate_done(self, p: _PendingOriginate) -> bool:
        c = p.chan
        if c is None:
            return False
        if c.alive:
            return False
        peer = c.peer
        if peer is None and c.local:
            pn = local_peer(c.name)
            if pn is not None:
                peer = self._by_name.get(pn)
        return peer is None or not peer.alive

    def _settle_pending(self) -> list[CallEvent]:
        out: list[CallEvent] = []
        keep: list[_PendingOriginate] = []
        for p in self._pending:
            if self._originate_done(p):
                out.append(self._resolve_originate(p))
            else:
                keep.append(p)
        self._pending = keep
        self._next_deadline = min((p.deadline for p in keep), default=float("inf"))
        return out

    def _expire(self, m: Mapping[str, str], at: float) -> list[CallEvent] | None:
        out: list[CallEvent] = []
        keep: list[_PendingOriginate] = []
        for p in self._pending:
            if at >= p.deadline or self._originate_done(p):
                out.append(self._resolve_originate(p))
            else:
                keep.append(p)
        self._pending = keep
        self._next_deadline = min((p.deadline for p in keep), default=float("inf"))
        return out or None

    def _resolve_originate(self, p: _PendingOriginate) -> OriginateResult:
        c = p.chan
        causes: list[int] = []
        dial_status = None
        cdr = None
        variables: dict[str, str] = {}
        call_id = p.uid or ""
        if c is not None:
            call_id = c.call.id
            peer = c.peer
            for x in (peer, c):
                if x is not None and x.cause:
                    causes.append(x.cause)
            dial_status = c.dial_status
            cdr = self._cdr.get(peer.name) if peer is not None else None
            cdr = cdr or self._cdr.get(c.name)
            if c.vars:
                variables = dict(c.vars)
        cause = causes[0] if causes else None
        result = _ORIGINATE_REASON.get(p.reason)
        if result is not None:
            if cause is None or cause == 16:
                cause = _CANONICAL_CAUSE[result]
        elif cause is not None and cause != 16:
            result = _CAUSE_RESULT.get(cause, "failed")
        else:
            result = _STATUS_RESULT.get(dial_status or "") or _STATUS_RESULT.get(cdr or "")
            if result is None or result == "answered":
                result = "failed"
        return OriginateResult(
            call_id=call_id,
            at=p.at,
            server=self.server,
            action_id=p.action_id,
            result=result,
            cause=cause,
            variables=variables,
        )

    # ------------------------------------------------------------------ resync

    def _resync(self, items: Sequence[Mapping[str, str]], at: float) -> list[CallEvent]:
        present: dict[str, Mapping[str, str]] = {}
        for it in items:
            uid = it.get("Uniqueid")
            if uid:
                present[uid] = it
        # calls we were reporting before the outage: what changed in them is told as the live
        # feed would have told it; calls first seen now are adopted silently (live_calls())
        known = {c for c in self._calls.values() if c.caller is not None and not c.ended}
        touched: dict[_Call, None] = {}
        out: list[CallEvent] = []
        # 1. channels that vanished while we were away
        gone_chans = [ch for uid, ch in self._chans.items() if uid not in present]
        for gone in gone_chans:
            uid = gone.uid
            del self._chans[uid]
            if self._by_name.get(gone.name) is gone:
                del self._by_name[gone.name]
            gone.alive = False
            if gone.bridge is not None and gone in gone.bridge.members:
                gone.bridge.members.remove(gone)
            gone.bridge = None
            self._grave[uid] = gone
            gone.call.chans.pop(uid, None)
            touched[gone.call] = None
        while len(self._grave) > GRAVEYARD_SIZE:
            self._grave.popitem(last=False)
        # their rings end first (no screen may stay "ringing"), then the calls they started
        for gone in gone_chans:
            if gone.ring_open:
                reason = "answer" if self._answered(gone) else "cancel"
                out += self._end_ring(gone, reason, at, _NO_MESSAGE)
        for gone in gone_chans:
            call = gone.call
            if gone is call.caller and not call.ended:
                call.ended = True
                out.append(
                    Hangup(
                        call_id=call.id,
                        at=at,
                        server=self.server,
                        caller=self._caller_party(call),
                        reason="completed" if call.connected else "cancelled",
                        cause=None,
                    )
                )
        for call in touched:
            if not call.chans and self._calls.get(call.id) is call:
                del self._calls[call.id]
        # 2. channels we do not know: adopt them, with their bridges and Local pairs; channels
        # we know: take their state and bridge from the snapshot, unless an event fed after
        # the channel's list item (so newer than it) changed them already
        listed, self._listed = self._listed, {}
        new: dict[_Chan, None] = {}
        for uid, it in present.items():
            ch = self._chans.get(uid)
            if ch is None:
                ch = self._adopt(it)
                if ch is None:
                    continue
                new[ch] = None
                touched[ch.call] = None
            else:
                if ch.seen > listed.get(uid, ch.seen):
                    continue
                st = _int(it.get("ChannelState"), None)
                if st is not None and st != ch.state and ch.state != _UP:
                    ch.state = st  # (an answered channel never rings again: Up stays)
                    touched[ch.call] = None
            bid = it.get("BridgeId")
            if bid is None:
                bid = it.get("BridgeID")  # the Status action's spelling
            if bid is None:
                continue  # a snapshot without the field says nothing about bridges
            old = ch.bridge
            if old is not None and old.id == bid:
                continue
            if old is not None and ch in old.members:
                old.members.remove(ch)
            ch.bridge = None
            if bid:
                b = self._bridges.get(bid)
                if b is None:
                    b = self._bridges[bid] = _Bridge(bid, False)
                b.members.append(ch)
                ch.bridge = b
            touched[ch.call] = None
        # bridges whose destruction we missed while away
        for bid in [b for b, br in self._bridges.items() if not br.members]:
            del self._bridges[bid]
        # 3. the calls that changed: known ones report what happened, new ones are adopted
        for call in sorted(touched, key=lambda c: c.seq):
            if call.ended or self._calls.get(call.id) is not call:
                continue
            chans = sorted(call.chans.values(), key=_uid_order)
            if call in known:
                out += self._resync_known(call, chans, new, at)
            elif any(c in new for c in chans):
                self._resync_adopted(call, chans)
        return out

    def _resync_known(
        self, call: _Call, chans: list[_Chan], new: Mapping[_Chan, None], at: float
    ) -> list[CallEvent]:
        """What the missed events of a call we were reporting would have said: parties dialled
        meanwhile ring, rings whose target is now answered end with "answer", and the call is
        `up` (once) if its caller now talks to one party."""
        out: list[CallEvent] = []
        caller = call.caller
        for c in chans:
            if (
                c.endpoint
                and c is not caller
                and not c.rung
                and (c in new or c.state in (_RINGING, _UP))
                and self._ringable(c)
            ):
                out += self._ring(call, c, None, at, _NO_MESSAGE)
        for c in chans:
            if c.ring_open and self._answered(c):
                out += self._end_ring(c, "answer", at, _NO_MESSAGE)
        out += self._check_up([call], at, _NO_MESSAGE)
        return out

    def _resync_adopted(self, call: _Call, chans: list[_Chan]) -> None:
        """A call first seen in a snapshot: its caller, what is up, what rings, without events
        (it already happened; live_calls() shows it)."""
        if call.caller is None:
            call.caller = self._guess_caller(call, chans)
        caller = call.caller
        if caller is None:
            return
        eps = self._connected(caller)
        if len(eps) == 1:
            call.up_with = call.callee = eps[0]
            call.connected = True
        cparty = self._caller_party(call)
        for c in chans:
            if c is caller or not c.endpoint or c in eps:
                continue
            if not c.rung:
                c.rung = True
                c.ring_caller = cparty
                c.ring_open = not self._answered(c)

    @staticmethod
    def _answered(target: _Chan) -> bool:
        """Evidence that a rung target answered: its dial ended ANSWER, or it is Up (both
        halves, for a Local pair: a ;2 half alone is Up while its ;1 still rings)."""
        peer = target.peer
        if target.dial_status == "ANSWER" or (peer is not None and peer.dial_status == "ANSWER"):
            return True
        return target.state == _UP and (peer is None or peer.state == _UP)

    def _guess_caller(self, call: _Call, chans: list[_Chan]) -> _Chan | None:
        """The endpoint that started a call seen first in a snapshot: the call's first channel
        (or the other half of its Local pair), else its first endpoint; one that is being
        dialled (Down, Ringing, a Local ;2 in Ring) is no caller yet: an originated leg
        becomes one only when it answers (as _maybe_caller decides live)."""
        first = self._chans.get(call.id)
        if first is not None:
            if first.endpoint:
                return first if _may_call(first) else None
            peer = first.peer
            if peer is not None and peer.endpoint:
                return peer if _may_call(peer) else None
        for c in chans:
            if c.endpoint and _may_call(c):
                return c
        return None


def _may_call(ch: _Chan) -> bool:
    return ch.state == _UP or (ch.state == _RING and not (ch.local and ch.name.endswith(";2")))


def _log_safely(msg: str, **kw: Any) -> None:
    """Log the exception being handled; a broken log sink must not break the ingest loop."""
    try:
        log.exception(msg, **kw)
    except Exception:  # nothing sensible is left to do
        pass


def _uid_order(ch: _Chan) -> tuple[int, str]:
    _, _, seq = ch.uid.rpartition(".")
    return (int(seq) if seq.isdigit() else 0, ch.uid)
