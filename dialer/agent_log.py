"""The persisted agent state log: every AgentStateChange, written in batches.

The bus hands the dialer every agent change; `record` only appends to a list (no await, no
database round trip on the hot path) and a background task writes what accumulated every
`flush_seconds` or as soon as `batch` rows are waiting. History (per agent, campaign and day)
is rebuilt from these rows with the same pure `Utilization` the live figures use, so the live
and the historical numbers cannot disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, tzinfo
from typing import Any

import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ami.events import AgentStateChange, AgentStatus
from crm_bridge.db import make_sessionmaker
from dialer.models import AgentEvent
from dialer.utilization import Utilization

log = structlog.get_logger(__name__)

#: how far before the requested range history replays events, so that an agent who logged
#: in the evening before is known to be logged in at the range's start
LOOKBACK_SECONDS = 86400.0


class AgentLog:
    def __init__(
        self, engine: AsyncEngine, *, flush_seconds: float = 1.0, batch: int = 500
    ) -> None:
        self._sessions = make_sessionmaker(engine)
        self._flush_seconds = flush_seconds
        self._batch = batch
        self._pending: list[dict[str, object]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.write_errors = 0

    def record(self, change: AgentStateChange) -> None:
        self._pending.append(
            {
                "agent": change.agent[:80],
                "status": change.status.value,
                "at": change.at,
                "reason": (change.reason or None) and change.reason[:80],
                "call_id": (change.call_id or None) and change.call_id[:200],
                "campaign": (change.campaign or None) and change.campaign[:80],
            }
        )
        if len(self._pending) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dialer-agent-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._flush_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(insert(AgentEvent), rows)
            self.written += len(rows)
        except Exception as e:
            # keep them for the next flush rather than lose utilization history
            self.write_errors += 1
            self._pending[:0] = rows
            log.error("agent log write failed", rows=len(rows), error=str(e).splitlines()[0])

    async def changes(self, since: float, until: float) -> list[AgentStateChange]:
        await self.flush()
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(AgentEvent)
                    .where(AgentEvent.at >= since, AgentEvent.at < until)
                    .order_by(AgentEvent.at, AgentEvent.id)
                )
            ).scalars()
            return [
                AgentStateChange(
                    agent=r.agent,
                    status=AgentStatus(r.status),
                    at=r.at,
                    reason=r.reason,
                    call_id=r.call_id,
                    campaign=r.campaign,
                )
                for r in rows
            ]

    async def history(
        self, since: float, until: float, tz: tzinfo = UTC
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """{agent: {day: figures}} for the days of [since, until), rebuilt from the log; an
        agent still logged in at `until` is credited up to `until`."""
        util = Utilization(tz)
        util.apply_all(await self.changes(since - LOOKBACK_SECONDS, until))
        report = util.report(until)
        first = _day(since, tz)
        last = _day(until - 1e-6, tz)
        return {
            agent: {d: f for d, f in days.items() if first <= d <= last}
            for agent, days in report.items()
            if any(first <= d <= last for d in days)
        }


def _day(t: float, tz: tzinfo) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t, tz).date().isoformat()


__all__: Sequence[str] = ["LOOKBACK_SECONDS", "AgentLog"]
