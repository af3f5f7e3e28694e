"""The HTTP adapter against a fake external CRM on 127.0.0.1: mapping, cache, timeouts, the
circuit breaker, and degraded answers that never raise into the call path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from crm_bridge.adapter import (
    CrmAdapter,
    CrmUnavailable,
    Identity,
    InteractionRecord,
    NewCustomer,
)
from crm_bridge.http_adapter import HttpCrmAdapter
from crm_bridge.settings import CrmSettings, HttpCrmSettings
from crm_bridge.store import BuiltinCrm
from tests.crm.fake_crm import FIELD_MAP, FakeCrm


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _settings(fake: FakeCrm, **http: object) -> CrmSettings:
    h = {
        "base_url": fake.url,
        "field_map": FIELD_MAP,
        "timeout": 0.3,
        "cache_ttl": 30.0,
        "breaker_failures": 3,
        "breaker_reset": 10.0,
        "auth_header": "Authorization: Bearer s3cret",
        **http,
    }
    return CrmSettings(
        default_area="30", lookup_timeout=0.2, http=HttpCrmSettings.model_validate(h)
    )


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def adapter(fake: FakeCrm, clock: Clock) -> AsyncIterator[HttpCrmAdapter]:
    a = HttpCrmAdapter(_settings(fake), clock=clock)
    try:
        yield a
    finally:
        await a.close()


async def test_is_a_crm_adapter(adapter: HttpCrmAdapter) -> None:
    assert isinstance(adapter, CrmAdapter)


async def test_one_with_mapped_card(adapter: HttpCrmAdapter, fake: FakeCrm) -> None:
    r = await adapter.identify(Identity(number="0171 2222222"))
    assert r.status == "one" and r.card is not None
    assert (r.card.id, r.card.name) == ("C-3", "Carl Clever")
    assert r.number_e164 == "+491712222222"
    assert fake.requests[-1] == ("GET", "/customers?phone=%2B491712222222")
    assert fake.auth[-1] == "Bearer s3cret"


async def test_card_mapping_custom_extra_and_history(adapter: HttpCrmAdapter) -> None:
    card = await adapter.card("C-1")
    assert card is not None
    assert (card.name, card.postcode, card.city, card.vip) == (
        "Anna Müller",
        "10115",
        "Berlin",
        True,
    )
    assert card.phones[0].e164 == "+4930123456" and card.phones[0].kind == "landline"
    assert card.emails == ("anna@example.com",)
    assert card.custom == {"tier": "gold"}
    assert card.extra == {"balance": 12.5}
    hist = await adapter.history("C-1")
    assert hist[0].id == "I-9" and hist[0].notes == "called about invoice"
    assert hist[0].offered_at == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert await adapter.card("C-404") is None


async def test_many_and_none_and_withheld(adapter: HttpCrmAdapter, fake: FakeCrm) -> None:
    r = await adapter.identify(Identity(number="030 123456"))
    assert r.status == "many" and r.card is None
    assert sorted(c.customer.id for c in r.candidates) == ["C-1", "C-2"]
    assert r.candidates[0].evidence == ("phone +4930123456",)
    r = await adapter.identify(Identity(number="+49 30 999999"))
    assert r.status == "none" and r.number_e164 == "+4930999999"
    n = len(fake.requests)
    r = await adapter.identify(Identity(number="anonymous"))
    assert r.status == "none" and r.withheld
    assert len(fake.requests) == n  # nothing asked for a withheld number


async def test_ttl_cache(adapter: HttpCrmAdapter, fake: FakeCrm, clock: Clock) -> None:
    await adapter.identify(Identity(number="01712222222"))
    n = len(fake.requests)
    r = await adapter.identify(Identity(number="+491712222222"))
    assert r.status == "one" and len(fake.requests) == n
    clock.t += 31
    await adapter.identify(Identity(number="+491712222222"))
    assert len(fake.requests) == n + 1


@pytest.mark.parametrize("mode", ["slow", "fail", "malformed", "wrong-shape", "down"])
async def test_degraded_within_deadline_never_raises(
    adapter: HttpCrmAdapter, fake: FakeCrm, mode: str
) -> None:
    fake.mode, fake.delay = mode, 2.0
    t = time.perf_counter()
    r = await adapter.identify(Identity(number="0171 2222222", ivr={"account": "1"}))
    took = time.perf_counter() - t
    assert r.status == "degraded"
    assert r.number_e164 == "+491712222222" and r.card is None and r.candidates == ()
    assert r.reason and r.reason.startswith("crm")
    assert took < 0.2 + 0.15, took  # lookup_timeout plus scheduling slack
    r.to_dict()


async def test_breaker_opens_then_half_opens(
    adapter: HttpCrmAdapter, fake: FakeCrm, clock: Clock
) -> None:
    fake.mode = "fail"
    for i in range(3):
        r = await adapter.identify(Identity(number=f"+4917122222{i:02d}"))
        assert r.status == "degraded"
    assert adapter.breaker.state == "open"
    n = len(fake.requests)
    r = await adapter.identify(Identity(number="+491712222222"))
    assert r.status == "degraded" and r.reason and "circuit open" in r.reason
    assert len(fake.requests) == n  # fails fast, the CRM is left alone
    # after the reset time one trial goes through; it fails: open again
    clock.t += 10
    assert adapter.breaker.state == "half-open"
    await adapter.identify(Identity(number="+491712222222"))
    assert len(fake.requests) == n + 1 and adapter.breaker.state == "open"
    # the CRM recovers: the next trial closes the breaker
    fake.mode = "ok"
    clock.t += 10
    r = await adapter.identify(Identity(number="+491712222222"))
    assert r.status == "one" and adapter.breaker.state == "closed"


async def test_wrong_shape_counts_as_failure(adapter: HttpCrmAdapter, fake: FakeCrm) -> None:
    fake.mode = "wrong-shape"
    for i in range(3):
        await adapter.identify(Identity(number=f"+4917122222{i:02d}"))
    assert adapter.breaker.state == "open"


async def test_other_calls_raise_crm_unavailable(adapter: HttpCrmAdapter, fake: FakeCrm) -> None:
    fake.mode = "malformed"
    with pytest.raises(CrmUnavailable, match="malformed"):
        await adapter.search("müller")
    fake.mode, fake.delay = "slow", 1.0
    with pytest.raises(CrmUnavailable, match="timeout"):
        await adapter.card("C-2")


async def test_search_and_writes(adapter: HttpCrmAdapter, fake: FakeCrm) -> None:
    found = await adapter.search("müller")
    assert sorted(c.id for c in found) == ["C-1", "C-2"]
    iid = await adapter.record_interaction(
        InteractionRecord(
            call_id="1700.1",
            direction="inbound",
            offered_at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
            number="+4930123456",
            agent="alice",
            customer_id="C-1",
        )
    )
    assert iid.startswith("I-")
    assert fake.bodies[-1]["call_id"] == "1700.1"
    assert fake.bodies[-1]["offered_at"] == "2026-01-05T09:00:00+00:00"
    view = await adapter.update_interaction(iid, actor="alice", notes="n", disposition="sale")
    assert view.notes == "n" and view.disposition == "sale"
    card = await adapter.create_customer(NewCustomer(name="Dora", phones=["030 777777"]), actor="a")
    assert card.name == "Dora" and card.phones[0].e164 == "+4930777777"
    card = await adapter.update_fields(card.id, {"name": "Dora D."}, actor="a")
    assert card.name == "Dora D."


async def test_cti_owned_data_needs_the_local_store(
    adapter: HttpCrmAdapter, fake: FakeCrm, crm: BuiltinCrm
) -> None:
    ok, why = await adapter.may_contact("+4930123456", "service")
    assert not ok and "no consent" in why
    with pytest.raises(CrmUnavailable):
        await adapter.schedule_callback(number="030123456", due_at=datetime.now(UTC), actor="alice")
    both = HttpCrmAdapter(_settings(fake), local=crm)
    try:
        await crm.add_dnc("030 123456", actor="admin", reason="asked")
        ok, why = await both.may_contact("+4930123456", "service")
        assert not ok and "do-not-call" in why
        cb = await both.schedule_callback(
            number="030 555",
            due_at=datetime(2030, 1, 1, tzinfo=UTC),
            actor="alice",
            customer_id="C-1",
        )
        assert cb.note.startswith("[crm customer C-1]")
    finally:
        await both.close()


async def test_unconfigured_is_degraded_not_an_error(fake: FakeCrm) -> None:
    a = HttpCrmAdapter(CrmSettings())
    try:
        r = await a.identify(Identity(number="+491712222222"))
        assert r.status == "degraded" and r.reason and "not configured" in r.reason
    finally:
        await a.close()
