"""Agent logins survive a daemon restart: the whole daemon on a real SQLite file with the PBX
simulator over TCP, stopped and started again on the same database and the same simulator; and
the cti_0002 migration from an empty database (PostgreSQL too when CTI_TEST_PG_URL is set)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from ami.events import AgentStatus
from crm_bridge.db import alembic_config, make_engine
from cti.accounts import AccountStore, AgentSession, AgentSessionStore, metadata
from cti.agents import GONE_FROM_PBX
from cti.app import Daemon, running_daemon
from cti.migrations import VERSIONS_DIR, migrate
from tests.crm.conftest import empty_database, schema_diff
from tests.cti.test_api_env import PASSWORD, daemon_settings_for, quiet_simulator

pytestmark = pytest.mark.slow


async def wait(cond: Callable[[], Any], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while not (v := cond()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return v


async def post(
    http: aiohttp.ClientSession, d: Daemon, path: str, body: Any, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(d.url + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def sign_in(http: aiohttp.ClientSession, d: Daemon, username: str) -> str:
    status, data = await post(
        http, d, "/api/auth/login", {"username": username, "password": PASSWORD}
    )
    assert status == 200, data
    return str(data["access_token"])


async def stored(d: Daemon) -> dict[str, AgentSession]:
    assert d.services is not None
    await d.services.agents.flush_sessions()
    return {s.agent_id: s for s in await AgentSessionStore(d.services.engine).load()}


async def test_logins_survive_a_restart_and_calls_still_pop(tmp_path: Path) -> None:
    sim = quiet_simulator()
    await sim.start()
    settings = daemon_settings_for(tmp_path, sim.port)
    ids: dict[str, str] = {}
    try:
        # -- the first process: four agents log in, one pauses, one logs out again ----------
        async with running_daemon(settings) as d1, aiohttp.ClientSession() as http:
            svc = d1.services
            assert svc is not None
            links = svc.links
            await wait(lambda: all(link.connected for link in links.values()))
            for name in ("ann", "bea", "cid", "dan", "eve"):
                p = await svc.accounts.create(name, PASSWORD, display_name=name.title())
                ids[name] = p.agent_id
            devices = {"ann": "PJSIP/1001", "bea": "PJSIP/1002", "cid": "PJSIP/1003"}
            devices["dan"] = "PJSIP/1004"
            devices["eve"] = "PJSIP/1005"
            tokens = {}
            for name, device in devices.items():
                sim.set_phone(device, "manual")
                tokens[name] = await sign_in(http, d1, name)
                queues = ["support", "sales"] if name == "ann" else ["support"]
                status, data = await post(
                    http, d1, "/api/agent/login", {"device": device, "queues": queues}, tokens[name]
                )
                assert status == 200, data
            status, data = await post(
                http, d1, "/api/agent/pause", {"reason": "lunch"}, tokens["bea"]
            )
            assert status == 200 and data["status"] == "paused", data
            status, _ = await post(http, d1, "/api/agent/logout", {}, tokens["dan"])
            assert status == 200
            rows = await stored(d1)
            assert set(rows) == {ids["ann"], ids["bea"], ids["cid"], ids["eve"]}
            assert rows[ids["ann"]].device == "PJSIP/1001"
            assert set(rows[ids["ann"]].queues) == {"support", "sales"}
            assert rows[ids["bea"]].paused == "lunch"
            assert rows[ids["ann"]].paused is None
            ann_since = svc.agents.view(ids["ann"]).since
            bea_since = svc.agents.view(ids["bea"]).since

        # while the CTI is down, someone removes cid from the queue on the PBX itself, and an
        # admin disables eve's account
        assert not sim.engine.queue_remove("support", "PJSIP/1003")
        assert sim.engine.queues["support"].member("PJSIP/1005") is not None
        engine = make_engine(settings.database_url())
        try:
            await AccountStore(engine).disable(ids["eve"])
        finally:
            await engine.dispose()

        # -- the second process, same database, same PBX -------------------------------------
        async with running_daemon(settings) as d2, aiohttp.ClientSession() as http:
            svc = d2.services
            assert svc is not None
            agents = svc.agents
            links = svc.links
            await wait(lambda: all(link.connected for link in links.values()))
            # restored, then reconciled with QueueStatus: cid is gone from the PBX
            await wait(lambda: agents.view(ids["cid"]).status is AgentStatus.LOGGED_OUT)
            # eve was restored, then logged out once the link was up: off the PBX's queue too
            await wait(lambda: agents.view(ids["eve"]).status is AgentStatus.LOGGED_OUT)
            await wait(lambda: sim.engine.queues["support"].member("PJSIP/1005") is None)
            ann = agents.view(ids["ann"])
            assert ann.status is AgentStatus.READY
            assert ann.device == "PJSIP/1001" and set(ann.queues) == {"support", "sales"}
            assert ann.since == ann_since and ann.name == "Ann"
            bea = agents.view(ids["bea"])
            assert bea.status is AgentStatus.PAUSED and bea.reason == "lunch"
            assert bea.since == bea_since and bea.device == "PJSIP/1002"
            assert agents.view(ids["dan"]).status is AgentStatus.LOGGED_OUT
            assert agents.agent_for_device("PJSIP/1001") == ids["ann"]
            assert agents.agent_for_device("PJSIP/1003") is None
            rows = await stored(d2)
            assert set(rows) == {ids["ann"], ids["bea"]}  # cid's row removed

            # a call ringing ann's device pops to her websocket (bea is paused: not rung)
            token = await sign_in(http, d2, "ann")
            ws = await http.ws_connect(d2.url.replace("http", "ws", 1) + "/ws")
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
            hello = json.loads((await ws.receive(timeout=5)).data)
            snap = json.loads((await ws.receive(timeout=5)).data)
            assert hello["type"] == "hello" and snap["type"] == "snapshot"
            assert snap["data"]["agent"]["status"] == "ready"
            assert snap["data"]["agent"]["device"] == "PJSIP/1001"
            call_id = sim.inbound_call("+4930123456", queue="support")
            deadline = time.monotonic() + 5
            while True:
                m = json.loads((await ws.receive(timeout=deadline - time.monotonic())).data)
                if m["type"] == "pop":
                    break
            assert m["data"]["call_id"] == call_id
            assert m["data"]["caller"]["number"] == "+4930123456"
            await wait(lambda: agents.view(ids["ann"]).status is AgentStatus.RINGING)
            await ws.close()

            # the change the reconciliation made is in cid's stream, with its reason
            token = await sign_in(http, d2, "cid")
            ws = await http.ws_connect(d2.url.replace("http", "ws", 1) + "/ws")
            await ws.send_str(json.dumps({"type": "auth", "token": token, "last_seq": 0}))
            hello = json.loads((await ws.receive(timeout=5)).data)
            assert hello["data"]["resumed"] is True
            changes = []
            while True:
                try:
                    m = json.loads((await ws.receive(timeout=0.5)).data)
                except TimeoutError:
                    break
                if m["type"] == "agent.state":
                    changes.append((m["data"]["status"], m["data"]["reason"]))
            assert changes[-1] == ("logged_out", GONE_FROM_PBX)
            await ws.close()
    finally:
        await sim.stop()


async def test_a_stored_session_for_an_unknown_server_is_dropped(tmp_path: Path) -> None:
    """A row naming a server that is no longer configured (or a device that is not one) does
    not come back, and is removed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    await migrate(url)
    engine = make_engine(url)
    try:
        store = AgentSessionStore(engine)
        for agent_id, server, device in (
            ("a1", "pbx-gone", "PJSIP/1001"),
            ("a2", None, "PJSIP/1002-00000001"),
            ("a3", None, "PJSIP/1003"),
        ):
            await store.write(
                [AgentSession(agent_id, agent_id, device, server, ("support",), None, 1.0, 2.0)]
            )
        async with engine.begin() as conn:  # a row another version wrote badly
            await conn.execute(
                text(
                    "INSERT INTO cti_agent_sessions (agent_id, name, device, queues, "
                    "logged_in_at, state_since, updated_at) VALUES "
                    "('a4', '', 'PJSIP/1004', 'not json', 0, 0, 0)"
                )
            )
        from cti.agents import AgentService
        from cti.settings import AgentSettings

        agents = AgentService(AgentSettings(), {"pbx1": object()}, sessions=store)  # type: ignore[dict-item]
        assert await agents.restore() == 1
        await agents.flush_sessions()
        assert agents.logged_in() == ["a3"]
        view = agents.view("a3")
        assert view.status is AgentStatus.READY and view.since == 2.0 and view.server == "pbx1"
        assert sorted(s.agent_id for s in await store.load()) == ["a3"]  # a4 unreadable: skipped
    finally:
        await engine.dispose()


# -- the migration ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with empty_database(request.param, tmp_path / "empty.db", "cti_sess_") as url:
        yield url


def _diff(conn: Connection) -> list[Any]:
    return schema_diff(conn, metadata, "cti_")


def _downgrade(conn: Connection, url: str, target: str) -> None:
    cfg = alembic_config(url, [str(VERSIONS_DIR)])
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, target)


async def test_migration_from_empty_matches_the_table(empty_url: str) -> None:
    await migrate(empty_url)
    await migrate(empty_url)  # a second run is a no-op
    engine = make_engine(empty_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"cti_accounts", "cti_agent_sessions"} <= tables
            heads = {
                h[0] for h in await conn.execute(text("SELECT version_num FROM alembic_version"))
            }
            assert "cti_0002" in heads
            assert await conn.run_sync(_diff) == []
        store = AgentSessionStore(engine)
        s = AgentSession("a1", "Ann", "PJSIP/1001", "pbx1", ("support", "sales"), "lunch", 1.5, 2.5)
        await store.write([s])
        await store.write([s])  # saving again replaces, never duplicates
        assert await store.load() == [s]
        await store.write([], ["a1"])
        assert await store.load() == []
        # many at once (a shift logging in): stored, replaced and removed in one write
        many = [replace(s, agent_id=f"m{i:04d}", device=f"PJSIP/{2000 + i}") for i in range(1200)]
        await store.write(many)
        await store.write([replace(many[1], paused=None)], [many[0].agent_id, "nobody"])
        assert await store.load() == [replace(many[1], paused=None), *many[2:]]
        await store.write([], [m.agent_id for m in many])
        assert await store.load() == []
        # down to cti_0001 and up again
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade, empty_url, "cti_0001")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert "cti_agent_sessions" not in tables and "cti_accounts" in tables
    finally:
        await engine.dispose()
    await migrate(empty_url)
    engine = make_engine(empty_url)
    try:
        assert await AgentSessionStore(engine).load() == []
    finally:
        await engine.dispose()
