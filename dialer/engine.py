"""The live dialer: pacing decisions turned into Originates, call events turned into outcomes.

Per running campaign, at every tick (and whenever the floor changes) the engine builds a
`Floor` from the agents of the campaign's queue and its calls in flight, asks the campaign's
pacer how many calls to launch, claims that many leads (compliance is checked there), writes
each attempt, and only then sends the Originate, with the attempt id as ActionID and
ChannelId. Call events from the tracker close the loop:

* `originate_result` busy / no-answer / congestion / failed  -> outcome, retry policy;
* `originate_result` answered -> the connect clock starts (the 2 s rule);
* `up` on that call -> connected to an agent (the pop carries CAMPAIGN/LEAD);
* no `up` within the connect deadline -> abandoned (the dialplan plays the safe-harbor
  message; `config/asterisk/extensions.conf`), counted against the cap;
* `hangup` -> handled (connected) or abandoned (answered, never connected);
* `user_event` CtiMachine -> machine.

I/O goes through the callables given to the constructor (the AMI link, the agent registry,
the notifier), so this module never imports `cti`, and tests drive it with the real PBX
simulator and a controllable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ami.actions import build_action
from ami.events import (
    AgentStateChange,
    AgentStatus,
    CallEvent,
    Hangup,
    OriginateResult,
    Up,
    UserEvent,
)
from crm_bridge.db import make_sessionmaker
from dialer.leads import ClaimedLead, ContactCheck, LeadStore, next_day_start
from dialer.models import Campaign
from dialer.pacing import Floor, Outcome, make_pacer
from dialer.retry import RetryPolicy
from dialer.settings import DialerSettings

log = structlog.get_logger(__name__)

#: (status, since) of every logged-in agent serving a queue
AgentsOfQueue = Callable[[str], Sequence[tuple[AgentStatus, float]]]
Originate = Callable[[str, Any], Awaitable[Any]]  # (server name, Action) -> response
Notify = Callable[[str, str, dict[str, Any]], object]  # (agent, message type, payload)

#: how often the abandonment window is re-read from the database (in between, the engine
#: counts its own answers and abandons on top of the last reading)
WINDOW_REFRESH_SECONDS = 15.0


@dataclass(slots=True)
class InFlight:
    attempt_id: str
    lead_id: int
    number: str
    launched_at: float
    answered_at: float | None = None
    connected_at: float | None = None
    agent: str = ""
    abandoned: bool = False


@dataclass(slots=True)
class _Run:
    """A running campaign's in-memory state; the database stays the source of truth."""

    campaign: Campaign
    pacer: Any
    policy: RetryPolicy
    calls: dict[str, InFlight] = field(default_factory=dict)
    window_answered: int = 0
    window_abandoned: int = 0
    window_read_at: float = -1e18
    launched: int = 0
    last_decision: int = 0


class Dialer:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: DialerSettings,
        *,
        originate: Originate,
        agents_of_queue: AgentsOfQueue,
        notify: Notify | None = None,
        may_contact: ContactCheck | None = None,
        default_server: str = "",
        clock: Callable[[], float] = time.time,
        instance: str = "dialer",
    ) -> None:
        self._engine = engine
        self._sessions = make_sessionmaker(engine)
        self.settings = settings
        self._originate = originate
        self._agents_of_queue = agents_of_queue
        self._notify = notify
        self._server = default_server
        self._clock = clock
        self.leads = LeadStore(
            engine,
            instance=instance,
            may_contact=may_contact,
            abandon_block_hours=settings.no_redial_after_abandon_hours,
            machine_block_hours=settings.machine_redial_hours,
        )
        self._runs: dict[int, _Run] = {}
        self._by_attempt: dict[str, _Run] = {}
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self.stats: dict[str, int] = {
            "originates": 0,
            "originate_errors": 0,
            "answered": 0,
            "connected": 0,
            "abandoned": 0,
            "handled": 0,
        }

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self, live_call_ids: set[str] | None = None) -> None:
        """Load running campaigns, reconcile attempts left in flight by a previous process
        with the calls the PBX still has, and start the pacing loop."""
        async with self._sessions() as s:
            running = (
                (await s.execute(select(Campaign).where(Campaign.state == "running")))
                .scalars()
                .all()
            )
        for c in running:
            run = self._activate(c)
            res = await self.leads.reconcile(
                c.id, live_call_ids or set(), self._clock(), run.policy
            )
            if res["lost"] or res["kept"] or res["released"]:
                log.info("dialer reconciled", campaign=c.name, **res)
        self._task = asyncio.create_task(self._loop(), name="dialer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _activate(self, c: Campaign) -> _Run:
        run = self._runs.get(c.id)
        if run is None:
            run = _Run(
                campaign=c,
                pacer=make_pacer(
                    c.mode,
                    abandon_cap=c.abandon_cap,
                    connect_deadline=self.settings.connect_deadline,
                    ring_timeout=c.max_ring_seconds,
                ),
                policy=RetryPolicy.from_mapping(c.retry or {}),
            )
            self._runs[c.id] = run
        else:
            run.campaign = c
        return run

    async def campaign_changed(self, c: Campaign) -> None:
        """Called by the campaign service after start/stop/pause/edit."""
        if c.state == "running":
            self._activate(c)
            self.kick()
        else:
            run = self._runs.get(c.id)
            if run is not None and not run.calls:
                self._runs.pop(c.id, None)
            elif run is not None:
                run.campaign = c  # let calls in flight finish; launch nothing new

    def kick(self) -> None:
        """The floor changed (an agent freed up): decide now rather than at the next tick."""
        self._kick.set()

    async def _loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.tick_seconds):
                    await self._kick.wait()
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("dialer tick failed")

    # ---- pacing ---------------------------------------------------------------------------

    async def tick(self) -> None:
        async with self._lock:
            now = self._clock()
            for run in list(self._runs.values()):
                self._expire_connect_deadlines(run, now)
                for attempt_id in [a for a, f in run.calls.items() if f.abandoned]:
                    await self._finish(run, attempt_id, "abandoned", now)
                if run.campaign.state != "running":
                    continue
                await self._launch(run, now)

    def floor(self, run: _Run, now: float) -> Floor:
        ready = 0
        wrapping: list[float] = []
        talking: list[float] = []
        for status, since in self._agents_of_queue(run.campaign.queue):
            if status is AgentStatus.READY:
                ready += 1
            elif status is AgentStatus.WRAP_UP:
                wrapping.append(max(0.0, now - since))
            elif status in (AgentStatus.ON_CALL, AgentStatus.RINGING):
                talking.append(max(0.0, now - since))
        dialing = tuple(now - f.launched_at for f in run.calls.values() if f.answered_at is None)
        waiting = sum(
            1
            for f in run.calls.values()
            if f.answered_at is not None and f.connected_at is None and not f.abandoned
        )
        return Floor(
            now=now,
            ready=ready,
            wrapping=tuple(wrapping),
            talking=tuple(talking),
            dialing=dialing,
            waiting=waiting,
            answered=run.window_answered,
            abandoned=run.window_abandoned,
        )

    async def _launch(self, run: _Run, now: float) -> None:
        if now - run.window_read_at > WINDOW_REFRESH_SECONDS:
            run.window_answered, run.window_abandoned = await self.leads.abandon_window(
                run.campaign, now
            )
            run.window_read_at = now
        n = run.pacer.decide(self.floor(run, now))
        run.last_decision = n
        if n <= 0:
            return
        for lead in await self.leads.claim(run.campaign, n, now):
            await self._dial(run, lead, now)

    async def _dial(self, run: _Run, lead: ClaimedLead, now: float) -> None:
        c = run.campaign
        attempt = await self.leads.start_attempt(lead, now, predicted=None)
        flight = InFlight(attempt.id, lead.lead_id, lead.number, now)
        run.calls[attempt.id] = flight
        self._by_attempt[attempt.id] = run
        number = lead.number.lstrip("+")
        action = build_action(
            "Originate",
            {
                "Channel": self.settings.channel_template.format(number=number, e164=lead.number),
                "Context": self.settings.context,
                "Exten": self.settings.exten,
                "Priority": 1,
                "Async": True,
                "Timeout": int(c.max_ring_seconds * 1000),
                "CallerID": c.caller_id or None,
                "ChannelId": attempt.id,
                "OtherChannelId": f"{attempt.id}-b",
                "ActionID": attempt.action_id,
            },
            variables={
                "__CAMPAIGN": c.name,
                "__LEAD": lead.lead_id,
                "LEAD_PHONE": lead.number,
                "QUEUE": c.queue,
                "CTI_DEADLINE": int(self.settings.connect_deadline),
                "AMD": 1 if c.amd else 0,
            },
        )
        run.launched += 1
        try:
            await self._originate(c.server or self._server, action)
            self.stats["originates"] += 1
        except Exception as e:
            # Not sent (link down) or outcome unknown: never re-send; the attempt ends as
            # lost and the retry policy decides when to try again.
            self.stats["originate_errors"] += 1
            log.warning("originate failed", campaign=c.name, lead=lead.lead_id, error=str(e))
            await self._finish(run, attempt.id, "lost", self._clock())

    def _expire_connect_deadlines(self, run: _Run, now: float) -> None:
        deadline = self.settings.connect_deadline
        for f in run.calls.values():
            if (
                f.answered_at is not None
                and f.connected_at is None
                and not f.abandoned
                and now - f.answered_at > deadline
            ):
                f.abandoned = True

    # ---- outcomes -------------------------------------------------------------------------

    async def on_event(self, ev: Any) -> None:
        """Bus consumer: call events close attempts; agent changes re-run pacing."""
        if isinstance(ev, AgentStateChange):
            if ev.status in (AgentStatus.READY, AgentStatus.WRAP_UP):
                self.kick()
            return
        if not isinstance(ev, CallEvent):
            return
        key = ev.action_id if isinstance(ev, OriginateResult) else ev.call_id
        run = self._by_attempt.get(key)
        if run is None:
            return
        async with self._lock:
            await self._on_call_event(run, key, ev)

    async def _on_call_event(self, run: _Run, attempt_id: str, ev: CallEvent) -> None:
        f = run.calls.get(attempt_id)
        if f is None:
            return
        if isinstance(ev, OriginateResult):
            if ev.result == "answered":
                if f.answered_at is None:
                    f.answered_at = ev.at
                    self.stats["answered"] += 1
                    run.window_answered += 1
                    await self.leads.mark_answered(attempt_id, ev.at)
            else:
                await self._finish(run, attempt_id, ev.result, ev.at, cause=ev.cause)
        elif isinstance(ev, Up):
            if f.connected_at is None and not f.abandoned:
                if f.answered_at is None:  # Up before OriginateResponse (order varies)
                    f.answered_at = ev.at
                    run.window_answered += 1
                    await self.leads.mark_answered(attempt_id, ev.at)
                f.connected_at = ev.at
                f.agent = ev.callee.name or ev.callee.channel
                self.stats["connected"] += 1
                await self.leads.mark_connected(attempt_id, ev.at, f.agent)
                run.pacer.observe(
                    Outcome(
                        kind="answered",
                        at=ev.at,
                        ring_seconds=f.answered_at - f.launched_at,
                        abandoned=False,
                    )
                )
        elif isinstance(ev, UserEvent):
            if ev.fields.get("UserEvent") == "CtiMachine":
                await self._finish(run, attempt_id, "machine", ev.at)
            elif ev.fields.get("UserEvent") == "CtiAbandoned" and f.connected_at is None:
                f.abandoned = True
        elif isinstance(ev, Hangup):
            if f.connected_at is not None:
                await self._finish(run, attempt_id, "handled", ev.at)
            elif f.answered_at is not None:
                f.abandoned = True
                await self._finish(run, attempt_id, "abandoned", ev.at)

    async def _finish(
        self, run: _Run, attempt_id: str, outcome: str, at: float, cause: int | None = None
    ) -> None:
        f = run.calls.pop(attempt_id, None)
        self._by_attempt.pop(attempt_id, None)
        if f is None:
            return
        c = run.campaign
        if outcome == "abandoned":
            self.stats["abandoned"] += 1
            run.window_abandoned += 1
            run.pacer.observe(
                Outcome(
                    kind="answered",
                    at=at,
                    ring_seconds=(f.answered_at or at) - f.launched_at,
                    abandoned=True,
                )
            )
        elif outcome == "handled":
            self.stats["handled"] += 1
            run.pacer.observe(
                Outcome(kind="handled", at=at, talk_seconds=at - (f.connected_at or at))
            )
        elif outcome in ("busy", "no-answer", "congestion", "failed", "machine"):
            run.pacer.observe(Outcome(kind=outcome, at=at, ring_seconds=at - f.launched_at))  # type: ignore[arg-type]
        try:
            await self.leads.finish_attempt(
                attempt_id,
                outcome,
                at=at,
                cause=cause,
                policy=run.policy,
                next_day_start=next_day_start(at, "UTC", c.window_start),
            )
        except LookupError:
            log.warning("outcome for an unknown attempt", attempt=attempt_id, outcome=outcome)
        if run.campaign.state != "running" and not run.calls:
            self._runs.pop(c.id, None)

    # ---- figures --------------------------------------------------------------------------

    def live_figures(self) -> dict[str, Any]:
        now = self._clock()
        out: dict[str, Any] = {}
        for run in self._runs.values():
            fl = self.floor(run, now)
            out[run.campaign.name] = {
                "mode": run.campaign.mode,
                "in_flight": len(fl.dialing),
                "waiting": fl.waiting,
                "ready_agents": fl.ready,
                "last_decision": run.last_decision,
                "launched": run.launched,
                "dial_ratio": (len(fl.dialing) + fl.waiting)
                / max(1, fl.ready + len(fl.talking) + len(fl.wrapping)),
                "window_answered": run.window_answered,
                "window_abandoned": run.window_abandoned,
            }
        return out

    def metrics_lines(self) -> list[str]:
        lines = [f"cti_dialer_{k}_total {v}" for k, v in self.stats.items()]
        for name, f in self.live_figures().items():
            lab = name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'cti_dialer_in_flight{{campaign="{lab}"}} {f["in_flight"]}')
            lines.append(f'cti_dialer_waiting{{campaign="{lab}"}} {f["waiting"]}')
            lines.append(f'cti_dialer_dial_ratio{{campaign="{lab}"}} {f["dial_ratio"]:.3f}')
        return lines
