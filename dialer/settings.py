"""Settings of the outbound dialer: defaults that a campaign may override."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DialerSettings(_Strict):
    enabled: bool = True
    #: the dialplan context/exten that answered calls are sent to (see config/asterisk)
    context: str = "cti-dialer"
    exten: str = "connect"
    #: Originate channel template; {number} is the E.164 number without "+" replaced
    channel_template: str = "PJSIP/{number}@trunk"
    abandon_cap: float = Field(0.03, gt=0, le=0.05)
    abandon_window_days: float = Field(30.0, gt=0)
    connect_deadline: float = Field(2.0, gt=0)
    ring_timeout: float = Field(25.0, ge=15)
    calling_window: tuple[str, str] = ("08:00", "21:00")
    no_redial_after_abandon_hours: float = Field(72.0, ge=0)
    machine_redial_hours: float = Field(24.0, ge=0)
    callback_grace_minutes: float = Field(10.0, ge=0)
    callback_fallback_to_anyone: bool = True
    tick_seconds: float = Field(1.0, gt=0)
    #: the CTI's own connect deadline fires this long after the dialplan's (which is the
    #: authority: Queue(...,CTI_DEADLINE) then safe-harbor); it only catches calls whose
    #: CtiAbandoned event never came, and then Redirects them to safe-harbor itself
    abandon_grace_seconds: float = Field(1.0, ge=0)
    safe_harbor_exten: str = "safe-harbor"
    #: agent-first calls (callbacks for an agent, preview): the agent's device is originated
    #: and this context dials the customer (config/asterisk/extensions.conf)
    agent_first_context: str = "cti-click2call"
    agent_first_timeout: float = Field(30.0, ge=5)
    #: a skipped preview lead comes back after this many seconds
    preview_skip_seconds: float = Field(300.0, ge=0)
    #: agent state changes are written in batches at most this far apart
    agent_log_flush_seconds: float = Field(1.0, gt=0)
    agent_log_batch: int = Field(500, ge=1)
