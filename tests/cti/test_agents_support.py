"""A minimal AMI server on 127.0.0.1 that keeps queue memberships like Asterisk does
(QueueAdd / QueueRemove / QueuePause / QueueStatus, with Asterisk's answers and error texts),
so the agent service is tested through the real AMI link over TCP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ami.connection import AmiLink
from ami.framing import AmiParser
from ami.settings import AmiServerSettings


def _frame(fields: list[tuple[str, str]]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode()


@dataclass
class Member:
    queue: str
    interface: str
    name: str
    paused: bool = False
    reason: str = ""


@dataclass
class QueuePbx:
    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    received: list[dict[str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # action names answered with an error
    refuse_queues: set[str] = field(default_factory=set)  # QueueAdd to these fails
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    def actions(self, name: str) -> list[dict[str, str]]:
        return [m for m in self.received if m.get("Action", "").lower() == name.lower()]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        parser = AmiParser()
        parser.banner = ""
        try:
            while data := await reader.read(65536):
                for msg in parser.feed(data):
                    self.received.append(msg)
                    writer.write(self._answer(msg))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, m: dict[str, str]) -> bytes:
        name = m.get("Action", "").lower()
        aid = [("ActionID", m["ActionID"])] if "ActionID" in m else []

        def ok(message: str) -> bytes:
            return _frame([("Response", "Success"), *aid, ("Message", message)])

        def err(message: str) -> bytes:
            return _frame([("Response", "Error"), *aid, ("Message", message)])

        if name in self.refuse:
            return err("Refused by test")
        if name == "login":
            return ok("Authentication accepted") + _frame(
                [("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted")]
            )
        if name in ("ping", "events"):
            return _frame([("Response", "Success"), *aid, ("Ping", "Pong")])
        if name == "coreshowchannels":
            return _frame(
                [("Response", "Success"), *aid, ("EventList", "start"), ("Message", "x")]
            ) + _frame(
                [
                    ("Event", "CoreShowChannelsComplete"),
                    *aid,
                    ("EventList", "Complete"),
                    ("ListItems", "0"),
                ]
            )
        if name == "queuestatus":
            out = _frame([("Response", "Success"), *aid, ("EventList", "start")])
            for mem in self.members.values():
                out += _frame(
                    [
                        ("Event", "QueueMember"),
                        ("Queue", mem.queue),
                        ("Name", mem.name),
                        ("Location", mem.interface),
                        ("StateInterface", mem.interface),
                        ("Membership", "dynamic"),
                        ("InCall", "0"),
                        ("Status", "1"),
                        ("Paused", "1" if mem.paused else "0"),
                        ("PausedReason", mem.reason),
                        *aid,
                    ]
                )
            return out + _frame(
                [
                    ("Event", "QueueStatusComplete"),
                    *aid,
                    ("EventList", "Complete"),
                    ("ListItems", str(len(self.members))),
                ]
            )
        if name == "queueadd":
            if m.get("Queue") in self.refuse_queues:
                return err("Unable to add interface to queue: No such queue")
            key = (m["Queue"], m["Interface"])
            if key in self.members:
                return err("Unable to add interface: Already there")
            self.members[key] = Member(
                m["Queue"], m["Interface"], m.get("MemberName", ""), m.get("Paused") == "true"
            )
            return ok("Added interface to queue")
        if name == "queueremove":
            key = (m["Queue"], m["Interface"])
            if self.members.pop(key, None) is None:
                return err("Unable to remove interface: Not there")
            return ok("Removed interface from queue")
        if name == "queuepause":
            hits = [
                mem
                for mem in self.members.values()
                if mem.interface == m.get("Interface") and m.get("Queue", mem.queue) == mem.queue
            ]
            if not hits:
                return err("Interface not found")
            for mem in hits:
                mem.paused = m.get("Paused") == "true"
                mem.reason = m.get("Reason", "") if mem.paused else ""
            return ok("Interface paused successfully" if hits[0].paused else "unpaused")
        if name == "logoff":
            return _frame([("Response", "Goodbye"), *aid, ("Message", "bye")])
        return err("Invalid/unknown command")


@contextlib.asynccontextmanager
async def pbx_and_link() -> AsyncIterator[tuple[QueuePbx, AmiLink]]:
    pbx = QueuePbx()
    await pbx.start()
    link = AmiLink(
        AmiServerSettings(name="pbx1", port=pbx.port, secret="x", ping_interval=30),
        on_message=lambda msg, at: None,
    )
    await link.start()
    try:
        assert await link.wait_connected(5), "AMI link did not come up"
        yield pbx, link
    finally:
        await link.stop()
        await pbx.stop()
