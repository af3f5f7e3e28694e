"""Shared domain types: call-level events and agent states.

This is the one module every package may import (it imports nothing of ours), so that the
tracker, the screen-pop router, the CRM bridge and the dialer speak the same vocabulary
without depending on each other. Keep it small and free of behaviour.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: One AMI message exactly as received: header name -> value (duplicates joined by "\n").
Message = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Party:
    """An endpoint channel taking part in a call (never a Local plumbing half)."""

    channel: str
    uniqueid: str
    linkedid: str
    number: str = ""
    name: str = ""
    exten: str = ""
    cid_calling_pres: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "uniqueid": self.uniqueid,
            "linkedid": self.linkedid,
            "number": self.number,
            "name": self.name,
            "exten": self.exten,
            "cid_calling_pres": self.cid_calling_pres,
        }


def _party(p: Party | None) -> dict[str, Any] | None:
    return None if p is None else p.to_dict()


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEvent:
    """Base of every call-level event; `call_id` is the Linkedid of the call's first channel."""

    event: ClassVar[str] = "call"
    call_id: str
    at: float
    #: name of the Asterisk server the call lives on (set by the link, "" in pure replay)
    server: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "call_id": self.call_id, "at": self.at}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ringing(CallEvent):
    event: ClassVar[str] = "ringing"
    caller: Party
    targets: tuple[Party, ...]
    #: enrichment, when the PBX tells us: the queue the call waited in, the DID dialled,
    #: and the caller's channel variables seen so far (IVR input such as ACCOUNT, dialer's
    #: CAMPAIGN/LEAD). Never required for the event to be emitted.
    queue: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["caller"] = self.caller.to_dict()
        d["targets"] = [t.to_dict() for t in self.targets]
        if self.queue is not None:
            d["queue"] = self.queue
        if self.variables:
            d["variables"] = dict(self.variables)
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class RingingEnd(CallEvent):
    event: ClassVar[str] = "ringing_end"
    caller: Party
    targets: tuple[Party, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["caller"] = self.caller.to_dict()
        d["targets"] = [t.to_dict() for t in self.targets]
        d["reason"] = self.reason
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Up(CallEvent):
    event: ClassVar[str] = "up"
    caller: Party
    callee: Party

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["caller"] = self.caller.to_dict()
        d["callee"] = self.callee.to_dict()
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(CallEvent):
    event: ClassVar[str] = "transfer"
    kind: str  # attended | blind | blonde
    caller: Party
    transferer: Party | None
    targets: tuple[Party, ...]

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["kind"] = self.kind
        d["caller"] = self.caller.to_dict()
        d["transferer"] = _party(self.transferer)
        d["targets"] = [t.to_dict() for t in self.targets]
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(CallEvent):
    event: ClassVar[str] = "hangup"
    caller: Party
    reason: str  # completed | no-answer | busy | rejected | answered-elsewhere | cancelled | failed
    cause: int | None

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["caller"] = self.caller.to_dict()
        d["reason"] = self.reason
        d["cause"] = self.cause
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueAbandon(CallEvent):
    event: ClassVar[str] = "queue_abandon"
    caller: Party
    queue: str

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["caller"] = self.caller.to_dict()
        d["queue"] = self.queue
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent(CallEvent):
    event: ClassVar[str] = "user_event"
    caller: Party | None
    fields: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["caller"] = _party(self.caller)
        d["fields"] = dict(self.fields)
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginateResult(CallEvent):
    event: ClassVar[str] = "originate_result"
    action_id: str
    result: str  # answered | busy | no-answer | congestion | failed
    cause: int | None
    variables: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = CallEvent.to_dict(self)
        d["action_id"] = self.action_id
        d["result"] = self.result
        d["cause"] = self.cause
        d["variables"] = dict(self.variables)
        return d


class AgentStatus(enum.StrEnum):
    """What an agent is doing; time accounting sums these to logged-in time."""

    LOGGED_OUT = "logged_out"
    READY = "ready"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChange:
    """An agent entered `status` at `at`; produced by cti, consumed by dialer and statistics."""

    agent: str
    status: AgentStatus
    at: float
    reason: str | None = None  # pause reason
    call_id: str | None = None
    campaign: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "status": self.status.value,
            "at": self.at,
            "reason": self.reason,
            "call_id": self.call_id,
            "campaign": self.campaign,
        }
