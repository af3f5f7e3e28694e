"""Composition root: builds every service from the settings, wires the data flow

    AMI link -> tracker -> bus -> (agent states, screen pops, dialer, interaction log)

and serves the web side (agent websockets, REST API, pages, /metrics, /health).

Nothing else in the code base constructs services; tests and the demo use `running_daemon`.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from ami.events import CallEvent
from ami.settings import AmiServerSettings
from cti.bus import EventBus
from cti.services import SERVICES, Services
from cti.settings import Settings, secret_value

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MIGRATIONS = [
    str(Path(__file__).resolve().parent / "migrations" / "versions"),
    str(Path(__file__).resolve().parent.parent / "dialer" / "migrations" / "versions"),
]


def version_locations() -> list[str]:
    """Alembic version directories of the packages beside the CRM's base branch."""
    return [p for p in MIGRATIONS if Path(p).is_dir()]


#: the pop router gathers the CRM writes of legs ending within this long into one transaction:
#: at 100 calls/s, ~400 transactions in 30 s instead of ~1,600, each a dozen round trips to
#: the database driver's thread on the event loop that delivers pops: the loop's CPU while
#: calls run fell from ~21 s to ~15 s of 33 (bench/pop_latency.py --write-delay-ms 0 vs the
#: default; p99 is too noisy on a shared host to tell); an agent waiting for an id skips it
POP_WRITE_DELAY_MS = 50


def _make_crm(settings: Settings, engine: Any) -> tuple[Any, Any]:
    """The adapter the services use, and the built-in store (the same object unless the
    CRM is external)."""
    from crm_bridge.store import BuiltinCrm

    local = BuiltinCrm(engine, settings.crm)
    if settings.crm.adapter == "http":
        from crm_bridge.http_adapter import HttpCrmAdapter

        # callbacks, consent and do-not-call stay in our own store: compliance must not
        # depend on an external CRM being up
        return HttpCrmAdapter(settings.crm, local=local), local
    return local, local


class Daemon:
    """A running server: services, AMI links, the web site. Start once, stop once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int = 0
        self.started_at = time.time()

    @property
    def url(self) -> str:
        return f"http://{self.settings.web.host}:{self.port}"

    async def start(self) -> None:
        from crm_bridge.db import make_engine, migrate
        from cti.accounts import AccountStore, AgentSessionStore
        from cti.agents import AgentService
        from cti.auth import TokenService
        from cti.hub import Hub
        from cti.pops import PopRouter

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        url = s.database_url()
        await migrate(url, extra_version_locations=version_locations())
        engine = make_engine(url)
        bus = EventBus()
        secret = secret_value(s.web.token_secret).encode() or secrets.token_bytes(32)
        tokens = TokenService(secret, s.web.access_token_seconds, s.web.refresh_token_seconds)
        links: dict[str, Any] = {}
        agents = AgentService(s.agents, links, sessions=AgentSessionStore(engine))
        crm, local_crm = _make_crm(s, engine)
        # in the background: bringing a big CRM file into the OS cache takes seconds, and
        # lookups meanwhile run off the event loop (crm_bridge/preload.py)
        self._tasks.append(asyncio.create_task(self._warm_up(local_crm), name="crm-warm-up"))
        hub_ref: dict[str, Any] = {}

        async def snapshot(agent_id: str) -> dict[str, Any]:
            return {
                "agent": agents.view(agent_id).to_dict(),
                "calls": hub_ref["pops"].live_pops(agent_id),
            }

        hub = Hub(s.web, snapshot)
        pops = PopRouter(
            hub,
            agents,
            crm,
            deadline_ms=s.web.pop_deadline_ms,
            ivr_variables=s.crm.ivr_variables,
            write_delay_ms=POP_WRITE_DELAY_MS,
        )
        hub_ref["pops"] = pops
        services = Services(
            settings=s,
            engine=engine,
            bus=bus,
            crm=crm,
            accounts=AccountStore(engine),
            tokens=tokens,
            hub=hub,
            agents=agents,
            pops=pops,
            links=links,
        )
        self.services = services
        agents.subscribe(lambda change: self._on_agent_change(change))

        def agents_consume(ev: object) -> None:
            if isinstance(ev, CallEvent):
                agents.on_call_event(ev)

        async def pops_consume(ev: object) -> None:
            if isinstance(ev, CallEvent):
                await pops.on_call_event(ev)

        bus.subscribe_sync("agents", agents_consume)
        bus.subscribe("pops", pops_consume)
        if s.dialer.enabled:
            self._make_dialer(services)
        await bus.start()

        for server in s.ami.servers:
            self._add_server(services, server)
        # logins of the previous process, once the links exist but before any AMI event: the
        # first QueueStatus of each link reconciles them with what Asterisk still has
        await agents.restore()
        for link in links.values():
            await link.start()
        self._tasks.append(asyncio.create_task(self._links_up(services), name="links-up"))

        self.app = self._make_web_app(services)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.web.host, s.web.port)
        await site.start()
        listener: Any = site._server
        if listener is not None and getattr(listener, "sockets", None):
            self.port = listener.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._tick(), name="agents-tick"))
        # What start-up built lives as long as the process; moving it out of the collector's
        # view keeps full collections short (they were the long tail of pop latency).
        gc.collect()
        gc.freeze()
        # Full passes rare: with the defaults, calls at 100/s set off 175-295 ms of them. Young
        # passes small: nearly every object a call makes outlives a gen-0 pass (it lives as
        # long as the call), so a gen-1 pass walks the survivors of `threshold1` gen-0 passes;
        # at 100 calls/s, (700, 10) made gen-1 passes of ~14 ms CPU (up to 24), (400, 2) of
        # ~2 ms (up to 4-10), for no more GC time in all (bench/pop_latency.py --gc-threshold
        # and --dump); full passes stay about as rare: 5000 gen-1 passes apart.
        gc.set_threshold(400, 2, 5000)
        log.info("cti server listening", url=self.url, ami_servers=[x.name for x in s.ami.servers])

    @staticmethod
    async def _warm_up(crm: Any) -> None:
        try:
            await crm.warm_up()
        except Exception:  # a cold cache is slower, not broken: the daemon serves anyway
            log.exception("crm warm-up failed")

    def _make_dialer(self, services: Services) -> None:
        from dialer.engine import Dialer

        links = services.links
        default = self.settings.ami.servers[0].name

        async def originate(server: str, action: Any) -> Any:
            link = links.get(server or default)
            if link is None:
                raise LookupError(f"no Asterisk server named {server!r}")
            return await link.send(action)

        def channel_of(server: str, call_id: str) -> str | None:
            """The caller channel of a live call (the dialer redirects it to safe harbor)."""
            tracker = services.trackers.get(server or default)
            return None if tracker is None else tracker.caller_channel(call_id)

        def agents_of_queue(queue: str) -> list[tuple[Any, float]]:
            return [(v.status, v.since) for v in services.agents.views() if queue in v.queues]

        dialer = Dialer(
            services.engine,
            self.settings.dialer,
            originate=originate,
            agents_of_queue=agents_of_queue,
            notify=services.hub.send,
            may_contact=services.crm.may_contact,
            default_server=default,
            agent_view=services.agents.view,
            agent_views=services.agents.views,
            channel_of=channel_of,
        )
        services.dialer = dialer
        services.bus.subscribe("dialer", dialer.on_event)

    async def _links_up(self, services: Services) -> None:
        """Once the AMI links are up (their first QueueStatus has reconciled the restored
        logins): log out the restored agents whose account was disabled meanwhile, then start
        pacing, so that attempts left in flight by a previous process are reconciled against
        the PBX's live calls, and no disabled agent is counted as ready."""
        for link in services.links.values():
            await link.wait_connected(30.0)
        await self._logout_disabled(services)
        if services.dialer is not None:
            live = {c.call_id for t in services.trackers.values() for c in t.live_calls()}
            await services.dialer.start(live)

    @staticmethod
    async def _logout_disabled(services: Services) -> None:
        accounts = services.accounts
        if accounts is None:
            return
        for agent_id in services.agents.logged_in():
            try:
                view = await accounts.get(agent_id)
                if view is not None and view.disabled:
                    log.warning("restored login of a disabled account logged out", agent=agent_id)
                    await services.agents.logout(agent_id)
            except Exception:  # the PBX or the database: the agent stays, it is logged
                log.exception("logging out a disabled account failed", agent=agent_id)

    def _on_agent_change(self, change: Any) -> None:
        services = self.services
        if services is None:
            return
        services.hub.send(change.agent, "agent.state", change.to_dict())
        services.bus.publish(change)

    def _add_server(self, services: Services, server: AmiServerSettings) -> None:
        from ami.connection import AmiLink
        from ami.tracker import CallTracker

        tracker = CallTracker(self.settings.ami.tracker.local_endpoints, server=server.name)
        bus = services.bus
        feed = tracker.feed
        publish = bus.publish

        def on_message(msg: dict[str, str], at: float) -> None:
            for ev in feed(msg, at):
                publish(ev)

        def on_resync(r: Any) -> None:
            for ev in tracker.resync(r.channels, r.at):
                publish(ev)
            services.agents.apply_queue_status(r.queue_members, server=server.name)

        # the link logs its own state changes (once each); nothing to add here
        link = AmiLink(server, on_message=on_message, on_resync=on_resync, events=tracker.events)
        services.links[server.name] = link
        services.trackers[server.name] = tracker

    def _make_web_app(self, services: Services) -> web.Application:
        from cti import api
        from cti.auth import auth_middleware
        from cti.ws import ws_handler

        app = web.Application(
            middlewares=[auth_middleware(services.tokens)],
            client_max_size=1024 * 1024,
        )
        app[SERVICES] = services
        app.router.add_get("/ws", ws_handler)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        api.setup(app)
        if STATIC_DIR.is_dir():
            app.router.add_get("/", _redirect_to_agent)
            app.router.add_get("/agent", _agent_page)
            app.router.add_static("/static/", STATIC_DIR)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        services = request.app[SERVICES]
        links = {name: link.connected for name, link in services.links.items()}
        ok = all(links.values()) if links else True
        return web.json_response(
            {"status": "ok" if ok else "degraded", "ami": links}, status=200 if ok else 503
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        from cti.metrics import render_metrics

        return web.Response(
            text=render_metrics(request.app[SERVICES]),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def _tick(self) -> None:
        """Once a second: wrap-up timers, and originate results the tracker holds back for
        evidence (a failed Originate on a quiet link must still be reported)."""
        while True:
            await asyncio.sleep(1.0)
            services = self.services
            if services is None:
                continue
            now = time.time()
            try:
                services.agents.tick(now)
                for tracker in services.trackers.values():
                    for ev in tracker.expire(now):
                        services.bus.publish(ev)
            except Exception:
                log.exception("tick failed")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        services = self.services
        if services is not None:
            if services.dialer is not None:
                await services.dialer.stop()
            for link in services.links.values():
                await link.stop()
            await services.hub.close_all()
            await services.bus.stop()
            # a session change from the last reconcile may still be on its way to the store
            await services.agents.flush_sessions()
        if self._runner is not None:
            await self._runner.cleanup()
        if services is not None:
            close = getattr(services.crm, "close", None)
            if close is not None:
                await close()
            await services.engine.dispose()
        log.info("cti server stopped")


async def _redirect_to_agent(request: web.Request) -> web.Response:
    raise web.HTTPFound("/agent")


async def _agent_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "agent.html")


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    """Start a daemon (tests: web.port = 0 for an ephemeral port) and stop it afterwards."""
    daemon = Daemon(settings)
    try:
        await daemon.start()
        yield daemon
    finally:
        await daemon.stop()
