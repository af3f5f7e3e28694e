"""The dialer's tables: campaigns, leads, attempts.

Times are float seconds since the epoch (UTC): the dialer's clock is injectable (tests run
days of campaign in seconds), the pacer thinks in seconds, and comparisons are cheap.

* Leads belong to the campaign, never to agents: nobody reassigns lists in the morning.
* An attempt row is written BEFORE its Originate is sent, with the ChannelId the Originate
  carries, so after a crash every in-flight call can be matched or reconciled: a lead is never
  lost and never dialled twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from crm_bridge.db import Base

IdType = BigInteger().with_variant(Integer(), "sqlite")

MODES = ("preview", "progressive", "predictive")
CAMPAIGN_STATES = ("stopped", "running", "paused")
#: new -> claimed -> dialing -> (retry | callback | done); claimed/dialing are transient
LEAD_STATES = ("new", "claimed", "dialing", "retry", "callback", "done")
ATTEMPT_STATES = ("pending", "dialing", "answered", "connected", "ended")
OUTCOMES = (
    "handled",
    "answered",
    "busy",
    "no-answer",
    "congestion",
    "failed",
    "machine",
    "abandoned",
    "dnc",
    "invalid",
    "lost",
)


def _in(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


class Campaign(Base):
    __tablename__ = "dialer_campaign"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    mode: Mapped[str] = mapped_column(String(16), default="progressive")
    state: Mapped[str] = mapped_column(String(16), default="stopped")
    #: the Asterisk queue answered calls go to (the campaign's agent group)
    queue: Mapped[str] = mapped_column(String(80))
    server: Mapped[str] = mapped_column(String(64), default="")
    caller_id: Mapped[str] = mapped_column(String(80), default="")
    window_start: Mapped[str] = mapped_column(String(5), default="08:00")
    window_end: Mapped[str] = mapped_column(String(5), default="21:00")
    abandon_cap: Mapped[float] = mapped_column(Float, default=0.03)
    #: rolling abandonment window in seconds (30 days; 24 h for UK rules)
    abandon_window: Mapped[float] = mapped_column(Float, default=30 * 86400.0)
    max_ring_seconds: Mapped[float] = mapped_column(Float, default=25.0)
    amd: Mapped[bool] = mapped_column(Boolean, default=False)
    safe_harbor: Mapped[str] = mapped_column(String(80), default="cti-safe-harbor")
    #: consent purpose checked at claim time (crm consent), e.g. "marketing"
    purpose: Mapped[str] = mapped_column(String(50), default="marketing")
    retry: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        _in("mode", MODES, "mode"),
        _in("state", CAMPAIGN_STATES, "state"),
        CheckConstraint("max_ring_seconds >= 15", name="ring"),
        CheckConstraint("abandon_cap > 0 AND abandon_cap <= 0.05", name="cap"),
    )


class Lead(Base):
    __tablename__ = "dialer_lead"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("dialer_campaign.id", ondelete="CASCADE"))
    #: the importer's key for the row (e.g. the CSV's ref column), unique per campaign
    ref: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(String(200), default="")
    #: E.164 numbers in rotation order
    numbers: Mapped[list[str]] = mapped_column(JSON)
    number_index: Mapped[int] = mapped_column(Integer, default=0)
    time_zone: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="SET NULL")
    )
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="new")
    #: when a retry or callback is due (None: now)
    next_at: Mapped[float | None] = mapped_column(Float)
    #: agent a callback is promised by (None: anyone)
    callback_agent: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempts_today: Mapped[int] = mapped_column(Integer, default=0)
    attempts_day: Mapped[str] = mapped_column(String(10), default="")
    outcome_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    last_outcome: Mapped[str] = mapped_column(String(16), default="")
    last_attempt_at: Mapped[float | None] = mapped_column(Float)
    done_reason: Mapped[str] = mapped_column(String(80), default="")
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    claimed_at: Mapped[float | None] = mapped_column(Float)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        UniqueConstraint("campaign_id", "ref", name="uq_dialer_lead_ref"),
        Index("ix_dialer_lead_pick", "campaign_id", "state", "priority", "next_at"),
        _in("state", LEAD_STATES, "state"),
    )


class Attempt(Base):
    __tablename__ = "dialer_attempt"

    #: also the Originate's ChannelId (Asterisk uses it as the channel's Uniqueid)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("dialer_campaign.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("dialer_lead.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(20))
    action_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    outcome: Mapped[str] = mapped_column(String(16), default="")
    cause: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[float | None] = mapped_column(Float)
    connected_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    agent: Mapped[str] = mapped_column(String(80), default="")
    #: an answered call not connected to an agent within the deadline
    abandoned: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the pacer's predicted answer probability when it launched this call (for prediction vs
    #: reality figures)
    predicted: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")
    #: "mobile", "fixed" or "" (unknown / either), from the number's prefix: people answer
    #: mobiles and landlines at different hours (dialer.leads.AnswerOdds)
    line: Mapped[str] = mapped_column(String(8), default="", server_default="")

    __table_args__ = (
        Index("ix_dialer_attempt_window", "campaign_id", "answered_at"),
        #: the answer-rate estimate reads a campaign's recent attempts (dialer.leads.AnswerOdds)
        Index("ix_dialer_attempt_created", "campaign_id", "created_at"),
        Index("ix_dialer_attempt_number", "number", "ended_at"),
        Index("ix_dialer_attempt_state", "state"),
        _in("state", ATTEMPT_STATES, "state"),
    )


CALLBACK_STATES = ("pending", "dialing", "done", "fallback", "missed", "cancelled")


class AgentEvent(Base):
    """Every agent state change, appended in batches: the source of historical utilization
    (the live figures are computed in memory from the same events)."""

    __tablename__ = "dialer_agent_event"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(String(80))
    call_id: Mapped[str | None] = mapped_column(String(200))
    campaign: Mapped[str | None] = mapped_column(String(80))

    __table_args__ = (
        Index("ix_dialer_agent_event_at", "at"),
        Index("ix_dialer_agent_event_agent", "agent", "at"),
    )


class Callback(Base):
    """A promised call back, from scheduling to its outcome, so that none is silently lost.

    The lead row (state "callback", next_at, callback_agent) is what the dialer dispatches on;
    this row is the ledger supervisors read: pending -> dialing -> done, or pending ->
    fallback (the agent did not show up within the grace period, anyone may take it), or
    missed (no fallback configured: it waits for its agent and is reported)."""

    __tablename__ = "dialer_callback"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("dialer_campaign.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("dialer_lead.id", ondelete="CASCADE"))
    agent: Mapped[str | None] = mapped_column(String(80))
    due_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    outcome: Mapped[str] = mapped_column(String(16), default="")
    attempt_id: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_dialer_callback_state", "state", "due_at"),
        Index("ix_dialer_callback_lead", "lead_id"),
        _in("state", CALLBACK_STATES, "state"),
    )
