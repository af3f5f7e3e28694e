"""Lead lifecycle against a real SQLite file: claim order, compliance at claim, attempts
written before dialling, retries, callbacks, reconciliation after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from crm_bridge.db import make_engine, make_sessionmaker
from dialer.leads import LeadStore
from dialer.models import Attempt, Campaign, Lead
from dialer.retry import RetryPolicy
from tests.dialer.test_engine_env import database

# 10:00 UTC = 11:00 in Berlin: inside the default 08:00-21:00 window
NOON = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[object, Campaign]]:
    async with database(tmp_path, request.param) as url:
        async for pair in _db(url):
            yield pair


async def _db(url: str) -> AsyncIterator[tuple[object, Campaign]]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    async with sessions() as s, s.begin():
        c = Campaign(name="winter", mode="progressive", queue="sales", created_at=0, updated_at=0)
        s.add(c)
        await s.flush()
        for i, (prio, numbers) in enumerate(
            [(0, ["+4930111001"]), (5, ["+4930111002"]), (0, ["+4930111003", "+4915111003"])]
        ):
            s.add(
                Lead(
                    campaign_id=c.id,
                    ref=f"r{i}",
                    name=f"Lead {i}",
                    numbers=numbers,
                    time_zone="Europe/Berlin",
                    priority=prio,
                )
            )
    yield engine, c
    await engine.dispose()


async def lead(engine: object, ref: str) -> Lead:
    async with make_sessionmaker(engine)() as s:  # type: ignore[arg-type]
        return (await s.execute(select(Lead).where(Lead.ref == ref))).scalar_one()


async def test_claim_order_priority_and_no_double_claim(db: tuple[object, Campaign]) -> None:
    engine, c = db
    a = LeadStore(engine, instance="a")  # type: ignore[arg-type]
    b = LeadStore(engine, instance="b")  # type: ignore[arg-type]
    first = await a.claim(c, 1, NOON)
    assert [x.name for x in first] == ["Lead 1"]  # highest priority first
    rest = await b.claim(c, 5, NOON)
    assert sorted(x.name for x in rest) == ["Lead 0", "Lead 2"]
    assert await a.claim(c, 5, NOON) == []  # nothing left to claim twice


async def test_calling_window_checked_at_claim_and_lead_rescheduled(
    db: tuple[object, Campaign],
) -> None:
    engine, c = db
    store = LeadStore(engine)  # type: ignore[arg-type]
    night = datetime(2026, 11, 23, 21, 30, tzinfo=UTC).timestamp()  # 22:30 in Berlin
    assert await store.claim(c, 3, night) == []
    lead0 = await lead(engine, "r0")
    assert lead0.next_at == datetime(2026, 11, 24, 7, 0, tzinfo=UTC).timestamp()


async def test_dnc_and_consent_checked_at_claim(db: tuple[object, Campaign]) -> None:
    engine, c = db

    async def may_contact(number: str, purpose: str) -> tuple[bool, str]:
        assert purpose == "marketing"
        return (number != "+4930111002", "on do-not-call list")

    store = LeadStore(engine, may_contact=may_contact)  # type: ignore[arg-type]
    got = await store.claim(c, 3, NOON)
    assert "+4930111002" not in [x.number for x in got]
    blocked = await lead(engine, "r1")
    assert (blocked.state, blocked.last_outcome) == ("done", "dnc")


async def test_attempt_written_before_dial_then_busy_retry_then_due_first(
    db: tuple[object, Campaign],
) -> None:
    engine, c = db
    store = LeadStore(engine)  # type: ignore[arg-type]
    policy = RetryPolicy()
    (cl,) = await store.claim(c, 1, NOON)
    att = await store.start_attempt(cl, NOON, predicted=0.3)
    async with make_sessionmaker(engine)() as s:  # type: ignore[arg-type]
        row = await s.get(Attempt, att.id)
        assert row is not None and row.state == "dialing" and row.number == cl.number
    state = await store.finish_attempt(att.id, "busy", at=NOON + 20, cause=17, policy=policy)
    assert state == "retry"
    # a second report of the same outcome changes nothing (idempotent)
    assert await store.finish_attempt(att.id, "busy", at=NOON + 21, policy=policy) == "retry"
    l1 = await lead(engine, "r1")
    assert l1.next_at == NOON + 20 + 300 and l1.outcome_counts == {"busy": 1}
    # before the retry is due, fresh leads go out; once due, the retry goes first
    early = await store.claim(c, 1, NOON + 60)
    assert early[0].kind == "new"
    await store.release([early[0].lead_id])
    later = await store.claim(c, 1, NOON + 400)
    assert later[0].lead_id == l1.id


async def test_no_answer_rotates_to_the_next_number(db: tuple[object, Campaign]) -> None:
    engine, c = db
    store = LeadStore(engine)  # type: ignore[arg-type]
    claims = await store.claim(c, 3, NOON)
    two = next(x for x in claims if x.name == "Lead 2")
    att = await store.start_attempt(two, NOON, None)
    await store.finish_attempt(att.id, "no-answer", at=NOON + 25, policy=RetryPolicy())
    l2 = await lead(engine, "r2")
    assert l2.number_index == 1
    again = await store.claim(c, 3, NOON + 25 + 7200)
    assert [x.number for x in again if x.lead_id == l2.id] == ["+4915111003"]


async def test_abandoned_number_not_redialled_for_72h_and_window_counts(
    db: tuple[object, Campaign],
) -> None:
    engine, c = db
    store = LeadStore(engine)  # type: ignore[arg-type]
    (cl,) = await store.claim(c, 1, NOON)
    att = await store.start_attempt(cl, NOON, None)
    await store.mark_answered(att.id, NOON + 5)
    await store.finish_attempt(att.id, "abandoned", at=NOON + 7, policy=RetryPolicy())
    assert await store.abandon_window(c, NOON + 10) == (1, 1)
    # the abandoned retry rule says 72 h; even if rescheduled earlier the claim refuses
    await store.schedule_callback(cl.lead_id, NOON + 3600, None)
    got = await store.claim(c, 3, NOON + 3600)
    assert cl.lead_id not in [x.lead_id for x in got]
    figs = await store.campaign_figures(c, NOON + 10)
    assert figs["abandoned"] == 1 and figs["abandon_rate_window"] == 1.0


async def test_reconcile_after_restart_keeps_live_and_closes_lost(
    db: tuple[object, Campaign],
) -> None:
    engine, c = db
    store = LeadStore(engine)  # type: ignore[arg-type]
    claims = await store.claim(c, 3, NOON)
    live = await store.start_attempt(claims[0], NOON, None)
    gone = await store.start_attempt(claims[1], NOON, None)
    # claims[2] was claimed but the process died before its attempt was written
    restarted = LeadStore(engine)  # type: ignore[arg-type]
    res = await restarted.reconcile(c.id, {live.id}, NOON + 30, RetryPolicy())
    assert res == {"lost": 1, "kept": 1, "released": 1}
    async with make_sessionmaker(engine)() as s:  # type: ignore[arg-type]
        g = await s.get(Attempt, gone.id)
        assert g is not None and g.outcome == "lost"
        gone_lead = await s.get(Lead, gone.lead_id)
        assert gone_lead is not None and gone_lead.state == "retry"
        assert gone_lead.next_at == NOON + 30 + 600
        lv = await s.get(Attempt, live.id)
        assert lv is not None and lv.state == "dialing"
    # nothing is dialled twice: the live lead cannot be claimed again
    again = await restarted.claim(c, 3, NOON + 31)
    assert claims[0].lead_id not in [x.lead_id for x in again]
