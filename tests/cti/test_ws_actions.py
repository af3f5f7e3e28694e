"""Call work over the websocket against the whole daemon (SQLite file, PBX simulator over TCP):
a note and a disposition sent on the socket land in the interaction in the database, the other
actions answer like their REST endpoints, another agent's call is refused, and malformed
actions get an error carrying their id without closing the socket."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from cti.api_agent import SOCKET_ROUTES
from cti.ws import SOCKET_ACTIONS
from tests.cti.test_api_env import Client, Env, daemon_env
from tests.cti.test_ws_protocol import CLIENT, SERVER

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with daemon_env(tmp_path) as e:
        yield e


class Sock:
    """One agent's websocket; keeps every frame (all of them checked against the schema)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, env: Env, client: Client) -> Sock:
        ws = await env.http.ws_connect(env.url.replace("http", "ws", 1) + "/ws", autoclose=False)
        await ws.send_str(json.dumps({"type": "auth", "token": client.token}))
        s = cls(ws)
        await s.next(lambda m: m["type"] == "snapshot")
        return s

    async def next(self, cond: Any, wait: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + wait
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
            m = json.loads(msg.data)
            assert SERVER.is_valid(m), m
            self.frames.append(m)
            if isinstance(m.get("seq"), int) and m["type"] not in ("hello", "snapshot"):
                await self.ws.send_str(json.dumps({"type": "ack", "seq": m["seq"]}))
            if cond(m):
                return m

    async def ask(self, msg: dict[str, Any], wait: float = 5.0) -> dict[str, Any]:
        """Send an action; its reply (`result` or `error` with the same id)."""
        await self.ws.send_str(json.dumps(msg))
        return await self.next(
            lambda m: m["type"] in ("result", "error") and m["data"].get("id") == msg["id"], wait
        )

    async def call_update(self, call_id: str, state: str) -> None:
        await self.next(
            lambda m: (
                m["type"] == "call.update"
                and m["data"]["call_id"] == call_id
                and m["data"]["state"] == state
            )
        )


async def agent(env: Env, name: str, device: str, queue: str = "support") -> tuple[Client, Sock]:
    c = await env.account(name)
    env.sim.set_phone(device, "manual")
    status, data = await c.post("/api/agent/login", {"device": device, "queues": [queue]})
    assert status == 200, data
    return c, await Sock.open(env, c)


def test_every_socket_action_has_its_rest_endpoint() -> None:
    assert set(SOCKET_ROUTES) == SOCKET_ACTIONS
    paths = {kind: route.path for kind, (route, _) in SOCKET_ROUTES.items()}
    assert paths["note"] == "/api/calls/{call_id}/notes"
    assert paths["dial"] == "/api/dial"


async def test_call_work_over_the_socket_lands_in_the_interaction(env: Env) -> None:
    erika = await env.customer("Erika Muster", "+4930123456", postcode="10115")
    await env.store.set_dispositions(
        ["solved", "callback"], actor="test", scope_kind="queue", scope="support"
    )
    _ann, ann = await agent(env, "ann", "PJSIP/1001")
    _bea, bea = await agent(env, "bea", "PJSIP/1002", "sales")  # not in ann's queue

    call_id = env.sim.inbound_call("+4930123456", queue="support")
    pop = await ann.next(lambda m: m["type"] == "pop")
    assert pop["data"]["call_id"] == call_id
    assert pop["data"]["identification"]["card"]["id"] == erika

    # before answering, call work is refused the same way as over REST
    early = await ann.ask({"type": "note", "id": "early", "call_id": call_id, "text": "hi"})
    assert early["type"] == "error"
    assert early["data"]["code"] == "not_answered" and early["data"]["status"] == 409

    assert env.sim.answer("PJSIP/1001")
    await ann.call_update(call_id, "answered_by_you")

    note = {"type": "note", "id": 7, "call_id": call_id, "text": "Asked about the invoice"}
    assert CLIENT.is_valid(note)
    r = await ann.ask(note)
    assert r["type"] == "result" and r["data"]["ok"] is True and r["data"]["id"] == 7
    assert r["data"]["result"]["notes"] == ["Asked about the invoice"]
    dispo = {"type": "disposition", "id": 8, "call_id": call_id, "code": "solved"}
    r = await ann.ask(dispo)
    assert r["type"] == "result" and r["data"]["result"]["disposition"] == "solved"
    r = await ann.ask({**dispo, "id": 9})  # submitting twice is safe
    assert r["type"] == "result" and r["data"]["result"]["disposition"] == "solved"
    r = await ann.ask({"type": "disposition", "id": 10, "call_id": call_id, "code": "nope"})
    assert r["type"] == "error" and r["data"]["code"] == "invalid_disposition"
    assert r["data"]["fields"][0]["field"] == "code"

    # cases, search, callback, click-to-call: the REST answers, over the socket
    r = await ann.ask(
        {
            "type": "link_cases",
            "id": "c",
            "call_id": call_id,
            "new_case": {"type": "complaint", "category": "billing", "subject": "invoice"},
        }
    )
    assert r["type"] == "result", r
    assert len(r["data"]["result"]["case_ids"]) == 1
    r = await ann.ask({"type": "search_customers", "id": "s", "q": "Muster"})
    assert [c["id"] for c in r["data"]["result"]["customers"]] == [erika]
    r = await ann.ask(
        {
            "type": "schedule_callback",
            "id": "cb",
            "call_id": call_id,
            "due": (datetime.now() + timedelta(days=30)).strftime("%Y-%m-%dT10:30"),
            "note": "after the invoice run",
        }
    )
    assert r["type"] == "result", r
    cb = r["data"]["result"]
    assert cb["number"] == "+4930123456" and cb["time_zone"] == "Europe/Berlin"
    assert cb["customer_id"] == erika and cb["agent"] == env.accounts["ann"][0]
    r = await ann.ask({"type": "dial", "id": "d", "number": "030 1234 5678"})
    assert r["type"] == "result", r
    assert r["data"]["result"]["number"] == "+493012345678"
    assert r["data"]["result"]["device"] == "PJSIP/1001"

    # another agent cannot touch ann's call, whatever it sends
    for msg in (
        {"type": "note", "id": "x1", "call_id": call_id, "text": "mine now"},
        {"type": "disposition", "id": "x2", "call_id": call_id, "code": "callback"},
        {"type": "link_customer", "id": "x3", "call_id": call_id, "customer_id": erika},
    ):
        r = await bea.ask(msg)
        assert r["type"] == "error" and r["data"]["code"] == "not_your_call", r
        assert r["data"]["status"] == 403

    # the interaction in the database carries ann's note and disposition, nothing of bea's
    await env.services.pops.drain()
    rows = await env.store.interactions_for_call(call_id)
    assert len(rows) == 1
    assert rows[0].notes == "Asked about the invoice"
    assert rows[0].disposition == "solved"
    assert rows[0].agent == env.accounts["ann"][0]
    assert rows[0].customer_id == erika
    assert len(rows[0].case_ids) == 1
    for s in (ann, bea):
        await s.ws.close()


#: (message, error code, the field named in the error)
BAD: list[tuple[dict[str, Any], str, str | None]] = [
    ({"type": "note", "id": 1, "call_id": "CALL"}, "invalid_body", "text"),
    ({"type": "note", "id": 2, "text": "no call"}, "invalid_body", "call_id"),
    ({"type": "note", "id": 3, "call_id": 5, "text": "x"}, "invalid_body", "call_id"),
    ({"type": "note", "id": 4, "call_id": "CALL", "text": ""}, "invalid_body", "text"),
    ({"type": "note", "id": 5, "call_id": "CALL", "text": "x", "x": 1}, "invalid_body", "x"),
    ({"type": "disposition", "id": 6, "call_id": "CALL", "code": 5}, "invalid_body", "code"),
    ({"type": "note", "id": 7, "call_id": "c" * 300, "text": "x"}, "not_found", "call_id"),
    ({"type": "note", "id": 8, "call_id": "1.999", "text": "x"}, "call_not_found", None),
    ({"type": "link_cases", "id": 9, "call_id": "CALL"}, "invalid_body", ""),
    (
        {"type": "link_customer", "id": 10, "call_id": "CALL", "customer_id": "../x"},
        "invalid_body",
        "customer_id",
    ),
    ({"type": "search_customers", "id": 11}, "invalid_body", "q"),
    ({"type": "search_customers", "id": 12, "q": "x", "limit": 0}, "invalid_body", "limit"),
    ({"type": "schedule_callback", "id": 13, "number": "+4930"}, "invalid_body", "due"),
    (
        {"type": "schedule_callback", "id": 14, "number": "+4930123", "due": "yesterday"},
        "invalid_body",
        "due",
    ),
    (
        {
            "type": "schedule_callback",
            "id": 15,
            "number": "+4930123",
            "due": "2001-01-01T10:00",
        },
        "in_the_past",
        "due",
    ),
    ({"type": "dial", "id": 16, "number": "not a number"}, "invalid_number", "number"),
    ({"type": "dial", "id": 17, "number": ["+4930123"]}, "invalid_body", "number"),
    ({"type": "dial", "id": "str-id"}, "invalid_body", "number"),
]


async def test_malformed_actions_get_an_error_with_their_id(env: Env) -> None:
    _c, cid = await agent(env, "cid", "PJSIP/1003")
    call_id = env.sim.inbound_call("+4930999888", queue="support")
    await cid.next(lambda m: m["type"] == "pop")
    assert env.sim.answer("PJSIP/1003")
    await cid.call_update(call_id, "answered_by_you")
    for n, (template, code, field) in enumerate(BAD):
        msg = {k: (call_id if v == "CALL" else v) for k, v in template.items()}
        r = await cid.ask(msg)
        assert r["type"] == "error", (msg, r)
        assert r["data"]["code"] == code and r["data"]["id"] == msg["id"], (msg, r)
        if field is not None:
            assert field in [f["field"] for f in r["data"].get("fields", [])], (msg, r)
        # the socket is still open and still serves
        r = await cid.ask({"type": "note", "id": f"ok{n}", "call_id": call_id, "text": f"n{n}"})
        assert r["type"] == "result" and r["data"]["result"]["notes"][-1] == f"n{n}"
    await env.services.pops.drain()
    rows = await env.store.interactions_for_call(call_id)
    assert rows[0].notes.splitlines()[-1] == f"n{len(BAD) - 1}"
    await cid.ws.close()


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium")
async def test_agent_page_sends_note_and_disposition_over_the_socket(env: Env) -> None:
    """The page's note and disposition travel on the open websocket (no REST request for
    them), land in the interaction, and a refused disposition shows the server's error."""
    pw_api = pytest.importorskip("playwright.async_api")
    from tests.cti.test_agent_page import open_page, sign_in

    expect = pw_api.expect
    await env.account("ida")
    await env.store.set_dispositions(["solved"], actor="test", scope_kind="queue", scope="support")
    env.sim.set_phone("PJSIP/1009", "manual")
    async with open_page() as page:
        rest_calls: list[str] = []
        page.on(
            "request",
            lambda r: rest_calls.append(r.url) if "/api/calls/" in r.url else None,
        )
        await sign_in(page, env, "ida")
        await page.fill("#device", "PJSIP/1009")
        await page.fill("#queues", "support")
        await page.click("#device-login")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "online")
        call_id = env.sim.inbound_call("+4930777888", queue="support")
        card = page.locator(f'.call[data-call-id="{call_id}"]')
        await expect(card).to_be_visible()
        assert env.sim.answer("PJSIP/1009")
        await expect(card).to_have_attribute("data-state", "answered")
        await card.locator(".note-text").fill("Sent over the socket")
        await card.locator(".note-save").click()
        await expect(card.locator(".notes li")).to_have_text(["Sent over the socket"])
        await expect(card.locator(".call-info")).to_have_text("Note saved.")
        await card.locator(".dispo-code").select_option("solved")
        await card.locator(".dispo-save").click()
        await expect(card.locator(".dispo-current")).to_have_text("disposition: solved")
        assert rest_calls == []
        await env.services.pops.drain()
        rows = await env.store.interactions_for_call(call_id)
        assert rows[0].notes == "Sent over the socket" and rows[0].disposition == "solved"
