"""The OpenAPI document is generated from the route registry and must stay in step with what
the daemon really serves: every /api route is documented and every documented operation is
served; the document is valid; real answers (successes and errors) match their schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import pytest_asyncio
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from cti import api
from cti.api import ApiError, ApiRouter, Ctx, Strict
from tests.cti.test_api_env import Env, daemon_env

module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    async with daemon_env(tmp) as e:
        yield e


async def fetch_doc(env: Env) -> dict[str, Any]:
    status, doc = await env.anonymous().get("/api/openapi.json")
    assert status == 200
    assert isinstance(doc, dict)
    return doc


def served_api_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api") and route.method not in ("HEAD", "*"):
            out.add((route.method, path))
    return out


@module_loop
async def test_every_api_route_is_documented_and_vice_versa(env: Env) -> None:
    doc = await fetch_doc(env)
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert env.daemon.app is not None
    served = served_api_routes(env.daemon.app)
    assert served == documented
    assert len(served) >= 21


@module_loop
async def test_the_document_is_valid_openapi_31(env: Env) -> None:
    doc = await fetch_doc(env)
    assert doc["openapi"] == "3.1.0"
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    schema = schemathesis.openapi.from_dict(doc)
    results = list(schema.get_all_operations())
    errors = [r for r in results if not hasattr(r, "ok") or r.__class__.__name__ != "Ok"]
    assert errors == []
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            assert op["responses"], (method, path)
            if op.get("security") != []:
                assert "401" in op["responses"] and "403" in op["responses"], (method, path)


def validator(doc: dict[str, Any], method: str, path: str, status: int) -> Any:
    op = doc["paths"][path][method.lower()]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method} {path}: status {status} is not documented"
    schema = response["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]})


@module_loop
async def test_real_answers_match_their_schemas(env: Env) -> None:
    doc = await fetch_doc(env)
    admin = await env.account("admin1", "admin")
    agent = await env.account("agent1")
    customer = await env.customer("Hans Schema", "+4930111222")
    anon = env.anonymous()
    cases: list[tuple[Any, str, str, str, Any]] = [
        (anon, "POST", "/api/auth/login", "/api/auth/login", {"username": "x", "password": "y"}),
        (anon, "POST", "/api/auth/login", "/api/auth/login", {"username": "agent1"}),
        (anon, "GET", "/api/me", "/api/me", None),
        (agent, "GET", "/api/me", "/api/me", None),
        (agent, "GET", "/api/agents", "/api/agents", None),
        (admin, "GET", "/api/agents", "/api/agents", None),
        (
            admin,
            "POST",
            "/api/agents",
            "/api/agents",
            {"username": "agent2", "password": "long enough pw", "role": "supervisor"},
        ),
        (agent, "POST", "/api/dial", "/api/dial", {"number": "+4930111222"}),
        (
            agent,
            "POST",
            "/api/agent/login",
            "/api/agent/login",
            {"device": "PJSIP/1005", "queues": ["support"]},
        ),
        (agent, "POST", "/api/agent/pause", "/api/agent/pause", {"reason": "lunch"}),
        (agent, "POST", "/api/agent/pause", "/api/agent/pause", {"reason": "nap"}),
        (agent, "POST", "/api/agent/unpause", "/api/agent/unpause", None),
        (agent, "GET", "/api/calls", "/api/calls", None),
        (agent, "GET", "/api/customers?q=Schema", "/api/customers", None),
        (agent, "GET", f"/api/customers/{customer}", "/api/customers/{customer_id}", None),
        (agent, "GET", "/api/customers/777777", "/api/customers/{customer_id}", None),
        (agent, "POST", "/api/calls/nope/notes", "/api/calls/{call_id}/notes", {"text": "x"}),
        (agent, "POST", "/api/dial", "/api/dial", {"number": "+4930111222"}),
        (
            agent,
            "POST",
            "/api/callbacks",
            "/api/callbacks",
            {"customer_id": customer, "due": "2999-01-01T10:00:00"},
        ),
        (
            agent,
            "POST",
            "/api/callbacks",
            "/api/callbacks",
            {"customer_id": customer, "due": "2030-01-01T10:00:00"},
        ),
        (agent, "GET", "/api/dispositions", "/api/dispositions", None),
        (agent, "POST", "/api/agent/logout", "/api/agent/logout", None),
    ]
    seen: set[int] = set()
    for client, method, url, template, body in cases:
        status, data = await client.call(method, url, body)
        if data is None:
            continue
        errors = [str(e) for e in validator(doc, method, template, status).iter_errors(data)]
        assert errors == [], (method, url, status, data)
        seen.add(status)
    assert {200, 201, 401, 403, 404, 409, 422} <= seen


# ------------------------------------------------------------------ the registry itself


class EchoIn(Strict):
    text: str


class EchoOut(BaseModel):
    text: str
    by: str


def test_a_module_router_is_mounted_and_documented() -> None:
    dialer = ApiRouter("dialer", "Outbound campaigns")

    @dialer.post(
        "/api/campaigns/{campaign}/echo",
        summary="Echo",
        body=EchoIn,
        response=EchoOut,
        roles={"supervisor", "admin"},
        errors=(409,),
    )
    async def echo_campaign(ctx: Ctx, body: EchoIn) -> EchoOut:
        """Says it back."""
        if body.text == "busy":
            raise ApiError(409, "busy", "try later", field="body.text")
        return EchoOut(text=body.text, by=ctx.params["campaign"])

    app = web.Application()
    doc = api.setup(app, [dialer])
    op = doc["paths"]["/api/campaigns/{campaign}/echo"]["post"]
    assert op["operationId"] == "echo_campaign" and op["description"] == "Says it back."
    assert op["x-roles"] == ["admin", "supervisor"]
    assert set(op["responses"]) >= {"200", "400", "401", "403", "404", "409", "422"}
    assert {"name": "dialer", "description": "Outbound campaigns"} in doc["tags"]
    assert ("POST", "/api/campaigns/{campaign}/echo") in served_api_routes(app)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served_api_routes(app) == documented


def test_routes_must_be_unique_and_under_api() -> None:
    r = ApiRouter("x")
    with pytest.raises(ValueError, match="under /api/"):
        r.get("/health", summary="no")
    r.get("/api/x", summary="one")(_noop)
    r.get("/api/x", summary="two")(_noop)
    with pytest.raises(ValueError, match="declared twice"):
        api.setup(web.Application(), [r])


async def _noop(ctx: Ctx, body: None) -> None:
    return None


async def test_registry_answers_with_the_error_shape() -> None:
    r = ApiRouter("t")

    @r.post("/api/echo", summary="Echo", body=EchoIn, response=EchoOut, roles=None, errors=(409,))
    async def echo(ctx: Ctx, body: EchoIn) -> EchoOut:
        if body.text == "busy":
            raise ApiError(409, "busy", "try later", field="body.text")
        if body.text == "boom":
            raise RuntimeError("a bug")
        return EchoOut(text=body.text, by="me")

    app = web.Application()
    api.setup(app, [r])
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.post("/api/echo", json={"text": "hi"})
        assert resp.status == 200 and await resp.json() == {"text": "hi", "by": "me"}
        resp = await client.post("/api/echo", json={"text": "busy"})
        body = await resp.json()
        assert resp.status == 409
        assert body["error"] == {
            "code": "busy",
            "message": "try later",
            "fields": [{"field": "body.text", "message": "try later"}],
        }
        resp = await client.post("/api/echo", data=b"\xff\xfe")
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
        resp = await client.post("/api/echo", json={"text": 1})
        assert resp.status == 422
        assert [f["field"] for f in (await resp.json())["error"]["fields"]] == ["body.text"]
        resp = await client.post("/api/echo", json={"text": "boom"})
        assert resp.status == 500
        assert (await resp.json())["error"] == {
            "code": "internal",
            "message": "internal error",
            "fields": [],
        }
        resp = await client.get("/api/echo")
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
