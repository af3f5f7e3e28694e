"""The event bus: sync consumers inline, async consumers isolated and in order."""

from __future__ import annotations

import asyncio

from cti.bus import EventBus


async def test_order_isolation_and_error_containment() -> None:
    bus = EventBus()
    seen_sync: list[int] = []
    fast: list[int] = []
    slow: list[int] = []
    bus.subscribe_sync("sync", seen_sync.append)

    async def fast_handler(ev: int) -> None:
        if ev == 3:
            raise RuntimeError("boom")
        fast.append(ev)

    async def slow_handler(ev: int) -> None:
        await asyncio.sleep(0.02)
        slow.append(ev)

    bus.subscribe("fast", fast_handler)
    bus.subscribe("slow", slow_handler)
    await bus.start()
    for i in range(6):
        bus.publish(i)
    assert seen_sync == list(range(6))  # inline, before publish returns
    await asyncio.sleep(0.01)
    assert fast == [0, 1, 2, 4, 5]  # the failing event did not stop the consumer
    assert len(slow) < 6  # the slow consumer did not hold up the fast one
    await bus.drain()
    assert slow == list(range(6))
    assert bus.stats()["consumers"]["fast"]["errors"] == 1
    await bus.stop()


async def test_a_stuck_consumer_is_bounded_and_does_not_block_the_others() -> None:
    bus = EventBus(max_queued=10)
    release = asyncio.Event()
    got: list[int] = []

    async def stuck(ev: int) -> None:
        await release.wait()

    async def healthy(ev: int) -> None:
        got.append(ev)

    bus.subscribe("stuck", stuck)
    bus.subscribe("healthy", healthy)
    await bus.start()
    for i in range(100):
        bus.publish(i)
        await asyncio.sleep(0)
    stats = bus.stats()["consumers"]
    assert got == list(range(100))
    assert stats["stuck"]["queued"] <= 10
    assert stats["stuck"]["dropped"] >= 89
    release.set()
    await bus.stop()
