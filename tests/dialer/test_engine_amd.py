"""Answering machines end to end: the PBX simulator's AMD in the cti-dialer context
(numbers +49305556XX are machines) -> CtiMachine UserEvent -> tracker -> Dialer outcome
"machine" -> retry after 4 h -> at most one machine-detected call per number per 24 h,
checked when the lead is claimed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from crm_bridge.db import make_sessionmaker
from dialer.campaigns import CampaignSpec
from dialer.importer import import_leads
from dialer.models import Campaign
from tests.dialer.test_engine_env import floor

pytestmark = pytest.mark.slow

HOUR = 3600.0


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_machine_outcome_retry_after_4h_and_once_per_24h(tmp_path: Path, db: str) -> None:
    rows = [
        "m1,Machine Only,+4930555601,",
        # machine on the first number, a person on the second: rotation after a machine
        "m2,Machine Then Person,+4930555602,+4930555102",
        "a1,Person,+4930555101,",
    ]
    async with floor(tmp_path, db=db) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await fl.login("ben", "PJSIP/1002")
        assert fl.campaigns is not None
        await fl.campaigns.create(
            CampaignSpec(name="amd", queue="sales", mode="progressive", amd=True)
        )
        path = tmp_path / "amd.csv"
        path.write_text("ref,name,phone,phone2\n" + "\n".join(rows) + "\n")
        report = await import_leads(fl.engine, "amd", path, region="DE", progress=False)
        assert report.imported == 3 and not report.rejected
        await fl.campaigns.set_state("amd", "running")
        leads = await fl.settled(within=20)

        atts = await fl.attempts()
        by_number = {a.number: a for a in atts}
        assert set(by_number) == {"+4930555601", "+4930555602", "+4930555101"}
        # AMD ran in the dialplan (AMD=1 on the Originate) and said MACHINE twice
        assert all(o["Variable"] == "AMD=1" for o in fl.originates)
        machine_events = [e for e in fl.user_events if e["UserEvent"] == "CtiMachine"]
        assert {e["Lead"] for e in machine_events} == {str(leads["m1"].id), str(leads["m2"].id)}
        for ref, number in (("m1", "+4930555601"), ("m2", "+4930555602")):
            att = by_number[number]
            assert att.outcome == "machine" and not att.abandoned and att.connected_at is None
            lead = leads[ref]
            # retry rule: a machine is tried again after 4 h
            assert lead.state == "retry" and lead.last_outcome == "machine"
            assert lead.next_at == pytest.approx((att.ended_at or 0) + 4 * HOUR)
        assert leads["m2"].number_index == 1  # the next try goes to the other number
        # the person behind AMD=HUMAN reached an agent
        person = by_number["+4930555101"]
        assert person.outcome == "handled" and person.agent in ("anna", "ben")
        # machines are no live answers: not counted in the abandonment window, never abandoned
        assert d.stats["abandoned"] == 0
        figures = d.live_figures()["amd"]
        assert figures["window_answered"] == 1 and figures["window_abandoned"] == 0
        async with make_sessionmaker(fl.engine)() as s:
            camp = (await s.execute(select(Campaign).where(Campaign.name == "amd"))).scalar_one()
        # the same from the database (what a restart reads)
        assert await d.leads.abandon_window(camp, fl.clock()) == (1, 0)

        # 4 h later both retries are due; m1's number had a machine < 24 h ago: refused at
        # claim time and moved to 24 h after that call; m2 is dialled on its second number
        first_m1 = by_number["+4930555601"]
        fl.clock.advance(4 * HOUR + 60)

        async def m2_retried() -> bool:
            return len(await fl.attempts()) == 4

        await fl.until(m2_retried, 10)
        leads = await fl.settled(within=10)
        atts = await fl.attempts()
        assert len(atts) == 4
        assert atts[-1].number == "+4930555102" and atts[-1].outcome == "handled"
        assert leads["m2"].state == "done"
        assert leads["m1"].state == "retry"
        assert leads["m1"].next_at == pytest.approx((first_m1.ended_at or 0) + 24 * HOUR)

        # still blocked an hour before the 24 h are over
        fl.clock.advance(19 * HOUR)
        await fl.until(lambda: True)
        assert len(await fl.attempts()) == 4

        fl.clock.advance(HOUR + 60)

        async def m1_retried() -> bool:
            return len(await fl.attempts()) == 5

        await fl.until(m1_retried, 10)
        leads = await fl.settled(within=10)
        tries = [a for a in await fl.attempts() if a.lead_id == leads["m1"].id]
        assert [a.outcome for a in tries] == ["machine", "machine"]
        assert tries[1].created_at >= (tries[0].ended_at or 0) + 24 * HOUR
        # default machine rule: at most 2 attempts
        assert leads["m1"].state == "done" and leads["m1"].done_reason == "machine: 2 attempts"
        sent = [o["ActionID"] for o in fl.originates]
        assert len(sent) == len(set(sent)) == 5


async def test_cti_fallback_deadline_waits_for_amd_on_amd_campaigns(tmp_path: Path) -> None:
    # with AMD the dialplan classifies first (up to 5 s) and only then queues the call with
    # the 2 s deadline: the CTI's fallback must not call a person still being classified
    # abandoned (and Redirect them to safe-harbor)
    from crm_bridge.db import make_engine
    from dialer.engine import AMD_ALLOWANCE_SECONDS, Dialer, InFlight, _Run
    from dialer.pacing import make_pacer
    from dialer.retry import RetryPolicy
    from dialer.settings import DialerSettings

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    settings = DialerSettings(connect_deadline=2.0, abandon_grace_seconds=1.0)

    async def originate(server: str, action: object) -> None:
        return None

    d = Dialer(engine, settings, originate=originate, agents_of_queue=lambda q: [], agent_log=False)
    try:
        for amd, expired_at in ((False, 3.0), (True, 3.0 + AMD_ALLOWANCE_SECONDS)):
            camp = Campaign(name="x", mode="progressive", queue="sales", amd=amd)
            run = _Run(campaign=camp, pacer=make_pacer("progressive"), policy=RetryPolicy())
            run.calls["a"] = InFlight("a", 1, "+4930555101", launched_at=90.0, answered_at=100.0)
            assert d._expire_connect_deadlines(run, 100.0 + expired_at - 0.1) == []
            (late,) = d._expire_connect_deadlines(run, 100.0 + expired_at + 0.1)
            assert late.abandoned
    finally:
        await engine.dispose()
