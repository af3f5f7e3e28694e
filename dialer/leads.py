"""Lead persistence: claiming, attempts written before dialling, outcomes, retries, callbacks.

The order of work a campaign sees is: due callbacks, then due retries, then fresh leads, each
by priority and, within a priority, by the chance of a live answer now (`AnswerOdds`: the
campaign's own live-answer rate at the called party's local hour, used only once the data
supports it; otherwise first in, first out). Compliance (calling window in the lead's local
time, do-not-call, consent, no-redial after an abandoned call, machine once per day unless an
agent is guaranteed) is checked when a lead is claimed, not only at import, because lists get
old and people opt out.

Claiming is a conditional UPDATE (`... WHERE id = ? AND state = <seen state>`), so two dialer
instances can never take the same lead; on PostgreSQL the candidate SELECT also uses
`FOR UPDATE SKIP LOCKED` so they do not even wait for each other.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from sqlalchemy import Integer, case, cast, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_bridge.db import make_sessionmaker
from dialer.compliance import CallingWindow, redial_blocked_until
from dialer.models import Attempt, Callback, Campaign, Lead
from dialer.retry import RetryPolicy

#: (allowed, reason) for a number and consent purpose: the CRM bridge's may_contact
ContactCheck = Callable[[str, str], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True, slots=True)
class ClaimedLead:
    lead_id: int
    campaign_id: int
    number: str
    name: str
    customer_id: int | None
    callback_agent: str | None
    kind: str  # "callback" | "retry" | "new"
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    id: str
    action_id: str
    lead_id: int
    campaign_id: int
    number: str


#: outcomes that say something about whether a person picks up (not lost/dnc/invalid)
COUNTED_OUTCOMES = (
    "handled",
    "answered",
    "abandoned",
    "busy",
    "no-answer",
    "congestion",
    "failed",
    "machine",
)
LIVE_OUTCOMES = ("handled", "answered", "abandoned")
#: the answer-rate estimate learns from the campaign's attempts of the last 14 days (local-hour
#: patterns are stable; a longer window only makes the aggregate heavier) ...
ODDS_LOOKBACK_SECONDS = 14 * 86400.0
#: ... and is re-read at most this often per campaign (dialer clock): one aggregate query
ODDS_REFRESH_SECONDS = 300.0
#: Beta prior centred on the campaign's average, worth this many attempts
ODDS_PRIOR_ATTEMPTS = 20.0
#: below these counts the data does not support reordering: campaign average (FIFO)
ODDS_MIN_CAMPAIGN_ATTEMPTS = 100
ODDS_MIN_HOUR_ATTEMPTS = 20
#: how many more candidates than needed a claim looks at when it reorders by the estimate
ODDS_WINDOW_FACTOR = 4


@lru_cache(maxsize=65536)
def line_type(e164: str) -> str:
    """ "mobile", "fixed", or "" when the prefix does not tell (e.g. North America)."""
    try:
        kind = phonenumbers.number_type(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return ""
    if kind == phonenumbers.PhoneNumberType.MOBILE:
        return "mobile"
    if kind == phonenumbers.PhoneNumberType.FIXED_LINE:
        return "fixed"
    return ""


@lru_cache(maxsize=256)
def _tz(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, LookupError):
        return None


@dataclass(frozen=True, slots=True)
class AnswerOdds:
    """The chance that a call placed now is answered by a person, by the called party's local
    hour of day, learnt from the campaign's own attempts.

    Deliberately simple so that a supervisor can check it by hand: for each local hour,
    (live answers + k * average) / (attempts + k), a Beta prior worth k attempts at the
    campaign's average live-answer rate. An hour with fewer than ODDS_MIN_HOUR_ATTEMPTS
    attempts, or a campaign with fewer than ODDS_MIN_CAMPAIGN_ATTEMPTS, gets the average, so
    that with little data every lead scores the same and the order stays first in, first out.
    Where the kind of line (mobile, fixed) has enough attempts of its own at that hour, the
    same formula refines the hour's figure, with the hour's estimate as the prior.
    """

    average: float = 0.0
    attempts: int = 0
    #: per local hour 0..23: (attempts, live answers)
    counts: tuple[tuple[int, int], ...] = ((0, 0),) * 24
    #: per local hour: the estimate, None where the data does not support one
    by_hour: tuple[float | None, ...] = (None,) * 24
    #: (line kind, local hour) -> estimate, only where that line kind has enough data
    by_line: Mapping[tuple[str, int], float] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, rows: Iterable[tuple[Any, ...]]) -> AnswerOdds:
        """rows: (lead time zone, UTC hour bucket = epoch seconds // 3600, attempts, live
        answers[, line kind])."""
        tries = [0] * 24
        live = [0] * 24
        line_counts: dict[tuple[str, int], list[int]] = {}
        for zone, bucket, n, k, *rest in rows:
            tz = _tz(zone)
            if tz is None or not n:
                continue
            hour = datetime.fromtimestamp(int(bucket) * 3600 + 1800, tz).hour
            tries[hour] += int(n)
            live[hour] += int(k or 0)
            line = str(rest[0]) if rest and rest[0] else ""
            if line:
                c = line_counts.setdefault((line, hour), [0, 0])
                c[0] += int(n)
                c[1] += int(k or 0)
        total = sum(tries)
        if total == 0:
            return cls()
        avg = sum(live) / total
        by_hour: list[float | None] = [None] * 24
        by_line: dict[tuple[str, int], float] = {}
        if total >= ODDS_MIN_CAMPAIGN_ATTEMPTS:
            prior = ODDS_PRIOR_ATTEMPTS
            for h in range(24):
                if tries[h] >= ODDS_MIN_HOUR_ATTEMPTS:
                    by_hour[h] = (live[h] + prior * avg) / (tries[h] + prior)
            for (line, h), (n, k) in line_counts.items():
                if n >= ODDS_MIN_HOUR_ATTEMPTS:
                    hour_p = by_hour[h]
                    base = avg if hour_p is None else hour_p
                    by_line[(line, h)] = (k + prior * base) / (n + prior)
        return cls(avg, total, tuple(zip(tries, live, strict=True)), tuple(by_hour), by_line)

    @property
    def active(self) -> bool:
        """True when at least one hour differs from the average on enough data."""
        return any(p is not None for p in self.by_hour)

    def chance(self, time_zone: str, now: float, line: str = "") -> float:
        """The estimate for a lead in `time_zone` on a `line` kind called at `now`."""
        tz = _tz(time_zone)
        if tz is None:
            return self.average
        hour = datetime.fromtimestamp(now, tz).hour
        if line:
            q = self.by_line.get((line, hour))
            if q is not None:
                return q
        p = self.by_hour[hour]
        return self.average if p is None else p

    def explain(self) -> list[dict[str, Any]]:
        """Per local hour: attempts, live answers and the estimate used (for supervisors)."""
        return [
            {
                "local_hour": h,
                "attempts": n,
                "live": k,
                "estimate": self.by_hour[h] if self.by_hour[h] is not None else self.average,
                "from_data": self.by_hour[h] is not None,
            }
            for h, (n, k) in enumerate(self.counts)
        ]


def _day_key(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


class LeadStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        instance: str = "dialer",
        may_contact: ContactCheck | None = None,
        abandon_block_hours: float = 72.0,
        machine_block_hours: float = 24.0,
    ) -> None:
        self._engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(engine)
        self._instance = instance
        self._may_contact = may_contact
        self._abandon_hours = abandon_block_hours
        self._machine_hours = machine_block_hours
        self._pg = engine.dialect.name == "postgresql"
        #: campaign id -> (when read, estimate): see `answer_odds`
        self._odds: dict[int, tuple[float, AnswerOdds]] = {}

    # ---- claiming -------------------------------------------------------------------------

    async def claim(self, campaign: Campaign, n: int, now: float) -> list[ClaimedLead]:
        """Claim up to `n` dialable leads of `campaign` at time `now` (compliance checked)."""
        if n <= 0:
            return []
        window = CallingWindow.parse(campaign.window_start, campaign.window_end)
        now_dt = datetime.fromtimestamp(now, UTC)
        odds = await self.answer_odds(campaign, now)
        reorder = odds.active
        # a preview is dialled by its agent: an agent is guaranteed on the call
        guaranteed = campaign.mode == "preview"
        claimed: list[ClaimedLead] = []
        async with self._sessions() as s, s.begin():
            for kind, states in (("due", ("callback", "retry")), ("new", ("new",))):
                if len(claimed) >= n:
                    break
                want = max(4 * (n - len(claimed)), 16)
                if reorder:
                    want *= ODDS_WINDOW_FACTOR
                stmt = (
                    select(Lead)
                    .where(
                        Lead.campaign_id == campaign.id,
                        Lead.state.in_(states),
                        or_(Lead.next_at.is_(None), Lead.next_at <= now),
                        # a callback promised by one agent goes to that agent (claim_lead),
                        # until the engine lets anyone take it after the grace period
                        or_(Lead.state != "callback", Lead.callback_agent.is_(None)),
                    )
                    # callbacks before retries, then priority, then the longest waiting
                    .order_by(
                        (Lead.state == "callback").desc(),
                        Lead.priority.desc(),
                        Lead.next_at.asc(),
                        Lead.id.asc(),
                    )
                    .limit(want)
                )
                if self._pg:
                    stmt = stmt.with_for_update(skip_locked=True)
                candidates = list((await s.execute(stmt)).scalars())
                if reorder and len(candidates) > 1:
                    candidates = _by_answer_chance(candidates, odds, now)
                for lead in candidates:
                    if len(claimed) >= n:
                        break
                    number = lead.numbers[lead.number_index % len(lead.numbers)]
                    verdict = await self._check(
                        s, campaign, lead, number, window, now_dt, agent_guaranteed=guaranteed
                    )
                    if verdict is not None:
                        continue
                    seen = lead.state  # the UPDATE below refreshes the loaded row
                    res = await s.execute(
                        update(Lead)
                        .where(Lead.id == lead.id, Lead.state == lead.state)
                        .values(state="claimed", claimed_by=self._instance, claimed_at=now)
                    )
                    if res.rowcount != 1:  # type: ignore[attr-defined]
                        continue  # another instance took it
                    claimed.append(
                        ClaimedLead(
                            lead.id,
                            campaign.id,
                            number,
                            lead.name,
                            lead.customer_id,
                            lead.callback_agent,
                            "callback" if seen == "callback" else kind,
                            dict(lead.fields or {}),
                        )
                    )
        return claimed

    async def answer_odds(self, campaign: Campaign, now: float) -> AnswerOdds:
        """The campaign's live-answer estimate by local hour, re-read from its attempts at
        most every ODDS_REFRESH_SECONDS (claims run every pacing tick: one aggregate query
        per campaign every few minutes, none per claim)."""
        cached = self._odds.get(campaign.id)
        if cached is not None and 0 <= now - cached[0] < ODDS_REFRESH_SECONDS:
            return cached[1]
        hours = Attempt.created_at / literal_column("3600")
        bucket = (func.floor(hours) if self._pg else cast(hours, Integer)).label("bucket")
        q = (
            select(
                Lead.time_zone,
                bucket,
                func.count(),
                func.sum(case((Attempt.outcome.in_(LIVE_OUTCOMES), 1), else_=0)),
                Attempt.line,
            )
            .join(Lead, Lead.id == Attempt.lead_id)
            .where(
                Attempt.campaign_id == campaign.id,
                Attempt.state == "ended",
                Attempt.created_at >= now - ODDS_LOOKBACK_SECONDS,
                Attempt.outcome.in_(COUNTED_OUTCOMES),
            )
            .group_by(Lead.time_zone, "bucket", Attempt.line)
        )
        async with self._sessions() as s:
            rows = (await s.execute(q)).all()
        odds = AnswerOdds.from_counts(
            (str(z), float(b), int(n), int(k or 0), str(ln or "")) for z, b, n, k, ln in rows
        )
        self._odds[campaign.id] = (now, odds)
        return odds

    async def claim_lead(
        self,
        campaign: Campaign,
        lead_id: int,
        now: float,
        *,
        by: str = "",
        agent_guaranteed: bool = True,
    ) -> ClaimedLead | None:
        """Claim one given lead (an agent's callback, a preview): compliance is checked the
        same way; None when it is not claimable now (already taken, blocked, not due).
        These leads are dialled agent-first, hence `agent_guaranteed` (see `_check`)."""
        window = CallingWindow.parse(campaign.window_start, campaign.window_end)
        now_dt = datetime.fromtimestamp(now, UTC)
        async with self._sessions() as s, s.begin():
            lead = await s.get(Lead, lead_id)
            if (
                lead is None
                or lead.campaign_id != campaign.id
                or lead.state not in ("new", "retry", "callback")
            ):
                return None
            number = lead.numbers[lead.number_index % len(lead.numbers)]
            verdict = await self._check(
                s, campaign, lead, number, window, now_dt, agent_guaranteed=agent_guaranteed
            )
            if verdict is not None:
                return None
            seen = lead.state
            res = await s.execute(
                update(Lead)
                .where(Lead.id == lead.id, Lead.state == seen)
                .values(state="claimed", claimed_by=by or self._instance, claimed_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return ClaimedLead(
                lead.id,
                campaign.id,
                number,
                lead.name,
                lead.customer_id,
                lead.callback_agent,
                "callback" if seen == "callback" else ("new" if seen == "new" else "due"),
                dict(lead.fields or {}),
            )

    async def due_agent_callbacks(
        self, campaign_id: int, now: float
    ) -> list[tuple[int, str, float]]:
        """(lead id, agent, due time) of the campaign's due callbacks promised by an agent."""
        async with self._sessions() as s:
            rows = await s.execute(
                select(Lead.id, Lead.callback_agent, Lead.next_at)
                .where(
                    Lead.campaign_id == campaign_id,
                    Lead.state == "callback",
                    Lead.callback_agent.is_not(None),
                    Lead.next_at <= now,
                )
                .order_by(Lead.next_at, Lead.id)
                .limit(200)
            )
            return [(int(i), str(a), float(t or 0.0)) for i, a, t in rows.all()]

    async def callback_fallback(self, lead_id: int, now: float, *, to_anyone: bool) -> str:
        """The promised agent did not take a due callback within the grace period: either
        anyone may take it now (fallback) or it stays with the agent and is reported
        (missed). Returns the new ledger state ("" when nothing changed)."""
        async with self._sessions() as s, s.begin():
            lead = await s.get(Lead, lead_id)
            if lead is None or lead.state != "callback" or lead.callback_agent is None:
                return ""
            state = "fallback" if to_anyone else "missed"
            if to_anyone:
                lead.callback_agent = None
            res = await s.execute(
                update(Callback)
                .where(Callback.lead_id == lead_id, Callback.state == "pending")
                .values(state=state, updated_at=now)
            )
            if not to_anyone and not res.rowcount:  # type: ignore[attr-defined]
                return ""  # reported already
            return state

    async def _check(
        self,
        s: AsyncSession,
        campaign: Campaign,
        lead: Lead,
        number: str,
        window: CallingWindow,
        now: datetime,
        *,
        agent_guaranteed: bool = False,
    ) -> str | None:
        """None when the lead may be dialled now; otherwise why not (and the lead is
        rescheduled or closed accordingly, inside the caller's transaction).

        `agent_guaranteed`: an agent is on the line before the customer answers (preview,
        a callback rung agent-first), so a machine-detected number may be tried again
        within the machine block (the rule exists against silent calls to people whose
        machine was detected; with an agent there is no silent call)."""
        zones = (lead.time_zone,)
        if not window.is_open(now, zones):
            lead.next_at = window.next_open(now, zones).timestamp()
            return "outside calling window"
        if self._may_contact is not None:
            allowed, reason = await self._may_contact(number, campaign.purpose)
            if not allowed:
                lead.state, lead.done_reason, lead.last_outcome = "done", reason[:80], "dnc"
                return reason
        last_abandon, last_machine = await self._last_blocking(s, number)
        until = redial_blocked_until(
            last_abandon,
            None if agent_guaranteed else last_machine,
            abandon_hours=self._abandon_hours,
            machine_hours=self._machine_hours,
        )
        if until is not None and until > now:
            lead.next_at = until.timestamp()
            return "redial blocked"
        return None

    async def _last_blocking(
        self, s: AsyncSession, number: str
    ) -> tuple[datetime | None, datetime | None]:
        q = (
            select(Attempt.outcome, func.max(Attempt.ended_at))
            .where(Attempt.number == number, Attempt.outcome.in_(("abandoned", "machine")))
            .group_by(Attempt.outcome)
        )
        found = {o: t for o, t in (await s.execute(q)).all()}

        def dt(t: float | None) -> datetime | None:
            return None if t is None else datetime.fromtimestamp(t, UTC)

        return dt(found.get("abandoned")), dt(found.get("machine"))

    async def release(self, lead_ids: Sequence[int], *, next_at: float | None = None) -> None:
        """Give back claimed leads that will not be dialled (no agent any more, stop, a
        skipped preview); a promised callback stays a callback."""
        if not lead_ids:
            return
        values: dict[str, Any] = {
            "state": _released_state(),
            "claimed_by": "",
            "claimed_at": None,
        }
        if next_at is not None:
            values["next_at"] = next_at
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(Lead).where(Lead.id.in_(lead_ids), Lead.state == "claimed").values(values)
            )

    # ---- attempts -------------------------------------------------------------------------

    async def start_attempt(
        self,
        lead: ClaimedLead,
        now: float,
        predicted: float | None,
        *,
        note: str = "",
        agent: str = "",
    ) -> AttemptInfo:
        """Write the attempt (and mark the lead dialing) BEFORE the Originate goes out."""
        attempt_id = f"cti-{lead.campaign_id}-{lead.lead_id}-{secrets.token_hex(4)}"
        async with self._sessions() as s, s.begin():
            row = await s.get(Lead, lead.lead_id)
            if row is None or row.state != "claimed":
                raise LookupError(f"lead {lead.lead_id} is not claimed")
            day = _day_key(now)
            row.state = "dialing"
            row.attempts += 1
            row.attempts_today = (row.attempts_today + 1) if row.attempts_day == day else 1
            row.attempts_day = day
            row.last_attempt_at = now
            s.add(
                Attempt(
                    id=attempt_id,
                    campaign_id=lead.campaign_id,
                    lead_id=lead.lead_id,
                    number=lead.number,
                    action_id=attempt_id,
                    state="dialing",
                    outcome="",
                    created_at=now,
                    agent=agent[:80],
                    abandoned=False,
                    predicted=predicted,
                    note=note,
                    line=line_type(lead.number),
                )
            )
            if lead.kind == "callback":
                await s.execute(
                    update(Callback)
                    .where(
                        Callback.lead_id == lead.lead_id,
                        Callback.state.in_(("pending", "fallback", "missed")),
                    )
                    .values(state="dialing", attempt_id=attempt_id, updated_at=now)
                )
        return AttemptInfo(attempt_id, attempt_id, lead.lead_id, lead.campaign_id, lead.number)

    async def mark_answered(self, attempt_id: str, at: float) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id, Attempt.answered_at.is_(None))
                .values(answered_at=at, state="answered")
            )

    async def mark_connected(self, attempt_id: str, at: float, agent: str) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id, Attempt.connected_at.is_(None))
                .values(connected_at=at, agent=agent, state="connected")
            )

    async def finish_attempt(
        self,
        attempt_id: str,
        outcome: str,
        *,
        at: float,
        cause: int | None = None,
        policy: RetryPolicy,
        next_day_start: float | None = None,
        callback_at: float | None = None,
        callback_agent: str | None = None,
    ) -> str:
        """Record the outcome and move the lead on; idempotent (a second call for the same
        attempt changes nothing). Returns the lead's new state."""
        async with self._sessions() as s, s.begin():
            att = await s.get(Attempt, attempt_id)
            if att is None:
                raise LookupError(f"unknown attempt {attempt_id}")
            lead = await s.get(Lead, att.lead_id)
            if lead is None:
                raise LookupError(f"attempt {attempt_id} has no lead")
            if att.state == "ended":
                return lead.state
            att.state, att.outcome, att.cause, att.ended_at = "ended", outcome, cause, at
            att.abandoned = outcome == "abandoned"
            await s.execute(
                update(Callback)
                .where(Callback.attempt_id == attempt_id, Callback.state == "dialing")
                .values(state="done", outcome=outcome, updated_at=at)
            )
            counts = dict(lead.outcome_counts or {})
            counts[outcome] = counts.get(outcome, 0) + 1
            lead.outcome_counts = counts
            lead.last_outcome = outcome
            lead.claimed_by, lead.claimed_at = "", None
            if callback_at is not None:
                lead.state, lead.next_at, lead.callback_agent = (
                    "callback",
                    callback_at,
                    callback_agent,
                )
                return lead.state
            decision = policy.decide(
                outcome,
                now=at,
                attempts_with_outcome=counts[outcome],
                attempts_today=lead.attempts_today,
                number_index=lead.number_index,
                numbers=len(lead.numbers),
                next_day_start=next_day_start,
            )
            if decision.kind == "retry":
                lead.state, lead.next_at = "retry", decision.at
                lead.number_index = decision.number_index
                lead.callback_agent = None
            else:
                lead.state, lead.done_reason = "done", decision.reason[:80]
            return lead.state

    async def schedule_callback(
        self,
        lead_id: int,
        at: float,
        agent: str | None,
        *,
        now: float | None = None,
        note: str = "",
        created_by: str = "",
        in_flight: bool = False,
    ) -> int:
        """Promise a call back (for `agent`, or anyone with None); returns the ledger id.
        `in_flight`: the lead is on a call now; only the ledger row is written and the engine
        moves the lead when that call ends. An earlier open promise for the lead is
        superseded (cancelled), never left dangling."""
        t = at if now is None else now
        async with self._sessions() as s, s.begin():
            lead = await s.get(Lead, lead_id)
            if lead is None:
                raise LookupError(f"unknown lead {lead_id}")
            await s.execute(
                update(Callback)
                .where(
                    Callback.lead_id == lead_id,
                    Callback.state.in_(("pending", "fallback", "missed")),
                )
                .values(state="cancelled", updated_at=t)
            )
            if not in_flight:
                if lead.state in ("claimed", "dialing"):
                    raise ValueError(f"lead {lead_id} is being dialled")
                lead.state, lead.next_at, lead.callback_agent = "callback", at, agent
            row = Callback(
                campaign_id=lead.campaign_id,
                lead_id=lead_id,
                agent=agent,
                due_at=at,
                state="pending",
                outcome="",
                note=note,
                created_by=created_by,
                created_at=t,
                updated_at=t,
            )
            s.add(row)
            await s.flush()
            return int(row.id)

    async def callbacks(
        self,
        *,
        campaign_id: int | None = None,
        states: Sequence[str] = (),
        now: float,
        grace: float,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """The callback ledger, newest due first; `overdue`: due + grace passed and still
        not dialled (the figure supervisors watch so that none is silently lost)."""
        q = (
            select(Callback, Lead.name, Lead.numbers, Lead.time_zone, Campaign.name)
            .join(Lead, Lead.id == Callback.lead_id)
            .join(Campaign, Campaign.id == Callback.campaign_id)
            .order_by(Callback.due_at.desc(), Callback.id.desc())
            .limit(limit)
        )
        if campaign_id is not None:
            q = q.where(Callback.campaign_id == campaign_id)
        if states:
            q = q.where(Callback.state.in_(tuple(states)))
        async with self._sessions() as s:
            rows = (await s.execute(q)).all()
        return [
            {
                "id": int(cb.id),
                "campaign": camp,
                "lead_id": int(cb.lead_id),
                "name": name,
                "number": numbers[0] if numbers else "",
                "time_zone": tz,
                "agent": cb.agent,
                "due_at": cb.due_at,
                "state": cb.state,
                "outcome": cb.outcome,
                "attempt_id": cb.attempt_id,
                "note": cb.note,
                "created_by": cb.created_by,
                "overdue": cb.state in ("pending", "fallback", "missed")
                and cb.due_at + grace < now,
            }
            for cb, name, numbers, tz, camp in rows
        ]

    async def open_callback(self, lead_id: int) -> dict[str, Any] | None:
        """The lead's open promise (id, due_at, agent, note), if any."""
        async with self._sessions() as s:
            cb = (
                await s.execute(
                    select(Callback)
                    .where(
                        Callback.lead_id == lead_id,
                        Callback.state.in_(("pending", "fallback", "missed")),
                    )
                    .order_by(Callback.id.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        if cb is None:
            return None
        return {"id": str(cb.id), "due_at": cb.due_at, "agent": cb.agent, "note": cb.note}

    async def lead_info(self, lead_id: int) -> dict[str, Any] | None:
        """What a pop or a preview shows about a lead."""
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(Lead, Campaign.name)
                    .join(Campaign, Campaign.id == Lead.campaign_id)
                    .where(Lead.id == lead_id)
                )
            ).one_or_none()
        if row is None:
            return None
        lead, camp = row
        return {
            "lead_id": int(lead.id),
            "campaign": camp,
            "ref": lead.ref,
            "name": lead.name,
            "numbers": list(lead.numbers),
            "number": lead.numbers[lead.number_index % len(lead.numbers)],
            "time_zone": lead.time_zone,
            "customer_id": lead.customer_id,
            "priority": lead.priority,
            "state": lead.state,
            "next_at": lead.next_at,
            "callback_agent": lead.callback_agent,
            "attempts": lead.attempts,
            "last_outcome": lead.last_outcome,
            "fields": dict(lead.fields or {}),
        }

    async def reconcile(
        self, campaign_id: int, live_channel_ids: set[str], now: float, policy: RetryPolicy
    ) -> dict[str, int]:
        """After a restart: attempts still live on the PBX keep their state; attempts that
        vanished without an outcome end as 'lost' (retried after the congestion delay, never
        redialled at once), and leads claimed but never dialled go back to the queue."""
        lost = kept = released = 0
        async with self._sessions() as s:
            rows = (
                (
                    await s.execute(
                        select(Attempt.id).where(
                            Attempt.campaign_id == campaign_id, Attempt.state != "ended"
                        )
                    )
                )
                .scalars()
                .all()
            )
        for attempt_id in rows:
            if attempt_id in live_channel_ids:
                kept += 1
                continue
            await self.finish_attempt(attempt_id, "lost", at=now, policy=policy)
            lost += 1
        async with self._sessions() as s, s.begin():
            res = await s.execute(
                update(Lead)
                .where(Lead.campaign_id == campaign_id, Lead.state == "claimed")
                .values(state=_released_state(), claimed_by="", claimed_at=None)
            )
            released = res.rowcount or 0  # type: ignore[attr-defined]
        return {"lost": lost, "kept": kept, "released": released}

    async def open_attempts(self, campaign_id: int) -> list[Attempt]:
        """Attempts without an outcome yet (after `reconcile`: the ones still live)."""
        async with self._sessions() as s:
            return list(
                (
                    await s.execute(
                        select(Attempt).where(
                            Attempt.campaign_id == campaign_id, Attempt.state != "ended"
                        )
                    )
                ).scalars()
            )

    # ---- figures --------------------------------------------------------------------------

    async def abandon_window(self, campaign: Campaign, now: float) -> tuple[int, int]:
        """(live answered, abandoned) in the campaign's rolling window, from the database so
        that the budget survives restarts."""
        since = now - campaign.abandon_window
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(
                        func.count(Attempt.id),
                        func.coalesce(func.sum(case((Attempt.abandoned, 1), else_=0)), 0),
                    ).where(
                        Attempt.campaign_id == campaign.id,
                        Attempt.answered_at.is_not(None),
                        Attempt.answered_at >= since,
                        Attempt.outcome != "machine",
                    )
                )
            ).one()
        return int(row[0]), int(row[1])

    async def campaign_figures(self, campaign: Campaign, now: float) -> dict[str, Any]:
        async with self._sessions() as s:
            outcomes = dict(
                (
                    await s.execute(
                        select(Attempt.outcome, func.count())
                        .where(Attempt.campaign_id == campaign.id)
                        .group_by(Attempt.outcome)
                    )
                ).all()
            )
            states = dict(
                (
                    await s.execute(
                        select(Lead.state, func.count())
                        .where(Lead.campaign_id == campaign.id)
                        .group_by(Lead.state)
                    )
                ).all()
            )
            connects = (
                await s.execute(
                    select(func.count()).where(
                        Attempt.campaign_id == campaign.id, Attempt.connected_at.is_not(None)
                    )
                )
            ).scalar_one()
            predicted = (
                await s.execute(
                    select(func.avg(Attempt.predicted)).where(
                        Attempt.campaign_id == campaign.id, Attempt.predicted.is_not(None)
                    )
                )
            ).scalar_one()
        attempts = sum(outcomes.values())
        answered, abandoned = await self.abandon_window(campaign, now)
        live = sum(outcomes.get(k, 0) for k in ("handled", "answered", "abandoned"))
        return {
            "campaign": campaign.name,
            "attempts": attempts,
            "in_flight": outcomes.get("", 0),
            "connects": connects,
            "live_answers": live,
            "machines": outcomes.get("machine", 0),
            "busy": outcomes.get("busy", 0),
            "no_answer": outcomes.get("no-answer", 0),
            "congestion": outcomes.get("congestion", 0),
            "failed": outcomes.get("failed", 0),
            "abandoned": outcomes.get("abandoned", 0),
            "abandon_rate_window": (abandoned / answered) if answered else 0.0,
            "window_answered": answered,
            "window_abandoned": abandoned,
            "dials_per_connect": (attempts / connects) if connects else None,
            "leads_remaining": sum(v for k, v in states.items() if k != "done"),
            "leads_done": states.get("done", 0),
            "leads_by_state": states,
            "predicted_answer_rate": predicted,
            "actual_answer_rate": (live + outcomes.get("machine", 0)) / attempts
            if attempts
            else None,
        }


def _by_answer_chance(leads: list[Lead], odds: AnswerOdds, now: float) -> list[Lead]:
    """Callbacks first, then priority, then the better chance of a live answer now; the sort
    is stable, so equal chances keep the database's order (longest waiting first)."""
    memo: dict[tuple[str, str], float] = {}

    def key(lead: Lead) -> tuple[bool, int, float]:
        line = line_type(lead.numbers[lead.number_index % len(lead.numbers)])
        p = memo.get((lead.time_zone, line))
        if p is None:
            p = memo[(lead.time_zone, line)] = odds.chance(lead.time_zone, now, line)
        return (lead.state != "callback", -lead.priority, -p)

    return sorted(leads, key=key)


def _released_state() -> Any:
    """A released lead with an open callback promise is a callback again, else a retry."""
    open_promise = (
        select(Callback.id)
        .where(
            Callback.lead_id == Lead.id,
            Callback.state.in_(("pending", "fallback", "missed")),
        )
        .exists()
    )
    return case((open_promise, "callback"), else_="retry")


def next_day_start(now: float, tz_name: str, window_start: str) -> float:
    """When the lead's next calling day starts (for the daily cap)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(tz_name)
    local = datetime.fromtimestamp(now, tz)
    start = CallingWindow.parse(window_start, "23:59").start
    nxt = (local + timedelta(days=1)).replace(
        hour=start.hour, minute=start.minute, second=0, microsecond=0
    )
    return nxt.timestamp()


__all__ = [
    "AnswerOdds",
    "AttemptInfo",
    "ClaimedLead",
    "ContactCheck",
    "LeadStore",
    "line_type",
    "next_day_start",
]
