"""The whole daemon against the PBX simulator over real TCP: the path an inbound call takes
from AMI to the agent's websocket, plus /health, /metrics and the demo command."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ami.settings import SimulatorSettings
from ami.simulator import PbxSimulator
from cti.app import Daemon, running_daemon
from cti.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def pbx() -> AsyncIterator[PbxSimulator]:
    sim = PbxSimulator(
        SimulatorSettings(port=0, inbound_per_minute=0, agent_answer_after=0.3, seed=7)
    )
    await sim.start()
    yield sim
    await sim.stop()


def daemon_settings(tmp_path: Path, pbx: PbxSimulator) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "web": {"port": 0, "token_secret": "test-secret-for-tokens"},
            "ami": {
                "servers": [
                    {
                        "name": "pbx",
                        "port": pbx.port,
                        "username": "cti",
                        "secret": "demo-secret",
                        "reconnect_min": 0.05,
                    }
                ]
            },
            "dialer": {"enabled": False},
        },
    )


async def _ws_until(ws: aiohttp.ClientWebSocketResponse, kind: str, limit: float) -> dict[str, Any]:
    async with asyncio.timeout(limit):
        while True:
            msg = await ws.receive_json()
            if msg.get("type") == kind:
                return msg


async def test_inbound_call_reaches_the_agents_screen(tmp_path: Path, pbx: PbxSimulator) -> None:
    async with running_daemon(daemon_settings(tmp_path, pbx)) as d:
        assert d.services is not None
        link = d.services.links["pbx"]
        assert await link.wait_connected(10)
        await d.services.accounts.create("anna", "anna-password-1", display_name="Anna")
        async with aiohttp.ClientSession(base_url=d.url) as http:
            health = await http.get("/health")
            assert health.status == 200
            assert (await health.json())["ami"] == {"pbx": True}
            r = await http.post(
                "/api/auth/login", json={"username": "anna", "password": "anna-password-1"}
            )
            assert r.status == 200, await r.text()
            token = (await r.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            r = await http.post(
                "/api/agent/login",
                json={"device": "PJSIP/1001", "queues": ["support"]},
                headers=auth,
            )
            assert r.status == 200, await r.text()
            # the PBX now has the agent's device as a queue member (QueueAdd over AMI)
            assert [m.interface for m in pbx.members["support"]] == ["PJSIP/1001"]
            async with http.ws_connect("/ws") as ws:
                await ws.send_json({"type": "auth", "token": token})
                await _ws_until(ws, "hello", 5)
                call_id = pbx.inbound_call("+4930123456", queue="support", hangup_after=2.0)
                pop = await _ws_until(ws, "pop", 5)
                assert pop["data"]["call_id"] == call_id
                assert pop["data"]["caller"]["number"] == "+4930123456"
            metrics = await (await http.get("/metrics")).text()
            assert 'cti_ami_link_up{server="pbx"} 1' in metrics
            assert "cti_tracker_" in metrics
            # without a token the API refuses
            assert (await http.get("/api/me")).status == 401


async def test_health_degrades_when_asterisk_goes_away(tmp_path: Path, pbx: PbxSimulator) -> None:
    async with running_daemon(daemon_settings(tmp_path, pbx)) as d:
        assert d.services is not None
        assert await d.services.links["pbx"].wait_connected(10)
        await pbx.stop()
        async with aiohttp.ClientSession(base_url=d.url) as http:
            async with asyncio.timeout(10):
                # polling what an operator's monitoring would poll
                while (await http.get("/health")).status != 503:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            body = await (await http.get("/health")).json()
            assert body == {"status": "degraded", "ami": {"pbx": False}}


async def test_daemon_stops_cleanly_and_leaves_no_tasks(tmp_path: Path, pbx: PbxSimulator) -> None:
    before = {t for t in asyncio.all_tasks()}
    d = Daemon(daemon_settings(tmp_path, pbx))
    await d.start()
    await d.stop()
    await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() if t not in before and not t.done()}
    assert left == set()


@pytest.mark.slow
def test_demo_command_starts_serves_and_stops(tmp_path: Path) -> None:
    env = {**os.environ, "CTI_DATA_DIR": str(tmp_path), "CTI_LOG__FORMAT": "json"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cti.cli",
            "demo",
            "--port",
            "0",
            "--customers",
            "200",
            "--duration",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    url = None
    try:
        for line in proc.stderr:
            if "Agent desktop:" in line:
                url = line.split()[-1].rsplit("/agent", 1)[0]
                break
        assert url, "the demo printed no URL"
        import urllib.request

        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            assert json.loads(r.read())["ami"] == {"simulator": True}
        with urllib.request.urlopen(f"{url}/agent", timeout=5) as r:
            assert b"<html" in r.read().lower()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


async def test_two_asterisk_servers_each_with_its_own_link_and_tracker(tmp_path: Path) -> None:
    sims = [
        PbxSimulator(SimulatorSettings(port=0, inbound_per_minute=0, seed=s, epoch=e))
        for s, e in ((1, 1_700_000_000), (2, 1_700_500_000))
    ]
    for sim in sims:
        await sim.start()
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "web": {"port": 0, "token_secret": "test-secret-for-tokens"},
            "ami": {
                "servers": [
                    {"name": name, "port": sim.port, "secret": "demo-secret", "reconnect_min": 0.05}
                    for name, sim in zip(("east", "west"), sims, strict=True)
                ]
            },
            "dialer": {"enabled": False},
        },
    )
    seen: list[Any] = []
    both_ended = asyncio.Event()

    async def collect(ev: Any) -> None:
        seen.append(ev)
        if {e.server for e in seen if e.event == "hangup"} == {"east", "west"}:
            both_ended.set()

    try:
        async with running_daemon(settings) as d:
            assert d.services is not None
            d.services.bus.subscribe("test", collect)
            for link in d.services.links.values():
                assert await link.wait_connected(10)
            ids = [
                sim.inbound_call("+4930111222", queue="support", hangup_after=0.2) for sim in sims
            ]
            async with asyncio.timeout(10):
                await both_ended.wait()
            by_server = {e.server: e.call_id for e in seen if e.event == "hangup"}
            assert by_server == {"east": ids[0], "west": ids[1]}
    finally:
        for sim in sims:
            await sim.stop()
