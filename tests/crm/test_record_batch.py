"""BuiltinCrm.record_interactions: a batch of legs in one transaction leaves exactly what
recording them one by one leaves (rows and audit entries), all or nothing, on SQLite and
PostgreSQL (the ``crm`` fixture runs each test on both)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from crm_bridge.adapter import InteractionRecord, NewCustomer, NotFound, ValidationFailed
from crm_bridge.models import interaction_t
from crm_bridge.store import BuiltinCrm

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def leg(prefix: str, call: str, agent: str, **kw: Any) -> InteractionRecord:
    args: dict[str, Any] = {
        "call_id": f"{prefix}{call}",
        "leg": agent,
        "agent": agent,
        "direction": "inbound",
        "offered_at": T0,
        **kw,
    }
    return InteractionRecord(**args)


def script(prefix: str, customer: str) -> list[list[InteractionRecord]]:
    """Two batches touching new legs, a leg twice in one batch, a re-record that must not
    erase, one that changes nothing, and fill-ins."""
    return [
        [
            leg(prefix, "1", "alice", number="030 123456", queue="support"),
            leg(prefix, "2", "bob", customer_id=customer, number="+4930999999"),
            # the same leg again in the same batch: the answer arrives
            leg(prefix, "1", "alice", answered_at=T0 + timedelta(seconds=4)),
            leg(prefix, "3", "carol", direction="outbound", campaign="spring"),
        ],
        [
            # later events: the start stays, the queue is not erased, the end is recorded
            leg(
                prefix,
                "1",
                "alice",
                offered_at=T0 + timedelta(seconds=9),
                ended_at=T0 + timedelta(seconds=60),
                outcome="completed",
            ),
            leg(prefix, "2", "bob", customer_id=customer, number="+4930999999"),  # no change
            leg(prefix, "3", "carol", direction="outbound", notes="wants a call back"),
            leg(prefix, "1", "dave", answered_at=T0 + timedelta(seconds=70)),  # a transfer
        ],
    ]


def unprefixed(after: dict[str, Any] | None, prefix: str) -> dict[str, Any] | None:
    if after is None or "call_id" not in after:
        return after
    return {**after, "call_id": after["call_id"].removeprefix(prefix)}


async def rows_and_audit(crm: BuiltinCrm, prefix: str) -> list[tuple[Any, ...]]:
    """Each leg of the calls under `prefix`, without ids, stamps and the prefix, with its
    audit entries (oldest first, without times)."""
    async with crm.engine.connect() as c:
        rows = (
            (
                await c.execute(
                    select(interaction_t)
                    .where(interaction_t.c.call_id.like(f"{prefix}%"))
                    .order_by(interaction_t.c.call_id, interaction_t.c.leg)
                )
            )
            .mappings()
            .all()
        )
    out = []
    for r in rows:
        data = {
            k: v for k, v in r.items() if k not in ("id", "created_at", "updated_at", "call_id")
        }
        audit = await crm.audit_log(entity="interaction", entity_id=str(r["id"]))
        trail = [
            (a.actor, a.action, a.before, unprefixed(a.after, prefix)) for a in reversed(audit)
        ]
        out.append((r["call_id"][len(prefix) :], sorted(data.items()), trail))
    return out


async def test_a_batch_leaves_what_one_by_one_leaves(crm: BuiltinCrm) -> None:
    card = await crm.create_customer(NewCustomer(name="Anna Müller"), actor="admin")
    ids_one: list[str] = []
    for batch in script("s:", card.id):
        for rec in batch:
            ids_one.append(await crm.record_interaction(rec))
    ids_many: list[str] = []
    for batch in script("b:", card.id):
        ids_many.extend(await crm.record_interactions(batch))
    one = await rows_and_audit(crm, "s:")
    many = await rows_and_audit(crm, "b:")
    assert many == one
    assert len(one) == 4  # alice, bob, carol, dave: one row per leg
    # the ids answer each record in order: the same leg always gets the same id
    assert len(set(ids_many)) == 4 and ids_many[0] == ids_many[2] == ids_many[4]
    assert [ids_one.index(i) for i in ids_one] == [ids_many.index(i) for i in ids_many]
    alice = next(r for r in many if r[0] == "1" and dict(r[1])["leg"] == "alice")
    fields = dict(alice[1])
    assert fields["offered_at"] == T0 and fields["queue"] == "support"
    assert fields["outcome"] == "completed" and fields["number"] == "+4930123456"
    assert [a[1] for a in alice[2]] == ["create", "update", "update"]
    bob = next(r for r in many if dict(r[1])["leg"] == "bob")
    assert [a[1] for a in bob[2]] == ["create"]  # recorded again unchanged: nothing logged
    assert dict(bob[1])["customer_id"] == int(card.id)


async def test_a_bad_record_fails_the_whole_batch_and_writes_nothing(crm: BuiltinCrm) -> None:
    good = leg("x:", "1", "alice")
    async with crm.engine.connect() as c:
        before = (await c.execute(text("SELECT count(*) FROM crm_interaction"))).scalar_one()
    with pytest.raises(NotFound):
        await crm.record_interactions([good, leg("x:", "2", "bob", customer_id="999999")])
    with pytest.raises(ValidationFailed) as e:
        await crm.record_interactions([good, leg("x:", "3", "carol", direction="sideways")])
    assert e.value.field == "direction"
    with pytest.raises(ValidationFailed):
        await crm.record_interactions([good, replace(good, call_id="")])
    async with crm.engine.connect() as c:
        after = (await c.execute(text("SELECT count(*) FROM crm_interaction"))).scalar_one()
    assert after == before
    assert await crm.audit_log(entity="interaction") == []
    assert await crm.record_interactions([]) == []


async def test_a_large_batch_and_its_updates(crm: BuiltinCrm) -> None:
    n = 1200  # more than one IN list's worth
    first = [leg("L:", str(i), f"a{i % 7}") for i in range(n)]
    ids = await crm.record_interactions(first)
    assert len(set(ids)) == n
    ended = [replace(r, ended_at=T0 + timedelta(minutes=1), outcome="completed") for r in first]
    assert await crm.record_interactions(ended) == ids
    assert await crm.record_interactions(ended) == ids  # nothing new: no audit entry
    async with crm.engine.connect() as c:
        done = (
            await c.execute(
                text("SELECT count(*) FROM crm_interaction WHERE outcome = 'completed'")
            )
        ).scalar_one()
        grouped = await c.execute(
            text("SELECT action, count(*) FROM crm_audit GROUP BY action ORDER BY action")
        )
        actions: dict[str, int] = {str(a): int(n) for a, n in grouped.all()}
    assert done == n
    assert actions == {"create": n, "update": n}


async def test_concurrent_batches_of_the_same_legs_make_one_row_each(crm: BuiltinCrm) -> None:
    recs = [leg("C:", str(i), "alice") for i in range(10)]
    answers = await asyncio.gather(*(crm.record_interactions(recs) for _ in range(4)))
    assert all(a == answers[0] for a in answers)
    async with crm.engine.connect() as c:
        n = (
            await c.execute(text("SELECT count(*) FROM crm_interaction WHERE call_id LIKE 'C:%'"))
        ).scalar_one()
    assert n == 10


async def test_the_sqlite_writer_thread_stores_what_sqlalchemy_stores(crm: BuiltinCrm) -> None:
    """On a SQLite file the batches run on the store's writer thread in plain sqlite3; its
    rows, their stored text (dates, JSON) and audit entries must be the SQLAlchemy path's."""
    if crm._writer is None:
        pytest.skip("SQLite files only")
    card = await crm.create_customer(NewCustomer(name="Anna Müller"), actor="admin")
    for batch in script("w:", card.id):  # the writer thread
        await crm.record_interactions(batch)
    writer, crm._writer = crm._writer, None
    try:
        for batch in script("q:", card.id):  # SQLAlchemy through aiosqlite
            await crm.record_interactions(batch)
    finally:
        crm._writer = writer
    assert await rows_and_audit(crm, "w:") == await rows_and_audit(crm, "q:")

    async def stored(prefix: str) -> list[tuple[Any, ...]]:
        async with crm.engine.connect() as c:
            legs = await c.exec_driver_sql(
                "SELECT substr(call_id, 3), leg, direction, channel, number, did, offered_at,"
                " answered_at, ended_at, queue, agent, campaign, outcome, notes, disposition,"
                " customer_id, typeof(created_at), length(created_at) FROM crm_interaction"
                " WHERE call_id LIKE ? ORDER BY call_id, leg",
                (f"{prefix}%",),
            )
            audit = await c.exec_driver_sql(
                "SELECT a.action, a.actor, a.before, replace(a.after, ?, ''), typeof(a.at),"
                " length(a.at) FROM crm_audit a JOIN crm_interaction i"
                " ON a.entity = 'interaction' AND a.entity_id = CAST(i.id AS TEXT)"
                " WHERE i.call_id LIKE ? ORDER BY i.call_id, i.leg, a.id",
                (prefix, f"{prefix}%"),
            )
            return [tuple(r) for r in legs.all()] + [tuple(r) for r in audit.all()]

    assert await stored("w:") == await stored("q:")
