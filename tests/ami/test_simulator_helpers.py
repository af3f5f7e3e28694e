"""A minimal AMI client for the simulator tests (real TCP, `AmiParser`, `build_action`), and
helpers to start a simulator. Kept separate from the link under test on purpose."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from ami.actions import build_action
from ami.framing import AmiParser
from ami.settings import SimulatorSettings
from ami.simulator import PbxSimulator

Msg = dict[str, str]

FAST: dict[str, Any] = {
    "port": 0,
    "inbound_per_minute": 0.0,
    "time_scale": 100.0,
    "epoch": 1795343549,
    "login_fail_delay": 1.0,
}


def settings(**over: Any) -> SimulatorSettings:
    return SimulatorSettings(**{**FAST, **over})


async def start_sim(**over: Any) -> PbxSimulator:
    sim = PbxSimulator(settings(**over))
    await sim.start()
    return sim


class Client:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.parser = AmiParser()
        self.messages: list[Msg] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def events(self) -> list[Msg]:
        return [m for m in self.messages if "Event" in m]

    async def connect(self, port: int) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    break
                self.messages.extend(self.parser.feed(data))
                self._changed.set()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()
            self._changed.set()

    def send_raw(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def send(self, name: str, fields: dict[str, Any] | None = None, **kw: Any) -> str:
        fields = dict(fields or {})
        aid = fields.pop("ActionID", None) or f"t-{next(self._ids)}"
        act = build_action(name, {**fields, "ActionID": aid}, **kw)
        self.send_raw(act.encode())
        return aid

    async def action(
        self, name: str, fields: dict[str, Any] | None = None, within: float = 5.0, **kw: Any
    ) -> Msg:
        aid = self.send(name, fields, **kw)
        return await self.wait(lambda m: "Response" in m and m.get("ActionID") == aid, within)

    async def login(self, events: str = "on") -> Msg:
        resp = await self.action(
            "Login", {"Username": "cti", "Secret": "demo-secret", "Events": events}
        )
        assert resp["Response"] == "Success", resp
        return resp

    async def wait(self, pred: Callable[[Msg], bool], within: float = 5.0) -> Msg:
        start = 0

        async def loop() -> Msg:
            nonlocal start
            while True:
                for i in range(start, len(self.messages)):
                    if pred(self.messages[i]):
                        return self.messages[i]
                start = len(self.messages)
                if self.closed.is_set():
                    raise ConnectionError("closed before the expected message")
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), within)

    async def wait_event(self, name: str, within: float = 5.0, **match: str) -> Msg:
        return await self.wait(
            lambda m: m.get("Event") == name and all(m.get(k) == v for k, v in match.items()),
            within,
        )

    async def settle(self, quiet: float = 0.1, within: float = 5.0) -> None:
        """Wait until nothing arrived for `quiet` seconds."""

        async def loop() -> None:
            while True:
                n = len(self.messages)
                await asyncio.sleep(quiet)
                if len(self.messages) == n:
                    return

        await asyncio.wait_for(loop(), within)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def client(sim: PbxSimulator, login: bool = True, events: str = "on") -> Client:
    c = await Client().connect(sim.port)
    if login:
        await c.login(events)
    return c
