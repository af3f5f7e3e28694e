"""The pop router writing through the real store (SQLite and PostgreSQL): legs that end
together are recorded in one batch, and the rows and audit entries are those of one write
per leg; a leg worked on during the call is created first and then brought up to date."""

from __future__ import annotations

import asyncio

from ami.events import Hangup, Party, Ringing, Up
from crm_bridge.store import BuiltinCrm
from cti.pops import PopRouter
from tests.cti.test_pops import Devices, RecordingHub

CALLER = Party("PJSIP/trunk-00000001", "1.1", "1.1", "+4930123456", "Erika")
AGENTS = {f"PJSIP/10{i:02d}": f"agent{i}" for i in range(4)}


async def test_router_batches_land_as_one_write_per_leg(crm: BuiltinCrm) -> None:
    router = PopRouter(RecordingHub(), Devices(AGENTS), crm, write_delay_ms=30)
    calls = [f"r.{i}" for i in range(4)]
    for i, call_id in enumerate(calls):
        target = Party(f"PJSIP/10{i:02d}-0000000{i}", f"2.{i}", call_id, "+4930123456")
        await router.on_call_event(
            Ringing(call_id=call_id, at=100.0 + i, caller=CALLER, targets=(target,), queue="q")
        )
        await asyncio.sleep(0.05)  # the lookup answers, the pop goes out
        await router.on_call_event(Up(call_id=call_id, at=101.0 + i, caller=CALLER, callee=target))
    await router.add_note("r.1", "agent1", "asked for a refund")
    for call_id in calls:
        await router.on_call_event(
            Hangup(call_id=call_id, at=130.0, caller=CALLER, reason="completed", cause=16)
        )
    await router.drain()
    assert router.stats()["crm_write_batches"] == 2  # the note's leg, then every end
    legs = [(await crm.interactions_for_call(c))[0] for c in calls]
    assert [(v.agent, v.outcome, v.number) for v in legs] == [
        (f"agent{i}", "completed", "+4930123456") for i in range(4)
    ]
    assert all(v.answered_at is not None and v.ended_at is not None for v in legs)
    assert legs[1].notes == "asked for a refund"
    trails = [
        [a.action for a in reversed(await crm.audit_log(entity="interaction", entity_id=v.id))]
        for v in legs
    ]
    assert trails == [["create"], ["create", "update", "update"], ["create"], ["create"]]
