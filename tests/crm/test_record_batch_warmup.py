"""BuiltinCrm.warm_up (called by the daemon at start, before the first pop): it reads, never
writes, and works on an empty store as on a full one."""

from __future__ import annotations

from sqlalchemy import text

from crm_bridge.adapter import Identity, NewCustomer, NewPhone
from crm_bridge.store import BuiltinCrm


async def _counts(crm: BuiltinCrm) -> list[int]:
    out = []
    async with crm.engine.connect() as c:
        for t in ("crm_customer", "crm_interaction", "crm_audit"):
            out.append(int((await c.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()))
    return out


async def test_warm_up_reads_only_empty_or_not(crm: BuiltinCrm) -> None:
    await crm.warm_up()
    assert await _counts(crm) == [0, 0, 0]
    await crm.create_customer(
        NewCustomer(name="Anna Müller", phones=[NewPhone("030 123456", "landline")]),
        actor="admin",
    )
    before = await _counts(crm)
    await crm.warm_up()
    assert await _counts(crm) == before
    found = await crm.identify(Identity(number="+4930123456"))
    assert found.status == "one" and found.card is not None and found.card.name == "Anna Müller"
