"""The live dialer end to end: PBX simulator over TCP, AMI link, call tracker, agent service,
a real SQLite file, and a clock that runs 20x faster than real time and can jump."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from crm_bridge.db import make_sessionmaker
from dialer.models import Attempt, Campaign, Lead
from tests.dialer.test_engine_env import Floor, floor

pytestmark = pytest.mark.slow

ANSWER = [f"a{i},Answer {i},+49305551{i:02d}" for i in range(1, 7)]


DBS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("db", DBS)
async def test_progressive_campaign_runs_to_completion(tmp_path: Path, db: str) -> None:
    async with floor(tmp_path, db=db) as fl:
        await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await fl.login("ben", "PJSIP/1002")
        assert fl.campaigns is not None
        await fl.campaign("spring", ANSWER, tmp_path, mode="progressive")
        await fl.campaigns.set_state("spring", "running")
        leads = await fl.settled(within=20)
        assert {x.state for x in leads.values()} == {"done"}
        assert {x.last_outcome for x in leads.values()} == {"handled"}
        atts = await fl.attempts()
        assert len(atts) == 6
        assert all(a.connected_at is not None and a.agent in ("anna", "ben") for a in atts)
        # one Originate per attempt, matched by ChannelId = ActionID = attempt id
        sent = Counter(o["ActionID"] for o in fl.originates)
        assert set(sent) == {a.id for a in atts} and max(sent.values()) == 1
        assert all(o["ChannelId"] == o["ActionID"] for o in fl.originates)
        # progressive never has more calls out than agents
        d = fl.dialer
        assert d is not None
        decisions = [x for x in d.decisions("spring") if x.launched > 0]
        assert decisions
        for dec in decisions:
            assert dec.launched + dec.dialing + dec.waiting <= dec.ready
        assert d.stats["abandoned"] == 0
        # both agents worked; their logged-in time adds up exactly
        now = fl.clock()
        report = d.utilization.report(now)
        for agent in ("anna", "ben"):
            (fig,) = report[agent].values()
            parts = fig["ready"] + fig["ringing"] + fig["on_call"] + fig["wrap_up"] + fig["paused"]
            assert fig["logged_in"] == pytest.approx(parts, abs=0.01)
            assert fig["on_call"] > 0 and fig["calls"] >= 1
        assert sum(report[a][next(iter(report[a]))]["calls"] for a in ("anna", "ben")) == 6


RETRY = {
    "busy": {"delay_seconds": 300, "max_attempts": 2},
    "no-answer": {"delay_seconds": 7200, "max_attempts": 2},
}


async def test_predictive_campaign_with_retries_at_the_right_times(tmp_path: Path) -> None:
    rows = [
        *ANSWER[:4],
        "b1,Busy One,+4930555201",
        "b2,Busy Two,+4930555202",
        "n1,Never There,+4930555301",
    ]
    async with floor(tmp_path) as fl:
        await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await fl.login("ben", "PJSIP/1002")
        assert fl.campaigns is not None
        await fl.campaign(
            "summer", rows, tmp_path, mode="predictive", retry=RETRY, max_ring_seconds=15
        )
        await fl.campaigns.set_state("summer", "running")
        leads = await fl.settled(within=20)
        assert {r: leads[r].state for r in ("b1", "b2", "n1")} == {
            "b1": "retry",
            "b2": "retry",
            "n1": "retry",
        }
        assert all(leads[f"a{i}"].state == "done" for i in range(1, 5))
        first = {a.lead_id: a for a in await fl.attempts()}
        # nothing is redialled before its delay: 4 virtual minutes later, still one attempt each
        fl.clock.advance(240)
        await fl.until(lambda: True)
        assert len(await fl.attempts()) == 7
        # busy: again after 5 minutes (not the no-answer lead)
        fl.clock.advance(70)

        async def busy_retried() -> bool:
            return len(await fl.attempts()) == 9

        await fl.until(busy_retried, 10)
        leads = await fl.settled(within=10)
        atts = await fl.attempts()
        by_lead = Counter(a.lead_id for a in atts)
        assert by_lead[leads["b1"].id] == by_lead[leads["b2"].id] == 2
        assert by_lead[leads["n1"].id] == 1
        for ref in ("b1", "b2"):
            tries = [a for a in atts if a.lead_id == leads[ref].id]
            gap = tries[1].created_at - (tries[0].ended_at or 0)
            assert 300 <= gap < 300 + 40, gap  # due at +5 min, dialled within the next ticks
            assert leads[ref].state == "done" and leads[ref].done_reason == "busy: 2 attempts"
        # no answer: after 2 hours
        fl.clock.advance(7200)

        async def noanswer_retried() -> bool:
            return len(await fl.attempts()) == 10

        await fl.until(noanswer_retried, 10)
        leads = await fl.settled(within=10)
        assert leads["n1"].state == "done" and leads["n1"].done_reason == "no-answer: 2 attempts"
        tries = [a for a in await fl.attempts() if a.lead_id == leads["n1"].id]
        assert tries[1].created_at - (tries[0].ended_at or 0) >= 7200
        assert {a.outcome for a in tries} == {"no-answer"}
        del first
        sent = Counter(o["ActionID"] for o in fl.originates)
        assert len(sent) == 10 and max(sent.values()) == 1
        assert set(fl.originate_responses) == set(sent)


async def _run_one(fl: Floor, name: str, rows: list[str], tmp: Path, **spec: object) -> None:
    assert fl.campaigns is not None
    await fl.campaign(name, rows, tmp, **spec)
    await fl.campaigns.set_state(name, "running")
    await fl.settled(within=20)


@pytest.mark.parametrize("db", DBS)
async def test_callback_for_an_agent_rings_that_agent_first_at_its_time(
    tmp_path: Path, db: str
) -> None:
    async with floor(tmp_path, db=db) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await fl.login("ben", "PJSIP/1002")
        await _run_one(fl, "autumn", ANSWER[:1], tmp_path)
        lead = (await fl.leads())["a1"]
        assert lead.state == "done"
        due = fl.clock() + 1200  # "call me back in 20 minutes"
        cb_id = await d.schedule_callback(lead.id, due, "ben", note="after lunch")
        assert (await fl.leads())["a1"].state == "callback"
        fl.clock.advance(1100)
        await fl.until(lambda: True)
        assert len(await fl.attempts()) == 1  # not before its time
        fl.clock.advance(110)

        async def two() -> bool:
            return len(await fl.attempts()) == 2

        await fl.until(two, 5)
        leads = await fl.settled(within=10)
        att = (await fl.attempts())[-1]
        assert att.created_at >= due
        assert att.note == "agent-first" and att.agent == "ben" and att.outcome == "handled"
        # ben's own phone was called first, then the customer from the click-to-call context
        orig = fl.originates[-1]
        assert orig["Channel"] == "PJSIP/1002" and orig["Context"] == "cti-click2call"
        assert orig["Exten"] == "+4930555101" and orig["ChannelId"] == att.id
        offers = [n for n in fl.notes if n[1] == "callback.due"]
        assert [(a, p["lead_id"], p["name"]) for a, p in ((n[0], n[2]) for n in offers)] == [
            ("ben", lead.id, "Answer 1")
        ]
        assert offers[0][2]["id"] == str(cb_id) and offers[0][2]["due_at"] == due
        assert offers[0][2]["note"] == "after lunch"
        assert leads["a1"].state == "done"
        (row,) = await d.leads.callbacks(now=fl.clock(), grace=600)
        assert row["id"] == cb_id and row["state"] == "done" and row["outcome"] == "handled"
        assert row["agent"] == "ben" and not row["overdue"]


async def test_callback_falls_back_to_anyone_after_the_grace_period(tmp_path: Path) -> None:
    async with floor(tmp_path, callback_grace_minutes=10) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await _run_one(fl, "winter", ANSWER[:1], tmp_path)
        lead = (await fl.leads())["a1"]
        due = fl.clock() + 60
        await d.schedule_callback(lead.id, due, "carl")  # carl is not logged in
        fl.clock.advance(60 + 300)  # due, half the grace period gone
        await fl.until(lambda: True)
        assert len(await fl.attempts()) == 1
        (row,) = await d.leads.callbacks(now=fl.clock(), grace=600)
        assert row["state"] == "pending" and not row["overdue"]
        fl.clock.advance(301)

        async def two() -> bool:
            return len(await fl.attempts()) == 2

        await fl.until(two, 5)
        await fl.settled(within=10)
        att = (await fl.attempts())[-1]
        assert att.created_at >= due + 600
        assert att.note == "" and att.agent == "anna" and att.outcome == "handled"
        assert d.stats["callbacks_fallback"] == 1
        (row,) = await d.leads.callbacks(now=fl.clock(), grace=600)
        assert row["state"] == "done" and row["outcome"] == "handled"


async def test_missed_callback_is_reported_and_kept_for_its_agent(tmp_path: Path) -> None:
    async with floor(tmp_path, callback_grace_minutes=5, callback_fallback_to_anyone=False) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await _run_one(fl, "spring2", ANSWER[:1], tmp_path)
        lead = (await fl.leads())["a1"]
        await d.schedule_callback(lead.id, fl.clock() + 30, "carl")
        fl.clock.advance(30 + 301)

        async def missed() -> bool:
            rows = await d.leads.callbacks(now=fl.clock(), grace=300, states=("missed",))
            return len(rows) == 1 and rows[0]["overdue"]

        await fl.until(missed, 5)
        assert d.stats["callbacks_missed"] == 1
        assert len(await fl.attempts()) == 1  # anna did not get carl's promise
        await fl.login("carl", "PJSIP/1003")

        async def two() -> bool:
            return len(await fl.attempts()) == 2

        await fl.until(two, 5)
        await fl.settled(within=10)
        att = (await fl.attempts())[-1]
        assert att.agent == "carl" and att.outcome == "handled"
        assert fl.originates[-1]["Channel"] == "PJSIP/1003"


@pytest.mark.parametrize("db", DBS)
async def test_restart_mid_campaign_loses_and_doubles_nothing(tmp_path: Path, db: str) -> None:
    rows = [
        *ANSWER,
        "b1,Busy,+4930555201",
        "n1,Nobody,+4930555301",
        "c1,Congested,+4930555401",
    ]
    async with floor(tmp_path, sim={"talk_min": 10.0, "talk_max": 12.0}, db=db) as fl:
        d1 = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await fl.login("ben", "PJSIP/1002")
        assert fl.campaigns is not None
        await fl.campaign("fall", rows, tmp_path, mode="progressive", max_ring_seconds=15)
        await fl.campaigns.set_state("fall", "running")

        async def talking() -> bool:
            return sum(1 for a in await fl.attempts() if a.connected_at is not None) >= 2

        await fl.until(talking, 10)
        # the process dies: nothing is delivered to it any more
        fl.dialer = None
        await d1.stop()
        await fl.until(lambda: True)
        live = {c.call_id for c in fl.tracker.live_calls()}
        open_before = {a.id for a in await fl.attempts() if a.state != "ended"}
        assert open_before and open_before <= live  # calls went on on the PBX
        d2 = fl.make_dialer()
        fl.dialer = d2  # events now wait in d2 until start() registered the live attempts
        await d2.start({c.call_id for c in fl.tracker.live_calls()})
        leads = await fl.settled(within=25)
        atts = await fl.attempts()
        # every lead rests in exactly one state; the calls that survived the restart were
        # followed to their real outcome
        assert all(x.state in ("done", "retry") for x in leads.values())
        assert {leads[f"a{i}"].state for i in range(1, 7)} == {"done"}
        kept = [a for a in atts if a.id in open_before]
        assert kept and all(a.outcome == "handled" for a in kept)
        assert not [a for a in atts if a.outcome == "lost"]
        sent = Counter(o["ActionID"] for o in fl.originates)
        assert set(sent) == {a.id for a in atts} and max(sent.values()) == 1
        assert all(fl.originate_responses.get(a.id) == 1 for a in atts)
        assert sum(x.attempts for x in leads.values()) == len(atts)


async def test_abandoned_call_is_counted_and_the_cap_holds_at_progressive(
    tmp_path: Path,
) -> None:
    async with floor(tmp_path) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        assert fl.campaigns is not None
        await fl.campaign("drop", ANSWER[:1], tmp_path, mode="progressive")
        await fl.campaigns.set_state("drop", "running")
        await fl.until(lambda: fl.originates, 5)
        await fl.agents.pause("anna", "break")  # nobody free when the customer answers
        await fl.settled(within=10)
        (att,) = await fl.attempts()
        assert att.outcome == "abandoned" and att.abandoned and att.answered_at is not None
        assert [e["UserEvent"] for e in fl.user_events] == ["CtiAbandoned"]
        lead = (await fl.leads())["a1"]
        # compliance: not redialled within 72 h
        assert lead.state == "retry" and (lead.next_at or 0) >= (att.ended_at or 0) + 72 * 3600
        assert d.stats["abandoned"] == 1
        figures = d.live_figures()["drop"]
        assert figures["window_abandoned"] == 1


async def test_predictive_at_the_cap_dials_no_more_than_progressive(tmp_path: Path) -> None:
    async with floor(tmp_path) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        await fl.login("ben", "PJSIP/1002")
        assert fl.campaigns is not None
        await fl.campaign("capped", ANSWER, tmp_path, mode="predictive")
        await seed_window(fl, "capped", answered=100, abandoned=3)  # exactly 3 %: at the cap
        await fl.campaigns.set_state("capped", "running")
        leads = await fl.settled(within=20)
        decisions = [x for x in d.decisions("capped") if x.launched > 0]
        assert decisions
        for dec in decisions:
            assert dec.launched + dec.dialing + dec.waiting <= dec.ready
        assert d.stats["abandoned"] == 0
        assert all(leads[f"a{i}"].state == "done" for i in range(1, 7))


async def seed_window(fl: Floor, campaign: str, *, answered: int, abandoned: int) -> None:
    """Live answers of earlier days in the campaign's legal window (from the database)."""
    now = fl.clock()
    async with make_sessionmaker(fl.engine)() as s, s.begin():
        c = (await s.execute(select(Campaign).where(Campaign.name == campaign))).scalar_one()
        old = Lead(
            campaign_id=c.id,
            ref="history",
            name="",
            numbers=["+4930555999"],
            time_zone="Europe/Berlin",
            state="done",
        )
        s.add(old)
        await s.flush()
        for i in range(answered):
            t = now - 86400 - i * 60
            s.add(
                Attempt(
                    id=f"old-{i}",
                    campaign_id=c.id,
                    lead_id=old.id,
                    number="+4930555999",
                    action_id=f"old-{i}",
                    state="ended",
                    outcome="abandoned" if i < abandoned else "handled",
                    created_at=t - 10,
                    answered_at=t,
                    connected_at=None if i < abandoned else t + 1,
                    ended_at=t + 60,
                    abandoned=i < abandoned,
                )
            )


async def test_deadline_seen_first_by_the_cti_redirects_to_safe_harbor(tmp_path: Path) -> None:
    # the dialplan's CtiAbandoned never reaches us (user events masked): the CTI's own
    # deadline (2 s + grace) counts the call abandoned and moves it to safe-harbor itself
    async with floor(
        tmp_path,
        events="system,call,agent,dialplan,cdr",
        sim={"safe_harbor_seconds": 30.0, "talk_min": 120.0, "talk_max": 120.0},
        abandon_grace_seconds=3.0,
    ) as fl:
        d = await fl.start_dialer()
        await fl.login("anna", "PJSIP/1001")
        assert fl.campaigns is not None
        await fl.campaign("quiet", ANSWER[:1], tmp_path, mode="progressive")
        await fl.campaigns.set_state("quiet", "running")
        await fl.until(lambda: fl.originates, 5)
        await fl.agents.pause("anna", "break")
        await fl.settled(within=10)
        (att,) = await fl.attempts()
        assert att.outcome == "abandoned" and fl.user_events == []
        (redirect,) = fl.redirects
        assert redirect["Context"] == "cti-dialer" and redirect["Exten"] == "safe-harbor"
        assert redirect["Channel"].startswith("PJSIP/trunk-")
        assert d.stats["safe_harbor_redirects"] == 1
        # counted once, when the CTI saw the deadline pass (not again at the hangup)
        assert d.stats["abandoned"] == 1 and att.ended_at is not None
        assert att.ended_at - (att.answered_at or 0) >= 3.0
