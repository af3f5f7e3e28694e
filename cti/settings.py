"""The one typed settings object, loaded from TOML plus `CTI_...` environment variables.

Order (later wins): the packaged `config/cti.toml` defaults, the file given by `--config` (or
`CTI_CONFIG`), then environment variables. Nested keys use a double underscore:
`CTI_WEB__PORT=8081`, `CTI_CRM__URL=postgresql+asyncpg://...`. Lists and tables in the
environment are given as JSON (`CTI_AMI__SERVERS='[{"name":"pbx1","host":"10.0.0.5"}]'`).

Deep code never reads this module: `cti` builds the object once and hands each part its own
section.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ami.settings import AmiServerSettings, SimulatorSettings, TrackerSettings
from crm_bridge.settings import CrmSettings
from dialer.settings import DialerSettings

#: the documented defaults in the repository's config/; the models below carry the same values,
#: so an install without the repository still starts
DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config" / "cti.toml"
ENV_PREFIX = "CTI_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogSettings(_Strict):
    level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    #: auto: console on a terminal, JSON lines otherwise
    format: str = Field("auto", pattern=r"^(auto|json|console)$")


class WebSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: HMAC key for access/refresh tokens; empty: a random key per start (tokens die with it)
    token_secret: SecretStr = SecretStr("")
    access_token_seconds: int = Field(900, ge=30)
    refresh_token_seconds: int = Field(8 * 3600, ge=60)
    max_ws_message_bytes: int = Field(64 * 1024, ge=1024)
    ws_send_queue: int = Field(256, ge=8)
    ws_backlog_messages: int = Field(200, ge=0)
    ws_backlog_seconds: float = Field(300.0, ge=0)
    #: a client more than this many messages behind on its acks counts as too slow (4008)
    ws_max_unacked: int = Field(1000, ge=8)
    #: the first message (auth) must arrive within this time (else close 4000)
    ws_auth_seconds: float = Field(5.0, gt=0)
    #: websocket-level ping interval (0: none); a peer that stops answering is closed
    ws_heartbeat_seconds: float = Field(20.0, ge=0)
    #: how long closing a socket may wait for the peer before the TCP connection is cut
    ws_close_timeout: float = Field(2.0, gt=0)
    #: an open websocket gets `token.expiring` this long before its access token expires
    #: (the client re-authenticates on the socket; without that it is closed with 4002)
    ws_reauth_warning_seconds: float = Field(30.0, ge=0)
    #: the CRM lookup may delay a pop at most this long
    pop_deadline_ms: int = Field(150, ge=10, le=5000)


class AgentSettings(_Strict):
    pause_reasons: list[str] = Field(
        default_factory=lambda: ["break", "lunch", "meeting", "training", "backoffice"]
    )
    #: wrap-up seconds after a call, per queue/campaign name; "default" for the rest
    wrap_up_seconds: dict[str, float] = Field(default_factory=lambda: {"default": 30.0})
    #: pause the agent in the queues during wrap-up (QueuePause reason "wrap-up"), so that no
    #: queue call rings before the CTI's wrap-up timer ends. Off: the queues' own `wrapuptime`
    #: (queues.conf) decides, and a queue call may end the CTI wrap-up early.
    pause_during_wrap_up: bool = False
    #: click-to-call: the agent's device is originated first, then connected to this
    #: context with the customer's E.164 number as the extension
    dial_context: str = Field("from-internal", pattern=r"^[A-Za-z0-9_.-]{1,80}$")


class AmiSettings(_Strict):
    servers: list[AmiServerSettings] = Field(default_factory=lambda: [AmiServerSettings()])
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)

    @field_validator("servers")
    @classmethod
    def _unique_names(cls, servers: list[AmiServerSettings]) -> list[AmiServerSettings]:
        names = [s.name for s in servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"server names must be unique, repeated: {', '.join(dupes)}")
        if not servers:
            raise ValueError("at least one Asterisk server is needed")
        return servers


class Settings(_Strict):
    data_dir: Path = Path("data")
    log: LogSettings = Field(default_factory=LogSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    dialer: DialerSettings = Field(default_factory=DialerSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)

    def database_url(self) -> str:
        return self.crm.url or f"sqlite+aiosqlite:///{self.data_dir / 'cti.db'}"


class SettingsError(Exception):
    """Start-up must stop: the message names each bad key and what is wrong with it."""


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"config file {path} is not valid TOML: {e}") from None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "CTI_CONFIG" or name.startswith("CTI_TEST_"):
            continue  # CTI_TEST_* belong to the test suite (e.g. CTI_TEST_PG_URL)
        path = name[len(ENV_PREFIX) :].lower().split("__")
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise SettingsError(f"{name}: looks like JSON but does not parse") from None
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"{name}: conflicts with another CTI_ variable")
        node[path[-1]] = value
    return out


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {key}: {e['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    data: dict[str, Any] = _read_toml(DEFAULTS_FILE) if DEFAULTS_FILE.exists() else {}
    cfg = config_file or env.get("CTI_CONFIG")
    if cfg:
        data = _merge(data, _read_toml(Path(cfg)))
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(_format_errors(e)) from None


def with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`settings` with command-line values layered on top, validated like everything else
    (a bad `--port` is a SettingsError naming `web.port`, not a crash later)."""
    data = _merge(settings.model_dump(), overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(_format_errors(e)) from None


def secret_value(s: SecretStr) -> str:
    """The one place a secret is read; never pass the result to a logger."""
    return s.get_secret_value()
