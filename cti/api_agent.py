"""REST endpoints for agents, supervisors and admins: sessions, call work, customers,
callbacks, click-to-call and accounts.

Authorization rule: an agent acts only on its own calls (the pop router knows which calls rang
or connected at the agent's device); supervisors and admins may also list everyone's calls and
agents; only admins create accounts. The agent id always comes from the token, never from the
payload, so no request can act in another agent's name.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ami.actions import ActionError, build_action
from crm_bridge.adapter import (
    Conflict,
    CrmError,
    CrmUnavailable,
    CustomerCard,
    Identification,
    NewCase,
    NewCustomer,
    NewPhone,
    NotFound,
    ValidationFailed,
)
from crm_bridge.normalize import InvalidNumber, normalize_phone, timezone_for_number
from cti.accounts import AccountError
from cti.agents import AgentError
from cti.api import (
    ADMIN,
    ANY_ROLE,
    MAX_PATH_PARAM,
    STAFF,
    ApiError,
    ApiRouter,
    Ctx,
    Route,
    Strict,
    validation_fields,
)
from cti.auth import Principal, TokenError
from cti.pops import CallNotFound, NotAnswered, NotYourCall
from cti.services import Services

log = structlog.get_logger(__name__)

router = ApiRouter("agents", "Agent sessions, call work, customers, callbacks, accounts")

#: click-to-call: where the Originate sends the agent's phone once it answers. The dialplan
#: there dials `Exten` (the normalized number) out; both can be changed per deployment.
DEFAULT_DIAL_CONTEXT = "from-internal"
CLICK_TO_CALL_TIMEOUT_MS = 30000

#: how ids of CRM records (customers, cases) look in URLs and payloads: the built-in store's
#: numbers and an external CRM's usual keys (UUIDs, account-like codes), nothing that could
#: change the meaning of a URL template or a query
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
EntityId = Annotated[str, Field(pattern=ID_PATTERN, description="a CRM record id")]


# --------------------------------------------------------------------------- models: auth


class LoginIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(Strict):
    refresh_token: str = Field(min_length=1, max_length=4096)


class AccountOut(BaseModel):
    agent_id: str
    username: str
    role: Literal["agent", "supervisor", "admin"]
    display_name: str = ""


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int
    account: AccountOut


class AgentStateOut(BaseModel):
    agent_id: str
    name: str
    status: Literal["logged_out", "ready", "ringing", "on_call", "wrap_up", "paused"]
    reason: str | None
    since: float
    device: str | None
    server: str | None
    queues: list[str]
    wrap_up_until: float | None
    calls: list[str]


class MeOut(BaseModel):
    account: AccountOut
    state: AgentStateOut
    pause_reasons: list[str]


# --------------------------------------------------------------------------- models: agent


class AgentLoginIn(Strict):
    device: str = Field(min_length=1, max_length=100, description="e.g. PJSIP/1001")
    queues: list[str] = Field(default_factory=list, max_length=50)
    server: str | None = Field(None, max_length=64)


class PauseIn(Strict):
    reason: str = Field(min_length=1, max_length=64)


# --------------------------------------------------------------------------- models: CRM views


class PhoneOut(BaseModel):
    e164: str
    raw: str
    kind: str
    extension: str = ""


class ExternalIdOut(BaseModel):
    type: str
    value: str


class ConsentOut(BaseModel):
    channel: str
    purpose: str
    granted: bool
    source: str
    at: str | None


class CaseOut(BaseModel):
    id: str
    customer_id: str | None
    type: str
    category: str
    subcategory: str
    subject: str
    status: str
    owner: str
    opened_at: str | None
    closed_at: str | None


class InteractionOut(BaseModel):
    id: str
    customer_id: str | None
    direction: str
    channel: str
    call_id: str
    leg: str
    number: str
    did: str
    offered_at: str | None
    answered_at: str | None
    ended_at: str | None
    queue: str
    agent: str
    campaign: str
    outcome: str
    notes: str
    disposition: str
    case_ids: list[str]


class CustomerSummaryOut(BaseModel):
    id: str
    name: str
    kind: str
    postcode: str
    city: str
    segment: str
    vip: bool


class CustomerCardOut(BaseModel):
    id: str
    name: str
    kind: str
    street: str
    postcode: str
    city: str
    country: str
    segment: str
    vip: bool
    language: str
    time_zone: str
    phones: list[PhoneOut]
    emails: list[str]
    external_ids: list[ExternalIdOut]
    custom: dict[str, Any]
    consent: list[ConsentOut]
    open_cases: list[CaseOut]
    recent: list[InteractionOut]
    extra: dict[str, Any]


class CandidateOut(BaseModel):
    customer: CustomerSummaryOut
    evidence: list[str]
    score: float


class IdentificationOut(BaseModel):
    status: Literal["none", "one", "many", "conflict", "degraded"]
    number_e164: str | None = None
    withheld: bool = False
    card: CustomerCardOut | None = None
    candidates: list[CandidateOut] = []
    reason: str | None = None


class CallerOut(BaseModel):
    number: str
    name: str


class HistoryOut(BaseModel):
    agent: str
    state: str
    offered_at: float
    answered_at: float | None
    ended_at: float | None
    notes: list[str]
    disposition: str | None


class PopOut(BaseModel):
    """A call as the agent's screen shows it (the websocket `pop` message, kept current)."""

    call_id: str
    direction: Literal["inbound", "outbound", "internal"]
    caller: CallerOut
    identification: IdentificationOut
    queue: str | None
    did: str | None
    ivr: dict[str, str]
    campaign: str | None
    lead: str | None
    state: Literal["ringing", "answered", "ended"]
    offered_at: float
    answered_at: float | None
    ended_at: float | None
    notes: list[str]
    disposition: str | None
    transferred: bool
    history: list[HistoryOut]


class LiveCallOut(BaseModel):
    call_id: str
    direction: str
    caller: CallerOut
    queue: str | None
    campaign: str | None
    identification: IdentificationOut
    agents: list[HistoryOut]


class CallsOut(BaseModel):
    calls: list[PopOut]
    #: supervisors with ?all=true: every call in progress
    all: list[LiveCallOut] | None = None


class CallsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    all: bool = Field(False, description="supervisors: also list every call in progress")


# --------------------------------------------------------------------------- models: call work


class NoteIn(Strict):
    text: str = Field(min_length=1, max_length=10000)


class DispositionIn(Strict):
    code: str = Field(min_length=1, max_length=64)


class NewCaseIn(Strict):
    type: str = Field(min_length=1, max_length=80)
    category: str = Field("", max_length=80)
    subcategory: str = Field("", max_length=80)
    subject: str = Field("", max_length=200)


class CasesIn(Strict):
    case_ids: list[EntityId] = Field(default_factory=list, max_length=50)
    new_case: NewCaseIn | None = None

    @model_validator(mode="after")
    def _something(self) -> CasesIn:
        if not self.case_ids and self.new_case is None:
            raise ValueError("give case_ids to link, a new_case to open, or both")
        return self


class PhoneIn(Strict):
    number: str = Field(min_length=1, max_length=64)
    kind: Literal["mobile", "landline", "work", "fax", "other"] = "other"


class NewCustomerIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["person", "organisation"] = "person"
    street: str = Field("", max_length=200)
    postcode: str = Field("", max_length=20)
    city: str = Field("", max_length=100)
    country: str = Field("", max_length=2)
    segment: str = Field("", max_length=50)
    vip: bool = False
    language: str = Field("", max_length=16)
    time_zone: str = Field("", max_length=64)
    #: empty: the caller's number from the pop
    phones: list[PhoneIn] = Field(default_factory=list, max_length=10)
    emails: list[str] = Field(default_factory=list, max_length=10)
    external_ids: dict[str, str] = Field(default_factory=dict, max_length=10)
    custom: dict[str, str | float | bool | None] = Field(default_factory=dict, max_length=64)


class LinkCustomerIn(Strict):
    """Exactly one of: `customer_id` (a customer found by search or among the candidates) or
    `create` (a new customer, for an unknown caller)."""

    customer_id: EntityId | None = None
    create: NewCustomerIn | None = None

    @model_validator(mode="after")
    def _one(self) -> LinkCustomerIn:
        if (self.customer_id is None) == (self.create is None):
            raise ValueError("give exactly one of customer_id or create")
        return self


# --------------------------------------------------------------------------- models: customers


class CustomersQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    q: str = Field(min_length=1, max_length=200, description="name, number, e-mail, id, postcode")
    limit: int = Field(20, ge=1, le=100)


class CustomersOut(BaseModel):
    customers: list[CustomerSummaryOut]


# --------------------------------------------------------------------------- models: callbacks


class CallbackIn(Strict):
    """When: `due` is a local time (`2026-11-24T10:30`) in `time_zone`, else in the
    customer's time zone, else the number's; a time with an offset is taken as is."""

    due: datetime
    number: str | None = Field(None, min_length=1, max_length=64)
    call_id: str | None = Field(None, min_length=1, max_length=200)
    customer_id: EntityId | None = None
    time_zone: str | None = Field(None, min_length=1, max_length=64)
    #: true: only I get it; false: anyone may take it
    for_me: bool = True
    note: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _who(self) -> CallbackIn:
        if self.number is None and self.call_id is None and self.customer_id is None:
            raise ValueError("give a number, a call_id or a customer_id")
        return self


class CallbackOut(BaseModel):
    id: str
    number: str
    due_at: str | None
    due_local: str | None
    time_zone: str
    agent: str | None
    state: str
    customer_id: str | None
    interaction_id: str | None
    campaign: str
    note: str
    created_by: str


# --------------------------------------------------------------------------- models: dial, admin


class DialIn(Strict):
    number: str = Field(min_length=1, max_length=64)


class DialOut(BaseModel):
    number: str
    device: str
    action_id: str


class AgentRowOut(BaseModel):
    account: AccountOut
    state: AgentStateOut


class AgentsOut(BaseModel):
    agents: list[AgentRowOut]


class NewAccountIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: Literal["agent", "supervisor", "admin"] = "agent"
    display_name: str = Field("", max_length=128)


# --------------------------------------------------------------------------- helpers


def _account_out(p: Principal, display_name: str = "") -> AccountOut:
    return AccountOut(
        agent_id=p.agent_id,
        username=p.username,
        role=p.role,
        display_name=display_name,
    )


_AGENT_FIELDS = {
    "bad_device": "device",
    "device_in_use": "device",
    "bad_queue": "queues",
    "bad_name": "name",
    "bad_reason": "reason",
    "unknown_server": "server",
    "bad_request": "body",
}


def _agent_error(e: AgentError, refused_field: str = "body") -> ApiError:
    if e.code == "ami_failed":
        if "refused by Asterisk" in str(e):  # the request was wrong (e.g. no such queue)
            return ApiError(422, "refused_by_pbx", str(e), field=refused_field)
        return ApiError(502, e.code, str(e))
    if e.code in ("not_logged_in", "device_in_use"):
        return ApiError(409, e.code, str(e), field=_AGENT_FIELDS.get(e.code))
    return ApiError(422, e.code, str(e), field=_AGENT_FIELDS.get(e.code, "body"))


def _crm_error(e: CrmError, field_prefix: str = "body") -> ApiError:
    if isinstance(e, ValidationFailed):
        return ApiError(422, "invalid", e.reason, field=f"{field_prefix}.{e.field}")
    if isinstance(e, NotFound):
        return ApiError(404, "not_found", str(e))
    if isinstance(e, Conflict):
        return ApiError(409, "conflict", str(e))
    if isinstance(e, CrmUnavailable):
        return ApiError(503, "crm_unavailable", str(e))
    return ApiError(422, "crm_refused", str(e))


def _call_error(e: Exception) -> ApiError:
    if isinstance(e, CallNotFound):
        return ApiError(404, "call_not_found", "no such call (or it finished long ago)")
    if isinstance(e, NotAnswered):
        return ApiError(409, "not_answered", "you did not answer this call")
    if isinstance(e, NotYourCall):
        return ApiError(403, "not_your_call", "this call is not yours")
    raise e


def _state(ctx: Ctx, agent_id: str) -> AgentStateOut:
    return AgentStateOut.model_validate(ctx.services.agents.view(agent_id).to_dict())


def _region(ctx: Ctx) -> tuple[str, str]:
    crm = ctx.services.settings.crm
    return crm.default_region, crm.default_area


def _normalize(ctx: Ctx, raw: str, field: str) -> str:
    region, area = _region(ctx)
    try:
        return normalize_phone(raw, region=region, default_area=area)
    except InvalidNumber as e:
        raise ApiError(422, "invalid_number", str(e), field=field) from None


# --------------------------------------------------------------------------- auth


@router.post(
    "/api/auth/login",
    summary="Log in with a password",
    roles=None,
    body=LoginIn,
    response=TokensOut,
    errors=(401,),
)
async def auth_login(ctx: Ctx, body: LoginIn) -> TokensOut:
    """Answers an access token (short-lived) and a refresh token; wrong username or password
    give the same 401."""
    p = await ctx.services.accounts.authenticate(body.username, body.password)
    if p is None:
        raise ApiError(401, "bad_credentials", "wrong username or password")
    acct = await ctx.services.accounts.get(p.agent_id)
    tokens = ctx.services.tokens.issue(p)
    return TokensOut(**tokens, account=_account_out(p, acct.display_name if acct else ""))


@router.post(
    "/api/auth/refresh",
    summary="New tokens for a refresh token",
    roles=None,
    body=RefreshIn,
    response=TokensOut,
    errors=(401,),
)
async def auth_refresh(ctx: Ctx, body: RefreshIn) -> TokensOut:
    """The account is looked up again, so a disabled account cannot refresh."""
    try:
        p = ctx.services.tokens.verify_refresh(body.refresh_token)
    except TokenError as e:
        code = "token_expired" if e.kind == "expired" else "unauthorized"
        raise ApiError(401, code, str(e)) from None
    acct = await ctx.services.accounts.get(p.agent_id)
    if acct is None or acct.disabled:
        raise ApiError(401, "unauthorized", "the account is disabled or gone")
    p = acct.principal()
    return TokensOut(**ctx.services.tokens.issue(p), account=_account_out(p, acct.display_name))


@router.get("/api/me", summary="Who I am, my agent state, the pause reasons", response=MeOut)
async def me(ctx: Ctx, body: None) -> MeOut:
    p: Principal = ctx.principal
    acct = await ctx.services.accounts.get(p.agent_id)
    return MeOut(
        account=_account_out(p, acct.display_name if acct else ""),
        state=_state(ctx, p.agent_id),
        pause_reasons=list(ctx.services.settings.agents.pause_reasons),
    )


# --------------------------------------------------------------------------- agent session


@router.post(
    "/api/agent/login",
    summary="Start working at a device, join queues",
    body=AgentLoginIn,
    response=AgentStateOut,
    errors=(409, 502),
)
async def agent_login(ctx: Ctx, body: AgentLoginIn) -> AgentStateOut:
    """QueueAdd for each queue with the agent's name; logging in again moves the agent."""
    p: Principal = ctx.principal
    acct = await ctx.services.accounts.get(p.agent_id)
    name = (acct.display_name if acct else "") or p.username
    try:
        await ctx.services.agents.login(
            p.agent_id, name=name, device=body.device, queues=body.queues, server=body.server
        )
    except AgentError as e:
        raise _agent_error(e, "queues") from None
    return _state(ctx, p.agent_id)


@router.post(
    "/api/agent/logout",
    summary="Stop working: leave the queues",
    response=AgentStateOut,
    errors=(502,),
)
async def agent_logout(ctx: Ctx, body: None) -> AgentStateOut:
    try:
        await ctx.services.agents.logout(ctx.principal.agent_id)
    except AgentError as e:
        raise _agent_error(e) from None
    return _state(ctx, ctx.principal.agent_id)


@router.post(
    "/api/agent/pause",
    summary="Pause with a reason from the configured list",
    body=PauseIn,
    response=AgentStateOut,
    errors=(409, 502),
)
async def agent_pause(ctx: Ctx, body: PauseIn) -> AgentStateOut:
    try:
        await ctx.services.agents.pause(ctx.principal.agent_id, body.reason)
    except AgentError as e:
        raise _agent_error(e) from None
    return _state(ctx, ctx.principal.agent_id)


@router.post(
    "/api/agent/unpause", summary="Back to ready", response=AgentStateOut, errors=(409, 502)
)
async def agent_unpause(ctx: Ctx, body: None) -> AgentStateOut:
    try:
        await ctx.services.agents.unpause(ctx.principal.agent_id)
    except AgentError as e:
        raise _agent_error(e) from None
    return _state(ctx, ctx.principal.agent_id)


@router.post(
    "/api/agent/wrapup/end", summary="End wrap-up now", response=AgentStateOut, errors=(409,)
)
async def agent_end_wrap_up(ctx: Ctx, body: None) -> AgentStateOut:
    try:
        ctx.services.agents.end_wrap_up(ctx.principal.agent_id)
    except AgentError as e:
        raise _agent_error(e) from None
    return _state(ctx, ctx.principal.agent_id)


# --------------------------------------------------------------------------- calls


@router.get(
    "/api/calls", summary="My live calls with their pops", query=CallsQuery, response=CallsOut
)
async def list_calls(ctx: Ctx, body: None) -> CallsOut:
    """Calls ringing or connected at my device, and finished calls still waiting for my
    disposition. Supervisors may add `all=true` to see every call in progress."""
    pops = ctx.services.pops
    mine = [PopOut.model_validate(p) for p in pops.live_pops(ctx.principal.agent_id)]
    everyone = None
    if ctx.query is not None and ctx.query.all:
        if not ctx.principal.can("supervisor"):
            raise ApiError(403, "forbidden", "only supervisors see every call", field="all")
        everyone = [LiveCallOut.model_validate(c) for c in pops.all_live_calls()]
    return CallsOut(calls=mine, all=everyone)


@router.post(
    "/api/calls/{call_id}/notes",
    summary="Add a note to my interaction",
    body=NoteIn,
    response=PopOut,
    errors=(409, 503),
)
async def add_note(ctx: Ctx, body: NoteIn) -> PopOut:
    try:
        pop = await ctx.services.pops.add_note(
            ctx.params["call_id"], ctx.principal.agent_id, body.text
        )
    except CrmError as e:
        raise _crm_error(e) from None
    except LookupError as e:
        raise _call_error(e) from None
    except PermissionError as e:
        raise _call_error(e) from None
    return PopOut.model_validate(pop)


@router.post(
    "/api/calls/{call_id}/disposition",
    summary="Set my disposition (idempotent)",
    body=DispositionIn,
    response=PopOut,
    errors=(409, 503),
)
async def set_disposition(ctx: Ctx, body: DispositionIn) -> PopOut:
    """The code must be in the list configured for the call's queue or campaign; sending the
    same code again changes nothing."""
    try:
        pop = await ctx.services.pops.set_disposition(
            ctx.params["call_id"], ctx.principal.agent_id, body.code
        )
    except ValidationFailed as e:
        raise ApiError(422, "invalid_disposition", e.reason, field="body.code") from None
    except CrmError as e:
        raise _crm_error(e) from None
    except (LookupError, PermissionError) as e:
        raise _call_error(e) from None
    return PopOut.model_validate(pop)


@router.post(
    "/api/calls/{call_id}/cases",
    summary="Link my interaction to cases",
    body=CasesIn,
    response=InteractionOut,
    errors=(404, 409, 503),
)
async def link_cases(ctx: Ctx, body: CasesIn) -> InteractionOut:
    """Existing cases by id and/or a new case with type and category."""
    new = None
    if body.new_case is not None:
        n = body.new_case
        new = NewCase(
            type=n.type,
            category=n.category,
            subcategory=n.subcategory,
            subject=n.subject,
            owner=ctx.principal.agent_id,
        )
    try:
        view = await ctx.services.pops.link_cases(
            ctx.params["call_id"], ctx.principal.agent_id, case_ids=body.case_ids, new_case=new
        )
    except CrmError as e:
        raise _crm_error(e) from None
    except (LookupError, PermissionError) as e:
        raise _call_error(e) from None
    return InteractionOut.model_validate(view.to_dict())


@router.post(
    "/api/calls/{call_id}/customer",
    summary="Link the call to a customer",
    body=LinkCustomerIn,
    response=PopOut,
    errors=(404, 409, 503),
)
async def link_customer(ctx: Ctx, body: LinkCustomerIn) -> PopOut:
    """Link a found customer, or create one from the unknown-caller pop (the caller's number
    is added when no phone is given). Nothing is ever created without this request."""
    pops = ctx.services.pops
    crm = ctx.services.crm
    call_id, agent = ctx.params["call_id"], ctx.principal.agent_id
    try:
        current = pops.call_of(call_id, agent)
        await pops.interaction_id(call_id, agent)  # refuse before creating anything
        if body.create is not None:
            c = body.create
            phones: list[NewPhone | str] = [NewPhone(p.number, p.kind) for p in c.phones]
            if not phones and current["caller"]["number"]:
                phones = [NewPhone(current["caller"]["number"], "other")]
            card: CustomerCard | None = await crm.create_customer(
                NewCustomer(
                    name=c.name,
                    kind=c.kind,
                    street=c.street,
                    postcode=c.postcode,
                    city=c.city,
                    country=c.country,
                    segment=c.segment,
                    vip=c.vip,
                    language=c.language,
                    time_zone=c.time_zone,
                    phones=phones,
                    emails=c.emails,
                    external_ids=c.external_ids,
                    custom=c.custom,
                ),
                actor=agent,
            )
        else:
            assert body.customer_id is not None
            card = await crm.card(body.customer_id)
            if card is None:
                raise ApiError(404, "not_found", "no such customer", field="body.customer_id")
        assert card is not None
        ident = Identification(
            status="one", number_e164=current["identification"].get("number_e164"), card=card
        ).to_dict()
        pop = await pops.link_customer(call_id, agent, card.id, identification=ident)
    except CrmError as e:
        raise _crm_error(e, "body.create" if body.create is not None else "body") from None
    except (LookupError, PermissionError) as e:
        raise _call_error(e) from None
    return PopOut.model_validate(pop)


class DispositionsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    call_id: str | None = Field(None, min_length=1, max_length=200)
    queue: str | None = Field(None, min_length=1, max_length=80)
    campaign: str | None = Field(None, min_length=1, max_length=80)


class DispositionOut(BaseModel):
    code: str
    label: str


class DispositionsOut(BaseModel):
    dispositions: list[DispositionOut]
    #: true when no list is configured: any code is accepted
    free: bool


@router.get(
    "/api/dispositions",
    summary="The disposition codes for a call, queue or campaign",
    query=DispositionsQuery,
    response=DispositionsOut,
    errors=(503,),
)
async def list_dispositions(ctx: Ctx, body: None) -> DispositionsOut:
    """With `call_id`, the list configured for that call's campaign or queue."""
    q = ctx.query
    queue, campaign = q.queue or "", q.campaign or ""
    if q.call_id is not None:
        queue = ctx.services.pops.queue_of(q.call_id) or queue
        campaign = ctx.services.pops.campaign_of(q.call_id) or campaign
    lister = getattr(ctx.services.crm, "dispositions", None)
    if lister is None:
        return DispositionsOut(dispositions=[], free=True)
    try:
        views = await lister(queue=queue, campaign=campaign)
    except CrmError as e:
        raise _crm_error(e, "query") from None
    out = [DispositionOut(code=v.code, label=v.label or v.code) for v in views]
    return DispositionsOut(dispositions=out, free=not out)


# --------------------------------------------------------------------------- customers


@router.get(
    "/api/customers",
    summary="Search customers",
    query=CustomersQuery,
    response=CustomersOut,
    errors=(503,),
)
async def search_customers(ctx: Ctx, body: None) -> CustomersOut:
    """By name, phone number (any format), e-mail, external id or postcode."""
    try:
        found = await ctx.services.crm.search(ctx.query.q, limit=ctx.query.limit)
    except CrmError as e:
        raise _crm_error(e, "query") from None
    return CustomersOut(customers=[CustomerSummaryOut.model_validate(c.to_dict()) for c in found])


@router.get(
    "/api/customers/{customer_id}",
    summary="A customer's card",
    response=CustomerCardOut,
    path_patterns={"customer_id": ID_PATTERN},
    errors=(503,),
)
async def customer_card(ctx: Ctx, body: None) -> CustomerCardOut:
    try:
        card = await ctx.services.crm.card(ctx.params["customer_id"])
    except NotFound:
        card = None
    except CrmError as e:
        raise _crm_error(e) from None
    if card is None:
        raise ApiError(404, "not_found", "no such customer", field="customer_id")
    return CustomerCardOut.model_validate(card.to_dict())


# --------------------------------------------------------------------------- callbacks


@router.post(
    "/api/callbacks",
    summary="Schedule a callback",
    body=CallbackIn,
    response=CallbackOut,
    status=201,
    errors=(404, 409, 503),
)
async def schedule_callback(ctx: Ctx, body: CallbackIn) -> CallbackOut:
    """For me or for anyone, at a time in the customer's time zone."""
    agent = ctx.principal.agent_id
    crm = ctx.services.crm
    customer_id = body.customer_id
    interaction_id = None
    number = body.number
    campaign = ""
    lead = ""
    if body.call_id is not None:
        try:
            pop = ctx.services.pops.call_of(body.call_id, agent)
        except (LookupError, PermissionError) as e:
            raise _call_error(e) from None
        number = number or pop["caller"]["number"] or None
        customer_id = customer_id or (pop["identification"].get("card") or {}).get("id")
        campaign = pop["campaign"] or ""
        lead = str(pop.get("lead") or "")
        try:
            interaction_id = await ctx.services.pops.interaction_id(body.call_id, agent)
        except (PermissionError, CrmError):
            interaction_id = None
    card = None
    if customer_id is not None:
        try:
            card = await crm.card(customer_id)
        except NotFound:
            card = None
        except CrmError as e:
            raise _crm_error(e) from None
        if card is None:
            raise ApiError(404, "not_found", "no such customer", field="body.customer_id")
        if number is None and card.phones:
            number = card.phones[0].e164
    if number is None:
        raise ApiError(422, "no_number", "no number to call back", field="body.number")
    e164 = _normalize(ctx, number, "body.number")
    tz_name = body.time_zone or (card.time_zone if card else "") or timezone_for_number(e164)
    tz_name = tz_name or "UTC"
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(
            422, "bad_time_zone", f"unknown time zone {tz_name!r}", field="body.time_zone"
        ) from None
    due = body.due if body.due.tzinfo is not None else body.due.replace(tzinfo=tz)
    try:
        due_utc = due.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(422, "bad_time", "due is out of range", field="body.due") from None
    now = datetime.now(UTC)
    if due_utc < now - timedelta(minutes=1):
        raise ApiError(422, "in_the_past", "the callback time has passed", field="body.due")
    if due_utc > now + timedelta(days=366):
        raise ApiError(422, "too_far", "at most a year ahead", field="body.due")
    try:
        view = await crm.schedule_callback(
            number=e164,
            due_at=due_utc,
            actor=agent,
            time_zone=tz_name,
            agent=agent if body.for_me else None,
            customer_id=customer_id,
            interaction_id=interaction_id,
            campaign=campaign,
            note=body.note,
        )
    except CrmError as e:
        raise _crm_error(e) from None
    dialer = ctx.services.dialer
    if dialer is not None and lead.isascii() and lead.isdigit():
        # a campaign call: the promise must also reach the dialer, which owns the lead's
        # schedule (otherwise the lead would be retried by its outcome rules instead)
        try:
            await dialer.schedule_callback(
                int(lead),
                due_utc.timestamp(),
                agent if body.for_me else None,
                note=body.note,
                created_by=agent,
            )
        except (LookupError, ValueError) as e:
            raise ApiError(409, "lead_busy", f"the lead cannot take a callback now: {e}") from None
    return CallbackOut.model_validate(view.to_dict())


# --------------------------------------------------------------------------- click-to-call


@router.post(
    "/api/dial",
    summary="Click-to-call: my phone rings, then the number",
    body=DialIn,
    response=DialOut,
    errors=(409, 502, 503),
)
async def dial(ctx: Ctx, body: DialIn) -> DialOut:
    """The number is validated and normalized (E.164); Asterisk first rings the agent's own
    device (Originate Channel=<device>), then dials the number from the configured context."""
    agent = ctx.principal.agent_id
    e164 = _normalize(ctx, body.number, "body.number")
    view = ctx.services.agents.view(agent)
    if view.device is None:
        raise ApiError(409, "not_logged_in", "log in at a device first")
    links = ctx.services.links
    link = links.get(view.server or "") or (next(iter(links.values())) if links else None)
    if link is None:
        raise ApiError(503, "no_pbx", "no Asterisk server is configured")
    agents_settings = ctx.services.settings.agents
    context = getattr(agents_settings, "dial_context", None) or DEFAULT_DIAL_CONTEXT
    action_id = f"c2c-{secrets.token_hex(6)}"
    try:
        action = build_action(
            "Originate",
            {
                "ActionID": action_id,
                "Channel": view.device,
                "Context": context,
                "Exten": e164,
                "Priority": 1,
                "CallerID": f'"{e164}" <{e164}>',
                "Timeout": CLICK_TO_CALL_TIMEOUT_MS,
                "Async": "true",
            },
            variables={"CTI_DIAL": e164, "CTI_AGENT": agent},
        )
    except ActionError as e:
        raise ApiError(422, "invalid_number", str(e), field="body.number") from None
    try:
        resp = await link.send(action)
    except Exception as e:
        log.warning("click-to-call failed", agent=agent, error=type(e).__name__)
        raise ApiError(502, "ami_failed", "Asterisk did not take the call request") from None
    ok = getattr(resp, "ok", True)
    if not ok:
        msg = getattr(resp, "message", "") or "refused"
        raise ApiError(502, "ami_failed", f"Asterisk refused the call: {msg}")
    log.info("click-to-call", agent=agent, device=view.device, action_id=action_id)
    return DialOut(number=e164, device=view.device, action_id=action_id)


# --------------------------------------------------------------------------- supervisors, admins


@router.get(
    "/api/agents", summary="Every account with its agent state", roles=STAFF, response=AgentsOut
)
async def list_agents(ctx: Ctx, body: None) -> AgentsOut:
    rows = []
    for acct in await ctx.services.accounts.list():
        rows.append(
            AgentRowOut(
                account=_account_out(acct.principal(), acct.display_name),
                state=_state(ctx, acct.agent_id),
            )
        )
    return AgentsOut(agents=rows)


_ACCOUNT_FIELDS = {
    "bad_username": "body.username",
    "weak_password": "body.password",
    "bad_role": "body.role",
    "bad_display_name": "body.display_name",
}


@router.post(
    "/api/agents",
    summary="Create an account (admin)",
    roles=frozenset({ADMIN}),
    body=NewAccountIn,
    response=AccountOut,
    status=201,
    errors=(409,),
)
async def create_agent(ctx: Ctx, body: NewAccountIn) -> AccountOut:
    try:
        p = await ctx.services.accounts.create(
            body.username, body.password, role=body.role, display_name=body.display_name
        )
    except AccountError as e:
        if e.code == "duplicate_username":
            raise ApiError(409, e.code, str(e), field="body.username") from None
        raise ApiError(422, e.code, str(e), field=_ACCOUNT_FIELDS.get(e.code, "body")) from None
    log.info("account created through the API", agent=p.agent_id, by=ctx.principal.agent_id)
    return _account_out(p, body.display_name.strip())


# --------------------------------------------------------------------------- websocket actions

#: websocket message type -> the REST handler it runs, and the path parameter the message
#: carries as a field (docs/protocol.md lists them)
_SOCKET_HANDLERS: dict[str, tuple[Any, str | None]] = {
    "note": (add_note, "call_id"),
    "disposition": (set_disposition, "call_id"),
    "link_cases": (link_cases, "call_id"),
    "link_customer": (link_customer, "call_id"),
    "search_customers": (search_customers, None),
    "schedule_callback": (schedule_callback, None),
    "dial": (dial, None),
}
#: websocket message type -> (route declaration, path parameter)
SOCKET_ROUTES: dict[str, tuple[Route, str | None]] = {
    kind: (next(r for r in router.routes if r.handler is fn), param)
    for kind, (fn, param) in _SOCKET_HANDLERS.items()
}
#: the envelope fields of a websocket message (not part of the REST body)
_ENVELOPE = ("type", "id")


def _field(name: str | None) -> str:
    """A REST field name (`body.number`, `query.q`) as the websocket message's key."""
    if not name:
        return ""
    for prefix in ("body.", "query."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return "" if name in ("body", "query") else name


def _invalid(e: ValidationError) -> Exception:
    """A message that fails its route's model, as the REST body would."""
    fields = [(_field(f), m) for f, m in validation_fields(e, "body")]
    return _refused("invalid_body", "the message is invalid", 422, fields)


def _refused(code: str, message: str, status: int, fields: list[tuple[str, str]]) -> Exception:
    from cti.ws import SocketActionError

    return SocketActionError(
        code,
        message,
        status=status,
        fields=[{"field": f, "message": m} for f, m in fields],
    )


async def socket_action(
    request: web.Request,
    services: Services,
    principal: Principal,
    kind: str,
    msg: dict[str, Any],
) -> Any:
    """Run the REST endpoint behind websocket message `kind` for `principal`: the message's
    fields (without `type` and `id`) are the request body, `call_id` the path parameter where
    the endpoint has one. Same models, same strict validation, same handler, same authorization
    as over HTTP; the answer is the REST response body. Refusals raise SocketActionError with
    the REST error code and status."""
    entry = SOCKET_ROUTES.get(kind)
    if entry is None:
        raise _refused("unknown_type", f"unknown message type {kind[:40]!r}", 400, [])
    route, param = entry
    if route.roles is not None and principal.role not in route.roles:
        raise _refused("forbidden", f"this needs one of the roles: {sorted(route.roles)}", 403, [])
    payload = {k: v for k, v in msg.items() if k not in _ENVELOPE}
    params: dict[str, str] = {}
    if param is not None:
        value = payload.pop(param, None)
        if not isinstance(value, str) or not value:
            raise _refused(
                "invalid_body", f"{param} is required", 422, [(param, "a non-empty string")]
            )
        pattern = route.path_patterns.get(param)
        if len(value) > MAX_PATH_PARAM or (
            pattern is not None and not re.fullmatch(pattern, value)
        ):
            raise _refused("not_found", f"no such {param}", 404, [(param, "unknown or too long")])
        params[param] = value
    query: Any = None
    body: Any = None
    try:
        if route.query is not None:
            query = route.query.model_validate(payload)
        if route.body is not None:
            # the REST path's exact parsing: strict JSON validation of the same model
            body = route.body.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as e:
        raise _invalid(e) from None
    ctx = Ctx(request, services, principal, params, query)
    try:
        result = await route.handler(ctx, body)
    except ApiError as e:
        fields = [(_field(e.field), e.message)] if e.field else []
        raise _refused(e.code, e.message, e.status, fields) from None
    except ValidationError as e:
        raise _invalid(e) from None
    if result is None or route.response is None:
        return None
    if not isinstance(result, route.response):
        result = route.response.model_validate(result)
    return result.model_dump(mode="json")


__all__ = ["ANY_ROLE", "SOCKET_ROUTES", "router", "socket_action"]
