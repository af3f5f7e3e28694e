"""The agents' websocket endpoint (GET /ws): authentication and re-authentication, acks, and
the agent actions.

The protocol is described in docs/protocol.md (schema: docs/protocol.schema.json). This module
only reads frames; everything written to the socket goes through the hub's per-connection
writer, so a slow client never blocks the reading side or anybody else.

Call work sent over the socket (notes, disposition, cases, customer, search, callback, dial)
runs the very REST handlers of `cti.api_agent` (see `socket_action` there): one set of
validation and authorization rules for both ways in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from cti.auth import Principal, TokenError, TokenService
from cti.hub import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_BAD_TOKEN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG,
    Connection,
    Hub,
    encode,
)
from cti.services import SERVICES
from cti.settings import WebSettings

log = structlog.get_logger(__name__)

#: after this many bad frames in a row the client is assumed broken and closed with 4003
MAX_CONSECUTIVE_ERRORS = 20

#: runs one call-work action for a principal: (principal, type, message) -> the result's
#: JSON body; raises `SocketActionError` when refused (cti.api_agent.socket_action)
ActionRunner = Callable[[Principal, str, dict[str, Any]], Awaitable[Any]]
#: the agent-state actions handled here directly
STATE_ACTIONS = frozenset({"pause", "unpause", "end_wrap_up"})


class SocketActionError(Exception):
    """An action sent over the socket was refused: the `error` reply's code, message and
    (as in the REST error body) the HTTP status and the offending fields."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 422,
        fields: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields or []


class CtiWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversized frame with 1009 by itself; the protocol promises an
    `error` message and close code 4009, so the close is translated here."""

    too_big = False
    #: the connection's transport once prepared: the hub writes several queued messages to
    #: it in one go (cti.hub.Hub._write_loop)
    transport: asyncio.Transport | None = None

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            self.too_big = True
            try:
                await self.send_str(
                    encode(
                        {
                            "type": "error",
                            "data": {"code": "too_big", "message": "frame over the size limit"},
                        }
                    )
                )
            except Exception:  # the peer may already be gone
                pass
            return await super().close(code=CLOSE_TOO_BIG, message=b"message too big", drain=drain)
        return await super().close(code=code, message=message, drain=drain)


def _error(code: str, message: str, **extra: Any) -> str:
    return encode({"type": "error", "data": {"code": code, "message": message, **extra}})


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    svc = request.app[SERVICES]
    ws = CtiWebSocket(
        max_msg_size=svc.settings.web.max_ws_message_bytes,
        heartbeat=svc.settings.web.ws_heartbeat_seconds or None,
        timeout=svc.settings.web.ws_close_timeout,
    )
    await ws.prepare(request)
    transport = request.transport
    ws.transport = transport if isinstance(transport, asyncio.Transport) else None
    accounts = svc.accounts

    async def account_ok(agent_id: str) -> bool:
        """A disabled account's access token may still be valid for minutes: ask the store."""
        if accounts is None:
            return True
        try:
            view = await accounts.get(agent_id)
        except Exception as e:  # database trouble: the token is valid, let the agent work
            log.warning("account check failed", agent=agent_id, error=type(e).__name__)
            return True
        return view is not None and not view.disabled

    actions: ActionRunner | None = None
    if svc.pops is not None and svc.crm is not None:
        from cti.api_agent import socket_action

        async def run_action(principal: Principal, kind: str, msg: dict[str, Any]) -> Any:
            return await socket_action(request, svc, principal, kind, msg)

        actions = run_action

    await serve_socket(
        ws,
        svc.settings.web,
        svc.tokens,
        svc.hub,
        svc.agents,
        account_ok=account_ok,
        actions=actions,
    )
    return ws


async def _check_token(
    tokens: TokenService,
    token: str,
    account_ok: Callable[[str], Awaitable[bool]] | None,
    agent_id: str | None = None,
) -> Principal | tuple[int, str, str]:
    """Who an access token speaks for, or (close code, error, reason) refusing it: at open
    and at a re-authentication, which must keep the socket's `agent_id`."""
    try:
        principal = tokens.verify_access(token)
    except TokenError as e:
        if e.kind == "expired":
            return CLOSE_TOKEN_EXPIRED, "token_expired", "token expired: refresh it"
        return CLOSE_BAD_TOKEN, "bad_token", "token refused"
    if agent_id is not None and principal.agent_id != agent_id:
        log.warning("re-auth with another agent's token", agent=agent_id)
        return CLOSE_BAD_TOKEN, "wrong_agent", "the token is another agent's"
    if account_ok is not None and not await account_ok(principal.agent_id):
        return CLOSE_BAD_TOKEN, "bad_token", "account disabled or removed"
    return principal


async def _refuse(ws: CtiWebSocket, code: int, err: str, message: str) -> None:
    if not ws.closed:
        try:
            await ws.send_str(_error(err, message))
        except Exception:
            pass
        await ws.close(code=code, message=message.encode()[:120])


async def serve_socket(
    ws: CtiWebSocket,
    settings: WebSettings,
    tokens: TokenService,
    hub: Hub,
    agents: Any,
    *,
    account_ok: Callable[[str], Awaitable[bool]] | None = None,
    actions: ActionRunner | None = None,
) -> None:
    """Run one agent connection to its end. `agents` is the AgentService (for actions);
    `actions` runs call work (None: only the agent-state actions are served)."""
    # -- authentication: the first frame, within ws_auth_seconds --------------------------
    try:
        first = await ws.receive(timeout=settings.ws_auth_seconds)
    except TimeoutError:
        await _refuse(ws, CLOSE_AUTH_TIMEOUT, "auth_timeout", "no auth message in time")
        return
    if first.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return
    if first.type is not WSMsgType.TEXT:
        await _refuse(ws, CLOSE_PROTOCOL_ERROR, "protocol", "binary frames are not accepted")
        return
    try:
        msg = json.loads(first.data)
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "auth":
        await _refuse(ws, CLOSE_PROTOCOL_ERROR, "protocol", "the first message must be auth")
        return
    token, last_seq, stream = msg.get("token"), msg.get("last_seq"), msg.get("stream")
    if (
        not isinstance(token, str)
        or (last_seq is not None and (type(last_seq) is not int or last_seq < 0))
        or (stream is not None and not isinstance(stream, str))
    ):
        await _refuse(ws, CLOSE_PROTOCOL_ERROR, "protocol", "auth: token string, last_seq int")
        return
    principal = await _check_token(tokens, token, account_ok)
    if not isinstance(principal, Principal):
        await _refuse(ws, *principal)
        return

    agent_id = principal.agent_id
    try:
        conn = await hub.attach(
            agent_id,
            ws,
            last_seq=last_seq,
            stream=stream,
            agent=principal.to_dict(),
            expires_at=principal.expires_at,
        )
    except Exception:
        log.exception("websocket snapshot failed", agent=agent_id)
        await _refuse(ws, CLOSE_INTERNAL_ERROR, "internal", "could not build the snapshot")
        return
    log.debug("websocket connected", agent=agent_id, resumed=last_seq is not None)
    session = _Session(ws, conn, hub, agents, tokens, account_ok, principal, actions)
    try:
        await session.read_loop()
    finally:
        hub.detach(conn)
        if not ws.closed:
            await ws.close()


class _Session:
    """One authenticated connection's reading side."""

    def __init__(
        self,
        ws: CtiWebSocket,
        conn: Connection,
        hub: Hub,
        agents: Any,
        tokens: TokenService,
        account_ok: Callable[[str], Awaitable[bool]] | None,
        principal: Principal,
        actions: ActionRunner | None,
    ) -> None:
        self.ws = ws
        self.conn = conn
        self.hub = hub
        self.agents = agents
        self.tokens = tokens
        self.account_ok = account_ok
        #: who the socket acts for; a re-authentication may renew it (same agent id only)
        self.principal = principal
        self.agent_id = principal.agent_id
        self.actions = actions

    async def read_loop(self) -> None:
        ws, conn = self.ws, self.conn
        errors = 0
        while not conn.closing and not ws.closed:
            frame = await ws.receive()
            if frame.type is WSMsgType.TEXT:
                problem = await self.handle(frame.data)
            elif frame.type is WSMsgType.BINARY:
                await self.close(CLOSE_PROTOCOL_ERROR, "protocol", "binary frames are not accepted")
                return
            else:  # CLOSE, CLOSING, CLOSED, ERROR (an oversize frame was already answered)
                return
            if problem is None:
                errors = 0
                continue
            errors += 1
            self.hub.reply(conn, "error", problem)
            if errors >= MAX_CONSECUTIVE_ERRORS:
                await self.close(CLOSE_PROTOCOL_ERROR, "protocol", "too many bad messages")
                return

    async def close(self, code: int, err: str, message: str) -> None:
        """Close from the reading side: the writer stops first, so the `error` saying why is
        the last frame before the close."""
        self.hub.detach(self.conn)
        await _refuse(self.ws, code, err, message)

    async def handle(self, data: str) -> dict[str, Any] | None:
        """Act on one client frame; a dict describes what was wrong with it."""
        try:
            msg = json.loads(data)
        except ValueError:
            return {"code": "bad_json", "message": "the frame is not valid JSON"}
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return {"code": "bad_message", "message": "a message is a JSON object with a type"}
        kind = msg["type"]
        req_id = msg.get("id")
        if req_id is not None and (not isinstance(req_id, str | int) or isinstance(req_id, bool)):
            return {"code": "bad_message", "message": "id must be a string or an integer"}
        conn, hub = self.conn, self.hub
        if kind == "ack":
            seq = msg.get("seq")
            if type(seq) is not int or not hub.ack(conn, seq):
                return {"code": "bad_ack", "message": "ack needs the seq of a message received"}
            return None
        if kind == "ping":
            hub.reply(conn, "pong", {"id": req_id} if req_id is not None else {})
            return None
        if kind == "auth":
            return await self.reauth(msg, req_id)
        if kind in STATE_ACTIONS:
            return await self.state_action(kind, msg, req_id)
        if self.actions is not None and kind in SOCKET_ACTIONS:
            return await self.call_action(kind, msg, req_id)
        return {"code": "unknown_type", "message": f"unknown message type {kind[:40]!r}"}

    async def reauth(self, msg: dict[str, Any], req_id: str | int | None) -> dict[str, Any] | None:
        """A fresh access token on an open socket moves its expiry forward. A token that is
        bad, expired or another agent's closes the socket (4001 / 4002), as it would at open."""
        token = msg.get("token")
        if not isinstance(token, str):
            return _problem("bad_message", "auth needs a token string", req_id)
        principal = await _check_token(self.tokens, token, self.account_ok, self.agent_id)
        if not isinstance(principal, Principal):
            await self.close(*principal)
            return None
        expires_at = principal.expires_at
        self.principal = principal
        if expires_at is not None:
            self.hub.watch_token(self.conn, expires_at)
        self.hub.stats.reauthenticated += 1
        log.debug("websocket re-authenticated", agent=self.agent_id, expires_at=expires_at)
        payload: dict[str, Any] = {"expires_at": expires_at}
        if req_id is not None:
            payload["id"] = req_id
        self.hub.reply(self.conn, "auth.renewed", payload)
        return None

    async def state_action(
        self, kind: str, msg: dict[str, Any], req_id: str | int | None
    ) -> dict[str, Any] | None:
        from cti.agents import AgentError

        agents, agent_id = self.agents, self.agent_id
        try:
            if kind == "pause":
                reason = msg.get("reason")
                if not isinstance(reason, str):
                    return _problem("bad_message", "pause needs a reason", req_id)
                view = await agents.pause(agent_id, reason)
            elif kind == "unpause":
                view = await agents.unpause(agent_id)
            else:
                view = agents.end_wrap_up(agent_id)
        except AgentError as e:
            return _problem(e.code, str(e), req_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("websocket action failed", agent=agent_id, action=kind)
            return _problem("internal", f"{kind} failed", req_id)
        self.hub.reply(self.conn, "result", {"id": req_id, "ok": True, "agent": view.to_dict()})
        return None

    async def call_action(
        self, kind: str, msg: dict[str, Any], req_id: str | int | None
    ) -> dict[str, Any] | None:
        assert self.actions is not None
        try:
            result = await self.actions(self.principal, kind, msg)
        except SocketActionError as e:
            problem = _problem(e.code, e.message, req_id)
            problem["status"] = e.status
            if e.fields:
                problem["fields"] = e.fields
            return problem
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("websocket action failed", agent=self.agent_id, action=kind)
            return _problem("internal", f"{kind} failed", req_id)
        self.hub.reply(self.conn, "result", {"id": req_id, "ok": True, "result": result})
        return None


#: call-work message types (served when the socket has an action runner); the REST endpoint
#: behind each is listed in cti.api_agent.SOCKET_ROUTES and docs/protocol.md
SOCKET_ACTIONS = frozenset(
    {
        "note",
        "disposition",
        "link_cases",
        "link_customer",
        "search_customers",
        "schedule_callback",
        "dial",
    }
)


def _problem(code: str, message: str, req_id: str | int | None) -> dict[str, Any]:
    return {"code": code, "message": message, **({} if req_id is None else {"id": req_id})}
