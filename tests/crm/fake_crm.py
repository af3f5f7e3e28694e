"""A small external CRM served by aiohttp on 127.0.0.1, for the HTTP adapter's tests.

Its JSON deliberately does not look like ours (nested, other names), so the field mapping is
exercised. Switch its behaviour at run time: ``mode`` = "ok" | "slow" | "fail" (HTTP 500) |
"malformed" (not JSON) | "wrong-shape" (JSON, but not what the mapping expects) | "down"
(connection closed without an answer); ``delay`` seconds for "slow".
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

#: the field mapping that reads this CRM's JSON
FIELD_MAP = {
    "customers": "data.results",
    "id": "customerId",
    "name": "fullName",
    "postcode": "address.zip",
    "city": "address.town",
    "street": "address.street",
    "vip": "flags.vip",
    "phones": "contact.phones",
    "emails": "contact.mails",
    "custom.tier": "attributes.tier",
    "extra.balance": "account.balance",
    "interactions": "history",
    "interaction.id": "ref",
    "interaction.notes": "comment",
    "interaction.offered_at": "start",
}


class FakeCrm:
    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[Any] = []
        self.auth: list[str] = []
        self.customers: dict[str, dict[str, Any]] = {
            "C-1": {
                "customerId": "C-1",
                "fullName": "Anna Müller",
                "address": {"zip": "10115", "town": "Berlin", "street": "Unter den Linden 1"},
                "flags": {"vip": True},
                "contact": {
                    "phones": [{"number": "+49 30 123456", "type": "landline"}],
                    "mails": ["anna@example.com"],
                },
                "attributes": {"tier": "gold"},
                "account": {"balance": 12.5},
            },
            "C-2": {
                "customerId": "C-2",
                "fullName": "Bernd Müller",
                "address": {"zip": "10117"},
                "contact": {"phones": ["+4930123456", "+491711111111"]},
            },
            "C-3": {
                "customerId": "C-3",
                "fullName": "Carl Clever",
                "contact": {"phones": ["+491712222222"]},
            },
        }
        self.history = {
            "C-1": [
                {
                    "ref": "I-9",
                    "comment": "called about invoice",
                    "start": "2026-01-05T09:00:00Z",
                    "direction": "inbound",
                }
            ]
        }
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/customers", self._find)
        app.router.add_post("/customers", self._create)
        app.router.add_get("/customers/{id}", self._card)
        app.router.add_patch("/customers/{id}", self._update)
        app.router.add_get("/customers/{id}/interactions", self._history)
        app.router.add_post("/interactions", self._interaction)
        app.router.add_patch("/interactions/{id}", self._interaction_update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _misbehave(self, request: web.Request) -> web.StreamResponse | None:
        self.requests.append((request.method, request.path_qs))
        self.auth.append(request.headers.get("Authorization", ""))
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        elif self.mode == "fail":
            return web.json_response({"error": "boom"}, status=500)
        elif self.mode == "malformed":
            return web.Response(text='{"data": {"results": [', content_type="application/json")
        elif self.mode == "wrong-shape":
            return web.json_response({"data": {"results": "nope"}, "customerId": None})
        elif self.mode == "down":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        return None

    @staticmethod
    def _digits(s: str) -> str:
        return "".join(ch for ch in s if ch.isdigit())

    async def _find(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        phone = self._digits(request.query.get("phone", ""))
        q = request.query.get("q", "").lower()
        out = []
        for c in self.customers.values():
            phones = [p if isinstance(p, str) else p["number"] for p in c["contact"]["phones"]]
            if phone and any(self._digits(p) == phone for p in phones):
                out.append(c)
            elif q and q in c["fullName"].lower():
                out.append(c)
        return web.json_response({"data": {"results": out}})

    async def _card(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        c = self.customers.get(request.match_info["id"])
        if c is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(c)

    async def _history(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        return web.json_response({"history": self.history.get(request.match_info["id"], [])})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        body = await request.json()
        self.bodies.append(body)
        new_id = f"C-{len(self.customers) + 1}"
        self.customers[new_id] = {
            "customerId": new_id,
            "fullName": body["name"],
            "contact": {"phones": [p["number"] for p in body["phones"]]},
        }
        return web.json_response({"customerId": new_id}, status=201)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        body = await request.json()
        self.bodies.append(body)
        c = self.customers[request.match_info["id"]]
        if "name" in body:
            c["fullName"] = body["name"]
        return web.json_response({"ok": True})

    async def _interaction(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        self.bodies.append(await request.json())
        return web.json_response({"ref": f"I-{len(self.bodies)}"}, status=201)

    async def _interaction_update(self, request: web.Request) -> web.StreamResponse:
        bad = await self._misbehave(request)
        if bad is not None:
            return bad
        body = await request.json()
        self.bodies.append(body)
        return web.json_response(
            {
                "ref": request.match_info["id"],
                "comment": body.get("notes", ""),
                "disposition": body.get("disposition", ""),
            }
        )
