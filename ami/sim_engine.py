"""The call engine of the PBX simulator: channels, queues, dial outcomes and the exact event
sequences Asterisk 22 writes for them (see tests/traces and tests/ami/test_simulator_traces.py).

Time is virtual: every delay is scheduled on the engine's own clock (seconds since start) in a
heap, and one asyncio timer wakes the engine for the earliest entry. Callbacks run in (virtual
time, sequence) order, so a seed gives the same event sequence whatever the host's jitter, and
`time_scale` only changes how fast virtual time runs against the loop clock. Nothing here
creates a task per event or per call.

Events are appended as ready text to `out`; the server joins a batch once and writes the same
bytes to every client.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ami.settings import SimulatorSettings
from ami.sim_model import (
    AGENT,
    BUSY,
    CALL,
    CDR,
    DIALPLAN,
    DOWN,
    PRIV,
    RING,
    RINGING,
    UP,
    USER,
    Bridge,
    Call,
    Chan,
    Leg,
    Member,
    Queue,
    cause_text,
)

log = structlog.get_logger(__name__)

_PSTN = re.compile(r"\+?4930555(\d)(\d\d)$")
CID_PRES = "0 (Presentation Allowed, Not Screened)"

#: DialStatus and Cdr disposition for a customer leg that the network hangs up with a cause
_CAUSE_DIAL = {17: ("BUSY", "BUSY"), 34: ("CONGESTION", "CONGESTION")}
_CONGESTION_CAUSES = {34, 38, 41, 42}


class SimEngine:
    def __init__(self, settings: SimulatorSettings) -> None:
        self.s = settings
        self.scale = settings.time_scale
        self.rng = random.Random(settings.seed)
        self._idrng = random.Random(settings.seed ^ 0x5EED)
        self.epoch = settings.epoch if settings.epoch is not None else int(time.time())
        self.out: list[tuple[int, str]] = []
        self.ring_notify: list[tuple[str, str]] = []
        self.on_flush: Callable[[], None] = lambda: None
        self.on_originate_done: Callable[[Call, bool], None] = lambda call, ok: None
        self.queues: dict[str, Queue] = {}
        for name in settings.queues:
            self.queues[name] = Queue(
                name, strategy=settings.queue_strategies.get(name, "rrmemory")
            )
        self.members_by_if: dict[str, list[Member]] = {}
        #: device -> number of calls holding it (ringing or talking)
        self.busy: dict[str, int] = {}
        self.phone_modes: dict[str, str] = {}
        self.chans: dict[str, Chan] = {}
        self.chan_call: dict[str, Call] = {}
        self.calls: dict[str, Call] = {}
        self.globals: dict[str, str] = {}
        self._seq = 0x1A - 1
        self._uid = 0
        self._now = 0.0
        self._t0 = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._hseq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.events_written = 0
        self.step_errors = 0
        self.processed_calls = 0
        for q, entries in settings.static_members.items():
            for entry in entries:
                iface, _, name = entry.partition("|")
                self.queue_add(q, iface, name or iface, 0, False, "static")

    # ------------------------------------------------------------------ clock and scheduler

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._t0 = loop.time()
        if self.s.inbound_per_minute > 0 and self.queues:
            self.at(self.rng.expovariate(self.s.inbound_per_minute / 60.0), self._generate)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._loop = None

    @property
    def now(self) -> float:
        return self._now

    def sync(self) -> None:
        """Bring virtual time up to the loop clock before handling outside input; steps that
        were due by then run first, as they would have on a PBX."""
        if self._loop is not None:
            v = (self._loop.time() - self._t0) * self.scale
            self._run_until(v)
            if v > self._now:
                self._now = v

    def at(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        when = self._now + max(0.0, delay)
        self._hseq += 1
        heapq.heappush(self._heap, (when, self._hseq, fn, args))
        if self._heap[0][1] == self._hseq:
            self._arm()

    def _arm(self) -> None:
        loop = self._loop
        if loop is None or not self._heap:
            return
        when = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(self._t0 + when / self.scale, self._wake)

    def _wake(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        try:
            self._run_until((loop.time() - self._t0) * self.scale + 1e-9)
        finally:
            self.on_flush()
            self._arm()

    def _run_until(self, limit: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= limit:
            when, _, fn, args = heapq.heappop(heap)
            # virtual time is the step's own time, not the (jittery) moment it ran
            self._now = when
            try:
                fn(*args)
            except Exception:  # one broken step must not stop the PBX
                self.step_errors += 1
                log.exception("simulator step failed", step=getattr(fn, "__name__", "?"))

    # ------------------------------------------------------------------ ids and text

    def _uniqueid(self) -> str:
        self._uid += 1
        return f"{self.epoch + int(self._now)}.{self._uid}"

    def _bridge_id(self) -> str:
        h = f"{self._idrng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"

    def wall(self, at: float | None = None) -> int:
        return self.epoch + int(self._now if at is None else at)

    def _fmt_time(self, at: float | None) -> str:
        if at is None:
            return ""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.epoch + at))

    def emit(self, cls: int, text: str) -> None:
        self.out.append((cls, text))

    def ev(self, name: str, ch: Chan, extra: str = "", cls: int = CALL) -> None:
        self.out.append(
            (cls, f"Event: {name}\r\nPrivilege: {PRIV[cls]}\r\n{ch.block()}{extra}\r\n")
        )

    def ev2(self, name: str, ch: Chan, dest: Chan, extra: str = "", cls: int = CALL) -> None:
        self.out.append(
            (
                cls,
                f"Event: {name}\r\nPrivilege: {PRIV[cls]}\r\n{ch.block()}{dest.dest_block()}"
                f"{extra}\r\n",
            )
        )

    def ev_dest(self, name: str, dest: Chan, extra: str = "") -> None:
        self.out.append(
            (CALL, f"Event: {name}\r\nPrivilege: call,all\r\n{dest.dest_block()}{extra}\r\n")
        )

    def varset(self, ch: Chan, var: str, value: str) -> None:
        ch.variables[var] = value
        self.out.append(
            (
                DIALPLAN,
                f"Event: VarSet\r\nPrivilege: dialplan,all\r\n{ch.block()}"
                f"Variable: {var}\r\nValue: {value}\r\n\r\n",
            )
        )

    def newexten(self, ch: Chan, app: str, data: str, priority: int | None = None) -> None:
        if priority is not None:
            ch.priority = priority
        ch.app, ch.appdata = app, data
        self.out.append(
            (
                DIALPLAN,
                f"Event: Newexten\r\nPrivilege: dialplan,all\r\n{ch.block()}"
                f"Extension: {ch.exten}\r\nApplication: {app}\r\nAppData: {data}\r\n\r\n",
            )
        )

    def device_state(self, device: str, state: str) -> None:
        self.out.append(
            (
                CALL,
                f"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: {device}\r\n"
                f"State: {state}\r\n\r\n",
            )
        )

    def member_event(self, name: str, m: Member) -> None:
        self.out.append((AGENT, f"Event: {name}\r\nPrivilege: agent,all\r\n{m.event_fields()}\r\n"))

    def bridge_event(self, name: str, br: Bridge, ch: Chan | None = None) -> None:
        text = f"Event: {name}\r\nPrivilege: call,all\r\n{br.block()}"
        if ch is not None:
            text += ch.block()
        self.out.append((CALL, text + "\r\n"))

    def hangup_events(self, ch: Chan, cause: int) -> None:
        self.out.append(
            (
                CALL,
                f"Event: Hangup\r\nPrivilege: call,all\r\n{ch.block()}Cause: {cause}\r\n"
                f"Cause-txt: {cause_text(cause)}\r\n\r\n",
            )
        )
        self._drop_chan(ch)

    def cdr(
        self,
        ch: Chan,
        dest: str,
        disposition: str,
        start: float,
        answer: float | None,
        dst: str | None = None,
        app: str | None = None,
    ) -> None:
        end = self._now
        duration = int(end - start)
        billable = int(end - answer) if answer is not None else 0
        src = "" if ch.cid_num == "<unknown>" else ch.cid_num
        name = "" if ch.cid_name == "<unknown>" else ch.cid_name
        self.out.append(
            (
                CDR,
                "Event: Cdr\r\nPrivilege: cdr,all\r\nAccountCode: \r\n"
                f"Source: {src}\r\nDestination: {dst if dst is not None else ch.exten}\r\n"
                f'DestinationContext: {ch.context}\r\nCallerID: "{name}" <{src}>\r\n'
                f"Channel: {ch.name}\r\nDestinationChannel: {dest}\r\n"
                f"LastApplication: {app if app is not None else ch.app}\r\n"
                f"LastData: {ch.appdata if app is None else ''}\r\n"
                f"StartTime: {self._fmt_time(start)}\r\nAnswerTime: {self._fmt_time(answer)}\r\n"
                f"EndTime: {self._fmt_time(end)}\r\nDuration: {duration}\r\n"
                f"BillableSeconds: {billable}\r\nDisposition: {disposition}\r\n"
                f"AMAFlags: DOCUMENTATION\r\nUniqueID: {ch.uniqueid}\r\nUserField: \r\n\r\n",
            )
        )

    # ------------------------------------------------------------------ channels

    def new_chan(
        self,
        prefix: str,
        *,
        context: str,
        exten: str,
        state: int,
        role: str,
        linkedid: str | None = None,
        uniqueid: str | None = None,
        device: str = "",
    ) -> Chan:
        self._seq += 1
        uid = uniqueid or self._uniqueid()
        ch = Chan(
            name=f"{prefix}-{self._seq:08x}",
            uniqueid=uid,
            linkedid=linkedid or uid,
            context=context,
            exten=exten,
            created=self._now,
            role=role,
            state=state,
            device=device,
        )
        self.chans[ch.name] = ch
        self.ev("Newchannel", ch)
        return ch

    def _drop_chan(self, ch: Chan) -> None:
        ch.alive = False
        self.chans.pop(ch.name, None)
        self.chan_call.pop(ch.name, None)

    def _set_state(self, ch: Chan, state: int) -> None:
        ch.state = state
        self.ev("Newstate", ch)

    # ------------------------------------------------------------------ members and devices

    def queue_add(
        self, queue: str, iface: str, name: str, penalty: int, paused: bool, membership: str
    ) -> Member | str:
        q = self.queues.get(queue)
        if q is None:
            return "Unable to add interface to queue: No such queue"
        if q.member(iface) is not None:
            return "Unable to add interface: Already there"
        busy = iface in self.busy
        now = self.wall()
        m = Member(
            queue=queue,
            interface=iface,
            name=name or iface,
            penalty=penalty,
            paused=paused,
            login_time=now,
            last_pause=now if paused else 0,
            membership=membership,
        )
        others = self.members_by_if.get(iface)
        if others:
            m.in_call, m.ringing, m.status = others[0].in_call, others[0].ringing, others[0].status
        elif busy:
            m.status = 2
        q.members.append(m)
        self.members_by_if.setdefault(iface, []).append(m)
        if membership != "static":
            self.device_state(f"Queue:{queue}_pause_{iface}", "INUSE" if paused else "NOT_INUSE")
            self.member_event("QueueMemberAdded", m)
            self.at(0.0, self._queue_try, q)
        return m

    def queue_remove(self, queue: str, iface: str) -> str | None:
        q = self.queues.get(queue)
        if q is None:
            return "Unable to remove interface from queue: No such queue"
        m = q.member(iface)
        if m is None:
            return "Unable to remove interface: Not there"
        q.members.remove(m)
        lst = self.members_by_if.get(iface, [])
        if m in lst:
            lst.remove(m)
        if not lst:
            self.members_by_if.pop(iface, None)
        self.member_event("QueueMemberRemoved", m)
        return None

    def queue_pause(self, queue: str | None, iface: str, paused: bool, reason: str) -> str | None:
        targets = [
            m for m in self.members_by_if.get(iface, []) if queue is None or m.queue == queue
        ]
        if not targets:
            return "Interface not found"
        for m in targets:
            m.paused = paused
            m.reason = reason if paused else ""
            if paused:
                m.last_pause = self.wall()
            self.device_state(f"Queue:{m.queue}_pause_{iface}", "INUSE" if paused else "NOT_INUSE")
            self.member_event("QueueMemberPause", m)
            if not paused:
                self.at(0.0, self._queue_try, self.queues[m.queue])
        return None

    def queue_penalty(self, queue: str | None, iface: str, penalty: int) -> str | None:
        targets = [
            m for m in self.members_by_if.get(iface, []) if queue is None or m.queue == queue
        ]
        if not targets or penalty < 0:
            return "Invalid interface, queuename or penalty"
        for m in targets:
            m.penalty = penalty
            self.member_event("QueueMemberPenalty", m)
        return None

    def _device_ringing(self, call: Call, dev: str) -> None:
        if dev not in call.devices:
            call.devices.add(dev)
            self.busy[dev] = self.busy.get(dev, 0) + 1
        for m in self.members_by_if.get(dev, ()):
            m.ringing, m.status = True, 6
        self.device_state(dev, "RINGING")

    def _device_up(self, dev: str) -> None:
        for m in self.members_by_if.get(dev, ()):
            m.ringing, m.in_call, m.status = False, True, 2
            self.member_event("QueueMemberStatus", m)
        self.device_state(dev, "INUSE")

    def _device_free(self, call: Call, dev: str, took_call: bool = False) -> None:
        if dev not in call.devices:
            return
        call.devices.discard(dev)
        left = self.busy.get(dev, 1) - 1
        if left > 0:
            self.busy[dev] = left  # another call still rings or uses this phone
            return
        self.busy.pop(dev, None)
        queues = []
        for m in self.members_by_if.get(dev, ()):
            m.ringing, m.in_call, m.status = False, False, 1
            if took_call:
                m.calls_taken += 1
                m.last_call = self.wall()
            self.member_event("QueueMemberStatus", m)
            queues.append(self.queues[m.queue])
        self.device_state(dev, "NOT_INUSE")
        for q in queues:
            if q.waiting:
                self.at(0.0, self._queue_try, q)

    def phone_mode(self, dev: str) -> str:
        return self.phone_modes.get(dev, self.s.phone_mode)

    def is_device(self, target: str) -> str | None:
        """`1001` or `PJSIP/1001` -> `PJSIP/1001` when that device is known (a member or a
        phone given a mode)."""
        dev = target if "/" in target else f"PJSIP/{target}"
        if dev in self.members_by_if or dev in self.phone_modes:
            return dev
        return None

    def resolve(self, exten: str) -> tuple[str, str] | None:
        """Where a dialplan extension leads: ("queue", name) or ("device", interface)."""
        if exten in self.queues:
            return ("queue", exten)
        q = self.s.dids.get(exten)
        if q is not None and q in self.queues:
            return ("queue", q)
        dev = self.is_device(exten)
        if dev is not None:
            return ("device", dev)
        return None

    # ------------------------------------------------------------------ inbound calls

    def _generate(self) -> None:
        rate = self.s.inbound_per_minute / 60.0
        if rate <= 0:
            return
        self.at(self.rng.expovariate(rate), self._generate)
        numbers = self.s.caller_numbers
        if numbers:
            number = numbers[self.rng.randrange(len(numbers))]
        else:
            number = f"+4930{self.rng.randrange(10**7):07d}"
        queue = self.s.queues[self.rng.randrange(len(self.s.queues))]
        did = next((d for d, q in self.s.dids.items() if q == queue), "800")
        self.inbound_call(number, queue=queue, did=did)

    def inbound_call(
        self,
        number: str,
        *,
        queue: str = "support",
        name: str = "",
        did: str = "800",
        variables: Mapping[str, str] | None = None,
        hangup_after: float | None = None,
    ) -> str:
        ch = self.new_chan(
            f"PJSIP/{self.s.trunk}",
            context=self.s.inbound_context,
            exten=did,
            state=RING,
            role="caller",
        )
        call = Call(linkedid=ch.linkedid, caller=ch, started=self._now, kind="inbound")
        self.calls[call.linkedid] = call
        self.chan_call[ch.name] = call
        for k, v in (variables or {}).items():
            self.varset(ch, k, str(v))
        ch.cid_num = ch.con_num = number or "<unknown>"
        ch.cid_name = ch.con_name = name or "<unknown>"
        self.ev("NewCallerid", ch, f"CID-CallingPres: {CID_PRES}\r\n")
        self.ev("NewConnectedLine", ch)
        self.newexten(ch, "NoOp", f"Inbound call to {did}", 1)
        self.newexten(ch, "Answer", "", 2)
        ch.answered = self._now
        self._set_state(ch, UP)
        if hangup_after is not None:
            call.hangup_at = self._now + hangup_after
            self.at(hangup_after, self._talk_end, call)
        self.at(self.s.ivr_delay, self._route, call, queue or did)
        return call.linkedid

    def _route(self, call: Call, target: str) -> None:
        if call.done:
            return
        where = self.resolve(target)
        if where is None:
            self.hangup_caller(call, 1)
            return
        kind, name = where
        if kind == "queue":
            self._queue_prelude(call, self.queues[name], 3)
            self._queue_enter(call, self.queues[name], None)
        else:
            self._dial_device(call, name)

    # ------------------------------------------------------------------ queue

    def _queue_prelude(self, call: Call, q: Queue, priority: int | None = None) -> None:
        ch = call.caller
        self.newexten(ch, "Queue", f"{q.name},t,,,{int(self.s.patience)}", priority)
        for var in (
            "ANSWEREDTIME",
            "ANSWEREDTIME_MS",
            "DIALEDTIME",
            "DIALEDTIME_MS",
            "QUEUEWAIT",
            "QUEUEWAIT_MS",
        ):
            self.varset(ch, var, "")

    def _queue_enter(self, call: Call, q: Queue, deadline: float | None) -> None:
        ch = call.caller
        q.waiting.append(call)
        call.queue = q
        call.queue_joined = self._now
        call.legs = []
        call.agent = None
        call.retry_pending = False
        call.generation += 1
        self.ev(
            "QueueCallerJoin",
            ch,
            f"Queue: {q.name}\r\nPosition: {len(q.waiting)}\r\nCount: {len(q.waiting)}\r\n",
            AGENT,
        )
        call.queue_deadline = deadline
        wait = deadline if deadline is not None else self.s.patience
        self.at(wait, self._queue_timeout, call, call.generation)
        self._queue_try(q)

    def _available(self, m: Member) -> bool:
        return not m.paused and m.interface not in self.busy

    def _queue_try(self, q: Queue) -> None:
        if not q.waiting or not q.members:
            return
        for call in list(q.waiting):
            if call.legs or call.retry_pending or call.done:
                continue
            members = q.members
            n = len(members)
            if q.strategy == "ringall":
                chosen = [m for m in members if self._available(m)]
                if not chosen:
                    return
                for m in chosen:
                    self._ring(call, m.interface, m)
            else:
                start = q.rr_next % n
                pick = None
                for i in range(n):
                    m = members[(start + i) % n]
                    if self._available(m):
                        pick = m
                        q.rr_next = (start + i + 1) % n
                        break
                if pick is None:
                    return
                self._ring(call, pick.interface, pick)

    def _queue_position(self, call: Call) -> tuple[int, int]:
        q = call.queue
        assert q is not None
        pos = q.waiting.index(call) + 1 if call in q.waiting else 1
        if call in q.waiting:
            q.waiting.remove(call)
        return pos, len(q.waiting)

    def _queue_timeout(self, call: Call, generation: int) -> None:
        if call.done or call.generation != generation or call.agent is not None:
            return
        q = call.queue
        if q is None or call not in q.waiting:
            return
        if call.queue_deadline is None:
            # the caller's patience ran out: they hang up while waiting
            self.hangup_caller(call, 16)
            return
        # a dialer deadline: Queue() returns (TIMEOUT), the dialplan plays safe-harbor
        self._cancel_legs(call, "CANCEL", 0)
        pos, count = self._queue_position(call)
        ch = call.caller
        self.ev(
            "QueueCallerLeave",
            ch,
            f"Queue: {q.name}\r\nPosition: {pos}\r\nCount: {count}\r\n",
            AGENT,
        )
        call.queue = None
        self.varset(ch, "QUEUESTATUS", "TIMEOUT")
        camp = ch.variables.get("__CAMPAIGN", ch.variables.get("CAMPAIGN", ""))
        lead = ch.variables.get("__LEAD", ch.variables.get("LEAD", ""))
        ch.exten = "safe-harbor"
        self.newexten(ch, "UserEvent", f"CtiAbandoned,Campaign: {camp},Lead: {lead}", 1)
        self.emit(
            USER,
            f"Event: UserEvent\r\nPrivilege: user,all\r\n{ch.block()}UserEvent: CtiAbandoned\r\n"
            f"Campaign: {camp}\r\nLead: {lead}\r\n\r\n",
        )
        self.newexten(ch, "Playback", "cti-safe-harbor", 2)
        self.at(self.s.safe_harbor_seconds, self._safe_harbor_done, call)

    def _safe_harbor_done(self, call: Call) -> None:
        if not call.done:
            self.newexten(call.caller, "Hangup", "16", 3)
            self.hangup_caller(call, 16)

    # ------------------------------------------------------------------ ringing agents

    def _ring(self, call: Call, dev: str, member: Member | None) -> None:
        caller = call.caller
        ext = dev.split("/", 1)[1] if "/" in dev else dev
        a = self.new_chan(
            dev,
            context=self.s.agent_context,
            exten=ext,
            state=DOWN,
            role="agent",
            linkedid=call.linkedid,
            device=dev,
        )
        self.chan_call[a.name] = call
        self._device_ringing(call, dev)
        a.cid_num, a.cid_name = caller.cid_num, caller.cid_name
        app = "AppQueue" if member is not None else "AppDial"
        self.newexten(a, app, "(Outgoing Line)")
        self.ev("NewCallerid", a, f"CID-CallingPres: {CID_PRES}\r\n")
        for k, v in list(caller.variables.items()):
            if k.startswith("_"):
                self.varset(a, k, v)
        self.varset(a, "DIALEDPEERNUMBER", ext)
        qinfo = ""
        if member is not None:
            qinfo = (
                f"Queue: {member.queue}\r\nInterface: {member.interface}\r\n"
                f"MemberName: {member.name}\r\n"
            )
            self.ev2("AgentCalled", caller, a, qinfo, AGENT)
        self.ev2("DialBegin", caller, a, f"DialString: {ext}\r\n")
        a.exten = caller.exten
        a.con_num, a.con_name = caller.cid_num, caller.cid_name
        self._set_state(a, RINGING)
        self.newexten(a, app, "(Outgoing Line)")
        self.ev("NewConnectedLine", a)
        qms_first = call.kind == "outbound"
        if qms_first:
            self._ring_status(dev)
        self.ev2("DialState", caller, a, "DialStatus: RINGING\r\n")
        if not qms_first:
            self._ring_status(dev)
        leg = Leg(a, member, self._now)
        call.legs.append(leg)
        self.ring_notify.append((call.linkedid, dev))
        if self.phone_mode(dev) == "auto":
            self.at(self.s.agent_answer_after, self._leg_answer, call, leg)
        timeout = self.s.ring_timeout if member is not None else self.s.dial_timeout
        self.at(timeout, self._leg_timeout, call, leg)

    def _ring_status(self, dev: str) -> None:
        for m in self.members_by_if.get(dev, ()):
            self.member_event("QueueMemberStatus", m)

    def _dial_device(self, call: Call, dev: str) -> None:
        self.newexten(call.caller, "Dial", f"{dev},{int(self.s.dial_timeout)}")
        call.queue = None
        call.legs = []
        call.agent = None
        self._ring(call, dev, None)

    def _leg_timeout(self, call: Call, leg: Leg) -> None:
        if leg.state != "ringing" or call.done:
            return
        self._leg_gone(call, leg, 0, "NOANSWER")

    def _leg_gone(self, call: Call, leg: Leg, cause: int, status: str) -> None:
        """A ringing agent leg stops ringing without answering (timeout or rejected)."""
        caller, a, member = call.caller, leg.chan, leg.member
        leg.state = "gone"
        if member is not None:
            ring_ms = int((self._now - leg.started) * 1000)
            self.ev2(
                "AgentRingNoAnswer",
                caller,
                a,
                f"Queue: {member.queue}\r\nInterface: {member.interface}\r\n"
                f"MemberName: {member.name}\r\nRingTime: {ring_ms}\r\n",
                AGENT,
            )
        self.ev2("DialEnd", caller, a, f"DialStatus: {status}\r\n")
        if member is not None:
            self.ev2("DialEnd", caller, a, "DialStatus: CANCEL\r\n")
        self.hangup_events(a, cause)
        call.cdrs.append((a.name, "NO ANSWER", None, leg.started))
        if leg in call.legs:
            call.legs.remove(leg)
        self._device_free(call, a.device)
        if call.legs:
            return
        if call.queue is not None and call in call.queue.waiting:
            call.retry_pending = True
            self.at(self.s.queue_retry, self._retry, call, call.generation)
        elif call.queue is None:
            # a direct Dial gave up: the dialplan continues and hangs the caller up
            self.hangup_caller(call, 16)

    def _retry(self, call: Call, generation: int) -> None:
        if call.done or call.generation != generation:
            return
        call.retry_pending = False
        if call.queue is not None:
            self._queue_try(call.queue)

    def _cancel_legs(self, call: Call, status: str, cause: int, keep: Leg | None = None) -> None:
        for other in list(call.legs):
            if other is keep or other.state != "ringing":
                continue
            other.state = "gone"
            self.ev2("DialEnd", call.caller, other.chan, f"DialStatus: {status}\r\n")
            if status == "CANCEL" and other.member is not None and keep is None:
                self.ev2("DialEnd", call.caller, other.chan, "DialStatus: CANCEL\r\n")
            self.hangup_events(other.chan, cause)
            call.cdrs.append((other.chan.name, "NO ANSWER", None, other.started))
            call.legs.remove(other)
            self._device_free(call, other.chan.device)

    def answer_device(self, dev: str) -> bool:
        for call in list(self.calls.values()):
            for leg in call.legs:
                if leg.state == "ringing" and leg.chan.device == dev:
                    self._leg_answer(call, leg)
                    return True
            if call.kind == "click" and call.agent is None and call.caller.device == dev:
                if call.caller.state == RINGING:
                    self._click_answer(call)
                    return True
        return False

    def _leg_answer(self, call: Call, leg: Leg) -> None:
        if leg.state != "ringing" or call.done:
            return
        caller, a, member = call.caller, leg.chan, leg.member
        ext = a.device.split("/", 1)[1]
        agent_name = member.name if member is not None else ext
        caller.con_num, caller.con_name = ext, agent_name
        self.ev("NewConnectedLine", caller)
        a.answered = self._now
        a.cid_num, a.cid_name = ext, agent_name
        a.con_num, a.con_name = caller.cid_num, caller.cid_name
        self._set_state(a, UP)
        self.ev("NewCallerid", a, f"CID-CallingPres: {CID_PRES}\r\n")
        self.ev2("DialEnd", caller, a, "DialStatus: ANSWER\r\n")
        leg.state = "up"
        call.agent = leg
        self._cancel_legs(call, "CANCEL", 26, keep=leg)
        call.legs = [leg]
        q = call.queue
        if q is not None and member is not None:
            pos, count = self._queue_position(call)
            hold = int(self._now - call.queue_joined)
            self.ev(
                "QueueCallerLeave",
                caller,
                f"Queue: {q.name}\r\nPosition: {pos}\r\nCount: {count}\r\n",
                AGENT,
            )
            self.varset(caller, "QUEUEPOSITION", str(pos))
            self.varset(caller, "QUEUEWAIT", str(hold))
            self.varset(caller, "QUEUEWAIT_MS", str(int((self._now - call.queue_joined) * 1000)))
            self.ev2(
                "AgentConnect",
                caller,
                a,
                f"Queue: {q.name}\r\nInterface: {member.interface}\r\nMemberName: {member.name}\r\n"
                f"HoldTime: {hold}\r\nRingTime: {int(self._now - leg.started)}\r\n",
                AGENT,
            )
            q.holdtime_total += self._now - call.queue_joined
        self._bridge(call, a, caller)
        self._device_up(a.device)
        call.connected_at = self._now
        call.cdrs.append((a.name, "ANSWERED", self._now, leg.started))
        self._schedule_talk(call)

    def _bridge(self, call: Call, first: Chan, second: Chan) -> None:
        br = Bridge(self._bridge_id())
        self.bridge_event("BridgeCreate", br)
        for ch in (first, second):
            br.channels.append(ch)
            ch.bridge = br
            self.bridge_event("BridgeEnter", br, ch)
        if second.variables.get("BLINDTRANSFER"):
            self.varset(second, "BLINDTRANSFER", "")  # cleared when the transferee is bridged
        self.varset(first, "BRIDGEPEER", second.name)
        self.varset(second, "BRIDGEPEER", first.name)

    def _schedule_talk(self, call: Call) -> None:
        if call.hangup_at is not None:
            self.at(max(0.0, call.hangup_at - self._now), self._talk_end, call)
            return
        talk = call.talk
        if talk is None:
            talk = self.rng.uniform(self.s.talk_min, max(self.s.talk_min, self.s.talk_max))
        call.hangup_at = self._now + talk
        self.at(talk, self._talk_end, call)

    def _talk_end(self, call: Call) -> None:
        if call.done or call.hangup_at is None or call.hangup_at > self._now + 1e-6:
            return
        if call.kind == "click" and call.customer is not None:
            self.hangup_peer(call, 16)
        else:
            self.hangup_caller(call, 16)

    # ------------------------------------------------------------------ hangups

    def _peer(self, call: Call) -> Chan | None:
        if call.kind == "click":
            return (
                call.customer
                if call.customer is not None and call.customer.alive
                else (call.agent.chan if call.agent is not None else None)
            )
        return call.agent.chan if call.agent is not None and call.agent.state == "up" else None

    def hangup_caller(self, call: Call, cause: int) -> None:
        """The call's originating party hangs up (or the dialplan hangs it up)."""
        if call.done:
            return
        ch = call.caller
        peer = self._peer(call)
        if peer is not None and ch.bridge is not None:
            if call.kind == "outbound":
                self._hangup_connected_outbound(call, peer, cause)
            else:
                self._hangup_connected_inbound(call, peer, cause)
            return
        if call.queue is not None and call in call.queue.waiting:
            self._abandon(call, cause)
            return
        if call.kind in ("outbound", "click") and ch.answered is None:
            self._originate_failed(call, "hangup", cause)
            return
        # ringing a device directly, or still in the IVR
        self.ev("HangupRequest", ch, f"Cause: {cause}\r\n")
        self._cancel_legs(call, "CANCEL", 0)
        self._caller_cdrs(call)
        self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
        self.hangup_events(ch, cause)
        self._finish(call)

    def _caller_cdrs(self, call: Call) -> None:
        ch = call.caller
        if not call.cdrs:
            self.cdr(
                ch,
                "",
                "ANSWERED" if ch.answered is not None else "NO ANSWER",
                call.started,
                ch.answered,
            )
        for dest, disp, answered, _start in call.cdrs:
            self.cdr(ch, dest, disp, call.started, answered if answered is not None else None)
        call.cdrs.clear()

    def _agent_complete(self, call: Call, reason: str, with_dest: bool = True) -> None:
        leg = call.agent
        if leg is None or leg.member is None:
            return
        m = leg.member
        hold = int(call.connected_at - call.queue_joined)
        talk = int(self._now - call.connected_at)
        text = (
            f"Queue: {m.queue}\r\nInterface: {m.interface}\r\nMemberName: {m.name}\r\n"
            f"HoldTime: {hold}\r\nTalkTime: {talk}\r\nReason: {reason}\r\n"
        )
        q = self.queues.get(m.queue)
        if q is not None:
            q.completed += 1
            q.talktime_total += self._now - call.connected_at
        if with_dest:
            self.ev2("AgentComplete", call.caller, leg.chan, text, AGENT)
        else:
            self.ev("AgentComplete", call.caller, text, AGENT)

    def _owed_completes(self, call: Call) -> None:
        for queue, iface, name, hold, start in call.owed_complete:
            self.ev(
                "AgentComplete",
                call.caller,
                f"Queue: {queue}\r\nInterface: {iface}\r\nMemberName: {name}\r\n"
                f"HoldTime: {hold}\r\nTalkTime: {int(self._now - start)}\r\nReason: caller\r\n",
                AGENT,
            )
        call.owed_complete.clear()

    def _final_vars(self, call: Call) -> None:
        ch = call.caller
        since_answer = self._now - call.connected_at if call.connected_at else 0.0
        since_dial = self._now - (call.queue_joined or call.started)
        self.varset(ch, "ANSWEREDTIME", str(int(since_answer)))
        self.varset(ch, "ANSWEREDTIME_MS", str(int(since_answer * 1000)))
        self.varset(ch, "DIALEDTIME", str(int(since_dial)))
        self.varset(ch, "DIALEDTIME_MS", str(int(since_dial * 1000)))

    def _transfer_vars(self, call: Call) -> None:
        """What the Queue() that ends by a transfer leaves on the caller (traces 09a/09b)."""
        ch = call.caller
        since_dial = self._now - (call.queue_joined or call.started)
        self.varset(ch, "DIALEDTIME", str(int(since_dial)))
        self.varset(ch, "DIALEDTIME_MS", str(int(since_dial * 1000)))
        self.varset(ch, "ANSWEREDTIME", "0")
        self.varset(ch, "ANSWEREDTIME_MS", "0")

    def _hangup_connected_inbound(self, call: Call, peer: Chan, cause: int) -> None:
        """Order of trace 01: the caller hangs up while talking to an agent."""
        ch = call.caller
        br = ch.bridge
        assert br is not None
        self.ev("HangupRequest", ch, f"Cause: {cause}\r\n")
        self._caller_cdrs(call)
        self._agent_complete(call, "caller")
        self._owed_completes(call)
        self.varset(ch, "BRIDGEPEER", "")
        self.varset(peer, "BRIDGEPEER", "")
        br.channels.remove(ch)
        ch.bridge = None
        self.bridge_event("BridgeLeave", br, ch)
        self._final_vars(call)
        self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
        self.hangup_events(ch, cause)
        br.channels.remove(peer)
        peer.bridge = None
        self.bridge_event("BridgeLeave", br, peer)
        self.hangup_events(peer, 16)
        self.bridge_event("BridgeDestroy", br)
        if peer.device:
            self._device_free(
                call,
                peer.device,
                took_call=call.agent is not None and call.agent.member is not None,
            )
        self._finish(call)

    def _hangup_connected_outbound(self, call: Call, peer: Chan, cause: int) -> None:
        """Order of trace 05: the dialled customer hangs up while talking to an agent."""
        ch = call.caller
        br = ch.bridge
        assert br is not None
        self.ev("HangupRequest", ch, f"Cause: {cause}\r\n")
        self._agent_complete(call, "caller")
        self._owed_completes(call)
        self.varset(ch, "BRIDGEPEER", "")
        self.varset(peer, "BRIDGEPEER", "")
        self._caller_cdrs(call)
        br.channels.remove(ch)
        ch.bridge = None
        self.bridge_event("BridgeLeave", br, ch)
        self._final_vars(call)
        self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
        self.hangup_events(ch, cause)
        br.channels.remove(peer)
        peer.bridge = None
        self.bridge_event("BridgeLeave", br, peer)
        self.bridge_event("BridgeDestroy", br)
        self.hangup_events(peer, 16)
        if peer.device:
            self._device_free(
                call,
                peer.device,
                took_call=call.agent is not None and call.agent.member is not None,
            )
        self._finish(call)

    def hangup_peer(self, call: Call, cause: int) -> None:
        """The answering side (agent, or the customer of a click-to-call) hangs up first:
        order of trace 14."""
        if call.done:
            return
        ch = call.caller
        peer = self._peer(call)
        br = ch.bridge
        if peer is None or br is None:
            self.hangup_caller(call, cause)
            return
        self.ev("HangupRequest", peer, f"Cause: {cause}\r\n")
        self.varset(peer, "BRIDGEPEER", "")
        self.varset(ch, "BRIDGEPEER", "")
        br.channels.remove(peer)
        peer.bridge = None
        self.bridge_event("BridgeLeave", br, peer)
        self.hangup_events(peer, cause)
        self._caller_cdrs(call)
        if peer.device:
            self._device_free(
                call,
                peer.device,
                took_call=call.agent is not None and call.agent.member is not None,
            )
        br.channels.remove(ch)
        ch.bridge = None
        self.bridge_event("BridgeLeave", br, ch)
        self.bridge_event("BridgeDestroy", br)
        if call.kind != "click":
            self._final_vars(call)
        self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
        self.hangup_events(ch, 16)
        if call.kind == "click" and ch.device:
            self._device_free(call, ch.device)
        self._agent_complete(call, "agent", with_dest=False)
        self._owed_completes(call)
        self._finish(call)

    def _abandon(self, call: Call, cause: int) -> None:
        """Order of trace 03: the caller hangs up while waiting in the queue."""
        ch = call.caller
        q = call.queue
        assert q is not None
        self.ev("HangupRequest", ch, f"Cause: {cause}\r\n")
        self._cancel_legs(call, "CANCEL", 0)
        wait = self._now - call.queue_joined
        self.varset(ch, "QUEUEWAIT", str(int(wait)))
        self.varset(ch, "QUEUEWAIT_MS", str(int(wait * 1000)))
        self.varset(ch, "DIALEDTIME", str(int(wait)))
        self.varset(ch, "DIALEDTIME_MS", str(int(wait * 1000)))
        self.varset(ch, "ANSWEREDTIME", "0")
        self.varset(ch, "ANSWEREDTIME_MS", "0")
        self.varset(ch, "ABANDONED", "TRUE")
        pos = q.waiting.index(call) + 1
        self.ev(
            "QueueCallerAbandon",
            ch,
            f"Queue: {q.name}\r\nPosition: {pos}\r\nOriginalPosition: {pos}\r\n"
            f"HoldTime: {int(wait)}\r\n",
            AGENT,
        )
        q.abandoned += 1
        self._caller_cdrs(call)
        pos, count = self._queue_position(call)
        self.ev(
            "QueueCallerLeave",
            ch,
            f"Queue: {q.name}\r\nPosition: {pos}\r\nCount: {count}\r\n",
            AGENT,
        )
        self.varset(ch, "QUEUEPOSITION", str(pos))
        self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
        self.hangup_events(ch, cause)
        self._finish(call)

    def _finish(self, call: Call) -> None:
        self._hangup_leftovers(call)
        for dev in list(call.devices):
            self._device_free(call, dev)
        call.done = True
        call.generation += 1
        if call.queue is not None and call in call.queue.waiting:
            call.queue.waiting.remove(call)
        for leg in call.legs:
            if leg.chan.alive:
                self._drop_chan(leg.chan)
        for ch in (call.caller, call.customer):
            if ch is not None and ch.alive:
                self._drop_chan(ch)
        self.calls.pop(call.linkedid, None)
        self.processed_calls += 1

    def _hangup_leftovers(self, call: Call) -> None:
        """Safety net: a channel of a finished call that no flow hung up still gets its Hangup,
        so that no client keeps a channel forever."""
        for leg in call.legs:
            if leg.chan.alive:
                if leg.state == "ringing":
                    self.ev2("DialEnd", call.caller, leg.chan, "DialStatus: CANCEL\r\n")
                self.hangup_events(leg.chan, 0)
        for ch in (call.customer, call.caller):
            if ch is not None and ch.alive:
                self.hangup_events(ch, 16)

    def hangup_channel(self, name: str, cause: int) -> bool:
        """AMI Hangup: the named channel goes away, the other side follows as Asterisk does."""
        call = self.chan_call.get(name)
        ch = self.chans.get(name)
        if call is None or ch is None or call.done:
            return False
        if ch is call.caller:
            if call.kind == "click" and ch.bridge is None and call.customer is not None:
                self._click_caller_gone(call, cause)
            else:
                self.hangup_caller(call, cause)
            return True
        if call.customer is ch:
            if ch.bridge is not None:
                self.hangup_peer(call, cause)
            else:
                self._customer_failed(call, "hangup", cause)
            return True
        for leg in list(call.legs):
            if leg.chan is ch:
                if leg.state == "ringing":
                    self._leg_gone(
                        call,
                        leg,
                        cause,
                        "NOANSWER" if cause in (0, 19) else "BUSY" if cause == 17 else "CANCEL",
                    )
                else:
                    self.hangup_peer(call, cause)
                return True
        return False

    def hangup_call(self, linkedid: str, cause: int) -> bool:
        call = self.calls.get(linkedid)
        if call is None or call.done:
            return False
        if call.kind == "click" and call.customer is not None:
            if call.customer.bridge is not None:
                self.hangup_peer(call, cause)
            else:
                self._customer_failed(call, "hangup", cause)
        else:
            self.hangup_caller(call, cause)
        return True

    # ------------------------------------------------------------------ transfers

    def redirect(self, name: str, context: str, exten: str) -> str | None:
        """AMI Redirect of a call's caller channel to a queue or device (trace 09a)."""
        call = self.chan_call.get(name)
        ch = self.chans.get(name)
        if call is None or ch is None or call.done:
            return f"Channel does not exist: {name}"
        if ch is not call.caller:
            return "Redirect of this channel is not simulated (redirect the caller's channel)"
        where = self.resolve(exten)
        peer = self._peer(call)
        br = ch.bridge
        ch.context, ch.exten = context or ch.context, exten
        if peer is not None and br is not None:
            self.varset(ch, "BRIDGEPEER", "")
            self.varset(peer, "BRIDGEPEER", "")
            br.channels.remove(ch)
            ch.bridge = None
            self.bridge_event("BridgeLeave", br, ch)
            self._transfer_vars(call)
            old = call.agent
            self._move_to(call, where)
            br.channels.remove(peer)
            peer.bridge = None
            self.bridge_event("BridgeLeave", br, peer)
            self.bridge_event("BridgeDestroy", br)
            self.hangup_events(peer, 16)
            if old is not None and old.member is not None:
                m = old.member
                call.owed_complete.append(
                    (
                        m.queue,
                        m.interface,
                        m.name,
                        int(call.connected_at - call.queue_joined),
                        call.connected_at,
                    )
                )
            if peer.device:
                self._device_free(
                    call, peer.device, took_call=old is not None and old.member is not None
                )
            return None
        # not connected: leave whatever it waits in and go
        if call.queue is not None and call in call.queue.waiting:
            q = call.queue
            self._cancel_legs(call, "CANCEL", 0)
            pos, count = self._queue_position(call)
            self.ev(
                "QueueCallerLeave",
                ch,
                f"Queue: {q.name}\r\nPosition: {pos}\r\nCount: {count}\r\n",
                AGENT,
            )
        else:
            self._cancel_legs(call, "CANCEL", 0)
        self._move_to(call, where)
        return None

    def _move_to(self, call: Call, where: tuple[str, str] | None) -> None:
        cust = call.customer
        if cust is not None:
            # a click-to-call whose agent channel moves on: the customer leg is dropped
            if cust.alive and cust.bridge is None:
                self.ev2("DialEnd", call.caller, cust, "DialStatus: CANCEL\r\n")
                self.hangup_events(cust, 0)
            call.customer = None
        if call.kind == "click":
            call.kind = "inbound"
        call.queue = None
        call.agent = None
        call.legs = []
        call.generation += 1
        if where is None:
            self.at(0.0, self.hangup_caller, call, 1)
        elif where[0] == "queue":
            q = self.queues[where[1]]
            self._queue_prelude(call, q, 1)
            self._queue_enter(call, q, None)
        else:
            self._dial_device(call, where[1])

    def blind_transfer(self, name: str, context: str, exten: str) -> str | None:
        """AMI BlindTransfer of the agent's channel: the caller goes to `exten` (trace 09b)."""
        call = self.chan_call.get(name)
        a = self.chans.get(name)
        if call is None or a is None or call.done:
            return f"Channel does not exist: {name}"
        leg = call.agent
        ch = call.caller
        br = ch.bridge
        if leg is None or leg.chan is not a or br is None:
            return "Transfer failed"
        where = self.resolve(exten)
        if where is None:
            return "Transfer failed"
        self.ev("Unhold", a)
        self.varset(a, "BLINDTRANSFER", ch.name)
        self.varset(ch, "BLINDTRANSFER", a.name)
        self.varset(a, "BRIDGEPEER", "")
        self.emit(
            CALL,
            "Event: BlindTransfer\r\nPrivilege: call,all\r\nResult: Success\r\n"
            f"{a.prefixed_block('Transferer')}{ch.prefixed_block('Transferee')}{br.block()}"
            f"IsExternal: Yes\r\nContext: {context or ch.context}\r\nExtension: {exten}\r\n\r\n",
        )
        self.varset(ch, "BRIDGEPEER", "")
        br.channels.remove(ch)
        ch.bridge = None
        ch.context, ch.exten = context or ch.context, exten
        self.bridge_event("BridgeLeave", br, ch)
        self._transfer_vars(call)
        q = self.queues[where[1]] if where[0] == "queue" else None
        if q is not None:
            self._queue_prelude(call, q, 1)
        br.channels.remove(a)
        a.bridge = None
        self.bridge_event("BridgeLeave", br, a)
        self.hangup_events(a, 16)
        self._agent_complete(call, "transfer", with_dest=False)
        self.bridge_event("BridgeDestroy", br)
        if a.device:
            self._device_free(call, a.device, took_call=leg.member is not None)
        call.queue = None
        call.agent = None
        call.legs = []
        call.generation += 1
        if q is not None:
            self._queue_enter(call, q, None)
        else:
            self._dial_device(call, where[1])
        return None

    # ------------------------------------------------------------------ originate

    def outcome_for(self, number: str) -> tuple[str, int]:
        """The customer's behaviour: the traces' [pstn] table, else the settings' mix."""
        m = _PSTN.search(number)
        if m is not None:
            kind, xx = m.group(1), int(m.group(2))
            table = {
                "1": "answer",
                "2": "busy",
                "3": "noanswer",
                "4": "congestion",
                "6": "machine",
                "9": "answer",
            }
            if kind == "5":
                return ("cause", xx)
            if kind in table:
                return (table[kind], 0)
        r = self.rng.random()
        s = self.s
        if r < s.p_answer:
            return ("answer", 0)
        if r < s.p_answer + s.p_busy:
            return ("busy", 0)
        if r < s.p_answer + s.p_busy + s.p_congestion:
            return ("congestion", 0)
        return ("noanswer", 0)

    def originate(self, h: Mapping[str, str], variables: list[tuple[str, str]]) -> Call | None:
        """Start an Originate; returns the call, or None when it fails at once (the caller then
        gets an OriginateResponse with Reason 0, emitted here)."""
        target = h.get("Channel", "")
        tech, _, rest = target.partition("/")
        context, exten = h.get("Context", ""), h.get("Exten", "")
        app, data = h.get("Application", ""), h.get("Data", "")
        try:
            timeout = float(h.get("Timeout", "30000")) / 1000.0
        except ValueError:
            timeout = 30.0
        name, num = _parse_callerid(h.get("CallerID", ""))
        if context or exten:
            tail = f"Context: {context}\r\nExten: {exten}\r\n"
        else:
            tail = f"Application: {app}\r\nData: {data}\r\n"
        aid = h.get("ActionID")
        dev = None
        number = ""
        if tech.upper() == "PJSIP" and rest and "@" not in rest:
            dev = f"PJSIP/{rest}"
        elif tech.upper() in ("PJSIP", "LOCAL") and "@" in rest:
            number = rest.split("@", 1)[0]
        if (dev is None and not number) or (not (context or exten) and not app):
            self._orig_response(aid, "Failure", target, tail, 0, "<unknown>", num, name)
            return None
        uid = h.get("ChannelId") or None
        if uid is not None and (
            uid in self.calls or any(c.uniqueid == uid for c in self.chans.values())
        ):
            self._orig_response(aid, "Failure", target, tail, 0, "<unknown>", num, name)
            return None
        if dev is not None:
            ch = self.new_chan(
                dev,
                context=context or self.s.agent_context,
                exten=exten or "s",
                state=DOWN,
                role="agent",
                uniqueid=uid,
                device=dev,
            )
            kind = "click"
            dial_string = rest
        else:
            ch = self.new_chan(
                f"PJSIP/{self.s.trunk}",
                context=context or "",
                exten=exten or number,
                state=DOWN,
                role="caller",
                uniqueid=uid,
            )
            kind = "outbound"
            dial_string = rest if tech.upper() == "PJSIP" else f"{number}@{self.s.trunk}"
        call = Call(linkedid=ch.linkedid, caller=ch, started=self._now, kind=kind)
        call.action_id = aid or ""
        call.originate_channel = target
        call.originate_tail = tail
        call.originate_cid = (num, name)
        self.calls[call.linkedid] = call
        self.chan_call[ch.name] = call
        for k, v in reversed(variables):
            self.varset(ch, k, v)
        ch.cid_num = ch.con_num = num
        ch.cid_name = ch.con_name = name
        self.ev("NewCallerid", ch, f"CID-CallingPres: {CID_PRES}\r\n")
        self.ev("NewConnectedLine", ch)
        self.ev_dest("DialBegin", ch, f"DialString: {dial_string}\r\n")
        if kind == "click":
            assert dev is not None
            self._device_ringing(call, dev)
            ch.state = RINGING
            self.ev("Newstate", ch)
            self.ev_dest("DialState", ch, "DialStatus: RINGING\r\n")
            self._ring_status(dev)
            self.ring_notify.append((call.linkedid, dev))
            if self.phone_mode(dev) == "auto":
                self.at(self.s.agent_answer_after, self._click_answer, call)
            self.at(timeout, self._originate_timeout, call)
            return call
        outcome, cause = self.outcome_for(number)
        talk = ch.variables.get("__CUSTOMER_TALK") or ch.variables.get("CUSTOMER_TALK")
        if talk:
            try:
                call.talk = float(talk)
            except ValueError:
                pass
        self._customer_progress(call, ch, outcome, cause, timeout)
        return call

    def _customer_progress(
        self, call: Call, ch: Chan, outcome: str, cause: int, timeout: float
    ) -> None:
        s = self.s
        if outcome == "machine":
            call.machine = True
            outcome = "answer"
        if outcome in ("answer", "noanswer"):
            self._set_state(ch, RINGING)
            self.ev_dest("DialState", ch, "DialStatus: RINGING\r\n")
            if outcome == "answer" and s.customer_answer_after < timeout:
                self.at(s.customer_answer_after, self._customer_answer, call, ch)
            else:
                self.at(timeout, self._customer_failed, call, "noanswer", 19)
        elif outcome == "busy":
            self.at(s.reject_after, self._customer_failed, call, "busy", 17)
        elif outcome == "congestion":
            self.at(s.reject_after, self._customer_failed, call, "congestion", 34)
        else:
            self.at(s.reject_after, self._customer_failed, call, "cause", cause)

    def _orig_response(
        self,
        aid: str | None,
        resp: str,
        channel: str,
        tail: str,
        reason: int,
        uid: str,
        num: str,
        name: str,
    ) -> None:
        idline = f"ActionID: {aid}\r\n" if aid is not None else ""
        self.emit(
            CALL,
            f"Event: OriginateResponse\r\nPrivilege: call,all\r\n{idline}Response: {resp}\r\n"
            f"Channel: {channel}\r\n{tail}Reason: {reason}\r\nUniqueid: {uid}\r\n"
            f"CallerIDNum: {num}\r\nCallerIDName: {name}\r\n\r\n",
        )

    def _orig_result(self, call: Call, ok: bool, reason: int) -> None:
        if not call.originate_channel:
            return
        aid = call.action_id or None
        num, name = call.originate_cid
        ch = call.caller
        if ok:
            self._orig_response(
                aid, "Success", ch.name, call.originate_tail, reason, ch.uniqueid, num, name
            )
        else:
            uid = ch.uniqueid if not _generated(ch.uniqueid) else "<unknown>"
            self._orig_response(
                aid, "Failure", call.originate_channel, call.originate_tail, reason, uid, num, name
            )
        call.originate_channel = ""
        self.on_originate_done(call, ok)

    def _customer_answer(self, call: Call, ch: Chan) -> None:
        if call.done or not ch.alive or ch.state != RINGING:
            return
        ch.answered = self._now
        self._set_state(ch, UP)
        if ch is call.caller:
            self._orig_result(call, True, 4)
            self.ev_dest("DialEnd", ch, "DialStatus: ANSWER\r\n")
            self._outbound_dialplan(call)
        else:
            self._click_connected(call, ch)

    def _outbound_dialplan(self, call: Call) -> None:
        ch = call.caller
        talk = call.talk
        if talk is None:
            talk = self.rng.uniform(self.s.talk_min, max(self.s.talk_min, self.s.talk_max))
        call.hangup_at = self._now + talk
        self.at(talk, self._talk_end, call)
        if ch.context == self.s.dialer_context and ch.exten == self.s.dialer_exten:
            camp = ch.variables.get("__CAMPAIGN", ch.variables.get("CAMPAIGN", ""))
            lead = ch.variables.get("__LEAD", ch.variables.get("LEAD", ""))
            self.newexten(ch, "NoOp", f"Dialer {camp}/{lead}", 1)
            if ch.variables.get("AMD", ch.variables.get("__AMD")) == "1" and self._amd(
                call, camp, lead
            ):
                return
            phone = ch.variables.get("LEAD_PHONE") or ch.variables.get("__LEAD_PHONE")
            if phone:
                ch.cid_num = phone
                self.newexten(ch, "Set", f"CALLERID(num)={phone}", 2)
                self.ev("NewCallerid", ch, f"CID-CallingPres: {CID_PRES}\r\n")
            qname = (
                ch.variables.get("QUEUE") or ch.variables.get("__QUEUE") or self.s.queues[0]
                if self.s.queues
                else ""
            )
            q = self.queues.get(qname)
            if q is None:
                self.at(0.0, self.hangup_caller, call, 16)
                return
            deadline = None
            raw = ch.variables.get("CTI_DEADLINE") or ch.variables.get("__CTI_DEADLINE")
            if raw:
                try:
                    deadline = float(raw)
                except ValueError:
                    deadline = None
            self._queue_prelude(call, q, 4)
            self._queue_enter(call, q, deadline)
            return
        if ch.exten:
            where = self.resolve(ch.exten)
            if where is not None:
                if where[0] == "queue":
                    q = self.queues[where[1]]
                    self._queue_prelude(call, q, 1)
                    self._queue_enter(call, q, None)
                else:
                    self._dial_device(call, where[1])
                return
            if call.originate_tail.startswith("Context"):
                # an extension the simulated dialplan does not know: Asterisk hangs up
                self.at(0.0, self.hangup_caller, call, 16)

    def _amd(self, call: Call, camp: str, lead: str) -> bool:
        """AMD() of the cti-dialer context: True when a machine answered (the call then ends
        with a CtiMachine UserEvent, as config/asterisk/extensions.conf does)."""
        ch = call.caller
        machine = call.machine or self.rng.random() < self.s.p_machine
        self.newexten(ch, "AMD", "", 3)
        self.varset(ch, "AMDSTATUS", "MACHINE" if machine else "HUMAN")
        self.varset(ch, "AMDCAUSE", "LONGGREETING-1500-1500" if machine else "HUMAN-300-500")
        if not machine:
            return False
        self.newexten(ch, "UserEvent", f"CtiMachine,Campaign: {camp},Lead: {lead}", 6)
        self.emit(
            USER,
            f"Event: UserEvent\r\nPrivilege: user,all\r\n{ch.block()}UserEvent: CtiMachine\r\n"
            f"Campaign: {camp}\r\nLead: {lead}\r\n\r\n",
        )
        self.at(self.s.amd_seconds, self.hangup_caller, call, 16)
        return True

    def _customer_failed(self, call: Call, kind: str, cause: int) -> None:
        """The dialled customer leg ends without answering (traces 06, 07, 08, 12)."""
        ch = call.customer if call.kind == "click" else call.caller
        if call.done or ch is None or not ch.alive or ch.answered is not None:
            return
        origin = ch is call.caller
        if kind == "busy":
            self._set_state(ch, BUSY)
            if origin:
                self._orig_result(call, False, 5)
                self.ev_dest("DialEnd", ch, "DialStatus: BUSY\r\n")
            else:
                self.ev2("DialEnd", call.caller, ch, "DialStatus: BUSY\r\n")
            self.ev("HangupRequest", ch, "Cause: 0\r\n")
            self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
            self.hangup_events(ch, 17)
            self.cdr(ch, "", "BUSY", call.started, None)
        elif kind == "congestion":
            self._set_state(ch, BUSY)
            if origin:
                self.ev_dest("DialEnd", ch, "DialStatus: CONGESTION\r\n")
            else:
                self.ev2("DialEnd", call.caller, ch, "DialStatus: CONGESTION\r\n")
            self.ev("HangupRequest", ch, "Cause: 0\r\n")
            self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
            self.hangup_events(ch, 34)
            if origin:
                self._orig_result(call, False, 8)
            self.cdr(ch, "", "CONGESTION", call.started, None)
        elif kind == "noanswer":
            self.ev("HangupRequest", ch, "Cause: 19\r\n")
            if origin:
                self._orig_result(call, False, 3)
            else:
                self.ev2("DialEnd", call.caller, ch, "DialStatus: NOANSWER\r\n")
            self.cdr(ch, "", "NO ANSWER", call.started, None)
            self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
            self.hangup_events(ch, 19)
        else:  # the network (or an AMI Hangup) ends the attempt with a cause
            status, disp = _CAUSE_DIAL.get(
                cause,
                ("CONGESTION", "CONGESTION")
                if cause in _CONGESTION_CAUSES
                else ("NOANSWER", "NO ANSWER"),
            )
            self.ev("SoftHangupRequest", ch, "Cause: 16\r\n")
            self.ev("HangupRequest", ch, f"Cause: {cause}\r\n")
            self.hangup_events(ch, cause)
            if origin:
                self.ev_dest("DialEnd", ch, f"DialStatus: {status}\r\n")
                self._orig_result(call, False, 0)
            else:
                self.ev2("DialEnd", call.caller, ch, f"DialStatus: {status}\r\n")
            self.cdr(ch, "", disp, call.started, None)
        if origin:
            self._finish(call)
        else:
            # click-to-call: Dial() returned, the agent's channel runs off the dialplan
            a = call.caller
            self.ev("SoftHangupRequest", a, "Cause: 16\r\n")
            self.hangup_events(a, 16)
            self.cdr(a, ch.name, "NO ANSWER", call.started, a.answered)
            if a.device:
                self._device_free(call, a.device)
            self._finish(call)

    def _originate_failed(self, call: Call, kind: str, cause: int) -> None:
        if call.kind == "click" and call.caller.answered is None:
            a = call.caller
            self.ev("HangupRequest", a, f"Cause: {cause}\r\n")
            self._orig_result(call, False, 0 if cause not in (19,) else 3)
            self.cdr(a, "", "NO ANSWER", call.started, None)
            self.ev("SoftHangupRequest", a, "Cause: 16\r\n")
            self.hangup_events(a, cause)
            if a.device:
                self._device_free(call, a.device)
            self._finish(call)
        else:
            self._customer_failed(call, "cause", cause)

    def _originate_timeout(self, call: Call) -> None:
        if call.done or call.caller.answered is not None:
            return
        self._originate_failed(call, "noanswer", 19)

    def _click_answer(self, call: Call) -> None:
        a = call.caller
        if call.done or a.answered is not None or a.state != RINGING:
            return
        a.answered = self._now
        self._set_state(a, UP)
        self._orig_result(call, True, 4)
        self.ev_dest("DialEnd", a, "DialStatus: ANSWER\r\n")
        self._device_up(a.device)
        target = a.exten
        where = self.resolve(target) if target and not target.startswith("+") else None
        if where is not None and where[0] == "device":
            call.kind = "inbound"  # an internal call from the agent's phone: a direct Dial
            self._dial_device(call, where[1])
            return
        if where is not None and where[0] == "queue":
            call.kind = "inbound"
            q = self.queues[where[1]]
            self._queue_prelude(call, q, 1)
            self._queue_enter(call, q, None)
            return
        if not target or target == "s":
            self.at(0.0, self.hangup_caller, call, 16)
            return
        self.newexten(a, "Dial", f"PJSIP/{target}@{self.s.trunk},60", 1)
        cust = self.new_chan(
            f"PJSIP/{self.s.trunk}",
            context=self.s.trunk_context,
            exten=target,
            state=DOWN,
            role="caller",
            linkedid=call.linkedid,
        )
        call.customer = cust
        self.chan_call[cust.name] = call
        cust.cid_num, cust.cid_name = a.cid_num, a.cid_name
        cust.con_num, cust.con_name = a.cid_num, a.cid_name
        self.ev("NewCallerid", cust, f"CID-CallingPres: {CID_PRES}\r\n")
        for k, v in list(a.variables.items()):
            if k.startswith("_"):
                self.varset(cust, k, v)
        self.ev2("DialBegin", a, cust, f"DialString: {target}@{self.s.trunk}\r\n")
        outcome, cause = self.outcome_for(target)
        if outcome in ("answer", "noanswer"):
            self._set_state(cust, RINGING)
            self.ev2("DialState", a, cust, "DialStatus: RINGING\r\n")
            if outcome == "answer":
                self.at(self.s.customer_answer_after, self._customer_answer, call, cust)
            else:
                self.at(self.s.dial_timeout, self._customer_failed, call, "noanswer", 19)
        elif outcome == "busy":
            self.at(self.s.reject_after, self._customer_failed, call, "busy", 17)
        elif outcome == "congestion":
            self.at(self.s.reject_after, self._customer_failed, call, "congestion", 34)
        else:
            self.at(self.s.reject_after, self._customer_failed, call, "cause", cause)

    def _click_connected(self, call: Call, cust: Chan) -> None:
        a = call.caller
        a.con_num, a.con_name = cust.exten, cust.exten
        self.ev("NewConnectedLine", a)
        self.ev2("DialEnd", a, cust, "DialStatus: ANSWER\r\n")
        self._bridge(call, a, cust)
        call.connected_at = self._now
        call.cdrs.append((cust.name, "ANSWERED", self._now, call.started))
        self._schedule_talk(call)

    def _click_caller_gone(self, call: Call, cause: int) -> None:
        """The agent hangs up its phone while the customer still rings."""
        cust = call.customer
        a = call.caller
        self.ev("HangupRequest", a, f"Cause: {cause}\r\n")
        if cust is not None and cust.alive:
            self.ev2("DialEnd", a, cust, "DialStatus: CANCEL\r\n")
            self.hangup_events(cust, 0)
        self.cdr(a, cust.name if cust else "", "NO ANSWER", call.started, a.answered)
        self.ev("SoftHangupRequest", a, "Cause: 16\r\n")
        self.hangup_events(a, cause)
        if a.device:
            self._device_free(call, a.device)
        self._finish(call)

    # ------------------------------------------------------------------ misc

    def getvar(self, channel: str | None, var: str) -> str | None:
        if not channel:
            return self.globals.get(var, "")
        ch = self.chans.get(channel)
        if ch is None:
            return None
        if var == "CALLERID(num)":
            return ch.cid_num
        if var == "CALLERID(name)":
            return ch.cid_name
        return ch.variables.get(var, ch.variables.get("__" + var, ch.variables.get("_" + var, "")))

    def setvar(self, channel: str | None, var: str, value: str) -> bool:
        if not channel:
            self.globals[var] = value
            return True
        ch = self.chans.get(channel)
        if ch is None:
            return False
        self.varset(ch, var, value)
        return True


def _generated(uid: str) -> bool:
    """A Uniqueid we made ourselves (`<epoch>.<n>`), not a ChannelId given by the client."""
    head, dot, tail = uid.partition(".")
    return bool(dot) and head.isdigit() and tail.isdigit()


def _parse_callerid(text: str) -> tuple[str, str]:
    """`"Name" <number>` -> (name, number); missing parts are `<unknown>`."""
    text = text.strip()
    if not text:
        return ("<unknown>", "<unknown>")
    lt, gt = text.rfind("<"), text.rfind(">")
    if lt >= 0 and gt > lt:
        num = text[lt + 1 : gt].strip()
        name = text[:lt].strip().strip('"').strip()
    else:
        num, name = text, ""
    return (name or "<unknown>", num or "<unknown>")


__all__ = ["SimEngine"]
