"""Pop routing on real Asterisk 22 recordings: the shared traces go through the real call
tracker (with the lab's Local endpoints) into the router, and each agent's screen must show
what a person watching the call would expect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ami.trace import read_trace
from cti.pops import PopRouter
from tests.cti.test_pops import Crm, Devices, RecordingHub

tracker_mod = pytest.importorskip("ami.tracker")
expected = pytest.importorskip("tests.ami.expected.traces")

TRACES = Path(__file__).resolve().parent.parent / "traces"
LAB_AGENTS = {
    "Local/agent1@agents": "ann",
    "Local/agent2@agents": "bob",
    "Local/agent3@agents": "cid",
    "Local/2002@xfer": "bob",  # agent 2 reached by number for the attended transfer
}


async def replay(name: str, crm: Crm | None = None) -> tuple[PopRouter, RecordingHub, Crm]:
    hub = RecordingHub()
    crm = crm or Crm()
    router = PopRouter(
        hub, Devices(LAB_AGENTS), crm, deadline_ms=150, ivr_variables={"ACCOUNT": "account"}
    )
    tracker = tracker_mod.CallTracker(expected.LAB_ENDPOINTS)
    for t, msg in read_trace(TRACES / name):
        for ev in tracker.feed(msg, 1_800_000_000.0 + t):
            await router.on_call_event(ev)
    await asyncio.sleep(0.02)
    await router.drain()
    return router, hub, crm


async def test_01_queue_call_answered_by_agent_one() -> None:
    _router, hub, crm = await replay("01-inbound-queue-agent1-answers.ami")
    assert hub.types("ann") == ["pop", "update:answered_by_you", "update:ended"]
    pop = hub.of("ann")[0][1]
    assert pop["caller"]["number"] == "+4930123456"
    assert pop["identification"]["card"]["id"] == "c1"
    assert pop["queue"] == "support" and pop["direction"] == "inbound"
    assert hub.types("bob") == [] and hub.types("cid") == []
    assert [(r.agent, r.outcome) for r in crm.records] == [("ann", "completed")]
    assert crm.records[0].answered_at is not None and crm.records[0].ended_at is not None


async def test_02_ring_no_answer_moves_the_pop_to_agent_two() -> None:
    _router, hub, crm = await replay("02-inbound-queue-ringnoanswer-agent2-answers.ami")
    assert hub.types("ann") == ["pop", "update:ringing_ended"]
    assert hub.types("bob") == ["pop", "update:answered_by_you", "update:ended"]
    assert len(crm.identified) == 1  # one lookup for the whole call
    assert {r.agent for r in crm.records} == {"bob"}


async def test_03_abandoned_call_closes_the_ringing_pop() -> None:
    router, hub, crm = await replay("03-inbound-queue-caller-abandons.ami")
    assert hub.types("ann")[0] == "pop"
    assert hub.types("ann")[-1] in ("update:ringing_ended", "update:ended")
    assert len([t for t in hub.types("ann") if t == "pop"]) == 1
    assert router.live_pops("ann") == []
    assert crm.records == []


async def test_04_anonymous_callers_pop_without_a_lookup() -> None:
    _router, hub, crm = await replay("04-inbound-anonymous-callerid.ami")
    pops = [p for t, p in hub.of("ann") if t == "pop"]
    assert len(pops) == 2
    for p in pops:
        assert p["identification"]["status"] == "none"
        assert p["caller"]["number"] == ""
    assert crm.identified == []


async def test_05_dialer_call_pops_with_campaign_and_lead() -> None:
    _router, hub, _ = await replay("05-outbound-dialer-answered-to-queue.ami")
    assert hub.types("ann") == ["pop", "update:answered_by_you", "update:ended"]
    pop = hub.of("ann")[0][1]
    assert pop["direction"] == "outbound"
    assert (pop["campaign"], pop["lead"]) == ("c1", "42")


@pytest.mark.parametrize(
    "trace", ["09a-blind-transfer-redirect.ami", "09b-blind-transfer-action.ami"]
)
async def test_09ab_blind_transfer_follows_the_call(trace: str) -> None:
    crm = Crm()
    crm.customers["+4930123460"] = "c9"  # 09a
    crm.customers["+4930123461"] = "c9"  # 09b
    _router, hub, _ = await replay(trace, crm)
    assert hub.types("ann") == ["pop", "update:answered_by_you", "update:transferred_away"]
    assert hub.types("cid") == ["pop", "update:answered_by_you", "update:ended"]
    pop = hub.of("cid")[0][1]
    assert pop["transferred"] is True
    assert pop["queue"] == "sales"
    assert [h["agent"] for h in pop["history"]] == ["ann"]
    assert pop["identification"]["card"]["id"] == "c9"
    assert len(crm.identified) == 1
    by_leg = {(r.leg, r.outcome) for r in crm.records}
    assert ("ann", "transferred") in by_leg and ("cid", "completed") in by_leg


async def test_09c_attended_transfer_hands_the_pop_to_the_consulted_agent() -> None:
    _router, hub, _ = await replay("09c-attended-transfer-atxfer.ami")
    assert hub.types("ann") == ["pop", "update:answered_by_you", "update:transferred_away"]
    types = hub.types("bob")
    assert types[0] == "pop" and types.count("pop") == 1
    assert "update:transferred_to_you" in types and types[-1] == "update:ended"
    assert hub.of("bob")[0][1]["history"][0]["agent"] == "ann"


async def test_14_agent_hangs_up() -> None:
    _router, hub, _ = await replay("14-inbound-agent-hangs-up.ami")
    types = hub.types("ann")
    assert types[:2] == ["pop", "update:answered_by_you"]
    assert types.count("pop") == 1
    assert types[-1] in ("update:ended", "update:transferred_away")
