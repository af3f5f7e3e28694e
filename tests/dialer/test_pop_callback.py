"""A callback promised from the screen pop of a campaign call reaches the dialer's lead, so
the lead is called back at the promised time instead of being retried by outcome rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from crm_bridge.db import make_sessionmaker
from dialer.models import Lead
from tests.dialer.test_api_dialer import dialer_env, until, upload

pytestmark = pytest.mark.slow

ONE_LEAD = "ref,name,phone\nr1,Anna Answer,+4930555101\n"


async def test_callback_from_a_campaign_pop_schedules_the_lead(tmp_path: Path) -> None:
    async with dialer_env(tmp_path) as env:
        sup = await env.account("sue", "supervisor")
        anna = await env.account("anna")
        day = {"window_start": "00:00", "window_end": "23:59", "purpose": "service"}
        st, _ = await sup.post("/api/dialer/campaigns", {"name": "promo", "queue": "sales", **day})
        assert st == 201
        st, _ = await upload(env, str(sup.token), "promo", ONE_LEAD)
        assert st == 200
        st, _ = await anna.post("/api/agent/login", {"device": "PJSIP/1001", "queues": ["sales"]})
        assert st == 200
        st, _ = await sup.post("/api/dialer/campaigns/promo/start")
        assert st == 200

        async def campaign_call() -> Any:
            st, data = await anna.get("/api/calls")
            calls = [c for c in data.get("calls", []) if c.get("campaign") == "promo"]
            return calls[0] if st == 200 and calls else None

        call = await until(campaign_call, 10)
        due = datetime.now(UTC) + timedelta(hours=2)
        st, data = await anna.post(
            "/api/callbacks",
            {"call_id": call["call_id"], "due": due.isoformat(), "for_me": True, "note": "after 3"},
        )
        assert st == 201, data

        async def lead_state() -> Any:
            async with make_sessionmaker(env.services.engine)() as s:
                lead = (await s.execute(select(Lead).where(Lead.ref == "r1"))).scalar_one()
            return lead if lead.state == "callback" else None

        lead = await until(lead_state, 10)
        assert lead.next_at == pytest.approx(due.timestamp(), abs=1)
        assert lead.callback_agent == env.accounts["anna"][0]
