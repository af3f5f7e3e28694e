"""REST endpoints of the outbound dialer and the supervisor figures.

Mounted by `cti.api.setup` (this module is listed in `ROUTER_MODULES` and exposes `router`).
Campaign management, lead import, callbacks ledger and statistics need the supervisor (or
admin) role; scheduling a callback on a lead and the preview flow are open to agents, who act
only for themselves. With the dialer disabled every endpoint answers 409 `dialer_disabled`
(a state of this server, not a failure of it).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from cti import stats
from cti.api import ANY_ROLE, STAFF, ApiError, ApiRouter, Ctx, Strict
from dialer.campaigns import CampaignError, CampaignSpec

log = structlog.get_logger(__name__)

router = ApiRouter(
    "dialer", "Outbound campaigns, leads, callbacks, previews and supervisor statistics"
)

#: biggest CSV accepted through the API (larger lists: `cti dialer import`)
MAX_UPLOAD = 20 * 1024 * 1024


# --------------------------------------------------------------------------- models


class CampaignOut(BaseModel):
    id: int
    name: str
    mode: str
    state: str
    queue: str
    server: str
    caller_id: str
    window_start: str
    window_end: str
    abandon_cap: float
    abandon_window: str
    max_ring_seconds: float
    amd: bool
    safe_harbor: str
    purpose: str
    retry: dict[str, Any]


class CampaignsOut(BaseModel):
    campaigns: list[CampaignOut]


class CampaignPatch(Strict):
    """Only the fields given change; the result is validated as a whole campaign."""

    mode: Literal["preview", "progressive", "predictive"] | None = None
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,80}$")
    server: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    caller_id: str | None = Field(None, max_length=80, pattern=r"^[^\r\n\x00]*$")
    window_start: str | None = Field(None, max_length=5)
    window_end: str | None = Field(None, max_length=5)
    abandon_cap: float | None = Field(None, gt=0, le=0.05)
    abandon_window: Literal["30d", "24h"] | None = None
    max_ring_seconds: float | None = Field(None, ge=15, le=120)
    amd: bool | None = None
    safe_harbor: str | None = Field(None, pattern=r"^[A-Za-z0-9_/.-]{1,80}$")
    purpose: str | None = Field(None, pattern=r"^[a-z0-9_-]{1,50}$")
    retry: dict[str, Any] | None = None


class RejectOut(BaseModel):
    line: int
    reason: str


class ImportOut(BaseModel):
    imported: int
    duplicates: int
    rejected: int
    rejects: list[RejectOut]


class LeadCountsOut(BaseModel):
    campaign: str
    by_state: dict[str, int]
    total: int


class CallbackIn(Strict):
    """When: `at` (a local time in the lead's time zone unless it has an offset) or
    `in_minutes` from now. `for_me` (agents) or `agent` (supervisors) or anyone."""

    at: datetime | None = None
    in_minutes: float | None = Field(None, gt=0, le=60 * 24 * 366)
    for_me: bool = False
    agent: str | None = Field(None, min_length=1, max_length=80)
    note: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _when(self) -> CallbackIn:
        if (self.at is None) == (self.in_minutes is None):
            raise ValueError("give exactly one of at and in_minutes")
        return self


class CallbackOut(BaseModel):
    id: int
    campaign: str
    lead_id: int
    name: str
    number: str
    time_zone: str
    agent: str | None
    due_at: float
    due_local: str
    state: str
    outcome: str
    attempt_id: str | None
    note: str
    created_by: str
    overdue: bool


class CallbacksOut(BaseModel):
    callbacks: list[CallbackOut]


class CallbacksQuery(BaseModel):
    campaign: str | None = Field(None, min_length=1, max_length=80)
    state: Literal["pending", "dialing", "done", "fallback", "missed", "cancelled"] | None = None


class PreviewQuery(BaseModel):
    campaign: str | None = Field(None, min_length=1, max_length=80)


class PreviewOut(BaseModel):
    """`lead` is null when no running preview campaign has a lead for you now."""

    lead: PreviewLeadOut | None


class PreviewLeadOut(BaseModel):
    campaign: str
    lead_id: int
    kind: str
    name: str
    number: str
    customer_id: int | None
    fields: dict[str, Any]
    attempts: int
    last_outcome: str
    time_zone: str


PreviewOut.model_rebuild()


class DialOut(BaseModel):
    attempt_id: str
    lead_id: int


class AgentFiguresOut(BaseModel):
    agent: str
    status: str
    since: float | None
    day: str
    logged_in: float
    ready: float
    ringing: float
    on_call: float
    wrap_up: float
    paused: float
    paused_by_reason: dict[str, float]
    calls: int
    occupancy: float | None
    campaign_seconds: dict[str, float]


class AgentsStatsOut(BaseModel):
    at: float
    agents: list[AgentFiguresOut]


class CallbackCountsOut(BaseModel):
    pending: int
    overdue: int
    missed: int
    done: int


class PredictionOut(BaseModel):
    predicted_answer_rate: float | None
    actual_answer_rate: float | None
    actual_live_rate: float | None
    current_predicted_hit_rate: float | None


class CampaignStatsOut(BaseModel):
    campaign: str
    mode: str
    state: str
    attempts: int
    in_flight: int
    connects: int
    live_answers: int
    machines: int
    busy: int
    no_answer: int
    congestion: int
    failed: int
    abandoned: int
    lost: int
    abandon_rate_window: float
    abandon_cap: float
    abandon_window: str
    window_answered: int
    window_abandoned: int
    dials_per_connect: float | None
    leads_remaining: int
    leads_done: int
    leads_exhausted: int
    leads_by_state: dict[str, int]
    callbacks: CallbackCountsOut
    dial_ratio: float | None
    recent_launches: int
    prediction: PredictionOut
    live: dict[str, Any] | None


class CampaignsStatsOut(BaseModel):
    at: float
    campaigns: list[CampaignStatsOut]


class HistoryQuery(BaseModel):
    from_: str = Field(alias="from", min_length=10, max_length=32)
    to: str = Field(min_length=10, max_length=32)


class AgentDayOut(BaseModel):
    agent: str
    day: str
    logged_in: float
    ready: float
    ringing: float
    on_call: float
    wrap_up: float
    paused: float
    paused_by_reason: dict[str, float]
    calls: int
    occupancy: float | None
    campaign_seconds: dict[str, float]


class CampaignDayOut(BaseModel):
    campaign: str
    day: str
    attempts: int
    connects: int
    live_answers: int
    machines: int
    busy: int
    no_answer: int
    congestion: int
    failed: int
    abandoned: int
    lost: int
    abandon_rate: float
    dials_per_connect: float | None


class HistoryOut(BaseModel):
    since: float
    until: float
    agents: list[AgentDayOut]
    campaigns: list[CampaignDayOut]


# --------------------------------------------------------------------------- helpers


def _dialer(ctx: Ctx) -> Any:
    d = ctx.services.dialer
    if d is None:
        raise ApiError(409, "dialer_disabled", "the dialer is not enabled (dialer.enabled)")
    agents = ctx.services.agents
    d.attach_agents(agents.view, agents.views)  # no-op once the composition root does it
    return d


def _campaign_error(e: CampaignError, field: str | None = None) -> ApiError:
    msg = str(e)
    if msg.startswith("no campaign"):
        return ApiError(404, "not_found", msg, field=field)
    return ApiError(409, "conflict", msg, field=field)


def _lead_id(ctx: Ctx) -> int:
    raw = ctx.params["lead_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not_found", "no such lead", field="lead_id")
    return int(raw)


def _callback_out(row: dict[str, Any]) -> CallbackOut:
    try:
        tz = ZoneInfo(row["time_zone"])
    except Exception:
        tz = ZoneInfo("UTC")
    local = datetime.fromtimestamp(row["due_at"], tz).isoformat(timespec="minutes")
    return CallbackOut.model_validate({**row, "due_local": local})


def _parse_day(text: str, field: str, end: bool) -> float:
    """A date (whole day, UTC) or an ISO timestamp."""
    try:
        if len(text) == 10:
            d = datetime.fromisoformat(text).replace(tzinfo=UTC)
            return (d + timedelta(days=1) if end else d).timestamp()
        t = datetime.fromisoformat(text)
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp()
    except (ValueError, OverflowError):
        raise ApiError(
            422, "invalid_query", "use YYYY-MM-DD or an ISO time", field=f"query.{field}"
        ) from None


# --------------------------------------------------------------------------- campaigns


@router.get(
    "/api/dialer/campaigns",
    summary="All campaigns",
    roles=STAFF,
    response=CampaignsOut,
    errors=(409,),
)
async def list_campaigns(ctx: Ctx, body: None) -> CampaignsOut:
    rows = await _dialer(ctx).campaigns.list()
    return CampaignsOut.model_validate({"campaigns": rows})


@router.post(
    "/api/dialer/campaigns",
    summary="Create a campaign (stopped)",
    roles=STAFF,
    body=CampaignSpec,
    response=CampaignOut,
    status=201,
    errors=(409,),
)
async def create_campaign(ctx: Ctx, body: CampaignSpec) -> CampaignOut:
    try:
        view = await _dialer(ctx).campaigns.create(body)
    except CampaignError as e:
        raise _campaign_error(e, "body.name") from None
    log.info("campaign created", campaign=body.name, by=ctx.username)
    return CampaignOut.model_validate(view)


@router.get(
    "/api/dialer/campaigns/{name}",
    summary="One campaign",
    roles=STAFF,
    response=CampaignOut,
    errors=(409,),
)
async def get_campaign(ctx: Ctx, body: None) -> CampaignOut:
    try:
        return CampaignOut.model_validate(await _dialer(ctx).campaigns.get(ctx.params["name"]))
    except CampaignError as e:
        raise _campaign_error(e, "name") from None


@router.put(
    "/api/dialer/campaigns/{name}",
    summary="Change a campaign (only the fields given)",
    roles=STAFF,
    body=CampaignPatch,
    response=CampaignOut,
    errors=(409,),
)
async def update_campaign(ctx: Ctx, body: CampaignPatch) -> CampaignOut:
    changes = body.model_dump(exclude_unset=True)
    try:
        view = await _dialer(ctx).campaigns.update(ctx.params["name"], changes)
    except CampaignError as e:
        raise _campaign_error(e, "name") from None
    except ValueError as e:  # the merged campaign does not validate
        raise ApiError(422, "invalid_body", str(e).splitlines()[0][:300], field="body") from None
    return CampaignOut.model_validate(view)


@router.delete(
    "/api/dialer/campaigns/{name}",
    summary="Delete a stopped campaign with its leads",
    roles=STAFF,
    errors=(409,),
)
async def delete_campaign(ctx: Ctx, body: None) -> None:
    try:
        await _dialer(ctx).campaigns.delete(ctx.params["name"])
    except CampaignError as e:
        raise _campaign_error(e, "name") from None


async def _set_state(ctx: Ctx, state: Literal["running", "paused", "stopped"]) -> CampaignOut:
    try:
        view = await _dialer(ctx).campaigns.set_state(ctx.params["name"], state)
    except CampaignError as e:
        raise _campaign_error(e, "name") from None
    log.info("campaign state", campaign=ctx.params["name"], state=state, by=ctx.username)
    return CampaignOut.model_validate(view)


@router.post(
    "/api/dialer/campaigns/{name}/start",
    summary="Start dialling",
    roles=STAFF,
    response=CampaignOut,
    errors=(409,),
)
async def start_campaign(ctx: Ctx, body: None) -> CampaignOut:
    return await _set_state(ctx, "running")


@router.post(
    "/api/dialer/campaigns/{name}/pause",
    summary="Pause (calls in flight finish)",
    roles=STAFF,
    response=CampaignOut,
    errors=(409,),
)
async def pause_campaign(ctx: Ctx, body: None) -> CampaignOut:
    return await _set_state(ctx, "paused")


@router.post(
    "/api/dialer/campaigns/{name}/stop",
    summary="Stop (calls in flight finish)",
    roles=STAFF,
    response=CampaignOut,
    errors=(409,),
)
async def stop_campaign(ctx: Ctx, body: None) -> CampaignOut:
    return await _set_state(ctx, "stopped")


@router.post(
    "/api/dialer/campaigns/{name}/leads",
    summary="Import leads: the request body is the CSV file (text/csv)",
    roles=STAFF,
    response=ImportOut,
    errors=(404, 409, 413, 422),
)
async def import_campaign_leads(ctx: Ctx, body: None) -> ImportOut:
    """Columns: phone (required), phone2.., name, ref, time_zone, priority, anything else
    is kept as lead fields. Bad rows are reported by line; the rest is imported."""
    from dialer.importer import import_leads

    d = _dialer(ctx)
    req = ctx.request
    if req.content_length is not None and req.content_length > MAX_UPLOAD:
        raise ApiError(413, "too_large", f"at most {MAX_UPLOAD} bytes; use the CLI")
    raw = await req.read()
    if not raw.strip():
        raise ApiError(422, "empty", "the body must be the CSV file", field="body")
    fd, path = tempfile.mkstemp(suffix=".csv")
    try:
        with os.fdopen(fd, "wb") as f:
            await asyncio.to_thread(f.write, raw)
        crm = ctx.services.settings.crm
        try:
            report = await import_leads(
                d.engine,
                ctx.params["name"],
                path,
                region=crm.default_region,
                default_area=crm.default_area,
                progress=False,
            )
        except LookupError as e:
            raise ApiError(404, "not_found", str(e), field="name") from None
        except ValueError as e:
            raise ApiError(422, "bad_file", str(e), field="body") from None
    finally:
        os.unlink(path)
    return ImportOut.model_validate(report.to_dict())


@router.get(
    "/api/dialer/campaigns/{name}/leads",
    summary="Lead counts by state",
    roles=STAFF,
    response=LeadCountsOut,
    errors=(409,),
)
async def lead_counts(ctx: Ctx, body: None) -> LeadCountsOut:
    d = _dialer(ctx)
    figs = await stats.campaign_figures(d, ctx.params["name"])
    if not figs:
        raise ApiError(404, "not_found", "no such campaign", field="name")
    by_state = figs[0]["leads_by_state"]
    return LeadCountsOut(
        campaign=ctx.params["name"], by_state=by_state, total=sum(by_state.values())
    )


# --------------------------------------------------------------------------- callbacks


@router.post(
    "/api/dialer/leads/{lead_id}/callback",
    summary="Promise a call back on a lead (e.g. in 20 minutes)",
    body=CallbackIn,
    response=CallbackOut,
    status=201,
    errors=(409,),
)
async def schedule_lead_callback(ctx: Ctx, body: CallbackIn) -> CallbackOut:
    """Agents schedule for themselves (`for_me`) or for anyone; supervisors may name the
    agent. During the lead's call, the promise applies when the call ends."""
    d = _dialer(ctx)
    lead_id = _lead_id(ctx)
    info = await d.leads.lead_info(lead_id)
    if info is None:
        raise ApiError(404, "not_found", "no such lead", field="lead_id")
    if body.agent is not None and not ctx.is_staff and body.agent != ctx.agent_id:
        raise ApiError(403, "forbidden", "agents schedule callbacks for themselves only")
    agent = body.agent or (ctx.agent_id if body.for_me else None)
    now = d.now()
    if body.in_minutes is not None:
        due = now + body.in_minutes * 60.0
    else:
        assert body.at is not None
        at = body.at
        if at.tzinfo is None:
            at = at.replace(tzinfo=ZoneInfo(info["time_zone"]))
        try:
            due = at.timestamp()
        except (OverflowError, ValueError):
            raise ApiError(422, "bad_time", "at is out of range", field="body.at") from None
        if due < now - 60:
            raise ApiError(422, "in_the_past", "the callback time has passed", field="body.at")
        if due > now + 366 * 86400:
            raise ApiError(422, "too_far", "at most a year ahead", field="body.at")
    try:
        cb_id = await d.schedule_callback(
            lead_id, due, agent, note=body.note, created_by=ctx.username or ""
        )
    except ValueError as e:
        raise ApiError(409, "busy", str(e), field="lead_id") from None
    rows = await d.leads.callbacks(
        campaign_id=None, now=now, grace=d.settings.callback_grace_minutes * 60, limit=10_000
    )
    row = next(r for r in rows if r["id"] == cb_id)
    return _callback_out(row)


async def _callbacks(ctx: Ctx, states: tuple[str, ...], overdue_only: bool) -> CallbacksOut:
    d = _dialer(ctx)
    q: CallbacksQuery | None = ctx.query
    campaign_id = None
    if q is not None and q.campaign is not None:
        campaign_id = await _campaign_id(d, q.campaign)
    if q is not None and q.state is not None:
        states = (q.state,)
    rows = await d.leads.callbacks(
        campaign_id=campaign_id,
        states=states,
        now=d.now(),
        grace=d.settings.callback_grace_minutes * 60,
    )
    if overdue_only:
        rows = [r for r in rows if r["overdue"] or r["state"] == "missed"]
    if not ctx.is_staff:
        rows = [r for r in rows if r["agent"] == ctx.agent_id]
    return CallbacksOut(callbacks=[_callback_out(r) for r in rows])


async def _campaign_id(d: Any, name: str) -> int:
    try:
        return int((await d.campaigns.get(name))["id"])
    except CampaignError:
        raise ApiError(404, "not_found", "no such campaign", field="query.campaign") from None


@router.get(
    "/api/dialer/callbacks",
    summary="The callback ledger (agents see their own)",
    query=CallbacksQuery,
    response=CallbacksOut,
    errors=(404, 409),
)
async def list_callbacks(ctx: Ctx, body: None) -> CallbacksOut:
    return await _callbacks(ctx, (), False)


@router.get(
    "/api/dialer/callbacks/missed",
    summary="Callbacks past due and grace, not dialled (never silently dropped)",
    roles=STAFF,
    query=CallbacksQuery,
    response=CallbacksOut,
    errors=(404, 409),
)
async def missed_callbacks(ctx: Ctx, body: None) -> CallbacksOut:
    return await _callbacks(ctx, ("pending", "fallback", "missed"), True)


# --------------------------------------------------------------------------- preview


@router.get(
    "/api/dialer/preview",
    summary="My next lead to preview (lead is null when there is none)",
    roles=ANY_ROLE,
    query=PreviewQuery,
    response=PreviewOut,
    errors=(409,),
)
async def preview_next(ctx: Ctx, body: None) -> PreviewOut:
    agent = ctx.require_agent()
    q: PreviewQuery | None = ctx.query
    lead = await _dialer(ctx).preview_next(agent, q.campaign if q else None)
    return PreviewOut(lead=None if lead is None else PreviewLeadOut.model_validate(lead))


@router.post(
    "/api/dialer/preview/{lead_id}/dial",
    summary="Dial my previewed lead (my phone rings first)",
    response=DialOut,
    errors=(409,),
)
async def preview_dial(ctx: Ctx, body: None) -> DialOut:
    agent = ctx.require_agent()
    lead_id = _lead_id(ctx)
    try:
        attempt = await _dialer(ctx).preview_dial(agent, lead_id)
    except LookupError as e:
        raise ApiError(404, "not_found", str(e), field="lead_id") from None
    except RuntimeError as e:
        raise ApiError(409, "not_logged_in", str(e)) from None
    return DialOut(attempt_id=attempt, lead_id=lead_id)


@router.post(
    "/api/dialer/preview/{lead_id}/skip",
    summary="Skip my previewed lead (it comes back later)",
    errors=(409,),
)
async def preview_skip(ctx: Ctx, body: None) -> None:
    agent = ctx.require_agent()
    try:
        await _dialer(ctx).preview_skip(agent, _lead_id(ctx))
    except LookupError as e:
        raise ApiError(404, "not_found", str(e), field="lead_id") from None


# --------------------------------------------------------------------------- statistics


@router.get(
    "/api/stats/agents",
    summary="Live time accounting per agent (today)",
    roles=STAFF,
    response=AgentsStatsOut,
    errors=(409,),
)
async def stats_agents(ctx: Ctx, body: None) -> AgentsStatsOut:
    d = _dialer(ctx)
    now = d.now()
    rows = stats.agent_figures(d, ctx.services.agents, now)
    return AgentsStatsOut.model_validate({"at": now, "agents": rows})


@router.get(
    "/api/stats/campaigns",
    summary="Live figures of every campaign",
    roles=STAFF,
    response=CampaignsStatsOut,
    errors=(409,),
)
async def stats_campaigns(ctx: Ctx, body: None) -> CampaignsStatsOut:
    d = _dialer(ctx)
    figs = await stats.campaign_figures(d)
    return CampaignsStatsOut.model_validate({"at": d.now(), "campaigns": figs})


@router.get(
    "/api/stats/campaigns/{name}",
    summary="Live figures of one campaign",
    roles=STAFF,
    response=CampaignStatsOut,
    errors=(409,),
)
async def stats_campaign(ctx: Ctx, body: None) -> CampaignStatsOut:
    figs = await stats.campaign_figures(_dialer(ctx), ctx.params["name"])
    if not figs:
        raise ApiError(404, "not_found", "no such campaign", field="name")
    return CampaignStatsOut.model_validate(figs[0])


@router.get(
    "/api/stats/history",
    summary="Per agent and campaign and day; format=csv for a CSV file",
    roles=STAFF,
    query=HistoryQuery,
    response=HistoryOut,
    errors=(409,),
)
async def stats_history(ctx: Ctx, body: None) -> HistoryOut:
    """`from`/`to`: dates (YYYY-MM-DD, whole days in UTC, `to` included) or ISO times.
    Add `format=csv` for the same figures as a CSV file (text/csv, one row per agent or
    campaign and day, a `kind` column tells which); it is not in the parameter schema because
    this document describes JSON answers only."""
    q: HistoryQuery = ctx.query
    fmt = ctx.request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(422, "invalid_query", "format is json or csv", field="query.format")
    since = _parse_day(q.from_, "from", end=False)
    until = _parse_day(q.to, "to", end=True)
    if until <= since:
        raise ApiError(422, "invalid_query", "to must be after from", field="query.to")
    if until - since > 400 * 86400:
        raise ApiError(422, "invalid_query", "at most 400 days at once", field="query.to")
    hist = await stats.history(_dialer(ctx), since, until)
    if fmt == "csv":
        raise web.HTTPOk(
            text=stats.history_csv(hist),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="cti-history.csv"'},
        )
    return HistoryOut.model_validate(
        {"since": since, "until": until, "agents": hist["agents"], "campaigns": hist["campaigns"]}
    )
