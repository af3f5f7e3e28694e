"""The CRM store's tables.

Shape decisions that matter to other packages:

* Primary keys are integers (in SQLite the rowid itself, the cheapest possible lookup); the
  adapter interface exposes them as strings so that an external CRM's ids fit too.
* Caller identification is one indexed equality: ``crm_phone.e164`` (covering index with the
  customer id and kind), ``crm_external_id (id_type, value)`` (unique), ``crm_email.email``.
* A call is an interaction, not a case. ``crm_interaction`` is unique per
  ``(channel, call_id, leg)`` so recording the same call leg twice (a repeated AMI event, a
  restart) finds the existing row instead of writing a second one.
* ``crm_audit`` is append-only (the migration installs triggers refusing UPDATE/DELETE).
* All timestamps are :class:`~crm_bridge.db.UTCDateTime` (aware UTC in Python).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from crm_bridge.db import Base, UTCDateTime, utcnow
from crm_bridge.limits import (  # re-exported: the store's vocabulary
    CALLBACK_STATES,
    CASE_STATUSES,
    CUSTOM_FIELD_TYPES,
    CUSTOMER_KINDS,
    INTERACTION_CHANNELS,
    INTERACTION_DIRECTIONS,
    LIMITS,
    MAX_CUSTOM_FIELDS,
    PHONE_KINDS,
)
from crm_bridge.normalize import search_key, search_key_last_first

__all__ = [
    "CUSTOMER_KINDS",
    "CUSTOM_FIELD_TYPES",
    "MAX_CUSTOM_FIELDS",
    "PHONE_KINDS",
    "AuditEntry",
    "Callback",
    "Case",
    "CaseInteraction",
    "Consent",
    "CustomFieldDef",
    "CustomFieldValue",
    "Customer",
    "Disposition",
    "DncEntry",
    "Email",
    "ExternalId",
    "Interaction",
    "Note",
    "Phone",
]

# BigInteger primary keys that stay plain INTEGER (rowid aliases) on SQLite
IdType = BigInteger().with_variant(Integer(), "sqlite")


def _name_key_default(ctx: Any) -> str:
    """Fill ``name_key`` from ``name`` for inserts that do not give it (bulk imports too)."""
    return search_key(ctx.get_current_parameters().get("name") or "")[: LIMITS["name"]]


def _name_rkey_default(ctx: Any) -> str:
    return search_key_last_first(ctx.get_current_parameters().get("name") or "")[: LIMITS["name"]]


def _enum_check(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name)


class Customer(Base):
    __tablename__ = "crm_customer"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), default="person")
    name: Mapped[str] = mapped_column(String(LIMITS["name"]))
    #: casefolded name for prefix search (index-friendly on every database)
    name_key: Mapped[str] = mapped_column(
        # bytewise order on PostgreSQL too, so a prefix search is an index range scan
        String(LIMITS["name"]).with_variant(String(LIMITS["name"], collation="C"), "postgresql"),
        index=True,
        default=_name_key_default,
    )
    #: the same with the last word first (family name search)
    name_rkey: Mapped[str] = mapped_column(
        String(LIMITS["name"]).with_variant(String(LIMITS["name"], collation="C"), "postgresql"),
        index=True,
        default=_name_rkey_default,
    )
    street: Mapped[str] = mapped_column(String(LIMITS["street"]), default="")
    postcode: Mapped[str] = mapped_column(String(LIMITS["postcode"]), default="", index=True)
    city: Mapped[str] = mapped_column(String(LIMITS["city"]), default="")
    country: Mapped[str] = mapped_column(String(LIMITS["country"]), default="")
    segment: Mapped[str] = mapped_column(String(LIMITS["segment"]), default="")
    vip: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(LIMITS["language"]), default="")
    time_zone: Mapped[str] = mapped_column(String(LIMITS["time_zone"]), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (_enum_check("kind", CUSTOMER_KINDS, "kind"),)


class Phone(Base):
    __tablename__ = "crm_phone"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customer.id", ondelete="CASCADE"))
    raw: Mapped[str] = mapped_column(String(LIMITS["phone_raw"]))
    e164: Mapped[str] = mapped_column(String(LIMITS["e164"]))
    extension: Mapped[str] = mapped_column(String(LIMITS["extension"]), default="")
    kind: Mapped[str] = mapped_column(String(16), default="other")
    position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        # covering index: identify by number reads customer and kind from the index alone
        Index("ix_crm_phone_lookup", "e164", "customer_id", "kind"),
        UniqueConstraint("customer_id", "e164", "extension", name="uq_crm_phone_customer"),
        _enum_check("kind", PHONE_KINDS, "kind"),
    )


class Email(Base):
    __tablename__ = "crm_email"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customer.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(LIMITS["email"]))
    position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_crm_email_lookup", "email", "customer_id"),
        UniqueConstraint("customer_id", "email", name="uq_crm_email_customer"),
    )


class ExternalId(Base):
    """Account, card, contract numbers...: typed and unique per type."""

    __tablename__ = "crm_external_id"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="CASCADE"), index=True
    )
    id_type: Mapped[str] = mapped_column(String(LIMITS["id_type"]))
    value: Mapped[str] = mapped_column(String(LIMITS["id_value"]))

    __table_args__ = (
        # value first: the same key also serves a search by value whatever its type (agents
        # type "12345", not "account 12345"), so no second index on value (crm_0002)
        UniqueConstraint("value", "id_type", name="uq_crm_external_id_value_type"),
    )


class CustomFieldDef(Base):
    __tablename__ = "crm_custom_field"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(LIMITS["field_name"]), unique=True)
    label: Mapped[str] = mapped_column(String(LIMITS["field_label"]), default="")
    type: Mapped[str] = mapped_column(String(16))
    #: allowed values of a choice field
    choices: Mapped[list[str]] = mapped_column(JSON, default=list)
    required: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (_enum_check("type", CUSTOM_FIELD_TYPES, "type"),)


class CustomFieldValue(Base):
    """One typed value per customer and field; exactly one value column is used."""

    __tablename__ = "crm_custom_value"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="CASCADE"), primary_key=True
    )
    field_id: Mapped[int] = mapped_column(
        ForeignKey("crm_custom_field.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    value_text: Mapped[str | None] = mapped_column(String(LIMITS["text_value"]))
    value_number: Mapped[float | None] = mapped_column(Float)
    value_date: Mapped[date | None] = mapped_column(Date)
    value_bool: Mapped[bool | None] = mapped_column(Boolean)

    #: SQLite: clustered on (customer_id, field_id), one b-tree instead of two (crm_0002)
    __table_args__ = {"sqlite_with_rowid": False}


class Interaction(Base):
    """One call leg (or e-mail/chat) handled by one agent; may have no customer yet."""

    __tablename__ = "crm_interaction"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="SET NULL")
    )
    direction: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16), default="phone")
    #: the call's id (Asterisk Linkedid) and the agent leg (Uniqueid or agent name)
    call_id: Mapped[str] = mapped_column(String(LIMITS["call_id"]))
    leg: Mapped[str] = mapped_column(String(LIMITS["leg"]), default="")
    number: Mapped[str] = mapped_column(String(LIMITS["phone_raw"]), default="")
    did: Mapped[str] = mapped_column(String(LIMITS["phone_raw"]), default="")
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue: Mapped[str] = mapped_column(String(LIMITS["queue"]), default="")
    agent: Mapped[str] = mapped_column(String(LIMITS["agent"]), default="", index=True)
    campaign: Mapped[str] = mapped_column(String(LIMITS["campaign"]), default="")
    outcome: Mapped[str] = mapped_column(String(LIMITS["outcome"]), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    disposition: Mapped[str] = mapped_column(String(LIMITS["disposition"]), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("channel", "call_id", "leg", name="uq_crm_interaction_call"),
        Index("ix_crm_interaction_customer", "customer_id", "offered_at"),
        _enum_check("direction", INTERACTION_DIRECTIONS, "direction"),
        _enum_check("channel", INTERACTION_CHANNELS, "channel"),
    )


class Case(Base):
    __tablename__ = "crm_case"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="SET NULL")
    )
    type: Mapped[str] = mapped_column(String(LIMITS["taxonomy"]))
    category: Mapped[str] = mapped_column(String(LIMITS["taxonomy"]), default="")
    subcategory: Mapped[str] = mapped_column(String(LIMITS["taxonomy"]), default="")
    subject: Mapped[str] = mapped_column(String(LIMITS["subject"]), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    owner: Mapped[str] = mapped_column(String(LIMITS["owner"]), default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(LIMITS["actor"]), default="")

    __table_args__ = (
        Index("ix_crm_case_customer", "customer_id", "status"),
        _enum_check("status", CASE_STATUSES, "status"),
    )


class CaseInteraction(Base):
    __tablename__ = "crm_case_interaction"

    case_id: Mapped[int] = mapped_column(
        ForeignKey("crm_case.id", ondelete="CASCADE"), primary_key=True
    )
    interaction_id: Mapped[int] = mapped_column(
        ForeignKey("crm_interaction.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    linked_by: Mapped[str] = mapped_column(String(LIMITS["actor"]), default="")


class Disposition(Base):
    """Wrap-up codes offered to agents; scope "" = everywhere, else a queue or campaign."""

    __tablename__ = "crm_disposition"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(LIMITS["disposition"]))
    label: Mapped[str] = mapped_column(String(LIMITS["field_label"]), default="")
    scope_kind: Mapped[str] = mapped_column(String(16), default="")
    scope: Mapped[str] = mapped_column(String(LIMITS["campaign"]), default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: outcome class the dialer maps this code to (e.g. "callback", "dnc", "done"); "" none
    effect: Mapped[str] = mapped_column(String(32), default="")

    __table_args__ = (
        UniqueConstraint("scope_kind", "scope", "code", name="uq_crm_disposition_code"),
        _enum_check("scope_kind", ("", "queue", "campaign"), "scope_kind"),
    )


class Note(Base):
    __tablename__ = "crm_note"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="CASCADE"), index=True
    )
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_case.id", ondelete="CASCADE"), index=True
    )
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_interaction.id", ondelete="CASCADE")
    )
    author: Mapped[str] = mapped_column(String(LIMITS["actor"]))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Callback(Base):
    """A promise to call back: due time in UTC plus the customer's zone it was agreed in."""

    __tablename__ = "crm_callback"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_customer.id", ondelete="CASCADE"), index=True
    )
    interaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_interaction.id", ondelete="SET NULL")
    )
    number: Mapped[str] = mapped_column(String(LIMITS["e164"]))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    time_zone: Mapped[str] = mapped_column(String(LIMITS["time_zone"]), default="UTC")
    #: None: anyone may take it
    agent: Mapped[str | None] = mapped_column(String(LIMITS["agent"]))
    campaign: Mapped[str] = mapped_column(String(LIMITS["campaign"]), default="")
    state: Mapped[str] = mapped_column(String(16), default="scheduled")
    note: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(LIMITS["actor"]), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_crm_callback_due", "state", "due_at"),
        _enum_check("state", CALLBACK_STATES, "state"),
    )


class Consent(Base):
    """Opt-in/opt-out history; the newest row per (customer, channel, purpose) is in force."""

    __tablename__ = "crm_consent"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("crm_customer.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(LIMITS["purpose"]))
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(LIMITS["source"]), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(LIMITS["actor"]), default="")

    __table_args__ = (
        Index("ix_crm_consent_lookup", "customer_id", "channel", "purpose", "at"),
        _enum_check("channel", INTERACTION_CHANNELS, "channel"),
    )


class DncEntry(Base):
    """Do-not-call list, by normalized number (independent of any customer)."""

    __tablename__ = "crm_dnc"

    e164: Mapped[str] = mapped_column(String(LIMITS["e164"]), primary_key=True)
    reason: Mapped[str] = mapped_column(String(LIMITS["source"]), default="")
    source: Mapped[str] = mapped_column(String(LIMITS["source"]), default="")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    added_by: Mapped[str] = mapped_column(String(LIMITS["actor"]), default="")
    #: None: forever
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Append-only: who changed what when, with the values before and after."""

    __tablename__ = "crm_audit"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(LIMITS["actor"]))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_crm_audit_entity", "entity", "entity_id", "id"),)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


#: Core table handles: the hot paths (identify, bulk import) use Core, not the ORM
customer_t = _table(Customer)
phone_t = _table(Phone)
email_t = _table(Email)
external_id_t = _table(ExternalId)
custom_field_t = _table(CustomFieldDef)
custom_value_t = _table(CustomFieldValue)
interaction_t = _table(Interaction)
case_t = _table(Case)
case_interaction_t = _table(CaseInteraction)
disposition_t = _table(Disposition)
note_t = _table(Note)
callback_t = _table(Callback)
consent_t = _table(Consent)
dnc_t = _table(DncEntry)
audit_t = _table(AuditEntry)
