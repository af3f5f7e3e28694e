"""A client that stops reading is cut off (4008) without slowing anyone else down."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp

from cti.auth import Principal
from tests.cti.test_ws_support import closed_with, recv, start_env

SLOW = Principal(agent_id="slow", username="slow", role="agent")
FAST = Principal(agent_id="fast", username="fast", role="agent")


def _small_buffers(addr_info: object) -> socket.socket:
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]  # type: ignore[index]
    s = socket.socket(family, type_, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


async def test_non_reading_client_is_dropped_and_others_stay_prompt() -> None:
    env = await start_env({"ws_send_queue": 8, "ws_max_unacked": 1_000_000})
    slow_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=_small_buffers)
    )
    try:
        slow = await slow_session.ws_connect(env.url + "/ws", autoclose=False, max_msg_size=0)
        await slow.send_json({"type": "auth", "token": env.token(SLOW)})
        fast = await env.connect(FAST)
        assert (await recv(fast))["type"] == "hello"
        assert (await recv(fast))["type"] == "snapshot"
        big = {"pad": "x" * 16_000}
        worst = 0.0
        t_end = time.monotonic() + 20
        sent = 0
        while env.hub.stats.dropped_slow == 0 and sent < 5000 and time.monotonic() < t_end:
            env.hub.send("slow", "pop", big)
            t0 = time.monotonic()
            seq = env.hub.send("fast", "pop", {"i": sent})
            msg = await recv(fast, wait=2)
            worst = max(worst, time.monotonic() - t0)
            assert msg["seq"] == seq
            await fast.send_json({"type": "ack", "seq": seq})
            sent += 1
        assert env.hub.stats.dropped_slow == 1, (sent, env.hub.stats)
        assert not env.hub.is_connected("slow")
        assert env.hub.is_connected("fast")
        assert worst < 0.5, worst
        # the fast client keeps receiving after the drop
        seq = env.hub.send("fast", "pop", {"after": True})
        assert (await recv(fast))["seq"] == seq
        # the slow client, once it reads, finds its messages and then the close code
        assert await closed_with(slow, wait=5) in (4008, 1006)
        await fast.close()
    finally:
        await slow_session.close()
        await env.close()


async def test_client_that_never_acks_is_dropped() -> None:
    env = await start_env({"ws_max_unacked": 10})
    try:
        ws = await env.connect(SLOW)
        assert (await recv(ws))["type"] == "hello"
        await recv(ws)
        for i in range(10):  # ten outstanding: the limit, still fine
            env.hub.send("slow", "pop", {"i": i})
        assert env.hub.stats.dropped_unacked == 0
        got = [await recv(ws) for _ in range(10)]
        assert [m["seq"] for m in got] == list(range(1, 11))
        env.hub.send("slow", "pop", {"i": 10})
        assert env.hub.stats.dropped_unacked == 1
        assert await closed_with(ws) == 4008
    finally:
        await env.close()


async def test_acking_client_is_never_dropped() -> None:
    env = await start_env({"ws_max_unacked": 10})
    try:
        ws = await env.connect(FAST)
        await recv(ws)
        await recv(ws)
        for i in range(50):
            seq = env.hub.send("fast", "pop", {"i": i})
            assert (await recv(ws))["seq"] == seq
            await ws.send_str(json.dumps({"type": "ack", "seq": seq}))
            await asyncio.sleep(0)
            for _ in range(100):  # the server reads the ack before the next message goes out
                conn = env.hub._streams["fast"].conns[0]
                if conn.acked == seq:
                    break
                await asyncio.sleep(0.002)
        assert env.hub.stats.dropped_unacked == 0 and env.hub.is_connected("fast")
        await ws.close()
    finally:
        await env.close()
