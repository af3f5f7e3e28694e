"""Supervisor figures: agents' time accounting, campaign results, history and CSV export.

Live agent figures come from the dialer's in-memory `Utilization` (fed by every
AgentStateChange); history is rebuilt from the persisted agent log with the same code, so both
add up the same way: ready + ringing + on_call + wrap_up + paused == logged_in, per agent and
day. Campaign figures are read from the attempt/lead tables (the source of truth that survives
restarts) and joined with what the running engine knows (calls in flight, the pacer's
prediction, the current dial ratio).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from crm_bridge.db import make_sessionmaker
from dialer.models import Attempt, Campaign

AGENT_COLUMNS = (
    "logged_in",
    "ready",
    "ringing",
    "on_call",
    "wrap_up",
    "paused",
    "calls",
    "occupancy",
)
CAMPAIGN_COLUMNS = (
    "attempts",
    "connects",
    "live_answers",
    "machines",
    "busy",
    "no_answer",
    "congestion",
    "failed",
    "abandoned",
    "lost",
)


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).date().isoformat()


def agent_figures(dialer: Any, agents: Any, now: float) -> list[dict[str, Any]]:
    """Today's time accounting per agent (open intervals counted up to `now`) with the
    agent's current state; agents logged out today still appear with their totals."""
    report = dialer.utilization.report(now)
    today = _day(now)
    views = {v.agent_id: v for v in agents.views()} if agents is not None else {}
    out = []
    for agent in sorted(set(report) | set(views)):
        fig = report.get(agent, {}).get(today)
        v = views.get(agent)
        status = getattr(v, "status", None)
        out.append(
            {
                "agent": agent,
                "status": str(getattr(status, "value", status or "logged_out")),
                "since": getattr(v, "since", None),
                "day": today,
                **_agent_row(fig),
            }
        )
    return out


def _agent_row(fig: dict[str, Any] | None) -> dict[str, Any]:
    if fig is None:
        return {
            "logged_in": 0.0,
            "ready": 0.0,
            "ringing": 0.0,
            "on_call": 0.0,
            "wrap_up": 0.0,
            "paused": 0.0,
            "paused_by_reason": {},
            "calls": 0,
            "occupancy": None,
            "campaign_seconds": {},
        }
    return {
        k: fig[k]
        for k in (
            "logged_in",
            "ready",
            "ringing",
            "on_call",
            "wrap_up",
            "paused",
            "paused_by_reason",
            "calls",
            "occupancy",
            "campaign_seconds",
        )
    }


async def campaign_figures(dialer: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Per campaign: outcomes, abandonment in the legal window, dials per connect, leads
    remaining/exhausted, callbacks, and (while running) the dial ratio and the pacer's
    predicted live-answer share next to the realized one."""
    now = dialer.now()
    sessions = make_sessionmaker(dialer.engine)
    async with sessions() as s:
        q = select(Campaign).order_by(Campaign.name)
        if name is not None:
            q = q.where(Campaign.name == name)
        campaigns = list((await s.execute(q)).scalars())
    live = dialer.live_figures()
    grace = dialer.settings.callback_grace_minutes * 60.0
    out = []
    for c in campaigns:
        fig = await dialer.leads.campaign_figures(c, now)
        fig["lost"] = await _count_outcome(dialer, c.id, "lost")
        cbs = await dialer.leads.callbacks(campaign_id=c.id, now=now, grace=grace, limit=10_000)
        fig["callbacks"] = {
            "pending": sum(1 for r in cbs if r["state"] in ("pending", "fallback")),
            "overdue": sum(1 for r in cbs if r["overdue"]),
            "missed": sum(1 for r in cbs if r["state"] == "missed"),
            "done": sum(1 for r in cbs if r["state"] == "done"),
        }
        fig["mode"] = c.mode
        fig["state"] = c.state
        fig["abandon_cap"] = c.abandon_cap
        fig["abandon_window"] = "24h" if c.abandon_window <= 86400.0 else "30d"
        fig["leads_exhausted"] = fig["leads_done"]
        lf = live.get(c.name)
        fig["live"] = lf
        decisions = dialer.decisions(c.name)
        fig["recent_launches"] = sum(d.launched for d in decisions)
        fig["dial_ratio"] = None if lf is None else lf["dial_ratio"]
        fig["prediction"] = {
            "predicted_answer_rate": fig.pop("predicted_answer_rate"),
            "actual_answer_rate": fig.pop("actual_answer_rate"),
            # the pacer predicts live answers per dial; this is what happened
            "actual_live_rate": (fig["live_answers"] / fig["attempts"])
            if fig["attempts"]
            else None,
            "current_predicted_hit_rate": None if lf is None else lf["predicted_hit_rate"],
        }
        out.append(fig)
    return out


async def _count_outcome(dialer: Any, campaign_id: int, outcome: str) -> int:
    from sqlalchemy import func

    async with make_sessionmaker(dialer.engine)() as s:
        return int(
            (
                await s.execute(
                    select(func.count()).where(
                        Attempt.campaign_id == campaign_id, Attempt.outcome == outcome
                    )
                )
            ).scalar_one()
        )


async def history(dialer: Any, since: float, until: float) -> dict[str, Any]:
    """Per agent and day (time accounting from the agent log) and per campaign and day
    (attempt outcomes) for [since, until)."""
    agents: list[dict[str, Any]] = []
    if dialer.agent_log is not None:
        for agent, days in sorted((await dialer.agent_log.history(since, until)).items()):
            for day, fig in sorted(days.items()):
                agents.append({"agent": agent, "day": day, **_agent_row(fig)})
    per: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(CAMPAIGN_COLUMNS, 0)
    )
    async with make_sessionmaker(dialer.engine)() as s:
        rows = await s.execute(
            select(Campaign.name, Attempt.created_at, Attempt.outcome, Attempt.connected_at)
            .join(Campaign, Campaign.id == Attempt.campaign_id)
            .where(Attempt.created_at >= since, Attempt.created_at < until)
        )
        for name, created, outcome, connected in rows.all():
            f = per[(name, _day(created))]
            f["attempts"] += 1
            if connected is not None:
                f["connects"] += 1
            if outcome in ("handled", "answered", "abandoned"):
                f["live_answers"] += 1
            key = {
                "machine": "machines",
                "busy": "busy",
                "no-answer": "no_answer",
                "congestion": "congestion",
                "failed": "failed",
                "abandoned": "abandoned",
                "lost": "lost",
            }.get(outcome)
            if key is not None:
                f[key] += 1
    campaigns = []
    for (name, day), f in sorted(per.items()):
        live = f["live_answers"]
        campaigns.append(
            {
                "campaign": name,
                "day": day,
                **f,
                "abandon_rate": (f["abandoned"] / live) if live else 0.0,
                "dials_per_connect": (f["attempts"] / f["connects"]) if f["connects"] else None,
            }
        )
    return {
        "from": since,
        "to": until,
        "agents": agents,
        "campaigns": campaigns,
    }


def history_csv(hist: dict[str, Any]) -> str:
    """One CSV with a `kind` column (agent | campaign) so that a spreadsheet can filter."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "kind",
            "name",
            "day",
            *AGENT_COLUMNS,
            *CAMPAIGN_COLUMNS,
            "abandon_rate",
            "dials_per_connect",
        ]
    )
    blank_c = [""] * (len(CAMPAIGN_COLUMNS) + 2)
    for a in hist["agents"]:
        w.writerow(
            [
                "agent",
                _safe(a["agent"]),
                a["day"],
                *("" if a[k] is None else a[k] for k in AGENT_COLUMNS),
                *blank_c,
            ]
        )
    blank_a = [""] * len(AGENT_COLUMNS)
    for c in hist["campaigns"]:
        w.writerow(
            [
                "campaign",
                _safe(c["campaign"]),
                c["day"],
                *blank_a,
                *(c[k] for k in CAMPAIGN_COLUMNS),
                round(c["abandon_rate"], 5),
                "" if c["dials_per_connect"] is None else round(c["dials_per_connect"], 3),
            ]
        )
    return buf.getvalue()


def _safe(text: str) -> str:
    """No spreadsheet formula injection through an agent or campaign name."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
