"""Screen-pop routing: which agent sees which call, and what happens to that view as the call
moves.

The router consumes call events from the bus (one consumer task, events in order) and sends
messages to agents through the hub. It never awaits the CRM in the event path: the lookup for a
call starts once, at the first ringing, and runs as its own task; pops for that call are held in
a per-call outbox until the lookup answers or the deadline (``deadline_ms``) passes, whichever
comes first, so a slow CRM delays a pop by at most the deadline and never delays any other call.
After a timeout the pop goes out marked ``degraded`` and a ``pop.update`` follows if the lookup
completes later. A failing CRM is the same as a slow one: the pop is degraded, nothing raises.

Agents are matched by the device of the ringing channel (exact, ``ami.channels.device_of``), so
queue calls (ringall: every rung agent; rrmemory/linear: one after the other), direct dials,
ring groups, dialer calls bridged to an agent and internal calls all pop the same way. An agent
gets at most one ``pop`` per call; everything after that is a ``call.update``.

Messages (payloads of hub messages; the hub adds ``seq``):

``pop``::

    {"call_id": str, "direction": "inbound"|"outbound"|"internal",
     "caller": {"number": str, "name": str},
     "identification": Identification.to_dict() | {"status": "degraded", ...},
     "queue": str|null, "did": str|null, "ivr": {id_type: value},
     "campaign": str|null, "lead": str|null,
     "state": "ringing"|"answered"|"ended",          # this agent's leg, at send time
     "offered_at": float, "answered_at": float|null, "ended_at": float|null,  # epoch seconds
     "notes": [str], "disposition": str|null,        # this agent's own work on the call
     "transferred": bool,                             # the call reached this agent by transfer
     "history": [{"agent": str, "state": str, "offered_at": float,
                  "answered_at": float|null, "ended_at": float|null,
                  "notes": [str], "disposition": str|null}]}   # earlier agents, oldest first

``pop.update`` (the CRM answered after the deadline, or the call was linked to a customer)::

    {"call_id": str, "identification": {...}}

``call.update``::

    {"call_id": str, "state": "ringing_ended"|"answered_by_you"|"answered_elsewhere"
                              |"transferred_away"|"transferred_to_you"|"ended",
     "reason": str|null, "at": float}

``ringing_ended``, ``answered_elsewhere``, ``transferred_away`` and ``ended`` close the agent's
view of the call; ``transferred_to_you`` (re)opens it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from ami.channels import device_of
from ami.events import (
    CallEvent,
    Hangup,
    Party,
    QueueAbandon,
    Ringing,
    RingingEnd,
    Transfer,
    Up,
)
from crm_bridge.adapter import CrmUnavailable, Identity, InteractionRecord, NewCase

log = structlog.get_logger(__name__)

#: how long a finished call stays available for the agent's after-call work (notes, disposition)
ENDED_RETENTION_S = 3600.0
#: at most this many finished (answered) calls are kept, oldest dropped first: a pop carries
#: the customer card, so this bounds the memory a busy hour of calls can take
ENDED_MAX = 5000
#: a lookup that has not answered after this long is abandoned (the pop is long degraded)
LOOKUP_HARD_LIMIT_S = 30.0

#: legs per CRM write transaction, at most
WRITE_BATCH_MAX = 200

#: agent-leg states
RINGING, ANSWERED, CLOSED = "ringing", "answered", "closed"

_WITHHELD = frozenset({"", "<unknown>", "anonymous", "unknown", "restricted", "private"})


class PopHub(Protocol):
    def send(self, agent_id: str, type: str, payload: dict[str, Any]) -> Any: ...


class PopAgents(Protocol):
    def agent_for_device(self, device: str) -> Any: ...


class CallNotFound(LookupError):
    """The call is unknown (never seen, or finished long ago)."""


class NotYourCall(PermissionError):
    """The agent has no part in this call."""


class NotAnswered(NotYourCall):
    """The agent was offered the call but never answered it: there is no interaction of
    theirs to write notes or a disposition on."""


def _agent_id(found: Any) -> str | None:
    """AgentService may hand back an id or an agent object; the router only needs the id."""
    if found is None:
        return None
    if isinstance(found, str):
        return found or None
    for attr in ("agent_id", "id", "name"):
        v = getattr(found, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


def _var(variables: Mapping[str, str], name: str) -> str | None:
    """Channel variables may arrive with their inheritance prefix (`__CAMPAIGN`)."""
    v = variables.get(name)
    if v is None:
        v = variables.get("__" + name) or variables.get("_" + name)
    return v or None


def _epoch(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


@dataclass(slots=True)
class _Leg:
    agent: str
    state: str
    offered_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    popped: bool = False
    transferred: bool = False
    notes: list[str] = field(default_factory=list)
    disposition: str | None = None
    customer_id: str | None = None
    #: the CRM write of this leg's interaction (answered legs only); result: interaction id
    record: asyncio.Future[str | None] | None = None
    #: "" while the leg is live, then completed | transferred; and what the CRM has of it
    outcome: str = ""
    written_outcome: str | None = None

    def history_entry(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "state": self.state,
            "offered_at": self.offered_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "notes": list(self.notes),
            "disposition": self.disposition,
        }


@dataclass(slots=True)
class _Call:
    call_id: str
    server: str
    direction: str
    number: str
    name: str
    queue: str | None
    did: str | None
    ivr: dict[str, str]
    campaign: str | None
    lead: str | None
    started: float  # router clock, for the deadline
    identification: dict[str, Any] | None = None
    #: the identification of a finished call, packed (see _on_hangup)
    ident_json: str | None = None
    lookup: asyncio.Task[dict[str, Any]] | None = None
    deadline: asyncio.TimerHandle | None = None
    #: while the lookup is pending: sends for this call wait here, in order
    outbox: list[Callable[[], None]] | None = None
    legs: dict[str, _Leg] = field(default_factory=dict)
    ended_at: float | None = None
    customer_id: str | None = None
    #: some agent answered (the legs offered after that are transfers): kept, not searched
    #: for, because a ringall queue offers one call to a hundred agents
    answered: bool = False


class PopRouter:
    def __init__(
        self,
        hub: PopHub,
        agents: PopAgents,
        crm: Any,
        *,
        deadline_ms: int = 150,
        ivr_variables: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        write_delay_ms: int = 0,
    ) -> None:
        self._hub = hub
        self._agents = agents
        self._crm = crm
        self._deadline = deadline_ms / 1000.0
        self._ivr_variables = dict(ivr_variables or {})
        self._clock = clock
        self._calls: dict[str, _Call] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._by_agent: dict[str, set[str]] = {}
        #: legs with something for the CRM, in the order they were first marked
        self._dirty: dict[tuple[str, str], tuple[_Call, _Leg]] = {}
        #: seconds the CRM writer waits to gather more legs into one transaction (tunable)
        self.write_delay = write_delay_ms / 1000.0
        self._write_now = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.write_batches = 0
        self.pops_sent = 0
        self.degraded_pops = 0

    # ------------------------------------------------------------------ event path

    async def on_call_event(self, ev: CallEvent) -> None:
        """Never raises into the bus: a bug for one call must not stop pops for the others."""
        try:
            self._handle(ev)
        except Exception:
            log.exception("pop routing failed", call_id=ev.call_id, event=ev.event)

    def _handle(self, ev: CallEvent) -> None:
        if isinstance(ev, Ringing):
            self._on_ringing(ev)
        elif isinstance(ev, Up):
            self._on_up(ev)
        elif isinstance(ev, RingingEnd):
            self._on_ringing_end(ev)
        elif isinstance(ev, Transfer):
            self._on_transfer(ev)
        elif isinstance(ev, Hangup):
            self._on_hangup(ev)
        elif isinstance(ev, QueueAbandon):
            self._close_ringing(ev.call_id, ev.at, "ringing_ended", "abandoned")

    def _agent_of(self, party: Party | None) -> str | None:
        if party is None or not party.channel:
            return None
        return _agent_id(self._agents.agent_for_device(device_of(party.channel)))

    def _new_call(
        self, ev: CallEvent, caller: Party, variables: Mapping[str, str], queue: str | None
    ) -> _Call:
        caller_agent = self._agent_of(caller)
        campaign = _var(variables, "CAMPAIGN")
        dialled = _var(variables, "CTI_DIAL")
        if dialled or campaign:
            direction = "outbound"
        elif caller_agent is not None:
            direction = "internal"
        else:
            direction = "inbound"
        number = dialled or caller.number
        if number.lower() in _WITHHELD:
            number = ""
        ivr: dict[str, str] = {}
        for var, id_type in self._ivr_variables.items():
            v = _var(variables, var)
            if v:
                ivr[id_type] = v
        did = _var(variables, "DID") or _var(variables, "CTI_DID")
        call = _Call(
            call_id=ev.call_id,
            server=ev.server,
            direction=direction,
            number=number,
            name=caller.name if caller.name not in ("<unknown>",) else "",
            queue=queue,
            did=did,
            ivr=ivr,
            campaign=campaign,
            lead=_var(variables, "LEAD"),
            started=self._clock(),
        )
        self._calls[ev.call_id] = call
        if direction == "internal":
            call.identification = {
                "status": "none",
                "number_e164": None,
                "withheld": False,
                "card": None,
                "candidates": [],
                "reason": "internal call",
            }
        else:
            self._start_lookup(call)
        return call

    def _call_for(
        self, ev: CallEvent, caller: Party, variables: Mapping[str, str], queue: str | None
    ) -> _Call:
        call = self._calls.get(ev.call_id)
        if call is None:
            return self._new_call(ev, caller, variables, queue)
        if queue:
            call.queue = queue  # a transfer into another queue
        if call.campaign is None and _var(variables, "CAMPAIGN"):
            call.campaign = _var(variables, "CAMPAIGN")
            call.lead = _var(variables, "LEAD")
        return call

    def _on_ringing(self, ev: Ringing) -> None:
        call = self._call_for(ev, ev.caller, ev.variables, ev.queue)
        if call.ended_at is not None:
            return
        for target in ev.targets:
            agent = self._agent_of(target)
            if agent is None:
                continue
            self._offer(call, agent, ev.at)

    def _offer(self, call: _Call, agent: str, at: float) -> _Leg:
        """Ring `agent` for `call`: the first time a pop, later a reopening update at most."""
        leg = call.legs.get(agent)
        if leg is None:
            leg = _Leg(agent=agent, state=RINGING, offered_at=at, transferred=call.answered)
            call.legs[agent] = leg
            self._by_agent.setdefault(agent, set()).add(call.call_id)
            self._emit(call, lambda: self._send_pop(call, leg))
        elif leg.state == CLOSED:
            # rung again for the same call (transferred back): reopen, never a second pop
            leg.state = RINGING
            leg.ended_at = None
            self._update(call, leg, "transferred_to_you", None, at)
        return leg

    def _on_up(self, ev: Up) -> None:
        call = self._calls.get(ev.call_id)
        a_caller = self._agent_of(ev.caller)
        a_callee = self._agent_of(ev.callee)
        if a_callee is None and a_caller is None:
            return
        if call is None:
            # answered without a ringing we saw (e.g. started before us): pop it now
            other = ev.caller if a_callee is not None else ev.callee
            call = self._new_call(ev, other, {}, None)
        if call.ended_at is not None:
            return
        parties = {a for a in (a_caller, a_callee) if a is not None}
        for agent in parties:
            if agent == a_caller and call.direction == "internal" and agent not in call.legs:
                continue  # the calling agent of an internal call is not offered a pop
            self._answer(call, agent, ev.at, close_ringing=False)
        for leg in call.legs.values():
            if leg.agent in parties:
                continue
            if leg.state == RINGING:
                self._close(call, leg, "answered_elsewhere", "answered-elsewhere", ev.at)
            elif leg.state == ANSWERED:
                # the caller now talks to someone else: the call moved on (redirect, transfer)
                self._close(call, leg, "transferred_away", "transfer", ev.at)

    def _answer(self, call: _Call, agent: str, at: float, *, close_ringing: bool = True) -> None:
        """`agent` picked the call up: tell them, and close it for everyone still ringing."""
        leg = self._offer(call, agent, at)
        if leg.state != ANSWERED:
            leg.state = ANSWERED
            leg.answered_at = at
            call.answered = True
            leg.ended_at = None
            self._update(call, leg, "answered_by_you", None, at)
        if not close_ringing:
            return
        for other in call.legs.values():
            if other is not leg and other.state == RINGING:
                self._close(call, other, "answered_elsewhere", "answered-elsewhere", at)

    def _on_ringing_end(self, ev: RingingEnd) -> None:
        call = self._calls.get(ev.call_id)
        if call is None or call.ended_at is not None:
            return
        for target in ev.targets:
            agent = self._agent_of(target)
            leg = call.legs.get(agent) if agent else None
            if agent is None or (leg is not None and leg.state != RINGING):
                continue
            if ev.reason == "answer":  # DialEnd ANSWER: the bridge (Up) follows
                self._answer(call, agent, ev.at)
            elif leg is not None:
                elsewhere = ev.reason == "answered-elsewhere" or any(
                    lg.state == ANSWERED for lg in call.legs.values()
                )
                state = "answered_elsewhere" if elsewhere else "ringing_ended"
                self._close(call, leg, state, ev.reason, ev.at)

    def _on_transfer(self, ev: Transfer) -> None:
        call = self._calls.get(ev.call_id)
        if call is None or call.ended_at is not None:
            return
        new_agents = [a for a in (self._agent_of(t) for t in ev.targets) if a is not None]
        old = self._agent_of(ev.transferer)
        if call.outbox is None and any(a not in call.legs for a in new_agents):
            # the events that follow a transfer in the same AMI batch (the new queue's
            # ringing) complete the picture: hold this call's messages until they are handled
            call.outbox = []
            asyncio.get_running_loop().call_soon(self._flush, call)
        for agent in new_agents:
            leg = call.legs.get(agent)
            if leg is None:
                leg = self._offer(call, agent, ev.at)
                leg.transferred = True
            elif leg.state != CLOSED:
                leg.transferred = True
                self._update(call, leg, "transferred_to_you", ev.kind, ev.at)
            else:
                self._offer(call, agent, ev.at)
        olds = (
            [old]
            if old is not None
            else [
                lg.agent
                for lg in call.legs.values()
                if lg.state == ANSWERED and lg.agent not in new_agents
            ]
        )
        for agent in olds:
            leg = call.legs.get(agent)
            if leg is not None and leg.state != CLOSED and agent not in new_agents:
                self._close(call, leg, "transferred_away", ev.kind, ev.at)

    def _on_hangup(self, ev: Hangup) -> None:
        call = self._calls.get(ev.call_id)
        if call is None or call.ended_at is not None:
            return
        call.ended_at = ev.at
        for leg in call.legs.values():
            if leg.state != CLOSED:
                self._close(call, leg, "ended", ev.reason, ev.at)
        if call.lookup is not None and not call.lookup.done() and call.outbox is None:
            call.lookup.cancel()  # nobody is waiting for a late update any more
        if call.outbox is None and not call.answered:
            self._forget(call.call_id)  # nobody answered: no after-call work to keep it for
        else:
            self._ended[call.call_id] = self._clock()
            if call.outbox is None:
                self._pack(call)
        self._prune()

    @staticmethod
    def _pack(call: _Call) -> None:
        """A finished call is kept for after-call work only: its identification as one
        string, so that thousands of finished calls' customer cards are not thousands of
        objects for every full GC pass to walk."""
        if call.identification is not None:
            call.ident_json = json.dumps(call.identification, default=str)
            call.identification = None

    def _close_ringing(self, call_id: str, at: float, state: str, reason: str) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        for leg in call.legs.values():
            if leg.state == RINGING:
                self._close(call, leg, state, reason, at)

    def _close(self, call: _Call, leg: _Leg, state: str, reason: str | None, at: float) -> None:
        was_answered = leg.state == ANSWERED
        leg.state = CLOSED
        leg.ended_at = at
        self._update(call, leg, state, reason, at)
        if was_answered:
            self._finish_record(
                call, leg, "transferred" if state == "transferred_away" else "completed"
            )

    def _update(self, call: _Call, leg: _Leg, state: str, reason: str | None, at: float) -> None:
        payload = {"call_id": call.call_id, "state": state, "reason": reason, "at": at}
        agent = leg.agent
        self._emit(call, lambda: self._hub.send(agent, "call.update", payload))

    # ------------------------------------------------------------------ pops

    def _emit(self, call: _Call, send: Callable[[], None]) -> None:
        if call.outbox is not None:
            call.outbox.append(send)
        else:
            send()

    def pop_payload(self, call: _Call, leg: _Leg) -> dict[str, Any]:
        ident = self._ident(call)
        history = [
            lg.history_entry()
            for lg in call.legs.values()
            if lg is not leg and lg.answered_at is not None
        ]
        return {
            "call_id": call.call_id,
            "direction": call.direction,
            "caller": {"number": call.number, "name": call.name},
            "identification": ident,
            "queue": call.queue,
            "did": call.did,
            "ivr": dict(call.ivr),
            "campaign": call.campaign,
            "lead": call.lead,
            "state": "ended" if leg.state == CLOSED else leg.state,
            "offered_at": leg.offered_at,
            "answered_at": leg.answered_at,
            "ended_at": leg.ended_at,
            "notes": list(leg.notes),
            "disposition": leg.disposition,
            "transferred": leg.transferred,
            "history": history,
        }

    def _send_pop(self, call: _Call, leg: _Leg) -> None:
        if leg.popped:
            return
        leg.popped = True
        payload = self.pop_payload(call, leg)
        if payload["identification"].get("status") == "degraded":
            self.degraded_pops += 1
        self.pops_sent += 1
        self._hub.send(leg.agent, "pop", payload)

    def _ident(self, call: _Call) -> dict[str, Any]:
        if call.identification is not None:
            return call.identification
        if call.ident_json is not None:
            return dict(json.loads(call.ident_json))
        return self._degraded(call)

    def _degraded(self, call: _Call) -> dict[str, Any]:
        return {
            "status": "degraded",
            "number_e164": call.number if call.number.startswith("+") else None,
            "withheld": False,
            "card": None,
            "candidates": [],
            "reason": "the CRM did not answer within the pop deadline",
        }

    def _start_lookup(self, call: _Call) -> None:
        identity = self._identity(call)
        if identity is None:  # withheld number and no IVR data: nothing to look up
            call.identification = {
                "status": "none",
                "number_e164": None,
                "withheld": True,
                "card": None,
                "candidates": [],
                "reason": None,
            }
            return
        call.outbox = []
        task = asyncio.get_running_loop().create_task(self._identify(call, identity))
        call.lookup = task
        call.deadline = asyncio.get_running_loop().call_later(
            self._deadline, self._on_deadline, call
        )
        task.add_done_callback(lambda t: self._on_lookup_done(call, t))

    def _identity(self, call: _Call) -> Any:
        if not call.number and not call.ivr:
            return None
        return Identity(number=call.number or None, ivr=dict(call.ivr), did=call.did)

    async def _identify(self, call: _Call, identity: Any) -> dict[str, Any]:
        try:
            async with asyncio.timeout(LOOKUP_HARD_LIMIT_S):
                result = await self._crm.identify(identity)
            out = result.to_dict() if hasattr(result, "to_dict") else dict(result)
            return dict(out)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # CRM down or broken: the pop degrades, the call goes on
            log.warning("crm lookup failed", call_id=call.call_id, error=type(e).__name__)
            return self._degraded(call)

    def _flush(self, call: _Call) -> None:
        outbox, call.outbox = call.outbox, None
        for send in outbox or ():
            try:
                send()
            except Exception:
                log.exception("pop delivery failed", call_id=call.call_id)

    def _on_deadline(self, call: _Call) -> None:
        call.deadline = None
        if call.outbox is not None:
            log.info("crm lookup missed the pop deadline", call_id=call.call_id)
            call.identification = self._degraded(call)
            self._flush(call)

    def _on_lookup_done(self, call: _Call, task: asyncio.Task[dict[str, Any]]) -> None:
        # a finished task would keep its result (the customer card, dozens of objects) alive
        # for as long as the call is kept for after-call work, in every full GC pass
        call.lookup = None
        if task.cancelled():
            return
        ident = task.result()
        if call.deadline is not None:
            call.deadline.cancel()
            call.deadline = None
        if call.outbox is not None:
            call.identification = ident
            self._flush(call)
            return
        if ident.get("status") == "degraded" and call.identification is not None:
            return  # late and still degraded: nothing new to tell
        call.identification = ident
        self._push_identification(call)
        if call.ended_at is not None:
            self._pack(call)

    def _push_identification(self, call: _Call) -> None:
        payload = {"call_id": call.call_id, "identification": call.identification}
        for leg in call.legs.values():
            if leg.popped:
                self._hub.send(leg.agent, "pop.update", payload)

    # ------------------------------------------------------------------ CRM interaction log

    def _queue_write(self, call: _Call, leg: _Leg, *, urgent: bool = False) -> None:
        """Mark the leg as having something for the CRM. One writer task writes every marked
        leg in batches (one transaction, a few set-based statements for the lot): the
        database's round trips run on the event loop that delivers pops, so per-leg
        statements were the long tail of pop latency. A leg marked twice before the writer
        takes it is written once, with its latest state. Batches run one after the other,
        so a leg's first record always precedes its updates."""
        self._dirty[(call.call_id, leg.agent)] = (call, leg)
        if urgent:
            self._write_now.set()
        if self._writer is None or self._writer.done():
            loop = asyncio.get_running_loop()
            self._writer = loop.create_task(self._write_loop(), name="pops-crm-writer")

    async def _write_loop(self) -> None:
        dirty = self._dirty
        while dirty:
            if self.write_delay > 0 and not self._write_now.is_set():
                # gather the legs that end in the next moments into the same transaction;
                # someone waiting for an interaction id (a note, a link) cuts this short
                try:
                    async with asyncio.timeout(self.write_delay):
                        await self._write_now.wait()
                except TimeoutError:
                    pass
            self._write_now.clear()
            batch: list[tuple[_Call, _Leg]] = []
            while dirty and len(batch) < WRITE_BATCH_MAX:
                call, leg = dirty.pop(next(iter(dirty)))
                first = leg.record
                if first is not None and first.done():
                    if first.result() is None or leg.written_outcome == leg.outcome:
                        continue  # the first write failed, or nothing new since the last
                batch.append((call, leg))
            if batch:
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[tuple[_Call, _Leg]]) -> None:
        recs: list[InteractionRecord] = []
        ids: list[str | None] = [None] * len(batch)
        try:
            for call, leg in batch:
                leg.written_outcome = leg.outcome
                recs.append(self._interaction(call, leg))
            ids = await self._record_all(recs)
        except Exception:
            log.exception("recording interactions failed", legs=len(batch))
        finally:
            # whoever waits for a leg's interaction id is answered, even after a failure
            for (_call, leg), iid in zip(batch, ids, strict=True):
                if leg.record is not None and not leg.record.done():
                    leg.record.set_result(iid)
            self.write_batches += 1

    async def _record_all(self, recs: list[InteractionRecord]) -> list[str | None]:
        """The batch in one call when the adapter can; after a failure (the built-in store
        writes all or nothing) one record at a time, so one bad record loses only itself."""
        many = getattr(self._crm, "record_interactions", None)
        if many is not None:
            try:
                return [None if iid is None else str(iid) for iid in await many(recs)]
            except Exception as e:
                if len(recs) == 1:
                    self._write_failed(recs[0], e)
                    return [None]
                log.warning("batched crm write failed", legs=len(recs), error=type(e).__name__)
        out: list[str | None] = []
        for rec in recs:
            try:
                iid = await self._crm.record_interaction(rec)
                out.append(None if iid is None else str(iid))
            except Exception as e:
                self._write_failed(rec, e)
                out.append(None)
        return out

    @staticmethod
    def _write_failed(rec: InteractionRecord, e: Exception) -> None:
        log.warning(
            "recording the interaction failed",
            call_id=rec.call_id,
            agent=rec.agent,
            error=type(e).__name__,
        )

    def _ensure_record(
        self, call: _Call, leg: _Leg, *, urgent: bool = False
    ) -> asyncio.Future[str | None]:
        """The leg's interaction, written once when first needed: when the agent works on the
        call (notes, links) or when the leg ends, so a call costs one write, not two."""
        if leg.record is None:
            leg.record = asyncio.get_running_loop().create_future()
            self._queue_write(call, leg, urgent=urgent)
        elif urgent and not leg.record.done():
            self._write_now.set()
        return leg.record

    def _interaction(self, call: _Call, leg: _Leg) -> InteractionRecord:
        ended = leg.outcome != ""
        return InteractionRecord(
            call_id=call.call_id,
            leg=leg.agent,
            direction=call.direction,
            offered_at=_epoch(leg.offered_at) or datetime.now(UTC),
            number=call.number,
            did=call.did or "",
            answered_at=_epoch(leg.answered_at),
            ended_at=_epoch(leg.ended_at) if ended else None,
            queue=call.queue or "",
            agent=leg.agent,
            campaign=call.campaign or "",
            outcome=leg.outcome,
            customer_id=call.customer_id or _card_id(self._ident(call)),
        )

    def _finish_record(self, call: _Call, leg: _Leg, outcome: str) -> None:
        """The leg ended: write it with its end (the adapter upserts on call_id + leg); if its
        first write has not gone out yet, that one write carries the end."""
        leg.outcome = outcome
        if leg.record is None:
            self._ensure_record(call, leg)
        else:
            self._queue_write(call, leg)

    # ------------------------------------------------------------------ agent side

    def live_pops(self, agent_id: str) -> list[dict[str, Any]]:
        """Pops an agent should see after a reconnect: calls ringing or answered, and finished
        calls the agent answered but has not given a disposition yet (after-call work)."""
        out = []
        for call_id in self._by_agent.get(agent_id, ()):
            call = self._calls.get(call_id)
            if call is None:
                continue
            leg = call.legs[agent_id]
            if not leg.popped:
                continue
            if leg.state != CLOSED or (
                leg.answered_at is not None
                and leg.disposition is None
                and call.ended_at is not None
                and leg.ended_at == call.ended_at
            ):
                out.append(self.pop_payload(call, leg))
        out.sort(key=lambda p: p["offered_at"])
        return out

    def all_live_calls(self) -> list[dict[str, Any]]:
        """Every call in progress with its agents (supervisors)."""
        out = []
        for call in self._calls.values():
            if call.ended_at is not None:
                continue
            out.append(
                {
                    "call_id": call.call_id,
                    "direction": call.direction,
                    "caller": {"number": call.number, "name": call.name},
                    "queue": call.queue,
                    "campaign": call.campaign,
                    "identification": self._ident(call),
                    "agents": [lg.history_entry() for lg in call.legs.values()],
                }
            )
        return out

    def _leg(self, call_id: str, agent_id: str) -> tuple[_Call, _Leg]:
        call = self._calls.get(call_id)
        if call is None:
            raise CallNotFound(call_id)
        leg = call.legs.get(agent_id)
        if leg is None or not leg.popped:
            raise NotYourCall(call_id)
        return call, leg

    def call_of(self, call_id: str, agent_id: str) -> dict[str, Any]:
        call, leg = self._leg(call_id, agent_id)
        return self.pop_payload(call, leg)

    def call_number(self, call_id: str) -> str:
        call = self._calls.get(call_id)
        if call is None:
            raise CallNotFound(call_id)
        return call.number

    async def interaction_id(self, call_id: str, agent_id: str) -> str:
        """The CRM interaction of this agent's part of the call; only answered legs have one."""
        call, leg = self._leg(call_id, agent_id)
        if leg.answered_at is None:
            raise NotAnswered(f"{call_id}: not answered by {agent_id}")
        iid = await self._ensure_record(call, leg, urgent=True)
        if iid is None:
            raise CrmUnavailable("the interaction could not be recorded in the CRM")
        return iid

    async def add_note(self, call_id: str, agent_id: str, text: str) -> dict[str, Any]:
        call, leg = self._leg(call_id, agent_id)
        iid = await self.interaction_id(call_id, agent_id)
        # the CRM keeps one notes text per interaction: send the agent's notes so far
        await self._crm.update_interaction(iid, actor=agent_id, notes="\n".join([*leg.notes, text]))
        leg.notes.append(text)
        return self.pop_payload(call, leg)

    async def set_disposition(self, call_id: str, agent_id: str, code: str) -> dict[str, Any]:
        call, leg = self._leg(call_id, agent_id)
        iid = await self.interaction_id(call_id, agent_id)
        if leg.disposition != code:  # the same code twice is a no-op, not a second write
            await self._crm.update_interaction(iid, actor=agent_id, disposition=code)
            leg.disposition = code
        return self.pop_payload(call, leg)

    async def link_cases(
        self, call_id: str, agent_id: str, *, case_ids: list[str], new_case: NewCase | None = None
    ) -> Any:
        """Link the agent's interaction to existing cases and/or a new one; the CRM's view of
        the interaction (with its case ids) is returned."""
        self._leg(call_id, agent_id)
        iid = await self.interaction_id(call_id, agent_id)
        return await self._crm.update_interaction(
            iid, actor=agent_id, case_ids=tuple(case_ids), new_case=new_case
        )

    async def link_customer(
        self,
        call_id: str,
        agent_id: str,
        customer_id: str,
        identification: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        call, leg = self._leg(call_id, agent_id)
        iid = await self.interaction_id(call_id, agent_id)
        await self._crm.update_interaction(iid, actor=agent_id, customer_id=customer_id)
        call.customer_id = customer_id
        leg.customer_id = customer_id
        if identification is not None:
            call.identification = identification
            self._push_identification(call)
        return self.pop_payload(call, leg)

    def queue_of(self, call_id: str) -> str | None:
        call = self._calls.get(call_id)
        return None if call is None else call.queue

    def campaign_of(self, call_id: str) -> str | None:
        call = self._calls.get(call_id)
        return None if call is None else call.campaign

    # ------------------------------------------------------------------ housekeeping

    def _prune(self) -> None:
        now = self._clock()
        ended = self._ended
        while ended:
            call_id, t = next(iter(ended.items()))
            if now - t < ENDED_RETENTION_S and len(ended) <= ENDED_MAX:
                break
            ended.popitem(last=False)
            self._forget(call_id)

    def _forget(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        for agent in call.legs:
            ids = self._by_agent.get(agent)
            if ids is not None:
                ids.discard(call_id)
                if not ids:
                    del self._by_agent[agent]

    async def drain(self) -> None:
        """Wait for pending CRM writes (tests, shutdown), without the batching delay."""
        while self._writer is not None and not self._writer.done():
            self._write_now.set()
            await asyncio.wait({self._writer})

    def stats(self) -> dict[str, int]:
        return {
            "calls": len(self._calls),
            "crm_writes_queued": len(self._dirty),
            "crm_write_batches": self.write_batches,
            "pops_sent": self.pops_sent,
            "degraded_pops": self.degraded_pops,
        }


def _card_id(ident: dict[str, Any] | None) -> str | None:
    if not ident or ident.get("status") != "one":
        return None
    card = ident.get("card") or {}
    cid = card.get("id") if isinstance(card, dict) else None
    return None if cid is None else str(cid)
