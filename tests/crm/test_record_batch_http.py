"""HttpCrmAdapter.record_interactions: one POST per record, in order, ids in order."""

from __future__ import annotations

from datetime import UTC, datetime

from crm_bridge.adapter import InteractionRecord
from crm_bridge.http_adapter import HttpCrmAdapter
from crm_bridge.settings import CrmSettings, HttpCrmSettings
from tests.crm.fake_crm import FIELD_MAP, FakeCrm


async def test_a_batch_is_posted_record_by_record_in_order(fake: FakeCrm) -> None:
    settings = CrmSettings(
        default_area="30",
        http=HttpCrmSettings.model_validate({"base_url": fake.url, "field_map": FIELD_MAP}),
    )
    adapter = HttpCrmAdapter(settings)
    try:
        recs = [
            InteractionRecord(
                call_id=f"1700.{i}",
                leg="alice",
                direction="inbound",
                offered_at=datetime(2026, 1, 5, 9, i, tzinfo=UTC),
                agent="alice",
            )
            for i in range(3)
        ]
        ids = await adapter.record_interactions(recs)
        assert await adapter.record_interactions([]) == []
    finally:
        await adapter.close()
    assert len(ids) == 3 and len(set(ids)) == 3 and all(i.startswith("I-") for i in ids)
    assert [b["call_id"] for b in fake.bodies[-3:]] == ["1700.0", "1700.1", "1700.2"]
