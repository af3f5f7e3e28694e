"""The built-in store: writes, validation (nothing half-written), audit, interactions and
cases, custom fields, callbacks, consent and do-not-call. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from crm_bridge.adapter import (
    Conflict,
    Identity,
    InteractionRecord,
    NewCase,
    NewCustomer,
    NewPhone,
    NotFound,
    ValidationFailed,
)
from crm_bridge.store import BuiltinCrm

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TABLES = (
    "crm_customer",
    "crm_phone",
    "crm_email",
    "crm_external_id",
    "crm_custom_value",
    "crm_interaction",
    "crm_case",
    "crm_case_interaction",
    "crm_callback",
    "crm_consent",
    "crm_dnc",
    "crm_audit",
    "crm_note",
    "crm_disposition",
    "crm_custom_field",
)


async def counts(crm: BuiltinCrm) -> dict[str, int]:
    out = {}
    async with crm.engine.connect() as c:
        for t in TABLES:
            out[t] = int((await c.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one())
    return out


@pytest.fixture
async def fields(crm: BuiltinCrm) -> None:
    await crm.define_custom_field("tier", "choice", choices=["gold", "silver"], actor="admin")
    await crm.define_custom_field("birthday", "date", actor="admin")
    await crm.define_custom_field("credit", "number", actor="admin")
    await crm.define_custom_field("newsletter", "bool", actor="admin")
    await crm.define_custom_field("remark", "text", label="Remark", actor="admin")


async def anna(crm: BuiltinCrm, **kw: Any) -> str:
    card = await crm.create_customer(
        NewCustomer(
            name="Anna Müller",
            postcode="10115",
            city="Berlin",
            time_zone="Europe/Berlin",
            phones=[NewPhone("030 123456", "landline")],
            emails=["anna@example.com"],
            external_ids={"account": "12345"},
            **kw,
        ),
        actor="admin",
    )
    return card.id


async def test_create_customer_with_custom_fields_and_audit(crm: BuiltinCrm, fields: None) -> None:
    card = await crm.create_customer(
        NewCustomer(
            name="Anna Müller",
            kind="person",
            country="de",
            language="de-DE",
            phones=["030 123456", NewPhone("0171 1234567", "mobile"), "+4930123456"],
            emails=["Anna@Example.com", "anna@example.com"],
            external_ids={"Account": "12345"},
            custom={
                "tier": "gold",
                "birthday": "1980-02-03",
                "credit": "1.234,5" if False else "12,5",
                "newsletter": "yes",
                "remark": "likes tea",
            },
        ),
        actor="admin",
    )
    assert card.country == "DE"
    assert [p.e164 for p in card.phones] == ["+4930123456", "+491711234567"]  # deduplicated
    assert card.emails == ("anna@example.com",)
    assert card.external_ids == (("account", "12345"),)
    assert card.custom == {
        "tier": "gold",
        "birthday": date(1980, 2, 3),
        "credit": 12.5,
        "newsletter": True,
        "remark": "likes tea",
    }
    assert card.to_dict()["custom"]["birthday"] == "1980-02-03"
    log = await crm.audit_log(entity="customer", entity_id=card.id)
    assert len(log) == 1 and log[0].action == "create" and log[0].actor == "admin"
    assert log[0].after is not None and log[0].after["custom"]["tier"] == "gold"


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"name": ""}, "name", "empty"),
        ({"name": "x" * 201}, "name", "longer than 200"),
        ({"postcode": "1" * 21}, "postcode", "longer than 20"),
        ({"kind": "alien"}, "kind", "one of"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "unknown time zone"),
        ({"country": "D1"}, "country", "two-letter"),
        ({"country": "Germany"}, "country", "longer than 2"),
        ({"language": "klingon!"}, "language", "language tag"),
        ({"phones": ["030 123456", "not a number"]}, "phones[1]", "not a phone number"),
        ({"phones": [NewPhone("030 123456", "pager")]}, "phones[0].kind", "one of"),
        ({"emails": ["nope"]}, "emails[0]", "not a valid e-mail"),
        ({"external_ids": {"bad type": "1"}}, "external_ids['bad type']", "id type"),
        ({"external_ids": {"account": "9" * 65}}, "external_ids['account']", "longer than 64"),
        ({"custom": {"tier": "platinum"}}, "custom field 'tier'", "not one of"),
        ({"custom": {"credit": "lots"}}, "custom field 'credit'", "expected a number"),
        ({"custom": {"credit": True}}, "custom field 'credit'", "true/false"),
        ({"custom": {"birthday": "03.02.1980"}}, "custom field 'birthday'", "YYYY-MM-DD"),
        ({"custom": {"newsletter": "maybe"}}, "custom field 'newsletter'", "true or false"),
        ({"custom": {"remark": "x" * 1001}}, "custom field 'remark'", "longer than 1000"),
        ({"custom": {"shoe_size": 42}}, "custom field 'shoe_size'", "not defined"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    crm: BuiltinCrm, fields: None, data: dict[str, Any], field: str, fragment: str
) -> None:
    before = await counts(crm)
    kw: dict[str, Any] = {"name": "Valid Name", "phones": ["030 999999"], **data}
    with pytest.raises(ValidationFailed) as e:
        await crm.create_customer(NewCustomer(**kw), actor="admin")
    assert e.value.field == field
    assert fragment in str(e.value)
    assert await counts(crm) == before


async def test_duplicate_external_id_is_a_conflict_and_writes_nothing(crm: BuiltinCrm) -> None:
    await anna(crm)
    before = await counts(crm)
    with pytest.raises(Conflict, match="account '12345' already belongs"):
        await crm.create_customer(
            NewCustomer(name="Other", phones=["040 1234567"], external_ids={"account": "12345"}),
            actor="admin",
        )
    assert await counts(crm) == before


async def test_update_fields_audit_and_atomicity(crm: BuiltinCrm, fields: None) -> None:
    cid = await anna(crm)
    card = await crm.update_fields(
        cid, {"city": "Potsdam", "vip": True, "tier": "silver", "credit": 3}, actor="bob"
    )
    assert (card.city, card.vip, card.custom["tier"], card.custom["credit"]) == (
        "Potsdam",
        True,
        "silver",
        3.0,
    )
    entry = (await crm.audit_log(entity="customer", entity_id=cid))[0]
    assert entry.actor == "bob" and entry.action == "update"
    assert entry.before == {
        "city": "Berlin",
        "vip": False,
        "custom": {"tier": None, "credit": None},
    }
    assert entry.after == {
        "city": "Potsdam",
        "vip": True,
        "custom": {"tier": "silver", "credit": 3.0},
    }
    # the same values again change nothing and log nothing
    n = len(await crm.audit_log())
    await crm.update_fields(cid, {"city": "Potsdam", "tier": "silver"}, actor="bob")
    assert len(await crm.audit_log()) == n
    # one bad value: nothing of the request is written
    before = await counts(crm)
    with pytest.raises(ValidationFailed, match="birthday"):
        await crm.update_fields(cid, {"city": "Hamburg", "birthday": "yesterday"}, actor="bob")
    assert (await crm.card(cid)).city == "Potsdam"  # type: ignore[union-attr]
    assert await counts(crm) == before
    # renaming keeps search working
    await crm.update_fields(cid, {"name": "Anna Schmidt"}, actor="bob")
    assert [c.id for c in await crm.search("schmidt")] == [cid]
    assert await crm.search("müller") == []


@pytest.mark.parametrize("bad_id", ["999999", "abc", "", "-1", "1; DROP TABLE crm_customer"])
async def test_unknown_ids(crm: BuiltinCrm, bad_id: str) -> None:
    assert await crm.card(bad_id) is None
    with pytest.raises(NotFound):
        await crm.update_fields(bad_id, {"city": "X"}, actor="a")
    with pytest.raises(NotFound):
        await crm.history(bad_id)
    with pytest.raises(NotFound):
        await crm.update_interaction(bad_id, actor="a", notes="x")
    with pytest.raises(NotFound):
        await crm.record_consent(
            bad_id, channel="phone", purpose="x", granted=True, source="s", actor="a"
        )


async def test_custom_field_definitions(crm: BuiltinCrm) -> None:
    for i in range(64):
        await crm.define_custom_field(f"f{i}", "text", actor="admin")
    with pytest.raises(ValidationFailed, match="at most 64"):
        await crm.define_custom_field("f64", "text", actor="admin")
    await crm.delete_custom_field("f0", actor="admin")
    with pytest.raises(Conflict):
        await crm.define_custom_field("f1", "number", actor="admin")
    for name, type_, choices, frag in [
        ("Bad Name", "text", (), "name must"),
        ("x", "colour", (), "unknown type"),
        ("y", "choice", (), "list of non-empty choices"),
        ("z", "choice", ("a", "a"), "distinct"),
        ("w", "number", ("a",), "only make sense"),
    ]:
        with pytest.raises(ValidationFailed, match=frag):
            await crm.define_custom_field(name, type_, choices=choices, actor="admin")
    assert len(await crm.custom_fields()) == 63


async def test_required_custom_field(crm: BuiltinCrm) -> None:
    await crm.define_custom_field(
        "contract_type", "choice", choices=["a", "b"], required=True, actor="admin"
    )
    with pytest.raises(ValidationFailed, match="required"):
        await crm.create_customer(NewCustomer(name="X"), actor="a")
    card = await crm.create_customer(
        NewCustomer(name="X", custom={"contract_type": "a"}), actor="a"
    )
    with pytest.raises(ValidationFailed, match="required"):
        await crm.update_fields(card.id, {"contract_type": None}, actor="a")


async def test_interaction_is_idempotent_per_leg(crm: BuiltinCrm) -> None:
    rec = InteractionRecord(
        call_id="1700000000.1",
        leg="SIP/alice-1",
        direction="inbound",
        offered_at=T0,
        number="030123456",
        queue="support",
        agent="alice",
    )
    iid = await crm.record_interaction(rec)
    again = InteractionRecord(
        call_id="1700000000.1",
        leg="SIP/alice-1",
        direction="inbound",
        offered_at=T0 + timedelta(seconds=3),  # a later event's time: the first one stays
        answered_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(seconds=65),
        outcome="completed",
    )
    assert await crm.record_interaction(again) == iid
    assert await crm.record_interaction(again) == iid
    # a transfer to bob is a second leg of the same call
    bob = await crm.record_interaction(
        InteractionRecord(
            call_id="1700000000.1",
            leg="SIP/bob-2",
            direction="inbound",
            offered_at=T0 + timedelta(seconds=70),
            agent="bob",
        )
    )
    assert bob != iid
    legs = await crm.interactions_for_call("1700000000.1")
    assert [(v.agent, v.number) for v in legs] == [("alice", "+4930123456"), ("bob", "")]
    first = legs[0]
    assert first.answered_at == T0 + timedelta(seconds=5) and first.outcome == "completed"
    assert first.queue == "support"  # not erased by the later record without a queue
    assert first.offered_at == T0
    async with crm.engine.connect() as c:
        n = (await c.execute(text("SELECT count(*) FROM crm_interaction"))).scalar_one()
    assert n == 2


async def test_interaction_bad_input(crm: BuiltinCrm) -> None:
    before = await counts(crm)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"direction": "sideways"}, "direction"),
        ({"channel": "fax"}, "channel"),
        ({"call_id": ""}, "call_id"),
        ({"call_id": "x" * 65}, "call_id"),
        ({"notes": "x" * 20001}, "notes"),
        ({"offered_at": datetime(2026, 1, 1)}, "offered_at"),
    ]
    for kw, field in cases:
        args: dict[str, Any] = {"call_id": "c1", "direction": "inbound", "offered_at": T0, **kw}
        with pytest.raises(ValidationFailed) as e:
            await crm.record_interaction(InteractionRecord(**args))
        assert e.value.field == field
    with pytest.raises(NotFound):
        await crm.record_interaction(
            InteractionRecord(call_id="c1", direction="inbound", offered_at=T0, customer_id="77")
        )
    assert await counts(crm) == before


async def test_wrap_up_twice_is_safe_and_cases_link_many_to_many(crm: BuiltinCrm) -> None:
    cid = await anna(crm)
    await crm.set_dispositions(
        ["sale", ("callback", "Call back", "callback"), "no-interest"],
        scope_kind="queue",
        scope="sales",
        actor="admin",
    )
    i1 = await crm.record_interaction(
        InteractionRecord(
            call_id="c1", direction="inbound", offered_at=T0, queue="sales", agent="alice"
        )
    )
    with pytest.raises(ValidationFailed, match="not in the configured list"):
        await crm.update_interaction(i1, actor="alice", disposition="default")
    nc = NewCase(type="complaint", category="billing", subcategory="double charge")
    v1 = await crm.update_interaction(
        i1, actor="alice", notes="angry", disposition="sale", customer_id=cid, new_case=nc
    )
    audit_n = len(await crm.audit_log())
    v2 = await crm.update_interaction(
        i1, actor="alice", notes="angry", disposition="sale", customer_id=cid, new_case=nc
    )
    assert v1 == v2 and len(v1.case_ids) == 1
    assert len(await crm.audit_log()) == audit_n  # nothing changed, nothing logged
    case_id = v1.case_ids[0]
    # a second call touches the same case and a new one
    i2 = await crm.record_interaction(
        InteractionRecord(
            call_id="c2",
            direction="outbound",
            offered_at=T0 + timedelta(days=1),
            agent="bob",
            customer_id=cid,
        )
    )
    other = await crm.create_case(NewCase(type="request"), actor="bob", customer_id=cid)
    v = await crm.update_interaction(i2, actor="bob", case_ids=[case_id, other.id])
    assert sorted(v.case_ids) == sorted([case_id, other.id])
    case, history = await crm.case_history(case_id)
    assert case.category == "billing" and [h.id for h in history] == [i1, i2]
    closed = await crm.update_case(case_id, actor="bob", status="closed")
    assert closed.closed_at is not None
    card = await crm.card(cid)
    assert card is not None and [c.id for c in card.open_cases] == [other.id]
    with pytest.raises(NotFound):
        await crm.update_interaction(i2, actor="bob", case_ids=["424242"])
    # dispositions: the queue's list, the global list elsewhere (none configured: free)
    assert [d.code for d in await crm.dispositions(queue="sales")] == [
        "sale",
        "callback",
        "no-interest",
    ]
    assert await crm.dispositions(queue="support") == []


async def test_callbacks(crm: BuiltinCrm) -> None:
    cid = await anna(crm)
    due = T0 + timedelta(hours=2)
    cb = await crm.schedule_callback(
        number="030 123456",
        due_at=due,
        actor="alice",
        agent="alice",
        customer_id=cid,
        note="after lunch",
    )
    assert cb.time_zone == "Europe/Berlin" and cb.number == "+4930123456"
    assert cb.to_dict()["due_local"] == "2026-03-02T13:00:00+01:00"
    anyone = await crm.schedule_callback(number="+1 650 253 0000", due_at=due, actor="alice")
    assert anyone.agent is None and anyone.time_zone == "America/Los_Angeles"
    assert await crm.due_callbacks(T0) == []
    assert [c.id for c in await crm.due_callbacks(due)] == [cb.id, anyone.id]
    assert {c.id for c in await crm.callbacks(agent="bob")} == {anyone.id}
    done = await crm.set_callback_state(cb.id, "done", actor="alice")
    assert done.state == "done"
    with pytest.raises(ValidationFailed):
        await crm.schedule_callback(number="030 1", due_at=datetime(2026, 1, 1), actor="a")
    with pytest.raises(ValidationFailed, match="number"):
        await crm.schedule_callback(number="garbage", due_at=due, actor="a")
    with pytest.raises(ValidationFailed, match="state"):
        await crm.set_callback_state(cb.id, "lost", actor="a")


async def test_consent_and_dnc(crm: BuiltinCrm) -> None:
    cid = await anna(crm)
    assert await crm.may_contact("+4930123456", "service") == (
        True,
        "not on the do-not-call list and no opt-out",
    )
    ok, why = await crm.may_contact("+4930123456", "marketing")
    assert not ok and "no opt-in" in why
    await crm.record_consent(
        cid,
        channel="phone",
        purpose="marketing",
        granted=True,
        source="web form",
        actor="admin",
        at=T0,
    )
    assert (await crm.may_contact("030 123456", "marketing"))[0] is True
    await crm.record_consent(
        cid,
        channel="phone",
        purpose="marketing",
        granted=False,
        source="call",
        actor="alice",
        at=T0 + timedelta(days=1),
    )
    ok, why = await crm.may_contact("+4930123456", "marketing")
    assert not ok and "opted out" in why and "call" in why
    # the card shows the consent in force
    card = await crm.card(cid)
    assert card is not None and [(c.purpose, c.granted) for c in card.consent] == [
        ("marketing", False)
    ]
    await crm.add_dnc("+49 30 123456", actor="admin", reason="customer asked")
    ok, why = await crm.may_contact("+4930123456", "service")
    assert not ok and "do-not-call" in why
    assert await crm.remove_dnc("030123456", actor="admin") is True
    assert (await crm.may_contact("+4930123456", "service"))[0] is True
    await crm.add_dnc("+4940123456", actor="admin", expires_at=T0)  # already expired
    assert (await crm.may_contact("+4940123456", "service"))[0] is True
    assert (await crm.may_contact("nonsense", "service"))[0] is False
    actions = [a.action for a in await crm.audit_log(entity="dnc")]
    assert actions == ["add", "remove", "add"][::-1]


async def test_search(crm: BuiltinCrm) -> None:
    cid = await anna(crm)
    other = await crm.create_customer(
        NewCustomer(name="Mueller GmbH", kind="organisation", postcode="20095"), actor="a"
    )
    for q in [
        "Anna",
        "anna mü",
        "müll",
        "MULLER",
        "030 123456",
        "+4930123456",
        "12345",
        "ANNA@example.com",
        "10115",
    ]:
        assert [c.id for c in await crm.search(q)] == [cid], q
    assert [c.id for c in await crm.search("mueller")] == [other.id]
    assert await crm.search("") == [] and await crm.search("zzz") == []
    assert await crm.search("%") == [] and await crm.search("'") == []


async def test_notes(crm: BuiltinCrm) -> None:
    cid = await anna(crm)
    nid = await crm.add_note("prefers e-mail", actor="alice", customer_id=cid)
    assert nid
    with pytest.raises(ValidationFailed):
        await crm.add_note("   ", actor="alice", customer_id=cid)
    with pytest.raises(ValidationFailed):
        await crm.add_note("orphan", actor="alice")


async def test_audit_log_is_append_only(crm: BuiltinCrm) -> None:
    await anna(crm)
    for stmt in ("UPDATE crm_audit SET actor = 'mallory'", "DELETE FROM crm_audit"):
        with pytest.raises((IntegrityError, DBAPIError)):
            async with crm.engine.begin() as c:
                await c.execute(text(stmt))
    assert [a.actor for a in await crm.audit_log()] == ["admin"]


async def test_identify_after_linking(crm: BuiltinCrm) -> None:
    """The unknown caller: nothing created by the lookup; the agent creates or links."""
    r = await crm.identify(Identity(number="040 7654321"))
    assert r.status == "none"
    card = await crm.create_customer(
        NewCustomer(name="New Caller", phones=["040 7654321"]), actor="alice"
    )
    r = await crm.identify(Identity(number="+49407654321"))
    assert r.status == "one" and r.card is not None and r.card.id == card.id
    more = await crm.add_contact_points(
        card.id,
        actor="alice",
        phones=["0171 9999999"],
        emails=["n@c.de"],
        external_ids={"card": "77"},
    )
    assert len(more.phones) == 2 and more.emails == ("n@c.de",)
    r = await crm.identify(Identity(ivr={"card": "77"}))
    assert r.status == "one" and r.card is not None and r.card.id == card.id


async def test_disposition_lists_by_scope(crm: BuiltinCrm) -> None:
    def rec(call: str, **kw: Any) -> InteractionRecord:
        return InteractionRecord(call_id=call, direction="inbound", offered_at=T0, **kw)

    free = await crm.record_interaction(rec("f1", queue="support"))
    # nothing configured for support: any code is accepted
    assert (await crm.update_interaction(free, actor="a", disposition="whatever")).disposition
    await crm.set_dispositions(
        ["sale", "lost"], scope_kind="campaign", scope="spring", actor="admin"
    )
    await crm.set_dispositions(["solved", "escalated"], actor="admin")  # global
    camp = await crm.record_interaction(rec("c1", queue="support", campaign="spring"))
    with pytest.raises(ValidationFailed):
        await crm.update_interaction(camp, actor="a", disposition="solved")
    assert (await crm.update_interaction(camp, actor="a", disposition="sale")).disposition == "sale"
    other = await crm.record_interaction(rec("o1", queue="support"))
    with pytest.raises(ValidationFailed, match="solved"):
        await crm.update_interaction(other, actor="a", disposition="sale")
    assert [d.code for d in await crm.dispositions(queue="support")] == ["solved", "escalated"]
    with pytest.raises(ValidationFailed, match="twice"):
        await crm.set_dispositions(["a", "a"], actor="admin")
    with pytest.raises(ValidationFailed):
        await crm.set_dispositions(["a"], scope_kind="queue", actor="admin")


async def test_update_custom_field(crm: BuiltinCrm, fields: None) -> None:
    cid = await anna(crm, custom={"tier": "gold"})
    d = await crm.update_custom_field(
        "tier", actor="admin", choices=["gold", "silver", "bronze"], label="Tier"
    )
    assert d.choices == ("gold", "silver", "bronze") and d.label == "Tier"
    await crm.update_fields(cid, {"tier": "bronze"}, actor="a")
    with pytest.raises(ValidationFailed, match="1 customers still carry bronze"):
        await crm.update_custom_field("tier", actor="admin", choices=["gold", "silver"])
    with pytest.raises(ValidationFailed, match="only make sense"):
        await crm.update_custom_field("credit", actor="admin", choices=["x"])
    with pytest.raises(NotFound):
        await crm.update_custom_field("nope", actor="admin", label="x")
    entry = (await crm.audit_log(entity="custom_field"))[0]
    assert entry.action == "update" and entry.after == {
        "label": "Tier",
        "choices": ["gold", "silver", "bronze"],
    }


async def test_numbers_stored_in_any_format_are_found_in_any_other(crm: BuiltinCrm) -> None:
    import random

    rnd = random.Random(7)
    stored = [
        "{a} {n}",
        "0{a}/{n}",
        "+49 {a} {n}",
        "0049-{a}-{n}",
        "(0{a}) {n} x{x}",
        "+49 (0){a} {n} ext. {x}",
    ]
    asked = ["0{a}{n}", "+49{a}{n}", "0049{a}{n}", "{a}{n}", "0{a} {n}"]
    numbers = []
    for i in range(20):
        area = rnd.choice(["30", "40", "89", "221", "171", "160"])
        sub = str(rnd.randint(1000000, 9999999))
        fmt = stored[i % len(stored)]
        await crm.create_customer(
            NewCustomer(name=f"P{i}", phones=[fmt.format(a=area, n=sub, x=rnd.randint(1, 99))]),
            actor="t",
        )
        numbers.append((area, sub, f"P{i}"))
    for area, sub, name in numbers:
        for fmt in asked:
            r = await crm.identify(Identity(number=fmt.format(a=area, n=sub)))
            assert r.status == "one" and r.card is not None and r.card.name == name, (fmt, area)


async def test_concurrent_records_of_one_leg_make_one_row(crm: BuiltinCrm) -> None:
    import asyncio

    rec = InteractionRecord(
        call_id="race.1", leg="alice", direction="inbound", offered_at=T0, agent="alice"
    )
    ids = await asyncio.gather(*(crm.record_interaction(rec) for _ in range(8)))
    assert len(set(ids)) == 1
    async with crm.engine.connect() as c:
        n = (await c.execute(text("SELECT count(*) FROM crm_interaction"))).scalar_one()
    assert n == 1


def test_unicode_digits_are_an_unknown_id_not_a_crash() -> None:
    from crm_bridge.adapter import NotFound
    from crm_bridge.store import _pk

    with pytest.raises(NotFound):
        _pk("³", "customer")
    assert _pk("42", "customer") == 42
