"""docs/protocol.schema.json against what the server really sends: a recorded websocket
session with the real hub, agent service (AMI over TCP) and pop router; and the document
against the code (close codes, message types)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest

from ami.events import Hangup, Party, Ringing, Up
from crm_bridge.adapter import CustomerCard, Identification, Identity, InteractionRecord
from cti import hub as hub_module
from cti.auth import Principal
from cti.pops import PopRouter
from tests.cti.test_agents_support import pbx_and_link
from tests.cti.test_ws_support import Env, recv, start_env

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "protocol.schema.json").read_text())
ANNA = Principal(agent_id="anna", username="anna", role="agent")
CALLER = Party("PJSIP/trunk-00000001", "1.1", "1.1", "+4930123456", "Erika Muster")
ANNA_LEG = Party("PJSIP/1001-00000002", "1.2", "1.1")


def validator(name: str) -> Any:
    return jsonschema_rs.validator_for({**SCHEMA, "$ref": f"#/$defs/{name}"})


SERVER = validator("ServerMessage")
CLIENT = validator("ClientMessage")


class Crm:
    """Answers identify at once with one customer; records nothing of interest."""

    async def identify(self, who: Identity) -> Identification:
        return Identification(
            status="one",
            number_e164=who.number,
            card=CustomerCard(id="c1", name="Erika Muster"),
        )

    async def record_interaction(self, rec: InteractionRecord) -> str:
        return f"i-{rec.call_id}"

    async def update_interaction(self, interaction_id: str, **kw: Any) -> Any:
        return None


@pytest.fixture
async def env() -> AsyncIterator[tuple[Env, PopRouter]]:
    holder: list[PopRouter] = []
    async with pbx_and_link() as (_pbx, link):
        e = await start_env(ami={"pbx1": link}, live_pops=lambda a: holder[0].live_pops(a))
        router = PopRouter(e.hub, e.agents, Crm(), deadline_ms=150)
        holder.append(router)
        e.agents.subscribe(lambda c: e.hub.send(c.agent, "agent.state", c.to_dict()))
        yield e, router
        await e.close()


async def collect(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(n)]


async def test_a_recorded_session_matches_the_schema(env: tuple[Env, PopRouter]) -> None:
    e, router = env
    frames: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = [{"type": "auth", "token": e.token(ANNA)}]
    await e.agents.login("anna", name="Anna", device="PJSIP/1001", queues=["support"])
    ws = await e.connect(ANNA)
    frames += await collect(ws, 2)  # hello, snapshot
    await router.on_call_event(
        Ringing(call_id="1.1", at=100.0, caller=CALLER, targets=(ANNA_LEG,), queue="support")
    )
    e.agents.on_call_event(
        Ringing(call_id="1.1", at=100.0, caller=CALLER, targets=(ANNA_LEG,), queue="support")
    )
    await asyncio.sleep(0.05)
    await router.drain()
    await router.on_call_event(Up(call_id="1.1", at=102.0, caller=CALLER, callee=ANNA_LEG))
    e.agents.on_call_event(Up(call_id="1.1", at=102.0, caller=CALLER, callee=ANNA_LEG))
    await router.drain()
    # a reload in the middle of the call: the snapshot carries the pop again
    ws2 = await e.connect(ANNA)
    hello2, snap2 = await collect(ws2, 2)
    frames += [hello2, snap2]
    assert [c["call_id"] for c in snap2["data"]["calls"]] == ["1.1"]
    assert snap2["data"]["calls"][0]["identification"]["card"]["name"] == "Erika Muster"
    assert snap2["data"]["agent"]["status"] == "on_call"
    await router.on_call_event(
        Hangup(call_id="1.1", at=160.0, caller=CALLER, reason="completed", cause=16)
    )
    e.agents.on_call_event(
        Hangup(call_id="1.1", at=160.0, caller=CALLER, reason="completed", cause=16)
    )
    await router.drain()
    for msg in (
        {"type": "ack", "seq": 1},
        {"type": "ping", "id": "p1"},
        {"type": "pause", "id": 9, "reason": "lunch"},
        {"type": "pause", "id": 10, "reason": "no-such-reason"},
        {"type": "end_wrap_up"},
        {"type": "unpause", "id": "u"},
    ):
        sent.append(msg)
        await ws.send_json(msg)
    await ws.send_str("{oops")
    await ws.send_json({"type": "dance"})
    e.hub.send("anna", "callback.due", {"id": "cb1", "number": "+4930123456"})
    for _ in range(40):
        try:
            frames.append(await recv(ws, wait=0.3))
        except TimeoutError:
            break
    types = [f["type"] for f in frames]
    for t in (
        "hello",
        "snapshot",
        "pop",
        "call.update",
        "agent.state",
        "pong",
        "result",
        "error",
        "callback.due",
    ):
        assert t in types, (t, types)
    for f in frames:
        errors = [str(x) for x in SERVER.iter_errors(f)]
        assert not errors, (f, errors)
    for m in sent:
        assert CLIENT.is_valid(m), m
    # stream messages are numbered 1, 2, 3, ... for this agent
    seqs = [f["seq"] for f in frames[2:] if "seq" in f and f["type"] not in ("hello", "snapshot")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    await ws.close()
    await ws2.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "pop", "seq": 1, "data": {"call_id": "x"}},
        {"type": "agent.state", "seq": 1, "data": {"agent": "a", "status": "dancing", "at": 1}},
        {"type": "hello", "seq": 0, "data": {"protocol": 2}},
        {"type": "pop", "data": {}},
        {"type": "pong"},
    ],
)
def test_schema_rejects_malformed_server_messages(bad: dict[str, Any]) -> None:
    assert not SERVER.is_valid(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "auth"},
        {"type": "auth", "token": "t", "last_seq": -1},
        {"type": "ack", "seq": "3"},
        {"type": "pause"},
        {"type": "launch"},
    ],
)
def test_schema_rejects_malformed_client_messages(bad: dict[str, Any]) -> None:
    assert not CLIENT.is_valid(bad)


def test_document_lists_every_close_code_and_type() -> None:
    doc = (DOCS / "protocol.md").read_text()
    codes = [v for k, v in vars(hub_module).items() if k.startswith("CLOSE_")]
    assert len(codes) >= 8
    for code in codes:
        assert f"| {code} |" in doc, code
    for name in ("ServerMessage", "ClientMessage"):
        for ref in SCHEMA["$defs"][name]["oneOf"]:
            props = SCHEMA["$defs"][ref["$ref"].split("/")[-1]]["properties"]
            const = props["type"].get("const")
            if const is not None:
                assert f"`{const}`" in doc, const
    assert SCHEMA["x-protocol-version"] == hub_module.PROTOCOL_VERSION == 1
