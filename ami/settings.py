"""Settings of the AMI side: which Asterisk servers, how to keep the link, what the tracker
treats as an endpoint, and how the built-in PBX simulator behaves."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmiServerSettings(_Strict):
    """One Asterisk server; several may be configured, each with a unique name."""

    name: str = Field("pbx1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "cti"
    secret: SecretStr = SecretStr("")
    #: seconds between keepalive Pings, and how long a Ping may stay unanswered
    ping_interval: float = Field(5.0, gt=0)
    ping_timeout: float = Field(3.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    #: reconnect backoff: first delay, cap, and +/- jitter fraction
    reconnect_min: float = Field(0.5, gt=0)
    reconnect_max: float = Field(30.0, gt=0)
    reconnect_jitter: float = Field(0.2, ge=0, le=1)
    #: seconds an action may wait for its response before it fails
    action_timeout: float = Field(10.0, gt=0)
    #: Login `Events:` mask; "on" receives everything the manager.conf user may read
    events: str = "on"

    @model_validator(mode="after")
    def _backoff_order(self) -> AmiServerSettings:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self


class TrackerSettings(_Strict):
    #: fnmatch patterns of Local channels to treat as endpoints (labs without phones);
    #: e.g. "Local/*@agents-*;1". Default: none, Local channels are plumbing.
    local_endpoints: list[str] = Field(default_factory=list)


class SimulatorSettings(_Strict):
    """The built-in PBX simulator (`cti simulate-pbx`, `cti demo`)."""

    host: str = "127.0.0.1"
    port: int = Field(5038, ge=0, le=65535)
    username: str = "cti"
    secret: SecretStr = SecretStr("demo-secret")
    seed: int = 1
    #: new inbound calls per minute offered to queues (0: only on request)
    inbound_per_minute: float = Field(6.0, ge=0)
    queues: list[str] = Field(default_factory=lambda: ["support", "sales"])
    #: seconds an agent's phone rings before it answers (simulated phone), talk time range
    agent_answer_after: float = Field(2.0, ge=0)
    talk_min: float = Field(20.0, ge=0)
    talk_max: float = Field(90.0, ge=0)
    #: outbound (Originate) outcome mix; the rest is no-answer
    p_answer: float = Field(0.45, ge=0, le=1)
    p_busy: float = Field(0.15, ge=0, le=1)
    p_congestion: float = Field(0.05, ge=0, le=1)
    customer_answer_after: float = Field(4.0, ge=0)
    #: caller numbers used for generated inbound calls (the demo CRM seed uses the same ones)
    caller_numbers: list[str] = Field(default_factory=list)
    #: every delay is divided by this (tests run a 60 s call in 0.6 s with 100)
    time_scale: float = Field(1.0, gt=0)
    #: seconds before a wrong Login is answered (Asterisk waits about 1 s), then the close
    login_fail_delay: float = Field(1.0, ge=0)
    #: per-queue strategy, "rrmemory" (default) or "ringall"
    queue_strategies: dict[str, Literal["rrmemory", "ringall"]] = Field(default_factory=dict)
    #: members present without QueueAdd: queue -> ["PJSIP/1001|Anna Agent", ...]
    static_members: dict[str, list[str]] = Field(default_factory=dict)
    #: seconds each member rings before the queue tries the next one; pause between rounds
    ring_timeout: float = Field(15.0, gt=0)
    queue_retry: float = Field(2.0, ge=0)
    #: seconds a queued caller waits before hanging up (abandon)
    patience: float = Field(60.0, gt=0)
    #: seconds between the trunk call being answered and the queue join (the IVR prompt)
    ivr_delay: float = Field(0.5, ge=0)
    #: seconds a direct Dial (no queue) rings a device
    dial_timeout: float = Field(60.0, gt=0)
    #: how simulated agent phones behave unless set_phone() says otherwise
    phone_mode: Literal["auto", "manual", "never"] = "auto"
    #: seconds until a busy/congested/rejected customer number fails
    reject_after: float = Field(0.5, ge=0)
    #: answered dialer calls with AMD=1 that AMD classifies as a machine (and the seconds the
    #: detection takes); numbers +49305556XX are always machines
    p_machine: float = Field(0.0, ge=0, le=1)
    amd_seconds: float = Field(2.5, ge=0)
    #: seconds the safe-harbor message plays before the dialer's abandoned call hangs up
    safe_harbor_seconds: float = Field(3.0, ge=0)
    #: dialled extensions (DIDs) that lead to a queue; an exten equal to a queue name does too
    dids: dict[str, str] = Field(default_factory=lambda: {"800": "support", "810": "sales"})
    #: dialplan names, matching config/asterisk/extensions.conf
    trunk: str = Field("trunk", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    inbound_context: str = "from-trunk"
    agent_context: str = "from-internal"
    trunk_context: str = "from-trunk"
    dialer_context: str = "cti-dialer"
    dialer_exten: str = "connect"
    #: Uniqueid epoch (`<epoch>.<n>`); None takes the wall clock at start
    epoch: int | None = None
    #: bytes a client may leave unread before it is disconnected
    max_client_buffer: int = Field(32 * 1024 * 1024, ge=65536)
