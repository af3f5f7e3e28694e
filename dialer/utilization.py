"""Agent time accounting from state-change events (pure: no clock, no I/O).

Supervisors read "where did the logged-in hour go". The figures are built from the times of
state changes, never by sampling, so they add up exactly: for every agent and day,
ready + ringing + on_call + wrap_up + paused(all reasons) == logged_in.

Each change closes the interval the agent was in and credits it to that state (and, for talk
and wrap-up, to the campaign of the call). Intervals crossing midnight are split by day in
the site's time zone. A change that arrives with an earlier time than the previous one (two
sources, clock skew) is credited as zero seconds and counted, never as negative time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from ami.events import AgentStateChange, AgentStatus

_WORKING = (AgentStatus.READY, AgentStatus.RINGING, AgentStatus.ON_CALL, AgentStatus.WRAP_UP)


@dataclass(slots=True)
class DayFigures:
    """Seconds per state for one agent on one day; `paused` is split by reason."""

    ready: float = 0.0
    ringing: float = 0.0
    on_call: float = 0.0
    wrap_up: float = 0.0
    paused: dict[str, float] = field(default_factory=dict)
    calls: int = 0
    #: talk + wrap-up seconds per campaign ("" for calls outside any campaign)
    campaign_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def paused_total(self) -> float:
        return sum(self.paused.values())

    @property
    def logged_in(self) -> float:
        return self.ready + self.ringing + self.on_call + self.wrap_up + self.paused_total

    @property
    def occupancy(self) -> float | None:
        """(talk + wrap) / (talk + wrap + ready + ringing): the dialer's yardstick."""
        busy = self.on_call + self.wrap_up
        avail = busy + self.ready + self.ringing
        return busy / avail if avail > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "logged_in": round(self.logged_in, 3),
            "ready": round(self.ready, 3),
            "ringing": round(self.ringing, 3),
            "on_call": round(self.on_call, 3),
            "wrap_up": round(self.wrap_up, 3),
            "paused": round(self.paused_total, 3),
            "paused_by_reason": {k: round(v, 3) for k, v in sorted(self.paused.items())},
            "calls": self.calls,
            "occupancy": None if self.occupancy is None else round(self.occupancy, 4),
            "campaign_seconds": {k: round(v, 3) for k, v in sorted(self.campaign_seconds.items())},
        }


@dataclass(slots=True)
class _Current:
    status: AgentStatus
    since: float
    reason: str | None
    campaign: str | None
    call_id: str | None


class Utilization:
    """Feed every AgentStateChange in order with `apply`; read figures with `day`/`report`."""

    def __init__(self, tz: tzinfo = UTC) -> None:
        self._tz = tz
        self._current: dict[str, _Current] = {}
        self._days: dict[tuple[str, date], DayFigures] = defaultdict(DayFigures)
        self.out_of_order = 0

    def apply(self, change: AgentStateChange) -> None:
        cur = self._current.get(change.agent)
        if cur is not None:
            end = change.at
            if end < cur.since:
                self.out_of_order += 1
                end = cur.since
            self._credit(change.agent, cur, cur.since, end)
        if change.status is AgentStatus.LOGGED_OUT:
            self._current.pop(change.agent, None)
            return
        if (
            change.status is AgentStatus.ON_CALL
            and change.call_id
            and (
                cur is None
                or cur.call_id != change.call_id
                or cur.status is not AgentStatus.ON_CALL
            )
        ):
            self._days[(change.agent, self._day(change.at))].calls += 1
        since = change.at if cur is None else max(change.at, cur.since)
        self._current[change.agent] = _Current(
            change.status, since, change.reason, change.campaign, change.call_id
        )

    def apply_all(self, changes: Iterable[AgentStateChange]) -> None:
        for c in changes:
            self.apply(c)

    def _day(self, t: float) -> date:
        return datetime.fromtimestamp(t, self._tz).date()

    def _credit(self, agent: str, cur: _Current, start: float, end: float) -> None:
        while end > start:
            day = self._day(start)
            midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), self._tz)
            cut = min(end, midnight.timestamp())
            if cut <= start:  # DST edge: never loop forever
                cut = end
            self._add(self._days[(agent, day)], cur, cut - start)
            start = cut

    @staticmethod
    def _add(fig: DayFigures, cur: _Current, seconds: float) -> None:
        s = cur.status
        if s is AgentStatus.READY:
            fig.ready += seconds
        elif s is AgentStatus.RINGING:
            fig.ringing += seconds
        elif s is AgentStatus.ON_CALL:
            fig.on_call += seconds
        elif s is AgentStatus.WRAP_UP:
            fig.wrap_up += seconds
        elif s is AgentStatus.PAUSED:
            reason = cur.reason or "unspecified"
            fig.paused[reason] = fig.paused.get(reason, 0.0) + seconds
        if s in (AgentStatus.ON_CALL, AgentStatus.WRAP_UP):
            key = cur.campaign or ""
            fig.campaign_seconds[key] = fig.campaign_seconds.get(key, 0.0) + seconds

    def day(self, agent: str, day: date, now: float | None = None) -> DayFigures:
        """Figures of one agent and day; with `now`, the open interval counts up to `now`."""
        fig = self._days.get((agent, day))
        base = DayFigures() if fig is None else _copy(fig)
        cur = self._current.get(agent)
        if now is not None and cur is not None and now > cur.since:
            probe = Utilization(self._tz)
            probe._credit(agent, cur, cur.since, now)
            extra = probe._days.get((agent, day))
            if extra is not None:
                _merge(base, extra)
        return base

    def report(self, now: float | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """{agent: {YYYY-MM-DD: figures}} for every agent and day seen (live intervals to now)."""
        keys = set(self._days)
        if now is not None:
            for agent, cur in self._current.items():
                d = self._day(cur.since)
                while d <= self._day(now):
                    keys.add((agent, d))
                    d += timedelta(days=1)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for agent, d in sorted(keys):
            out.setdefault(agent, {})[d.isoformat()] = self.day(agent, d, now).to_dict()
        return out

    def status_of(self, agent: str) -> AgentStatus:
        cur = self._current.get(agent)
        return AgentStatus.LOGGED_OUT if cur is None else cur.status


def _copy(f: DayFigures) -> DayFigures:
    return DayFigures(
        f.ready, f.ringing, f.on_call, f.wrap_up, dict(f.paused), f.calls, dict(f.campaign_seconds)
    )


def _merge(into: DayFigures, extra: DayFigures) -> None:
    into.ready += extra.ready
    into.ringing += extra.ringing
    into.on_call += extra.on_call
    into.wrap_up += extra.wrap_up
    for k, v in extra.paused.items():
        into.paused[k] = into.paused.get(k, 0.0) + v
    for k, v in extra.campaign_seconds.items():
        into.campaign_seconds[k] = into.campaign_seconds.get(k, 0.0) + v
