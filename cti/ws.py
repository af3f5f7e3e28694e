"""The agents' websocket endpoint (GET /ws): authentication, acks, and a few agent actions.

The protocol is described in docs/protocol.md (schema: docs/protocol.schema.json). This module
only reads frames; everything written to the socket goes through the hub's per-connection
writer, so a slow client never blocks the reading side or anybody else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from cti.auth import TokenError, TokenService
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


class CtiWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversized frame with 1009 by itself; the protocol promises an
    `error` message and close code 4009, so the close is translated here."""

    too_big = False

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

    await serve_socket(ws, svc.settings.web, svc.tokens, svc.hub, svc.agents, account_ok=account_ok)
    return ws


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
) -> None:
    """Run one agent connection to its end. `agents` is the AgentService (for actions)."""
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
    try:
        principal = tokens.verify_access(token)
    except TokenError as e:
        if e.kind == "expired":
            await _refuse(ws, CLOSE_TOKEN_EXPIRED, "token_expired", "token expired: refresh it")
        else:
            await _refuse(ws, CLOSE_BAD_TOKEN, "bad_token", "token refused")
        return
    if account_ok is not None and not await account_ok(principal.agent_id):
        await _refuse(ws, CLOSE_BAD_TOKEN, "bad_token", "account disabled or removed")
        return

    agent_id = principal.agent_id
    try:
        conn = await hub.attach(
            agent_id, ws, last_seq=last_seq, stream=stream, agent=principal.to_dict()
        )
    except Exception:
        log.exception("websocket snapshot failed", agent=agent_id)
        await _refuse(ws, CLOSE_INTERNAL_ERROR, "internal", "could not build the snapshot")
        return
    log.debug("websocket connected", agent=agent_id, resumed=last_seq is not None)
    try:
        await _read_loop(ws, conn, hub, agents, agent_id)
    finally:
        hub.detach(conn)
        if not ws.closed:
            await ws.close()


async def _read_loop(
    ws: CtiWebSocket, conn: Connection, hub: Hub, agents: Any, agent_id: str
) -> None:
    errors = 0
    while not conn.closing:
        frame = await ws.receive()
        if frame.type is WSMsgType.TEXT:
            problem = await _handle(frame.data, conn, hub, agents, agent_id)
        elif frame.type is WSMsgType.BINARY:
            await _refuse(ws, CLOSE_PROTOCOL_ERROR, "protocol", "binary frames are not accepted")
            return
        else:  # CLOSE, CLOSING, CLOSED, ERROR (an oversize frame was already answered)
            return
        if problem is None:
            errors = 0
            continue
        errors += 1
        hub.reply(conn, "error", problem)
        if errors >= MAX_CONSECUTIVE_ERRORS:
            await _refuse(ws, CLOSE_PROTOCOL_ERROR, "protocol", "too many bad messages")
            return


async def _handle(
    data: str, conn: Connection, hub: Hub, agents: Any, agent_id: str
) -> dict[str, Any] | None:
    """Act on one client frame; a dict describes what was wrong with it."""
    try:
        msg = json.loads(data)
    except ValueError:
        return {"code": "bad_json", "message": "the frame is not valid JSON"}
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return {"code": "bad_message", "message": "a message is a JSON object with a type"}
    kind = msg["type"]
    req_id = msg.get("id")
    if req_id is not None and not isinstance(req_id, str | int):
        return {"code": "bad_message", "message": "id must be a string or an integer"}
    if kind == "ack":
        seq = msg.get("seq")
        if type(seq) is not int or not hub.ack(conn, seq):
            return {"code": "bad_ack", "message": "ack needs the seq of a message received"}
        return None
    if kind == "ping":
        hub.reply(conn, "pong", {"id": req_id} if req_id is not None else {})
        return None
    if kind == "auth":
        return {"code": "bad_message", "message": "already authenticated"}
    if kind in ("pause", "unpause", "end_wrap_up"):
        return await _action(kind, msg, req_id, conn, hub, agents, agent_id)
    return {"code": "unknown_type", "message": f"unknown message type {kind[:40]!r}"}


async def _action(
    kind: str,
    msg: dict[str, Any],
    req_id: str | int | None,
    conn: Connection,
    hub: Hub,
    agents: Any,
    agent_id: str,
) -> dict[str, Any] | None:
    from cti.agents import AgentError

    def err(code: str, message: str) -> dict[str, Any]:
        return {"code": code, "message": message, **({} if req_id is None else {"id": req_id})}

    try:
        if kind == "pause":
            reason = msg.get("reason")
            if not isinstance(reason, str):
                return err("bad_message", "pause needs a reason")
            view = await agents.pause(agent_id, reason)
        elif kind == "unpause":
            view = await agents.unpause(agent_id)
        else:
            view = agents.end_wrap_up(agent_id)
    except AgentError as e:
        return err(e.code, str(e))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("websocket action failed", agent=agent_id, action=kind)
        return err("internal", f"{kind} failed")
    hub.reply(conn, "result", {"id": req_id, "ok": True, "agent": view.to_dict()})
    return None
