"""The dialer's REST API and supervisor figures on the whole daemon (cti.app) with the PBX
simulator over TCP: campaign CRUD and validation, CSV upload, a campaign run, live and
historical figures (JSON and CSV), /metrics, callbacks and the preview flow."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from ami.settings import SimulatorSettings
from ami.simulator import PbxSimulator
from crm_bridge.db import make_sessionmaker
from cti.app import running_daemon
from dialer.models import Lead
from dialer.settings import DialerSettings
from tests.cti import test_api_env
from tests.cti.test_api_env import SIM_SECRET, Env

pytestmark = pytest.mark.slow

CSV_OK = "ref,name,phone,tariff\nr1,Anna Answer,+4930555101,gold\nr2,Bert Answer,+4930555102,\n"


@asynccontextmanager
async def dialer_env(tmp: Path) -> AsyncIterator[Env]:
    sim = PbxSimulator(
        SimulatorSettings(
            port=0,
            secret=SecretStr(SIM_SECRET),
            inbound_per_minute=0,
            queues=["sales", "support"],
            agent_answer_after=0.5,
            customer_answer_after=1.0,
            talk_min=3.0,
            talk_max=4.0,
            time_scale=10.0,
        )
    )
    await sim.start()
    try:
        settings = test_api_env.daemon_settings_for(tmp, sim.port)
        settings = settings.model_copy(
            update={
                "dialer": DialerSettings(
                    tick_seconds=0.05,
                    channel_template="PJSIP/{number}@trunk",
                    agent_log_flush_seconds=0.1,
                ),
                "agents": settings.agents.model_copy(update={"wrap_up_seconds": {"default": 0.3}}),
            }
        )
        async with running_daemon(settings) as daemon, aiohttp.ClientSession() as http:
            env = Env(daemon, sim, http)
            await env.ami_up()
            d = env.services.dialer
            assert d is not None
            d.attach_agents(env.services.agents.view, env.services.agents.views)
            yield env
    finally:
        await sim.stop()


async def upload(env: Env, token: str, campaign: str, text: str) -> tuple[int, Any]:
    async with env.http.post(
        f"{env.url}/api/dialer/campaigns/{campaign}/leads",
        data=text.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    ) as r:
        return r.status, await r.json()


async def until(cond: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def fields(data: Any) -> set[str]:
    return {f["field"] for f in data["error"]["fields"]}


async def test_campaign_api_run_figures_callbacks_and_preview(tmp_path: Path) -> None:
    async with dialer_env(tmp_path) as env:
        sup = await env.account("sue", "supervisor")
        anna = await env.account("anna")
        # any hour: the test runs whenever CI does (the window itself is tested elsewhere)
        day = {"window_start": "00:00", "window_end": "23:59", "purpose": "service"}
        base = {"name": "promo", "queue": "sales", **day}

        # ---- validation: 4xx JSON naming the field
        st, data = await sup.post("/api/dialer/campaigns", {**base, "max_ring_seconds": 10})
        assert st == 422 and "body.max_ring_seconds" in fields(data)
        st, data = await sup.post("/api/dialer/campaigns", {**base, "colour": "red"})
        assert st == 422 and "body.colour" in fields(data)
        st, data = await sup.post("/api/dialer/campaigns", {**base, "retry": {"bsy": {}}})
        assert st == 422 and any("retry" in f for f in fields(data))
        st, data = await sup.call("POST", "/api/dialer/campaigns", raw=b"{not json")
        assert st == 400 and data["error"]["code"] == "invalid_json"
        st, _ = await anna.get("/api/dialer/campaigns")
        assert st == 403

        st, data = await sup.post("/api/dialer/campaigns", base)
        assert st == 201 and data["state"] == "stopped" and data["mode"] == "progressive"
        st, data = await sup.post("/api/dialer/campaigns", base)
        assert st == 409
        st, data = await sup.post("/api/dialer/campaigns/promo/start")
        assert st == 409 and "no leads" in data["error"]["message"]
        st, data = await sup.call("PUT", "/api/dialer/campaigns/promo", {"window_start": "25:00"})
        assert st == 422
        st, data = await sup.call("PUT", "/api/dialer/campaigns/promo", {"caller_id": "+4930999"})
        assert st == 200 and data["caller_id"] == "+4930999"
        st, data = await sup.get("/api/dialer/campaigns/nope")
        assert st == 404

        # ---- CSV upload with a broken row: the rest lands, the row is reported by line
        st, data = await upload(env, str(sup.token), "promo", CSV_OK + "r3,Bad,12\n")
        assert st == 200 and data["imported"] == 2 and data["rejected"] == 1
        assert data["rejects"][0]["line"] == 4
        st, data = await upload(env, str(sup.token), "promo", "name\nx\n")
        assert st == 422 and data["error"]["fields"][0]["field"] == "body"

        # ---- a run: one agent, two answered leads
        st, _ = await anna.post("/api/agent/login", {"device": "PJSIP/1001", "queues": ["sales"]})
        assert st == 200
        st, data = await sup.post("/api/dialer/campaigns/promo/start")
        assert st == 200 and data["state"] == "running"

        async def finished() -> bool:
            st, data = await sup.get("/api/stats/campaigns/promo")
            return st == 200 and data["leads_done"] == 2 and data["in_flight"] == 0

        await until(finished, 15)
        st, data = await sup.get("/api/stats/campaigns/promo")
        assert data["attempts"] == 2 and data["connects"] == 2 and data["live_answers"] == 2
        assert data["abandoned"] == 0 and data["abandon_rate_window"] == 0.0
        assert data["dials_per_connect"] == 1.0 and data["leads_remaining"] == 0
        assert data["live"]["mode"] == "progressive"
        st, data = await sup.get("/api/stats/campaigns")
        assert st == 200 and [c["campaign"] for c in data["campaigns"]] == ["promo"]
        st, _ = await anna.get("/api/stats/campaigns")
        assert st == 403

        st, data = await sup.get("/api/stats/agents")
        (row,) = [a for a in data["agents"] if a["agent"] == env.accounts["anna"][0]]
        parts = row["ready"] + row["ringing"] + row["on_call"] + row["wrap_up"] + row["paused"]
        assert row["logged_in"] == pytest.approx(parts, abs=0.01)
        assert row["calls"] == 2 and row["on_call"] > 0

        # ---- history (agent log persisted in batches) and CSV export
        today = datetime.now(UTC).date().isoformat()
        st, hist = await sup.get(f"/api/stats/history?from={today}&to={today}")
        assert st == 200
        (crow,) = hist["campaigns"]
        assert crow["campaign"] == "promo" and crow["attempts"] == 2 and crow["connects"] == 2
        (arow,) = [a for a in hist["agents"] if a["agent"] == env.accounts["anna"][0]]
        assert arow["calls"] == 2
        st, data = await sup.get(f"/api/stats/history?from={today}&to=garbage")
        assert st == 422 and "query.to" in fields(data)
        async with env.http.get(
            f"{env.url}/api/stats/history?from={today}&to={today}&format=csv",
            headers={"Authorization": f"Bearer {sup.token}"},
        ) as r:
            assert r.status == 200 and r.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await r.text())))
        kinds = {(x["kind"], x["name"]) for x in rows}
        assert ("campaign", "promo") in kinds and ("agent", env.accounts["anna"][0]) in kinds

        async with env.http.get(f"{env.url}/metrics") as r:
            text = await r.text()
        assert "cti_dialer_originates_total 2" in text
        assert 'cti_dialer_abandon_rate{campaign="promo"} 0.00000' in text
        assert "cti_agent_seconds_today{" in text

        # ---- a callback promised on a lead ("in 20 minutes", for me)
        async with make_sessionmaker(env.services.engine)() as s:
            lead_id = (await s.execute(select(Lead.id).where(Lead.ref == "r1"))).scalar_one()
        path = f"/api/dialer/leads/{lead_id}/callback"
        st, data = await anna.post(path, {"in_minutes": 20, "at": "2030-01-01T10:00"})
        assert st == 422
        st, data = await anna.post(path, {"at": "2020-01-01T10:00"})
        assert st == 422 and "body.at" in fields(data)
        st, data = await anna.post(path, {"in_minutes": 20, "agent": "someone-else"})
        assert st == 403
        st, data = await anna.post("/api/dialer/leads/999999/callback", {"in_minutes": 5})
        assert st == 404
        st, cb = await anna.post(path, {"in_minutes": 20, "for_me": True, "note": "after 3"})
        assert st == 201 and cb["state"] == "pending" and cb["agent"] == env.accounts["anna"][0]
        assert cb["number"] == "+4930555101" and cb["due_local"]
        st, data = await anna.get("/api/dialer/callbacks")
        assert st == 200 and [c["id"] for c in data["callbacks"]] == [cb["id"]]
        st, data = await sup.get("/api/dialer/callbacks/missed")
        assert st == 200 and data["callbacks"] == []
        st, data = await sup.get("/api/stats/campaigns/promo")
        assert data["callbacks"]["pending"] == 1

        # ---- preview: the agent sees the lead, skips one, dials the next (phone first)
        st, _ = await sup.post("/api/dialer/campaigns/promo/stop")
        assert st == 200
        st, _ = await sup.post(
            "/api/dialer/campaigns", {"name": "look", "queue": "sales", "mode": "preview", **day}
        )
        assert st == 201
        st, _ = await upload(env, str(sup.token), "look", CSV_OK)
        assert st == 200
        st, _ = await sup.post("/api/dialer/campaigns/look/start")
        assert st == 200

        async def preview() -> Any:
            st, data = await anna.get("/api/dialer/preview")
            assert st == 200
            return data["lead"]

        first = await until(preview, 5)
        assert first["campaign"] == "look" and first["name"] in ("Anna Answer", "Bert Answer")
        st, _ = await anna.post(f"/api/dialer/preview/{first['lead_id'] + 1000}/dial")
        assert st == 404
        st, _ = await anna.post(f"/api/dialer/preview/{first['lead_id']}/skip")
        assert st == 204
        second = await until(preview, 5)
        assert second["lead_id"] != first["lead_id"]
        st, data = await anna.post(f"/api/dialer/preview/{second['lead_id']}/dial")
        assert st == 200 and data["lead_id"] == second["lead_id"]

        async def handled() -> bool:
            _st, data = await sup.get("/api/stats/campaigns/look")
            return (
                data["connects"] == 1
                and data["in_flight"] == 0
                and data["live"]["agent_first"] == 0
            )

        await until(handled, 10)
        st, data = await sup.get("/api/stats/campaigns/look")
        assert data["attempts"] == 1 and data["abandoned"] == 0
        assert any(n for n in env.services.dialer.stats.items() if n == ("previews_skipped", 1))
