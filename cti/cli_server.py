"""`cti serve` (the daemon) and `cti demo` (the daemon plus the built-in PBX simulator)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import structlog

from cti.settings import Settings, with_overrides

log = structlog.get_logger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the CTI server against the configured Asterisk servers",
        description="Connect to every [[ami.servers]] entry, serve agents (websocket, REST, "
        "/agent page), supervisors (/api/stats, /metrics) and run the dialer.",
    )
    p.add_argument("--host", help="listen address (default: web.host)")
    p.add_argument("--port", type=int, help="listen port (default: web.port)")
    p.set_defaults(handler=_serve)

    p = sub.add_parser(
        "demo",
        help="run the server with the built-in PBX simulator on embedded defaults",
        description="Start the PBX simulator and the server connected to it, with a seeded "
        "SQLite CRM and demo accounts; no Asterisk needed.",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: web.port)")
    p.add_argument("--customers", type=int, default=2000, help="demo CRM size (default 2000)")
    p.add_argument(
        "--calls-per-minute", type=float, default=None, help="inbound calls the simulator offers"
    )
    p.add_argument("--duration", type=float, help="stop after this many seconds (smoke tests)")
    p.set_defaults(handler=_demo)


def _run(coro: Any) -> int:
    return asyncio.run(coro)


async def _wait_for_signal(duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    web = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    return _run(_serve_async(with_overrides(settings, {"web": web})))


async def _serve_async(settings: Settings) -> int:
    from cti.app import Daemon

    daemon = Daemon(settings)
    try:
        await daemon.start()
    except OSError as e:
        log.error("cannot start", error=str(e))
        await daemon.stop()
        return 3
    except BaseException:
        # whatever went wrong, nothing half-started may keep the process alive
        await daemon.stop()
        raise
    try:
        await _wait_for_signal(None)
    finally:
        await daemon.stop()
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    return _run(_demo_async(args, settings))


async def _demo_async(args: argparse.Namespace, settings: Settings) -> int:
    from ami.settings import AmiServerSettings
    from ami.simulator import PbxSimulator
    from cti.app import Daemon
    from cti.demo import prepare_demo_data

    web = {"host": args.host, **({"port": args.port} if args.port is not None else {})}
    sim_over: dict[str, object] = {"host": "127.0.0.1", "port": 0}
    if args.calls_per_minute is not None:
        sim_over["inbound_per_minute"] = args.calls_per_minute
    settings = with_overrides(settings, {"web": web, "simulator": sim_over})
    numbers = await prepare_demo_data(settings, customers=args.customers)
    sim_cfg = settings.simulator.model_copy(update={"caller_numbers": numbers})
    sim = PbxSimulator(sim_cfg)
    await sim.start()
    server = AmiServerSettings(
        name="simulator",
        host="127.0.0.1",
        port=sim.port,
        username=sim_cfg.username,
        secret=sim_cfg.secret,
        reconnect_min=0.2,
    )
    settings = settings.model_copy(
        update={"ami": settings.ami.model_copy(update={"servers": [server]})}
    )
    daemon = Daemon(settings)
    try:
        await daemon.start()
        link = daemon.services.links["simulator"] if daemon.services else None
        if link is not None:
            await link.wait_connected(10.0)
        from cti.demo import login_bots

        await login_bots(daemon)
        _print_banner(daemon, sim.port)
        await _wait_for_signal(args.duration)
    except OSError as e:
        log.error("cannot start", error=str(e))
        return 3
    finally:
        await daemon.stop()
        await sim.stop()
    return 0


def _print_banner(daemon: Any, pbx_port: int) -> None:
    from cti.demo import DEMO_PASSWORD

    url = daemon.url
    print(
        f"""
CTI demo is running (PBX simulator on 127.0.0.1:{pbx_port}, AMI user 'cti').
  Agent desktop:  {url}/agent
      log in as agent1 / {DEMO_PASSWORD}, device PJSIP/1001, queues support,sales
      (agent2 and agent3 are simulated colleagues who answer by themselves)
  Supervisor:     supervisor / {DEMO_PASSWORD}   ->  {url}/api/stats/agents , {url}/metrics
  API document:   {url}/api/openapi.json
Press Ctrl-C to stop.
""",
        file=sys.stderr,
        flush=True,
    )
