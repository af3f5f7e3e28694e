"""Delivery of messages to agents' websockets: per-agent sequence numbers, a bounded backlog
for reconnects, and slow consumers dropped without slowing anyone else.

The hub knows connections, not calls. `send` is synchronous and never touches a socket: it
numbers the message, serializes it once, keeps it in the agent's backlog and appends it to the
outgoing queue of each of the agent's live connections. Each connection has exactly one writer
task draining its queue, so a client that stops reading only ever fills its own queue, and when
that queue is full the connection is closed with 4008 (too slow).

Stream messages (`pop`, `call.update`, `agent.state`, ...) carry `seq`; replies to one
connection (`pong`, `result`, `error` about a frame) do not and are never replayed. `hello`
and `snapshot` carry the stream position they describe.

Each connection also watches the expiry of the access token it authenticated with: exactly one
timer handle per connection (first `token.expiring`, then the close with 4002), re-armed when
the client re-authenticates on the socket. No task per connection, no periodic sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import enum
import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from cti.settings import WebSettings

log = structlog.get_logger(__name__)

PROTOCOL_VERSION = 1

#: close codes (documented in docs/protocol.md)
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_AUTH_TIMEOUT = 4000
CLOSE_BAD_TOKEN = 4001
CLOSE_TOKEN_EXPIRED = 4002
CLOSE_PROTOCOL_ERROR = 4003
CLOSE_TOO_SLOW = 4008
CLOSE_TOO_BIG = 4009


class SocketLike(Protocol):
    """What the hub needs of a websocket (aiohttp's WebSocketResponse fits)."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


def _default(o: Any) -> Any:
    if isinstance(o, _dt.datetime | _dt.date):
        return o.isoformat()
    if isinstance(o, enum.Enum):
        return o.value
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    to_dict = getattr(o, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def text_frame(text: str) -> bytes:
    """A whole unmasked, uncompressed text frame as a server sends it (RFC 6455 5.2)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + data


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=_default)


@dataclass
class HubStats:
    connections: int = 0  # live, authenticated connections
    agents_connected: int = 0
    sent: int = 0  # stream messages numbered by send()
    delivered: int = 0  # frames written to sockets
    coalesced: int = 0  # frames that left in the same write as the one before them
    dropped_slow: int = 0  # closed 4008: outgoing queue full
    dropped_unacked: int = 0  # closed 4008: too many messages without an ack
    resumed: int = 0
    snapshots: int = 0
    expired: int = 0  # closed 4002: the token expired without a re-authentication
    reauthenticated: int = 0  # tokens renewed on an open socket

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Connection:
    """One authenticated websocket of an agent."""

    __slots__ = (
        "acked",
        "agent_id",
        "closing",
        "expires_at",
        "last_seq",
        "out",
        "ready",
        "timer",
        "wake",
        "writer",
        "ws",
    )

    def __init__(self, agent_id: str, ws: SocketLike, acked: int) -> None:
        self.agent_id = agent_id
        self.ws = ws
        self.out: deque[str] = deque()
        self.wake = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        self.ready = False
        self.closing = False
        #: highest stream seq the client acknowledged / was handed
        self.acked = acked
        self.last_seq = acked
        #: when the access token behind this socket expires (wall clock); None: never
        self.expires_at: float | None = None
        #: the one token timer of this socket (warning, then expiry)
        self.timer: asyncio.TimerHandle | None = None


class _Stream:
    """One agent's numbered stream: counter, backlog and live connections."""

    __slots__ = ("backlog", "conns", "id", "seq")

    def __init__(self, backlog_max: int) -> None:
        self.seq = 0
        #: a new id per process and agent, so that seq numbers from before a restart are
        #: never mistaken for current ones
        self.id = secrets.token_hex(6)
        self.backlog: deque[tuple[int, float, str]] = deque(maxlen=backlog_max)
        self.conns: list[Connection] = []


class Hub:
    def __init__(
        self,
        settings: WebSettings,
        snapshot: Callable[[str], Awaitable[dict[str, Any]]],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._snapshot = snapshot
        self._clock = clock
        #: token expiry times are wall-clock (the token's `exp`)
        self._wall = wall_clock
        self._streams: dict[str, _Stream] = {}
        self._queue_limit = settings.ws_send_queue
        self._max_unacked = settings.ws_max_unacked
        self._keep = settings.ws_backlog_seconds
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats = HubStats()

    # -- sending -----------------------------------------------------------------------------

    def _stream(self, agent_id: str) -> _Stream:
        st = self._streams.get(agent_id)
        if st is None:
            st = self._streams[agent_id] = _Stream(self._settings.ws_backlog_messages)
        return st

    def _trim(self, st: _Stream, now: float) -> None:
        backlog = st.backlog
        horizon = now - self._keep
        while backlog and backlog[0][1] < horizon:
            backlog.popleft()

    def send(self, agent_id: str, type: str, payload: dict[str, Any]) -> int:
        """Number the message, keep it for a reconnect and queue it for each live socket of
        the agent. Never awaits; returns the message's seq."""
        st = self._stream(agent_id)
        st.seq = seq = st.seq + 1
        frame = encode({"type": type, "seq": seq, "data": payload})
        now = self._clock()
        if st.backlog.maxlen:
            st.backlog.append((seq, now, frame))
            self._trim(st, now)
        self.stats.sent += 1
        if st.conns:
            for conn in tuple(st.conns):
                if seq - conn.acked > self._max_unacked:
                    self.stats.dropped_unacked += 1
                    self._drop(conn, CLOSE_TOO_SLOW, "too many unacknowledged messages")
                    continue
                self._push(conn, frame)
                conn.last_seq = seq
        return seq

    def reply(self, conn: Connection, type: str, payload: dict[str, Any]) -> None:
        """A message for one connection only (not numbered, never replayed)."""
        self._push(conn, encode({"type": type, "data": payload}))

    def _push(self, conn: Connection, frame: str) -> None:
        if conn.closing:
            return
        if len(conn.out) >= self._queue_limit:
            self.stats.dropped_slow += 1
            self._drop(conn, CLOSE_TOO_SLOW, "client too slow")
            return
        conn.out.append(frame)
        if conn.ready:
            conn.wake.set()

    # -- connections -------------------------------------------------------------------------

    def is_connected(self, agent_id: str) -> bool:
        st = self._streams.get(agent_id)
        return bool(st and st.conns)

    def position(self, agent_id: str) -> tuple[str, int]:
        """(stream id, last seq) of an agent's stream."""
        st = self._stream(agent_id)
        return st.id, st.seq

    async def attach(
        self,
        agent_id: str,
        ws: SocketLike,
        *,
        last_seq: int | None = None,
        stream: str | None = None,
        agent: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> Connection:
        """Register an authenticated socket: `hello`, then either the messages it missed
        (resume) or a fresh `snapshot`, then live messages. Raises if the snapshot fails.
        `expires_at`: when the socket's access token expires (see `watch_token`)."""
        st = self._stream(agent_id)
        self._trim(st, self._clock())
        start = st.seq
        resumable = (
            last_seq is not None
            and (stream is None or stream == st.id)
            and 0 <= last_seq <= start
            and (last_seq == start or (bool(st.backlog) and st.backlog[0][0] <= last_seq + 1))
        )
        conn = Connection(
            agent_id, ws, acked=last_seq if resumable and last_seq is not None else start
        )
        if not st.conns:
            self.stats.agents_connected += 1
        st.conns.append(conn)
        self.stats.connections += 1

        def hello(resumed: bool) -> str:
            return encode(
                {
                    "type": "hello",
                    "seq": last_seq if resumed else start,
                    "data": {
                        "protocol": PROTOCOL_VERSION,
                        "stream": st.id,
                        "resumed": resumed,
                        "agent": agent or {"agent_id": agent_id},
                        "server_time": time.time(),
                        "limits": {
                            "max_message_bytes": self._settings.max_ws_message_bytes,
                            "max_unacked": self._max_unacked,
                        },
                        **({} if expires_at is None else {"token_expires_at": expires_at}),
                    },
                }
            )

        if resumable:
            assert last_seq is not None
            conn.out.append(hello(True))
            conn.out.extend(f for s, _, f in st.backlog if s > last_seq)
            self.stats.resumed += 1
        else:
            conn.out.append(hello(False))
            try:
                snap = await self._snapshot(agent_id)
            except BaseException:
                self.detach(conn)
                raise
            # messages sent while the snapshot was made queue behind hello; the snapshot goes
            # right after hello and names the position it was taken at, so the client applies
            # those messages on top of it
            if not conn.closing:
                conn.out.insert(1, encode({"type": "snapshot", "seq": start, "data": snap}))
            self.stats.snapshots += 1
        if not conn.closing:
            conn.ready = True
            conn.writer = asyncio.create_task(self._write_loop(conn), name=f"ws-writer-{agent_id}")
            conn.wake.set()
            if expires_at is not None:
                self.watch_token(conn, expires_at)
        return conn

    # -- token expiry ------------------------------------------------------------------------

    def watch_token(self, conn: Connection, expires_at: float) -> None:
        """(Re-)arm the socket's token timer: `token.expiring` `ws_reauth_warning_seconds`
        before `expires_at`, the close with 4002 at `expires_at`. A re-authentication calls
        this again with the new token's expiry, which replaces the pending timer."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.expires_at = expires_at
        if conn.closing:
            return
        loop = asyncio.get_running_loop()
        delay = expires_at - self._settings.ws_reauth_warning_seconds - self._wall()
        conn.timer = loop.call_later(max(delay, 0.0), self._token_warning, conn)

    def _token_warning(self, conn: Connection) -> None:
        conn.timer = None
        if conn.closing or conn.expires_at is None:
            return
        left = conn.expires_at - self._wall()
        if left <= 0:
            self._token_expired(conn)
            return
        self.reply(
            conn,
            "token.expiring",
            {"expires_at": conn.expires_at, "seconds_left": round(left, 3)},
        )
        conn.timer = asyncio.get_running_loop().call_later(left, self._token_expired, conn)

    def _token_expired(self, conn: Connection) -> None:
        conn.timer = None
        if conn.closing or conn.expires_at is None:
            return
        left = conn.expires_at - self._wall()
        if left > 0:  # a timer that fired a hair early
            conn.timer = asyncio.get_running_loop().call_later(left, self._token_expired, conn)
            return
        self.stats.expired += 1
        self._drop(
            conn,
            CLOSE_TOKEN_EXPIRED,
            "token expired",
            error={
                "code": "token_expired",
                "message": "the access token expired: refresh it, then reconnect and resume",
            },
        )

    def ack(self, conn: Connection, seq: int) -> bool:
        """Record a cumulative acknowledgement; False when it names a seq never sent."""
        st = self._streams.get(conn.agent_id)
        if st is None or seq > st.seq or seq < 0:
            return False
        if seq > conn.acked:
            conn.acked = seq
        return True

    def detach(self, conn: Connection) -> None:
        """The socket is gone (closed by either side); forget it. Idempotent."""
        conn.closing = True
        conn.out.clear()
        conn.wake.set()
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        st = self._streams.get(conn.agent_id)
        if st is not None and conn in st.conns:
            st.conns.remove(conn)
            self.stats.connections -= 1
            if not st.conns:
                self.stats.agents_connected -= 1
        writer = conn.writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()

    def _drop(
        self, conn: Connection, code: int, reason: str, error: dict[str, Any] | None = None
    ) -> None:
        """Close a socket from the server side; `error`: an `error` message written just
        before the close frame (after detach, so nothing else is written in between)."""
        if conn.closing:
            return
        log.info("websocket dropped", agent=conn.agent_id, code=code, reason=reason)
        self.detach(conn)
        task = asyncio.get_running_loop().create_task(self._close(conn, code, reason, error))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(
        self, conn: Connection, code: int, reason: str, error: dict[str, Any] | None = None
    ) -> None:
        if error is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(
                    conn.ws.send_str(encode({"type": "error", "data": error})),
                    self._settings.ws_close_timeout,
                )
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(
                conn.ws.close(code=code, message=reason.encode()),
                self._settings.ws_close_timeout,
            )

    async def _write_loop(self, conn: Connection) -> None:
        out, wake, ws, stats = conn.out, conn.wake, conn.ws, self.stats
        transport: asyncio.Transport | None = getattr(ws, "transport", None)
        try:
            while not conn.closing:
                if not out:
                    wake.clear()
                    await wake.wait()
                    continue
                if (
                    len(out) > 1
                    and transport is not None
                    and not transport.is_closing()
                    and not transport.get_write_buffer_size()
                ):
                    # what queued up since the last write (an answer's call.update and
                    # agent.state come together) leaves in one write: a send() on loopback
                    # costs ~0.1 ms of the event loop's time. Only while the socket keeps up:
                    # a backlog goes through send_str, which waits for the peer to drain.
                    n = len(out)
                    transport.write(b"".join([text_frame(out.popleft()) for _ in range(n)]))
                    stats.delivered += n
                    stats.coalesced += n - 1
                    continue
                await ws.send_str(out.popleft())
                stats.delivered += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the peer went away mid-write
            log.debug("websocket write failed", agent=conn.agent_id, error=str(e))
            self.detach(conn)

    async def close_all(self) -> None:
        """Shut down: every socket is closed with 1001 (going away)."""
        conns = [c for st in self._streams.values() for c in st.conns]
        for conn in conns:
            self._drop(conn, CLOSE_GOING_AWAY, "server shutting down")
        if self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)
