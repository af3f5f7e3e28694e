"""Tokens, password hashing, the /api guard and role checks, over a real HTTP server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from cti.auth import (
    Principal,
    TokenError,
    TokenService,
    auth_middleware,
    hash_password,
    principal_of,
    require_role,
    verify_password,
)

SECRET = b"0123456789abcdef0123456789abcdef"
ALICE = Principal(agent_id="a1", username="alice", role="agent")
SUPER = Principal(agent_id="s1", username="sam", role="supervisor")
ADMIN = Principal(agent_id="x1", username="root", role="admin")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_password_hash_is_salted_and_verifies() -> None:
    h1 = hash_password("correct horse")
    h2 = hash_password("correct horse")
    assert "correct horse" not in h1
    assert h1.startswith("$argon2id$")
    assert h1 != h2  # salted
    assert verify_password(h1, "correct horse")
    assert not verify_password(h1, "correct hors")
    assert not verify_password("not-a-hash", "correct horse")


def test_roles_nest() -> None:
    assert ADMIN.can("supervisor") and ADMIN.can("agent") and ADMIN.can("admin")
    assert SUPER.can("agent") and SUPER.can("supervisor") and not SUPER.can("admin")
    assert ALICE.can("agent") and not ALICE.can("supervisor")
    with pytest.raises(ValueError):
        ALICE.can("god")


def test_access_token_round_trip_and_expiry() -> None:
    clock = Clock()
    ts = TokenService(SECRET, 60, 600, clock=clock)
    pair = ts.issue(ALICE)
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 60
    assert ts.verify_access(pair["access_token"]) == ALICE
    clock.t += 59
    assert ts.verify_access(pair["access_token"]) == ALICE
    clock.t += 1
    with pytest.raises(TokenError) as e:
        ts.verify_access(pair["access_token"])
    assert e.value.kind == "expired"
    # the refresh token still works and gives a fresh access token
    new = ts.refresh(pair["refresh_token"])
    assert ts.verify_access(new["access_token"]) == ALICE
    clock.t += 600
    with pytest.raises(TokenError) as e:
        ts.refresh(pair["refresh_token"])
    assert e.value.kind == "expired"


def test_token_kinds_are_not_interchangeable() -> None:
    ts = TokenService(SECRET, 60, 600)
    pair = ts.issue(ALICE)
    with pytest.raises(TokenError) as e:
        ts.verify_access(pair["refresh_token"])
    assert e.value.kind == "invalid"
    with pytest.raises(TokenError):
        ts.refresh(pair["access_token"])


def test_tampered_and_foreign_tokens_are_invalid() -> None:
    ts = TokenService(SECRET, 60, 600)
    token = ts.issue(ALICE)["access_token"]
    body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["rol"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for bad in (
        f"{forged}.{sig}",
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
        "",
        "garbage",
        "a.b.c",
        "é.é",
        TokenService(b"another-secret-of-16+", 60, 600).issue(ALICE)["access_token"],
    ):
        with pytest.raises(TokenError) as e:
            ts.verify_access(bad)
        assert e.value.kind == "invalid", bad


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        TokenService(b"short", 60, 600)


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, TokenService, Clock]]:
    clock = Clock()
    tokens = TokenService(SECRET, 60, 600, clock=clock)

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(principal_of(request).to_dict())

    async def admin_only(request: web.Request) -> web.Response:
        p = require_role(request, "admin")
        return web.json_response({"ok": p.username})

    async def public(request: web.Request) -> web.Response:
        return web.json_response({"public": True})

    app = web.Application(middlewares=[auth_middleware(tokens)])
    app.router.add_get("/api/me", whoami)
    app.router.add_get("/api/admin", admin_only)
    app.router.add_get("/api/openapi.json", public)
    app.router.add_post("/api/auth/login", public)
    app.router.add_get("/agent", public)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", tokens, clock
    await runner.cleanup()


async def test_api_guard(api: tuple[str, TokenService, Clock]) -> None:
    base, tokens, clock = api
    async with aiohttp.ClientSession() as s:
        # public paths need no token
        for method, path in (("GET", "/api/openapi.json"), ("POST", "/api/auth/login")):
            async with s.request(method, base + path) as r:
                assert r.status == 200
        async with s.get(base + "/agent") as r:
            assert r.status == 200
        # no token, wrong scheme, garbage
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer xyz"}):
            async with s.get(base + "/api/me", headers=headers) as r:
                assert r.status == 401
                body = await r.json()
                assert body["error"]["code"] == "unauthorized"
                assert r.headers["WWW-Authenticate"] == "Bearer"
        pair = tokens.issue(ALICE)
        auth = {"Authorization": f"Bearer {pair['access_token']}"}
        async with s.get(base + "/api/me", headers=auth) as r:
            assert r.status == 200
            assert await r.json() == ALICE.to_dict()
        # role check: an agent may not, an admin may
        async with s.get(base + "/api/admin", headers=auth) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "forbidden"
        admin = {"Authorization": f"Bearer {tokens.issue(ADMIN)['access_token']}"}
        async with s.get(base + "/api/admin", headers=admin) as r:
            assert r.status == 200 and (await r.json()) == {"ok": "root"}
        # an expired token says so, so that the client refreshes instead of logging in again
        clock.t += 61
        async with s.get(base + "/api/me", headers=auth) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "token_expired"
