"""A campaign floor on 127.0.0.1 for the dialer's end-to-end tests (helpers only).

The PBX simulator runs `SCALE` times faster than real time; the dialer, the AMI link's event
times and the agent service all read one `VClock` that runs at the same rate and can also jump
forward (hours of retry delays in no real time). Events flow exactly as in the daemon: AMI ->
CallTracker -> (AgentService, Dialer.on_event), agent changes -> Dialer.on_event, in order
through one queue (the bus's job in cti.app).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ami.connection import AmiLink
from ami.events import AgentStateChange, CallEvent
from ami.settings import AmiServerSettings, SimulatorSettings
from ami.simulator import PbxSimulator
from ami.tracker import CallTracker
from crm_bridge.db import make_engine, make_sessionmaker, migrate, normalize_url
from cti.agents import AgentService
from cti.app import version_locations
from cti.settings import AgentSettings
from dialer.campaigns import CampaignService, CampaignSpec
from dialer.engine import Dialer
from dialer.importer import import_leads
from dialer.models import Attempt, Lead
from dialer.settings import DialerSettings

SCALE = 20.0
SECRET = "dialer-e2e"
#: 10:00 UTC = 11:00 in Berlin, inside the default calling window
BASE = datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()
TERMINAL = ("done", "retry", "callback")


class VClock:
    """Seconds since the epoch, running SCALE times faster than the loop clock, plus jumps."""

    def __init__(self, scale: float = SCALE, base: float = BASE) -> None:
        self.scale = scale
        self.base = base
        self.offset = 0.0
        self._t0 = asyncio.get_running_loop().time()

    def __call__(self) -> float:
        return self.base + (asyncio.get_running_loop().time() - self._t0) * self.scale + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Floor:
    sim: PbxSimulator
    link: AmiLink
    tracker: CallTracker
    agents: AgentService
    engine: AsyncEngine
    clock: VClock
    settings: DialerSettings
    dialer: Dialer | None = None
    campaigns: CampaignService | None = None
    originates: list[dict[str, str]] = field(default_factory=list)
    originate_responses: dict[str, int] = field(default_factory=dict)
    redirects: list[dict[str, str]] = field(default_factory=list)
    user_events: list[dict[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    changes: list[AgentStateChange] = field(default_factory=list)
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # ---- wiring ------------------------------------------------------------------------

    async def originate(self, server: str, action: Any) -> Any:
        if action.name == "Originate":
            self.originates.append(dict(action.headers))
        elif action.name == "Redirect":
            self.redirects.append(dict(action.headers))
        return await self.link.send(action)

    def notify(self, agent: str, kind: str, payload: dict[str, Any]) -> None:
        self.notes.append((agent, kind, payload))

    def make_dialer(self) -> Dialer:
        agents = self.agents
        return Dialer(
            self.engine,
            self.settings,
            originate=self.originate,
            agents_of_queue=lambda q: [
                (v.status, v.since) for v in agents.views() if q in v.queues
            ],
            notify=self.notify,
            default_server="pbx1",
            clock=self.clock,
            agent_view=agents.view,
            agent_views=agents.views,
            channel_of=self.channel_of,
        )

    def channel_of(self, server: str, call_id: str) -> str | None:
        for c in self.tracker.live_calls():
            if c.call_id == call_id:
                return c.caller.channel
        return None

    async def start_dialer(self) -> Dialer:
        d = self.make_dialer()
        self.dialer = d
        self.campaigns = CampaignService(
            self.engine, on_change=d.campaign_changed, clock=self.clock
        )
        await d.start({c.call_id for c in self.tracker.live_calls()})
        return d

    async def _consume(self) -> None:
        while True:
            ev = await self.queue.get()
            d = self.dialer
            if d is not None:
                try:
                    await d.on_event(ev)
                except Exception:  # pragma: no cover - shows up as a failed assertion
                    import traceback

                    traceback.print_exc()

    async def _tick_agents(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.agents.tick(self.clock())

    # ---- set-up helpers ----------------------------------------------------------------

    async def login(self, agent: str, device: str, queues: tuple[str, ...] = ("sales",)) -> None:
        await self.agents.login(agent, name=agent, device=device, queues=list(queues))

    async def campaign(self, name: str, csv_rows: list[str], tmp: Path, **spec: Any) -> None:
        assert self.campaigns is not None
        await self.campaigns.create(CampaignSpec(name=name, queue="sales", **spec))
        path = tmp / f"{name}.csv"
        path.write_text("ref,name,phone\n" + "\n".join(csv_rows) + "\n")
        report = await import_leads(self.engine, name, path, region="DE", progress=False)
        assert not report.rejected, report.rejected

    async def leads(self) -> dict[str, Lead]:
        async with make_sessionmaker(self.engine)() as s:
            return {x.ref: x for x in (await s.execute(select(Lead))).scalars()}

    async def attempts(self) -> list[Attempt]:
        async with make_sessionmaker(self.engine)() as s:
            return list((await s.execute(select(Attempt).order_by(Attempt.created_at))).scalars())

    async def until(self, cond: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait (real seconds) until cond() (sync or async) is true."""
        deadline = time.monotonic() + within
        while True:
            v = cond()
            if asyncio.iscoroutine(v):
                v = await v
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.02)

    async def settled(self, within: float = 15.0) -> dict[str, Lead]:
        """Every lead in a resting state and no attempt open."""

        async def done() -> bool:
            leads = await self.leads()
            atts = await self.attempts()
            return all(x.state in TERMINAL for x in leads.values()) and all(
                a.state == "ended" for a in atts
            )

        await self.until(done, within)
        return await self.leads()


def sim_settings(**kw: Any) -> SimulatorSettings:
    base: dict[str, Any] = {
        "port": 0,
        "secret": SecretStr(SECRET),
        "inbound_per_minute": 0,
        "queues": ["sales"],
        "agent_answer_after": 0.5,
        "customer_answer_after": 2.0,
        "talk_min": 4.0,
        "talk_max": 8.0,
        "reject_after": 0.5,
        "dial_timeout": 20.0,
        "ring_timeout": 15.0,
        "safe_harbor_seconds": 2.0,
        "time_scale": SCALE,
        "seed": 7,
    }
    base.update(kw)
    return SimulatorSettings(**base)


PG_ENV = "CTI_TEST_PG_URL"


@asynccontextmanager
async def database(tmp: Path, kind: str = "sqlite") -> AsyncIterator[str]:
    """A migrated database: a SQLite file, or a scratch PostgreSQL database of its own
    (dropped afterwards) when `kind` is "postgresql" and CTI_TEST_PG_URL is set."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'cti.db'}"
        await migrate(url, extra_version_locations=version_locations())
        yield url
        return
    import asyncpg
    import pytest
    from sqlalchemy.engine import make_url

    admin = os.environ.get(PG_ENV, "").strip()
    if not admin:
        pytest.skip(f"{PG_ENV} not set")
    base = make_url(normalize_url(admin))
    name = f"cti_dialer_{secrets.token_hex(6)}"

    async def sql(text: str) -> None:
        conn = await asyncpg.connect(
            host=base.host,
            port=base.port or 5432,
            user=base.username,
            password=base.password,
            database=base.database or "postgres",
        )
        try:
            await conn.execute(text)
        finally:
            await conn.close()

    await sql(f'CREATE DATABASE "{name}"')
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        await migrate(url, extra_version_locations=version_locations())
        yield url
    finally:
        await sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def floor(
    tmp: Path,
    *,
    sim: dict[str, Any] | None = None,
    events: str = "on",
    db: str = "sqlite",
    **dialer: Any,
) -> AsyncIterator[Floor]:
    async with database(tmp, db) as url, _floor(url, sim, events, dialer) as fl:
        yield fl


@asynccontextmanager
async def _floor(
    url: str, sim: dict[str, Any] | None, events: str, dialer: dict[str, Any]
) -> AsyncIterator[Floor]:
    engine = make_engine(url)
    pbx = PbxSimulator(sim_settings(**(sim or {})))
    await pbx.start()
    clock = VClock()
    tracker = CallTracker(server="pbx1")
    holder: dict[str, Floor] = {}

    def on_message(msg: dict[str, str], at: float) -> None:
        fl = holder["floor"]
        ev_name = msg.get("Event")
        if ev_name == "OriginateResponse":
            aid = msg.get("ActionID", "")
            fl.originate_responses[aid] = fl.originate_responses.get(aid, 0) + 1
        elif ev_name == "UserEvent":
            fl.user_events.append(dict(msg))
        for ev in tracker.feed(msg, at):
            if isinstance(ev, CallEvent):
                fl.agents.on_call_event(ev)
            fl.queue.put_nowait(ev)

    link = AmiLink(
        AmiServerSettings(
            name="pbx1",
            port=pbx.port,
            secret=SecretStr(SECRET),
            reconnect_min=0.05,
            events=events,
        ),
        on_message=on_message,
        clock=clock,
    )
    agents = AgentService(
        AgentSettings(wrap_up_seconds={"default": 3.0}), {"pbx1": link}, clock=clock
    )
    # at 20x, one real 100 ms stall of a loaded CI machine is 2 virtual seconds: the CTI's
    # fallback deadline gets a wide grace here (the dialplan's deadline stays exact)
    dialer.setdefault("abandon_grace_seconds", 10.0)
    settings = DialerSettings(
        tick_seconds=0.02,
        channel_template="PJSIP/{number}@trunk",
        **dialer,
    )
    fl = Floor(pbx, link, tracker, agents, engine, clock, settings)
    holder["floor"] = fl

    def on_change(ch: AgentStateChange) -> None:
        fl.changes.append(ch)
        fl.queue.put_nowait(ch)

    agents.subscribe(on_change)
    await link.start()
    await link.wait_connected(5.0)
    fl.tasks = [
        asyncio.create_task(fl._consume()),
        asyncio.create_task(fl._tick_agents()),
    ]
    try:
        yield fl
    finally:
        if fl.dialer is not None:
            await fl.dialer.stop()
        for t in fl.tasks:
            t.cancel()
        await asyncio.gather(*fl.tasks, return_exceptions=True)
        await link.stop()
        await pbx.stop()
        await engine.dispose()
