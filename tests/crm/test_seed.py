"""`cti crm seed`: deterministic, valid, findable demo data."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.adapter import Identity
from crm_bridge.csvio import PhoneNormalizer
from crm_bridge.db import make_engine
from crm_bridge.exporter import export_csv
from crm_bridge.models import Case, Consent, DncEntry, ExternalId, Interaction, Phone
from crm_bridge.normalize import InvalidNumber, normalize_email, parse_phone
from crm_bridge.seed import SeedError, demo_numbers, generate, seed_database, write_csv
from crm_bridge.settings import CrmSettings
from crm_bridge.store import BuiltinCrm


@pytest.fixture(autouse=True)
def _template_outside_the_loop(sqlite_template: Path) -> None:
    """conftest's sqlite_template calls asyncio.run; build it before any async fixture runs."""


def test_generation_is_deterministic_and_seed_dependent() -> None:
    a = [(c.customer, c.phones, c.emails, c.ids, c.custom) for c in generate(300, seed=5)]
    b = [(c.customer, c.phones, c.emails, c.ids, c.custom) for c in generate(300, seed=5)]
    other = [(c.customer, c.phones) for c in generate(300, seed=6)]
    assert a == b
    assert [(x[0], x[1]) for x in a] != other
    out1, out2 = io.StringIO(), io.StringIO()
    write_csv(out1, 200, seed=9)
    write_csv(out2, 200, seed=9)
    assert out1.getvalue() == out2.getvalue()


def test_generated_numbers_emails_and_ids_are_valid_and_unique() -> None:
    customers = list(generate(20_000, seed=1))
    numbers = [n for c in customers for n, _ in c.phones]
    assert len(numbers) == len(set(numbers)) > 20_000
    for n in random.Random(1).sample(numbers, 1500):
        assert parse_phone(n, region="DE").e164 == n
    kinds = {k for c in customers for _, k in c.phones}
    assert kinds == {"mobile", "landline", "work"}
    emails = [e for c in customers for e in c.emails]
    assert len(emails) == len(set(emails))
    for e in emails[:500]:
        assert normalize_email(e) == e
    ids = [i for c in customers for i in c.ids]
    assert len(ids) == len(set(ids))
    assert {t for t, _ in ids} == {"account", "card", "contract"}
    for _, card in (i for i in ids if i[0] == "card"):
        digits = [int(d) for d in card[::-1]]
        total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
        assert total % 10 == 0, card  # Luhn
    names = {c.customer["name"] for c in customers}
    assert len(names) > 3000  # not a handful of repeated names
    orgs = sum(c.customer["kind"] == "organisation" for c in customers)
    assert 0.05 < orgs / len(customers) < 0.15


def test_demo_numbers_are_the_first_customers_numbers() -> None:
    nums = demo_numbers(50, seed=4)
    assert nums == [c.phones[0][0] for c in generate(50, seed=4)]
    assert demo_numbers(10, seed=4) == nums[:10]
    assert demo_numbers(10, seed=5) != nums[:10]


async def test_seed_writes_a_findable_store_with_history_consent_and_dnc(
    engine: AsyncEngine, crm_settings: CrmSettings
) -> None:
    res = await seed_database(engine, 1500, seed=2, batch=400, progress=False)
    assert res.customers == 1500 and res.phones > 1500 and res.interactions > 0
    async with engine.connect() as conn:

        async def n(table: object) -> int:
            q = select(func.count()).select_from(table)  # type: ignore[arg-type]
            return int((await conn.execute(q)).scalar() or 0)

        assert await n(Phone) == res.phones
        assert await n(Interaction) == res.interactions
        assert await n(Case) == res.cases > 0
        assert await n(Consent) > 0
        assert await n(DncEntry) > 0
        account = (
            (await conn.execute(select(ExternalId.value).where(ExternalId.id_type == "account")))
            .scalars()
            .first()
        )
    crm = BuiltinCrm(engine, crm_settings)
    for number in demo_numbers(20, seed=2):
        found = await crm.identify(Identity(number=number))
        assert found.status == "one", number
        # the same number as a caller in national format (0 + national number)
        national = "0" + number[3:]
        assert (await crm.identify(Identity(number=national))).status == "one"
    by_account = await crm.identify(Identity(ivr={"account": account or ""}))
    assert by_account.status == "one"
    unknown = await crm.identify(Identity(number="+49 30 0000000"))
    assert unknown.status == "none"
    with pytest.raises(SeedError, match="already holds 1500"):
        await seed_database(engine, 10, seed=2, progress=False)


async def test_same_seed_same_store(sqlite_template: Path, tmp_path: Path) -> None:
    """Also when a second process generates (big seeds): same customers, same history."""
    texts, history = [], []
    for name, parallel in (("a.db", False), ("b.db", True)):
        shutil.copyfile(sqlite_template, tmp_path / name)
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / name}")
        try:
            await seed_database(eng, 700, seed=11, batch=300, progress=False, parallel=parallel)
            buf = io.StringIO(newline="")
            await export_csv(eng, buf, progress=False)
            texts.append(buf.getvalue())
            async with eng.connect() as conn:
                rows = await conn.exec_driver_sql(
                    "SELECT id, customer_id, call_id, agent FROM crm_interaction ORDER BY id"
                )
                history.append(rows.all())
        finally:
            await eng.dispose()
    assert texts[0] == texts[1] and len(texts[0].splitlines()) == 701
    assert history[0] == history[1] and history[0]


@pytest.mark.parametrize(("region", "samples"), [("DE", 20_000), ("AT", 3000), ("FR", 3000)])
def test_e164_shortcut_agrees_with_the_normalizer(region: str, samples: int) -> None:
    """PhoneNormalizer's fast path (one regex from phonenumbers' metadata instead of
    is_valid_number) must give parse_phone's verdict and text, for valid and invalid numbers."""
    import phonenumbers

    fast = PhoneNormalizer(region, "30" if region == "DE" else "")
    assert fast._valid is not None  # the shortcut is really in use for this region
    cc = phonenumbers.country_code_for_region(region)
    rnd = random.Random(3)
    raws = []
    for _ in range(samples):
        length = rnd.randint(4, 14)
        first = rnd.choice("123456789")
        digits = first + "".join(rnd.choice("0123456789") for _ in range(length - 1))
        raws.append(f"+{cc}{digits}")
    if region == "DE":
        raws += ["+4930123456", "+49301", "+4915123456789", "+491512345678901", "+49800123456"]
    agree = 0
    for raw in raws:
        want = phonenumbers.is_valid_number(
            phonenumbers.PhoneNumber(country_code=cc, national_number=int(raw[len(str(cc)) + 1 :]))
        )
        got: str | None
        try:
            got = fast(raw)[0]
        except InvalidNumber:
            got = None
        assert (got == raw) == want, raw
        # the same shortcut as one pattern, which the bulk loader runs over whole columns
        assert fast.valid_e164 is not None
        assert (fast.valid_e164.match(raw) is not None) == want, raw
        agree += want
    assert 0.01 * len(raws) < agree < len(raws)  # both valid and invalid numbers were compared
    # and the full normalizer agrees on a sample
    for raw in raws[:1500]:
        try:
            full: str | None = parse_phone(raw, region=region).e164
        except InvalidNumber:
            full = None
        try:
            got = fast(raw)[0]
        except InvalidNumber:
            got = None
        assert got == full, raw


@pytest.mark.parametrize(("region", "area"), [("DE", "30"), ("AT", ""), ("FR", "")])
def test_national_shortcut_agrees_with_the_normalizer(region: str, area: str) -> None:
    """Numbers with the trunk prefix and separators ("030 123-45/67") through the shortcut
    give exactly parse_phone's answer (or its refusal)."""
    fast = PhoneNormalizer(region, area)
    assert fast._national is not None
    rnd = random.Random(9)
    valid = 0
    for _ in range(4000):
        length = rnd.randint(3, 13)
        d = rnd.choice("123456789") + "".join(rnd.choice("0123456789") for _ in range(length - 1))
        seps = ["", " ", "/", "-", "."]
        raw = (
            "0"
            + d[0]
            + "".join((rnd.choice(seps) if rnd.random() < 0.15 else "") + c for c in d[1:])
        )
        want: tuple[str, str] | None
        try:
            want = (parse_phone(raw, region=region, default_area=area).e164, "")
        except InvalidNumber:
            want = None
        try:
            got: tuple[str, str] | None = fast(raw)
        except InvalidNumber:
            got = None
        assert got == want, raw
        valid += want is not None
    assert 100 < valid < 4000
