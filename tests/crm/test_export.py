"""`cti crm export`: the import layout, streamed; export then import into an empty store gives
the same customers (compared field by field and as a second export)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.adapter import Identity
from crm_bridge.db import make_engine
from crm_bridge.exporter import export_csv
from crm_bridge.importer import ImportOptions, import_csv
from crm_bridge.models import Customer, Email, ExternalId, Phone
from crm_bridge.seed import seed_database
from crm_bridge.settings import CrmSettings
from crm_bridge.store import BuiltinCrm


@pytest.fixture(autouse=True)
def _template_outside_the_loop(sqlite_template: Path) -> None:
    """conftest's sqlite_template calls asyncio.run; build it before any async fixture runs."""


async def _export_text(engine: AsyncEngine, page: int = 5000) -> str:
    buf = io.StringIO(newline="")
    await export_csv(engine, buf, page=page, progress=False)
    return buf.getvalue()


async def _snapshot(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every customer with its contact points and ids, independent of row ids."""
    out = []
    async with engine.connect() as conn:
        custs = (
            await conn.execute(
                select(
                    Customer.id,
                    Customer.name,
                    Customer.kind,
                    Customer.street,
                    Customer.postcode,
                    Customer.city,
                    Customer.country,
                    Customer.segment,
                    Customer.vip,
                    Customer.language,
                    Customer.time_zone,
                ).order_by(Customer.id)
            )
        ).all()
        for c in custs:
            phones = (
                await conn.execute(
                    select(Phone.e164, Phone.kind, Phone.extension)
                    .where(Phone.customer_id == c.id)
                    .order_by(Phone.position)
                )
            ).all()
            emails = (
                await conn.execute(select(Email.email).where(Email.customer_id == c.id))
            ).scalars()
            ids = (
                await conn.execute(
                    select(ExternalId.id_type, ExternalId.value).where(
                        ExternalId.customer_id == c.id
                    )
                )
            ).all()
            out.append(
                (
                    tuple(c[1:]),
                    tuple(tuple(p) for p in phones),
                    tuple(sorted(emails)),
                    tuple(sorted(tuple(i) for i in ids)),
                )
            )
    return out


async def _fresh_sqlite(template: Path, path: Path) -> AsyncEngine:
    shutil.copyfile(template, path)
    return make_engine(f"sqlite+aiosqlite:///{path}")


async def test_export_import_round_trip_gives_the_same_customers(
    engine: AsyncEngine, crm_settings: CrmSettings, sqlite_template: Path, tmp_path: Path
) -> None:
    await seed_database(engine, 400, seed=7, batch=150, progress=False)
    # a customer with an extension, three numbers, two e-mails and an extra id type
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "name,phone,phone_kind,phone2,phone3,phone3_kind,email,email2,id_member,vip\n"
        '"Müller, Anna",030 1234567 x12,work,0151 11122233,+4940999888,landline,'
        "a@example.org,b@example.org,M-77,yes\n",
        encoding="utf-8",
    )
    assert (await import_csv(engine, extra, crm_settings)).imported == 1

    text = await _export_text(engine, page=97)
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 402
    header = rows[0]
    assert header[:10] == [
        "name", "kind", "street", "postcode", "city", "country", "segment", "vip",
        "language", "time_zone",
    ]  # fmt: skip
    assert {"phone3", "phone3_kind", "email2", "id_member"} <= set(header)
    assert "cf_tariff:choice=basic|plus|premium" in header
    muller = dict(zip(header, rows[-1], strict=True))
    assert muller["phone"] == "+49301234567 x12" and muller["phone_kind"] == "work"
    assert muller["vip"] == "true" and muller["id_member"] == "M-77"

    out = tmp_path / "export.csv"
    out.write_text(text, encoding="utf-8", newline="")
    target = await _fresh_sqlite(sqlite_template, tmp_path / "target.db")
    try:
        res = await import_csv(target, out, crm_settings, ImportOptions(batch_size=128))
        assert (res.imported, res.rejected, res.duplicates) == (401, 0, 0)
        assert await _snapshot(target) == await _snapshot(engine)
        assert await _export_text(target) == text
        # and the imported store answers lookups
        crm = BuiltinCrm(target, crm_settings)
        found = await crm.identify(Identity(number="030 1234567"))
        assert found.status == "one" and found.card is not None
        assert found.card.name == "Müller, Anna"
    finally:
        await target.dispose()


async def test_export_of_an_empty_store_is_a_header(engine: AsyncEngine) -> None:
    text = await _export_text(engine)
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("name,kind,")


async def test_export_pages_join_without_gaps_or_repeats(engine: AsyncEngine) -> None:
    await seed_database(engine, 250, seed=3, batch=100, progress=False)
    whole = await _export_text(engine, page=10_000)
    assert await _export_text(engine, page=7) == whole
    assert len(whole.splitlines()) == 251
