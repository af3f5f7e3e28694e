"""The agents' websocket over a real server and real clients: auth, hello/snapshot, seq/ack,
resume, bad input, slow consumers, isolation between agents."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from cti.auth import Principal
from tests.cti.test_ws_support import Env, closed_with, nothing_more, recv, start_env

ALICE = Principal(agent_id="a1", username="alice", role="agent")
BOB = Principal(agent_id="b2", username="bob", role="agent")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await start_env({"ws_auth_seconds": 0.5, "ws_backlog_messages": 5})
    yield e
    await e.close()


async def hello_and_snapshot(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict, dict]:
    hello = await recv(ws)
    assert hello["type"] == "hello", hello
    snap = await recv(ws)
    assert snap["type"] == "snapshot", snap
    return hello, snap


async def test_hello_carries_state_and_live_pops(env: Env) -> None:
    env.live_pops["a1"] = [{"call_id": "c1", "caller": {"number": "+4930123"}}]
    ws = await env.connect(ALICE)
    hello, snap = await hello_and_snapshot(ws)
    assert hello["data"]["protocol"] == 1
    assert hello["data"]["resumed"] is False
    assert hello["data"]["agent"] == ALICE.to_dict()
    assert hello["seq"] == 0 and snap["seq"] == 0
    assert snap["data"]["agent"]["status"] == "logged_out"
    assert snap["data"]["calls"] == [{"call_id": "c1", "caller": {"number": "+4930123"}}]
    assert env.hub.is_connected("a1") and not env.hub.is_connected("b2")
    seq = env.hub.send("a1", "pop", {"call_id": "c2"})
    msg = await recv(ws)
    assert msg == {"type": "pop", "seq": seq, "data": {"call_id": "c2"}} and seq == 1
    await ws.close()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"type": "auth", "token": "nope"}, 4001),
        ({"type": "auth"}, 4003),
        ({"type": "auth", "token": "x", "last_seq": "7"}, 4003),
        ({"type": "ping"}, 4003),
        ("not json at all", 4003),
    ],
)
async def test_bad_first_message_is_refused(env: Env, first: object, code: int) -> None:
    ws = await env.raw()
    await ws.send_str(first if isinstance(first, str) else json.dumps(first))
    err = await recv(ws)
    assert err["type"] == "error"
    assert await closed_with(ws) == code
    assert not env.hub.is_connected("a1")


async def test_expired_token_gets_its_own_close_code(env: Env) -> None:
    token = env.token(ALICE)
    env.token_clock.t += 61
    ws = await env.raw()
    await ws.send_json({"type": "auth", "token": token})
    err = await recv(ws)
    assert err["data"]["code"] == "token_expired"
    assert await closed_with(ws) == 4002


async def test_refresh_token_is_not_a_websocket_token(env: Env) -> None:
    ws = await env.raw()
    await ws.send_json({"type": "auth", "token": env.tokens.issue(ALICE)["refresh_token"]})
    assert await closed_with(ws) == 4001


async def test_auth_timeout(env: Env) -> None:
    ws = await env.raw()
    t0 = time.monotonic()
    assert await closed_with(ws) == 4000
    assert 0.4 < time.monotonic() - t0 < 3


async def test_binary_first_frame_is_protocol_error(env: Env) -> None:
    ws = await env.raw()
    await ws.send_bytes(b"\x00\x01")
    assert await closed_with(ws) == 4003


async def test_seq_and_ack(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    seqs = [env.hub.send("a1", "agent.state", {"status": s}) for s in ("ready", "ringing")]
    got = [await recv(ws), await recv(ws)]
    assert [m["seq"] for m in got] == seqs == [1, 2]
    assert [m["data"]["status"] for m in got] == ["ready", "ringing"]
    await ws.send_json({"type": "ack", "seq": 2})
    # an ack for a message never sent is an error, the connection stays
    await ws.send_json({"type": "ack", "seq": 99})
    err = await recv(ws)
    assert err["type"] == "error" and err["data"]["code"] == "bad_ack" and "seq" not in err
    await ws.send_json({"type": "ping", "id": 7})
    assert await recv(ws) == {"type": "pong", "data": {"id": 7}}
    await ws.close()


async def test_resume_gets_exactly_the_missed_messages(env: Env) -> None:
    ws = await env.connect(ALICE)
    hello, _ = await hello_and_snapshot(ws)
    stream = hello["data"]["stream"]
    for i in range(2):
        env.hub.send("a1", "pop", {"n": i})
    assert [(await recv(ws))["seq"] for _ in range(2)] == [1, 2]
    await ws.close()
    for _ in range(50):  # the server notices the close
        if not env.hub.is_connected("a1"):
            break
        await asyncio.sleep(0.01)
    for i in range(2, 5):
        env.hub.send("a1", "pop", {"n": i})
    ws = await env.connect(ALICE, last_seq=2, stream=stream)
    hello = await recv(ws)
    assert hello["type"] == "hello" and hello["data"]["resumed"] is True and hello["seq"] == 2
    missed = [await recv(ws) for _ in range(3)]
    assert [(m["seq"], m["data"]["n"]) for m in missed] == [(3, 2), (4, 3), (5, 4)]
    assert await nothing_more(ws)
    env.hub.send("a1", "pop", {"n": 5})
    assert (await recv(ws))["seq"] == 6
    await ws.close()


async def test_resume_when_nothing_was_missed(env: Env) -> None:
    env.hub.send("a1", "pop", {"n": 0})
    ws = await env.connect(ALICE, last_seq=1)
    hello = await recv(ws)
    assert hello["data"]["resumed"] is True
    assert await nothing_more(ws)
    await ws.close()


async def test_backlog_overflow_gives_a_snapshot(env: Env) -> None:
    env.live_pops["a1"] = [{"call_id": "live-1"}]
    for i in range(10):  # the backlog keeps 5
        env.hub.send("a1", "pop", {"n": i})
    ws = await env.connect(ALICE, last_seq=2)
    hello, snap = await hello_and_snapshot(ws)
    assert hello["data"]["resumed"] is False and snap["seq"] == 10
    assert snap["data"]["calls"] == [{"call_id": "live-1"}]
    assert await nothing_more(ws)
    # the window that is still kept resumes normally
    ws2 = await env.connect(ALICE, last_seq=6)
    assert (await recv(ws2))["data"]["resumed"] is True
    assert [(await recv(ws2))["seq"] for _ in range(4)] == [7, 8, 9, 10]
    await ws.close()
    await ws2.close()


async def test_backlog_expiry_gives_a_snapshot(env: Env) -> None:
    env.hub.send("a1", "pop", {"n": 0})
    env.hub.send("a1", "pop", {"n": 1})
    env.hub_clock.t += env.hub._settings.ws_backlog_seconds + 1
    ws = await env.connect(ALICE, last_seq=1)
    hello, snap = await hello_and_snapshot(ws)
    assert hello["data"]["resumed"] is False and snap["seq"] == 2
    await ws.close()


async def test_unknown_stream_or_future_seq_gives_a_snapshot(env: Env) -> None:
    # after a server restart the client's stream id and seq mean nothing
    env.hub.send("a1", "pop", {"n": 0})
    ws = await env.connect(ALICE, last_seq=1, stream="from-before-restart")
    await hello_and_snapshot(ws)
    ws2 = await env.connect(ALICE, last_seq=57)
    await hello_and_snapshot(ws2)
    await ws.close()
    await ws2.close()


async def test_garbage_gets_errors_and_the_connection_survives(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    for frame, code in (
        ("{not json", "bad_json"),
        ("[1,2]", "bad_message"),
        ('{"type": 5}', "bad_message"),
        ('{"type": "launch_missiles"}', "unknown_type"),
        ('{"type": "auth", "token": 5}', "bad_message"),  # re-auth needs a token string
        ('{"type": "ack"}', "bad_ack"),
        ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "bad_json"),
    ):
        await ws.send_str(frame)
        err = await recv(ws)
        assert err["type"] == "error" and err["data"]["code"] == code, (frame, err)
    await ws.send_json({"type": "ping"})
    assert (await recv(ws))["type"] == "pong"
    env.hub.send("a1", "pop", {"still": "alive"})
    assert (await recv(ws))["data"] == {"still": "alive"}
    await ws.close()


async def test_endless_garbage_is_closed(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    for _ in range(25):
        await ws.send_str("garbage")
    assert await closed_with(ws) == 4003


async def test_oversize_frame_closes_4009(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    limit = env.hub._settings.max_ws_message_bytes
    await ws.send_str(json.dumps({"type": "ping", "pad": "x" * limit}))
    err = await recv(ws)
    assert err["type"] == "error" and err["data"]["code"] == "too_big"
    assert await closed_with(ws) == 4009
    for _ in range(50):
        if not env.hub.is_connected("a1"):
            break
        await asyncio.sleep(0.01)
    assert not env.hub.is_connected("a1")


async def test_oversize_auth_frame_closes_4009(env: Env) -> None:
    ws = await env.raw()
    await ws.send_str("x" * (env.hub._settings.max_ws_message_bytes + 10))
    assert await closed_with(ws) == 4009


async def test_binary_frame_after_auth_is_protocol_error(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    await ws.send_bytes(b"{}")
    assert await closed_with(ws) == 4003


async def test_agents_only_get_their_own_messages(env: Env) -> None:
    a = await env.connect(ALICE)
    a2 = await env.connect(ALICE)  # a second tab of the same agent
    b = await env.connect(BOB)
    for ws in (a, a2, b):
        await hello_and_snapshot(ws)
    env.hub.send("a1", "pop", {"for": "alice"})
    env.hub.send("b2", "pop", {"for": "bob"})
    assert (await recv(a))["data"] == {"for": "alice"}
    assert (await recv(a2))["data"] == {"for": "alice"}
    got_b = await recv(b)
    assert got_b["data"] == {"for": "bob"} and got_b["seq"] == 1  # per-agent numbering
    for ws in (a, a2, b):
        assert await nothing_more(ws, 0.1)
        await ws.close()


async def test_actions_over_the_socket_report_errors(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    await ws.send_json({"type": "pause", "id": "p1", "reason": "lunch"})
    err = await recv(ws)
    assert err["type"] == "error"
    assert err["data"]["code"] == "not_logged_in" and err["data"]["id"] == "p1"
    await ws.send_json({"type": "pause", "id": "p2", "reason": "coffee"})
    assert (await recv(ws))["data"]["code"] == "bad_reason"
    await ws.send_json({"type": "end_wrap_up", "id": 3})
    assert (await recv(ws))["data"]["id"] == 3
    await ws.close()


async def test_close_all_says_going_away(env: Env) -> None:
    ws = await env.connect(ALICE)
    await hello_and_snapshot(ws)
    await env.hub.close_all()
    assert await closed_with(ws) == 1001
    assert env.hub.stats.connections == 0
