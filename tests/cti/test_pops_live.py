"""Pops end to end over real sockets: the PBX simulator rings agents' devices, the daemon
(tracker, router, CRM store, hub) pops them over real websockets; ringall, a redirect to another
queue, and a reconnect that gets the live pop back in its snapshot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.cti.test_api_env import Client, Env, daemon_env

pytestmark = pytest.mark.slow


class Agent:
    def __init__(self, env: Env, client: Client, device: str) -> None:
        self.env = env
        self.client = client
        self.device = device
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.messages: list[dict[str, Any]] = []
        self.stream = ""
        self.last_seq = 0
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, resume: bool = False) -> dict[str, Any]:
        self.ws = await self.env.http.ws_connect(self.env.url.replace("http", "ws", 1) + "/ws")
        auth: dict[str, Any] = {"type": "auth", "token": self.client.token}
        if resume:
            auth.update(last_seq=self.last_seq, stream=self.stream)
        await self.ws.send_str(json.dumps(auth))
        hello = json.loads((await self.ws.receive(timeout=5)).data)
        assert hello["type"] == "hello"
        self.stream = hello["data"]["stream"]
        self._reader = asyncio.create_task(self._read())
        return hello

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            m = json.loads(msg.data)
            self.messages.append(m)
            if isinstance(m.get("seq"), int) and m["type"] != "snapshot":
                self.last_seq = m["seq"]
                await self.ws.send_str(json.dumps({"type": "ack", "seq": m["seq"]}))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()

    def of(self, call_id: str) -> list[str]:
        out = []
        for m in self.messages:
            d = m.get("data") or {}
            if d.get("call_id") != call_id:
                continue
            out.append(m["type"] if m["type"] != "call.update" else f"update:{d['state']}")
        return out

    def pop(self, call_id: str) -> dict[str, Any]:
        for m in self.messages:
            if m["type"] == "pop" and m["data"]["call_id"] == call_id:
                return m["data"]
        raise AssertionError("no pop")

    async def wait_for(self, call_id: str, kind: str, within: float = 5.0) -> None:
        await self.env.wait(lambda: kind in self.of(call_id), within)


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with daemon_env(tmp_path) as e:
        yield e


async def agent(env: Env, name: str, device: str, queues: list[str]) -> Agent:
    c = await env.account(name)
    env.sim.set_phone(device, "manual")
    status, data = await c.post("/api/agent/login", {"device": device, "queues": queues})
    assert status == 200, data
    a = Agent(env, c, device)
    await a.connect()
    return a


async def test_ringall_pops_everyone_and_tells_the_others(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from ami.settings import SimulatorSettings
    from ami.simulator import PbxSimulator

    # a ringall queue needs its own simulator settings
    sim = PbxSimulator(
        SimulatorSettings(
            port=0,
            secret=SecretStr("sim-secret-for-tests"),
            inbound_per_minute=0,
            queues=["hunt"],
            queue_strategies={"hunt": "ringall"},
        )
    )
    await sim.start()
    try:
        from cti.app import running_daemon
        from tests.cti.test_api_env import daemon_settings_for

        async with (
            running_daemon(daemon_settings_for(tmp_path, sim.port)) as daemon,
            aiohttp.ClientSession() as http,
        ):
            env = Env(daemon, sim, http)
            await env.ami_up()
            await env.customer("Erika Muster", "+4930123456")
            ann = await agent(env, "ann", "PJSIP/1001", ["hunt"])
            bob = await agent(env, "bob", "PJSIP/1002", ["hunt"])
            call_id = sim.inbound_call("+4930123456", queue="hunt")
            await ann.wait_for(call_id, "pop")
            await bob.wait_for(call_id, "pop")
            assert ann.pop(call_id)["identification"]["card"]["name"] == "Erika Muster"
            assert bob.pop(call_id)["identification"]["card"]["name"] == "Erika Muster"
            assert sim.answer("PJSIP/1002")
            await bob.wait_for(call_id, "update:answered_by_you")
            await ann.wait_for(call_id, "update:answered_elsewhere")
            assert ann.of(call_id).count("pop") == 1 and bob.of(call_id).count("pop") == 1
            await ann.close()
            await bob.close()
    finally:
        await sim.stop()


async def test_redirect_to_another_queue_moves_the_pop(env: Env) -> None:
    await env.customer("Erika Muster", "+4930123456")
    ann = await agent(env, "ann", "PJSIP/1001", ["support"])
    cid = await agent(env, "cid", "PJSIP/1003", ["sales"])
    call_id = env.sim.inbound_call("+4930123456", queue="support")
    await ann.wait_for(call_id, "pop")
    assert env.sim.answer("PJSIP/1001")
    await ann.wait_for(call_id, "update:answered_by_you")
    status, _ = await ann.client.post(f"/api/calls/{call_id}/notes", {"text": "for sales"})
    assert status == 200
    # the caller's channel is redirected to the sales queue, as a supervisor tool would
    caller = next(
        ch
        for ch, c in env.sim.engine.chan_call.items()
        if c.linkedid == call_id and ch.startswith("PJSIP/trunk")
    )
    from ami.actions import build_action

    link = next(iter(env.services.links.values()))
    resp = await link.send(
        build_action(
            "Redirect", {"Channel": caller, "Context": "from-trunk", "Exten": "810", "Priority": 1}
        )
    )
    assert getattr(resp, "ok", True)
    await cid.wait_for(call_id, "pop")
    pop = cid.pop(call_id)
    assert pop["queue"] == "sales" and pop["transferred"] is True
    assert [(h["agent"], h["notes"]) for h in pop["history"]] == [
        (env.accounts["ann"][0], ["for sales"])
    ]
    assert env.sim.answer("PJSIP/1003")
    await cid.wait_for(call_id, "update:answered_by_you")
    await ann.wait_for(call_id, "update:transferred_away")
    await ann.close()
    await cid.close()


async def test_reconnect_gets_the_live_pop_back(env: Env) -> None:
    await env.customer("Erika Muster", "+4930123456")
    ann = await agent(env, "ann", "PJSIP/1001", ["support"])
    call_id = env.sim.inbound_call("+4930123456", queue="support")
    await ann.wait_for(call_id, "pop")
    assert env.sim.answer("PJSIP/1001")
    await ann.wait_for(call_id, "update:answered_by_you")
    await ann.close()
    # a fresh page: no position, so a snapshot with the call's pop
    fresh = Agent(env, ann.client, ann.device)
    hello = await fresh.connect()
    assert hello["data"]["resumed"] is False
    await env.wait(lambda: any(m["type"] == "snapshot" for m in fresh.messages))
    snap = next(m for m in fresh.messages if m["type"] == "snapshot")["data"]
    assert [p["call_id"] for p in snap["calls"]] == [call_id]
    assert snap["calls"][0]["state"] == "answered"
    assert snap["calls"][0]["identification"]["card"]["name"] == "Erika Muster"
    await fresh.close()
    # a reload with its position: resumed, nothing replayed twice
    env.sim.hangup_call(call_id)
    resumed = Agent(env, ann.client, ann.device)
    resumed.stream, resumed.last_seq = fresh.stream, ann.last_seq
    hello = await resumed.connect(resume=True)
    assert hello["data"]["resumed"] is True
    await resumed.wait_for(call_id, "update:ended")
    assert "pop" not in resumed.of(call_id)
    await resumed.close()
