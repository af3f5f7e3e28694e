"""Campaign definitions: validation, CRUD and start/stop/pause.

The same `CampaignSpec` model validates the REST API payloads, the CLI's TOML/JSON files and
what is stored, so a campaign that saves is a campaign that runs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import delete as sa_delete
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_bridge.db import make_sessionmaker
from dialer.compliance import CallingWindow, ComplianceError
from dialer.models import Attempt, Callback, Campaign, Lead
from dialer.retry import RetryPolicy


class CampaignError(ValueError):
    """A campaign operation was refused; the message says why."""


class CampaignSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
    mode: Literal["preview", "progressive", "predictive"] = "progressive"
    queue: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    server: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    caller_id: str = Field("", max_length=80, pattern=r"^[^\r\n\x00]*$")
    window_start: str = "08:00"
    window_end: str = "21:00"
    abandon_cap: float = Field(0.03, gt=0, le=0.05)
    abandon_window: Literal["30d", "24h"] = "30d"
    max_ring_seconds: float = Field(25.0, ge=15, le=120)
    amd: bool = False
    safe_harbor: str = Field("cti-safe-harbor", pattern=r"^[A-Za-z0-9_/.-]{1,80}$")
    purpose: str = Field("marketing", pattern=r"^[a-z0-9_-]{1,50}$")
    retry: dict[str, Any] = Field(default_factory=dict)

    @field_validator("retry")
    @classmethod
    def _retry_valid(cls, v: dict[str, Any]) -> dict[str, Any]:
        RetryPolicy.from_mapping(v)  # raises ValueError naming the key
        return v

    @model_validator(mode="after")
    def _window_valid(self) -> CampaignSpec:
        try:
            CallingWindow.parse(self.window_start, self.window_end)
        except ComplianceError as e:
            raise ValueError(str(e)) from None
        return self

    def columns(self) -> dict[str, Any]:
        d = self.model_dump()
        d["abandon_window"] = 86400.0 if self.abandon_window == "24h" else 30 * 86400.0
        return d


def campaign_view(c: Campaign) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "mode": c.mode,
        "state": c.state,
        "queue": c.queue,
        "server": c.server,
        "caller_id": c.caller_id,
        "window_start": c.window_start,
        "window_end": c.window_end,
        "abandon_cap": c.abandon_cap,
        "abandon_window": "24h" if c.abandon_window <= 86400.0 else "30d",
        "max_ring_seconds": c.max_ring_seconds,
        "amd": c.amd,
        "safe_harbor": c.safe_harbor,
        "purpose": c.purpose,
        "retry": c.retry or {},
    }


class CampaignService:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_change: Callable[[Campaign], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = make_sessionmaker(engine)
        self._on_change = on_change
        self._clock = clock

    async def create(self, spec: CampaignSpec) -> dict[str, Any]:
        now = self._clock()
        try:
            async with self._sessions() as s, s.begin():
                c = Campaign(**spec.columns(), state="stopped", created_at=now, updated_at=now)
                s.add(c)
                await s.flush()
                return campaign_view(c)
        except IntegrityError:
            raise CampaignError(f"a campaign named {spec.name!r} exists already") from None

    async def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        async with self._sessions() as s, s.begin():
            c = await self._get(s, name)
            merged = {**campaign_view(c), **changes}
            merged.pop("id", None)
            merged.pop("state", None)
            spec = CampaignSpec.model_validate(merged)
            if spec.name != c.name:
                raise CampaignError("a campaign cannot be renamed")
            for k, v in spec.columns().items():
                setattr(c, k, v)
            c.updated_at = self._clock()
        await self._changed(c)
        return campaign_view(c)

    async def list(self) -> list[dict[str, Any]]:
        async with self._sessions() as s:
            rows = (await s.execute(select(Campaign).order_by(Campaign.name))).scalars().all()
            return [campaign_view(c) for c in rows]

    async def get(self, name: str) -> dict[str, Any]:
        async with self._sessions() as s:
            return campaign_view(await self._get(s, name))

    async def set_state(
        self, name: str, state: Literal["running", "paused", "stopped"]
    ) -> dict[str, Any]:
        async with self._sessions() as s, s.begin():
            c = await self._get(s, name)
            if state == "running":
                leads = (
                    await s.execute(select(func.count()).where(Lead.campaign_id == c.id))
                ).scalar_one()
                if leads == 0:
                    raise CampaignError(f"campaign {name!r} has no leads: import some first")
            c.state = state
            c.updated_at = self._clock()
        await self._changed(c)
        return campaign_view(c)

    async def delete(self, name: str) -> None:
        """Remove a stopped campaign with its leads, attempts and callbacks."""
        async with self._sessions() as s, s.begin():
            c = await self._get(s, name)
            if c.state != "stopped":
                raise CampaignError(f"campaign {name!r} is {c.state}: stop it first")
            for model in (Callback, Attempt, Lead):
                await s.execute(sa_delete(model).where(model.campaign_id == c.id))
            await s.delete(c)

    async def _changed(self, c: Campaign) -> None:
        if self._on_change is not None:
            await self._on_change(c)

    @staticmethod
    async def _get(s: Any, name: str) -> Campaign:
        c = (await s.execute(select(Campaign).where(Campaign.name == name))).scalar_one_or_none()
        if c is None:
            raise CampaignError(f"no campaign named {name!r}")
        return c
