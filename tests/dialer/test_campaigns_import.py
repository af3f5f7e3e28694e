"""Campaign definitions and lead import against a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from crm_bridge.db import make_engine, make_sessionmaker, migrate
from dialer.campaigns import CampaignError, CampaignService, CampaignSpec
from dialer.importer import import_leads
from dialer.models import Lead

DIALER_VERSIONS = str(Path(__file__).resolve().parents[2] / "dialer" / "migrations" / "versions")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[object]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cti.db'}"
    await migrate(url, extra_version_locations=[DIALER_VERSIONS])
    eng = make_engine(url)
    yield eng
    await eng.dispose()


async def test_campaign_crud_validation_and_start_needs_leads(engine: object) -> None:
    svc = CampaignService(engine)  # type: ignore[arg-type]
    view = await svc.create(CampaignSpec(name="winter", queue="sales", mode="predictive"))
    assert view["state"] == "stopped" and view["abandon_window"] == "30d"
    with pytest.raises(CampaignError, match="exists already"):
        await svc.create(CampaignSpec(name="winter", queue="sales"))
    with pytest.raises(CampaignError, match="no leads"):
        await svc.set_state("winter", "running")
    updated = await svc.update("winter", {"abandon_window": "24h", "max_ring_seconds": 20})
    assert updated["abandon_window"] == "24h" and updated["max_ring_seconds"] == 20
    with pytest.raises(ValidationError):
        await svc.update("winter", {"max_ring_seconds": 10})  # below the 15 s minimum
    with pytest.raises(CampaignError, match="no campaign"):
        await svc.get("summer")
    assert [c["name"] for c in await svc.list()] == ["winter"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("abandon_cap", 0.08, "less than or equal"),
        ("window_start", "25:00", "HH:MM"),
        ("queue", "sales\r\nAction: Hangup", "pattern"),
        ("caller_id", "x\ny", "pattern"),
        ("retry", {"busy": {"delay_seconds": -5}}, "delay_seconds"),
        ("mode", "turbo", "preview"),
    ],
)
def test_invalid_campaign_specs_name_the_problem(field: str, value: object, message: str) -> None:
    data = {"name": "c", "queue": "q", field: value}
    with pytest.raises(ValidationError) as e:
        CampaignSpec.model_validate(data)
    assert message in str(e.value)


async def test_lead_import_streams_rejects_bad_rows_and_skips_duplicates(
    engine: object, tmp_path: Path
) -> None:
    await CampaignService(engine).create(CampaignSpec(name="winter", queue="sales"))  # type: ignore[arg-type]
    csv = tmp_path / "leads.csv"
    csv.write_bytes(
        b"ref,name,phone,phone2,priority,tariff\n"
        b"a1,Anna,030 1234567,0151 23456789,5,basic\n"
        b"a2,Bernd,+44 20 7946 0958,,0,plus\n"
        b"a3,Carla,not-a-number,,0,\n"
        b"a4,Dieter,030 7654321,,high,\n"
        b"a5,Eva,,,0,\n"
        b"a6,Fritz,030 1111111\n"
        b"a7,G\xfcnter,030 2222222,,0,\n"
        b"a1,Anna again,030 1234567,,0,\n"
    )
    report = await import_leads(
        engine,  # type: ignore[arg-type]
        "winter",
        csv,
        region="DE",
        default_area="30",
        batch=2,
        progress=False,
    )
    assert report.imported == 2
    assert report.duplicates == 1
    reasons = dict(report.rejected)
    assert sorted(reasons) == [4, 5, 6, 7, 8]
    assert "phone" in reasons[4]
    assert "priority" in reasons[5]
    assert reasons[6] == "no phone number"
    assert "columns" in reasons[7]
    assert "UTF-8" in reasons[8]
    async with make_sessionmaker(engine)() as s:  # type: ignore[arg-type]
        leads = {x.ref: x for x in (await s.execute(select(Lead))).scalars()}
    assert leads["a1"].numbers == ["+49301234567", "+4915123456789"]
    assert leads["a1"].time_zone == "Europe/Berlin" and leads["a1"].priority == 5
    assert leads["a1"].fields == {"tariff": "basic"}
    assert leads["a2"].time_zone == "Europe/London"


async def test_lead_import_refuses_unusable_files(engine: object, tmp_path: Path) -> None:
    await CampaignService(engine).create(CampaignSpec(name="winter", queue="sales"))  # type: ignore[arg-type]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,email\nAnna,a@example.org\n")
    with pytest.raises(ValueError, match="phone"):
        await import_leads(engine, "winter", bad, region="DE", progress=False)  # type: ignore[arg-type]
    with pytest.raises(LookupError, match="no campaign"):
        await import_leads(engine, "summer", bad, region="DE", progress=False)  # type: ignore[arg-type]
