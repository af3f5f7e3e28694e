"""Messages queued for a socket in the same moment leave in one write (cti.hub text_frame):
the client still receives each as its own message, in order, whatever its size, with or
without permessage-deflate negotiated."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cti.auth import Principal
from cti.hub import text_frame
from tests.cti.test_ws_support import Env, recv, start_env

ALICE = Principal(agent_id="a1", username="alice", role="agent")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await start_env({"ws_max_unacked": 1000, "ws_send_queue": 1000})
    yield e
    await e.close()


@pytest.mark.parametrize("compress", [0, 15])
async def test_a_burst_arrives_whole_and_in_order(env: Env, compress: int) -> None:
    ws = await env.connect(ALICE, compress=compress)
    assert (await recv(ws))["type"] == "hello"
    assert (await recv(ws))["type"] == "snapshot"
    sizes = [3, 120, 125, 126, 300, 65_535, 70_000, 5]
    before = env.hub.stats.coalesced
    # one tick: every message is queued before the socket's writer runs
    seqs = [env.hub.send("a1", "note", {"text": "x" * n}) for n in sizes]
    got = [await recv(ws) for _ in sizes]
    assert [m["seq"] for m in got] == seqs
    assert [len(m["data"]["text"]) for m in got] == sizes
    assert env.hub.stats.coalesced - before >= len(sizes) - 1
    # and the socket goes on working normally afterwards
    await ws.send_json({"type": "ping", "id": 1})
    assert (await recv(ws))["type"] == "pong"
    await ws.close()


def test_text_frame_lengths() -> None:
    assert text_frame("hi") == b"\x81\x02hi"
    assert text_frame("é" * 63)[:2] == b"\x81\x7e"  # 126 bytes of UTF-8: 16-bit length
    assert text_frame("a" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame("a" * 65_536)[:10] == b"\x81\x7f" + (65_536).to_bytes(8, "big")
