"""A small scriptable AMI server on 127.0.0.1 for the link tests.

It is deliberately NOT a PBX simulator (that is `ami.simulator`): it answers the few actions
the link needs (Login, Ping, Logoff, CoreShowChannels, QueueStatus, Originate), records every
action it receives, and lets a test script everything else: ignore pings, refuse the login,
hold an action without answering, drop the connection, or push arbitrary bytes (split UTF-8,
garbage, partial frames) at any moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ami.framing import AmiParser

BANNER = b"Asterisk Call Manager/11.0.0\r\n"

#: handler(session, action) -> None; may write, close, or do nothing (leave it unanswered)
Handler = Callable[["FakeSession", dict[str, str]], Awaitable[None] | None]


def frame(fields: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = fields.items() if isinstance(fields, dict) else fields
    return ("".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n").encode("utf-8")


def response(action: dict[str, str], ok: bool = True, message: str = "", **extra: str) -> bytes:
    fields: list[tuple[str, str]] = [("Response", "Success" if ok else "Error")]
    if "ActionID" in action:
        fields.append(("ActionID", action["ActionID"]))
    if message:
        fields.append(("Message", message))
    fields.extend(extra.items())
    return frame(fields)


@dataclass
class FakeSession:
    server: FakeAmi
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    logged_in: bool = False
    received: list[dict[str, str]] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def event(self, name: str, **fields: str) -> None:
        self.write(frame([("Event", name), *fields.items()]))

    def close(self) -> None:
        """Drop the TCP connection (as Asterisk does after a failed login)."""
        self.writer.close()

    def abort(self) -> None:
        """Drop without FIN handshake niceties."""
        self.writer.transport.abort()


class FakeAmi:
    """`async with FakeAmi(...) as ami:` then connect to `ami.port`.

    Counters: `connections` (TCP accepts), `received` (every action, all sessions, in order),
    `count(name)`. Behaviour knobs can be changed while running.
    """

    def __init__(
        self,
        *,
        username: str = "cti",
        secret: str = "s3cret",
        banner: bool = True,
        login_ok: bool = True,
        login_delay: float = 0.0,
        answer_login: bool = True,
        answer_pings: bool = True,
    ) -> None:
        self.username = username
        self.secret = secret
        self.banner = banner
        self.login_ok = login_ok
        self.login_delay = login_delay
        self.answer_login = answer_login
        self.answer_pings = answer_pings
        self.channels: list[dict[str, str]] = []
        self.queue_params: list[dict[str, str]] = []
        self.queue_members: list[dict[str, str]] = []
        self.queue_entries: list[dict[str, str]] = []
        #: per action name (lower case): replaces the default behaviour
        self.handlers: dict[str, Handler] = {}
        self.sessions: list[FakeSession] = []
        self.received: list[dict[str, str]] = []
        self.connect_times: list[float] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in self.sessions:
            s.abort()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeAmi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- inspection ------------------------------------------------------------------------
    @property
    def server_tasks(self) -> set[asyncio.Task[None]]:
        return set(self._tasks)

    @property
    def connections(self) -> int:
        return len(self.sessions)

    @property
    def current(self) -> FakeSession:
        """The newest session that is still open."""
        for s in reversed(self.sessions):
            if not s.closed:
                return s
        raise AssertionError("no open AMI session")

    def count(self, action: str) -> int:
        a = action.lower()
        return sum(1 for m in self.received if m.get("Action", "").lower() == a)

    def actions(self, action: str) -> list[dict[str, str]]:
        a = action.lower()
        return [m for m in self.received if m.get("Action", "").lower() == a]

    async def wait_for(self, cond: Callable[[], bool], within: float = 3.0) -> None:
        deadline = time.monotonic() + within
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.005)

    # -- helpers for tests -----------------------------------------------------------------
    async def push(self, data: bytes) -> None:
        """Send raw bytes on the current session and flush them."""
        s = self.current
        s.write(data)
        await s.drain()

    def drop_all(self) -> None:
        for s in self.sessions:
            if not s.closed:
                s.abort()

    # -- serving ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = FakeSession(self, reader, writer)
        self.sessions.append(session)
        self.connect_times.append(time.monotonic())
        parser = AmiParser()
        parser.banner = ""  # clients send no greeting
        try:
            if self.banner:
                session.write(BANNER)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for msg in parser.feed(data):
                    self.received.append(msg)
                    session.received.append(msg)
                    await self._handle(session, msg)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _handle(self, s: FakeSession, msg: dict[str, str]) -> None:
        name = msg.get("Action", "").lower()
        handler = self.handlers.get(name)
        if handler is not None:
            ret = handler(s, msg)
            if ret is not None:
                await ret
            return
        if name == "login":
            await self._login(s, msg)
        elif not s.logged_in:
            s.write(response(msg, False, "Permission denied"))
        elif name == "ping":
            if self.answer_pings:
                s.write(response(msg, Ping="Pong", Timestamp=f"{time.time():.6f}"))
        elif name == "logoff":
            s.write(frame([("Response", "Goodbye"), ("ActionID", msg.get("ActionID", ""))]))
            await s.drain()
            s.close()
        elif name == "coreshowchannels":
            self._list(
                s,
                msg,
                "Channels will follow",
                [("CoreShowChannel", self.channels)],
                "CoreShowChannelsComplete",
            )
        elif name == "queuestatus":
            self._list(
                s,
                msg,
                "Queue status will follow",
                [
                    ("QueueParams", self.queue_params),
                    ("QueueMember", self.queue_members),
                    ("QueueEntry", self.queue_entries),
                ],
                "QueueStatusComplete",
            )
        elif name == "originate":
            s.write(response(msg, message="Originate successfully queued"))
        else:
            s.write(response(msg, False, "Invalid/unknown command"))
        await s.drain()

    async def _login(self, s: FakeSession, msg: dict[str, str]) -> None:
        if not self.answer_login:
            return
        if self.login_delay:
            await asyncio.sleep(self.login_delay)
        ok = (
            self.login_ok
            and msg.get("Username") == self.username
            and msg.get("Secret") == self.secret
        )
        if ok:
            s.logged_in = True
            s.write(response(msg, message="Authentication accepted"))
            s.event("FullyBooted", Privilege="system,all", Status="Fully Booted")
            await s.drain()
        else:
            s.write(response(msg, False, "Authentication failed"))
            await s.drain()
            s.close()

    def _list(
        self,
        s: FakeSession,
        msg: dict[str, str],
        message: str,
        groups: list[tuple[str, list[dict[str, str]]]],
        complete: str,
    ) -> None:
        aid = msg.get("ActionID", "")
        s.write(response(msg, message=message, EventList="start"))
        n = 0
        for event, items in groups:
            for item in items:
                s.write(frame([("Event", event), *item.items(), ("ActionID", aid)]))
                n += 1
        s.write(
            frame(
                [
                    ("Event", complete),
                    ("ActionID", aid),
                    ("EventList", "Complete"),
                    ("ListItems", str(n)),
                ]
            )
        )
