"""Screen-pop latency benchmark (issue 4).

Three processes, so that nothing measured shares an event loop with what measures it:

* the PBX simulator (`ami.simulator.PbxSimulator`) over TCP, offering new inbound calls at a
  fixed rate to queues of agents; its `on_agent_ringing` hook records when each ringing
  event has been written to the CTI's socket (`time.monotonic()`);
* the CTI daemon under test (`cti.app.running_daemon`, this process): a SQLite CRM seeded with
  the customers (`crm_bridge.seed`, cached between runs), the AMI link to the simulator, the
  tracker, the pop router with the real CRM lookup, the hub and the websockets;
* the agents' clients: one asyncio loop holding every websocket; each records when a `pop`
  arrives (`time.monotonic()`, the same clock across processes on Linux) and acknowledges.

Latency = pop arrival at the agent's client - ringing event leaving the simulator, joined on
(call id, agent device). Memory per agent = the daemon's RSS growth from before the agents
logged in and connected to after, divided by the number of agents.

Usage: python bench/pop_latency.py [--agents 2000] [--customers 1000000] [--rate 100]
       [--seconds 30] [--quick] [--data-dir DIR]
The last line printed is JSON with pop_p50_ms, pop_p99_ms, pop_max_ms, agents, calls_per_s,
customers, kib_per_agent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

QUEUE_SIZE = 100  # agents per queue
SIM_SECRET = "bench-secret"


def _nofile(n: int = 16384) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard) if hard != resource.RLIM_INFINITY else n
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _reset_run_state(db: Path) -> None:
    """Every run starts from the seeded CRM with every agent logged out.

    * Calls come from a fixed pool of 5,000 numbers, and each run records ~2,700 legs: runs
      on a reused CRM would give those customers more and more history, so that each card
      would cost more to build than in the run before (the seed's own past interactions,
      call ids ``seed...``, stay; the audit log is append-only and keeps its entries).
    * Logins survive a daemon restart (the sessions table), and a run ends with its agents
      logged in: the next run's daemon would restore them, then log them all out when the
      fresh simulator reports no queue members.
    """
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "cti_agent_sessions" in tables:
            conn.execute("DELETE FROM cti_agent_sessions")
        if "crm_interaction" in tables:
            conn.execute("DELETE FROM crm_interaction WHERE call_id NOT LIKE 'seed%'")
        conn.commit()
    finally:
        conn.close()


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# --------------------------------------------------------------------------- simulator process


def sim_process(conn: Any, queues: list[str], talk: tuple[float, float]) -> None:
    from cti.logs import configure_logging

    configure_logging("warning", "json")
    asyncio.run(_sim(conn, queues, talk))


async def _sim(conn: Any, queues: list[str], talk: tuple[float, float]) -> None:
    from pydantic import SecretStr

    from ami.settings import SimulatorSettings
    from ami.simulator import PbxSimulator

    sim = PbxSimulator(
        SimulatorSettings(
            port=0,
            secret=SecretStr(SIM_SECRET),
            inbound_per_minute=0,
            queues=queues,
            agent_answer_after=0.8,
            talk_min=talk[0],
            talk_max=talk[1],
            ring_timeout=10,
            patience=120,
            ivr_delay=0.0,
        )
    )
    rings: list[tuple[str, str, float]] = []
    mono = time.monotonic
    sim.on_agent_ringing = lambda lid, dev: rings.append((lid, dev, mono()))
    await sim.start()
    loop = asyncio.get_running_loop()
    conn.send(sim.port)
    _cmd, rate, seconds, numbers = await loop.run_in_executor(None, conn.recv)
    rnd = random.Random(7)
    t0 = mono()
    offered = 0
    nq = len(queues)
    while True:
        elapsed = mono() - t0
        if elapsed >= seconds:
            break
        due = int(elapsed * rate)
        while offered < due:
            sim.inbound_call(numbers[rnd.randrange(len(numbers))], queue=queues[offered % nq])
            offered += 1
        await asyncio.sleep(0.002)
    conn.send((offered, mono() - t0))
    await loop.run_in_executor(None, conn.recv)  # "report"
    conn.send(rings)
    await loop.run_in_executor(None, conn.recv)  # "stop"
    await sim.stop()


# --------------------------------------------------------------------------- clients process


def client_process(conn: Any, url: str, agents: list[tuple[str, str, str]]) -> None:
    _nofile()
    asyncio.run(_clients(conn, url, agents))


async def _clients(conn: Any, url: str, agents: list[tuple[str, str, str]]) -> None:
    import aiohttp

    mono = time.monotonic
    loads = json.loads
    pops: list[tuple[str, str, float]] = []
    other = {"messages": 0, "closed": 0, "errors": 0}
    connected = 0
    all_up = asyncio.Event()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    gate = asyncio.Semaphore(64)

    async def one(token: str, device: str) -> None:
        nonlocal connected
        try:
            async with gate:
                ws = await session.ws_connect(url + "/ws", max_msg_size=0, autoping=True)
                await ws.send_str(json.dumps({"type": "auth", "token": token}))
                first = await ws.receive(timeout=30)
                if first.type is not aiohttp.WSMsgType.TEXT or '"hello"' not in first.data:
                    raise RuntimeError(f"no hello: {first.data!r}")
            connected += 1
            if connected == len(agents):
                all_up.set()
            unacked = 0
            async for msg in ws:
                t = mono()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                other["messages"] += 1
                data = msg.data
                is_pop = data.startswith('{"type":"pop"')
                m = loads(data)
                if is_pop:
                    pops.append((m["data"]["call_id"], device, t))
                seq = m.get("seq")
                if seq is not None:
                    # acks are cumulative: one per pop or per 20 messages is enough
                    unacked += 1
                    if is_pop or unacked >= 20:
                        unacked = 0
                        await ws.send_str(f'{{"type":"ack","seq":{seq}}}')
            other["closed"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:
            other["errors"] += 1
            if connected + other["errors"] >= len(agents):
                all_up.set()
            if other["errors"] <= 3:
                print(f"client error: {type(e).__name__}: {e}", file=sys.stderr)

    tasks = [asyncio.create_task(one(tok, dev)) for _aid, tok, dev in agents]
    try:
        await asyncio.wait_for(all_up.wait(), 120)
    except TimeoutError:
        pass
    conn.send(("connected", connected))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "stop"
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    conn.send((pops, other))


# --------------------------------------------------------------------------- the daemon side


def _migration_dirs() -> list[str]:
    from cti.app import MIGRATIONS

    return [p for p in MIGRATIONS if os.path.isdir(p)]


async def ensure_seeded(data_dir: Path, customers: int) -> float:
    from sqlalchemy import func, select

    from crm_bridge.db import make_engine, migrate
    from crm_bridge.models import Customer
    from crm_bridge.seed import seed_database

    url = f"sqlite+aiosqlite:///{data_dir / 'cti.db'}"
    # the daemon's full schema (CRM, accounts, dialer), as `cti serve` would migrate it
    await migrate(url, extra_version_locations=_migration_dirs())
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            have = (await conn.execute(select(func.count()).select_from(Customer))).scalar() or 0
        if have == customers:
            return 0.0
        if have:
            raise SystemExit(f"{data_dir} holds {have} customers, not {customers}: use another")
        res = await seed_database(engine, customers, progress=sys.stderr.isatty())
        return res.seconds
    finally:
        await engine.dispose()


async def ensure_accounts(engine: Any, n: int) -> None:
    """The agents' accounts, written in one go with one shared password hash: creating 2,000
    accounts one by one would spend minutes in argon2, which is not what is measured here."""
    import sqlalchemy as sa

    from cti.accounts import accounts_table
    from cti.auth import hash_password

    async with engine.begin() as conn:
        have = set((await conn.execute(sa.select(accounts_table.c.agent_id))).scalars().all())
        hashed = hash_password("bench password")
        now = time.time()
        rows = [
            {
                "agent_id": f"bench{i:05d}",
                "username": f"bench{i:05d}",
                "password_hash": hashed,
                "role": "agent",
                "display_name": f"Agent {i}",
                "disabled": False,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
            if f"bench{i:05d}" not in have
        ]
        if rows:
            await conn.execute(accounts_table.insert(), rows)


def _slowest_overlaps(
    pops: list[tuple[str, str, float]],
    ring_at: dict[tuple[str, str], float],
    limit_ms: float,
    busy: list[tuple[str, float, float]],
) -> dict[str, int]:
    """How many of the pops slower than `limit_ms` were in flight while a GC pass, a CRM
    write transaction or a slow lookup ran (a pop may count under several)."""
    slow = [
        (t0, t)
        for call_id, dev, t in pops
        if (t0 := ring_at.get((call_id, dev))) is not None and (t - t0) * 1000 > limit_ms
    ]
    out: dict[str, int] = {"pops": len(slow)}
    for what in sorted({w.split(":")[0].rstrip("012") for w, _s, _e in busy}):
        spans = [(s, e) for w, s, e in busy if w.startswith(what)]
        out[what] = sum(1 for t0, t in slow if any(s < t and e > t0 for s, e in spans))
    return out


async def _legs_written(engine: Any, since: datetime) -> int:
    """Interactions the run wrote (the check that batching the writes lost none)."""
    import sqlalchemy as sa

    from crm_bridge.models import interaction_t

    async with engine.connect() as conn:
        q = sa.select(sa.func.count()).where(interaction_t.c.created_at >= since)
        return int((await conn.execute(q)).scalar_one())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from crm_bridge.seed import seeded_number
    from cti.app import running_daemon
    from cti.auth import Principal
    from cti.logs import configure_logging
    from cti.settings import load_settings

    configure_logging("warning", "json")
    _nofile()
    default_dir = Path(tempfile.gettempdir()) / f"cti-bench-pop-{args.customers}"
    data_dir = Path(args.data_dir) if args.data_dir else default_dir
    os.makedirs(data_dir, exist_ok=True)
    t = time.perf_counter()
    seed_s = await ensure_seeded(data_dir, args.customers)
    how = f"seeded in {seed_s:.1f} s" if seed_s else "cached"
    print(f"customers: {args.customers} ({how}, {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    _reset_run_state(data_dir / "cti.db")

    nq = max(1, (args.agents + QUEUE_SIZE - 1) // QUEUE_SIZE)
    queues = [f"q{i:02d}" for i in range(nq)]
    ctx = mp.get_context("spawn")
    sim_conn, sim_child = ctx.Pipe()
    sim = ctx.Process(
        target=sim_process, args=(sim_child, queues, (args.talk_min, args.talk_max)), daemon=True
    )
    sim.start()
    sim_port = sim_conn.recv()

    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(data_dir),
            "log": {"level": "warning", "format": "json"},
            "web": {
                "port": 0,
                "token_secret": "b" * 40,
                "ws_heartbeat_seconds": 0,
                "pop_deadline_ms": args.deadline_ms,
            },
            "ami": {
                "servers": [
                    {
                        "name": "pbx1",
                        "host": "127.0.0.1",
                        "port": sim_port,
                        "username": "cti",
                        "secret": SIM_SECRET,
                        "action_timeout": 30,
                    }
                ]
            },
            "dialer": {"enabled": False},
            "agents": {"wrap_up_seconds": {"default": 0.0}},
        },
    )
    rnd = random.Random(11)
    numbers = [seeded_number(rnd.randrange(args.customers)) for _ in range(5000)]
    out: dict[str, Any] = {}
    async with running_daemon(settings) as daemon:
        svc = daemon.services
        assert svc is not None
        for link in svc.links.values():
            if not await link.wait_connected(15):
                raise SystemExit("the daemon could not connect to the simulator")
        identified = {"n": 0, "one": 0}
        real_identify = svc.crm.identify

        lookup_ms: list[float] = []
        gc_pauses: list[tuple[int, float]] = []
        gc_start = [0.0, 0.0]
        #: (what, start, end) on the monotonic clock: GC passes and CRM write transactions, to
        #: tell what the slowest pops waited behind
        busy: list[tuple[str, float, float]] = []

        def gc_watch(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                gc_start[0] = time.perf_counter()
                gc_start[1] = time.thread_time()
            else:
                ms = (time.perf_counter() - gc_start[0]) * 1000
                cpu = (time.thread_time() - gc_start[1]) * 1000
                gc_pauses.append((info["generation"], ms))
                end = time.monotonic()
                # wall time and the thread's CPU time in it (less: preempted meanwhile)
                busy.append((f"gc{info['generation']}:cpu={cpu:.1f}", end - ms / 1000, end))

        gc.callbacks.append(gc_watch)

        async def counting_identify(who: Any) -> Any:
            t0 = time.perf_counter()
            m0 = time.monotonic()
            res = await real_identify(who)
            lookup_ms.append((time.perf_counter() - t0) * 1000)
            if lookup_ms[-1] > 5:
                busy.append(("lookup", m0, time.monotonic()))
            identified["n"] += 1
            identified["one"] += res.status == "one"
            return res

        svc.crm.identify = counting_identify  # type: ignore[method-assign]
        if args.write_delay_ms is not None:
            svc.pops.write_delay = args.write_delay_ms / 1000.0
        if args.switch_interval_ms is not None:
            sys.setswitchinterval(args.switch_interval_ms / 1000.0)
        real_many = getattr(svc.crm, "record_interactions", None)
        if real_many is not None and not args.no_crm_writes:

            async def timed_many(recs: Any) -> Any:
                t0 = time.monotonic()
                try:
                    return await real_many(recs)
                finally:
                    busy.append(("crm-write", t0, time.monotonic()))

            svc.crm.record_interactions = timed_many  # type: ignore[method-assign]
        if args.no_crm_writes:  # diagnosis: how much of the tail the interaction writes cause

            async def no_write(*_a: Any, **_k: Any) -> None:
                return None

            async def no_writes(recs: Any) -> list[None]:
                return [None] * len(recs)

            svc.crm.record_interaction = no_write  # type: ignore[method-assign,assignment]
            svc.crm.record_interactions = no_writes  # type: ignore[method-assign,assignment]
        # when the router hands each pop to the hub: splits the latency into the daemon's part
        # (AMI in, tracker, CRM lookup, routing) and the delivery (websocket, client)
        handed: dict[tuple[str, str], float] = {}
        real_send = svc.hub.send
        mono = time.monotonic

        def timed_send(agent_id: str, type: str, payload: dict[str, Any]) -> int:
            if type == "pop":
                handed[(payload["call_id"], agent_id)] = mono()
            return real_send(agent_id, type, payload)

        svc.hub.send = timed_send  # type: ignore[method-assign]
        await asyncio.sleep(0.5)
        rss0 = _rss_kib()
        t = time.perf_counter()
        agents: list[tuple[str, str, str]] = []
        sem = asyncio.Semaphore(32)

        async def login(i: int) -> None:
            agent_id = f"bench{i:05d}"
            device = f"PJSIP/{20000 + i}"
            async with sem:
                await svc.agents.login(
                    agent_id, name=f"Agent {i}", device=device, queues=[queues[i // QUEUE_SIZE]]
                )
            token = svc.tokens.issue(Principal(agent_id, agent_id, "agent"))["access_token"]
            agents.append((agent_id, token, device))

        await ensure_accounts(svc.engine, args.agents)
        await asyncio.gather(*(login(i) for i in range(args.agents)))
        login_s = time.perf_counter() - t
        cl_conn, cl_child = ctx.Pipe()
        clients = ctx.Process(
            target=client_process, args=(cl_child, daemon.url, agents), daemon=True
        )
        clients.start()
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        _tag, connected = await loop.run_in_executor(None, cl_conn.recv)
        connect_s = time.perf_counter() - t
        await asyncio.sleep(1.0)
        rss1 = _rss_kib()
        print(
            f"agents: {len(agents)} logged in ({login_s:.1f} s), {connected} websockets "
            f"({connect_s:.1f} s), RSS {rss0 // 1024} -> {rss1 // 1024} MiB",
            file=sys.stderr,
        )

        if args.gc_threshold:
            gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
        if args.gc_freeze:
            gc.collect()
            gc.freeze()  # what a daemon could do once started: old objects leave GC passes
        gc_pauses.clear()  # only the pauses while calls are offered count
        busy.clear()
        started_wall = datetime.now(UTC)
        # CPU seconds while calls run: the event loop's thread (this one) and the process
        loop_cpu0, proc_cpu0 = time.thread_time(), time.process_time()
        sim_conn.send(("go", args.rate, args.seconds, numbers))
        offered, gen_s = await loop.run_in_executor(None, sim_conn.recv)
        await asyncio.sleep(args.grace)
        loop_cpu = time.thread_time() - loop_cpu0
        proc_cpu = time.process_time() - proc_cpu0
        sim_conn.send("report")
        rings = await loop.run_in_executor(None, sim_conn.recv)
        cl_conn.send("stop")
        pops, client_stats = await loop.run_in_executor(None, cl_conn.recv)
        rss2 = _rss_kib()
        if args.gc_report:
            objs = gc.get_objects()
            top = Counter(type(o).__name__ for o in objs).most_common(12)
            print(f"GC-tracked objects in the daemon: {len(objs):,}: {top}", file=sys.stderr)
            where = Counter(
                f"{o.tb_frame.f_code.co_filename.rsplit('/', 2)[-1]}:{o.tb_frame.f_code.co_name}"
                for o in objs
                if type(o).__name__ == "traceback"
            ).most_common(6)
            print(f"  tracebacks kept alive, by frame: {where}", file=sys.stderr)
            del objs
        sim_conn.send("stop")
        hub_stats = svc.hub.stats.to_dict()
        await svc.pops.drain()
        legs_written = await _legs_written(svc.engine, started_wall)
        pop_stats = svc.pops.stats()
    sim.join(10)
    clients.join(10)

    ring_at = {(lid, dev): t for lid, dev, t in rings}
    agent_of = {dev: aid for aid, _tok, dev in agents}
    latencies = []
    inside = []
    for call_id, dev, t in pops:
        t0 = ring_at.get((call_id, dev))
        if t0 is not None:
            latencies.append((t - t0) * 1000.0)
            th = handed.get((call_id, agent_of[dev]))
            if th is not None:
                inside.append((th - t0) * 1000.0)
    if not latencies:
        raise SystemExit("no pop could be matched to a ringing event")
    slow_with = _slowest_overlaps(pops, ring_at, _pct(latencies, 99), busy)
    if args.dump:
        lines = []
        for call_id, dev, t in sorted(pops, key=lambda x: x[2]):
            t0 = ring_at.get((call_id, dev))
            th = handed.get((call_id, agent_of[dev]))
            if t0 is not None:
                inner = ((th or t0) - t0) * 1000
                lines.append(f"{t0:.6f} {(t - t0) * 1000:.3f} {inner:.3f} {call_id} {dev}\n")
        lines.extend(f"{s:.6f} {(e - s) * 1000:.3f} {what}\n" for what, s, e in busy)
        await asyncio.to_thread(Path(args.dump).write_text, "".join(lines))
    out = {
        "offered": offered,
        "rings": len(rings),
        "pops": len(pops),
        "matched": len(latencies),
        "degraded": pop_stats.get("degraded_pops", 0),
        "crm_write_batches": pop_stats.get("crm_write_batches", 0),
        "loop_cpu_s": round(loop_cpu, 2),
        "process_cpu_s": round(proc_cpu, 2),
        "crm_legs_written": legs_written,
        "identified": identified["n"],
        "identified_one": identified["one"],
        "hub_dropped_slow": hub_stats.get("dropped_slow", 0) + hub_stats.get("dropped_unacked", 0),
        "client_messages": client_stats["messages"],
        "client_errors": client_stats["errors"],
        "rss_before_mib": rss0 / 1024,
        "rss_connected_mib": rss1 / 1024,
        "rss_after_mib": rss2 / 1024,
        "gc_max_ms": max((ms for _g, ms in gc_pauses), default=0.0),
        "gc_gen2": sum(1 for g, _ms in gc_pauses if g == 2),
        "gc_gen2_max_ms": max((ms for g, ms in gc_pauses if g == 2), default=0.0),
        "gc_young_max_ms": max((ms for g, ms in gc_pauses if g < 2), default=0.0),
        "gc_count": len(gc_pauses),
        "slow_pops": slow_with.pop("pops"),
        "slow_overlaps": slow_with,
        "lookup_p50_ms": _pct(lookup_ms, 50) if lookup_ms else 0.0,
        "lookup_p99_ms": _pct(lookup_ms, 99) if lookup_ms else 0.0,
        "daemon_p50_ms": _pct(inside, 50) if inside else 0.0,
        "daemon_p99_ms": _pct(inside, 99) if inside else 0.0,
        "pop_p50_ms": round(_pct(latencies, 50), 3),
        "pop_p99_ms": round(_pct(latencies, 99), 3),
        "pop_max_ms": round(max(latencies), 3),
        "agents": connected,
        "calls_per_s": round(offered / gen_s, 1),
        "customers": args.customers,
        "kib_per_agent": round((rss1 - rss0) / max(1, connected), 1),
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=2000)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=100.0, help="new calls per second")
    p.add_argument("--seconds", type=float, default=30.0, help="how long calls are offered")
    p.add_argument("--grace", type=float, default=3.0, help="seconds to wait for the last pops")
    p.add_argument("--talk-min", type=float, default=3.0)
    p.add_argument("--talk-max", type=float, default=8.0)
    p.add_argument("--deadline-ms", type=int, default=150)
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() the daemon once started")
    p.add_argument(
        "--gc-threshold",
        metavar="G0,G1,G2",
        help="gc.set_threshold() in the daemon once started (default: Python's 700,10,10)",
    )
    p.add_argument(
        "--no-crm-writes",
        action="store_true",
        help="diagnosis only: the interaction writes do nothing (their share of the tail)",
    )
    p.add_argument(
        "--write-delay-ms",
        type=int,
        help="how long the CRM writer gathers legs into one transaction (default: the daemon's)",
    )
    p.add_argument(
        "--switch-interval-ms",
        type=float,
        help="sys.setswitchinterval() in the daemon (how long the loop may wait for the GIL)",
    )
    p.add_argument("--gc-report", action="store_true", help="count the daemon's GC objects")
    p.add_argument(
        "--dump",
        metavar="FILE",
        help="write ring time and latencies per pop (then GC passes and CRM writes: start, ms)",
    )
    p.add_argument("--profile", metavar="FILE", help="cProfile the daemon's process into FILE")
    p.add_argument("--data-dir", help="where the seeded CRM is kept (reused when it matches)")
    p.add_argument(
        "--quick", action="store_true", help="200 agents, 20,000 customers, 30 calls/s for 8 s"
    )
    args = p.parse_args()
    if args.quick:
        args.agents, args.customers, args.rate, args.seconds = 200, 20_000, 30.0, 8.0
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        r = asyncio.run(run(args))
        prof.disable()
        prof.dump_stats(args.profile)
    else:
        r = asyncio.run(run(args))
    rows = [
        ("customers in the CRM", f"{r['customers']:,}"),
        ("agents connected (websockets)", f"{r['agents']:,}"),
        ("calls offered / rate", f"{r['offered']:,} / {r['calls_per_s']} per s"),
        ("ringing events (simulator)", f"{r['rings']:,}"),
        ("pops received / matched", f"{r['pops']:,} / {r['matched']:,}"),
        (
            "CRM lookups (found one) / degraded pops",
            f"{r['identified']:,} ({r['identified_one']:,}) / {r['degraded']}",
        ),
        (
            "CRM interactions written / transactions",
            f"{r['crm_legs_written']:,} / {r['crm_write_batches']:,}",
        ),
        (
            "daemon CPU while calls run: event loop / process",
            f"{r['loop_cpu_s']:.1f} / {r['process_cpu_s']:.1f} s",
        ),
        (
            "pops slower than p99: while GC / CRM write / lookup > 5 ms",
            f"{r['slow_pops']}: {r['slow_overlaps'].get('gc', 0)} / "
            f"{r['slow_overlaps'].get('crm-write', 0)} / {r['slow_overlaps'].get('lookup', 0)}",
        ),
        (
            "clients dropped as slow / client errors",
            f"{r['hub_dropped_slow']} / {r['client_errors']}",
        ),
        ("pop latency p50", f"{r['pop_p50_ms']:.2f} ms"),
        ("pop latency p99 (target <= 10 ms)", f"{r['pop_p99_ms']:.2f} ms"),
        ("pop latency max", f"{r['pop_max_ms']:.2f} ms"),
        (
            "  of which in the daemon (p50 / p99)",
            f"{r['daemon_p50_ms']:.2f} / {r['daemon_p99_ms']:.2f} ms",
        ),
        (
            "  CRM lookup (identify) p50 / p99",
            f"{r['lookup_p50_ms']:.2f} / {r['lookup_p99_ms']:.2f} ms",
        ),
        (
            "daemon GC while calls run: collections",
            f"{r['gc_count']} (full: {r['gc_gen2']})",
        ),
        (
            "  longest young (gen 0/1) / full pause",
            f"{r['gc_young_max_ms']:.1f} / {r['gc_gen2_max_ms']:.1f} ms",
        ),
        (
            "daemon RSS before / connected / after",
            f"{r['rss_before_mib']:.0f} / {r['rss_connected_mib']:.0f} / "
            f"{r['rss_after_mib']:.0f} MiB",
        ),
        ("memory per connected agent", f"{r['kib_per_agent']:.1f} KiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print("screen-pop latency: ringing event leaving the simulator -> pop at the agent's client")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    keys = (
        "pop_p50_ms",
        "pop_p99_ms",
        "pop_max_ms",
        "agents",
        "calls_per_s",
        "customers",
        "kib_per_agent",
    )
    print(json.dumps({k: r[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
