"""A real aiohttp server with the /ws endpoint and real websocket clients, for the hub tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from cti.agents import AgentService, AmiSender
from cti.auth import Principal, TokenService
from cti.hub import Hub
from cti.services import SERVICES, Services
from cti.settings import AgentSettings, Settings, WebSettings
from cti.ws import ws_handler

SECRET = b"test-secret-0123456789abcdef"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Env:
    url: str
    tokens: TokenService
    hub: Hub
    agents: AgentService
    hub_clock: Clock
    token_clock: Clock
    runner: web.AppRunner
    session: aiohttp.ClientSession
    live_pops: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def token(self, p: Principal) -> str:
        return str(self.tokens.issue(p)["access_token"])

    async def raw(self, **kw: Any) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(self.url + "/ws", autoclose=False, **kw)

    async def connect(
        self,
        p: Principal,
        *,
        last_seq: int | None = None,
        stream: str | None = None,
        **kw: Any,
    ) -> aiohttp.ClientWebSocketResponse:
        ws = await self.raw(**kw)
        msg: dict[str, Any] = {"type": "auth", "token": self.token(p)}
        if last_seq is not None:
            msg["last_seq"] = last_seq
        if stream is not None:
            msg["stream"] = stream
        await ws.send_str(json.dumps(msg))
        return ws

    async def close(self) -> None:
        await self.hub.close_all()
        await self.session.close()
        await self.runner.cleanup()


async def start_env(
    web_overrides: Mapping[str, Any] | None = None,
    ami: Mapping[str, AmiSender] | None = None,
    agent_settings: AgentSettings | None = None,
    live_pops: Callable[[str], list[dict[str, Any]]] | None = None,
    accounts: Any = None,
) -> Env:
    ws_settings = WebSettings(**{"ws_heartbeat_seconds": 0, **(web_overrides or {})})
    settings = Settings(web=ws_settings)
    token_clock = Clock(1_800_000_000.0)
    hub_clock = Clock()
    tokens = TokenService(SECRET, 60, 600, clock=token_clock)
    agents = AgentService(agent_settings or AgentSettings(), ami or {})
    live: dict[str, list[dict[str, Any]]] = {}

    async def snapshot(agent_id: str) -> dict[str, Any]:
        calls = live_pops(agent_id) if live_pops is not None else live.get(agent_id, [])
        return {"agent": agents.view(agent_id).to_dict(), "calls": calls}

    hub = Hub(ws_settings, snapshot, clock=hub_clock)
    services = Services(
        settings=settings,
        engine=None,  # type: ignore[arg-type]
        bus=None,  # type: ignore[arg-type]
        crm=None,  # type: ignore[arg-type]
        accounts=accounts,
        tokens=tokens,
        hub=hub,
        agents=agents,
        pops=None,  # type: ignore[arg-type]
    )
    app = web.Application()
    app[SERVICES] = services
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Env(
        url=f"http://127.0.0.1:{port}",
        tokens=tokens,
        hub=hub,
        agents=agents,
        hub_clock=hub_clock,
        token_clock=token_clock,
        runner=runner,
        session=aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)),
        live_pops=live,
    )


async def recv(ws: aiohttp.ClientWebSocketResponse, wait: float = 3.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=wait)
    assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    data = json.loads(msg.data)
    assert isinstance(data, dict)
    return data


async def closed_with(ws: aiohttp.ClientWebSocketResponse, wait: float = 3.0) -> int | None:
    """Read until the server closes; the close code (errors before it are skipped)."""
    for _ in range(100_000):
        msg = await ws.receive(timeout=wait)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            await ws.close()
            return int(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code
    raise AssertionError("no close")


async def nothing_more(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.2) -> bool:
    try:
        msg = await ws.receive(timeout=wait)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected message {msg.type} {msg.data!r}")
