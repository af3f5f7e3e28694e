"""The persisted agent state log: batched writes off the hot path, history rebuilt from it
equal to the live figures, and sum-to-logged-in per agent and day (real SQLite file)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ami.events import AgentStateChange, AgentStatus
from crm_bridge.db import make_engine, make_sessionmaker
from dialer.agent_log import AgentLog
from dialer.models import AgentEvent
from dialer.utilization import Utilization
from tests.dialer.test_engine_env import database

T0 = datetime(2026, 11, 23, 23, 0, tzinfo=UTC).timestamp()  # the shift crosses midnight


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    async with database(tmp_path, request.param) as url:
        e = make_engine(url)
        yield e
        await e.dispose()


def shift(seed: int, agents: int = 5, n: int = 400) -> list[AgentStateChange]:
    """Random but valid state sequences: login, calls, wrap-ups, pauses, logout."""
    rng = random.Random(seed)
    out = []
    for a in range(agents):
        t = T0 + rng.uniform(0, 600)
        agent = f"agent{a}"
        out.append(AgentStateChange(agent=agent, status=AgentStatus.READY, at=t))
        for i in range(n // agents):
            t += rng.expovariate(1 / 40)
            status = rng.choice(
                [AgentStatus.RINGING, AgentStatus.ON_CALL, AgentStatus.WRAP_UP, AgentStatus.PAUSED]
            )
            out.append(
                AgentStateChange(
                    agent=agent,
                    status=status,
                    at=t,
                    reason="lunch" if status is AgentStatus.PAUSED else None,
                    call_id=f"c{a}-{i}" if status is AgentStatus.ON_CALL else None,
                    campaign="promo" if i % 2 else None,
                )
            )
            t += rng.expovariate(1 / 30)
            out.append(AgentStateChange(agent=agent, status=AgentStatus.READY, at=t))
        if a % 2:
            out.append(AgentStateChange(agent=agent, status=AgentStatus.LOGGED_OUT, at=t + 5))
    out.sort(key=lambda c: c.at)
    return out


async def test_batched_writes_and_history_equal_to_live_figures(engine: AsyncEngine) -> None:
    log = AgentLog(engine, flush_seconds=60, batch=10_000)
    live = Utilization()
    changes = shift(1)
    for c in changes:
        log.record(c)  # synchronous: no database round trip per event
        live.apply(c)
    async with make_sessionmaker(engine)() as s:
        assert (await s.execute(select(func.count()).select_from(AgentEvent))).scalar_one() == 0
    await log.flush()
    assert log.written == len(changes)
    until = changes[-1].at + 100
    hist = await log.history(T0 - 3600, until)
    report = live.report(until)
    assert set(hist) == set(report)
    days = set()
    for agent, per_day in hist.items():
        for day, fig in per_day.items():
            days.add(day)
            assert fig == report[agent][day]
            parts = fig["ready"] + fig["ringing"] + fig["on_call"] + fig["wrap_up"] + fig["paused"]
            assert fig["logged_in"] == pytest.approx(parts, abs=0.005)
            assert fig["paused"] == pytest.approx(sum(fig["paused_by_reason"].values()), abs=0.005)
    assert days == {"2026-11-23", "2026-11-24"}  # split at midnight, nothing lost
    total_live = sum(f["logged_in"] for d in report.values() for f in d.values())
    assert total_live > 5 * 3600


async def test_a_full_batch_is_written_without_waiting_for_the_timer(
    engine: AsyncEngine,
) -> None:
    log = AgentLog(engine, flush_seconds=60, batch=50)
    log.start()
    for c in shift(2, agents=2, n=60):
        log.record(c)
    import asyncio

    for _ in range(100):
        if log.written:
            break
        await asyncio.sleep(0.01)
    assert log.written >= 50  # the batch filled up: written without waiting for the timer
    await log.stop()
    async with make_sessionmaker(engine)() as s:
        n = (await s.execute(select(func.count()).select_from(AgentEvent))).scalar_one()
    assert n == log.written


async def test_a_failed_write_keeps_the_rows(tmp_path: Path) -> None:
    # a database without the table: the write fails, the rows stay queued for the next flush
    raw = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    broken = AgentLog(raw, batch=10)
    broken.record(AgentStateChange(agent="a", status=AgentStatus.READY, at=T0))
    await broken.flush()
    assert broken.write_errors == 1 and broken.written == 0
    assert len(broken._pending) == 1
    await raw.dispose()
