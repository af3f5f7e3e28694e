"""Screen-pop routing: who gets a pop, what follows it, and how a slow CRM is kept out of the
call path. The hub and the agent registry are small recording stand-ins here (the router only
needs `send` and `agent_for_device`); the CRM stand-in can be slow or broken on demand. The
end-to-end path with the real hub, store and websockets is in test_agent_page and the bench."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ami.events import Hangup, Party, QueueAbandon, Ringing, RingingEnd, Transfer, Up
from crm_bridge.adapter import (
    CustomerCard,
    Identification,
    Identity,
    InteractionRecord,
    InteractionView,
)
from cti.pops import CallNotFound, NotYourCall, PopRouter


class RecordingHub:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def send(self, agent_id: str, type: str, payload: dict[str, Any]) -> int:
        self.sent.append((agent_id, type, payload))
        return len(self.sent)

    def of(self, agent: str) -> list[tuple[str, dict[str, Any]]]:
        return [(t, p) for a, t, p in self.sent if a == agent]

    def types(self, agent: str) -> list[str]:
        return [t if t != "call.update" else f"update:{p['state']}" for t, p in self.of(agent)]


class Devices:
    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def agent_for_device(self, device: str) -> str | None:
        return self.mapping.get(device)


class Crm:
    """Answers like the adapter contract says; `delay` and `fail` simulate a sick CRM."""

    def __init__(self, delay: float = 0.0, fail: bool = False, fast: str = "") -> None:
        self.delay = delay
        self.fast = fast  # this number answers at once even when the CRM is slow
        self.fail = fail
        self.identified: list[Identity] = []
        self.records: list[InteractionRecord] = []
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.customers = {"+4930123456": "c1"}
        self.fail_writes = False

    async def identify(self, who: Identity) -> Identification:
        self.identified.append(who)
        if self.delay and who.number != self.fast:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("crm down")
        cid = self.customers.get(who.number or "")
        if cid is None:
            return Identification(status="none", number_e164=who.number)
        return Identification(
            status="one", number_e164=who.number, card=CustomerCard(id=cid, name="Erika Muster")
        )

    async def record_interaction(self, rec: InteractionRecord) -> str:
        if self.fail_writes:
            raise ConnectionError("crm down")
        self.records.append(rec)
        return f"i-{rec.call_id}-{rec.leg}"

    async def update_interaction(self, interaction_id: str, **kw: Any) -> InteractionView:
        self.updates.append((interaction_id, kw))
        return InteractionView(
            id=interaction_id,
            customer_id=None,
            direction="inbound",
            channel="phone",
            call_id="",
            leg="",
            number="",
            did="",
            offered_at=None,
            answered_at=None,
            ended_at=None,
            queue="",
            agent="",
            campaign="",
            outcome="",
            notes="",
            disposition=kw.get("disposition") or "",
        )


CALLER = Party("PJSIP/trunk-00000001", "1700000000.1", "1700000000.1", "+4930123456", "Erika")
A1 = Party("PJSIP/1001-00000002", "1700000000.2", "1700000000.1", "+4930123456")
A2 = Party("PJSIP/1002-00000003", "1700000000.3", "1700000000.1", "+4930123456")
A3 = Party("PJSIP/1003-00000004", "1700000000.4", "1700000000.1", "+4930123456")
AGENTS = {"PJSIP/1001": "ann", "PJSIP/1002": "bob", "PJSIP/1003": "cid"}
CID = "1700000000.1"


def ringing(
    *targets: Party,
    caller: Party = CALLER,
    at: float = 100.0,
    queue: str | None = "support",
    variables: dict[str, str] | None = None,
    call_id: str = CID,
) -> Ringing:
    return Ringing(
        call_id=call_id,
        at=at,
        caller=caller,
        targets=targets,
        queue=queue,
        variables=variables or {},
    )


def make(
    crm: Crm | None = None,
    deadline_ms: int = 150,
    agents: dict[str, str] | None = None,
) -> tuple[PopRouter, RecordingHub, Crm]:
    hub = RecordingHub()
    crm = crm or Crm()
    router = PopRouter(
        hub,
        Devices(agents or AGENTS),
        crm,
        deadline_ms=deadline_ms,
        ivr_variables={"ACCOUNT": "account", "CARD": "card"},
    )
    return router, hub, crm


async def settle(router: PopRouter, t: float = 0.02) -> None:
    await asyncio.sleep(t)
    await router.drain()


async def test_ringall_queue_pops_every_rung_agent_once_and_tells_the_others() -> None:
    router, hub, crm = make()
    await router.on_call_event(ringing(A1, A2))
    await router.on_call_event(ringing(A1, A2, at=100.5))  # repeated AMI event
    await settle(router)
    for agent in ("ann", "bob"):
        pops = [p for t, p in hub.of(agent) if t == "pop"]
        assert len(pops) == 1
        assert pops[0]["identification"]["status"] == "one"
        assert pops[0]["identification"]["card"]["id"] == "c1"
        assert pops[0]["caller"] == {"number": "+4930123456", "name": "Erika"}
        assert pops[0]["queue"] == "support"
        assert pops[0]["direction"] == "inbound"
    assert len(crm.identified) == 1  # one lookup shared by every rung agent
    await router.on_call_event(Up(call_id=CID, at=102.0, caller=CALLER, callee=A2))
    await router.on_call_event(Up(call_id=CID, at=102.0, caller=CALLER, callee=A2))
    await router.on_call_event(
        RingingEnd(call_id=CID, at=102.0, caller=CALLER, targets=(A1,), reason="answered-elsewhere")
    )
    await settle(router)
    assert hub.types("bob") == ["pop", "update:answered_by_you"]
    assert hub.types("ann") == ["pop", "update:answered_elsewhere"]
    assert crm.records == []  # written once, when needed: no database write per answer
    await router.add_note(CID, "bob", "first words")
    assert len(crm.records) == 1 and crm.records[0].agent == "bob"
    assert crm.records[0].answered_at is not None and crm.records[0].customer_id == "c1"
    assert crm.records[0].ended_at is None
    await router.on_call_event(
        Hangup(call_id=CID, at=110.0, caller=CALLER, reason="completed", cause=16)
    )
    await settle(router)
    assert [(r.agent, r.outcome, r.ended_at is not None) for r in crm.records] == [
        ("bob", "", False),
        ("bob", "completed", True),
    ]


async def test_linear_queue_pops_the_next_agent_with_the_same_lookup() -> None:
    router, hub, crm = make()
    await router.on_call_event(ringing(A1))
    await settle(router)
    await router.on_call_event(
        RingingEnd(call_id=CID, at=105.0, caller=CALLER, targets=(A1,), reason="no-answer")
    )
    await router.on_call_event(ringing(A2, at=106.0))
    await settle(router)
    assert hub.types("ann") == ["pop", "update:ringing_ended"]
    assert hub.of("ann")[1][1]["reason"] == "no-answer"
    assert hub.types("bob") == ["pop"]
    assert hub.of("bob")[0][1]["identification"]["status"] == "one"
    assert len(crm.identified) == 1


async def test_device_match_is_exact() -> None:
    router, hub, _ = make(agents={"SIP/10": "ten"})
    other = Party("SIP/100-00000001", "u2", CID, "+4930123456")
    await router.on_call_event(ringing(other))
    await settle(router)
    assert hub.sent == []
    exact = Party("SIP/10-0000000a", "u3", CID, "+4930123456")
    await router.on_call_event(ringing(exact))
    await settle(router)
    assert hub.types("ten") == ["pop"]


async def test_slow_crm_gives_a_degraded_pop_by_the_deadline_then_an_update() -> None:
    router, hub, _ = make(Crm(delay=0.4), deadline_ms=50)
    t0 = time.monotonic()
    await router.on_call_event(ringing(A1))
    while not hub.sent:
        await asyncio.sleep(0.002)
        assert time.monotonic() - t0 < 0.3, "pop not sent by the deadline"
    waited = time.monotonic() - t0
    assert 0.04 <= waited < 0.2
    agent, typ, pop = hub.sent[0]
    assert (agent, typ) == ("ann", "pop")
    assert pop["identification"]["status"] == "degraded"
    assert pop["caller"]["number"] == "+4930123456"
    await asyncio.sleep(0.5)
    assert hub.types("ann") == ["pop", "pop.update"]
    assert hub.of("ann")[1][1]["identification"]["status"] == "one"


async def test_events_for_other_calls_are_not_held_up_by_a_slow_lookup() -> None:
    crm = Crm(delay=0.3, fast="+4930999999")
    router, hub, _ = make(crm, deadline_ms=1000)
    await router.on_call_event(ringing(A1))
    caller2 = Party("PJSIP/trunk-0000000f", "x.1", "x.1", "+4930999999")
    await router.on_call_event(ringing(A2, caller=caller2, call_id="x.1"))
    await asyncio.sleep(0.05)
    assert hub.types("bob") == ["pop"]
    assert hub.types("ann") == []


async def test_updates_wait_behind_a_pending_pop_and_keep_their_order() -> None:
    router, hub, _ = make(Crm(delay=0.05))
    await router.on_call_event(ringing(A1, A2))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    assert hub.sent == []  # nothing overtakes the pop
    await settle(router, 0.1)
    assert hub.types("ann") == ["pop", "update:answered_by_you"]
    assert hub.types("bob") == ["pop", "update:answered_elsewhere"]
    assert hub.of("ann")[0][1]["identification"]["status"] == "one"


async def test_crm_failure_degrades_and_never_raises() -> None:
    router, hub, _ = make(Crm(fail=True))
    await router.on_call_event(ringing(A1))
    await settle(router)
    assert hub.types("ann") == ["pop"]
    assert hub.of("ann")[0][1]["identification"]["status"] == "degraded"
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    await settle(router)
    assert hub.types("ann") == ["pop", "update:answered_by_you"]


async def test_withheld_number_pops_at_once_without_a_lookup() -> None:
    router, hub, crm = make(Crm(delay=1.0))
    anon = Party("PJSIP/trunk-00000009", "w.1", "w.1", "anonymous", "Anonymous")
    await router.on_call_event(ringing(A1, caller=anon, call_id="w.1"))
    assert hub.types("ann") == ["pop"]
    ident = hub.of("ann")[0][1]["identification"]
    assert ident["status"] == "none" and ident["withheld"] is True
    assert crm.identified == []


async def test_ivr_input_and_did_go_to_the_lookup() -> None:
    router, hub, crm = make()
    await router.on_call_event(
        ringing(A1, variables={"__ACCOUNT": "12345", "DID": "+49308000", "OTHER": "x"})
    )
    await settle(router)
    assert crm.identified == [
        Identity(number="+4930123456", ivr={"account": "12345"}, did="+49308000")
    ]
    pop = hub.of("ann")[0][1]
    assert pop["ivr"] == {"account": "12345"} and pop["did"] == "+49308000"


async def test_dialer_call_carries_campaign_and_lead() -> None:
    router, hub, _ = make()
    customer = Party("Local/+4930555101@pstn-00000001;1", "d.1", "d.1", "+4930123456")
    await router.on_call_event(
        ringing(A1, caller=customer, call_id="d.1", variables={"CAMPAIGN": "c1", "LEAD": "42"})
    )
    await settle(router)
    pop = hub.of("ann")[0][1]
    assert pop["direction"] == "outbound"
    assert (pop["campaign"], pop["lead"]) == ("c1", "42")
    assert pop["identification"]["status"] == "one"


async def test_internal_call_needs_no_crm() -> None:
    router, hub, crm = make()
    await router.on_call_event(ringing(A2, caller=A1, queue=None, call_id="int.1"))
    assert hub.types("bob") == ["pop"]
    assert hub.of("bob")[0][1]["direction"] == "internal"
    assert hub.types("ann") == []
    assert crm.identified == []


async def test_blind_transfer_moves_the_pop_with_history_and_closes_the_old_view() -> None:
    router, hub, crm = make()
    await router.on_call_event(ringing(A1))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    await settle(router)
    await router.add_note(CID, "ann", "wants a refund")
    await router.on_call_event(
        Transfer(call_id=CID, at=110.0, kind="blind", caller=CALLER, transferer=A1, targets=(A3,))
    )
    await router.on_call_event(ringing(A3, at=110.5, queue="sales"))  # the new queue rings
    await router.on_call_event(Up(call_id=CID, at=112.0, caller=CALLER, callee=A3))
    await settle(router)
    assert hub.types("ann") == ["pop", "update:answered_by_you", "update:transferred_away"]
    assert hub.types("cid") == ["pop", "update:answered_by_you"]
    pop = hub.of("cid")[0][1]
    assert pop["transferred"] is True
    assert [(h["agent"], h["notes"]) for h in pop["history"]] == [("ann", ["wants a refund"])]
    await router.on_call_event(
        Hangup(call_id=CID, at=130.0, caller=CALLER, reason="completed", cause=16)
    )
    await settle(router)
    assert [(r.leg, r.outcome) for r in crm.records] == [
        ("ann", ""),  # written when the note was added
        ("ann", "transferred"),
        ("cid", "completed"),
    ]


async def test_redirect_to_another_queue_follows_the_call_without_a_transfer_event() -> None:
    router, hub, _ = make()
    await router.on_call_event(ringing(A1))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    await router.on_call_event(ringing(A3, at=108.0, queue="sales"))
    await settle(router)
    assert hub.of("cid")[0][1]["history"][0]["agent"] == "ann"
    assert hub.of("cid")[0][1]["queue"] == "sales"
    assert hub.types("ann") == ["pop", "update:answered_by_you"]  # still talking while it rings
    await router.on_call_event(Up(call_id=CID, at=110.0, caller=CALLER, callee=A3))
    await settle(router)
    assert hub.types("ann")[-1] == "update:transferred_away"
    assert hub.types("cid") == ["pop", "update:answered_by_you"]


async def test_attended_transfer_keeps_the_transferer_during_consultation() -> None:
    router, hub, _ = make()
    await router.on_call_event(ringing(A1))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    # consultation: agent 1 calls agent 2 within the same call
    await router.on_call_event(ringing(A2, caller=A1, at=105.0, queue=None))
    await router.on_call_event(Up(call_id=CID, at=106.0, caller=A1, callee=A2))
    await settle(router)
    assert hub.types("ann") == ["pop", "update:answered_by_you"]
    assert hub.types("bob") == ["pop", "update:answered_by_you"]
    await router.on_call_event(
        Transfer(
            call_id=CID, at=108.0, kind="attended", caller=CALLER, transferer=A1, targets=(A2,)
        )
    )
    await settle(router)
    assert hub.types("ann")[-1] == "update:transferred_away"
    assert hub.types("bob")[-1] == "update:transferred_to_you"
    assert hub.of("bob")[0][1]["identification"]["card"]["id"] == "c1"  # the customer's pop


async def test_hangup_ends_views_and_after_call_work_survives_a_reconnect() -> None:
    router, hub, crm = make()
    await router.on_call_event(ringing(A1, A2))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    await settle(router)
    assert [p["state"] for p in router.live_pops("ann")] == ["answered"]
    assert router.live_pops("bob") == []
    await router.on_call_event(
        Hangup(call_id=CID, at=130.0, caller=CALLER, reason="completed", cause=16)
    )
    await settle(router)
    assert hub.types("ann")[-1] == "update:ended"
    assert hub.of("ann")[-1][1]["reason"] == "completed"
    # wrap-up: the agent still sees the call until a disposition is given
    assert [p["state"] for p in router.live_pops("ann")] == ["ended"]
    await router.set_disposition(CID, "ann", "solved")
    await router.set_disposition(CID, "ann", "solved")  # twice is safe: one write
    assert [kw.get("disposition") for _, kw in crm.updates] == ["solved"]
    assert router.live_pops("ann") == []
    ended = [r for r in crm.records if r.ended_at is not None]
    assert len(ended) == 1 and ended[0].outcome == "completed"


async def test_abandoned_call_closes_ringing_views() -> None:
    router, hub, crm = make()
    await router.on_call_event(ringing(A1))
    await settle(router)
    await router.on_call_event(QueueAbandon(call_id=CID, at=104.0, caller=CALLER, queue="support"))
    await router.on_call_event(
        Hangup(call_id=CID, at=104.0, caller=CALLER, reason="cancelled", cause=0)
    )
    await settle(router)
    assert hub.types("ann") == ["pop", "update:ringing_ended"]
    assert router.live_pops("ann") == []
    assert crm.records == []


async def test_agent_actions_are_limited_to_the_agents_own_calls() -> None:
    router, _hub, _ = make()
    await router.on_call_event(ringing(A1, A2))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    await settle(router)
    with pytest.raises(NotYourCall):
        await router.add_note(CID, "cid", "not mine")
    with pytest.raises(NotYourCall):  # rung but never answered: no interaction of bob's
        await router.add_note(CID, "bob", "missed it")
    with pytest.raises(CallNotFound):
        await router.add_note("nope", "ann", "x")
    pop = await router.add_note(CID, "ann", "first")
    assert pop["notes"] == ["first"]


async def test_reconnect_snapshot_rebuilds_the_pop() -> None:
    router, hub, _ = make()
    await router.on_call_event(ringing(A1))
    await settle(router)
    live = router.live_pops("ann")
    assert len(live) == 1
    sent = hub.of("ann")[0][1]
    assert live[0]["call_id"] == sent["call_id"]
    assert live[0]["identification"] == sent["identification"]
    assert live[0]["state"] == "ringing"


async def test_dial_end_answer_settles_ringall_before_the_bridge() -> None:
    router, hub, _ = make()
    await router.on_call_event(ringing(A1, A2))
    await settle(router)
    await router.on_call_event(
        RingingEnd(call_id=CID, at=101.0, caller=CALLER, targets=(A1,), reason="answer")
    )
    await router.on_call_event(
        RingingEnd(call_id=CID, at=101.0, caller=CALLER, targets=(A2,), reason="cancel")
    )
    await router.on_call_event(Up(call_id=CID, at=101.1, caller=CALLER, callee=A1))
    await settle(router)
    assert hub.types("ann") == ["pop", "update:answered_by_you"]
    assert hub.types("bob") == ["pop", "update:answered_elsewhere"]


async def test_finished_calls_are_not_kept_forever() -> None:
    from cti import pops as pops_mod

    router, _hub, _ = make(Crm(), agents={"PJSIP/1001": "ann"})
    # unanswered: forgotten at the hangup
    await router.on_call_event(ringing(A1, call_id="u.1"))
    await settle(router)
    await router.on_call_event(
        Hangup(call_id="u.1", at=101.0, caller=CALLER, reason="cancelled", cause=0)
    )
    assert router.stats()["calls"] == 0
    # answered: kept for after-call work, but only up to ENDED_MAX
    limit = 30
    old = pops_mod.ENDED_MAX
    pops_mod.ENDED_MAX = limit
    try:
        for i in range(limit + 20):
            cid = f"a.{i}"
            await router.on_call_event(ringing(A1, call_id=cid, at=float(i)))
            await router.on_call_event(Up(call_id=cid, at=i + 0.5, caller=CALLER, callee=A1))
            await settle(router, 0.001)
            await router.on_call_event(
                Hangup(call_id=cid, at=i + 0.9, caller=CALLER, reason="completed", cause=16)
            )
        await router.drain()
        assert router.stats()["calls"] == limit
        assert len(router.live_pops("ann")) == limit
        assert router.live_pops("ann")[-1]["call_id"] == f"a.{limit + 19}"
    finally:
        pops_mod.ENDED_MAX = old


async def test_a_crm_that_cannot_write_is_reported_not_raised_into_the_call() -> None:
    from crm_bridge.adapter import CrmUnavailable

    crm = Crm()
    crm.fail_writes = True
    router, hub, _ = make(crm)
    await router.on_call_event(ringing(A1))
    await router.on_call_event(Up(call_id=CID, at=101.0, caller=CALLER, callee=A1))
    await settle(router)
    with pytest.raises(CrmUnavailable):
        await router.add_note(CID, "ann", "lost?")
    await router.on_call_event(
        Hangup(call_id=CID, at=110.0, caller=CALLER, reason="completed", cause=16)
    )
    await settle(router)
    assert hub.types("ann") == ["pop", "update:answered_by_you", "update:ended"]
