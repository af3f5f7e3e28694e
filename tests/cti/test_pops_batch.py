"""The pop router's CRM writes: every leg with something to record goes out in one batch per
round (legs that end together share a transaction), a leg marked twice is written once with
its latest state, a leg's first record precedes its updates, whoever waits for an interaction
id gets it without the batching delay, and one bad record loses only itself."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from ami.events import Hangup, Party, Ringing, Up
from crm_bridge.adapter import CrmUnavailable, InteractionRecord, ValidationFailed
from cti.pops import PopRouter
from tests.cti.test_pops import Crm, Devices, RecordingHub

CALLER = Party("PJSIP/trunk-00000001", "1.1", "1.1", "+4930123456", "Erika")
AGENTS = {f"PJSIP/10{i:02d}": f"agent{i}" for i in range(8)}


def agent_party(i: int, call: int) -> Party:
    return Party(f"PJSIP/10{i:02d}-0000{call:04d}", f"2.{call}", f"1.{call}", "+4930123456")


class BatchCrm(Crm):
    """Records every batch; a record whose call id starts with "bad" is refused (the whole
    batch, as the built-in store does, and alone when written one by one)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[InteractionRecord]] = []

    async def record_interactions(self, recs: Sequence[InteractionRecord]) -> list[str]:
        self.batches.append(list(recs))
        if any(r.call_id.startswith("bad") for r in recs):
            raise ValidationFailed("call_id", "refused")
        self.records.extend(recs)
        return [f"i-{r.call_id}-{r.leg}" for r in recs]

    async def record_interaction(self, rec: InteractionRecord) -> str:
        if rec.call_id.startswith("bad"):
            raise ValidationFailed("call_id", "refused")
        return await super().record_interaction(rec)


def make(crm: BatchCrm, write_delay_ms: int) -> PopRouter:
    return PopRouter(RecordingHub(), Devices(AGENTS), crm, write_delay_ms=write_delay_ms)


async def answer(router: PopRouter, call_id: str, i: int, call: int) -> None:
    target = agent_party(i, call)
    await router.on_call_event(
        Ringing(call_id=call_id, at=100.0, caller=CALLER, targets=(target,), queue="q")
    )
    await asyncio.sleep(0.005)  # the lookup answers, the pop goes out
    await router.on_call_event(Up(call_id=call_id, at=101.0, caller=CALLER, callee=target))


async def hang_up(router: PopRouter, call_id: str) -> None:
    await router.on_call_event(
        Hangup(call_id=call_id, at=110.0, caller=CALLER, reason="completed", cause=16)
    )


async def test_legs_ending_together_are_one_batch_each_written_once_with_its_end() -> None:
    crm = BatchCrm()
    router = make(crm, write_delay_ms=50)
    for i in range(5):
        await answer(router, f"c{i}", i, i)
    await asyncio.sleep(0.01)
    for i in range(5):
        await hang_up(router, f"c{i}")
    await asyncio.sleep(0.2)  # past the batching delay, without drain() cutting it short
    assert [len(b) for b in crm.batches] == [5]
    assert sorted((r.call_id, r.outcome) for r in crm.records) == [
        (f"c{i}", "completed") for i in range(5)
    ]
    assert all(r.ended_at is not None and r.answered_at is not None for r in crm.records)
    assert router.stats()["crm_write_batches"] == 1
    assert router.stats()["crm_writes_queued"] == 0


async def test_a_note_gets_its_id_at_once_and_the_end_follows_as_an_update() -> None:
    crm = BatchCrm()
    router = make(crm, write_delay_ms=10_000)  # a delay no test would wait for
    await answer(router, "n1", 1, 1)
    await asyncio.wait_for(router.add_note("n1", "agent1", "called about the bill"), 2.0)
    assert [(r.leg, r.outcome) for r in crm.records] == [("agent1", "")]
    assert crm.updates[0][0] == "i-n1-agent1"
    await hang_up(router, "n1")
    await asyncio.wait_for(router.drain(), 2.0)  # drain does not wait for the delay either
    assert [(r.leg, r.outcome, r.ended_at is not None) for r in crm.records] == [
        ("agent1", "", False),
        ("agent1", "completed", True),
    ]


async def test_a_leg_ended_before_its_first_write_is_written_once() -> None:
    crm = BatchCrm()
    router = make(crm, write_delay_ms=10_000)
    await answer(router, "e1", 2, 2)
    # the agent asks for the interaction (its first write is queued), then the call ends
    # before the writer ran: one record carries both
    waiting = asyncio.ensure_future(router.interaction_id("e1", "agent2"))
    await hang_up(router, "e1")
    assert await asyncio.wait_for(waiting, 2.0) == "i-e1-agent2"
    await router.drain()
    assert [(r.leg, r.outcome) for r in crm.records] == [("agent2", "completed")]


async def test_one_bad_record_loses_only_itself() -> None:
    crm = BatchCrm()
    router = make(crm, write_delay_ms=50)
    await answer(router, "ok1", 1, 1)
    await answer(router, "bad1", 2, 2)
    await answer(router, "ok2", 3, 3)
    for call_id in ("ok1", "bad1", "ok2"):
        await hang_up(router, call_id)
    await router.drain()
    assert len(crm.batches) == 1 and len(crm.batches[0]) == 3  # tried together first
    assert sorted(r.call_id for r in crm.records) == ["ok1", "ok2"]
    with pytest.raises(CrmUnavailable):
        await router.add_note("bad1", "agent2", "lost")
    assert await router.interaction_id("ok2", "agent3") == "i-ok2-agent3"


async def test_a_crm_without_batches_is_written_record_by_record() -> None:
    crm = Crm()  # only record_interaction
    router = PopRouter(RecordingHub(), Devices(AGENTS), crm, write_delay_ms=20)
    for i in range(3):
        await answer(router, f"s{i}", i, i)
    for i in range(3):
        await hang_up(router, f"s{i}")
    await router.drain()
    assert sorted((r.call_id, r.outcome) for r in crm.records) == [
        (f"s{i}", "completed") for i in range(3)
    ]
