"""In-process fan-out of call events from the trackers to their consumers.

`publish` is called synchronously from the AMI read path, so it must never block or await:
synchronous consumers (agent state bookkeeping, which must see an event before the pop router
does) run inline; asynchronous consumers (pops, the dialer, the CRM interaction log) each get
their own queue and task, so a slow one (a CRM write) never holds up another (a pop), and
each sees events in the order they happened.

Each consumer's queue is bounded: a consumer that stopped making progress (a hung CRM
write) must not grow memory forever. Past the bound its events are dropped, counted and
logged, and the others carry on.

At scale several daemons share agents through Redis; that backend would implement the same
`publish`/`subscribe` surface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)


#: events a consumer may have waiting; at 20k events/s that is several seconds of traffic
DEFAULT_MAX_QUEUED = 100_000


@dataclass
class _Consumer:
    name: str
    handler: Callable[[Any], Awaitable[None]]
    queue: asyncio.Queue[Any]
    task: asyncio.Task[None] | None = None
    handled: int = 0
    errors: int = 0
    dropped: int = 0


class EventBus:
    def __init__(self, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self._max_queued = max_queued
        self._sync: list[tuple[str, Callable[[Any], None]]] = []
        self._consumers: list[_Consumer] = []
        self.published = 0
        self.sync_errors = 0
        self._running = False

    def subscribe_sync(self, name: str, fn: Callable[[Any], None]) -> None:
        self._sync.append((name, fn))

    def subscribe(self, name: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        consumer = _Consumer(name, handler, asyncio.Queue(self._max_queued))
        self._consumers.append(consumer)
        if self._running:
            consumer.task = asyncio.create_task(self._drain(consumer), name=f"bus:{name}")

    def publish(self, event: Any) -> None:
        self.published += 1
        for name, fn in self._sync:
            try:
                fn(event)
            except Exception:
                self.sync_errors += 1
                log.exception(
                    "event consumer failed", consumer=name, event_type=type(event).__name__
                )
        for consumer in self._consumers:
            try:
                consumer.queue.put_nowait(event)
            except asyncio.QueueFull:
                consumer.dropped += 1
                if consumer.dropped == 1 or consumer.dropped % 10_000 == 0:
                    log.error(
                        "event consumer is stuck; dropping its events",
                        consumer=consumer.name,
                        dropped=consumer.dropped,
                    )

    def backlog(self) -> dict[str, int]:
        return {c.name: c.queue.qsize() for c in self._consumers}

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "sync_errors": self.sync_errors,
            "consumers": {
                c.name: {
                    "handled": c.handled,
                    "errors": c.errors,
                    "queued": c.queue.qsize(),
                    "dropped": c.dropped,
                }
                for c in self._consumers
            },
        }

    async def start(self) -> None:
        self._running = True
        for c in self._consumers:
            if c.task is None:
                c.task = asyncio.create_task(self._drain(c), name=f"bus:{c.name}")

    async def drain(self) -> None:
        """Wait until every consumer has handled what was published so far (tests, shutdown);
        callers bound it with `asyncio.timeout`."""
        for c in self._consumers:
            await c.queue.join()

    async def stop(self) -> None:
        self._running = False
        tasks = [c.task for c in self._consumers if c.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in self._consumers:
            c.task = None

    async def _drain(self, c: _Consumer) -> None:
        while True:
            event = await c.queue.get()
            try:
                await c.handler(event)
                c.handled += 1
            except Exception:
                c.errors += 1
                log.exception(
                    "event consumer failed", consumer=c.name, event_type=type(event).__name__
                )
            finally:
                c.queue.task_done()
