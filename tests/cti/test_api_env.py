"""The whole daemon on 127.0.0.1 for API, fuzz and browser tests: `cti.app` composition root
with a real SQLite file, the PBX simulator over TCP as its Asterisk, accounts made through the
real store, and a small HTTP/websocket client. (Helpers only; the tests using them live in
test_api*.py, test_fuzz*.py and test_agent_page*.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from ami.settings import SimulatorSettings
from ami.simulator import PbxSimulator
from crm_bridge.adapter import NewCustomer, NewPhone
from crm_bridge.store import BuiltinCrm
from cti.app import Daemon, running_daemon
from cti.services import Services
from cti.settings import Settings, load_settings

SIM_SECRET = "sim-secret-for-tests"
PASSWORD = "correct horse battery"


def daemon_settings_for(tmp: Path, ami_port: int, **web: Any) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp),
            "log": {"level": "warning"},
            "web": {"port": 0, "token_secret": "t" * 40, **web},
            "ami": {
                "servers": [
                    {
                        "name": "pbx1",
                        "host": "127.0.0.1",
                        "port": ami_port,
                        "username": "cti",
                        "secret": SIM_SECRET,
                        "reconnect_min": 0.05,
                        "reconnect_max": 0.5,
                    }
                ]
            },
            "crm": {"default_region": "DE", "default_area": "30"},
            "dialer": {"enabled": False},
            "agents": {"wrap_up_seconds": {"default": 30.0}},
        },
    )


@dataclass
class Client:
    """An HTTP client with a bearer token (or none)."""

    http: aiohttp.ClientSession
    base: str
    token: str | None = None

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kw: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kw["data"] = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kw["json"] = body
        async with self.http.request(method, self.base + path, **kw) as r:
            text = await r.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            return r.status, data

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.call("POST", path, body if body is not None else {})


@dataclass
class Env:
    daemon: Daemon
    sim: PbxSimulator
    http: aiohttp.ClientSession
    accounts: dict[str, tuple[str, str]] = field(default_factory=dict)  # username -> (id, role)

    @property
    def url(self) -> str:
        return self.daemon.url

    @property
    def services(self) -> Services:
        assert self.daemon.services is not None
        return self.daemon.services

    @property
    def store(self) -> BuiltinCrm:
        """The built-in CRM store behind the adapter (for set-up and checks)."""
        crm = self.services.crm
        assert isinstance(crm, BuiltinCrm)
        return crm

    def anonymous(self) -> Client:
        return Client(self.http, self.url)

    async def account(self, username: str, role: str = "agent", display: str = "") -> Client:
        p = await self.services.accounts.create(
            username, PASSWORD, role=role, display_name=display or username.title()
        )
        self.accounts[username] = (p.agent_id, role)
        return await self.login(username)

    async def login(self, username: str) -> Client:
        c = self.anonymous()
        status, data = await c.post("/api/auth/login", {"username": username, "password": PASSWORD})
        assert status == 200, data
        c.token = data["access_token"]
        return c

    async def customer(self, name: str, number: str, **kw: Any) -> str:
        card = await self.services.crm.create_customer(
            NewCustomer(name=name, phones=[NewPhone(number, "mobile")], **kw), actor="test"
        )
        return str(card.id)

    async def wait(self, cond: Callable[[], Any], within: float = 5.0) -> Any:
        deadline = time.monotonic() + within
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)

    async def ami_up(self) -> None:
        svc = self.services
        await self.wait(lambda: all(link.connected for link in svc.links.values()))


def quiet_simulator() -> PbxSimulator:
    """A PBX with no calls of its own: agents answer after 0.5 s, calls last 5 minutes."""
    return PbxSimulator(
        SimulatorSettings(
            port=0,
            secret=SecretStr(SIM_SECRET),
            inbound_per_minute=0,
            agent_answer_after=0.5,
            talk_min=300,
            talk_max=300,
        )
    )


@asynccontextmanager
async def daemon_env(tmp: Path, **web: Any) -> AsyncIterator[Env]:
    sim = quiet_simulator()
    await sim.start()
    try:
        settings = daemon_settings_for(tmp, sim.port, **web)
        async with running_daemon(settings) as daemon, aiohttp.ClientSession() as http:
            env = Env(daemon, sim, http)
            await env.ami_up()
            yield env
    finally:
        await sim.stop()
