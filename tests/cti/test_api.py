"""The REST API against the whole daemon (real SQLite file, the PBX simulator over TCP as
Asterisk, real accounts and tokens): authorization, validation errors that name the field, and
the call work an agent does during and after a call landing in the CRM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.cti.test_api_env import Client, Env, daemon_env

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


class World:
    env: Env
    admin: Client
    sup: Client
    ann: Client
    bob: Client
    ann_id: str
    erika: str


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("api")
    async with daemon_env(tmp) as env:
        w = World()
        w.env = env
        w.admin = await env.account("root", "admin")
        w.sup = await env.account("sue", "supervisor")
        w.ann = await env.account("ann")
        w.ann_id = env.accounts["ann"][0]
        w.bob = await env.account("bob")
        w.erika = await env.customer("Erika Muster", "+4930123456", postcode="10115")
        await env.store.set_dispositions(
            ["solved", "callback", ("wrong", "Wrong number")],
            actor="test",
            scope_kind="queue",
            scope="support",
        )
        env.sim.set_phone("PJSIP/1001", "manual")
        env.sim.set_phone("PJSIP/1002", "manual")
        status, _ = await w.ann.post(
            "/api/agent/login", {"device": "PJSIP/1001", "queues": ["support"]}
        )
        assert status == 200
        yield w


def field_names(data: dict[str, Any]) -> list[str]:
    return [f["field"] for f in data["error"]["fields"]]


async def live_call(w: World, c: Client, number: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        _, data = await c.get("/api/calls")
        for p in data["calls"]:
            if p["caller"]["number"] == number and p["state"] != "ended":
                return p
        return None

    for _ in range(750):
        p = await find()
        if p is not None:
            return p
        await asyncio.sleep(0.02)
    raise AssertionError(f"no pop for {number}: {w.env.services.agents.view(w.ann_id)}")


async def answered_call(w: World, number: str) -> str:
    w.env.sim.inbound_call(number, queue="support")
    pop = await live_call(w, w.ann, number)
    assert w.env.sim.answer("PJSIP/1001")
    for _ in range(750):
        _, data = await w.ann.get("/api/calls")
        if any(p["call_id"] == pop["call_id"] and p["state"] == "answered" for p in data["calls"]):
            return str(pop["call_id"])
        await asyncio.sleep(0.02)
    raise AssertionError("call not answered")


async def hang_up(w: World, call_id: str) -> None:
    assert w.env.sim.hangup_call(call_id)

    async def gone() -> bool:
        _, data = await w.ann.get("/api/calls")
        return not any(p["call_id"] == call_id and p["state"] != "ended" for p in data["calls"])

    for _ in range(750):
        if await gone() and "PJSIP/1001" not in w.env.sim.engine.busy:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the call did not end")


# ------------------------------------------------------------------ authentication


async def test_login_refresh_and_me(world: World) -> None:
    anon = world.env.anonymous()
    status, data = await anon.post("/api/auth/login", {"username": "ann", "password": "nope!"})
    assert status == 401 and data["error"]["code"] == "bad_credentials"
    status, data = await anon.post("/api/auth/login", {"username": "ghost", "password": "nope!"})
    assert status == 401 and data["error"]["code"] == "bad_credentials"
    status, tokens = await anon.post(
        "/api/auth/login", {"username": "ANN", "password": "correct horse battery"}
    )
    assert status == 200 and tokens["account"]["username"] == "ann"
    status, again = await anon.post("/api/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert status == 200 and again["access_token"] != tokens["access_token"]
    status, data = await anon.post("/api/auth/refresh", {"refresh_token": tokens["access_token"]})
    assert status == 401  # an access token is not a refresh token
    status, data = await world.ann.get("/api/me")
    assert status == 200
    assert data["account"]["role"] == "agent" and data["state"]["device"] == "PJSIP/1001"
    assert "lunch" in data["pause_reasons"]
    status, data = await anon.get("/api/me")
    assert status == 401 and data["error"]["code"] == "unauthorized"


async def test_bad_payloads_are_4xx_naming_the_field(world: World) -> None:
    anon = world.env.anonymous()
    status, data = await anon.call("POST", "/api/auth/login", raw=b"{not json")
    assert status == 400 and data["error"]["code"] == "invalid_json"
    status, data = await anon.post("/api/auth/login", {"username": "ann"})
    assert status == 422 and field_names(data) == ["body.password"]
    status, data = await anon.post("/api/auth/login", {"username": 5, "password": "x"})
    assert status == 422 and field_names(data) == ["body.username"]
    status, data = await anon.post(
        "/api/auth/login", {"username": "ann", "password": "x", "admin": True}
    )
    assert status == 422 and field_names(data) == ["body.admin"]
    status, data = await anon.call("POST", "/api/auth/login", raw=b"[1,2]")
    assert status == 422
    status, data = await world.ann.post("/api/dial", {"number": "hello"})
    assert status == 422 and field_names(data) == ["body.number"]
    status, data = await world.ann.post("/api/agent/pause", {"reason": "nap"})
    assert status == 422 and data["error"]["code"] == "bad_reason"
    status, data = await world.ann.get("/api/customers")
    assert status == 422 and field_names(data) == ["query.q"]
    status, data = await world.ann.get("/api/customers?q=x&limit=1000")
    assert status == 422 and field_names(data) == ["query.limit"]


# ------------------------------------------------------------------ roles


async def test_roles(world: World) -> None:
    status, _ = await world.ann.get("/api/agents")
    assert status == 403
    status, data = await world.sup.get("/api/agents")
    assert status == 200
    rows = {r["account"]["username"]: r for r in data["agents"]}
    assert rows["ann"]["state"]["status"] in ("ready", "ringing", "on_call", "wrap_up")
    assert rows["bob"]["state"]["status"] == "logged_out"
    new = {"username": "carl", "password": "long enough pw", "display_name": "Carl"}
    status, _ = await world.sup.post("/api/agents", new)
    assert status == 403
    status, data = await world.admin.post("/api/agents", new)
    assert status == 201 and data["username"] == "carl" and data["role"] == "agent"
    status, data = await world.admin.post("/api/agents", new)
    assert status == 409 and field_names(data) == ["body.username"]
    weak = {**new, "username": "dora", "password": "x"}
    status, data = await world.admin.post("/api/agents", weak)
    assert status == 422 and field_names(data) == ["body.password"]
    status, data = await world.admin.post("/api/agents", {**new, "username": "bad name!"})
    assert status == 422 and field_names(data) == ["body.username"]
    status, _ = await world.env.anonymous().post(
        "/api/auth/login", {"username": "carl", "password": "long enough pw"}
    )
    assert status == 200


# ------------------------------------------------------------------ agent session


async def test_agent_session_states(world: World) -> None:
    bob = world.bob
    status, data = await bob.post("/api/agent/pause", {"reason": "lunch"})
    assert status == 409 and data["error"]["code"] == "not_logged_in"
    status, data = await bob.post("/api/agent/login", {"device": "PJSIP/1001-0000000a"})
    assert status == 422 and field_names(data) == ["device"]
    status, data = await bob.post("/api/agent/login", {"device": "PJSIP/1001", "queues": []})
    assert status == 409 and data["error"]["code"] == "device_in_use"  # ann's device
    status, data = await bob.post(
        "/api/agent/login", {"device": "PJSIP/1002", "queues": ["support", "bad queue!"]}
    )
    assert status == 422 and field_names(data) == ["queues"]
    status, data = await bob.post("/api/agent/login", {"device": "PJSIP/1002", "queues": ["sales"]})
    assert status == 200 and data["status"] == "ready" and data["queues"] == ["sales"]
    assert any(m.interface == "PJSIP/1002" for m in world.env.sim.members["sales"])
    status, data = await bob.post("/api/agent/pause", {"reason": "lunch"})
    assert status == 200 and data["status"] == "paused" and data["reason"] == "lunch"
    status, data = await bob.post("/api/agent/unpause")
    assert status == 200 and data["status"] == "ready"
    status, data = await bob.post("/api/agent/wrapup/end")
    assert status == 200 and data["status"] == "ready"
    status, data = await bob.post("/api/agent/logout")
    assert status == 200 and data["status"] == "logged_out"
    assert not any(m.interface == "PJSIP/1002" for m in world.env.sim.members["sales"])


# ------------------------------------------------------------------ call work


async def test_call_work_lands_in_the_crm(world: World) -> None:
    call_id = await answered_call(world, "+4930123456")
    _, data = await world.ann.get("/api/calls")
    pop = next(p for p in data["calls"] if p["call_id"] == call_id)
    assert pop["identification"]["status"] == "one"
    assert pop["identification"]["card"]["name"] == "Erika Muster"
    # someone else's call
    status, data = await world.bob.post(f"/api/calls/{call_id}/notes", {"text": "mine?"})
    assert status == 403 and data["error"]["code"] == "not_your_call"
    status, data = await world.ann.post("/api/calls/no-such-call/notes", {"text": "x"})
    assert status == 404
    status, data = await world.ann.post(f"/api/calls/{call_id}/notes", {"text": ""})
    assert status == 422 and field_names(data) == ["body.text"]
    # the work itself
    status, pop = await world.ann.post(f"/api/calls/{call_id}/notes", {"text": "wants a refund"})
    assert status == 200 and pop["notes"] == ["wants a refund"]
    status, pop = await world.ann.post(f"/api/calls/{call_id}/notes", {"text": "sent form"})
    assert pop["notes"] == ["wants a refund", "sent form"]
    status, data = await world.ann.get(f"/api/dispositions?call_id={call_id}")
    assert status == 200 and [d["code"] for d in data["dispositions"]] == [
        "solved",
        "callback",
        "wrong",
    ]
    status, data = await world.ann.post(f"/api/calls/{call_id}/disposition", {"code": "bogus"})
    assert status == 422 and field_names(data) == ["body.code"]
    for _ in range(2):  # submitting twice is safe
        status, pop = await world.ann.post(f"/api/calls/{call_id}/disposition", {"code": "solved"})
        assert status == 200 and pop["disposition"] == "solved"
    status, view = await world.ann.post(
        f"/api/calls/{call_id}/cases",
        {"new_case": {"type": "complaint", "category": "billing", "subject": "refund"}},
    )
    assert status == 200 and len(view["case_ids"]) == 1
    status, again = await world.ann.post(
        f"/api/calls/{call_id}/cases",
        {"new_case": {"type": "complaint", "category": "billing", "subject": "refund"}},
    )
    assert again["case_ids"] == view["case_ids"]  # resubmitted: no second case
    status, data = await world.ann.post(f"/api/calls/{call_id}/cases", {"case_ids": ["99999"]})
    assert status == 404
    status, data = await world.ann.post(f"/api/calls/{call_id}/cases", {})
    assert status == 422
    # supervisors see every call, agents only theirs
    status, data = await world.sup.get("/api/calls?all=true")
    assert status == 200 and any(c["call_id"] == call_id for c in data["all"])
    status, data = await world.ann.get("/api/calls?all=true")
    assert status == 403
    await hang_up(world, call_id)
    crm = world.env.store
    await world.env.services.pops.drain()
    rows = await crm.interactions_for_call(call_id)
    assert len(rows) == 1
    row = rows[0]
    assert row.notes == "wants a refund\nsent form" and row.disposition == "solved"
    assert row.customer_id == world.erika and row.queue == "support"
    assert row.answered_at is not None and row.ended_at is not None
    assert row.case_ids == tuple(view["case_ids"])
    card = await crm.card(world.erika)
    assert card is not None and any(c.category == "billing" for c in card.open_cases)


async def test_unknown_caller_becomes_a_customer_only_on_request(world: World) -> None:
    number = "+4930765432"
    assert await world.env.services.crm.search(number) == []
    call_id = await answered_call(world, number)
    _, data = await world.ann.get("/api/calls")
    pop = next(p for p in data["calls"] if p["call_id"] == call_id)
    assert pop["identification"]["status"] == "none"
    assert await world.env.services.crm.search(number) == []  # nothing created by the pop
    status, data = await world.ann.post(f"/api/calls/{call_id}/customer", {})
    assert status == 422
    status, data = await world.ann.post(
        f"/api/calls/{call_id}/customer", {"create": {"name": "Max Neu", "emails": ["nope"]}}
    )
    assert status == 422 and data["error"]["fields"][0]["field"].startswith("body.create")
    status, pop = await world.ann.post(
        f"/api/calls/{call_id}/customer",
        {"create": {"name": "Max Neu", "emails": ["max@example.org"]}},
    )
    assert status == 200
    assert pop["identification"]["status"] == "one"
    assert pop["identification"]["card"]["name"] == "Max Neu"
    assert pop["identification"]["card"]["phones"][0]["e164"] == number
    found = await world.env.services.crm.search(number)
    assert [c.name for c in found] == ["Max Neu"]
    await world.env.services.pops.drain()
    rows = await world.env.store.interactions_for_call(call_id)
    assert rows[0].customer_id == found[0].id
    # linking an existing customer instead
    status, pop = await world.ann.post(
        f"/api/calls/{call_id}/customer", {"customer_id": world.erika}
    )
    assert status == 200 and pop["identification"]["card"]["id"] == world.erika
    status, _ = await world.ann.post(f"/api/calls/{call_id}/customer", {"customer_id": "424242"})
    assert status == 404
    await hang_up(world, call_id)


async def test_customers_search_and_card(world: World) -> None:
    status, data = await world.ann.get("/api/customers?q=Muster")
    assert status == 200 and [c["name"] for c in data["customers"]] == ["Erika Muster"]
    status, data = await world.ann.get("/api/customers?q=030%20123456")
    assert [c["id"] for c in data["customers"]] == [world.erika]
    status, card = await world.ann.get(f"/api/customers/{world.erika}")
    assert status == 200 and card["phones"][0]["e164"] == "+4930123456"
    for bad in ("999999", "abc", "-1"):
        status, data = await world.ann.get(f"/api/customers/{bad}")
        assert status == 404, bad


async def test_callbacks_in_the_customers_time_zone(world: World) -> None:
    tomorrow = (datetime.now() + timedelta(days=1)).date()
    local = f"{tomorrow.isoformat()}T10:30:00"
    status, cb = await world.ann.post(
        "/api/callbacks", {"customer_id": world.erika, "due": local, "note": "call back"}
    )
    assert status == 201
    assert cb["time_zone"] == "Europe/Berlin"
    assert cb["due_local"].startswith(f"{tomorrow.isoformat()}T10:30:00")
    assert cb["number"] == "+4930123456" and cb["agent"] is not None
    status, cb = await world.ann.post(
        "/api/callbacks",
        {"number": "+1 212 555 0100", "due": local, "for_me": False},
    )
    assert status == 201 and cb["time_zone"] == "America/New_York" and cb["agent"] is None
    status, data = await world.ann.post(
        "/api/callbacks", {"number": "+4930123456", "due": "2001-01-01T10:00:00"}
    )
    assert status == 422 and field_names(data) == ["body.due"]
    status, data = await world.ann.post(
        "/api/callbacks", {"number": "+4930123456", "due": local, "time_zone": "Mars/Base"}
    )
    assert status == 422 and field_names(data) == ["body.time_zone"]
    status, data = await world.ann.post("/api/callbacks", {"due": local})
    assert status == 422
    status, data = await world.ann.post("/api/callbacks", {"number": "12", "due": local})
    assert status == 422 and field_names(data) == ["body.number"]


async def test_click_to_call_rings_the_agents_own_device_first(world: World) -> None:
    status, data = await world.bob.post("/api/dial", {"number": "030 123456"})
    assert status == 409 and data["error"]["code"] == "not_logged_in"
    status, data = await world.ann.post("/api/dial", {"number": "030 123456"})
    assert status == 200
    assert data["number"] == "+4930123456" and data["device"] == "PJSIP/1001"
    status, data = await world.ann.post("/api/dial", {"number": "+4930123456\r\nAction: Hangup"})
    assert status == 422 and field_names(data) == ["body.number"]
