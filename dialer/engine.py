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

Calls for a specific agent (a callback promised by that agent, a preview the agent chose to
dial) are placed agent-first, like click-to-call: the agent's device is originated into
`agent_first_context`, which dials the customer. The agent is on the line before the customer
answers, so these calls can never be abandoned and are not paced; their outcome comes from the
tracker's ringing_end reason (busy, no answer, ...), `up` and `hangup`. A due agent callback
is offered (`callback.due` with the lead) and dialled as soon as its agent is ready; when the
agent is not ready within `callback_grace_minutes`, it falls back to anyone (or, without the
fallback, is reported as missed and keeps waiting for its agent: never silently dropped).

Every AgentStateChange also feeds the live utilization figures and the batched agent log.

I/O goes through the callables given to the constructor (the AMI link, the agent registry,
the notifier), so this module never imports `cti`, and tests drive it with the real PBX
simulator and a controllable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ami.actions import build_action
from ami.events import (
    AgentStateChange,
    AgentStatus,
    CallEvent,
    Hangup,
    OriginateResult,
    RingingEnd,
    Up,
    UserEvent,
)
from crm_bridge.db import make_sessionmaker
from dialer.agent_log import AgentLog
from dialer.campaigns import CampaignService
from dialer.leads import ClaimedLead, ContactCheck, LeadStore, next_day_start
from dialer.models import Attempt, Campaign
from dialer.pacing import Floor, Outcome, make_pacer
from dialer.retry import RetryPolicy
from dialer.settings import DialerSettings
from dialer.utilization import Utilization

log = structlog.get_logger(__name__)

#: (status, since) of every logged-in agent serving a queue
AgentsOfQueue = Callable[[str], Sequence[tuple[AgentStatus, float]]]
Originate = Callable[[str, Any], Awaitable[Any]]  # (server name, Action) -> response
Notify = Callable[[str, str, dict[str, Any]], object]  # (agent, message type, payload)

#: an agent as the dialer needs it (cti.agents.AgentView fits): agent_id, status, since,
#: device, server, queues
AgentLookup = Callable[[str], Any]
AgentViews = Callable[[], Iterable[Any]]

#: ringing_end reasons of the customer leg of an agent-first call -> attempt outcome
_RING_OUTCOME = {
    "busy": "busy",
    "noanswer": "no-answer",
    "no-answer": "no-answer",
    "congestion": "congestion",
    "rejected": "failed",
    "failed": "failed",
}

#: how often (real seconds) campaigns are re-read, for changes made by the CLI
CAMPAIGN_REFRESH_SECONDS = 3.0

#: how often (seconds on the dialer's clock) due agent callbacks are looked up per campaign
CALLBACK_POLL_SECONDS = 1.0

#: marks agent-first attempts in the attempt row (so that a restart follows them correctly)
AGENT_FIRST_NOTE = "agent-first"
#: call events buffered between construction and start()
EARLY_EVENTS_MAX = 50_000

#: how often the abandonment window is re-read from the database (in between, the engine
#: counts its own answers and abandons on top of the last reading)
WINDOW_REFRESH_SECONDS = 15.0

#: with AMD on, the dialplan runs AMD() before it queues the call, so the connect deadline
#: starts only once AMD said HUMAN; Asterisk's AMD gives up after `total_analysis_time`
#: (amd.conf default 5000 ms). The CTI's fallback deadline waits that long on top, so a
#: person still being classified is never redirected to safe-harbor by mistake.
AMD_ALLOWANCE_SECONDS = 5.0


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
    #: agent-first (callback for an agent, preview): the agent's device is called first
    agent_first: bool = False
    agent_answered: bool = False
    ring_reason: str = ""
    #: the customer's channel once seen (for a Redirect to safe-harbor)
    channel: str = ""
    server: str = ""
    kind: str = "new"
    #: a callback promised during the call: applied when it ends
    callback: tuple[float, str | None] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One pacing decision, kept for the supervisor figures (dial ratio, prediction)."""

    at: float
    launched: int
    ready: int
    dialing: int
    waiting: int
    predicted_hit_rate: float | None


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
    callbacks_polled_at: float = -1e18
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=600))


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
        agent_view: AgentLookup | None = None,
        agent_views: AgentViews | None = None,
        agent_log: bool = True,
        channel_of: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self._engine = self.engine = engine
        self._sessions = make_sessionmaker(engine)
        #: campaign CRUD whose changes reach this engine at once (API, CLI in-process)
        self.campaigns = CampaignService(engine, on_change=self.campaign_changed, clock=clock)
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
        self._agent_view = agent_view
        self._agent_views = agent_views
        #: (server, call id) -> the call's first channel, from the tracker (for Redirects)
        self._channel_of = channel_of
        self._runs: dict[int, _Run] = {}
        self._by_attempt: dict[str, _Run] = {}
        #: preview leads reserved for an agent: agent -> (campaign id, lead)
        self._previews: dict[str, tuple[int, ClaimedLead]] = {}
        self._early: list[CallEvent] | None = []
        self._refreshed_at = time.monotonic()
        self.utilization = Utilization()
        self.agent_log = (
            AgentLog(
                engine,
                flush_seconds=settings.agent_log_flush_seconds,
                batch=settings.agent_log_batch,
            )
            if agent_log
            else None
        )
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
            "agent_first": 0,
            "callbacks_offered": 0,
            "callbacks_fallback": 0,
            "callbacks_missed": 0,
            "previews_offered": 0,
            "previews_skipped": 0,
            "safe_harbor_redirects": 0,
        }

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self, live_call_ids: set[str] | None = None) -> None:
        """Load running campaigns, reconcile attempts left in flight by a previous process
        with the calls the PBX still has, and start the pacing loop."""
        open_campaigns = select(Attempt.campaign_id).where(Attempt.state != "ended")
        async with self._sessions() as s:
            running = (
                (
                    await s.execute(
                        select(Campaign).where(
                            or_(Campaign.state == "running", Campaign.id.in_(open_campaigns))
                        )
                    )
                )
                .scalars()
                .all()
            )
        async with self._lock:
            for c in running:
                run = self._activate(c)
                res = await self.leads.reconcile(
                    c.id, live_call_ids or set(), self._clock(), run.policy
                )
                if res["lost"] or res["kept"] or res["released"]:
                    log.info("dialer reconciled", campaign=c.name, **res)
                # calls still live on the PBX are followed to their outcome as if this
                # process had launched them
                for a in await self.leads.open_attempts(c.id):
                    run.calls[a.id] = InFlight(
                        a.id,
                        a.lead_id,
                        a.number,
                        a.created_at,
                        answered_at=a.answered_at,
                        connected_at=a.connected_at,
                        agent=a.agent,
                        agent_first=a.note == AGENT_FIRST_NOTE,
                        agent_answered=a.note == AGENT_FIRST_NOTE and a.answered_at is not None,
                    )
                    self._by_attempt[a.id] = run
                if c.state != "running" and not run.calls:
                    self._runs.pop(c.id, None)
            early, self._early = self._early, None
        for ev in early or ():
            await self.on_event(ev)
        if self.agent_log is not None:
            self.agent_log.start()
        self._task = asyncio.create_task(self._loop(), name="dialer")

    async def stop(self) -> None:
        """Stop pacing. Calls in flight stay on the PBX; a new Dialer on the same database
        picks them up through `start(live_call_ids)`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.agent_log is not None:
            await self.agent_log.stop()

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
            old = run.campaign
            if (old.mode, old.abandon_cap, old.max_ring_seconds) != (
                c.mode,
                c.abandon_cap,
                c.max_ring_seconds,
            ):
                run.pacer = make_pacer(
                    c.mode,
                    abandon_cap=c.abandon_cap,
                    connect_deadline=self.settings.connect_deadline,
                    ring_timeout=c.max_ring_seconds,
                )
            if (old.retry or {}) != (c.retry or {}):
                run.policy = RetryPolicy.from_mapping(c.retry or {})
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

    async def _refresh_campaigns(self) -> None:
        """Pick up campaign changes made by another process (the CLI) on the same database."""
        async with self._sessions() as s:
            rows = list((await s.execute(select(Campaign))).scalars())
        for c in rows:
            run = self._runs.get(c.id)
            if run is None:
                if c.state == "running":
                    self._activate(c)
            elif (c.state, c.updated_at) != (run.campaign.state, run.campaign.updated_at):
                await self.campaign_changed(c)
                if c.state == "running":
                    self._activate(c)  # an edit: new pacer/retry settings apply at once

    async def tick(self) -> None:
        mono = time.monotonic()
        if mono - self._refreshed_at >= CAMPAIGN_REFRESH_SECONDS:
            self._refreshed_at = mono
            try:
                await self._refresh_campaigns()
            except Exception:
                log.exception("campaign refresh failed")
        async with self._lock:
            now = self._clock()
            for run in list(self._runs.values()):
                for f in self._expire_connect_deadlines(run, now):
                    await self._safe_harbor(run, f)
                for attempt_id in [a for a, f in run.calls.items() if f.abandoned]:
                    await self._finish(run, attempt_id, "abandoned", now)
                if run.campaign.state != "running":
                    continue
                if now - run.callbacks_polled_at >= CALLBACK_POLL_SECONDS:
                    run.callbacks_polled_at = now
                    await self._agent_callbacks(run, now)
                if run.campaign.mode == "preview":
                    await self._push_previews(run, now)
                else:
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
        dialing = tuple(
            now - f.launched_at
            for f in run.calls.values()
            if f.answered_at is None and not f.agent_first
        )
        waiting = sum(
            1
            for f in run.calls.values()
            if f.answered_at is not None
            and f.connected_at is None
            and not f.abandoned
            and not f.agent_first
        )
        # an agent whose own phone is being rung for a callback is not free for the pacer
        ready = max(
            0, ready - sum(1 for f in run.calls.values() if f.agent_first and not f.agent_answered)
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
        fl = self.floor(run, now)
        n = run.pacer.decide(fl)
        run.last_decision = n
        hit = _hit_rate(run.pacer)
        if n > 0 or not run.decisions or run.decisions[-1].launched > 0:
            run.decisions.append(Decision(now, n, fl.ready, len(fl.dialing), fl.waiting, hit))
        if n <= 0:
            return
        for lead in await self.leads.claim(run.campaign, n, now):
            await self._dial(run, lead, now, predicted=hit)

    async def _dial(
        self, run: _Run, lead: ClaimedLead, now: float, predicted: float | None = None
    ) -> None:
        c = run.campaign
        attempt = await self.leads.start_attempt(lead, now, predicted=predicted)
        flight = InFlight(attempt.id, lead.lead_id, lead.number, now, kind=lead.kind)
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

    def _expire_connect_deadlines(self, run: _Run, now: float) -> list[InFlight]:
        """Answered calls still without an agent past the deadline (plus a grace: the
        dialplan's own deadline is the authority and normally reports first)."""
        deadline = self.settings.connect_deadline + self.settings.abandon_grace_seconds
        if run.campaign.amd:
            deadline += AMD_ALLOWANCE_SECONDS
        expired = []
        for f in run.calls.values():
            if (
                f.answered_at is not None
                and f.connected_at is None
                and not f.abandoned
                and not f.agent_first
                and now - f.answered_at > deadline
            ):
                f.abandoned = True
                expired.append(f)
        return expired

    async def _safe_harbor(self, run: _Run, f: InFlight) -> None:
        """The dialplan did not move the call to safe-harbor in time: do it from here, so
        that the person hears the message instead of silence."""
        server = f.server or run.campaign.server or self._server
        if not f.channel and self._channel_of is not None:
            f.channel = self._channel_of(server, f.attempt_id) or ""
        if not f.channel:
            log.warning("abandoned call without a known channel", attempt=f.attempt_id)
            return
        try:
            action = build_action(
                "Redirect",
                {
                    "Channel": f.channel,
                    "Context": self.settings.context,
                    "Exten": self.settings.safe_harbor_exten,
                    "Priority": 1,
                    "ActionID": f"{f.attempt_id}-sh",
                },
            )
            await self._originate(server, action)
            self.stats["safe_harbor_redirects"] += 1
            log.info("abandoned call sent to safe-harbor", attempt=f.attempt_id, server=server)
        except Exception as e:
            log.warning("safe-harbor redirect failed", attempt=f.attempt_id, error=str(e))

    # ---- agent-first calls: callbacks and previews ----------------------------------------

    def attach_agents(self, agent_view: AgentLookup, agent_views: AgentViews) -> None:
        """Late wiring of the agent registry (when the composition root built the dialer
        without it): needed for agent callbacks and previews."""
        if self._agent_view is None:
            self._agent_view = agent_view
        if self._agent_views is None:
            self._agent_views = agent_views

    def _view(self, agent: str) -> Any:
        return None if self._agent_view is None else self._agent_view(agent)

    def _agent_busy_with_us(self, agent: str) -> bool:
        return agent in self._previews or any(
            f.agent_first and f.agent == agent
            for r in self._runs.values()
            for f in r.calls.values()
        )

    async def _agent_callbacks(self, run: _Run, now: float) -> None:
        grace = self.settings.callback_grace_minutes * 60.0
        for lead_id, agent, due in await self.leads.due_agent_callbacks(run.campaign.id, now):
            view = self._view(agent)
            ready = (
                view is not None
                and view.status is AgentStatus.READY
                and bool(getattr(view, "device", None))
                and not self._agent_busy_with_us(agent)
            )
            if ready:
                lead = await self.leads.claim_lead(run.campaign, lead_id, now)
                if lead is None:
                    continue
                self.stats["callbacks_offered"] += 1
                promise = await self.leads.open_callback(lead_id) or {}
                payload = await self._lead_payload(run, lead)
                # docs/protocol.md: the fields of the callback resource, plus the lead
                payload.update(
                    id=promise.get("id", ""),
                    due_at=promise.get("due_at", due),
                    note=promise.get("note", ""),
                    agent=agent,
                )
                await self._send(agent, "callback.due", payload)
                await self._dial_agent_first(run, lead, agent, view, now)
            elif now > due + grace:
                state = await self.leads.callback_fallback(
                    lead_id, now, to_anyone=self.settings.callback_fallback_to_anyone
                )
                if state == "fallback":
                    self.stats["callbacks_fallback"] += 1
                    log.info(
                        "callback falls back to anyone",
                        campaign=run.campaign.name,
                        lead=lead_id,
                        agent=agent,
                    )
                elif state == "missed":
                    self.stats["callbacks_missed"] += 1
                    log.warning(
                        "callback missed: its agent is not available",
                        campaign=run.campaign.name,
                        lead=lead_id,
                        agent=agent,
                    )

    async def _lead_payload(self, run: _Run, lead: ClaimedLead) -> dict[str, Any]:
        info = await self.leads.lead_info(lead.lead_id) or {}
        return {
            "campaign": run.campaign.name,
            "lead_id": lead.lead_id,
            "kind": lead.kind,
            "name": lead.name,
            "number": lead.number,
            "customer_id": lead.customer_id,
            "fields": lead.fields,
            "attempts": info.get("attempts", 0),
            "last_outcome": info.get("last_outcome", ""),
            "time_zone": info.get("time_zone", ""),
        }

    async def _send(self, agent: str, kind: str, payload: dict[str, Any]) -> None:
        if self._notify is None:
            return
        try:
            r = self._notify(agent, kind, payload)
            if asyncio.iscoroutine(r):
                await r
        except Exception:
            log.exception("notify failed", agent=agent, kind=kind)

    async def _dial_agent_first(
        self, run: _Run, lead: ClaimedLead, agent: str, view: Any, now: float
    ) -> str:
        """Ring the agent's device first; once it answers, the dialplan dials the lead."""
        c = run.campaign
        attempt = await self.leads.start_attempt(
            lead, now, predicted=None, note=AGENT_FIRST_NOTE, agent=agent
        )
        server = getattr(view, "server", None) or c.server or self._server
        flight = InFlight(
            attempt.id,
            lead.lead_id,
            lead.number,
            now,
            agent=agent,
            agent_first=True,
            server=server,
            kind=lead.kind,
        )
        run.calls[attempt.id] = flight
        self._by_attempt[attempt.id] = run
        self.stats["agent_first"] += 1
        try:
            action = build_action(
                "Originate",
                {
                    "Channel": view.device,
                    "Context": self.settings.agent_first_context,
                    "Exten": lead.number,
                    "Priority": 1,
                    "Async": True,
                    "Timeout": int(self.settings.agent_first_timeout * 1000),
                    "CallerID": c.caller_id or None,
                    "ChannelId": attempt.id,
                    "OtherChannelId": f"{attempt.id}-b",
                    "ActionID": attempt.action_id,
                },
                variables={
                    "__CAMPAIGN": c.name,
                    "__LEAD": lead.lead_id,
                    "LEAD_PHONE": lead.number,
                    "CTI_AGENT": agent,
                },
            )
            await self._originate(server, action)
            self.stats["originates"] += 1
        except Exception as e:
            self.stats["originate_errors"] += 1
            log.warning(
                "agent-first originate failed", agent=agent, lead=lead.lead_id, error=str(e)
            )
            await self._agent_missed(run, flight, self._clock())
        return attempt.id

    async def _agent_missed(self, run: _Run, f: InFlight, at: float) -> None:
        """The agent's own phone was not answered (or could not be called): a callback stays
        promised to the agent (due again at once), a preview goes back to the campaign."""
        if f.kind == "callback":
            f.callback = (at + 60.0, f.agent)
        await self._finish(run, f.attempt_id, "lost", at)

    async def _push_previews(self, run: _Run, now: float) -> None:
        if self._agent_views is None:
            return
        q = run.campaign.queue
        for v in list(self._agent_views()):
            if (
                v.status is AgentStatus.READY
                and q in tuple(getattr(v, "queues", ()))
                and not self._agent_busy_with_us(v.agent_id)
            ):
                if await self._reserve_preview(run, v.agent_id, now) is None:
                    return  # nothing left to preview now

    async def _reserve_preview(self, run: _Run, agent: str, now: float) -> dict[str, Any] | None:
        leads = await self.leads.claim(run.campaign, 1, now)
        if not leads:
            return None
        lead = leads[0]
        self._previews[agent] = (run.campaign.id, lead)
        self.stats["previews_offered"] += 1
        payload = await self._lead_payload(run, lead)
        await self._send(agent, "preview", payload)
        return payload

    def _preview_run(self, agent: str, campaign: str | None) -> _Run | None:
        view = self._view(agent)
        queues = tuple(getattr(view, "queues", ()) or ())
        for run in self._runs.values():
            c = run.campaign
            if c.state != "running" or c.mode != "preview":
                continue
            if campaign is not None and c.name != campaign:
                continue
            if campaign is None and queues and c.queue not in queues:
                continue
            return run
        return None

    async def preview_next(self, agent: str, campaign: str | None = None) -> dict[str, Any] | None:
        """The lead reserved for `agent` to preview (reserving the next one if none is); None
        when no running preview campaign has a lead for the agent now."""
        async with self._lock:
            held = self._previews.get(agent)
            if held is not None:
                run = self._runs.get(held[0])
                if run is not None:
                    return await self._lead_payload(run, held[1])
                self._previews.pop(agent, None)
                await self.leads.release([held[1].lead_id])
            run = self._preview_run(agent, campaign)
            if run is None:
                return None
            return await self._reserve_preview(run, agent, self._clock())

    async def preview_dial(self, agent: str, lead_id: int) -> str:
        """Dial the previewed lead: the agent's device first. Returns the attempt id.
        LookupError: no such preview; RuntimeError: the agent cannot take a call now."""
        async with self._lock:
            held = self._previews.get(agent)
            if held is None or held[1].lead_id != lead_id:
                raise LookupError(f"lead {lead_id} is not your preview")
            run = self._runs.get(held[0])
            view = self._view(agent)
            if run is None or view is None or not getattr(view, "device", None):
                raise RuntimeError("log in at a device first")
            del self._previews[agent]
            return await self._dial_agent_first(run, held[1], agent, view, self._clock())

    async def preview_skip(self, agent: str, lead_id: int) -> None:
        async with self._lock:
            held = self._previews.get(agent)
            if held is None or held[1].lead_id != lead_id:
                raise LookupError(f"lead {lead_id} is not your preview")
            del self._previews[agent]
            self.stats["previews_skipped"] += 1
            await self.leads.release(
                [lead_id], next_at=self._clock() + self.settings.preview_skip_seconds
            )

    async def schedule_callback(
        self,
        lead_id: int,
        at: float,
        agent: str | None,
        *,
        note: str = "",
        created_by: str = "",
    ) -> int:
        """Promise a call back on a lead ("call me back in 20 minutes"). During the lead's
        call the promise is applied when the call ends (the outcome does not overwrite it).
        Returns the callback's id. ValueError: the lead is being dialled by someone else."""
        async with self._lock:
            flight = None
            for run in self._runs.values():
                for f in run.calls.values():
                    if f.lead_id == lead_id:
                        flight = f
            for held_agent, (_, lead) in list(self._previews.items()):
                if lead.lead_id == lead_id:
                    del self._previews[held_agent]
                    await self.leads.release([lead_id])
            cb = await self.leads.schedule_callback(
                lead_id,
                at,
                agent,
                now=self._clock(),
                note=note,
                created_by=created_by,
                in_flight=flight is not None,
            )
            if flight is not None:
                flight.callback = (at, agent)
            return cb

    # ---- outcomes -------------------------------------------------------------------------

    async def on_event(self, ev: Any) -> None:
        """Bus consumer: call events close attempts; agent changes re-run pacing."""
        if isinstance(ev, AgentStateChange):
            self.utilization.apply(ev)
            if self.agent_log is not None:
                self.agent_log.record(ev)
            if ev.status is AgentStatus.LOGGED_OUT and ev.agent in self._previews:
                _, lead = self._previews.pop(ev.agent)
                await self.leads.release([lead.lead_id])
            if ev.status in (AgentStatus.READY, AgentStatus.WRAP_UP):
                self.kick()
            return
        if not isinstance(ev, CallEvent):
            return
        if self._early is not None:
            # not started yet: attempts still live from a previous process are registered by
            # start(); their events wait here instead of being dropped
            if len(self._early) < EARLY_EVENTS_MAX:
                self._early.append(ev)
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
        if f.agent_first:
            await self._on_agent_first_event(run, f, ev)
            return
        caller = getattr(ev, "caller", None)
        if caller is not None and not f.channel and caller.uniqueid == attempt_id:
            f.channel, f.server = caller.channel, ev.server
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
                f.agent = self._agent_name(ev.callee.channel) or ev.callee.name or ev.callee.channel
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
                await self._finish(run, attempt_id, "abandoned", ev.at)
        elif isinstance(ev, Hangup):
            if f.connected_at is not None:
                await self._finish(run, attempt_id, "handled", ev.at)
            elif f.answered_at is not None:
                f.abandoned = True
                await self._finish(run, attempt_id, "abandoned", ev.at)

    def _agent_name(self, channel: str) -> str | None:
        """The agent id of a device channel, from the agents we know (exact device match)."""
        if self._agent_views is None:
            return None
        device = channel.rsplit("-", 1)[0] if "-" in channel else channel
        for v in self._agent_views():
            if getattr(v, "device", None) == device:
                return str(v.agent_id)
        return None

    async def _on_agent_first_event(self, run: _Run, f: InFlight, ev: CallEvent) -> None:
        aid = f.attempt_id
        if isinstance(ev, OriginateResult):
            if ev.result == "answered":
                f.agent_answered = True
            else:
                await self._agent_missed(run, f, ev.at)
        elif isinstance(ev, RingingEnd):
            if ev.reason != "answer":
                f.ring_reason = ev.reason
        elif isinstance(ev, Up):
            if f.connected_at is None:
                f.agent_answered = True
                f.answered_at = f.connected_at = ev.at
                self.stats["connected"] += 1
                await self.leads.mark_answered(aid, ev.at)
                await self.leads.mark_connected(aid, ev.at, f.agent)
        elif isinstance(ev, Hangup):
            if f.connected_at is not None:
                await self._finish(run, aid, "handled", ev.at)
            elif not f.agent_answered:
                await self._agent_missed(run, f, ev.at)
            else:
                outcome = _RING_OUTCOME.get(f.ring_reason or ev.reason, "no-answer")
                await self._finish(run, aid, outcome, ev.at, cause=ev.cause)

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
        elif outcome in ("busy", "no-answer", "congestion", "failed", "machine") and not (
            f.agent_first
        ):
            if outcome == "machine" and f.answered_at is not None and run.window_answered > 0:
                # counted as answered when the PBX picked up; a machine is no live answer
                # (the database's window excludes it too), so the budget is not inflated
                run.window_answered -= 1
            run.pacer.observe(Outcome(kind=outcome, at=at, ring_seconds=at - f.launched_at))  # type: ignore[arg-type]
        cb_at, cb_agent = f.callback if f.callback is not None else (None, None)
        try:
            await self.leads.finish_attempt(
                attempt_id,
                outcome,
                at=at,
                cause=cause,
                policy=run.policy,
                next_day_start=next_day_start(at, "UTC", c.window_start),
                callback_at=cb_at,
                callback_agent=cb_agent,
            )
            if f.callback is not None and outcome == "lost" and f.agent_first:
                # the agent's phone did not pick up: the promise stands, in the ledger too
                await self.leads.schedule_callback(
                    f.lead_id, at, cb_agent, now=at, note="agent did not answer", in_flight=True
                )
        except LookupError:
            log.warning("outcome for an unknown attempt", attempt=attempt_id, outcome=outcome)
        if run.campaign.state != "running" and not run.calls:
            self._runs.pop(c.id, None)

    # ---- figures --------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def live_figures(self) -> dict[str, Any]:
        now = self._clock()
        out: dict[str, Any] = {}
        for run in self._runs.values():
            fl = self.floor(run, now)
            hit = _hit_rate(run.pacer)
            out[run.campaign.name] = {
                "mode": run.campaign.mode,
                "state": run.campaign.state,
                "in_flight": len(fl.dialing),
                "waiting": fl.waiting,
                "agent_first": sum(1 for f in run.calls.values() if f.agent_first),
                "ready_agents": fl.ready,
                "last_decision": run.last_decision,
                "launched": run.launched,
                "dial_ratio": (len(fl.dialing) + fl.waiting)
                / max(1, fl.ready + len(fl.talking) + len(fl.wrapping)),
                "window_answered": run.window_answered,
                "window_abandoned": run.window_abandoned,
                "predicted_hit_rate": hit,
            }
        return out

    def decisions(self, campaign: str) -> list[Decision]:
        for run in self._runs.values():
            if run.campaign.name == campaign:
                return list(run.decisions)
        return []

    def campaign_id(self, name: str) -> int | None:
        for run in self._runs.values():
            if run.campaign.name == name:
                return run.campaign.id
        return None

    def metrics_lines(self) -> list[str]:
        lines = [f"cti_dialer_{k}_total {v}" for k, v in self.stats.items()]
        for name, f in self.live_figures().items():
            lab = name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'cti_dialer_in_flight{{campaign="{lab}"}} {f["in_flight"]}')
            lines.append(f'cti_dialer_waiting{{campaign="{lab}"}} {f["waiting"]}')
            lines.append(f'cti_dialer_dial_ratio{{campaign="{lab}"}} {f["dial_ratio"]:.3f}')
            lines.append(f'cti_dialer_ready_agents{{campaign="{lab}"}} {f["ready_agents"]}')
            lines.append(f'cti_dialer_window_answered{{campaign="{lab}"}} {f["window_answered"]}')
            lines.append(f'cti_dialer_window_abandoned{{campaign="{lab}"}} {f["window_abandoned"]}')
            rate = f["window_abandoned"] / f["window_answered"] if f["window_answered"] else 0.0
            lines.append(f'cti_dialer_abandon_rate{{campaign="{lab}"}} {rate:.5f}')
            if f["predicted_hit_rate"] is not None:
                lines.append(
                    f'cti_dialer_predicted_hit_rate{{campaign="{lab}"}} '
                    f"{f['predicted_hit_rate']:.4f}"
                )
        now = self._clock()
        today = _today(now)
        for agent, days in self.utilization.report(now).items():
            fig = days.get(today)
            if fig is None:
                continue
            lab = agent.replace("\\", "\\\\").replace('"', '\\"')
            for key in ("logged_in", "ready", "ringing", "on_call", "wrap_up", "paused"):
                lines.append(
                    f'cti_agent_seconds_today{{agent="{lab}",state="{key}"}} {fig[key]:.1f}'
                )
        if self.agent_log is not None:
            lines.append(f"cti_dialer_agent_log_written_total {self.agent_log.written}")
        return lines


def _today(now: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(now, UTC).date().isoformat()


def _hit_rate(pacer: Any) -> float | None:
    """The predictive pacer's learned live-answer share (None for the other pacers)."""
    try:
        v = getattr(pacer, "hit_rate", None)
    except (ZeroDivisionError, ArithmeticError):
        return None
    return float(v) if isinstance(v, int | float) else None
