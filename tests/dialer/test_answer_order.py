"""Leads ordered by the chance of a live answer now (within a priority), learnt from the
campaign's own attempts by the called party's local hour; FIFO while the data is thin. Also
the machine block at claim time and its waiver when an agent is guaranteed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.db import make_engine, make_sessionmaker
from dialer.leads import (
    ODDS_LOOKBACK_SECONDS,
    ODDS_REFRESH_SECONDS,
    AnswerOdds,
    LeadStore,
    line_type,
)
from dialer.models import Attempt, Campaign, Lead
from tests.dialer.test_engine_env import database

# 16:00 UTC = 16:00 in Lisbon, 18:00 in Helsinki: both inside 08:00-21:00
NOW = datetime(2026, 11, 23, 16, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
LISBON, HELSINKI = "Europe/Lisbon", "Europe/Helsinki"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    async with database(tmp_path, request.param) as url:
        eng = make_engine(url)
        try:
            yield eng
        finally:
            await eng.dispose()


async def campaign(engine: AsyncEngine, name: str = "odds", mode: str = "progressive") -> Campaign:
    async with make_sessionmaker(engine)() as s, s.begin():
        c = Campaign(name=name, mode=mode, queue="sales", created_at=0, updated_at=0)
        s.add(c)
    return c


async def add_leads(engine: AsyncEngine, c: Campaign, specs: list[tuple[str, str, int]]) -> None:
    """(ref, time zone, priority) in this order: ids grow, so FIFO is the list order."""
    async with make_sessionmaker(engine)() as s, s.begin():
        for i, (ref, tz, prio) in enumerate(specs):
            prefix = "+351211" if tz == LISBON else "+358931"
            s.add(
                Lead(
                    campaign_id=c.id,
                    ref=ref,
                    name=ref,
                    numbers=[f"{prefix}{i:05d}"],
                    time_zone=tz,
                    priority=prio,
                )
            )


async def history(
    engine: AsyncEngine,
    c: Campaign,
    tz: str,
    *,
    days: int,
    per_day: int,
    live_share: float,
    line: str = "",
) -> None:
    """Earlier days' attempts at this time of day to leads in `tz`: the first `live_share`
    of each day's calls were answered by a person, the rest no answer."""
    async with make_sessionmaker(engine)() as s, s.begin():
        old = Lead(
            campaign_id=c.id,
            ref=f"history-{tz}-{line}",
            name="",
            numbers=["+4930555999"],
            time_zone=tz,
            state="done",
        )
        s.add(old)
        await s.flush()
        live_per_day = round(per_day * live_share)
        for d in range(1, days + 1):
            for i in range(per_day):
                t = NOW - d * DAY + i * 30
                aid = f"h-{tz}-{line}-{d}-{i}"
                s.add(
                    Attempt(
                        id=aid[:64],
                        campaign_id=c.id,
                        lead_id=old.id,
                        number="+4930555999",
                        action_id=aid[:64],
                        state="ended",
                        outcome="handled" if i < live_per_day else "no-answer",
                        created_at=t,
                        answered_at=t + 5 if i < live_per_day else None,
                        ended_at=t + 60,
                        line=line,
                    )
                )


FRESH = [
    ("pt1", LISBON, 0),
    ("pt2", LISBON, 0),
    ("pt3", LISBON, 0),
    ("fi1", HELSINKI, 0),
    ("fi2", HELSINKI, 0),
    ("fi3", HELSINKI, 0),
]


async def test_leads_whose_local_hour_answers_more_are_claimed_first(
    engine: AsyncEngine,
) -> None:
    c = await campaign(engine)
    # at this time of day Helsinki (18:00 local) answers 60 %, Lisbon (16:00) 10 %
    await history(engine, c, HELSINKI, days=10, per_day=10, live_share=0.6)
    await history(engine, c, LISBON, days=10, per_day=10, live_share=0.2)
    await add_leads(engine, c, FRESH)
    store = LeadStore(engine)
    got = await store.claim(c, 3, NOW)
    assert [x.name for x in got] == ["fi1", "fi2", "fi3"]  # FIFO within the better hour
    assert [x.name for x in await store.claim(c, 3, NOW)] == ["pt1", "pt2", "pt3"]

    odds = await store.answer_odds(c, NOW)
    assert odds.active and odds.attempts == 200
    assert odds.average == pytest.approx(80 / 200)
    table = {r["local_hour"]: r for r in odds.explain()}
    assert (table[18]["attempts"], table[18]["live"]) == (100, 60)
    assert (table[16]["attempts"], table[16]["live"]) == (100, 20)
    # Beta prior worth 20 attempts at the campaign average: (60 + 20 * 0.4) / 120
    assert table[18]["estimate"] == pytest.approx(68 / 120)
    assert table[16]["estimate"] == pytest.approx(28 / 120)
    assert not table[3]["from_data"] and table[3]["estimate"] == pytest.approx(0.4)


async def test_with_little_data_the_order_stays_first_in_first_out(
    engine: AsyncEngine,
) -> None:
    c = await campaign(engine)
    # the same contrast, but only 30 calls in all: not enough to reorder anything
    await history(engine, c, HELSINKI, days=3, per_day=5, live_share=0.6)
    await history(engine, c, LISBON, days=3, per_day=5, live_share=0.2)
    await add_leads(engine, c, FRESH)
    store = LeadStore(engine)
    odds = await store.answer_odds(c, NOW)
    assert not odds.active
    assert odds.chance(HELSINKI, NOW) == odds.chance(LISBON, NOW) == pytest.approx(0.4)
    got = await store.claim(c, 4, NOW)
    assert [x.name for x in got] == ["pt1", "pt2", "pt3", "fi1"]


async def test_priority_and_due_retries_still_come_before_the_estimate(
    engine: AsyncEngine,
) -> None:
    c = await campaign(engine)
    await history(engine, c, HELSINKI, days=10, per_day=10, live_share=0.6)
    await history(engine, c, LISBON, days=10, per_day=10, live_share=0.2)
    await add_leads(
        engine,
        c,
        [("pt-high", LISBON, 5), ("fi-low", HELSINKI, 0), ("pt-retry", LISBON, 0), *FRESH],
    )
    async with make_sessionmaker(engine)() as s, s.begin():
        retry = (await s.execute(select(Lead).where(Lead.ref == "pt-retry"))).scalar_one()
        retry.state, retry.next_at = "retry", NOW - 600
    store = LeadStore(engine)
    got = [x.name for x in await store.claim(c, 5, NOW)]
    # the due retry first (whatever its odds), then priority 5, then the better hour
    assert got == ["pt-retry", "pt-high", "fi-low", "fi1", "fi2"]


async def test_estimate_is_cached_per_campaign_for_a_few_minutes(engine: AsyncEngine) -> None:
    c = await campaign(engine)
    await history(engine, c, HELSINKI, days=3, per_day=5, live_share=0.6)
    store = LeadStore(engine)
    first = await store.answer_odds(c, NOW)
    assert first.attempts == 15
    await history(engine, c, LISBON, days=10, per_day=10, live_share=0.2)
    # claims in between reuse the estimate: no aggregate query per claim
    assert await store.answer_odds(c, NOW + ODDS_REFRESH_SECONDS - 1) is first
    later = await store.answer_odds(c, NOW + ODDS_REFRESH_SECONDS + 1)
    assert later is not first and later.attempts == 115


def test_estimate_uses_the_called_partys_local_hour() -> None:
    # 300 calls made at 09:00 UTC: 10:00 in Berlin, 04:00 in New York
    bucket = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() // 3600
    odds = AnswerOdds.from_counts(
        [("Europe/Berlin", bucket, 150, 90), ("America/New_York", bucket, 150, 15)]
    )
    assert odds.counts[10] == (150, 90) and odds.counts[4] == (150, 15)
    later = datetime(2026, 11, 23, 15, 0, tzinfo=UTC).timestamp()  # 10:00 in New York
    assert odds.chance("America/New_York", later) > odds.chance("Europe/Berlin", later)
    # an unknown zone or an hour without data: the campaign average
    assert odds.chance("Mars/Olympus", later) == pytest.approx(105 / 300)
    assert AnswerOdds.from_counts([]).chance("Europe/Berlin", later) == 0.0


async def test_machine_block_at_claim_unless_an_agent_is_guaranteed(
    engine: AsyncEngine,
) -> None:
    c = await campaign(engine)
    p = await campaign(engine, "look", mode="preview")
    await add_leads(engine, c, [("m1", LISBON, 0), ("m2", LISBON, 0)])
    await add_leads(engine, p, [("m3", LISBON, 0)])
    async with make_sessionmaker(engine)() as s, s.begin():
        leads = {x.ref: x for x in (await s.execute(select(Lead))).scalars()}
        for ref in ("m1", "m2", "m3"):
            lead = leads[ref]
            lead.state, lead.next_at = "retry", NOW - 60
            s.add(
                Attempt(
                    id=f"mach-{ref}",
                    campaign_id=lead.campaign_id,
                    lead_id=lead.id,
                    number=lead.numbers[0],
                    action_id=f"mach-{ref}",
                    state="ended",
                    outcome="machine",
                    created_at=NOW - 4 * 3600 - 30,
                    answered_at=NOW - 4 * 3600 - 20,
                    ended_at=NOW - 4 * 3600,
                )
            )
    store = LeadStore(engine)
    # a paced call: a machine was detected on the number 4 h ago -> not before 24 h
    assert await store.claim(c, 2, NOW) == []
    async with make_sessionmaker(engine)() as s:
        m1 = (await s.execute(select(Lead).where(Lead.ref == "m1"))).scalar_one()
    assert m1.state == "retry" and m1.next_at == pytest.approx(NOW - 4 * 3600 + 24 * 3600)
    # an agent-first call (a callback for an agent) and a preview have an agent on the line
    got = await store.claim_lead(c, leads["m2"].id, NOW)
    assert got is not None and got.name == "m2"
    assert [x.name for x in await store.claim(p, 1, NOW)] == ["m3"]
    # without the guarantee the block holds for claim_lead too
    assert await store.claim_lead(c, leads["m1"].id, NOW, agent_guaranteed=False) is None


async def test_estimate_forgets_attempts_older_than_its_lookback(engine: AsyncEngine) -> None:
    c = await campaign(engine)
    await history(engine, c, HELSINKI, days=20, per_day=10, live_share=0.6)
    odds = await LeadStore(engine).answer_odds(c, NOW)
    assert odds.attempts == ODDS_LOOKBACK_SECONDS // DAY * 10  # days 1..14 of 20
    async with engine.connect() as conn:
        names = await conn.run_sync(
            lambda sync: {i["name"] for i in inspect(sync).get_indexes("dialer_attempt")}
        )
    assert "ix_dialer_attempt_created" in names  # the migration's index for this query


async def test_mobiles_first_when_they_answer_more_at_this_hour(engine: AsyncEngine) -> None:
    c = await campaign(engine)
    # Berlin, 17:00 local: mobiles answered 60 %, landlines 20 %
    await history(engine, c, "Europe/Berlin", days=10, per_day=10, live_share=0.6, line="mobile")
    await history(engine, c, "Europe/Berlin", days=10, per_day=10, live_share=0.2, line="fixed")
    async with make_sessionmaker(engine)() as s, s.begin():
        for ref, number in (
            ("land1", "+4930123451"),
            ("land2", "+4930123452"),
            ("mob1", "+4915112345671"),
            ("mob2", "+4915112345672"),
        ):
            s.add(
                Lead(
                    campaign_id=c.id,
                    ref=ref,
                    name=ref,
                    numbers=[number],
                    time_zone="Europe/Berlin",
                )
            )
    store = LeadStore(engine)
    odds = await store.answer_odds(c, NOW)
    assert odds.chance("Europe/Berlin", NOW, "mobile") > odds.chance("Europe/Berlin", NOW)
    assert odds.chance("Europe/Berlin", NOW, "fixed") < odds.chance("Europe/Berlin", NOW)
    got = await store.claim(c, 2, NOW)
    assert [x.name for x in got] == ["mob1", "mob2"]
    # the attempt records the kind of line it called, for the next estimate
    attempt = await store.start_attempt(got[0], NOW, None)
    async with make_sessionmaker(engine)() as s:
        row = await s.get(Attempt, attempt.id)
    assert row is not None and row.line == "mobile"
    assert line_type("+4930123451") == "fixed" and line_type("+12015550123") == ""
