"""Caller identification through the adapter interface, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.adapter import CrmAdapter, Identity, NewCustomer, NewPhone
from crm_bridge.settings import CrmSettings
from crm_bridge.store import BuiltinCrm


async def _count(crm: BuiltinCrm, table: str) -> int:
    async with crm.engine.connect() as c:
        return int((await c.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


@pytest.fixture
async def people(crm: BuiltinCrm) -> dict[str, str]:
    anna = await crm.create_customer(
        NewCustomer(
            name="Anna Müller",
            phones=[NewPhone("030 / 123 456", "landline"), NewPhone("0171-1234567", "mobile")],
            emails=["Anna@Example.com"],
            external_ids={"account": "12345"},
        ),
        actor="admin",
    )
    bernd = await crm.create_customer(
        NewCustomer(name="Bernd Müller", phones=[NewPhone("+49 30 123456", "landline")]),
        actor="admin",
    )
    carl = await crm.create_customer(
        NewCustomer(
            name="Carl Clever",
            phones=[NewPhone("(030) 555 0101 x12", "work")],
            external_ids={"account": "999", "card": "4000-1"},
        ),
        actor="admin",
    )
    return {"anna": anna.id, "bernd": bernd.id, "carl": carl.id}


def test_builtin_is_a_crm_adapter(crm: BuiltinCrm) -> None:
    assert isinstance(crm, CrmAdapter)


@pytest.mark.parametrize(
    "number", ["+491711234567", "00491711234567", "01711234567", "0171 123 45 67", "1711234567"]
)
async def test_one_by_any_number_format(
    crm: BuiltinCrm, people: dict[str, str], number: str
) -> None:
    r = await crm.identify(Identity(number=number))
    assert r.status == "one"
    assert r.card is not None and r.card.id == people["anna"]
    assert r.number_e164 == "+491711234567"
    assert r.candidates[0].evidence == ("phone +491711234567 (mobile)",)
    # the card is complete
    assert {p.e164 for p in r.card.phones} == {"+4930123456", "+491711234567"}
    assert r.card.emails == ("anna@example.com",)
    assert r.card.external_ids == (("account", "12345"),)
    json.dumps(r.to_dict())  # JSON-able as is


@pytest.mark.parametrize("number", ["+49305550101", "030 5550101", "305550101", "5550101"])
async def test_number_stored_with_extension_matches(
    crm: BuiltinCrm, people: dict[str, str], number: str
) -> None:
    r = await crm.identify(Identity(number=number))
    assert r.status == "one" and r.card is not None and r.card.id == people["carl"]
    assert r.card.phones[0].extension == "12"


async def test_shared_line_gives_ranked_candidates_never_the_first(
    crm: BuiltinCrm, people: dict[str, str]
) -> None:
    for number in ["+4930123456", "004930123456", "030123456", "30123456", "123456"]:
        r = await crm.identify(Identity(number=number))
        assert r.status == "many", number
        assert r.card is None
        ids = [c.customer.id for c in r.candidates]
        assert sorted(ids) == sorted([people["anna"], people["bernd"]])
        for c in r.candidates:
            assert c.evidence == ("phone +4930123456 (landline)",)


async def test_ivr_id_settles_a_shared_line(crm: BuiltinCrm, people: dict[str, str]) -> None:
    r = await crm.identify(Identity(number="030123456", ivr={"account": "12345"}))
    assert r.status == "one" and r.card is not None and r.card.id == people["anna"]
    assert set(r.candidates[0].evidence) == {"phone +4930123456 (landline)", "account 12345"}


async def test_conflict_when_number_and_ivr_disagree(
    crm: BuiltinCrm, people: dict[str, str]
) -> None:
    r = await crm.identify(Identity(number="01711234567", ivr={"account": "999"}))
    assert r.status == "conflict"
    # what the caller typed wins the card; both are listed with their evidence
    assert r.card is not None and r.card.id == people["carl"]
    ev = {c.customer.id: c.evidence for c in r.candidates}
    assert ev[people["carl"]] == ("account 999",)
    assert ev[people["anna"]] == ("phone +491711234567 (mobile)",)
    assert r.reason and "different customers" in r.reason


async def test_conflict_between_two_ivr_ids(crm: BuiltinCrm, people: dict[str, str]) -> None:
    r = await crm.identify(Identity(ivr={"account": "12345", "card": "4000-1"}))
    assert r.status == "conflict"
    assert {c.customer.id for c in r.candidates} == {people["anna"], people["carl"]}


async def test_ivr_only_and_email(crm: BuiltinCrm, people: dict[str, str]) -> None:
    r = await crm.identify(Identity(ivr={"ACCOUNT ": " 999 "}))
    assert r.status == "one" and r.card is not None and r.card.id == people["carl"]
    assert r.withheld is False
    r = await crm.identify(Identity(email=" ANNA@example.com"))
    assert r.status == "one" and r.card is not None and r.card.id == people["anna"]
    assert r.candidates[0].evidence == ("email anna@example.com",)


@pytest.mark.parametrize("number", [None, "", "anonymous", "<unknown>", "Restricted"])
async def test_withheld_is_none_and_creates_nothing(
    crm: BuiltinCrm, people: dict[str, str], number: str | None
) -> None:
    before = (await _count(crm, "crm_customer"), await _count(crm, "crm_audit"))
    r = await crm.identify(Identity(number=number))
    assert r.status == "none" and r.withheld is True
    assert r.number_e164 is None and r.card is None and r.candidates == ()
    assert (await _count(crm, "crm_customer"), await _count(crm, "crm_audit")) == before


async def test_unknown_and_garbage_numbers_are_none(
    crm: BuiltinCrm, people: dict[str, str]
) -> None:
    before = await _count(crm, "crm_customer")
    r = await crm.identify(Identity(number="+49 30 999999"))
    assert r.status == "none" and not r.withheld and r.number_e164 == "+4930999999"
    r = await crm.identify(Identity(number="'; DROP TABLE crm_phone; --"))
    assert r.status == "none" and not r.withheld and r.number_e164 is None
    assert r.reason and "not a valid number" in r.reason
    r = await crm.identify(Identity(number="030123456", ivr={"account": "nope", "x": "y" * 500}))
    assert r.status == "many"  # unknown/oversize ids are ignored, the number still counts
    assert await _count(crm, "crm_customer") == before


async def test_many_is_capped_with_a_reason(engine: AsyncEngine, people: dict[str, str]) -> None:
    crm = BuiltinCrm(engine, CrmSettings(default_area="30", max_candidates=3))
    try:
        for i in range(4):
            await crm.create_customer(
                NewCustomer(name=f"Tenant {i}", phones=["+49 30 123456"]), actor="t"
            )
        r = await crm.identify(Identity(number="030123456"))
        assert r.status == "many" and len(r.candidates) == 3
        assert r.reason and "more than 3" in r.reason
    finally:
        await crm.close()


async def test_card_carries_consent_cases_and_recent(
    crm: BuiltinCrm, people: dict[str, str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from crm_bridge.adapter import InteractionRecord, NewCase

    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    ids = []
    for i in range(3):
        ids.append(
            await crm.record_interaction(
                InteractionRecord(
                    call_id=f"c{i}",
                    direction="inbound",
                    offered_at=t0 + timedelta(hours=i),
                    agent="alice",
                    customer_id=people["anna"],
                )
            )
        )
    await crm.update_interaction(ids[2], actor="alice", new_case=NewCase(type="complaint"))
    await crm.record_consent(
        people["anna"],
        channel="phone",
        purpose="marketing",
        granted=True,
        source="web",
        actor="admin",
    )
    r = await crm.identify(Identity(number="+491711234567"))
    assert r.card is not None
    assert [i.call_id for i in r.card.recent] == ["c2", "c1", "c0"]
    assert r.card.recent[0].case_ids == (r.card.open_cases[0].id,)
    assert r.card.open_cases[0].type == "complaint"
    assert [(c.purpose, c.granted) for c in r.card.consent] == [("marketing", True)]


async def test_degraded_when_the_database_does_not_answer(
    engine: AsyncEngine, people: dict[str, str]
) -> None:
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite readers never wait for a writer (WAL); see the next tests")
    crm = BuiltinCrm(engine, CrmSettings(default_area="30", lookup_timeout=0.2))
    try:
        async with engine.connect() as c:
            await c.execute(text("LOCK TABLE crm_phone IN ACCESS EXCLUSIVE MODE"))
            t = time.perf_counter()
            r = await crm.identify(Identity(number="01711234567"))
            took = time.perf_counter() - t
            await c.rollback()
        assert r.status == "degraded" and r.reason == "crm timeout"
        assert r.number_e164 == "+491711234567" and r.card is None
        assert took < 0.5
        r = await crm.identify(Identity(number="01711234567"))
        assert r.status == "one"
    finally:
        await crm.close()


async def test_degraded_when_the_database_fails(
    engine: AsyncEngine, people: dict[str, str]
) -> None:
    crm = BuiltinCrm(engine, CrmSettings(default_area="30", lookup_timeout=0.5))
    try:
        assert (await crm.identify(Identity(number="01711234567"))).status == "one"
        async with engine.begin() as c:
            await c.execute(text("ALTER TABLE crm_phone RENAME TO crm_phone_gone"))
        try:
            r = await crm.identify(Identity(number="01711234567"))
            assert r.status == "degraded"
            assert r.number_e164 == "+491711234567"
            assert r.reason and r.reason.startswith("crm error")
        finally:
            async with engine.begin() as c:
                await c.execute(text("ALTER TABLE crm_phone_gone RENAME TO crm_phone"))
        assert (await crm.identify(Identity(number="01711234567"))).status == "one"
    finally:
        await crm.close()


async def test_inline_reader_is_interrupted_at_the_deadline(
    crm: BuiltinCrm, people: dict[str, str]
) -> None:
    """The SQLite hot path runs on the event loop; a runaway statement must not hold it."""
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("the inline reader exists on SQLite only")
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )

    def runaway(rd: Any) -> Any:
        return rd.conn.execute(endless).fetchall()

    t = time.perf_counter()
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        await crm._read_fast(runaway, limit_s=0.05)
    assert time.perf_counter() - t < 0.5
    # the reader still works afterwards
    assert (await crm.identify(Identity(number="01711234567"))).status == "one"


async def test_phone_lookup_is_one_indexed_search(crm: BuiltinCrm, people: dict[str, str]) -> None:
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("query plan text is SQLite's")
    async with crm.engine.connect() as c:
        plan = (
            await c.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT c.id, p.kind FROM crm_phone p "
                    "JOIN crm_customer c ON c.id = p.customer_id WHERE p.e164 = '+4930123456'"
                )
            )
        ).all()
    details = " | ".join(str(r[-1]) for r in plan)
    assert "ix_crm_phone_lookup" in details and "SCAN" not in details, details


async def test_concurrent_lookups_while_writing(crm: BuiltinCrm, people: dict[str, str]) -> None:
    async def writer() -> None:
        for i in range(10):
            await crm.create_customer(
                NewCustomer(name=f"New {i}", phones=[f"+49 40 1234{i:03d}"]), actor="w"
            )

    async def reader() -> list[str]:
        out: list[str] = []
        for _ in range(30):
            out.append((await crm.identify(Identity(number="01711234567"))).status)
            await asyncio.sleep(0)
        return out

    _, statuses = await asyncio.gather(writer(), reader())
    assert set(statuses) == {"one"}
    r = await crm.identify(Identity(number="040 1234009"))
    assert r.status == "one" and r.card is not None and r.card.name == "New 9"


async def test_store_used_from_another_thread(crm: BuiltinCrm, people: dict[str, str]) -> None:
    """A CLI may drive the same store object from a worker thread's own loop."""
    from concurrent.futures import ThreadPoolExecutor

    if crm.engine.dialect.name != "sqlite":
        pytest.skip("asyncpg connection pools belong to one event loop")

    assert (await crm.identify(Identity(number="01711234567"))).status == "one"

    def other_thread() -> str:
        return asyncio.run(crm.identify(Identity(number="01711234567"))).status

    with ThreadPoolExecutor(1) as pool:
        assert await asyncio.get_running_loop().run_in_executor(pool, other_thread) == "one"
    assert (await crm.identify(Identity(number="01711234567"))).status == "one"
