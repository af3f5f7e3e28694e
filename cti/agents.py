"""Agents logged in to the CTI: their device, queues and state, and the AMI actions behind
login, logout and pause.

Agents have no fixed line: each login names a device (`PJSIP/1001`), and from then on the
calls ringing or connected at that device are the agent's. The state is derived from what the
agent's calls are doing (ringing, connected), a wrap-up timer after a connected call ends, and
the pause flag; every change becomes an `AgentStateChange` with the time it happened, which the
dialer and the statistics consume.

`on_call_event` and `tick` are synchronous and do no I/O (they run on the hot path of every
call event); only login/logout/pause talk to Asterisk.

Logins outlive the process: Asterisk keeps the queue members the CTI added, so login, logout,
pause and unpause are also written to a session store (one small write each, off the call
path), `restore` reads them back at start-up before any AMI event is processed, and the first
QueueStatus after the link is up (`apply_queue_status`) reconciles them with the PBX.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ami.actions import Action, ActionError, build_action
from ami.channels import device_of
from ami.events import (
    AgentStateChange,
    AgentStatus,
    CallEvent,
    Hangup,
    Party,
    Ringing,
    RingingEnd,
    Transfer,
    Up,
)
from cti.accounts import AgentSession
from cti.settings import AgentSettings

log = structlog.get_logger(__name__)

#: a device as Asterisk names one: technology/resource, no channel suffix, no separators that
#: Dial() or AMI would interpret
_DEVICE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}/[A-Za-z0-9@._+#*:-]{1,80}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
_NAME_MAX = 80
#: the QueuePause reason the PBX shows while an agent is in wrap-up (not an agent's pause)
WRAP_UP_REASON = "wrap-up"


class AmiSender(Protocol):
    async def send(self, action: Action, timeout: float | None = None) -> Any: ...  # noqa: ASYNC109


class SessionStore(Protocol):
    """Where logins are kept across restarts (cti.accounts.AgentSessionStore)."""

    async def write(self, saves: Sequence[AgentSession], deletes: Sequence[str] = ()) -> None: ...

    async def load(self) -> list[AgentSession]: ...


#: the reason shown when a restored login is dropped because Asterisk no longer has the member
GONE_FROM_PBX = "not_on_pbx"


class AgentError(Exception):
    """An agent request was refused; `code` is machine-readable:
    bad_device, device_in_use, bad_queue, bad_name, bad_reason, not_logged_in,
    unknown_server, ami_failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class AgentView:
    agent_id: str
    status: AgentStatus
    since: float
    name: str = ""
    reason: str | None = None
    device: str | None = None
    server: str | None = None
    queues: tuple[str, ...] = ()
    wrap_up_until: float | None = None
    calls: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "since": self.since,
            "device": self.device,
            "server": self.server,
            "queues": list(self.queues),
            "wrap_up_until": self.wrap_up_until,
            "calls": list(self.calls),
        }


# per-call leg states of an agent
_RINGING, _DIALING, _UP = "ringing", "dialing", "up"


@dataclass
class _CallInfo:
    leg: str
    queue: str | None = None
    campaign: str | None = None
    connected: bool = False


@dataclass
class _Agent:
    agent_id: str
    name: str
    device: str
    server: str | None
    queues: list[str]
    status: AgentStatus
    since: float
    paused: str | None = None  # pause reason
    shown_reason: str | None = None  # reason of the last emitted change
    pbx_paused: str | None = None  # pause reason last set on the PBX (None: not paused)
    wrap_up_until: float | None = None
    wrap_call: str | None = None
    wrap_campaign: str | None = None
    calls: dict[str, _CallInfo] = field(default_factory=dict)
    logged_in_at: float = 0.0
    #: when the login or the agent's own pause state last changed (kept with the session)
    session_since: float = 0.0


def check_device(device: str) -> str:
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise AgentError(
            "bad_device",
            "device must look like TECH/resource (e.g. PJSIP/1001), one line, no spaces",
        )
    if device_of(device) != device:
        raise AgentError(
            "bad_device", f"{device!r} is a channel name; give the device ({device_of(device)})"
        )
    return device


def _ok(resp: Any) -> tuple[bool, str]:
    """(ok, message) from whatever the AMI link returns (AmiResponse or a plain mapping)."""
    if resp is None:
        return True, ""
    ok = getattr(resp, "ok", None)
    msg = getattr(resp, "message", None)
    if ok is None and isinstance(resp, Mapping):
        ok = str(resp.get("Response", "")).lower() == "success"
        msg = resp.get("Message", "")
    return bool(ok), str(msg or "")


class AgentService:
    def __init__(
        self,
        settings: AgentSettings,
        ami: Mapping[str, AmiSender],
        clock: Callable[[], float] = time.time,
        sessions: SessionStore | None = None,
    ) -> None:
        self._settings = settings
        self._ami = ami
        self._clock = clock
        self._sessions = sessions
        #: agents whose stored session is out of date (written by `_write_sessions`)
        self._dirty: set[str] = set()
        self._writer: asyncio.Task[None] | None = None
        self._agents: dict[str, _Agent] = {}
        self._by_device: dict[str, str] = {}
        #: call id -> the agents that have a leg in it (in leg order): a hangup touches only
        #: them, not every logged-in agent
        self._by_call: dict[str, dict[str, _Agent]] = {}
        #: agents that may be in wrap-up (cleaned lazily by `tick`): the timer check walks
        #: these, not every logged-in agent
        self._wrapping: dict[str, _Agent] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[Callable[[AgentStateChange], object]] = []
        self._syncs: dict[str, asyncio.Task[None]] = {}
        self.action_timeout: float | None = None

    # -- listeners ---------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[AgentStateChange], object]) -> None:
        self._listeners.append(listener)

    def _emit(self, change: AgentStateChange) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("agent state listener failed", agent=change.agent)

    # -- queries -----------------------------------------------------------------------------

    def agent_for_device(self, device: str) -> str | None:
        return self._by_device.get(device)

    def agent_for_channel(self, channel: str) -> str | None:
        return self._by_device.get(device_of(channel))

    def view(self, agent_id: str) -> AgentView:
        a = self._agents.get(agent_id)
        if a is None:
            return AgentView(agent_id=agent_id, status=AgentStatus.LOGGED_OUT, since=0.0)
        return AgentView(
            agent_id=a.agent_id,
            status=a.status,
            since=a.since,
            name=a.name,
            reason=a.paused if a.status is AgentStatus.PAUSED else None,
            device=a.device,
            server=a.server,
            queues=tuple(a.queues),
            wrap_up_until=a.wrap_up_until,
            calls=tuple(a.calls),
        )

    def views(self) -> list[AgentView]:
        return [self.view(agent_id) for agent_id in self._agents]

    def logged_in(self) -> list[str]:
        return list(self._agents)

    # -- AMI side ----------------------------------------------------------------------------

    def _link(self, server: str | None) -> tuple[str, AmiSender]:
        if server is None:
            if len(self._ami) != 1:
                raise AgentError(
                    "unknown_server", "several Asterisk servers are configured: name one"
                )
            name = next(iter(self._ami))
        else:
            name = server
        link = self._ami.get(name)
        if link is None:
            raise AgentError("unknown_server", f"no Asterisk server named {name!r}")
        return name, link

    async def _act(
        self, link: AmiSender, name: str, fields: Mapping[str, object], tolerate: str = ""
    ) -> None:
        try:
            action = build_action(name, fields)
        except ActionError as e:
            raise AgentError("bad_request", str(e)) from None
        try:
            resp = await link.send(action, timeout=self.action_timeout)
        except Exception as e:  # AmiError (Response: Error), AmiUnavailable, timeouts
            if tolerate and tolerate in str(e).lower():
                return
            raise AgentError("ami_failed", f"{name} failed: {e}") from None
        ok, message = _ok(resp)
        if not ok and not (tolerate and tolerate in message.lower()):
            raise AgentError("ami_failed", f"{name} refused by Asterisk: {message}")

    def _lock(self, agent_id: str) -> asyncio.Lock:
        lock = self._locks.get(agent_id)
        if lock is None:
            lock = self._locks[agent_id] = asyncio.Lock()
        return lock

    async def login(
        self,
        agent_id: str,
        *,
        name: str,
        device: str,
        queues: Sequence[str],
        server: str | None = None,
    ) -> AgentView:
        """Add the agent's device to each queue (QueueAdd with the agent's name) and start
        it READY. Logging in again moves the agent to the new device/queues."""
        check_device(device)
        if not isinstance(name, str) or len(name) > _NAME_MAX or any(c in name for c in "\r\n\0"):
            raise AgentError("bad_name", f"agent name: one line, at most {_NAME_MAX} characters")
        qs: list[str] = []
        for q in queues:
            if not isinstance(q, str) or not _QUEUE.fullmatch(q):
                raise AgentError("bad_queue", f"queue name {q!r} is not valid")
            if q not in qs:
                qs.append(q)
        server_name, link = self._link(server)
        async with self._lock(agent_id):
            holder = self._by_device.get(device)
            if holder is not None and holder != agent_id:
                raise AgentError("device_in_use", f"{device} is in use by another agent")
            old = self._agents.get(agent_id)
            if old is not None and (old.device != device or old.server != server_name):
                await self._remove_from_queues(old, old.queues)
                self._forget(old, self._clock())
                old = None
            # claim the device before the first await, so two logins cannot both take it
            self._by_device[device] = agent_id
            added: list[str] = []
            try:
                for q in qs:
                    if old is not None and q in old.queues:
                        continue
                    await self._act(
                        link,
                        "QueueAdd",
                        {
                            "Queue": q,
                            "Interface": device,
                            "MemberName": name or agent_id,
                            "StateInterface": device,
                            "Paused": "true" if old is not None and old.paused else "false",
                        },
                        tolerate="already there",
                    )
                    added.append(q)
            except AgentError:
                for q in added:
                    try:
                        await self._act(
                            link, "QueueRemove", {"Queue": q, "Interface": device}, "not there"
                        )
                    except AgentError:
                        log.warning("rollback of QueueAdd failed", agent=agent_id, queue=q)
                if old is None:
                    self._by_device.pop(device, None)
                raise
            now = self._clock()
            if old is not None:
                gone = [q for q in old.queues if q not in qs]
                await self._remove_from_queues(old, gone)
                old.queues = qs
                old.name = name
            else:
                self._agents[agent_id] = _Agent(
                    agent_id=agent_id,
                    name=name,
                    device=device,
                    server=server_name,
                    queues=qs,
                    status=AgentStatus.LOGGED_OUT,
                    since=now,
                    logged_in_at=now,
                    session_since=now,
                )
                self._set(self._agents[agent_id], now)
                log.info("agent logged in", agent=agent_id, device=device, queues=qs)
            await self._store_session(agent_id)
            return self.view(agent_id)

    async def _remove_from_queues(self, a: _Agent, queues: Sequence[str]) -> None:
        _, link = self._link(a.server)
        for q in queues:
            await self._act(link, "QueueRemove", {"Queue": q, "Interface": a.device}, "not there")

    def _forget(self, a: _Agent, now: float, reason: str | None = None) -> None:
        self._agents.pop(a.agent_id, None)
        self._mark(a.agent_id)
        for cid in a.calls:
            self._unindex(a, cid)
        if self._wrapping.get(a.agent_id) is a:
            del self._wrapping[a.agent_id]
        if self._by_device.get(a.device) == a.agent_id:
            del self._by_device[a.device]
        if a.status is not AgentStatus.LOGGED_OUT:
            a.status, a.since = AgentStatus.LOGGED_OUT, now
            self._emit(
                AgentStateChange(
                    agent=a.agent_id, status=AgentStatus.LOGGED_OUT, at=now, reason=reason
                )
            )

    async def logout(self, agent_id: str) -> None:
        """QueueRemove from each queue; the agent is LOGGED_OUT even if Asterisk already
        forgot the membership."""
        async with self._lock(agent_id):
            a = self._agents.get(agent_id)
            if a is None:
                return
            await self._remove_from_queues(a, a.queues)
            self._forget(a, self._clock())
            log.info("agent logged out", agent=agent_id)
            await self._store_session(agent_id)

    def _require(self, agent_id: str) -> _Agent:
        a = self._agents.get(agent_id)
        if a is None:
            raise AgentError("not_logged_in", "the agent is not logged in")
        return a

    async def pause(self, agent_id: str, reason: str) -> AgentView:
        if reason not in self._settings.pause_reasons:
            raise AgentError(
                "bad_reason",
                f"pause reason must be one of: {', '.join(self._settings.pause_reasons)}",
            )
        async with self._lock(agent_id):
            a = self._require(agent_id)
            _, link = self._link(a.server)
            # no Queue header: pauses the interface in every queue, static members included
            await self._act(
                link, "QueuePause", {"Interface": a.device, "Paused": "true", "Reason": reason}
            )
            now = self._clock()
            a.paused = a.pbx_paused = reason
            a.session_since = now
            # choosing a pause ends wrap-up: from now on the time counts as paused
            a.wrap_up_until = None
            self._set(a, now)
            await self._store_session(agent_id)
            return self.view(agent_id)

    async def unpause(self, agent_id: str) -> AgentView:
        async with self._lock(agent_id):
            a = self._require(agent_id)
            _, link = self._link(a.server)
            await self._act(link, "QueuePause", {"Interface": a.device, "Paused": "false"})
            a.paused = a.pbx_paused = None
            a.session_since = now = self._clock()
            self._set(a, now)
            await self._store_session(agent_id)
            return self.view(agent_id)

    def end_wrap_up(self, agent_id: str) -> AgentView:
        a = self._require(agent_id)
        if a.wrap_up_until is not None:
            a.wrap_up_until = None
            self._set(a, self._clock())
        return self.view(agent_id)

    # -- state machine -----------------------------------------------------------------------

    def _derive(self, a: _Agent) -> AgentStatus:
        legs = [c.leg for c in a.calls.values()]
        if _UP in legs or _DIALING in legs:
            return AgentStatus.ON_CALL
        if _RINGING in legs:
            return AgentStatus.RINGING
        if a.wrap_up_until is not None:
            return AgentStatus.WRAP_UP
        if a.paused is not None:
            return AgentStatus.PAUSED
        return AgentStatus.READY

    def _set(
        self,
        a: _Agent,
        at: float,
        call_id: str | None = None,
        campaign: str | None = None,
    ) -> None:
        if self._settings.pause_during_wrap_up and self._want_pbx(a) != a.pbx_paused:
            self._schedule_sync(a.agent_id)
        status = self._derive(a)
        reason = a.paused if status is AgentStatus.PAUSED else None
        if status is a.status and reason == a.shown_reason:
            return
        a.shown_reason = reason
        a.status, a.since = status, at
        if status is AgentStatus.WRAP_UP:
            call_id, campaign = a.wrap_call, a.wrap_campaign
        self._emit(
            AgentStateChange(
                agent=a.agent_id,
                status=status,
                at=at,
                reason=reason,
                call_id=call_id,
                campaign=campaign,
            )
        )

    # -- keeping the PBX's pause in step with wrap-up ----------------------------------------

    def _want_pbx(self, a: _Agent) -> str | None:
        """The pause the PBX should have: the agent's own, or WRAP_UP_REASON during wrap-up
        (so the queues do not ring an agent who is still writing up the last call)."""
        if a.paused is not None:
            return a.paused
        if a.wrap_up_until is not None and self._settings.pause_during_wrap_up:
            return WRAP_UP_REASON
        return None

    def _schedule_sync(self, agent_id: str) -> None:
        if agent_id in self._syncs:
            return  # the running sync re-reads the wanted state when it gets the lock
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._sync_pbx(agent_id), name=f"agent-pbx-sync-{agent_id}")
        self._syncs[agent_id] = task

    async def _sync_pbx(self, agent_id: str) -> None:
        try:
            for _ in range(4):  # converge; the wanted state may change while we wait
                async with self._lock(agent_id):
                    a = self._agents.get(agent_id)
                    if a is None:
                        return
                    want = self._want_pbx(a)
                    if want == a.pbx_paused:
                        return
                    fields = {"Interface": a.device, "Paused": "true" if want else "false"}
                    if want:
                        fields["Reason"] = want
                    try:
                        _, link = self._link(a.server)
                        await self._act(link, "QueuePause", fields)
                    except AgentError as e:
                        log.warning("wrap-up pause not applied", agent=agent_id, error=str(e))
                        return
                    a.pbx_paused = want
        finally:
            self._syncs.pop(agent_id, None)

    async def settle(self) -> None:
        """Wait for pending PBX pause updates and session writes (tests, shutdown)."""
        while self._syncs:
            await asyncio.gather(*tuple(self._syncs.values()), return_exceptions=True)
        await self.flush_sessions()

    # -- sessions that survive a restart -----------------------------------------------------

    def _mark(self, agent_id: str) -> None:
        """The agent's stored session must follow its current state (written soon; a login
        that changes state awaits the write through `_store_session`)."""
        if self._sessions is None:
            return
        self._dirty.add(agent_id)
        if self._writer is None or self._writer.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._writer = loop.create_task(self._write_sessions(), name="agent-sessions")

    async def _store_session(self, agent_id: str) -> None:
        self._mark(agent_id)
        await self.flush_sessions()

    async def flush_sessions(self) -> None:
        """Wait until every stored session matches the agents' current state."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_sessions(self) -> None:
        """Write the current state of every marked agent in one transaction (the latest state
        wins, so writes never land out of order); a failed write is logged, the agents keep
        working."""
        store = self._sessions
        assert store is not None
        while self._dirty:
            ids = list(self._dirty)
            self._dirty.clear()
            saves: list[AgentSession] = []
            deletes: list[str] = []
            for agent_id in ids:
                a = self._agents.get(agent_id)
                if a is None:
                    deletes.append(agent_id)
                    continue
                saves.append(
                    AgentSession(
                        agent_id=a.agent_id,
                        name=a.name,
                        device=a.device,
                        server=a.server,
                        queues=tuple(a.queues),
                        paused=a.paused,
                        logged_in_at=a.logged_in_at,
                        state_since=a.session_since,
                    )
                )
            try:
                await store.write(saves, deletes)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("agent sessions not stored", agents=len(ids), error=type(e).__name__)

    async def restore(self) -> int:
        """Take back the logins stored by the previous process (call before the AMI links
        start: the first QueueStatus then reconciles them with the PBX). Returns how many."""
        if self._sessions is None:
            return 0
        restored = 0
        for s in await self._sessions.load():
            try:
                check_device(s.device)
                server_name, _ = self._link(s.server)
            except AgentError as e:
                log.warning("stored agent session dropped", agent=s.agent_id, error=str(e))
                self._mark(s.agent_id)  # not in _agents: the row is deleted
                continue
            holder = self._by_device.get(s.device)
            if s.agent_id in self._agents or (holder is not None and holder != s.agent_id):
                log.warning("stored agent session dropped: device taken", agent=s.agent_id)
                continue
            a = _Agent(
                agent_id=s.agent_id,
                name=s.name,
                device=s.device,
                server=server_name,
                queues=list(s.queues),
                status=AgentStatus.LOGGED_OUT,
                since=s.state_since,
                paused=s.paused,
                pbx_paused=s.paused,
                logged_in_at=s.logged_in_at,
                session_since=s.state_since,
            )
            self._agents[s.agent_id] = a
            self._by_device[s.device] = s.agent_id
            self._set(a, s.state_since)
            restored += 1
            log.info("agent login restored", agent=s.agent_id, device=s.device, queues=a.queues)
        return restored

    def _agent_of(self, p: Party | None, server: str) -> _Agent | None:
        if p is None:
            return None
        agent_id = self._by_device.get(device_of(p.channel))
        if agent_id is None:
            return None
        a = self._agents.get(agent_id)
        if a is None or (server and a.server and a.server != server):
            return None
        return a

    def _unindex(self, a: _Agent, call_id: str) -> None:
        holders = self._by_call.get(call_id)
        if holders is not None and holders.get(a.agent_id) is a:
            del holders[a.agent_id]
            if not holders:
                del self._by_call[call_id]

    def _drop_call(self, a: _Agent, call_id: str) -> _CallInfo | None:
        info = a.calls.pop(call_id, None)
        if info is not None:
            self._unindex(a, call_id)
        return info

    def _start_leg(
        self, a: _Agent, ev: CallEvent, leg: str, queue: str | None, camp: str | None
    ) -> None:
        info = a.calls.get(ev.call_id)
        if info is None:
            info = a.calls[ev.call_id] = _CallInfo(leg=leg, queue=queue, campaign=camp)
            self._by_call.setdefault(ev.call_id, {})[a.agent_id] = a
        else:
            if info.leg != _UP:
                info.leg = leg
            info.queue = info.queue or queue
            info.campaign = info.campaign or camp
        if leg == _UP:
            info.connected = True
        # a new call interrupts wrap-up
        a.wrap_up_until = None
        self._set(a, ev.at, ev.call_id, info.campaign)

    def _end_leg(self, a: _Agent, call_id: str, at: float) -> None:
        info = self._drop_call(a, call_id)
        if info is None:
            return
        if info.connected and not a.calls:
            secs = self._wrap_seconds(info)
            if secs > 0:
                a.wrap_up_until = at + secs
                self._wrapping[a.agent_id] = a
                a.wrap_call, a.wrap_campaign = call_id, info.campaign
        self._set(a, at, call_id, info.campaign)

    def _wrap_seconds(self, info: _CallInfo) -> float:
        table = self._settings.wrap_up_seconds
        for key in (info.campaign, info.queue):
            if key and key in table:
                return float(table[key])
        return float(table.get("default", 0.0))

    def on_call_event(self, ev: CallEvent) -> None:
        if not self._agents:
            return
        server = ev.server
        if isinstance(ev, Ringing):
            camp = ev.variables.get("CAMPAIGN") if ev.variables else None
            for t in ev.targets:
                a = self._agent_of(t, server)
                if a is not None:
                    self._start_leg(a, ev, _RINGING, ev.queue, camp)
            a = self._agent_of(ev.caller, server)
            if a is not None:  # the agent dialled this call itself
                self._start_leg(a, ev, _DIALING, ev.queue, camp)
        elif isinstance(ev, Up):
            for p in (ev.callee, ev.caller):
                a = self._agent_of(p, server)
                if a is not None:
                    self._start_leg(a, ev, _UP, None, None)
        elif isinstance(ev, RingingEnd):
            for t in ev.targets:
                a = self._agent_of(t, server)
                if a is None:
                    continue
                info = a.calls.get(ev.call_id)
                if info is None or info.leg == _UP:
                    continue
                if ev.reason == "answer":
                    # the agent picked up; `up` confirms once the bridge forms
                    self._start_leg(a, ev, _UP, None, None)
                else:
                    self._end_leg(a, ev.call_id, ev.at)
        elif isinstance(ev, Transfer):
            self._on_transfer(ev)
        elif isinstance(ev, Hangup):
            holders = self._by_call.get(ev.call_id)
            if holders:
                for a in tuple(holders.values()):
                    self._end_leg(a, ev.call_id, ev.at)

    def _on_transfer(self, ev: Transfer) -> None:
        server = ev.server
        moved = self._agent_of(ev.transferer, server)
        consult: set[str] = set()
        queue = campaign = None
        if moved is not None:
            info = moved.calls.get(ev.call_id)
            if info is not None:
                queue, campaign = info.queue, info.campaign
            consult = {cid for cid in moved.calls if cid != ev.call_id}
            # the transferer's phone is out of this call and of its consultation call
            for cid in list(moved.calls):
                if cid != ev.call_id:
                    moved.calls[cid].connected = False
                    self._drop_call(moved, cid)
            self._end_leg(moved, ev.call_id, ev.at)
        leg = _UP if ev.kind == "attended" else _RINGING
        for t in ev.targets:
            a = self._agent_of(t, server)
            if a is None or a is moved:
                continue
            for cid in consult & set(a.calls):
                self._drop_call(a, cid)  # the consultation call became the transferred call
            self._start_leg(a, ev, leg, queue, campaign)

    def tick(self, now: float) -> None:
        """End wrap-ups whose timer ran out (the app calls this every second)."""
        for agent_id, a in tuple(self._wrapping.items()):
            until = a.wrap_up_until
            if until is None:  # ended otherwise (a new call, a pause, end_wrap_up)
                del self._wrapping[agent_id]
            elif until <= now and not a.calls:
                del self._wrapping[agent_id]
                a.wrap_up_until = None
                self._set(a, until)

    def next_deadline(self) -> float | None:
        deadlines = [a.wrap_up_until for a in self._wrapping.values() if a.wrap_up_until]
        return min(deadlines) if deadlines else None

    # -- resync ------------------------------------------------------------------------------

    def apply_queue_status(
        self, members: list[dict[str, str]], *, server: str | None = None
    ) -> None:
        """Reconcile with QueueStatus `QueueMember` items after an AMI (re)connect: an agent
        whose device is in no queue any more is logged out (Asterisk restarted), queue lists
        follow Asterisk, and the pause flag follows `Paused`/`PausedReason`."""
        now = self._clock()
        found: dict[str, list[dict[str, str]]] = {}
        for m in members:
            loc = m.get("Location") or m.get("Interface") or ""
            agent_id = self._by_device.get(loc)
            if agent_id is not None:
                found.setdefault(agent_id, []).append(m)
        for a in tuple(self._agents.values()):
            if server is not None and a.server not in (None, server):
                continue
            items = found.get(a.agent_id)
            if not items:
                if a.queues:
                    log.warning("agent no longer in any queue on the PBX", agent=a.agent_id)
                    self._forget(a, now, GONE_FROM_PBX)
                continue
            before = (tuple(a.queues), a.paused)
            a.queues = [m["Queue"] for m in items if m.get("Queue")] or a.queues
            paused = [m for m in items if m.get("Paused") == "1"]
            if paused and len(paused) == len(items):
                reason = paused[0].get("PausedReason") or a.paused or "unknown"
                a.pbx_paused = reason
                if reason != WRAP_UP_REASON and a.paused != reason:
                    a.paused = reason
                    a.wrap_up_until = None
            elif not paused:
                a.pbx_paused = None
                a.paused = None
            if (tuple(a.queues), a.paused) != before:
                self._mark(a.agent_id)
            # emits the change, if any, and puts a stale wrap-up pause right
            self._set(a, now)
