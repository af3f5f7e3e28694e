"""An open websocket follows its access token: `token.expiring` before expiry, a re-auth on the
socket moves the expiry forward, no re-auth closes 4002 (and a resume afterwards loses
nothing), a token of another agent or a bad one in a re-auth closes 4001. The whole daemon with
the PBX simulator; short-lived tokens are minted with the daemon's secret."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from cti.auth import Principal, TokenService
from tests.cti.test_api_env import Env, daemon_env
from tests.cti.test_ws_protocol import CLIENT, SERVER

pytestmark = pytest.mark.slow  # a few seconds of real token lifetime each

SECRET = b"t" * 40  # the daemon's web.token_secret in test_api_env
WARNING = 1.5  # web.ws_reauth_warning_seconds for these tests


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with daemon_env(tmp_path, ws_reauth_warning_seconds=WARNING) as e:
        yield e


def short_token(p: Principal, seconds: int) -> str:
    """An access token of the daemon's signature that lives `seconds` (minus the part of the
    current second already gone: `exp` is a whole second)."""
    return str(TokenService(SECRET, seconds, 600).issue(p)["access_token"])


async def principal(env: Env, name: str) -> Principal:
    await env.account(name)
    return Principal(agent_id=env.accounts[name][0], username=name, role="agent")


async def open_ws(env: Env, token: str, **resume: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await env.http.ws_connect(env.url.replace("http", "ws", 1) + "/ws", autoclose=False)
    await ws.send_str(json.dumps({"type": "auth", "token": token, **resume}))
    return ws


async def next_of(
    ws: aiohttp.ClientWebSocketResponse, kind: str, wait: float = 5.0
) -> dict[str, Any]:
    """The next message of type `kind` (stream messages before it are skipped)."""
    deadline = time.monotonic() + wait
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type is aiohttp.WSMsgType.TEXT, (kind, msg.type, msg.data)
        data = json.loads(msg.data)
        if data["type"] == kind:
            return data
        assert data["type"] in ("snapshot", "agent.state", "pop", "call.update"), data


async def close_code(ws: aiohttp.ClientWebSocketResponse, wait: float = 5.0) -> int | None:
    msg = await ws.receive(timeout=wait)
    while msg.type is aiohttp.WSMsgType.TEXT:
        msg = await ws.receive(timeout=wait)
    assert msg.type is aiohttp.WSMsgType.CLOSE, (msg.type, msg.data)
    await ws.close()
    return int(msg.data)


async def test_reauth_keeps_the_socket_open_past_the_first_expiry(env: Env) -> None:
    ann = await principal(env, "ann")
    first = short_token(ann, 3)
    ws = await open_ws(env, first)
    hello = await next_of(ws, "hello")
    first_exp = hello["data"]["token_expires_at"]
    assert 0.5 < first_exp - time.time() <= 3.0

    warning = await next_of(ws, "token.expiring", wait=4.0)
    assert warning["data"]["expires_at"] == first_exp
    assert 0 < warning["data"]["seconds_left"] <= WARNING + 0.05
    assert "seq" not in warning  # a reply to this socket, not part of the agent's stream

    await ws.send_str(json.dumps({"type": "auth", "id": "r1", "token": short_token(ann, 6)}))
    renewed = await next_of(ws, "auth.renewed")
    assert renewed["data"]["id"] == "r1"
    assert renewed["data"]["expires_at"] > first_exp

    for frame in (hello, warning, renewed):
        assert SERVER.is_valid(frame), frame
    assert CLIENT.is_valid({"type": "auth", "id": "r1", "token": "x"})

    # past the first token's expiry the socket still works and still gets the agent's stream
    await asyncio.sleep(max(0.0, first_exp - time.time()) + 0.5)
    await ws.send_str(json.dumps({"type": "ping", "id": 1}))
    assert (await next_of(ws, "pong"))["data"] == {"id": 1}
    seq = env.services.hub.send(ann.agent_id, "callback.due", {"id": "cb1", "number": "+49301"})
    assert (await next_of(ws, "callback.due"))["seq"] == seq
    hub = env.services.hub
    assert hub.is_connected(ann.agent_id)
    assert hub.stats.reauthenticated == 1 and hub.stats.expired == 0

    # without another re-auth the renewed token runs out too
    assert (await next_of(ws, "token.expiring", wait=5.0))["data"]["expires_at"] == (
        renewed["data"]["expires_at"]
    )
    err = await next_of(ws, "error", wait=3.0)
    assert err["data"]["code"] == "token_expired"
    assert await close_code(ws) == 4002
    assert hub.stats.expired == 1


async def test_no_reauth_closes_4002_and_a_fresh_token_resumes(env: Env) -> None:
    bea = await principal(env, "bea")
    ws = await open_ws(env, short_token(bea, 4))
    hello = await next_of(ws, "hello")
    await next_of(ws, "snapshot")
    hub = env.services.hub
    seq = hub.send(bea.agent_id, "callback.due", {"id": "cb1", "number": "+4930111"})
    got = await next_of(ws, "callback.due")
    await ws.send_str(json.dumps({"type": "ack", "seq": got["seq"]}))
    assert (await next_of(ws, "token.expiring", wait=5.0))["data"]["seconds_left"] <= WARNING
    err = await next_of(ws, "error", wait=3.0)
    assert err["data"]["code"] == "token_expired"
    assert await close_code(ws) == 4002
    assert not hub.is_connected(bea.agent_id)

    # what the agent missed while the token was being refreshed arrives on the resume
    missed = hub.send(bea.agent_id, "callback.due", {"id": "cb2", "number": "+4930222"})
    client = await env.login("bea")  # the refresh's result: a fresh access token
    assert client.token is not None
    ws = await open_ws(env, client.token, last_seq=seq, stream=hello["data"]["stream"])
    hello2 = await next_of(ws, "hello")
    assert hello2["data"]["resumed"] is True
    again = await next_of(ws, "callback.due")
    assert again["seq"] == missed and again["data"]["id"] == "cb2"
    await ws.close()


async def test_reauth_with_another_agents_token_closes_4001(env: Env) -> None:
    cid, dan = await principal(env, "cid"), await principal(env, "dan")
    ws = await open_ws(env, short_token(cid, 60))
    await next_of(ws, "hello")
    await ws.send_str(json.dumps({"type": "auth", "token": short_token(dan, 60)}))
    err = await next_of(ws, "error")
    assert err["data"]["code"] == "wrong_agent"
    assert await close_code(ws) == 4001
    assert not env.services.hub.is_connected(cid.agent_id)
    assert not env.services.hub.is_connected(dan.agent_id)


@pytest.mark.parametrize(
    ("make", "code", "close"),
    [
        (lambda p: "garbage.token", "bad_token", 4001),
        (lambda p: short_token(p, 60)[:-3] + "AAA", "bad_token", 4001),  # tampered
        (lambda p: TokenService(SECRET, 60, 600).issue(p)["refresh_token"], "bad_token", 4001),
        (
            lambda p: TokenService(b"another-secret-16+", 60, 600).issue(p)["access_token"],
            "bad_token",
            4001,
        ),
    ],
    ids=["garbage", "tampered", "refresh-token", "foreign-secret"],
)
async def test_bad_token_in_reauth_closes(env: Env, make: Any, code: str, close: int) -> None:
    eve = await principal(env, "eve")
    ws = await open_ws(env, short_token(eve, 60))
    await next_of(ws, "hello")
    await ws.send_str(json.dumps({"type": "auth", "token": make(eve)}))
    err = await next_of(ws, "error")
    assert err["data"]["code"] == code
    assert await close_code(ws) == close


async def test_expired_token_in_reauth_closes_4002(env: Env) -> None:
    fay = await principal(env, "fay")
    stale = short_token(fay, 1)
    ws = await open_ws(env, short_token(fay, 60))
    await next_of(ws, "hello")
    await asyncio.sleep(max(0.0, int(time.time()) + 1 - time.time()) + 0.05)
    await ws.send_str(json.dumps({"type": "auth", "token": stale}))
    err = await next_of(ws, "error")
    assert err["data"]["code"] == "token_expired"
    assert await close_code(ws) == 4002


async def test_malformed_reauth_is_an_error_not_a_close(env: Env) -> None:
    gus = await principal(env, "gus")
    ws = await open_ws(env, short_token(gus, 60))
    await next_of(ws, "hello")
    for bad in ({"type": "auth"}, {"type": "auth", "token": 42, "id": 3}):
        await ws.send_str(json.dumps(bad))
        err = await next_of(ws, "error")
        assert err["data"]["code"] == "bad_message"
    assert err["data"]["id"] == 3
    await ws.send_str(json.dumps({"type": "ping"}))
    assert (await next_of(ws, "pong"))["data"] == {}
    await ws.close()


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium")
async def test_agent_page_renews_its_token_on_the_open_socket(tmp_path: Path) -> None:
    """The page answers `token.expiring` with a refresh and a re-auth on the same socket (the
    warning window is set to nearly the whole lifetime, so it comes within seconds)."""
    pw_api = pytest.importorskip("playwright.async_api")
    from tests.cti.test_agent_page import open_page, sign_in

    async with daemon_env(tmp_path, ws_reauth_warning_seconds=897.0) as env:
        await env.account("hal")
        hub = env.services.hub
        async with open_page() as page:
            await sign_in(page, env, "hal")
            await pw_api.expect(page.locator("#conn")).to_have_attribute("data-state", "online")
            before = json.loads(await page.evaluate("sessionStorage.getItem('cti.tokens')"))[
                "access_token"
            ]
            connections = hub.stats.connections
            await env.wait(lambda: hub.stats.reauthenticated >= 1, within=10.0)
            after = json.loads(await page.evaluate("sessionStorage.getItem('cti.tokens')"))[
                "access_token"
            ]
            assert after != before
            # the same socket, renewed: no reconnect, nothing expired
            assert hub.stats.connections == connections == 1
            assert hub.stats.expired == 0 and hub.stats.snapshots == 1
            await pw_api.expect(page.locator("#conn")).to_have_attribute("data-state", "online")


class MemorySocket:
    """What the hub writes to one socket (the hub's SocketLike), for the timer test at scale."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed_with: int | None = None

    async def send_str(self, data: str, compress: int | None = None) -> None:
        self.frames.append(json.loads(data))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


async def test_token_timers_at_two_thousand_connections() -> None:
    """One timer handle per socket, no task of its own: 2,000 sockets are warned and closed
    on time, and a re-auth re-arms (not adds) the socket's timer."""
    from cti.hub import Hub
    from cti.settings import WebSettings

    async def snapshot(agent_id: str) -> dict[str, Any]:
        return {"agent": {"agent_id": agent_id}, "calls": []}

    hub = Hub(WebSettings(ws_reauth_warning_seconds=0.5), snapshot)
    tasks_before = len(asyncio.all_tasks())
    expires = time.time() + 1.5
    socks = [MemorySocket() for _ in range(2000)]
    conns = [await hub.attach(f"ag{i}", s, expires_at=expires) for i, s in enumerate(socks)]
    # the only task per connection is its writer; the token costs one handle each
    assert len(asyncio.all_tasks()) - tasks_before == 2000
    assert all(c.timer is not None for c in conns)
    kept = conns[0]
    old = kept.timer
    hub.watch_token(kept, time.time() + 60)  # a re-auth of the first socket
    assert old is not None and old.cancelled() and kept.timer is not None
    await asyncio.sleep(max(0.0, expires - time.time()))
    for _ in range(200):  # the closes run as tasks right after the expiry
        if sum(s.closed_with == 4002 for s in socks) == 1999:
            break
        await asyncio.sleep(0.05)
    assert sum(s.closed_with == 4002 for s in socks) == 1999
    assert time.time() >= expires
    for s in socks[1:]:
        kinds = [f["type"] for f in s.frames]
        assert kinds == ["hello", "snapshot", "token.expiring", "error"], kinds
        assert s.frames[-1]["data"]["code"] == "token_expired"
    assert socks[0].closed_with is None and hub.is_connected("ag0")
    assert hub.stats.expired == 1999 and hub.stats.connections == 1
    await hub.close_all()
    assert kept.timer is None
