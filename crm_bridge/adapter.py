"""The one CRM interface the rest of the system talks to, and its result types.

Two implementations: :class:`crm_bridge.store.BuiltinCrm` (the embedded SQL store) and
:class:`crm_bridge.http_adapter.HttpCrmAdapter` (an external CRM over HTTP). The screen-pop
router, the agent API and the dialer only ever see :class:`CrmAdapter`.

Contract for callers:

* ``identify`` never raises for anything the outside world can cause (unknown, withheld or
  garbage numbers, a slow or broken CRM): it answers an :class:`Identification` whose status
  says what happened (``none`` / ``one`` / ``many`` / ``conflict`` / ``degraded``). Nothing
  is ever created by identifying.
* Write methods raise :class:`CrmError` subclasses with a message meant for the agent or the
  administrator: :class:`NotFound` (unknown id), :class:`ValidationFailed` (names the field;
  nothing was written), :class:`Conflict` (e.g. an external id already belongs to someone
  else), :class:`CrmUnavailable` (external CRM down).
* Ids are strings everywhere (the built-in store's integers, an external CRM's own ids).
* Every result type has ``to_dict()`` giving JSON-able data (times as ISO 8601 UTC strings),
  used verbatim in websocket pops and REST answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "CallbackView",
    "Candidate",
    "CaseView",
    "Conflict",
    "ConsentView",
    "CrmAdapter",
    "CrmError",
    "CrmUnavailable",
    "CustomerCard",
    "CustomerSummary",
    "Identification",
    "IdentificationStatus",
    "Identity",
    "InteractionRecord",
    "InteractionView",
    "NewCase",
    "NewCustomer",
    "NewPhone",
    "NotFound",
    "PhoneView",
    "ValidationFailed",
    "iso",
]

IdentificationStatus = Literal["none", "one", "many", "conflict", "degraded"]


def iso(t: datetime | date | None) -> str | None:
    """ISO 8601 text of a time (UTC for datetimes), None stays None."""
    if t is None:
        return None
    return t.isoformat()


# ----------------------------------------------------------------------------- errors


class CrmError(Exception):
    """Base of every error the CRM bridge raises on purpose; the message is user-facing."""


class NotFound(CrmError, LookupError):
    def __init__(self, entity: str, ident: str) -> None:
        super().__init__(f"{entity} {ident!r} does not exist")
        self.entity = entity
        self.ident = ident


class ValidationFailed(CrmError, ValueError):
    """Input refused before anything was written; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class Conflict(CrmError):
    """The change would break a uniqueness rule (e.g. an account number already in use)."""


class CrmUnavailable(CrmError):
    """The external CRM did not answer usefully (timeout, error, breaker open)."""


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Identity:
    """What is known about a contact when it arrives.

    ``number``: caller number as delivered (any format; normalized by the adapter);
    ``ivr``: id type -> value entered in the IVR, e.g. ``{"account": "12345"}`` (the pop
    router maps channel variables to id types with ``CrmSettings.ivr_variables``);
    ``email``: for e-mail/chat contacts; ``did``: the number dialled (the built-in store does
    not use it; the HTTP adapter passes it as ``{did}``).
    """

    number: str | None = None
    ivr: Mapping[str, str] = field(default_factory=dict)
    email: str | None = None
    did: str | None = None


@dataclass(frozen=True, slots=True)
class NewPhone:
    number: str
    kind: str = "other"  # mobile | landline | work | fax | other


@dataclass(frozen=True, slots=True)
class NewCustomer:
    name: str
    kind: str = "person"  # person | organisation
    street: str = ""
    postcode: str = ""
    city: str = ""
    country: str = ""
    segment: str = ""
    vip: bool = False
    language: str = ""
    time_zone: str = ""
    phones: Sequence[NewPhone | str] = ()
    emails: Sequence[str] = ()
    #: id type -> value, e.g. {"account": "12345", "card": "4000..."}
    external_ids: Mapping[str, str] = field(default_factory=dict)
    #: custom field name -> value (validated against the field definitions)
    custom: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewCase:
    type: str
    category: str = ""
    subcategory: str = ""
    subject: str = ""
    owner: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionRecord:
    """One call leg as the CTI saw it. ``(channel, call_id, leg)`` identifies it: recording
    the same leg again never creates a second row; it updates ``answered_at``, ``ended_at``
    and ``outcome`` when given and fills any other field that is still empty (how the leg
    started, the customer, notes and disposition are never overwritten by a re-record).

    ``leg`` distinguishes the agent legs of one call (a transferred call has one
    interaction per agent who handled it); use the agent leg's Uniqueid or the agent id.
    """

    call_id: str
    direction: str  # inbound | outbound | internal
    offered_at: datetime
    leg: str = ""
    channel: str = "phone"
    number: str = ""
    did: str = ""
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    queue: str = ""
    agent: str = ""
    campaign: str = ""
    outcome: str = ""
    customer_id: str | None = None
    notes: str = ""
    disposition: str = ""


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class PhoneView:
    e164: str
    raw: str
    kind: str
    extension: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"e164": self.e164, "raw": self.raw, "kind": self.kind, "extension": self.extension}


@dataclass(frozen=True, slots=True)
class ConsentView:
    channel: str
    purpose: str
    granted: bool
    source: str
    at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "purpose": self.purpose,
            "granted": self.granted,
            "source": self.source,
            "at": iso(self.at),
        }


@dataclass(frozen=True, slots=True)
class CaseView:
    id: str
    type: str
    category: str
    subcategory: str
    subject: str
    status: str
    owner: str
    opened_at: datetime | None
    closed_at: datetime | None = None
    customer_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "type": self.type,
            "category": self.category,
            "subcategory": self.subcategory,
            "subject": self.subject,
            "status": self.status,
            "owner": self.owner,
            "opened_at": iso(self.opened_at),
            "closed_at": iso(self.closed_at),
        }


@dataclass(frozen=True, slots=True)
class InteractionView:
    id: str
    customer_id: str | None
    direction: str
    channel: str
    call_id: str
    leg: str
    number: str
    did: str
    offered_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    queue: str
    agent: str
    campaign: str
    outcome: str
    notes: str
    disposition: str
    case_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "direction": self.direction,
            "channel": self.channel,
            "call_id": self.call_id,
            "leg": self.leg,
            "number": self.number,
            "did": self.did,
            "offered_at": iso(self.offered_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "queue": self.queue,
            "agent": self.agent,
            "campaign": self.campaign,
            "outcome": self.outcome,
            "notes": self.notes,
            "disposition": self.disposition,
            "case_ids": list(self.case_ids),
        }


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """Enough to tell candidates apart in a list (search results, the 'many' pop)."""

    id: str
    name: str
    kind: str = "person"
    postcode: str = ""
    city: str = ""
    segment: str = ""
    vip: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "postcode": self.postcode,
            "city": self.city,
            "segment": self.segment,
            "vip": self.vip,
        }


@dataclass(frozen=True, slots=True)
class CustomerCard:
    """Everything the pop shows for one customer."""

    id: str
    name: str
    kind: str = "person"
    street: str = ""
    postcode: str = ""
    city: str = ""
    country: str = ""
    segment: str = ""
    vip: bool = False
    language: str = ""
    time_zone: str = ""
    phones: tuple[PhoneView, ...] = ()
    emails: tuple[str, ...] = ()
    #: (id type, value) pairs, e.g. (("account", "12345"),)
    external_ids: tuple[tuple[str, str], ...] = ()
    #: custom field name -> value (str, float, bool, date as ISO text, None when unset);
    #: every defined field is present, in definition order
    custom: Mapping[str, Any] = field(default_factory=dict)
    #: the consent in force per (channel, purpose)
    consent: tuple[ConsentView, ...] = ()
    open_cases: tuple[CaseView, ...] = ()
    #: newest first
    recent: tuple[InteractionView, ...] = ()
    #: fields the external CRM returned that have no place above
    extra: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> CustomerSummary:
        return CustomerSummary(
            id=self.id,
            name=self.name,
            kind=self.kind,
            postcode=self.postcode,
            city=self.city,
            segment=self.segment,
            vip=self.vip,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "street": self.street,
            "postcode": self.postcode,
            "city": self.city,
            "country": self.country,
            "segment": self.segment,
            "vip": self.vip,
            "language": self.language,
            "time_zone": self.time_zone,
            "phones": [p.to_dict() for p in self.phones],
            "emails": list(self.emails),
            "external_ids": [{"type": t, "value": v} for t, v in self.external_ids],
            "custom": {k: _jsonable(v) for k, v in self.custom.items()},
            "consent": [c.to_dict() for c in self.consent],
            "open_cases": [c.to_dict() for c in self.open_cases],
            "recent": [i.to_dict() for i in self.recent],
            "extra": {k: _jsonable(v) for k, v in self.extra.items()},
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    return v


@dataclass(frozen=True, slots=True)
class Candidate:
    """One possible customer with the evidence that points to it."""

    customer: CustomerSummary
    #: human-readable matches, e.g. "phone +4930123456 (mobile)", "account 12345"
    evidence: tuple[str, ...]
    #: higher is better; candidates are sorted by it (descending), then by name
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer.to_dict(),
            "evidence": list(self.evidence),
            "score": self.score,
        }


@dataclass(frozen=True, slots=True)
class Identification:
    """The answer of ``identify``.

    * ``none``: withheld (``withheld=True``) or nothing matched; offer search, create nothing.
    * ``one``: exactly one customer; ``card`` is filled.
    * ``many``: several customers share the evidence; ``candidates`` ranked, ``card`` None.
    * ``conflict``: the caller number and the IVR id point to different customers;
      ``card`` is the IVR id's customer (what the caller typed beats a shared line),
      ``candidates`` lists all of them with their evidence.
    * ``degraded``: the CRM could not answer in time; only ``number_e164`` is known,
      ``reason`` says why.
    """

    status: IdentificationStatus
    number_e164: str | None = None
    withheld: bool = False
    card: CustomerCard | None = None
    candidates: tuple[Candidate, ...] = ()
    reason: str | None = None

    @property
    def customer_id(self) -> str | None:
        return None if self.card is None else self.card.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "number_e164": self.number_e164,
            "withheld": self.withheld,
            "card": None if self.card is None else self.card.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class CallbackView:
    id: str
    number: str
    due_at: datetime
    time_zone: str
    agent: str | None
    state: str
    customer_id: str | None = None
    interaction_id: str | None = None
    campaign: str = ""
    note: str = ""
    created_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        local = None
        try:
            from zoneinfo import ZoneInfo

            local = self.due_at.astimezone(ZoneInfo(self.time_zone)).isoformat()
        except Exception:
            local = None
        return {
            "id": self.id,
            "number": self.number,
            "due_at": iso(self.due_at),
            "due_local": local,
            "time_zone": self.time_zone,
            "agent": self.agent,
            "state": self.state,
            "customer_id": self.customer_id,
            "interaction_id": self.interaction_id,
            "campaign": self.campaign,
            "note": self.note,
            "created_by": self.created_by,
        }


# ----------------------------------------------------------------------------- interface


@runtime_checkable
class CrmAdapter(Protocol):
    async def identify(self, who: Identity) -> Identification:
        """Never raises; see :class:`Identification`."""
        ...

    async def search(self, query: str, limit: int = 20) -> list[CustomerSummary]:
        """By name prefix, phone number (any format), e-mail, external id value, postcode."""
        ...

    async def card(self, customer_id: str) -> CustomerCard | None: ...

    async def history(self, customer_id: str, limit: int = 20) -> list[InteractionView]:
        """Newest first."""
        ...

    async def record_interaction(self, rec: InteractionRecord) -> str:
        """Insert or (same channel+call_id+leg) update; returns the interaction id."""
        ...

    async def record_interactions(self, recs: Sequence[InteractionRecord]) -> list[str]:
        """Several records at once, ids in the order given: what ``record_interaction`` for
        each in turn would leave behind, for less work per record (the screen-pop router
        writes every answered leg this way). Whether a failure loses the whole batch or only
        the records from the failing one on is the adapter's choice: a caller that must not
        lose the good ones retries them one by one."""
        ...

    async def update_interaction(
        self,
        interaction_id: str,
        *,
        actor: str,
        notes: str | None = None,
        disposition: str | None = None,
        customer_id: str | None = None,
        case_ids: Sequence[str] = (),
        new_case: NewCase | None = None,
    ) -> InteractionView:
        """Wrap-up: notes, disposition, link to a customer and to cases (or a new case).

        Idempotent: the same disposition twice, an already linked case, the same customer
        change nothing and write no audit entry.
        """
        ...

    async def create_customer(self, data: NewCustomer, *, actor: str) -> CustomerCard: ...

    async def update_fields(
        self, customer_id: str, fields: Mapping[str, Any], *, actor: str
    ) -> CustomerCard:
        """Change standard fields (name, street, postcode, city, country, segment, vip,
        language, time_zone, kind) and custom fields (by their name) in one transaction."""
        ...

    async def schedule_callback(
        self,
        *,
        number: str,
        due_at: datetime,
        actor: str,
        time_zone: str | None = None,
        agent: str | None = None,
        customer_id: str | None = None,
        interaction_id: str | None = None,
        campaign: str = "",
        note: str = "",
    ) -> CallbackView:
        """``due_at`` must be timezone-aware; ``agent=None`` means anyone may take it.
        ``time_zone`` defaults to the customer's, else the number's, else UTC."""
        ...

    async def may_contact(
        self, number_e164: str, purpose: str, channel: str = "phone"
    ) -> tuple[bool, str]:
        """(allowed, reason): do-not-call list and consent, checked at dial time."""
        ...
