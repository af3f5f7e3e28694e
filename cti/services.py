"""The objects a running daemon is made of, built once by `cti.app` and reached by request
handlers through `request.app[SERVICES]` (never through module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ami.connection import AmiLink
    from ami.tracker import CallTracker
    from crm_bridge.adapter import CrmAdapter
    from cti.accounts import AccountStore
    from cti.agents import AgentService
    from cti.auth import TokenService
    from cti.bus import EventBus
    from cti.hub import Hub
    from cti.pops import PopRouter
    from cti.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    bus: EventBus
    crm: CrmAdapter
    accounts: AccountStore
    tokens: TokenService
    hub: Hub
    agents: AgentService
    pops: PopRouter
    #: one AMI link and one tracker per configured Asterisk server, by server name
    links: dict[str, AmiLink] = field(default_factory=dict)
    trackers: dict[str, CallTracker] = field(default_factory=dict)
    #: the outbound dialer, when enabled (dialer.engine.Dialer)
    dialer: Any = None


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
