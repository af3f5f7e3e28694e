"""Many agents at once over real sockets: every socket gets exactly its agent's stream, in
order, and nothing of anybody else's."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from cti.auth import Principal
from tests.cti.test_ws_support import recv, start_env

AGENTS = 60
PER_AGENT = 15


async def test_many_agents_each_get_their_own_stream_in_order() -> None:
    env = await start_env({"ws_send_queue": 64})
    try:
        people = [Principal(f"ag{i}", f"user{i}", "agent") for i in range(AGENTS)]
        sockets: dict[str, list[aiohttp.ClientWebSocketResponse]] = {}
        for p in people:
            pair = [await env.connect(p), await env.connect(p)]
            for ws in pair:
                assert (await recv(ws))["type"] == "hello"
                assert (await recv(ws))["type"] == "snapshot"
            sockets[p.agent_id] = pair
        assert env.hub.stats.connections == 2 * AGENTS
        assert env.hub.stats.agents_connected == AGENTS
        t0 = time.monotonic()
        for n in range(PER_AGENT):  # interleaved: agent 0 msg 0, agent 1 msg 0, ...
            for p in people:
                env.hub.send(p.agent_id, "pop", {"for": p.agent_id, "n": n})

        async def drain(agent: str, ws: aiohttp.ClientWebSocketResponse) -> list[tuple[int, int]]:
            got = []
            for _ in range(PER_AGENT):
                m = await recv(ws, wait=10)
                assert m["data"]["for"] == agent, (agent, m)
                got.append((m["seq"], m["data"]["n"]))
            return got

        results = await asyncio.gather(
            *(drain(a, ws) for a, pair in sockets.items() for ws in pair)
        )
        elapsed = time.monotonic() - t0
        expected = [(n + 1, n) for n in range(PER_AGENT)]
        assert all(r == expected for r in results)
        assert env.hub.stats.delivered >= 2 * AGENTS * (PER_AGENT + 2)
        assert env.hub.stats.dropped_slow == 0
        assert elapsed < 10, elapsed
        for pair in sockets.values():
            for ws in pair:
                await ws.close()
    finally:
        await env.close()
